// The dashboard's flows, as a person would go through them, checked as they would check
// them: the value on the clipboard works against the API, the row's status and expiry,
// the audit entry each action wrote.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ADMIN_PASSWORD, adminApi, assertNotKept, launchBrowser, newPage, screenshot, signIn, startServer } from './harness.js';

let server;
let browser;
let api;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  api = await adminApi(server);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens the Generate token dialog and names the token; answers the dialog. */
async function openGenerate(page, name) {
  await page.getByRole('button', { name: 'Generate token' }).first().click();
  const dialog = page.getByRole('dialog', { name: 'Generate token' });
  await dialog.getByLabel('Name', { exact: true }).fill(name);
  return dialog;
}

/** Generates a token through the dialog; answers its value as the page shows it. */
async function generate(page, name, expiration = '30 days') {
  const dialog = await openGenerate(page, name);
  await dialog.getByLabel('Expiration', { exact: true }).selectOption({ label: expiration });
  await dialog.getByRole('button', { name: 'Generate' }).click();
  await dialog.waitFor({ state: 'detached' });
  return page.getByRole('textbox', { name: 'Token value' }).inputValue();
}

const row = (page, name) => page.getByRole('row').filter({ has: page.getByRole('link', { name, exact: true }) });

describe('signing in', () => {
  test('a wrong password is an alert; the right one opens the tokens page', async () => {
    const page = await newPage(browser, server);
    await page.goto('/tokens');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await assert.doesNotReject(page.getByRole('alert').filter({ hasText: /password/i }).waitFor());
    await screenshot(page, 'sign-in-refused');
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Tokens', exact: true }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/tokens');
    const nav = page.getByRole('navigation', { name: 'Main' });
    for (const link of ['Tokens', 'Audit log', 'Accounts', 'Roles', 'Gateway', 'Settings']) {
      assert.equal(await nav.getByRole('link', { name: link, exact: true }).count(), 1, link);
    }
    await page.context().close();
  });
});

describe('deep links', () => {
  test('a page loaded by its address asks for sign-in, then shows that page', async () => {
    const page = await newPage(browser, server);
    await page.goto('/roles');
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/sign-in');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Roles', level: 1 }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/roles');
    await page.reload();
    await page.getByRole('heading', { name: 'Roles', level: 1 }).waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await page.goto('/tokens');
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/sign-in', 'signed out for good');
    await page.context().close();
  });
});

describe('tokens', () => {
  test('generate, copy, use against the API, gone after a reload, delete', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const value = await generate(page, 'ci-deploy');
    assert.match(value, /^tsr_[0-9A-Za-z]{49}$/);
    await page.getByRole('button', { name: 'Copy', exact: true }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), value);
    const me = await api.call('GET', '/api/v1/user/me', null, value);
    assert.equal(me.status, 200);
    assert.equal(me.body.auth.token_name, 'ci-deploy');
    const r = row(page, 'ci-deploy');
    await assert.doesNotReject(r.getByText('active', { exact: true }).waitFor());
    await assert.doesNotReject(r.getByText('in 30 days').waitFor());
    await screenshot(page, 'tokens-new-value');
    await assertNotKept(page, value);
    assert.equal((await api.audit('token.create'))[0].target.name, 'ci-deploy');

    await page.reload();
    await page.getByRole('heading', { name: 'Tokens', exact: true }).waitFor();
    await row(page, 'ci-deploy').waitFor();
    assert.equal(await page.getByRole('textbox', { name: 'Token value' }).count(), 0, 'the value is gone after a reload');
    assert.equal((await page.content()).includes(value), false);

    await row(page, 'ci-deploy').getByRole('button', { name: 'Delete', exact: true }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Delete token' });
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    await confirm.waitFor({ state: 'detached' });
    await row(page, 'ci-deploy').waitFor({ state: 'detached' });
    assert.equal((await api.call('GET', '/api/v1/user/me', null, value)).status, 401);
    assert.equal((await api.audit('token.delete'))[0].target.name, 'ci-deploy');
    await assertNotKept(page, value);
    await page.context().close();
  });

  test('generate with a quota: the value spends it, the token page shows what is left', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const dialog = await openGenerate(page, 'metered');
    await dialog.getByLabel('Uses').fill('3');
    await dialog.getByLabel('refilled').selectOption('monthly');
    await dialog.getByRole('button', { name: 'Generate' }).click();
    await dialog.waitFor({ state: 'detached' });
    const value = await page.getByRole('textbox', { name: 'Token value' }).inputValue();
    for (const want of [200, 200, 200, 429]) {
      assert.equal((await api.call('GET', '/api/v1/user/me', null, value)).status, want);
    }
    await row(page, 'metered').getByRole('link', { name: 'metered', exact: true }).click();
    await page.getByRole('heading', { name: 'metered', level: 1 }).waitFor();
    const quota = page.locator('dt', { hasText: 'Quota' }).locator('+ dd');
    assert.match(await quota.innerText(), /^0 of 3 left, refills/);
    await page.context().close();
  });

  test('webhooks: create one (its secret shown once), see a delivery and its attempts, send again, delete', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await page.getByRole('link', { name: 'Webhooks' }).click();
    await page.getByRole('heading', { name: 'Webhooks', level: 1 }).waitFor();
    await page.getByRole('button', { name: 'New webhook' }).click();
    const dialog = page.getByRole('dialog', { name: 'New webhook' });
    // Nothing listens on the discard port: every attempt fails to connect.
    await dialog.getByLabel('URL').fill('http://127.0.0.1:9/hook');
    await dialog.getByLabel('token.created').check();
    await dialog.getByRole('button', { name: 'Create webhook' }).click();
    await dialog.waitFor({ state: 'detached' });
    const secret = await page.getByRole('textbox', { name: 'Signing secret' }).inputValue();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const hooks = (await api.call('GET', '/api/v1/webhooks')).body.items;
    assert.equal(hooks.length, 1);
    assert.equal(JSON.stringify(hooks).includes(secret), false, 'the API never shows it again');
    await api.call('POST', '/api/v1/tokens', { name: 'announced' });
    await new Promise((ok) => setTimeout(ok, 1000));
    await page.getByRole('button', { name: 'Deliveries' }).click();
    const deliveries = page.getByRole('table', { name: 'Deliveries' });
    await deliveries.getByText('token.created').waitFor();
    await deliveries.getByText('could not connect to the receiver').waitFor();
    await deliveries.getByRole('button', { name: 'Send again' }).click();
    // The table is drawn again with the new attempt.
    await deliveries.locator('tbody tr td:nth-child(3)', { hasText: /^[2-9]$/ }).waitFor();
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    const confirm = page.getByRole('alertdialog', { name: 'Delete webhook' });
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.getByText('No webhooks yet.').waitFor();
    assert.equal((await api.call('GET', '/api/v1/webhooks')).body.items.length, 0);
    await page.context().close();
  });

  test('regenerate with a grace period: the new value is shown once, the old one keeps working', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const old = await generate(page, 'rotating');
    await row(page, 'rotating').getByRole('button', { name: 'Regenerate', exact: true }).click();
    const dialog = page.getByRole('alertdialog', { name: 'Regenerate token' });
    await dialog.getByLabel('Grace period').selectOption({ label: '1 hour' });
    await dialog.getByRole('button', { name: 'Regenerate', exact: true }).click();
    await dialog.waitFor({ state: 'detached' });
    const fresh = await page.getByRole('textbox', { name: 'Token value' }).inputValue();
    assert.notEqual(fresh, old);
    assert.equal((await api.call('GET', '/api/v1/user/me', null, fresh)).status, 200);
    assert.equal((await api.call('GET', '/api/v1/user/me', null, old)).status, 200, 'within its grace period');
    const entry = (await api.audit('token.regenerate'))[0];
    assert.equal(entry.target.name, 'rotating');
    assert.equal(entry.details.grace_period_seconds, 3600);
    await assertNotKept(page, fresh);
    await assertNotKept(page, old);
    await page.context().close();
  });

  test('edit: renamed, with scopes of its own; the value keeps working within them', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const value = await generate(page, 'to-rename');
    await row(page, 'to-rename').getByRole('button', { name: 'Edit', exact: true }).click();
    const dialog = page.getByRole('dialog', { name: 'Edit token' });
    await dialog.getByLabel('Name', { exact: true }).fill('renamed');
    await dialog.getByLabel("Follow my account's permissions").uncheck();
    await dialog.getByLabel('audit:read', { exact: true }).check();
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.waitFor({ state: 'detached' });
    await row(page, 'renamed').getByText('audit:read').waitFor();
    assert.equal((await api.call('GET', '/api/v1/audit-logs?limit=1', null, value)).status, 200);
    const denied = await api.call('GET', '/api/v1/tokens', null, value);
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.code, 'forbidden');
    const entry = (await api.audit('token.update'))[0];
    assert.equal(entry.target.name, 'renamed');
    await page.context().close();
  });

  test('a custom expiry date', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const dialog = await openGenerate(page, 'dated');
    await dialog.getByLabel('Expiration', { exact: true }).selectOption({ label: 'Custom' });
    const day = new Date(Date.now() + 10 * 24 * 3600 * 1000).toISOString().slice(0, 10);
    await dialog.getByLabel('Expires on').fill(day);
    await dialog.getByRole('button', { name: 'Generate' }).click();
    await dialog.waitFor({ state: 'detached' });
    await row(page, 'dated').getByText(/in (10|11) days/).waitFor();
    await page.context().close();
  });

  test('disable and enable: the status follows, and so does the API', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const value = await generate(page, 'switch', '7 days');
    const r = row(page, 'switch');
    await assert.doesNotReject(r.getByText('expires soon').waitFor());
    await r.getByRole('button', { name: 'Disable', exact: true }).click();
    await r.getByText('disabled', { exact: true }).waitFor();
    const off = await api.call('GET', '/api/v1/user/me', null, value);
    assert.equal(off.status, 401);
    assert.equal(off.body.error.code, 'token_disabled');
    await screenshot(page, 'tokens-disabled-row');
    await r.getByRole('button', { name: 'Enable', exact: true }).click();
    await r.getByText('active', { exact: true }).waitFor();
    assert.equal((await api.call('GET', '/api/v1/user/me', null, value)).status, 200);
    assert.equal((await api.audit('token.disable'))[0].target.name, 'switch');
    assert.equal((await api.audit('token.enable'))[0].target.name, 'switch');
    await page.context().close();
  });

  test('an API error is shown in the dialog, in the API\'s words', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    await generate(page, 'twice');
    const dialog = await openGenerate(page, 'twice');
    await dialog.getByRole('button', { name: 'Generate' }).click();
    const alert = dialog.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /already/i);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await page.context().close();
  });

  test('delete all: only after typing DELETE; every value stops working', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const a = await generate(page, 'all-a');
    const b = await generate(page, 'all-b');
    await page.getByRole('heading', { name: 'Danger zone' }).waitFor();
    await page.getByRole('button', { name: 'Delete all tokens' }).click();
    const dialog = page.getByRole('alertdialog', { name: 'Delete all tokens' });
    const go = dialog.getByRole('button', { name: 'Delete all tokens' });
    assert.equal(await go.isDisabled(), true);
    await dialog.getByLabel('Type DELETE to confirm').fill('delete');
    assert.equal(await go.isDisabled(), true);
    await dialog.getByLabel('Type DELETE to confirm').fill('DELETE');
    assert.equal(await go.isDisabled(), false);
    await go.click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByText('No tokens yet.').waitFor();
    for (const v of [a, b]) assert.equal((await api.call('GET', '/api/v1/user/me', null, v)).status, 401);
    // The admin's API token went with them: another, for the checks and tests that follow.
    api = await adminApi(server);
    const entry = (await api.audit('token.delete_all'))[0];
    assert.ok(entry.details.deleted >= 2, JSON.stringify(entry));
    await screenshot(page, 'tokens-empty');
    await page.context().close();
  });

  test('works with the keyboard alone: the dialog takes focus, Escape gives it back', async () => {
    const page = await newPage(browser, server);
    await signIn(page);
    const button = page.getByRole('button', { name: 'Generate token' }).first();
    await button.focus();
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Generate token' });
    await dialog.waitFor();
    assert.equal(await dialog.getByLabel('Name', { exact: true }).evaluate((el) => el === document.activeElement), true);
    await page.keyboard.type('by-keyboard');
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    await page.getByRole('textbox', { name: 'Token value' }).waitFor();
    await button.focus();
    await page.keyboard.press('Enter');
    await dialog.waitFor();
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    assert.equal(await button.evaluate((el) => el === document.activeElement), true);
    await page.context().close();
  });
});

describe('a developer', () => {
  test('sees no Accounts link and no other account\'s tokens', async () => {
    const made = await api.call('POST', '/api/v1/accounts', { username: 'dev', password: 'dev-password-123', roles: ['developer'] });
    assert.equal(made.status, 201);
    await api.call('POST', '/api/v1/tokens', { name: 'admins-own' });
    const page = await newPage(browser, server);
    await signIn(page, 'dev', 'dev-password-123');
    const nav = page.getByRole('navigation', { name: 'Main' });
    assert.equal(await nav.getByRole('link', { name: 'Tokens', exact: true }).count(), 1);
    assert.equal(await nav.getByRole('link', { name: 'Accounts' }).count(), 0);
    assert.equal(await nav.getByRole('link', { name: 'Audit log' }).count(), 0);
    await page.getByText('No tokens yet.').waitFor();
    assert.equal(await page.getByText('admins-own').count(), 0);
    await generate(page, 'devs-own');
    await row(page, 'devs-own').waitFor();
    await page.goto('/accounts');
    await page.getByRole('heading', { name: 'Not allowed' }).waitFor();
    await page.context().close();
  });
});
