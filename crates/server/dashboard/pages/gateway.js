// `/gateway`: the services and routes the gateway forwards to; with `gateway:write`, the
// whole configuration edited as JSON, its changes previewed (`dry_run`) before they apply.

import { all, api } from '../api.js';
import { busy, errorSlot, field, h, replace, showError, table } from '../dom.js';

export async function render(main, ctx) {
  document.title = 'Gateway · Tessera';
  const error = errorSlot();
  const tables = h('div', null, h('p', { class: 'loading', text: 'Loading the gateway…' }));
  const editor = h('div');
  replace(main, h('div', { class: 'page-head' }, h('h1', { text: 'Gateway' })), error, tables, editor);

  async function reload() {
    let services;
    let routes;
    try {
      [services, routes] = await Promise.all([all('/api/v1/services'), all('/api/v1/routes')]);
    } catch (err) {
      showError(error, err);
      return;
    }
    const serviceName = new Map(services.map((s) => [s.id, s.name]));
    replace(
      tables,
      h('h2', { text: 'Services' }),
      services.length
        ? table('Services', ['Name', 'Upstreams', 'Timeout'], services.map((s) => h('tr', null,
          h('td', { text: s.name }), h('td', null, h('code', { text: s.upstreams.join(', ') })), h('td', { text: `${s.timeout_ms} ms` }))))
        : h('p', { class: 'empty', text: 'No services yet.' }),
      h('h2', { text: 'Routes' }),
      routes.length
        ? table('Routes', ['Name', 'Path prefix', 'Methods', 'Service', 'Auth', 'Scopes', { text: 'Rate limit', class: 'hide-narrow' }], routes.map((r) => h('tr', null,
          h('td', { text: r.name }),
          h('td', null, h('code', { text: r.path_prefix })),
          h('td', { text: r.methods ? r.methods.join(', ') : 'all' }),
          h('td', { text: serviceName.get(r.service_id) || r.service_id }),
          h('td', { text: r.auth }),
          h('td', { text: r.scopes.join(', ') || 'none' }),
          h('td', { class: 'hide-narrow', text: r.rate_limit ? `${r.rate_limit.requests} per ${r.rate_limit.per_seconds} s` : 'none' }))))
        : h('p', { class: 'empty', text: 'No routes yet.' }),
    );
    if (ctx.can('gateway:write')) drawEditor(services, routes, serviceName);
  }

  function drawEditor(services, routes, serviceName) {
    const config = {
      services: services.map((s) => ({ name: s.name, upstreams: s.upstreams, timeout_ms: s.timeout_ms })),
      routes: routes.map((r) => ({
        name: r.name, service: serviceName.get(r.service_id), path_prefix: r.path_prefix, methods: r.methods,
        auth: r.auth, scopes: r.scopes, rate_limit: r.rate_limit, strip_prefix: r.strip_prefix,
      })),
    };
    const text = h('textarea', { class: 'config', rows: '16', spellcheck: 'false' });
    text.value = JSON.stringify(config, null, 2);
    const editError = errorSlot();
    const diff = h('div');
    const apply = h('button', { type: 'button', class: 'primary', text: 'Apply', disabled: true });
    const preview = h('button', { type: 'button', text: 'Preview changes' });
    const parse = () => {
      try {
        return JSON.parse(text.value);
      } catch (e) {
        showError(editError, { message: `The configuration is not valid JSON: ${e.message}` });
        return null;
      }
    };
    text.addEventListener('input', () => {
      apply.disabled = true;
      replace(diff);
    });
    preview.addEventListener('click', () => busy(preview, async () => {
      const body = parse();
      if (!body) return;
      try {
        const changes = await api('PUT', '/api/v1/gateway/config?dry_run=true', body);
        showError(editError, null);
        replace(diff, h('h3', { text: 'Changes' }), h('pre', { class: 'diff', text: describe(changes) }));
        apply.disabled = false;
      } catch (err) {
        showError(editError, err);
      }
    }));
    apply.addEventListener('click', () => busy(apply, async () => {
      const body = parse();
      if (!body) return;
      try {
        await api('PUT', '/api/v1/gateway/config', body);
        await reload();
      } catch (err) {
        showError(editError, err);
      }
    }));
    replace(editor,
      h('h2', { text: 'Edit the configuration' }),
      h('p', { class: 'muted', text: 'The whole desired state, matched by name: what is missing here is deleted. Preview the changes, then apply them (all or nothing).' }),
      editError,
      field('Configuration (JSON)', text),
      h('div', { class: 'inline' }, preview, apply),
      diff);
  }

  await reload();
}

/** The dry run's answer in words: what would be created, updated and deleted. */
function describe(changes) {
  const lines = [];
  for (const kind of ['services', 'routes']) {
    for (const verb of ['create', 'update', 'delete']) {
      const names = (changes[kind] && changes[kind][verb]) || [];
      if (names.length) lines.push(`${verb} ${kind.slice(0, -1)}${names.length > 1 ? 's' : ''}: ${names.join(', ')}`);
    }
  }
  return lines.length ? lines.join('\n') : 'No changes.';
}
