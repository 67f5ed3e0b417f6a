// Settings, in sections with their own URLs (#settings/people …): a person's
// profile and notifications; for admins people, the box, certificates and
// health (with updates and restart).
import { h, clear, $ } from './dom.js';
import { get, post, patch } from './api.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { errorText, field, formError, showFormError } from './forms.js';
import { boxSettingsSection } from './wizard.js';
import { S, changed } from './state.js';
import { toast, showDialog, dialogShell } from './widgets.js';

const SECTIONS = [
  ['profile', 'profile', false], ['notifications', 'notifications', false],
  ['people', 'people', true], ['box', 'settings_box', true], ['certificates', 'wiz_certs', true], ['health', 'settings_health', true],
];
/** Old addresses keep working. */
const ALIASES = { system: 'health' };

export function notifyPref() { return localStorage.getItem('parvis.notify') || 'all'; }

export function settingsDialog(section = 'profile') {
  // a guest has a name and a language, nothing else
  const mine = S.me.role === 'guest' ? SECTIONS.slice(0, 1)
    : SECTIONS.filter(([, , admin]) => !admin || S.me.role === 'admin');
  section = ALIASES[section] || section;
  if (!mine.some(([id]) => id === section)) section = 'profile';
  const pane = h('div', { class: 'settings-pane', id: 'settings-pane' });
  const nav = h('nav', { class: 'settings-nav', 'aria-label': t('settings') },
    mine.map(([id, key]) => h('a', { href: '#settings/' + id, dataset: { section: id }, onclick: (ev) => { ev.preventDefault(); show(id); } }, t(key))));
  const show = (id) => {
    for (const a of nav.querySelectorAll('a')) a.toggleAttribute('aria-current', a.dataset.section === id);
    history.replaceState(null, '', '#settings/' + id);
    clear(pane).append(settingsSection(id));
  };
  const d = dialogShell(t('settings'), h('div', { class: 'settings-layout' }, nav, pane));
  d.classList.add('wide', 'settings');
  d.addEventListener('close', () => history.replaceState(null, '', S.current ? '#room=' + S.current : location.pathname));
  showDialog(d);
  show(section);
}

function settingsSection(id) {
  if (id === 'profile') return profileSection();
  if (id === 'notifications') return notificationsSection();
  if (id === 'people') return peopleSection();
  if (id === 'health') return h('div', {}, healthSection(), boxSettingsSection(toast, 'system'));
  return boxSettingsSection(toast, id);
}

function profileSection() {
  const err = formError();
  const display = h('input', { required: true, maxlength: 64, value: S.me.display_name });
  const cur = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const pw = h('input', { type: 'password', autocomplete: 'new-password', minlength: 8, required: true });
  const langSel = h('select', { onchange: () => { setLang(langSel.value); document.querySelector('dialog')?.close(); changed('lang'); } },
    LANGS.map(([code, name]) => h('option', { value: code, selected: code === lang() }, name)));
  return h('div', {},
    h('section', {}, h('h3', {}, t('profile')), h('form', { class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        S.me = await patch('/me', { display_name: display.value });
        S.users.set(S.me.id, S.me);
        changed('me');
        toast(t('saved'));
      } catch (e) { showFormError(err, e); }
    } }, field(t('display_name'), display), field(t('language'), langSel), h('button', { type: 'submit', class: 'primary' }, t('save')))),
    S.me.role === 'guest' ? null : h('section', {}, h('h3', {}, t('change_password')), h('form', { class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      try { await post('/me/password', { current: cur.value, new: pw.value }); cur.value = pw.value = ''; toast(t('saved')); } catch (e) { showFormError(err, e); }
    } }, field(t('current_password'), cur), field(t('new_password'), pw, t('password_hint')), h('button', { type: 'submit', class: 'primary' }, t('save')))),
    err);
}

function notificationsSection() {
  const notifySel = h('select', { onchange: () => localStorage.setItem('parvis.notify', notifySel.value) },
    ['all', 'mentions', 'off'].map((v) => h('option', { value: v, selected: notifyPref() === v }, t('notify_' + v))));
  const perm = 'Notification' in window ? Notification.permission : 'unsupported';
  return h('section', {}, h('h3', {}, t('notifications')),
    field(t('notifications'), notifySel, t('notify_permission_' + perm)),
    perm === 'default' ? h('button', { class: 'secondary', onclick: async () => {
      localStorage.setItem('parvis.notify-asked', '1');
      await Notification.requestPermission();
      $('.banner.ask')?.remove();
      clear($('#settings-pane')).append(notificationsSection());
    } }, t('notify_enable')) : null);
}

function uptimeText(secs) {
  const d = Math.floor(secs / 86400), hr = Math.floor(secs / 3600) % 24, m = Math.floor(secs / 60) % 60;
  return d ? t('uptime_d', { d, h: hr }) : hr ? t('uptime_h', { h: hr, m }) : t('uptime_m', { m });
}

/** The box's checks (GET /api/admin/health), worst first in the summary. */
function healthSection() {
  const body = h('div', { class: 'stack' }, h('p', {}, t('loading')));
  const render = async () => {
    let v;
    try { v = await get('/admin/health'); } catch (e) { clear(body).append(h('p', { class: 'form-error' }, errorText(e))); return; }
    const f = v.figures;
    clear(body).append(
      h('p', { class: 'health-summary ' + v.level, id: 'health-summary', role: 'status' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), t('health_' + v.level)),
      h('ul', { class: 'health-checks' }, v.checks.map((c) => h('li', { class: c.level, dataset: { check: c.id } },
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        h('strong', {}, t('health_' + c.id)), h('span', { class: 'visually-hidden' }, ' (' + t('health_' + c.level) + ')'), ' ',
        h('span', { class: 'detail' }, c.detail)))),
      h('p', { class: 'hint' }, t('health_version', { version: v.version, uptime: uptimeText(v.uptime_secs) }), h('br'),
        t('health_figures', { connections: f.chat_connections, calls: f.calls, participants: f.call_participants, allocations: f.turn_allocations })),
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', onclick: render }, t('health_refresh'))));
  };
  render();
  return h('section', {}, h('h3', {}, t('settings_health')), body);
}

function peopleSection() {
  const list = h('table', { class: 'users' });
  const render = async () => {
    const all = await get('/users');
    S.users = new Map(all.map((u) => [u.id, u]));
    // guests come and go by links (Room settings → Invite a guest)
    const users = all.filter((u) => u.role !== 'guest');
    clear(list).append(h('thead', {}, h('tr', {}, h('th', {}, t('display_name')), h('th', {}, t('username')), h('th', {}, t('role')), h('th', {}, ''))),
      h('tbody', {}, users.map((u) => h('tr', { class: u.disabled ? 'disabled' : '' },
        h('td', {}, u.display_name), h('td', {}, '@' + u.username), h('td', {}, t('role_' + u.role) + (u.disabled ? ' · ' + t('disabled') : '')),
        h('td', {}, u.id === S.me.id ? '' : [
          h('button', { class: 'link', onclick: async () => {
            try { await patch('/users/' + u.id, { disabled: !u.disabled }); render(); } catch (e) { toast(errorText(e), 'error'); }
          } }, u.disabled ? t('enable') : t('disable')), ' ',
          h('button', { class: 'link', onclick: async () => {
            const p = prompt(t('reset_password_prompt', { name: u.display_name }));
            if (!p) return;
            try { await post(`/users/${u.id}/password`, { password: p }); toast(t('saved')); } catch (e) { toast(errorText(e), 'error'); }
          } }, t('reset_password'))])))));
  };
  render();
  const err = formError();
  const uname = h('input', { required: true, pattern: '[a-z0-9][a-z0-9._\\-]{1,31}' });
  const dname = h('input', { required: true, maxlength: 64 });
  const upw = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const admin = h('input', { type: 'checkbox' });
  const out = h('div', { class: 'invite-out' });
  const hours = h('select', {}, [[24, 'hours_24'], [72, 'hours_72'], [168, 'hours_168']].map(([v, k]) => h('option', { value: v, selected: v === 72 }, t(k))));
  return h('section', {}, h('h3', {}, t('people')), list,
    h('h4', {}, t('invite_link')), h('div', { class: 'row' }, hours,
      h('button', { class: 'secondary', onclick: async () => {
        try {
          const inv = await post('/invites', { hours: Number(hours.value) });
          const url = location.origin + inv.path;
          const input = h('input', { readonly: true, value: url, 'aria-label': t('invite_link') });
          clear(out).append(input, h('button', { class: 'secondary', onclick: () => { navigator.clipboard?.writeText(url); input.select(); toast(t('copied')); } }, t('copy')),
            h('small', {}, t('invite_expires', { when: new Date(inv.expires).toLocaleString(lang()) })));
          input.select();
        } catch (e) { toast(errorText(e), 'error'); }
      } }, t('create_invite'))), out,
    h('h4', {}, t('create_user')), h('form', { class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await post('/users', { username: uname.value.trim().toLowerCase(), display_name: dname.value, password: upw.value, admin: admin.checked });
        uname.value = dname.value = upw.value = ''; admin.checked = false;
        render();
        toast(t('saved'));
      } catch (e) { showFormError(err, e); }
    } }, field(t('username'), uname), field(t('display_name'), dname), field(t('password'), upw),
    h('label', { class: 'check' }, admin, ' ' + t('make_admin')), err, h('button', { type: 'submit', class: 'primary' }, t('create'))));
}
