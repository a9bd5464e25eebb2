// `/tokens`: the signed-in account's tokens, the value just generated (once), and the
// danger zone.

import { all, api } from '../api.js';
import { busy, errorSlot, field, h, replace, showError, table, uid } from '../dom.js';
import { timeEl, within } from '../format.js';
import { deleteAllDialog, deleteDialog, editDialog, generateDialog, regenerateDialog } from './token_dialogs.js';

export async function render(main, ctx) {
  document.title = 'Tokens · Tessera';
  const top = h('div');
  const error = errorSlot();
  const list = h('div', null, h('p', { class: 'loading', text: 'Loading tokens…' }));
  const count = h('p', { class: 'muted' });
  const canWrite = ctx.can('tokens:write');
  let policy = null;

  const reveal = (value) => {
    replace(top, revealBox(value));
    top.querySelector('input').focus();
  };
  const generate = () => generateDialog(ctx, policy, (created) => {
    reveal({ name: created.name, value: created.token });
    reload();
  });

  // Usable once the policy (the expiry choices) is known.
  const generateButton = h('button', { type: 'button', class: 'primary', text: 'Generate token', disabled: true, 'aria-busy': 'true', onclick: generate });

  async function reload() {
    let tokens;
    try {
      [tokens, policy] = await Promise.all([all('/api/v1/tokens'), api('GET', '/api/v1/settings/token-policy')]);
    } catch (err) {
      replace(list);
      showError(error, err);
      return;
    }
    showError(error, null);
    generateButton.disabled = false;
    generateButton.removeAttribute('aria-busy');
    count.textContent = `${tokens.length} of ${policy.max_tokens_per_account} tokens`;
    if (!tokens.length) {
      replace(list, h('div', { class: 'empty' }, h('p', { text: 'No tokens yet.' }), canWrite ? h('button', { type: 'button', class: 'primary', text: 'Generate token', onclick: generate }) : null));
    } else {
      const headers = ['Name', 'Status', { text: 'Value', class: 'hide-narrow' }, { text: 'Scopes', class: 'hide-narrow' }, 'Expires', 'Last used', { text: 'Uses', class: 'hide-narrow' }];
      if (canWrite) headers.push('Actions');
      replace(list, table('Tokens', headers, tokens.map((t) => row(t))));
    }
    replace(danger, canWrite && tokens.length ? dangerZone(tokens.length) : null);
  }

  function row(t) {
    const soon = t.status === 'active' && within(t.expires_at, 7);
    const cells = [
      h('td', { class: 'name' }, h('a', { href: `/tokens/${t.id}`, text: t.name }), t.note ? h('div', { class: 'muted', text: t.note }) : null),
      h('td', null, h('span', { class: `badge ${t.status}`, text: t.status }), soon ? [' ', h('span', { class: 'badge soon', text: 'expires soon' })] : null,
        t.disabled_reason === 'leaked' ? [' ', h('span', { class: 'badge leaked', text: 'leaked' })] : null),
      h('td', { class: 'hide-narrow' }, h('code', { text: t.display })),
      h('td', { class: 'hide-narrow' }, t.scopes ? t.scopes.join(', ') || 'none' : h('span', { class: 'muted', text: "account's" })),
      h('td', null, t.expires_at ? timeEl(t.expires_at) : 'never'),
      h('td', null, timeEl(t.last_used_at)),
      h('td', { class: 'hide-narrow' }, String(t.usage.allowed + t.usage.denied)),
    ];
    if (canWrite) cells.push(h('td', { class: 'actions' }, actions(t)));
    return h('tr', { class: `is-${t.status}` }, cells);
  }

  function actions(t) {
    const toggle = h('button', {
      type: 'button',
      text: t.status === 'disabled' ? 'Enable' : 'Disable',
      onclick: () => busy(toggle, async () => {
        try {
          await api('POST', `/api/v1/tokens/${t.id}/${t.status === 'disabled' ? 'enable' : 'disable'}`);
          await reload();
        } catch (err) {
          showError(error, err);
        }
      }),
    });
    return [
      h('button', { type: 'button', text: 'Edit', onclick: () => editDialog(ctx, t, reload) }),
      h('button', { type: 'button', text: 'Regenerate', onclick: () => regenerateDialog(t, (updated) => {
        reveal({ name: updated.name, value: updated.token, regenerated: true });
        reload();
      }) }),
      toggle,
      h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: () => deleteDialog(t, reload) }),
    ];
  }

  const danger = h('div');
  const dangerZone = (n) => h(
    'section',
    { class: 'danger-zone', 'aria-labelledby': 'danger-zone-title' },
    h('h2', { id: 'danger-zone-title', text: 'Danger zone' }),
    h('div', { class: 'row' },
      h('p', { text: `Delete all ${n} of your tokens. Every one stops working at once; this cannot be undone.` }),
      h('button', { type: 'button', class: 'danger', text: 'Delete all tokens', onclick: () => deleteAllDialog(n, reload) })),
  );

  replace(
    main,
    top,
    h('div', { class: 'page-head' },
      h('h1', { text: 'Tokens' }),
      h('div', { class: 'actions' }, canWrite ? generateButton : null)),
    count,
    error,
    list,
    danger,
  );
  await reload();
}

/** The value, once: a read-only box to copy from, and the warning that it will not be
 * shown again. */
function revealBox({ name, value, regenerated }) {
  const titleId = uid('reveal');
  const input = h('input', { readonly: true, value, spellcheck: 'false', autocomplete: 'off', class: 'mono' });
  const status = h('p', { role: 'status', class: 'muted' });
  const copy = h('button', {
    type: 'button',
    class: 'primary',
    text: 'Copy',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(value);
        status.textContent = 'Copied to the clipboard.';
      } catch {
        input.select();
        status.textContent = 'The browser would not copy it: the value is selected, copy it with the keyboard.';
      }
    },
  });
  const box = h(
    'section',
    { class: 'reveal', 'aria-labelledby': titleId },
    h('h2', { id: titleId, text: regenerated ? `New value of “${name}”` : `Token “${name}” generated` }),
    h('p', { text: 'Copy the value now and keep it somewhere safe: it will not be shown again.' }),
  );
  const valueField = field('Token value', input);
  valueField.append(h('div', { class: 'value-row' }, copy, h('button', { type: 'button', text: 'Done', onclick: () => box.remove() })));
  box.append(valueField, status);
  return box;
}
