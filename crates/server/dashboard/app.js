// The dashboard's shell: who is signed in, the navigation they may see, and which page
// the address shows. Each page is a module with `render(main, ctx)`.

import { api, grants, onSignedOut } from './api.js';
import { h, replace } from './dom.js';
import * as signin from './pages/signin.js';
import * as tokens from './pages/tokens.js';
import * as token from './pages/token.js';
import * as audit from './pages/audit.js';
import * as accounts from './pages/accounts.js';
import * as roles from './pages/roles.js';
import * as settings from './pages/settings.js';
import * as gateway from './pages/gateway.js';
import * as webhooks from './pages/webhooks.js';

/** The pages, by path; `need` is the permission that shows it in the navigation. */
const PAGES = [
  { path: /^\/(tokens)?$/, page: tokens, nav: '/tokens', label: 'Tokens', need: 'tokens:read' },
  { path: /^\/tokens\/([^/]+)$/, page: token, need: 'tokens:read' },
  { path: /^\/audit$/, page: audit, nav: '/audit', label: 'Audit log', need: 'audit:read' },
  { path: /^\/accounts$/, page: accounts, nav: '/accounts', label: 'Accounts', need: 'accounts:read' },
  { path: /^\/roles$/, page: roles, nav: '/roles', label: 'Roles', need: 'roles:read' },
  { path: /^\/gateway$/, page: gateway, nav: '/gateway', label: 'Gateway', need: 'gateway:read' },
  { path: /^\/webhooks$/, page: webhooks, nav: '/webhooks', label: 'Webhooks', need: 'webhooks:read' },
  { path: /^\/settings$/, page: settings, nav: '/settings', label: 'Settings', need: null },
];

const root = document.getElementById('app');
let me = null;

const ctx = {
  get me() {
    return me;
  },
  /** Whether the signed-in account holds `permission`. */
  can(permission) {
    return !!me && grants(me.account.permissions, permission);
  },
  navigate,
  /** Draws the current page again (after a change). */
  refresh: () => show(),
};

function navigate(path, { replace: replacing = false } = {}) {
  if (replacing) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  show();
}

async function start() {
  onSignedOut(() => {
    me = null;
    show();
  });
  // Links to this origin change the page without loading it again.
  document.addEventListener('click', (e) => {
    const a = e.target.closest('a[href^="/"]');
    if (!a || a.target || a.hasAttribute('download') || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (a.getAttribute('href').startsWith('/api/')) return;
    e.preventDefault();
    navigate(a.getAttribute('href'));
  });
  window.addEventListener('popstate', () => show());
  try {
    me = await api('GET', '/api/v1/user/me');
  } catch {
    me = null;
  }
  show();
}

async function show() {
  const path = location.pathname;
  if (!me) {
    if (path !== '/sign-in') history.replaceState({ next: path === '/' ? '/tokens' : path }, '', '/sign-in');
    document.title = 'Sign in · Tessera';
    const next = (history.state && history.state.next) || '/tokens';
    replace(root, signin.render(async () => {
      me = await api('GET', '/api/v1/user/me');
      navigate(next, { replace: true });
    }));
    return;
  }
  if (path === '/sign-in' || path === '/') {
    history.replaceState(null, '', '/tokens');
    return show();
  }
  const found = PAGES.find((p) => p.path.test(path));
  const main = h('main', { id: 'main', tabindex: '-1' });
  replace(root, header(path), main);
  if (!found) {
    notFound(main);
    return;
  }
  if (found.need && !ctx.can(found.need)) {
    replace(main, h('h1', { text: 'Not allowed' }), h('p', { text: `This page needs the permission ${found.need}, which your account does not have.` }));
    return;
  }
  const params = path.match(found.path).slice(1);
  await found.page.render(main, ctx, ...params);
}

function notFound(main) {
  document.title = 'Not found · Tessera';
  replace(main, h('h1', { text: 'Not found' }), h('p', null, 'No page here. ', h('a', { href: '/tokens', text: 'Back to your tokens' })));
}

function header(path) {
  const links = PAGES.filter((p) => p.nav && (!p.need || ctx.can(p.need))).map((p) =>
    h('li', null, h('a', { href: p.nav, text: p.label, 'aria-current': path === p.nav || (p.nav === '/tokens' && path.startsWith('/tokens/')) ? 'page' : null })),
  );
  const signOut = h('button', {
    type: 'button',
    text: 'Sign out',
    onclick: async () => {
      signOut.disabled = true;
      try {
        await api('POST', '/api/v1/logout');
      } catch {
        // Signed out either way: the session is forgotten here.
      }
      me = null;
      history.replaceState({ next: '/tokens' }, '', '/sign-in');
      show();
    },
  });
  return h(
    'header',
    { class: 'top' },
    h('a', { class: 'brand', href: '/tokens', text: 'Tessera' }),
    h('nav', { 'aria-label': 'Main' }, h('ul', null, links)),
    h('div', { class: 'user' }, h('span', { class: 'muted', text: me.account.username }), signOut),
  );
}

start();
