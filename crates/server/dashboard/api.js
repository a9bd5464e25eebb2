// The dashboard's one way to the server: `/api/v1`, on the session cookie. Errors come
// back as `ApiError`, carrying the API's own code, message and details.

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `The server answered ${status}.`);
    this.status = status;
    this.code = e.code || 'unknown';
    this.details = e.details || null;
  }
}

let signedOut = () => {};

/** What to do when the session is gone (it expired, or was signed out elsewhere). */
export function onSignedOut(handler) {
  signedOut = handler;
}

/** One request; answers the JSON body (`null` for 204). */
export async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, { error: { code: 'network', message: 'The server cannot be reached. Check your connection and try again.' } });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && err.code !== 'invalid_credentials') signedOut(err);
    throw err;
  }
  return data;
}

/** Every item of a list, following `next_cursor`. */
export async function all(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** Whether permissions `held` (with `*` and `resource:*` wildcards) grant `need`. */
export function grants(held, need) {
  return held.some((p) => p === '*' || p === need || (p.endsWith(':*') && need.startsWith(p.slice(0, -1))));
}
