// `/tokens/{id}`: one token's fields, its use over the last day, and its recent access log.

import { api } from '../api.js';
import { errorSlot, h, replace, showError, svg, table } from '../dom.js';
import { absolute, timeEl, within } from '../format.js';

export async function render(main, ctx, id) {
  document.title = 'Token · Tessera';
  const error = errorSlot();
  replace(main, h('p', null, h('a', { href: '/tokens', text: '← Tokens' })), error, h('p', { class: 'loading', text: 'Loading…' }));
  let t;
  let usage;
  let access;
  try {
    [t, usage, access] = await Promise.all([
      api('GET', `/api/v1/tokens/${encodeURIComponent(id)}`),
      api('GET', `/api/v1/tokens/${encodeURIComponent(id)}/usage?bucket=1h`),
      api('GET', `/api/v1/access-logs?token_id=${encodeURIComponent(id)}&limit=20`),
    ]);
  } catch (err) {
    replace(main, h('p', null, h('a', { href: '/tokens', text: '← Tokens' })), h('h1', { text: err.status === 404 ? 'No such token' : 'Token' }), error);
    showError(error, err);
    return;
  }
  document.title = `${t.name} · Tokens · Tessera`;
  const soon = t.status === 'active' && within(t.expires_at, 7);
  const row = (label, value) => [h('dt', { text: label }), h('dd', null, value)];
  replace(
    main,
    h('p', null, h('a', { href: '/tokens', text: '← Tokens' })),
    h('div', { class: 'page-head' }, h('h1', { text: t.name }),
      h('span', { class: `badge ${t.status}`, text: t.status }), soon ? h('span', { class: 'badge soon', text: 'expires soon' }) : null,
      t.disabled_reason === 'leaked' ? h('span', { class: 'badge leaked', text: 'leaked' }) : null),
    t.disabled_reason === 'leaked'
      ? h('p', { class: 'notice', role: 'note', text: 'This token was disabled because its value was reported leaked. Regenerate it before enabling it again: the leaked value would work again.' })
      : null,
    h('dl', { class: 'fields' },
      row('Value', h('code', { text: t.display })),
      row('Note', t.note || h('span', { class: 'muted', text: 'none' })),
      row('Scopes', t.scopes ? t.scopes.join(', ') || 'none' : "the account's permissions"),
      row('Allowed IP ranges', t.allowed_cidrs && t.allowed_cidrs.length ? t.allowed_cidrs.join(', ') : 'anywhere'),
      row('Rate limit', t.rate_limit ? `${t.rate_limit.requests} per ${t.rate_limit.per_seconds} s` : 'none of its own'),
      row('Quota', t.quota
        ? [`${t.quota.remaining} of ${t.quota.limit} left`, t.quota.refills_at ? [', refills ', timeEl(t.quota.refills_at)] : ', never refills']
        : 'none'),
      row('Created', h('span', { title: absolute(t.created_at), text: absolute(t.created_at) })),
      row('Expires', t.expires_at ? [timeEl(t.expires_at), ` (${absolute(t.expires_at)})`] : 'never'),
      row('Last used', t.last_used_at ? [timeEl(t.last_used_at), t.last_used_ip ? ` from ${t.last_used_ip}` : ''] : 'never'),
      row('Recent addresses', t.recent_ips.length
        ? h('ul', { class: 'plain' }, t.recent_ips.map((r) => h('li', null, h('code', { text: r.ip }), ' ', timeEl(r.last_seen_at))))
        : 'none yet'),
      row('Uses', `${t.usage.allowed} allowed, ${t.usage.denied} denied`),
      row('Id', h('code', { text: t.id }))),
    h('h2', { text: 'Use in the last 24 hours' }),
    chart(usage.buckets),
    h('h2', { text: 'Recent requests' }),
    access.items.length
      ? table('Recent requests', ['Time', 'Listener', 'Request', 'Status', { text: 'Address', class: 'hide-narrow' }, { text: 'Latency', class: 'hide-narrow' }],
        access.items.map((r) => h('tr', null,
          h('td', null, timeEl(r.time)),
          h('td', { text: r.listener }),
          h('td', null, h('code', { text: `${r.method} ${r.path}` })),
          h('td', { text: r.code && r.code !== 'ok' ? `${r.status} ${r.code}` : String(r.status) }),
          h('td', { class: 'hide-narrow', text: r.ip }),
          h('td', { class: 'hide-narrow', text: `${r.latency_ms.toFixed(2)} ms` }))))
      : h('p', { class: 'empty', text: 'No requests yet.' }),
    error,
  );
}

/** Allowed and denied uses per hour, as bars: an `img` named `Usage`, described in words. */
function chart(buckets) {
  const hour = 3600 * 1000;
  const end = Math.floor(Date.now() / hour) * hour;
  const slots = [];
  for (let i = 23; i >= 0; i -= 1) slots.push({ start: end - i * hour, allowed: 0, denied: 0 });
  for (const b of buckets) {
    const s = slots.find((x) => x.start === new Date(b.start).getTime());
    if (s) {
      s.allowed += b.allowed;
      s.denied += b.denied;
    }
  }
  const top = Math.max(1, ...slots.map((s) => s.allowed + s.denied));
  const [w, hgt, pad] = [960, 180, 18];
  const bw = (w - 2 * pad) / slots.length;
  const y = (v) => ((hgt - 2 * pad) * v) / top;
  const allowed = slots.reduce((n, s) => n + s.allowed, 0);
  const denied = slots.reduce((n, s) => n + s.denied, 0);
  const bars = slots.flatMap((s, i) => {
    const x = pad + i * bw + 1;
    const ya = y(s.allowed);
    const yd = y(s.denied);
    return [
      svg('rect', { class: 'allowed', x, y: hgt - pad - ya, width: bw - 2, height: ya }),
      svg('rect', { class: 'denied', x, y: hgt - pad - ya - yd, width: bw - 2, height: yd }),
    ];
  });
  const label = `Usage: ${allowed} allowed and ${denied} denied in the last 24 hours; at most ${top} in one hour.`;
  return h('figure', null,
    svg('svg', { class: 'chart', viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': 'Usage' },
      svg('title', null, label),
      svg('line', { class: 'axis', x1: pad, x2: w - pad, y1: hgt - pad, y2: hgt - pad }),
      bars,
      svg('text', { x: pad, y: hgt - 4 }, '24 h ago'),
      svg('text', { x: w - pad, y: hgt - 4, 'text-anchor': 'end' }, 'now'),
      svg('text', { x: pad, y: 12 }, String(top))),
    h('figcaption', { class: 'legend' },
      h('span', null, h('span', { class: 'swatch allowed' }), `${allowed} allowed`),
      h('span', null, h('span', { class: 'swatch denied' }), `${denied} denied`)));
}
