// Sign-in: a username and a password, answered by a session cookie.

import { api } from '../api.js';
import { busy, errorSlot, field, h, showError } from '../dom.js';

/** The sign-in form; `signedIn()` runs once the session exists. */
export function render(signedIn) {
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = errorSlot();
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = h(
    'form',
    {
      class: 'signin',
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        await busy(submit, async () => {
          try {
            await api('POST', '/api/v1/login', { username: username.value, password: password.value });
            password.value = '';
            await signedIn();
          } catch (err) {
            showError(error, err, form);
            password.select();
          }
        });
      },
    },
    h('h1', { text: 'Sign in to Tessera' }),
    error,
    field('Username', username),
    field('Password', password),
    submit,
  );
  queueMicrotask(() => username.focus());
  return h('main', { id: 'main' }, form);
}
