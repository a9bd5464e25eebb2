// `/accounts`: who may sign in, with which roles; new accounts; disable, re-role, delete.

import { all, api } from '../api.js';
import { busy, errorSlot, field, formDialog, h, replace, showError, table, uid } from '../dom.js';
import { timeEl } from '../format.js';

const LAST_ADMIN = 'The last enabled super_admin cannot be disabled, demoted or deleted.';

export async function render(main, ctx) {
  document.title = 'Accounts · Tessera';
  const canWrite = ctx.can('accounts:write');
  const error = errorSlot();
  const list = h('div', null, h('p', { class: 'loading', text: 'Loading accounts…' }));
  let roles = [];

  // Usable once the roles to choose from are known.
  const newButton = h('button', { type: 'button', class: 'primary', text: 'New account', disabled: true, 'aria-busy': 'true', onclick: () => newAccount() });

  async function reload() {
    let accounts;
    try {
      [accounts, roles] = await Promise.all([all('/api/v1/accounts'), ctx.can('roles:read') ? all('/api/v1/roles') : Promise.resolve([])]);
    } catch (err) {
      showError(error, err);
      return;
    }
    showError(error, null);
    newButton.disabled = false;
    newButton.removeAttribute('aria-busy');
    const admins = accounts.filter((a) => !a.disabled && a.roles.includes('super_admin'));
    const headers = ['Username', 'Roles', 'Status', { text: 'Created', class: 'hide-narrow' }, 'Last sign-in'];
    if (canWrite) headers.push('Actions');
    replace(list, table('Accounts', headers, accounts.map((a) => {
      const last = admins.length === 1 && admins[0].id === a.id;
      const cells = [
        h('td', { text: a.username }),
        h('td', { text: a.roles.join(', ') || 'none' }),
        h('td', null, h('span', { class: `badge ${a.disabled ? 'disabled' : 'active'}`, text: a.disabled ? 'disabled' : 'active' })),
        h('td', { class: 'hide-narrow' }, timeEl(a.created_at)),
        h('td', null, timeEl(a.last_login_at)),
      ];
      if (canWrite) cells.push(h('td', { class: 'actions' }, actions(a, last)));
      return h('tr', { class: a.disabled ? 'is-disabled' : null }, cells);
    })));
  }

  function actions(a, last) {
    const reason = last ? uid('reason') : null;
    const guard = (button) => {
      if (last) {
        button.disabled = true;
        button.setAttribute('aria-describedby', reason);
      }
      return button;
    };
    const toggle = guard(h('button', {
      type: 'button',
      text: a.disabled ? 'Enable' : 'Disable',
      onclick: () => busy(toggle, async () => {
        try {
          await api('PATCH', `/api/v1/accounts/${a.id}`, { disabled: !a.disabled });
          await reload();
        } catch (err) {
          showError(error, err);
        }
      }),
    }));
    return [
      h('button', { type: 'button', text: 'Roles', onclick: () => rolesDialog(a, last) }),
      toggle,
      guard(h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: () => deleteDialog(a) })),
      last ? h('div', { id: reason, class: 'muted', text: LAST_ADMIN }) : null,
    ];
  }

  function roleBoxes(selected) {
    const boxes = roles.map((r) => h('input', { type: 'checkbox', value: r.name, checked: selected.includes(r.name) }));
    return {
      el: h('fieldset', null, h('legend', { text: 'Roles' }), h('div', { class: 'checks' }, roles.map((r, i) => h('label', null, boxes[i], r.name)))),
      read: () => boxes.filter((b) => b.checked).map((b) => b.value),
    };
  }



  const changed = (work) => async () => {
    await work();
    await reload();
  };

  function newAccount() {
    const username = h('input', { name: 'username', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password' });
    const picked = roleBoxes(['developer']);
    formDialog({
      title: 'New account',
      action: 'Create account',
      fields: [field('Username', username, '3–64 of a–z, 0–9, ".", "_" and "-".'), field('Password', password, 'At least 12 characters.'), picked.el],
      submit: changed(() => api('POST', '/api/v1/accounts', { username: username.value, password: password.value, roles: picked.read() })),
    });
  }

  function rolesDialog(a, last) {
    const picked = roleBoxes(a.roles);
    formDialog({
      title: `Roles of ${a.username}`,
      action: 'Save',
      intro: last ? LAST_ADMIN : null,
      fields: [picked.el],
      submit: changed(() => api('PATCH', `/api/v1/accounts/${a.id}`, { roles: picked.read() })),
    });
  }

  function deleteDialog(a) {
    formDialog({
      title: 'Delete account',
      role: 'alertdialog',
      action: 'Delete',
      danger: true,
      intro: `${a.username} and all of its tokens are deleted at once. This cannot be undone.`,
      fields: [],
      submit: changed(() => api('DELETE', `/api/v1/accounts/${a.id}`)),
    });
  }

  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', { text: 'Accounts' }),
      h('div', { class: 'actions' }, canWrite ? newButton : null)),
    error,
    list,
  );
  await reload();
}
