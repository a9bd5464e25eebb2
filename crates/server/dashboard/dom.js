// Building the page without HTML strings: no markup is ever parsed from data, so nothing
// a name or a note holds can become an element or a script.

/** An element: `props` are attributes, `on…` listeners, `text`, `class`, or properties
 * (`value`, `checked`, `disabled` …) when given a non-string; `children` may nest. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** An SVG element, for the usage chart. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (typeof v !== 'string' && k in el) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces what `el` holds. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** An id for label/input pairs. */
export function uid(prefix = 'f') {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: `input` is the control (its id is set here). */
export function field(label, input, hint) {
  const id = input.id || uid();
  input.id = id;
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  const parts = [h('label', { for: id, text: label }), input];
  if (hint) {
    const hintEl = h('p', { class: 'hint', id: `${id}-hint`, text: hint });
    input.setAttribute('aria-describedby', hintEl.id);
    parts.push(hintEl);
  }
  parts.push(error);
  const wrap = h('div', { class: 'field' }, parts);
  wrap.dataset.field = input.name || '';
  return wrap;
}

/** Runs `work` with `button` showing that it waits (disabled, `aria-busy`). */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Shows an API error in `slot` (an element kept for errors), in the API's own words;
 * fields it names are marked in `form`, with their message beside them. */
export function showError(slot, err, form) {
  if (form) clearFieldErrors(form);
  if (!err) {
    replace(slot);
    slot.hidden = true;
    return;
  }
  const fields = (err.details && err.details.fields) || {};
  const unplaced = [];
  for (const [name, message] of Object.entries(fields)) {
    const wrap = form && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    const control = wrap && wrap.querySelector('input, select, textarea');
    const out = wrap && wrap.querySelector('.field-error');
    if (control && out) {
      control.setAttribute('aria-invalid', 'true');
      const described = control.getAttribute('aria-describedby') || '';
      control.setAttribute('aria-describedby', `${described} ${out.id}`.trim());
      out.textContent = message;
      out.hidden = false;
    } else {
      unplaced.push(`${name}: ${message}`);
    }
  }
  const missing = (err.details && err.details.missing) || [];
  replace(
    slot,
    h('p', { text: err.message }),
    unplaced.length ? h('ul', null, unplaced.map((m) => h('li', { text: m }))) : null,
    missing.length ? h('p', { text: `Missing: ${missing.join(', ')}` }) : null,
  );
  slot.hidden = false;
}

function clearFieldErrors(form) {
  for (const c of form.querySelectorAll('[aria-invalid="true"]')) {
    c.removeAttribute('aria-invalid');
    const ids = (c.getAttribute('aria-describedby') || '').split(' ').filter((i) => !i.endsWith('-error'));
    if (ids.length) c.setAttribute('aria-describedby', ids.join(' '));
    else c.removeAttribute('aria-describedby');
  }
  for (const out of form.querySelectorAll('.field-error')) {
    out.textContent = '';
    out.hidden = true;
  }
}

/** A slot for errors: an `alert`, empty and hidden until something fails. */
export function errorSlot() {
  return h('div', { class: 'error', role: 'alert', hidden: true });
}

/** A modal dialog named `title` (`role`: `dialog` or `alertdialog`). `build(close)`
 * answers its body and actions. Focus stays inside; Escape closes it; it is removed
 * from the page when closed, and focus goes back where it was. */
export function openDialog({ title, role = 'dialog', build }) {
  const titleId = uid('dialog-title');
  const dialog = h('dialog', { 'aria-labelledby': titleId });
  if (role === 'alertdialog') dialog.setAttribute('role', 'alertdialog');
  const opener = document.activeElement;
  const close = () => dialog.close();
  const { body, actions } = build(close);
  replace(
    dialog,
    h('div', { class: 'dialog-body' }, h('h2', { id: titleId, text: title }), body),
    h('div', { class: 'dialog-actions' }, actions),
  );
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  const first = dialog.querySelector('input:not([type="hidden"]), select, textarea');
  if (first) first.focus();
  return { dialog, close };
}

/** A `table` with `headers` (text, or props such as `{text, class}`) and `rows` (`tr`
 * elements), scrolling inside itself. */
export function table(caption, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      null,
      caption ? h('caption', { class: 'visually-hidden', text: caption }) : null,
      h('thead', null, h('tr', null, headers.map((t) => (typeof t === 'string' ? h('th', { scope: 'col', text: t }) : h('th', { scope: 'col', ...t }))))),
      h('tbody', null, rows),
    ),
  );
}

/** A dialog whose body is a form: `fields` and a submit button named `action` (`danger`:
 * red). `submit()` does the work; the API error it throws is shown in the dialog, which
 * closes once it succeeds. `enabled()`, when given, says whether the button may be used. */
export function formDialog({ title, role, action, danger, intro, fields, submit, enabled }) {
  return openDialog({
    title,
    role,
    build: (close) => {
      const formId = uid('form');
      const error = errorSlot();
      const button = h('button', { type: 'submit', form: formId, class: danger ? 'danger solid' : 'primary', text: action });
      const form = h('form', {
        id: formId,
        novalidate: true,
        onsubmit: async (e) => {
          e.preventDefault();
          await busy(button, async () => {
            try {
              await submit();
              close();
            } catch (err) {
              showError(error, err, form);
            }
          });
          if (enabled) button.disabled = !enabled();
        },
      }, intro ? h('p', { text: intro }) : null, error, fields);
      if (enabled) {
        button.disabled = !enabled();
        form.addEventListener('input', () => {
          button.disabled = !enabled();
        });
      }
      return { body: form, actions: [h('button', { type: 'button', text: 'Cancel', onclick: close }), button] };
    },
  });
}
