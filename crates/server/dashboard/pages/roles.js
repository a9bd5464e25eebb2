// `/roles`: the built-in roles and the deployment's own, with their permissions.

import { all, api } from '../api.js';
import { errorSlot, field, formDialog, h, replace, showError, table } from '../dom.js';

export async function render(main, ctx) {
  document.title = 'Roles · Tessera';
  const canWrite = ctx.can('roles:write');
  const error = errorSlot();
  const list = h('div', null, h('p', { class: 'loading', text: 'Loading roles…' }));

  async function reload() {
    let roles;
    try {
      roles = await all('/api/v1/roles');
    } catch (err) {
      showError(error, err);
      return;
    }
    showError(error, null);
    const headers = ['Name', 'Permissions', 'Kind'];
    if (canWrite) headers.push('Actions');
    replace(list, table('Roles', headers, roles.map((r) => {
      const cells = [
        h('td', null, h('code', { text: r.name })),
        h('td', { text: r.permissions.join(', ') || 'none' }),
        h('td', { text: r.builtin ? 'built-in' : 'custom' }),
      ];
      if (canWrite) {
        cells.push(h('td', { class: 'actions' }, r.builtin
          ? h('span', { class: 'muted', text: 'Built-in roles cannot change.' })
          : [
            h('button', { type: 'button', text: 'Edit', onclick: () => roleDialog(r) }),
            h('button', { type: 'button', class: 'danger', text: 'Delete', onclick: () => deleteDialog(r) }),
          ]));
      }
      return h('tr', null, cells);
    })));
  }



  function roleDialog(r) {
    const name = h('input', { name: 'name', autocomplete: 'off', value: r ? r.name : '', readonly: !!r });
    const perms = h('textarea', { name: 'permissions', rows: '3', placeholder: 'tokens:read, tokens:write, orders:read' });
    perms.value = r ? r.permissions.join(', ') : '';
    const permissions = () => perms.value.split(/[\s,]+/).filter(Boolean);
    formDialog({
      title: r ? `Edit role ${r.name}` : 'New role',
      action: r ? 'Save' : 'Create role',
      fields: [
        field('Name', name, r ? null : 'Lower case: a–z, 0–9, "_" and "-", starting with a letter.'),
        field('Permissions', perms, 'resource:action strings, separated by commas; "*" and "resource:*" are wildcards.'),
      ],
      submit: async () => {
        if (r) await api('PUT', `/api/v1/roles/${r.name}`, { permissions: permissions() });
        else await api('POST', '/api/v1/roles', { name: name.value, permissions: permissions() });
        await reload();
      },
    });
  }

  function deleteDialog(r) {
    formDialog({
      title: 'Delete role',
      role: 'alertdialog',
      action: 'Delete',
      danger: true,
      intro: `The role ${r.name} is removed from every account that has it.`,
      fields: [],
      submit: async () => {
        await api('DELETE', `/api/v1/roles/${r.name}`);
        await reload();
      },
    });
  }

  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', { text: 'Roles' }),
      h('div', { class: 'actions' }, canWrite ? h('button', { type: 'button', class: 'primary', text: 'New role', onclick: () => roleDialog(null) }) : null)),
    error,
    list,
  );
  await reload();
}
