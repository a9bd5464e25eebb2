// `/audit`: the audit log, filtered by action, its chain verified, exported as CSV.

import { api } from '../api.js';
import { busy, errorSlot, field, h, replace, showError, table } from '../dom.js';
import { timeEl } from '../format.js';

const ACTIONS = [
  'auth.login', 'auth.login_failed', 'auth.logout', 'token.create', 'token.update', 'token.regenerate',
  'token.self_regenerate', 'token.disable', 'token.enable', 'token.delete', 'token.delete_all', 'token.leaked',
  'account.create', 'account.update', 'account.delete', 'role.create', 'role.update', 'role.delete',
  'settings.update', 'gateway.service.create', 'gateway.service.update', 'gateway.service.delete',
  'gateway.route.create', 'gateway.route.update', 'gateway.route.delete',
];

export async function render(main, ctx) {
  document.title = 'Audit log · Tessera';
  const error = errorSlot();
  const action = h('select', { name: 'action' }, h('option', { value: '', text: 'All actions' }), ACTIONS.map((a) => h('option', { value: a, text: a })));
  const list = h('div');
  const more = h('div');
  const verdict = h('p', { role: 'status' });
  const exportLink = h('a', { class: 'button', text: 'Export CSV', download: 'audit-log.csv' });
  const verify = h('button', {
    type: 'button',
    text: 'Verify chain',
    onclick: () => busy(verify, async () => {
      try {
        const v = await api('GET', '/api/v1/audit-logs/verify');
        verdict.className = v.ok ? 'ok-text' : 'error';
        verdict.textContent = v.ok ? `Chain intact: ${v.entries} entries verified.` : `Chain broken: entry ${v.first_bad_seq} does not match the entries before it.`;
      } catch (err) {
        showError(error, err);
      }
    }),
  });

  const query = () => (action.value ? `action=${encodeURIComponent(action.value)}` : '');
  let rows = [];
  async function load(cursor) {
    const q = [query(), 'limit=100', cursor ? `cursor=${encodeURIComponent(cursor)}` : ''].filter(Boolean).join('&');
    exportLink.href = `/api/v1/audit-logs?${[query(), 'format=csv', 'limit=1000'].filter(Boolean).join('&')}`;
    try {
      const page = await api('GET', `/api/v1/audit-logs?${q}`);
      showError(error, null);
      rows = cursor ? rows.concat(page.items) : page.items;
      replace(list, rows.length ? table('Audit log', ['Time', 'Action', 'Outcome', 'Actor', 'Target', { text: 'Address', class: 'hide-narrow' }], rows.map(entry)) : h('p', { class: 'empty', text: 'No entries match.' }));
      const next = h('button', { type: 'button', text: 'Load more', onclick: () => busy(next, () => load(page.next_cursor)) });
      replace(more, page.next_cursor ? next : null);
    } catch (err) {
      showError(error, err);
    }
  }
  action.addEventListener('change', () => load(null));

  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', { text: 'Audit log' }), h('div', { class: 'actions' }, verify, exportLink)),
    verdict,
    h('div', { class: 'filters' }, field('Action', action)),
    error,
    list,
    more,
  );
  await load(null);
}

function entry(e) {
  const actor = e.actor.username || e.actor.account_id || 'anonymous';
  const via = e.actor.token_id ? ` (token ${e.actor.token_id})` : '';
  const target = e.target ? [e.target.type, e.target.name || e.target.id].filter(Boolean).join(' ') : '';
  return h('tr', null,
    h('td', null, timeEl(e.time)),
    h('td', null, h('code', { text: e.action })),
    h('td', { text: e.outcome }),
    h('td', { text: actor + via }),
    h('td', { text: target }),
    h('td', { class: 'hide-narrow', text: e.ip || '' }));
}
