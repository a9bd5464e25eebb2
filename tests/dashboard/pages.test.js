// Every page, as each kind of visitor sees it: at 1280 and 375 px (screenshots kept as
// artifacts), without a horizontal scroll, in dark mode; and what each page does.

import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { adminApi, launchBrowser, newPage, screenshot, signIn, startServer } from './harness.js';

let server;
let browser;
let api;
let usedToken;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  api = await adminApi(server);
  // Something on every page: a token with uses, a gateway service and route.
  const made = await api.call('POST', '/api/v1/tokens', { name: 'in-use', expires_in_days: 5, scopes: ['tokens:read'] });
  usedToken = made.body;
  for (let i = 0; i < 3; i += 1) {
    await fetch(`${server.gateway}/_tessera/verify`, { headers: { 'X-API-KEY': usedToken.token } });
  }
  await fetch(`${server.gateway}/_tessera/verify`, { headers: { 'X-API-KEY': usedToken.token.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) } });
  // And one reported leaked.
  const leaked = await api.call('POST', '/api/v1/tokens', { name: 'leaked-one' });
  const report = await api.call('POST', '/api/v1/tokens/leaked', { tokens: [leaked.body.token] }, '');
  assert.deepEqual(report.body, { received: 1, revoked: 1 });
  const applied = await api.call('PUT', '/api/v1/gateway/config', {
    services: [{ name: 'orders', upstreams: ['http://127.0.0.1:9'] }],
    routes: [{ name: 'orders', service: 'orders', path_prefix: '/orders', scopes: ['orders:read'] }],
  });
  assert.equal(applied.status, 200);
  // Uses reach the counters within two seconds.
  await new Promise((ok) => setTimeout(ok, 1500));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const PAGES = [
  ['tokens', '/tokens', 'Tokens'],
  ['token', () => `/tokens/${usedToken.id}`, 'in-use'],
  ['audit', '/audit', 'Audit log'],
  ['accounts', '/accounts', 'Accounts'],
  ['roles', '/roles', 'Roles'],
  ['gateway', '/gateway', 'Gateway'],
  ['webhooks', '/webhooks', 'Webhooks'],
  ['settings', '/settings', 'Settings'],
];

describe('every page', () => {
  for (const width of [1280, 375]) {
    test(`at ${width} px: loads by its address, shows its heading, no horizontal scroll`, async () => {
      const page = await newPage(browser, server, { width });
      await page.goto('/');
      await page.getByRole('button', { name: 'Sign in' }).waitFor();
      await screenshot(page, 'sign-in');
      await signIn(page);
      for (const [name, path, heading] of PAGES) {
        await page.goto(typeof path === 'function' ? path() : path);
        await page.getByRole('heading', { name: heading, exact: true, level: 1 }).waitFor();
        await page.waitForLoadState('networkidle');
        await screenshot(page, name);
        const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(scroll <= width, `${name}: the page is ${scroll} px wide at ${width}`);
      }
      assert.deepEqual(page.messages.filter((m) => /error/i.test(m)), []);
      await page.context().close();
    });
  }

  test('dark mode follows the system', async () => {
    const page = await newPage(browser, server, { colorScheme: 'dark' });
    await signIn(page);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(13, 17, 23)');
    await screenshot(page, 'tokens-dark');
    await page.context().close();
  });

  test('headers: a strict CSP, no caching of the page, assets cached by content; little script', async () => {
    const page = await newPage(browser, server);
    const scripts = [];
    page.on('response', async (r) => {
      if (r.request().resourceType() === 'script') scripts.push(r);
    });
    const response = await page.goto('/tokens');
    const h = response.headers();
    assert.match(h['content-security-policy'], /script-src 'self'/);
    assert.doesNotMatch(h['content-security-policy'], /unsafe-inline|unsafe-eval/);
    assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.equal(h['cache-control'], 'no-store');
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await page.waitForLoadState('networkidle');
    assert.ok(scripts.length > 0);
    let gzipped = 0;
    for (const r of scripts) {
      assert.match(r.headers()['cache-control'], /immutable/);
      assert.match(new URL(r.url()).pathname, /^\/assets\/[0-9a-f]{16}\//);
      gzipped += gzipSync(await r.body()).length;
    }
    assert.ok(gzipped < 150 * 1024, `${gzipped} bytes of script, gzipped`);
    await page.context().close();
  });
});

describe('pages at work', () => {
  test('a token: its fields, its usage chart, its recent requests', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.getByRole('link', { name: 'in-use', exact: true }).click();
    await page.getByRole('heading', { name: 'in-use', level: 1 }).waitFor();
    await page.getByText('expires soon').waitFor();
    await page.getByRole('img', { name: 'Usage' }).waitFor();
    await page.getByText('3 allowed').first().waitFor();
    const addresses = page.locator('dt', { hasText: 'Recent addresses' }).locator('+ dd');
    assert.match(await addresses.innerText(), /127\.0\.0\.1/);
    const requests = page.getByRole('table', { name: 'Recent requests' }).getByRole('row');
    assert.ok((await requests.count()) >= 4, 'a header and three requests');
    await page.context().close();
  });

  test('a leaked token is marked, in the list and on its page', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'leaked-one', exact: true }) });
    await row.getByText('leaked', { exact: true }).waitFor();
    await row.getByRole('link', { name: 'leaked-one', exact: true }).click();
    await page.getByRole('heading', { name: 'leaked-one', level: 1 }).waitFor();
    await page.getByRole('note').getByText(/reported leaked/).waitFor();
    await page.context().close();
  });

  test('the audit log: filter by action, verify the chain, export CSV', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { name: 'Audit log', level: 1 }).waitFor();
    await page.getByLabel('Action').selectOption('token.create');
    await page.waitForLoadState('networkidle');
    const actions = await page.getByRole('table', { name: 'Audit log' }).locator('tbody tr td:nth-child(2)').allInnerTexts();
    assert.ok(actions.length >= 2);
    assert.deepEqual([...new Set(actions)], ['token.create']);
    await page.getByRole('button', { name: 'Verify chain' }).click();
    await page.getByText(/Chain intact/).waitFor();
    const csv = await page.getByRole('link', { name: 'Export CSV' }).getAttribute('href');
    const body = await page.evaluate(async (href) => (await fetch(href)).text(), csv);
    assert.match(body.split('\n')[0], /action/);
    assert.match(body, /token\.create/);
    await page.context().close();
  });

  test('accounts: a new account, and the last super_admin protected with the reason shown', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.goto('/accounts');
    const adminRow = page.getByRole('row').filter({ hasText: 'super_admin' });
    await adminRow.waitFor();
    assert.equal(await adminRow.getByRole('button', { name: 'Disable' }).isDisabled(), true);
    assert.equal(await adminRow.getByRole('button', { name: 'Delete' }).isDisabled(), true);
    await adminRow.getByText(/last enabled super_admin/).waitFor();
    await page.getByRole('button', { name: 'New account' }).click();
    const dialog = page.getByRole('dialog', { name: 'New account' });
    await dialog.getByLabel('Username').fill('ops');
    await dialog.getByLabel('Password').fill('short');
    await dialog.getByRole('button', { name: 'Create account' }).click();
    await dialog.getByText(/12/).first().waitFor();
    await dialog.getByLabel('Password').fill('a-long-enough-password');
    await dialog.getByRole('button', { name: 'Create account' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByRole('cell', { name: 'ops', exact: true }).waitFor();
    assert.equal((await api.audit('account.create'))[0].target.name, 'ops');
    await page.context().close();
  });

  test('roles: a new role with its permissions', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.goto('/roles');
    await page.getByRole('button', { name: 'New role' }).click();
    const dialog = page.getByRole('dialog', { name: 'New role' });
    await dialog.getByLabel('Name').fill('lister');
    await dialog.getByLabel('Permissions').fill('tokens:read, orders:read');
    await dialog.getByRole('button', { name: 'Create role' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByRole('row').filter({ hasText: 'lister' }).getByText('tokens:read, orders:read').waitFor();
    await page.context().close();
  });

  test('settings: the policy saved, and a bad value refused beside its field', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.goto('/settings');
    await page.getByLabel('Tokens per account').fill('0');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('alert').waitFor();
    assert.equal(await page.getByLabel('Tokens per account').getAttribute('aria-invalid'), 'true');
    await page.getByLabel('Tokens per account').fill('40');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved.').waitFor();
    assert.equal((await api.call('GET', '/api/v1/settings/token-policy')).body.max_tokens_per_account, 40);
    await page.goto('/tokens');
    await page.getByText(/of 40 tokens/).waitFor();
    await page.context().close();
  });

  test('the gateway: services and routes, a change previewed before it applies', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.goto('/gateway');
    await page.getByRole('table', { name: 'Routes' }).getByText('/orders').waitFor();
    const editor = page.getByLabel('Configuration (JSON)');
    const config = JSON.parse(await editor.inputValue());
    config.routes.push({ name: 'health', service: 'orders', path_prefix: '/health', auth: 'none' });
    await editor.fill(JSON.stringify(config, null, 2));
    assert.equal(await page.getByRole('button', { name: 'Apply' }).isDisabled(), true);
    await page.getByRole('button', { name: 'Preview changes' }).click();
    await page.getByText('create route: health').waitFor();
    assert.equal((await api.call('GET', '/api/v1/routes')).body.items.length, 1, 'a preview changes nothing');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByRole('table', { name: 'Routes' }).getByText('/health').waitFor();
    assert.equal((await api.call('GET', '/api/v1/routes')).body.items.length, 2);
    await page.context().close();
  });
});
