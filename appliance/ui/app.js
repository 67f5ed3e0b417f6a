// Parvis web app: first-run setup, login, invites, and the chat shell. The
// views live in their own modules (roomlist, conversation, composer,
// dialogs, settings, call, wizard) over one state (state.js); server frames
// change the state in events.js.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { get, post, setCsrf, ApiError } from './api.js';
import { Conn } from './conn.js';
import { Calls } from './call.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { errorText, field, formError, showFormError } from './forms.js';
import { wizardView, certificateAlert } from './wizard.js';
import { S, on, changed, userName, roomTitle, sortedRooms, canModerate } from './state.js';
import { onFrame } from './events.js';
import { openRoom, renderEmpty, onScroll, scrollToBottom } from './conversation.js';
import { composerKey, composerInput, submitComposer } from './composer.js';
import { addFiles, toggleFiles, wireDropAndPaste } from './files.js';
import { renderRoomList } from './roomlist.js';
import { roomSettingsDialog, toggleMembers, runSearch, customerLinkDialog } from './dialogs.js';
import { loadWaiting, customerCall } from './lobby.js';
import { settingsDialog } from './settings.js';
import { notifyCall, maybeAskNotifications } from './notify.js';
import { toast } from './widgets.js';

const root = document.getElementById('app');

function langPicker() {
  const sel = h('select', { 'aria-label': t('language'), onchange: () => { setLang(sel.value); boot(); } },
    LANGS.map(([code, name]) => h('option', { value: code, selected: code === lang() }, name)));
  return sel;
}

function centered(...children) {
  clear(root);
  root.append(h('main', { class: 'center' },
    h('div', { class: 'card' }, h('div', { class: 'brand' }, h('img', { src: '/assets/icon.svg', alt: '' }), 'Parvis'), ...children),
    h('footer', { class: 'center-foot' }, langPicker())));
  const first = root.querySelector('input');
  if (first) first.focus();
}

// ------------------------------------------------------- setup and login --
function loginView(status) {
  const err = formError();
  const username = h('input', { name: 'username', required: true, autocomplete: 'username', autocapitalize: 'none' });
  const pw = h('input', { name: 'password', type: 'password', required: true, autocomplete: 'current-password' });
  const form = h('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      startChat(await post('/login', { username: username.value, password: pw.value }));
    } catch (e) { showFormError(err, e); pw.select(); }
  } },
  h('h1', {}, status.company ? t('login_to', { company: status.company }) : t('login')),
  field(t('username'), username), field(t('password'), pw), err,
  h('button', { type: 'submit', class: 'primary' }, t('login')));
  centered(form);
}

async function inviteView(token) {
  let info;
  try { info = await get('/invites/' + encodeURIComponent(token)); } catch (e) {
    centered(h('h1', {}, t('invite')), h('p', { class: 'form-error' }, errorText(e)), h('a', { href: '/' }, t('go_login')));
    return;
  }
  const err = formError();
  const display = h('input', { name: 'display_name', required: true, maxlength: 64, autocomplete: 'name' });
  const username = h('input', { name: 'username', required: true, pattern: '[a-z0-9][a-z0-9._\\-]{1,31}', autocomplete: 'username' });
  const pw = h('input', { name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const form = h('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const me = await post('/invites/' + encodeURIComponent(token), {
        username: username.value.trim().toLowerCase(), display_name: display.value, password: pw.value });
      history.replaceState(null, '', '/');
      startChat(me);
    } catch (e) { showFormError(err, e); }
  } },
  h('h1', {}, t('invite_title', { company: info.company })), h('p', {}, t('invite_intro')),
  field(t('display_name'), display), field(t('username'), username, t('username_hint')),
  field(t('password'), pw, t('password_hint')), err, h('button', { type: 'submit', class: 'primary' }, t('invite_join')));
  centered(form);
}

/** A guest link (/g/<token>): a name (and the link's password), then the
 *  one room. A guest who reloads comes back as the same guest (its session). */
async function guestView(token) {
  let me = null;
  try { me = await get('/me'); } catch { /* nobody yet */ }
  if (me?.user.role === 'guest') { startChat(me); return; }
  let info;
  try { info = await get('/guest/' + encodeURIComponent(token)); } catch (e) {
    centered(h('h1', {}, t('guest_title')), h('p', { class: 'form-error', id: 'guest-error' }, errorText(e)));
    return;
  }
  if (me) {
    // a colleague opening a customer's link: say who they are, change nothing
    centered(h('h1', {}, t('guest_title_at', { company: info.company })),
      h('p', {}, t('guest_signed_in', { name: me.user.display_name })), h('a', { class: 'button primary', href: '/' }, t('guest_open_chat')));
    return;
  }
  const err = formError();
  const name = h('input', { name: 'display_name', required: true, maxlength: 64, autocomplete: 'name' });
  const pw = info.password ? h('input', { name: 'password', type: 'password', required: true, autocomplete: 'off' }) : null;
  const form = h('form', { class: 'stack', id: 'guest-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      startChat(await post('/guest/' + encodeURIComponent(token), { display_name: name.value, password: pw?.value }));
    } catch (e) { showFormError(err, e); }
  } },
  h('h1', {}, t('guest_title_at', { company: info.company })), h('p', {}, t('guest_intro')),
  field(t('guest_name'), name, t('guest_name_hint')), pw ? field(t('password'), pw, t('guest_password_hint')) : null, err,
  h('button', { type: 'submit', class: 'primary' }, t('guest_join')),
  h('p', { class: 'hint' }, t('guest_expires', { when: new Date(info.expires).toLocaleString(lang()) })));
  centered(form);
}

/** A guest of a knock link waits here, seeing nothing of the room, until a
 *  moderator lets it in (GET /api/me says so) or sends it away (its session
 *  ends: 401). A reload comes back here as the same guest. */
let stopWaiting = () => {};

function waitingView(me) {
  setCsrf(me.csrf);
  stopWaiting();
  let stopped = false;
  // one poller at a time (a language change draws the page again)
  stopWaiting = () => { stopped = true; };
  const out = (key) => { stopped = true; centered(h('h1', {}, t(key)), h('p', {}, t(key + '_hint'))); };
  centered(h('div', { class: 'waiting', id: 'guest-waiting' },
    h('div', { class: 'spinner', 'aria-hidden': 'true' }),
    h('h1', {}, t('guest_waiting_title', { company: me.company })),
    h('p', { role: 'status' }, t('guest_waiting_as', { name: me.user.display_name })),
    h('p', { class: 'hint' }, t('guest_waiting_hint')),
    h('button', { class: 'secondary', id: 'guest-waiting-leave', onclick: async () => {
      stopped = true;
      try { await post('/logout'); } catch { /* gone already */ }
      out('guest_left');
    } }, t('guest_cancel'))));
  const poll = async (delay) => {
    await new Promise((r) => setTimeout(r, delay));
    if (stopped) return;
    try {
      const now = await get('/me');
      if (!now.guest?.waiting) { stopped = true; startChat(now); return; }
      delay = 2000;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { out('guest_not_admitted'); return; }
      delay = Math.min(delay * 2, 15000);
    }
    poll(delay);
  };
  poll(2000);
}

// ------------------------------------------------------------------ chat --

async function startChat(me) {
  if (me.guest?.waiting) { waitingView(me); return; }
  setCsrf(me.csrf);
  S.me = me.user;
  S.company = me.company;
  S.waiting = [];
  // a guest let in while a call is on lands in its pre-join screen
  S.offerCall = me.user.role === 'guest';
  const [users, rooms] = await Promise.all([get('/users'), get('/rooms')]);
  S.users = new Map(users.map((u) => [u.id, u]));
  S.rooms = new Map(rooms.map((r) => [r.id, r]));
  S.msgs = new Map();
  S.known = {};
  for (const r of rooms) S.known[r.id] = r.last_seq;
  renderShell();
  if (S.conn) S.conn.stop();
  S.conn = new Conn({
    known: () => S.known,
    onFrame,
    outboxKey: 'parvis.outbox.' + S.me.id,
  });
  S.conn.addEventListener('state', () => { changed('conn'); S.calls?.render(); });
  S.calls?.hangUp(false);
  S.calls = new Calls(S.conn, {
    me: () => S.me,
    userName,
    roomTitle: (id) => roomTitle(S.rooms.get(id)),
    room: (id) => S.rooms.get(id),
    openRoom,
    canModerate: (id) => canModerate(S.rooms.get(id)),
    toast,
    notify: notifyCall,
    changed: (room) => changed('calls', room),
  });
  S.conn.addEventListener('logout', () => { toast(t('logged_out_remote'), 'error'); logout(true); });
  window.parvis = { conn: S.conn, state: S, calls: S.calls }; // for diagnostics and tests
  S.conn.start();
  renderConnState();
  const settings = location.hash.match(/^#settings\/([a-z]+)$/);
  const fromHash = Number(new URLSearchParams(location.hash.slice(1)).get('room'));
  const first = S.rooms.has(fromHash) ? fromHash : sortedRooms()[0]?.id;
  if (first) openRoom(first); else renderEmpty();
  maybeAskNotifications();
  if (S.me.role === 'admin') showCertificateAlert();
  if (settings) settingsDialog(settings[1]);
}

/** Admins see a failed certificate renewal until it is fixed. */
async function showCertificateAlert() {
  const alert = await certificateAlert();
  if (!alert || document.getElementById('admin-alert')) return;
  const bar = h('div', { id: 'admin-alert', class: 'admin-alert', role: 'alert' }, alert,
    h('button', { class: 'link', onclick: () => bar.remove() }, t('close')));
  document.body.prepend(bar);
}

function renderShell() {
  clear(root);
  const guest = S.me.role === 'guest';
  const search = h('input', { type: 'search', id: 'search', placeholder: t('search_placeholder'), 'aria-label': t('search') });
  search.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') runSearch(search.value); });
  const sidebar = h('aside', { class: 'sidebar', 'aria-label': t('rooms') },
    h('header', { class: 'side-head' },
      h('div', { class: 'company' }, h('img', { src: '/assets/icon.svg', alt: '' }), h('span', {}, S.company || 'Parvis')),
      h('span', { id: 'conn-state', class: 'pill', role: 'status' }),
      h('button', { class: 'icon', title: t('settings'), 'aria-label': t('settings'), onclick: () => settingsDialog() }, icon('settings'))),
    h('div', { class: 'side-search' }, search),
    h('nav', { id: 'room-list', 'aria-label': t('rooms') }),
    h('footer', { class: 'side-foot' },
      h('span', { class: 'me', id: 'me-name' }, S.me.display_name),
      h('button', { class: 'link', onclick: () => logout(false) }, t('logout'))));
  const messages = h('div', { id: 'messages', class: 'messages', role: 'log', 'aria-live': 'polite', tabindex: '0', 'aria-label': t('messages') });
  messages.addEventListener('scroll', onScroll);
  const textarea = h('textarea', { id: 'composer-input', rows: 1, 'aria-label': t('write_message'), placeholder: t('write_message') });
  textarea.addEventListener('keydown', composerKey);
  textarea.addEventListener('input', composerInput);
  const picker = h('input', { type: 'file', id: 'file-input', multiple: true, hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
  picker.addEventListener('change', () => { addFiles(S.current, [...picker.files]); picker.value = ''; });
  const main = h('main', { class: 'conversation', id: 'conversation' },
    h('header', { class: 'conv-head' },
      h('button', { class: 'icon back', 'aria-label': t('back'), onclick: () => root.classList.remove('in-room') }, icon('back')),
      h('div', { class: 'titles' }, h('h1', { id: 'room-title' }), h('p', { id: 'room-topic', class: 'topic' })),
      h('button', { class: 'icon', id: 'call-btn', title: t('call_start'), 'aria-label': t('call_start'), onclick: () => S.calls.prejoin(S.current) }, icon('phone')),
      guest ? null : h('button', { class: 'icon', id: 'customer-call-btn', title: t('customer_call'), 'aria-label': t('customer_call'),
        onclick: () => customerCall(S.current, { openRoom, showLink: customerLinkDialog }) }, icon('support')),
      h('button', { class: 'icon', id: 'files-btn', title: t('files_title'), 'aria-label': t('files_title'), onclick: toggleFiles }, icon('folder')),
      h('button', { class: 'icon', id: 'members-btn', title: t('members'), 'aria-label': t('members'), onclick: toggleMembers }, icon('members')),
      h('button', { class: 'icon', id: 'room-settings-btn', title: t('room_settings'), 'aria-label': t('room_settings'), onclick: roomSettingsDialog }, icon('edit'))),
    h('div', { id: 'offline-banner', class: 'banner', hidden: true, role: 'status' }),
    h('div', { id: 'call-banner', class: 'banner call', hidden: true, role: 'status' }),
    h('div', { class: 'messages-wrap' }, messages,
      h('button', { id: 'jump', class: 'jump', hidden: true, onclick: () => scrollToBottom(true) })),
    h('div', { id: 'typing', class: 'typing', 'aria-live': 'polite' }),
    h('form', { id: 'composer', class: 'composer', onsubmit: (ev) => { ev.preventDefault(); submitComposer(); } },
      h('div', { id: 'compose-context', class: 'compose-context', hidden: true }),
      h('div', { id: 'tray', class: 'tray', hidden: true, 'aria-label': t('files_attached') }),
      h('div', { class: 'compose-row' },
        h('button', { type: 'button', class: 'icon', id: 'attach', title: t('file_attach'), 'aria-label': t('file_attach'), onclick: () => picker.click() }, icon('attach')),
        picker, textarea, h('button', { type: 'submit', class: 'primary', id: 'send' }, t('send')))));
  wireDropAndPaste(main, textarea);
  const panel = h('aside', { id: 'panel', class: 'panel', hidden: true });
  root.classList.toggle('guest-mode', guest);
  if (guest) {
    // one room, no directory: the header says whose box and offers the name
    main.querySelector('.conv-head').append(
      h('button', { class: 'icon', title: t('settings'), 'aria-label': t('settings'), onclick: () => settingsDialog('profile') }, icon('settings')),
      h('button', { class: 'link', id: 'guest-leave', onclick: () => logout(false) }, t('guest_leave')));
  }
  root.append(h('div', { class: 'shell' + (guest ? ' guest' : '') }, guest ? null : sidebar, main, panel));
  // guests waiting to be let in, wherever one is (lobby.js)
  changed('waiting');
  renderRoomList();
}

function renderConnState() {
  const el = $('#conn-state');
  if (!el || !S.conn) return;
  const st = S.conn.state;
  el.textContent = t('conn_' + st);
  el.className = 'pill ' + st;
  const banner = $('#offline-banner');
  if (banner) {
    const pending = S.conn.pending().length;
    banner.hidden = st === 'connected';
    banner.textContent = t(st === 'offline' ? 'banner_offline' : 'banner_reconnecting') + (pending ? ' ' + t('banner_pending', { n: pending }) : '');
  }
}

on('conn', renderConnState);
on('synced', () => {
  loadWaiting();
  // a guest just let in: the call that is on, if any, opens at its pre-join
  if (S.offerCall) {
    S.offerCall = false;
    const room = [...S.rooms.keys()][0];
    if (room !== undefined && S.calls.of(room) && !S.calls.active) S.calls.prejoin(room);
  }
});
on('me', () => { const el = $('#me-name'); if (el) el.textContent = S.me.display_name; });
on('lang', () => {
  document.documentElement.lang = lang();
  renderShell();
  if (S.current !== null) { const id = S.current; S.current = null; openRoom(id); } else renderEmpty();
  renderConnState();
  S.calls?.render();
});

let loggingOut = false;

async function logout(remote) {
  // once: a guest's own Leave also closes its socket (4003), which lands here too
  if (loggingOut || !S.me) return;
  if (!remote && S.me.role === 'guest' && !confirm(t('guest_leave_confirm'))) return;
  loggingOut = true;
  try { await doLogout(remote); } finally { loggingOut = false; }
}

async function doLogout(remote) {
  if (!remote) { try { await post('/logout'); } catch { /* already gone */ } }
  S.waiting = [];
  changed('waiting');
  if (S.conn) S.conn.stop();
  S.calls?.hangUp(false);
  S.conn = null;
  S.current = null;
  setCsrf('');
  const wasGuest = S.me?.role === 'guest';
  S.me = null;
  root.classList.remove('guest-mode', 'in-room');
  if (wasGuest) {
    // a guest who leaves (or whose link was revoked) is told so, and stays out
    centered(h('h1', {}, t(remote ? 'guest_ended' : 'guest_left')), h('p', {}, t('guest_left_hint')));
    return;
  }
  history.replaceState(null, '', '/');
  boot();
}

// ------------------------------------------------------------------- boot --

async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return;
  try {
    S.swReg = await navigator.serviceWorker.register('/sw.js');
    navigator.serviceWorker.addEventListener('message', (ev) => {
      if (ev.data?.room && S.rooms.has(ev.data.room)) openRoom(ev.data.room);
    });
  } catch { S.swReg = null; }
}

async function boot() {
  stopWaiting();
  document.documentElement.lang = lang();
  let status;
  try { status = await get('/status'); } catch (e) {
    centered(h('h1', {}, 'Parvis'), h('p', { class: 'form-error' }, t('server_unreachable')), h('button', { class: 'primary', onclick: boot }, t('retry')));
    return;
  }
  const invite = location.pathname.match(/^\/invite\/([A-Za-z0-9_-]+)$/);
  if (invite) { inviteView(invite[1]); return; }
  const guest = location.pathname.match(/^\/g\/([A-Za-z0-9_-]+)$/);
  if (guest) { guestView(guest[1]); return; }
  S.guestLinkMaxHours = status.guest_link_max_hours;
  if (status.setup_needed) { wizardView(root, startChat); return; }
  try {
    startChat(await get('/me'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) loginView(status);
    else centered(h('p', { class: 'form-error' }, errorText(e)), h('button', { class: 'primary', onclick: boot }, t('retry')));
  }
}

registerServiceWorker();
boot();
