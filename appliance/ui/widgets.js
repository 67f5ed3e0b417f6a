// Small pieces every view uses: toasts, dialogs, times.
import { h, $ } from './dom.js';
import { icon } from './icons.js';
import { t, lang } from './i18n.js';
import { S, changed } from './state.js';

let toastTimer;
export function toast(text, kind = 'info') {
  let el = $('#toast');
  if (!el) { el = h('div', { id: 'toast', role: 'status' }); document.body.append(el); }
  el.className = 'toast ' + kind;
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

export function showDialog(d) {
  document.body.append(d);
  d.addEventListener('close', () => d.remove());
  d.showModal();
  changed('dialog');
}

export function dialogShell(title, ...content) {
  const d = h('dialog', { 'aria-label': title },
    h('header', {}, h('h2', {}, title), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => d.close() }, icon('close'))),
    ...content);
  return d;
}

export function timeOf(ts) {
  return new Date(ts).toLocaleTimeString(lang(), { hour: '2-digit', minute: '2-digit' });
}

export function dayOf(ts) {
  return new Date(ts).toLocaleDateString(lang(), { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
}

export function durationText(ms) {
  const m = Math.floor(ms / 60000);
  const sec = Math.floor(ms / 1000) % 60;
  return m ? t('duration_min', { m, s: sec }) : t('duration_sec', { s: sec });
}

/** "guest" beside a guest's name, always (a guest cannot pass for a colleague). */
export function guestBadge(id) {
  return S.users.get(id)?.role === 'guest' ? h('span', { class: 'badge-guest' }, t('guest_badge')) : null;
}
