// What every browser test stands on: a real `tessera serve` on temporary files and
// loopback ports, Debian's Chromium driven by playwright-core, and the admin API for
// setting things up and checking what the page did.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ADMIN_PASSWORD = 'correct-horse-battery-staple';
/** Where screenshots go (CI keeps them as artifacts). */
export const ARTIFACTS = resolve(process.env.TESSERA_DASHBOARD_ARTIFACTS || join(here, 'artifacts'));

/** A `tessera serve` of its own, on a new SQLite file; `stop()` ends it. */
export async function startServer() {
  const bin = resolve(process.env.TESSERA_BIN || join(here, '../../target/debug/tessera'));
  const dir = mkdtempSync(join(tmpdir(), 'tessera-dashboard-'));
  const child = spawn(bin, ['serve', '--database-url', `sqlite://${join(dir, 'tessera.db')}`, '--admin-addr', '127.0.0.1:0', '--gateway-addr', '127.0.0.1:0'], {
    env: { ...process.env, TESSERA_ADMIN_PASSWORD: ADMIN_PASSWORD, RUST_LOG: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`tessera serve did not start:\n${log}`)), 60_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = log.match(/Dashboard:\s+(http:\/\/\S+?)\/\s/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on('exit', (code) => fail(new Error(`tessera serve exited (${code}):\n${log}`)));
  });
  const gateway = log.match(/Gateway:\s+(http:\/\/\S+)/)[1];
  return {
    url,
    gateway,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((ok) => (child.exitCode !== null ? ok() : child.on('exit', ok)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium, headless, with what this machine's closed network needs. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A fresh browser context (no cookies) at `width` px, allowed to use the clipboard, with
 * every console message and page error kept in `page.messages`. */
export async function newPage(browser, server, { width = 1280, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ baseURL: server.url, viewport: { width, height: 900 }, colorScheme });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
  const page = await context.newPage();
  page.messages = [];
  page.on('console', (m) => page.messages.push(m.text()));
  page.on('pageerror', (e) => page.messages.push(`pageerror: ${e.message}`));
  return page;
}

/** Signs in through the form. */
export async function signIn(page, username = 'admin', password = ADMIN_PASSWORD) {
  await page.goto('/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/** The admin API as a script uses it: a token of the admin's, made through a session. */
export async function adminApi(server) {
  const login = await fetch(`${server.url}/api/v1/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: ADMIN_PASSWORD }),
  });
  const cookie = login.headers.get('set-cookie').split(';')[0];
  const made = await fetch(`${server.url}/api/v1/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Cookie: cookie, Origin: server.url },
    body: JSON.stringify({ name: `setup-${Date.now()}` }),
  });
  const token = (await made.json()).token;
  return {
    token,
    async call(method, path, body, key = token) {
      const res = await fetch(`${server.url}${path}`, {
        method,
        headers: { ...(key ? { 'X-API-KEY': key } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    /** The audit entries with `action`, newest first. */
    async audit(action) {
      return (await this.call('GET', `/api/v1/audit-logs?action=${action}`)).body.items;
    },
  };
}

/** Writes a screenshot of the whole page to the artifacts. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const width = page.viewportSize().width;
  await page.screenshot({ path: join(ARTIFACTS, `${name}-${width}.png`), fullPage: true });
}

/** Asserts that `value` is nowhere a page keeps things: storage, the address, the console. */
export async function assertNotKept(page, value) {
  const kept = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, location.href, document.cookie]));
  if (kept.includes(value)) throw new Error('the token value is in storage, a cookie or the address');
  if (page.messages.some((m) => m.includes(value))) throw new Error('the token value reached the console');
}
