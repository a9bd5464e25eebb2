// `/settings`: the token policy. Everyone may read it; `settings:write` may change it.

import { api } from '../api.js';
import { busy, errorSlot, field, h, replace, showError } from '../dom.js';

export async function render(main, ctx) {
  document.title = 'Settings · Tessera';
  const canWrite = ctx.can('settings:write');
  const error = errorSlot();
  let policy;
  try {
    policy = await api('GET', '/api/v1/settings/token-policy');
  } catch (err) {
    replace(main, h('h1', { text: 'Settings' }), error);
    showError(error, err);
    return;
  }
  const number = (name, value, extra = {}) => h('input', { type: 'number', name, min: '1', value: value == null ? '' : String(value), ...extra });
  const def = number('default_expiry_days', policy.default_expiry_days);
  const max = number('max_expiry_days', policy.max_expiry_days);
  const never = h('input', { type: 'checkbox', name: 'allow_never_expires', checked: policy.allow_never_expires });
  const perAccount = number('max_tokens_per_account', policy.max_tokens_per_account);
  const status = h('p', { role: 'status' });
  const save = h('button', { type: 'submit', class: 'primary', text: 'Save' });
  const neverId = 'allow-never';
  never.id = neverId;
  const neverField = h('div', { class: 'field' }, h('label', { class: 'check', for: neverId }, never, 'Allow tokens that never expire'), h('p', { class: 'field-error', id: `${neverId}-error`, hidden: true }));
  neverField.dataset.field = 'allow_never_expires';
  const form = h('form', {
    novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      status.textContent = '';
      await busy(save, async () => {
        try {
          await api('PUT', '/api/v1/settings/token-policy', {
            default_expiry_days: Number(def.value),
            max_expiry_days: max.value === '' ? null : Number(max.value),
            allow_never_expires: never.checked,
            max_tokens_per_account: Number(perAccount.value),
          });
          showError(error, null, form);
          status.textContent = 'Saved.';
        } catch (err) {
          showError(error, err, form);
        }
      });
    },
  },
  h('fieldset', { disabled: !canWrite },
    h('legend', { text: 'Token policy' }),
    error,
    field('Default expiration (days)', def, 'A token created without an expiry gets this many days.'),
    field('Maximum expiration (days)', max, 'Empty: no maximum.'),
    neverField,
    field('Tokens per account', perAccount),
    canWrite ? save : h('p', { class: 'muted', text: 'Changing the policy needs the permission settings:write.' })),
  status);
  replace(main, h('div', { class: 'page-head' }, h('h1', { text: 'Settings' })), form);
}
