// Form helpers shared by the chat app and the setup wizard.
import { h } from './dom.js';
import { ApiError } from './api.js';
import { t } from './i18n.js';

/** Words for an API error: the translation of its code, else its message. */
export function errorText(e) {
  if (e instanceof ApiError) {
    const key = 'err_' + e.code;
    const local = t(key);
    return local !== key ? local : e.message;
  }
  return String(e?.message || e);
}

export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', {}, hint) : null);
}

export function formError() { return h('p', { class: 'form-error', role: 'alert', hidden: true }); }
export function showFormError(el, e) { el.textContent = errorText(e); el.hidden = false; }

