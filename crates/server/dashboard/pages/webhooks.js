// `/webhooks`: where token events are sent, each webhook's deliveries, and a retry.

import { all, api } from '../api.js';
import { errorSlot, field, formDialog, h, replace, showError, table } from '../dom.js';
import { timeEl } from '../format.js';

const EVENTS = ['token.created', 'token.regenerated', 'token.disabled', 'token.deleted',
  'token.expiring', 'token.expired', 'token.leaked', 'token.quota_exhausted'];

export async function render(main, ctx) {
  document.title = 'Webhooks · Tessera';
  const canWrite = ctx.can('webhooks:write');
  const error = errorSlot();
  const shown = h('div');
  const list = h('div', null, h('p', { class: 'loading', text: 'Loading webhooks…' }));
  const deliveries = h('div');

  async function reload() {
    let hooks;
    try {
      hooks = await all('/api/v1/webhooks');
    } catch (err) {
      showError(error, err);
      return;
    }
    showError(error, null);
    if (!hooks.length) {
      replace(list, h('p', { class: 'empty', text: 'No webhooks yet.' }));
      return;
    }
    const headers = ['URL', 'Events', 'Description', 'Actions'];
    replace(list, table('Webhooks', headers, hooks.map((w) => h('tr', null,
      h('td', null, h('code', { text: w.url })),
      h('td', { text: w.events.join(', ') }),
      h('td', { text: w.description || '' }),
      h('td', { class: 'actions' },
        h('button', { type: 'button', text: 'Deliveries', onclick: () => showDeliveries(w) }),
        canWrite ? h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: () => deleteDialog(w) }) : null)))));
  }

  async function showDeliveries(w) {
    let items;
    try {
      items = (await api('GET', `/api/v1/webhooks/${w.id}/deliveries?limit=50`)).items;
    } catch (err) {
      showError(error, err);
      return;
    }
    const last = (d) => {
      const a = d.attempts[d.attempts.length - 1];
      if (!a) return 'none yet';
      return [timeEl(a.time), ` ${a.error || a.response_status}`];
    };
    replace(deliveries,
      h('h2', { text: `Deliveries to ${w.url}` }),
      items.length
        ? table('Deliveries', ['Event', 'Status', 'Attempts', 'Last attempt', 'Actions'], items.map((d) => h('tr', null,
          h('td', null, h('code', { text: d.event })),
          h('td', { text: d.status }),
          h('td', { text: String(d.attempts.length) }),
          h('td', null, last(d)),
          h('td', { class: 'actions' }, canWrite
            ? h('button', {
              type: 'button',
              text: 'Send again',
              onclick: async () => {
                try {
                  await api('POST', `/api/v1/webhooks/${w.id}/deliveries/${d.id}/retry`);
                } catch (err) {
                  showError(error, err);
                }
                await showDeliveries(w);
              },
            })
            : null))))
        : h('p', { class: 'empty', text: 'Nothing sent yet.' }));
  }

  function createDialog() {
    const url = h('input', { name: 'url', type: 'url', required: true, autocomplete: 'off', placeholder: 'https://hooks.example.com/tessera' });
    const description = h('input', { name: 'description', maxlength: '1000', autocomplete: 'off' });
    const boxes = EVENTS.map((e) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: e }), ` ${e}`));
    const events = h('fieldset', null, h('legend', { text: 'Events' }), h('div', { class: 'checks' }, boxes));
    events.dataset.field = 'events';
    formDialog({
      title: 'New webhook',
      action: 'Create webhook',
      fields: [field('URL', url), events, field('Description', description)],
      submit: async () => {
        const chosen = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        const made = await api('POST', '/api/v1/webhooks', { url: url.value, events: chosen, description: description.value || null });
        secretShown(made);
        await reload();
      },
    });
  }

  function secretShown(made) {
    const value = h('input', { readonly: true, value: made.secret, 'aria-label': 'Signing secret', class: 'secret' });
    replace(shown, h('div', { class: 'notice', role: 'status' },
      h('p', { text: `Webhook created for ${made.url}. Its signing secret is shown only this once: store it in the receiver now.` }),
      value));
  }

  function deleteDialog(w) {
    formDialog({
      title: 'Delete webhook',
      role: 'alertdialog',
      action: 'Delete',
      danger: true,
      intro: `Nothing more is sent to ${w.url}, and its deliveries are deleted.`,
      fields: [],
      submit: async () => {
        await api('DELETE', `/api/v1/webhooks/${w.id}`);
        replace(deliveries);
        await reload();
      },
    });
  }

  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', { text: 'Webhooks' }),
      h('div', { class: 'actions' }, canWrite ? h('button', { type: 'button', class: 'primary', text: 'New webhook', onclick: createDialog }) : null)),
    error,
    shown,
    list,
    deliveries,
  );
  await reload();
}
