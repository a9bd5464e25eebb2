// The dialogs of a token's life: generate, edit, regenerate, delete, delete all.

import { api, grants } from '../api.js';
import { field, formDialog, h, uid } from '../dom.js';

/** The management permissions (the contract's list), offered as scopes to whoever holds them. */
const PERMISSIONS = [
  'tokens:read', 'tokens:write', 'tokens:admin', 'tokens:introspect', 'accounts:read',
  'accounts:write', 'roles:read', 'roles:write', 'audit:read', 'settings:write',
  'gateway:read', 'gateway:write', 'webhooks:read', 'webhooks:write',
];

const DAYS = [7, 30, 60, 90];

export function generateDialog(ctx, policy, created) {
  const name = h('input', { name: 'name', maxlength: '100', required: true, autocomplete: 'off' });
  const note = h('textarea', { name: 'note', rows: '2', maxlength: '1000' });
  const expiry = expiryChoice(policy);
  const scopes = scopeChoice(ctx.me.account.permissions, null);
  const cidrs = cidrField([]);
  const rate = rateChoice(null);
  const quota = quotaChoice(null);
  formDialog({
    title: 'Generate token',
    action: 'Generate',
    fields: [field('Name', name, 'What it is for, e.g. "ci-deploy". Unique among your tokens.'), field('Note', note), expiry.el, scopes.el, cidrs.el, rate.el, quota.el],
    submit: async () => {
      const body = { name: name.value, ...expiry.read() };
      if (note.value.trim()) body.note = note.value;
      const s = scopes.read();
      if (s !== null) body.scopes = s;
      const c = cidrs.read();
      if (c.length) body.allowed_cidrs = c;
      const r = rate.read();
      if (r) body.rate_limit = r;
      const q = quota.read();
      if (q) body.quota = q;
      created(await api('POST', '/api/v1/tokens', body));
    },
  });
}

export function editDialog(ctx, t, saved) {
  const name = h('input', { name: 'name', maxlength: '100', required: true, autocomplete: 'off', value: t.name });
  const note = h('textarea', { name: 'note', rows: '2', maxlength: '1000' });
  note.value = t.note || '';
  const scopes = scopeChoice(ctx.me.account.permissions, t.scopes);
  const cidrs = cidrField(t.allowed_cidrs || []);
  const rate = rateChoice(t.rate_limit);
  const quota = quotaChoice(t.quota);
  formDialog({
    title: 'Edit token',
    action: 'Save',
    fields: [field('Name', name), field('Note', note), scopes.el, cidrs.el, rate.el, quota.el],
    submit: async () => {
      const body = {
        name: name.value,
        note: note.value.trim() ? note.value : null,
        scopes: scopes.read(),
        allowed_cidrs: cidrs.read(),
        rate_limit: rate.read(),
      };
      // Sent only when changed: a quota given again starts full.
      if (quota.changed()) body.quota = quota.read();
      await api('PATCH', `/api/v1/tokens/${t.id}`, body);
      await saved();
    },
  });
}

export function regenerateDialog(t, regenerated) {
  const grace = h('select', { name: 'grace_period_seconds' },
    h('option', { value: '0', text: 'None: the current value stops working now' }),
    h('option', { value: '300', text: '5 minutes' }),
    h('option', { value: '3600', text: '1 hour' }),
    h('option', { value: '86400', text: '24 hours' }));
  formDialog({
    title: 'Regenerate token',
    role: 'alertdialog',
    action: 'Regenerate',
    intro: `“${t.name}” gets a new value, shown once. Clients that use the current value need the new one.`,
    fields: [field('Grace period', grace, 'How long the current value keeps working beside the new one.')],
    submit: async () => {
      regenerated(await api('POST', `/api/v1/tokens/${t.id}/regenerate`, { grace_period_seconds: Number(grace.value) }));
    },
  });
}

export function deleteDialog(t, deleted) {
  formDialog({
    title: 'Delete token',
    role: 'alertdialog',
    action: 'Delete',
    danger: true,
    intro: `“${t.name}” stops working at once. This cannot be undone.`,
    fields: [],
    submit: async () => {
      await api('DELETE', `/api/v1/tokens/${t.id}`);
      await deleted();
    },
  });
}

export function deleteAllDialog(n, deleted) {
  const confirm = h('input', { name: 'confirm', autocomplete: 'off', spellcheck: 'false' });
  formDialog({
    title: 'Delete all tokens',
    role: 'alertdialog',
    action: 'Delete all tokens',
    danger: true,
    intro: `All ${n} of your tokens stop working at once. This cannot be undone.`,
    fields: [field('Type DELETE to confirm', confirm)],
    enabled: () => confirm.value === 'DELETE',
    submit: async () => {
      await api('DELETE', '/api/v1/tokens?confirm=true');
      await deleted();
    },
  });
}

/** The expiration: 7/30/60/90 days (those the policy allows), a custom date, or none
 * where the policy allows it. */
function expiryChoice(policy) {
  const max = policy.max_expiry_days;
  const select = h('select', { name: 'expires_in_days' });
  const days = DAYS.includes(policy.default_expiry_days) ? DAYS : [...DAYS, policy.default_expiry_days].sort((a, b) => a - b);
  for (const d of days) {
    select.append(h('option', { value: String(d), text: `${d} days`, disabled: max != null && d > max, selected: d === policy.default_expiry_days }));
  }
  select.append(h('option', { value: 'custom', text: 'Custom' }));
  if (policy.allow_never_expires) select.append(h('option', { value: 'never', text: 'No expiration' }));
  const date = h('input', { type: 'date', name: 'expires_at' });
  const tomorrow = new Date(Date.now() + 24 * 3600 * 1000);
  date.min = tomorrow.toISOString().slice(0, 10);
  if (max != null) date.max = new Date(Date.now() + max * 24 * 3600 * 1000).toISOString().slice(0, 10);
  const dateField = field('Expires on', date, 'The token stops working at the end of this day (your time).');
  dateField.hidden = true;
  select.addEventListener('change', () => {
    dateField.hidden = select.value !== 'custom';
  });
  const hint = max != null ? `Your policy allows at most ${max} days.` : null;
  return {
    el: h('div', null, field('Expiration', select, hint), dateField),
    read() {
      if (select.value === 'never') return { never_expires: true };
      if (select.value === 'custom') {
        if (!date.value) return { expires_at: '' };
        return { expires_at: new Date(`${date.value}T23:59:59`).toISOString() };
      }
      return { expires_in_days: Number(select.value) };
    },
  };
}

/** The scopes: follow the account (null), or a chosen subset of the caller's own
 * permissions, plus gateway scopes typed in. */
function scopeChoice(held, current) {
  const offered = PERMISSIONS.filter((p) => grants(held, p));
  for (const p of held) if (!p.includes('*') && !offered.includes(p)) offered.push(p);
  const follow = h('input', { type: 'checkbox', checked: current === null });
  const boxes = offered.map((p) => h('input', { type: 'checkbox', value: p, checked: !!current && current.includes(p) }));
  const other = h('input', { name: 'scopes', autocomplete: 'off', value: (current || []).filter((s) => !offered.includes(s)).join(', '), placeholder: 'orders:read, orders:write' });
  const chosen = h('div', null,
    h('div', { class: 'checks' }, offered.map((p, i) => h('label', null, boxes[i], p))),
    field('Other scopes', other, 'Gateway scopes your routes require, separated by commas.'));
  const sync = () => {
    chosen.hidden = follow.checked;
  };
  follow.addEventListener('change', sync);
  sync();
  return {
    el: h('fieldset', null, h('legend', { text: 'Scopes' }),
      h('label', { class: 'check' }, follow, "Follow my account's permissions (they change with its roles)"),
      chosen),
    read() {
      if (follow.checked) return null;
      const typed = other.value.split(/[\s,]+/).filter(Boolean);
      return [...boxes.filter((b) => b.checked).map((b) => b.value), ...typed];
    },
  };
}

function cidrField(current) {
  const input = h('textarea', { name: 'allowed_cidrs', rows: '2', placeholder: '10.0.0.0/8, 192.0.2.7' });
  input.value = current.join(', ');
  return {
    el: field('Allowed IP ranges', input, 'Addresses or CIDR ranges, separated by commas. Empty: from anywhere.'),
    read: () => input.value.split(/[\s,]+/).filter(Boolean),
  };
}

/** A quota: `limit` uses refilled daily, monthly or never; none when the limit is empty. */
function quotaChoice(current) {
  const limit = h('input', { type: 'number', min: '1', max: '1000000000', name: 'quota', value: current ? String(current.limit) : '' });
  const refill = h('select', null,
    h('option', { value: 'daily', text: 'daily' }),
    h('option', { value: 'monthly', text: 'monthly' }),
    h('option', { value: '', text: 'never' }));
  refill.value = current ? current.refill || '' : 'daily';
  const lid = uid();
  const rid = uid();
  limit.id = lid;
  refill.id = rid;
  const error = h('p', { class: 'field-error', id: `${lid}-error`, hidden: true });
  const wrap = h('fieldset', null, h('legend', { text: 'Quota' }),
    h('div', { class: 'inline' },
      h('label', { for: lid, text: 'Uses' }), limit,
      h('label', { for: rid, text: 'refilled' }), refill),
    h('p', { class: 'hint', text: 'Empty: no quota. Refills at 00:00 UTC (monthly: on the 1st).' }),
    error);
  wrap.dataset.field = 'quota';
  const read = () => (limit.value ? { limit: Number(limit.value), refill: refill.value || null } : null);
  return {
    el: wrap,
    read,
    changed() {
      const now = read();
      if (!current || !now) return (current === null) !== (now === null);
      return now.limit !== current.limit || now.refill !== current.refill;
    },
  };
}

/** A rate limit: `requests` per `per_seconds`, or none when both are empty. */
function rateChoice(current) {
  const requests = h('input', { type: 'number', min: '1', max: '1000000', name: 'rate_limit', value: current ? String(current.requests) : '' });
  const per = h('input', { type: 'number', min: '1', max: '86400', value: current ? String(current.per_seconds) : '' });
  const rid = uid();
  const pid = uid();
  requests.id = rid;
  per.id = pid;
  const error = h('p', { class: 'field-error', id: `${rid}-error`, hidden: true });
  const wrap = h('fieldset', null, h('legend', { text: 'Rate limit' }),
    h('div', { class: 'inline' },
      h('label', { for: rid, text: 'Requests' }), requests,
      h('label', { for: pid, text: 'per seconds' }), per),
    h('p', { class: 'hint', text: 'Empty: no limit of its own.' }),
    error);
  wrap.dataset.field = 'rate_limit';
  return {
    el: wrap,
    read() {
      if (!requests.value && !per.value) return null;
      return { requests: Number(requests.value), per_seconds: Number(per.value) };
    },
  };
}
