// Parvis web app: first-run setup, login, invites, and the chat.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { get, post, patch, del, setCsrf, ApiError } from './api.js';
import { Conn, newId } from './conn.js';
import { Calls, avatarClass, initialsOf } from './call.js';
import { renderBody, renderSnippet, plainText } from './format.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { errorText, field, formError, showFormError } from './forms.js';
import { wizardView, boxSettingsSection, certificateAlert } from './wizard.js';

const root = document.getElementById('app');
const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
const BOTTOM_SLACK = 40; // px from the bottom that still counts as "at the bottom"

/** Everything the chat view knows. */
const S = {
  me: null, company: '', conn: null,
  users: new Map(),   // id → user
  rooms: new Map(),   // id → summary from /api/rooms, kept current by events
  msgs: new Map(),    // id → { list, loaded, more, loading }
  known: {},          // room id → last event seq applied (for resume)
  current: null,      // open room id
  divider: null,      // seq after which the unread divider sits
  newBelow: 0,        // messages that arrived while scrolled up
  drafts: new Map(),  // room id → text being typed
  replyTo: null, editing: null,
  typing: new Map(),  // room → Map(user → until)
  swReg: null,
  calls: null,        // the calls of every room and this tab's call (call.js)
};

// ---------------------------------------------------------------- helpers --

function userName(id) {
  const u = S.users.get(id);
  return u ? u.display_name : t('unknown_user');
}

function roomTitle(r) {
  if (!r) return '';
  return r.kind === 'direct' ? userName(r.peer) : r.name;
}

function timeOf(ts) {
  return new Date(ts).toLocaleTimeString(lang(), { hour: '2-digit', minute: '2-digit' });
}

function dayOf(ts) {
  return new Date(ts).toLocaleDateString(lang(), { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
}

let toastTimer;
function toast(text, kind = 'info') {
  let el = $('#toast');
  if (!el) { el = h('div', { id: 'toast', role: 'status' }); document.body.append(el); }
  el.className = 'toast ' + kind;
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

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

// ------------------------------------------------------------------ chat --

async function startChat(me) {
  setCsrf(me.csrf);
  S.me = me.user;
  S.company = me.company;
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
  S.conn.addEventListener('state', renderConnState);
  S.conn.addEventListener('state', () => S.calls?.render());
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
    changed: (room) => { renderRoomList(); if (room === S.current) renderCallBanner(); },
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

function sortedRooms() {
  return [...S.rooms.values()].sort((a, b) => (a.archived - b.archived) || (b.last_seq - a.last_seq) || (a.id - b.id));
}

function renderShell() {
  clear(root);
  const search = h('input', { type: 'search', id: 'search', placeholder: t('search_placeholder'), 'aria-label': t('search') });
  search.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') runSearch(search.value); });
  const sidebar = h('aside', { class: 'sidebar', 'aria-label': t('rooms') },
    h('header', { class: 'side-head' },
      h('div', { class: 'company' }, h('img', { src: '/assets/icon.svg', alt: '' }), h('span', {}, S.company || 'Parvis')),
      h('span', { id: 'conn-state', class: 'pill', role: 'status' }),
      h('button', { class: 'icon', title: t('settings'), 'aria-label': t('settings'), onclick: settingsDialog }, icon('settings'))),
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
  const main = h('main', { class: 'conversation', id: 'conversation' },
    h('header', { class: 'conv-head' },
      h('button', { class: 'icon back', 'aria-label': t('back'), onclick: () => root.classList.remove('in-room') }, icon('back')),
      h('div', { class: 'titles' }, h('h1', { id: 'room-title' }), h('p', { id: 'room-topic', class: 'topic' })),
      h('button', { class: 'icon', id: 'call-btn', title: t('call_start'), 'aria-label': t('call_start'), onclick: () => S.calls.prejoin(S.current) }, icon('phone')),
      h('button', { class: 'icon', id: 'members-btn', title: t('members'), 'aria-label': t('members'), onclick: toggleMembers }, icon('members')),
      h('button', { class: 'icon', id: 'room-settings-btn', title: t('room_settings'), 'aria-label': t('room_settings'), onclick: roomSettingsDialog }, icon('edit'))),
    h('div', { id: 'offline-banner', class: 'banner', hidden: true, role: 'status' }),
    h('div', { id: 'call-banner', class: 'banner call', hidden: true, role: 'status' }),
    h('div', { class: 'messages-wrap' }, messages,
      h('button', { id: 'jump', class: 'jump', hidden: true, onclick: () => scrollToBottom(true) })),
    h('div', { id: 'typing', class: 'typing', 'aria-live': 'polite' }),
    h('form', { id: 'composer', class: 'composer', onsubmit: (ev) => { ev.preventDefault(); submitComposer(); } },
      h('div', { id: 'compose-context', class: 'compose-context', hidden: true }),
      h('div', { class: 'compose-row' }, textarea, h('button', { type: 'submit', class: 'primary', id: 'send' }, t('send')))));
  const panel = h('aside', { id: 'panel', class: 'panel', hidden: true });
  root.append(h('div', { class: 'shell' }, sidebar, main, panel));
  renderRoomList();
}

function renderEmpty() {
  $('#room-title').textContent = t('no_room');
  $('#room-topic').textContent = '';
  clear($('#messages')).append(h('p', { class: 'empty' }, t('no_room_hint')));
  $('#composer').hidden = true;
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

let roomListQueued = false;
function renderRoomList() {
  if (roomListQueued) return;
  roomListQueued = true;
  queueMicrotask(() => {
    roomListQueued = false;
    const nav = $('#room-list');
    if (!nav) return;
    clear(nav);
    const groups = sortedRooms().filter((r) => r.kind === 'group');
    const directs = sortedRooms().filter((r) => r.kind === 'direct');
    const item = (r) => h('li', {},
      h('a', { href: '#room=' + r.id, class: 'room' + (r.id === S.current ? ' active' : '') + (r.unread ? ' has-unread' : '') + (r.archived ? ' archived' : ''),
        'aria-current': r.id === S.current ? 'page' : null, dataset: { room: r.id },
        onclick: (ev) => { ev.preventDefault(); openRoom(r.id); } },
      r.kind === 'group' && r.visibility !== 'open' ? icon('lock') : h('span', { class: 'room-mark', 'aria-hidden': 'true' }, r.kind === 'group' ? '#' : '●'),
      h('span', { class: 'room-name' }, roomTitle(r)),
      S.calls?.of(r.id) ? h('span', { class: 'in-call', title: t('call_in_progress'), 'aria-label': t('call_in_progress') }, icon(S.calls.active?.room === r.id ? 'speaker' : 'phone')) : null,
      r.unread ? h('span', { class: 'badge' + (r.mentions ? ' mention' : ''), 'aria-label': t('unread_n', { n: r.unread }) }, r.mentions ? '@' + r.unread : String(r.unread)) : null));
    nav.append(
      h('div', { class: 'section' }, h('h2', {}, t('rooms')),
        h('button', { class: 'icon small', title: t('browse_rooms'), 'aria-label': t('browse_rooms'), onclick: browseDialog }, icon('search')),
        h('button', { class: 'icon small', title: t('new_room'), 'aria-label': t('new_room'), onclick: newRoomDialog }, icon('plus'))),
      h('ul', {}, groups.map(item)),
      h('div', { class: 'section' }, h('h2', {}, t('direct_messages')),
        h('button', { class: 'icon small', title: t('new_direct'), 'aria-label': t('new_direct'), onclick: directDialog }, icon('plus'))),
      h('ul', {}, directs.map(item)));
    const total = [...S.rooms.values()].reduce((n, r) => n + (r.unread || 0), 0);
    document.title = (total ? `(${total}) ` : '') + (S.company ? S.company + ' · ' : '') + 'Parvis';
  });
}

function msgsFor(room) {
  if (!S.msgs.has(room)) S.msgs.set(room, { list: [], loaded: false, more: true, loading: false });
  return S.msgs.get(room);
}

async function loadHistory(room, before) {
  const m = msgsFor(room);
  if (m.loading) return;
  m.loading = true;
  try {
    const q = before ? `?before=${before}&limit=50` : '?limit=50';
    const res = await get(`/rooms/${room}/messages${q}`);
    const have = new Set(m.list.map((x) => x.seq));
    const fresh = res.messages.filter((x) => !have.has(x.seq));
    m.list = before ? fresh.concat(m.list) : mergeLatest(m.list, fresh);
    m.more = res.more;
    m.loaded = true;
  } finally {
    m.loading = false;
  }
}

function mergeLatest(list, fresh) {
  const bySeq = new Map(list.map((x) => [x.seq, x]));
  for (const x of fresh) bySeq.set(x.seq, x);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

async function openRoom(id) {
  const room = S.rooms.get(id);
  if (!room) return;
  if (S.current !== null) S.drafts.set(S.current, $('#composer-input').value);
  S.current = id;
  S.replyTo = null; S.editing = null;
  S.newBelow = 0;
  S.divider = room.unread > 0 ? room.read_seq : null;
  root.classList.add('in-room');
  S.calls?.compactForReading();
  if (location.hash !== '#room=' + id) history.replaceState(null, '', '#room=' + id);
  renderRoomHeader();
  renderRoomList();
  renderCallBanner();
  renderComposeContext();
  const input = $('#composer-input');
  input.value = S.drafts.get(id) || '';
  autoGrow(input);
  $('#composer').hidden = false;
  const m = msgsFor(id);
  if (!m.loaded) {
    clear($('#messages')).append(h('p', { class: 'empty' }, t('loading')));
    try { await loadHistory(id); } catch (e) { toast(errorText(e), 'error'); return; }
    if (S.current !== id) return;
  }
  renderMessages();
  const divider = $('#messages .divider');
  if (divider) divider.scrollIntoView({ block: 'start' });
  else scrollToBottom(false);
  if (!$('#panel').hidden && $('#panel').dataset.kind === 'members') renderMembers();
  renderTyping();
  markReadIfSeen();
  if (window.matchMedia('(min-width: 700px)').matches) input.focus();
}

function renderRoomHeader() {
  const r = S.rooms.get(S.current);
  if (!r) return;
  $('#room-title').textContent = roomTitle(r) + (r.archived ? ' · ' + t('archived') : '');
  $('#room-topic').textContent = r.kind === 'direct' ? '@' + (S.users.get(r.peer)?.username || '') : r.topic;
  $('#room-settings-btn').hidden = r.kind === 'direct';
  $('#call-btn').hidden = r.archived;
  const input = $('#composer-input');
  input.disabled = r.archived;
  input.placeholder = r.archived ? t('archived_hint') : t('write_message_in', { room: roomTitle(r) });
}

/** "Call in progress — Join" above the messages of a room with a call. */
function renderCallBanner() {
  const el = $('#call-banner');
  if (!el || !S.calls) return;
  const call = S.calls.of(S.current);
  const mine = S.calls.active?.room === S.current;
  el.hidden = !call || mine;
  if (el.hidden) return;
  const names = call.participants.map((p) => userName(p.user));
  clear(el).append(
    icon('phone'), h('span', {}, t('call_in_progress'), names.length ? ' · ' + [...new Set(names)].join(', ') : ''), ' ',
    h('button', { class: 'primary small', id: 'call-banner-join', onclick: () => S.calls.prejoin(S.current) }, t('call_join')));
}

function durationText(ms) {
  const m = Math.floor(ms / 60000);
  const sec = Math.floor(ms / 1000) % 60;
  return m ? t('duration_min', { m, s: sec }) : t('duration_sec', { s: sec });
}

/** A call record in the timeline (started, ended, missed, declined). */
function callNode(msg) {
  const c = msg.call;
  let text;
  if (c.kind === 'call_started') text = t('call_started_by', { name: userName(msg.sender) });
  else if (c.outcome === 'missed') text = t('call_missed', { name: userName(msg.sender) });
  else if (c.outcome === 'declined') text = t('call_was_declined');
  else text = t('call_ended_summary', { duration: durationText(c.duration_ms), names: (c.participants || []).map(userName).join(', ') });
  return h('div', { class: 'sys call-record' + (c.outcome === 'missed' ? ' missed' : ''), dataset: { seq: msg.seq } },
    icon(c.kind === 'call_started' || c.outcome === 'ended' ? 'phone' : 'phone-off'), h('span', {}, text),
    h('time', { datetime: new Date(msg.ts).toISOString() }, timeOf(msg.ts)));
}

// --------------------------------------------------------------- messages --

function canModerate(room) {
  return S.me.role === 'admin' || room?.role === 'owner';
}

function messageNode(msg, prev) {
  if (msg.call) return callNode(msg);
  const room = S.rooms.get(S.current);
  const mine = msg.sender === S.me.id;
  const compact = prev && !prev.call && prev.sender === msg.sender && !prev.pending === !msg.pending
    && msg.ts - prev.ts < 5 * 60 * 1000 && !msg.reply_to && !prev.deleted;
  const ctx = { usernames: new Set([...S.users.values()].map((u) => u.username)), me: S.me.username };
  const body = h('div', { class: 'body' });
  if (msg.deleted) body.append(h('em', { class: 'deleted' }, t('message_deleted')));
  else body.append(renderBody(msg.body, ctx));
  let quote = null;
  if (msg.reply_to && !msg.deleted) {
    const target = msgsFor(S.current).list.find((x) => x.seq === msg.reply_to);
    quote = h('button', { class: 'reply-quote', type: 'button', onclick: () => highlight(msg.reply_to) },
      icon('reply'), ' ', h('strong', {}, target ? userName(target.sender) : ''), ' ',
      target ? (target.deleted ? t('message_deleted') : plainText(target.body, 120)) : t('earlier_message'));
  }
  const reactions = h('div', { class: 'reactions' },
    Object.entries(msg.reactions || {}).map(([emoji, users]) => h('button', {
      type: 'button', class: 'reaction' + (users.includes(S.me.id) ? ' mine' : ''),
      title: users.map(userName).join(', '), 'aria-pressed': users.includes(S.me.id) ? 'true' : 'false',
      onclick: () => react(msg, emoji, !users.includes(S.me.id)) }, emoji, ' ', String(users.length))));
  const actions = msg.pending || msg.deleted || room?.archived ? null : h('div', { class: 'actions', role: 'toolbar', 'aria-label': t('message_actions') },
    QUICK_REACTIONS.slice(0, 3).map((e) => h('button', { type: 'button', class: 'icon small', 'aria-label': t('react_with', { emoji: e }), onclick: () => react(msg, e, true) }, e)),
    h('button', { type: 'button', class: 'icon small', title: t('more_reactions'), 'aria-label': t('more_reactions'), onclick: (ev) => reactionPicker(ev.currentTarget, msg) }, icon('smile')),
    h('button', { type: 'button', class: 'icon small', title: t('reply'), 'aria-label': t('reply'), onclick: () => startReply(msg) }, icon('reply')),
    mine ? h('button', { type: 'button', class: 'icon small', title: t('edit'), 'aria-label': t('edit'), onclick: () => startEdit(msg) }, icon('edit')) : null,
    mine || canModerate(room) ? h('button', { type: 'button', class: 'icon small', title: t('delete'), 'aria-label': t('delete'), onclick: () => deleteMessage(msg) }, icon('trash')) : null);
  const sender = userName(msg.sender);
  return h('article', {
    class: 'msg' + (compact ? ' compact' : '') + (mine ? ' mine' : '') + (msg.pending ? ' pending' : '') + (msg.failed ? ' failed' : '') + (msg.mentions?.includes(S.me.id) ? ' mentions-me' : ''),
    dataset: msg.pending ? { cid: msg.client_id } : { seq: msg.seq, cid: msg.client_id }, tabindex: '-1' },
  compact ? null : h('div', { class: 'avatar ' + avatarClass(msg.sender), 'aria-hidden': 'true' }, initialsOf(sender)),
  h('div', { class: 'content' },
    compact ? null : h('header', {}, h('span', { class: 'sender' }, sender), ' ',
      h('time', { datetime: new Date(msg.ts).toISOString(), title: new Date(msg.ts).toLocaleString(lang()) }, timeOf(msg.ts))),
    quote, body,
    msg.edited && !msg.deleted ? h('span', { class: 'edited' }, t('edited')) : null,
    msg.pending ? h('span', { class: 'status' }, msg.failed ? t('send_failed') : t('sending')) : null,
    reactions),
  actions);
}

function renderMessages() {
  const box = clear($('#messages'));
  const m = msgsFor(S.current);
  if (m.more) box.append(h('button', { class: 'link load-older', onclick: loadOlder }, t('load_older')));
  let prev = null;
  for (const msg of m.list) appendMessage(box, msg, prev), prev = msg;
  for (const p of pendingFor(S.current)) { appendMessage(box, p, prev); prev = p; }
  if (!m.list.length && !pendingFor(S.current).length) box.append(h('p', { class: 'empty', id: 'empty-hint' }, t('no_messages')));
  // a new box: its admin alone in the directory is shown the next step
  const alone = [...S.users.values()].filter((u) => !u.disabled).length <= 1;
  if (S.me.role === 'admin' && alone) {
    box.append(h('div', { class: 'onboarding', id: 'onboarding' },
      h('h2', {}, t('onboard_title', { company: S.company || 'Parvis' })),
      h('p', {}, t('onboard_text')),
      h('div', { class: 'row' },
        h('button', { class: 'primary', onclick: () => settingsDialog('people') }, t('onboard_invite')),
        h('button', { class: 'secondary', onclick: () => settingsDialog('box') }, t('onboard_box')))));
  }
}

function appendMessage(box, msg, prev) {
  if (!prev || new Date(prev.ts).toDateString() !== new Date(msg.ts).toDateString()) {
    box.append(h('div', { class: 'day', role: 'separator' }, h('span', {}, dayOf(msg.ts))));
    prev = null;
  }
  if (S.divider !== null && !msg.pending && msg.seq > S.divider && msg.sender !== S.me.id && !box.querySelector('.divider')) {
    box.append(h('div', { class: 'divider', role: 'separator' }, h('span', {}, t('new_messages'))));
    prev = null;
  }
  box.append(messageNode(msg, prev));
}

function pendingFor(room) {
  if (!S.conn) return [];
  return S.conn.pending().filter((f) => f.t === 'send' && f.room === room).map((f) => ({
    seq: Infinity, sender: S.me.id, body: f.body, client_id: f.id, reply_to: f.reply_to || null,
    ts: f._ts || Date.now(), pending: true, reactions: {},
  }));
}

function atBottom() {
  const box = $('#messages');
  return !box || box.scrollHeight - box.scrollTop - box.clientHeight <= BOTTOM_SLACK;
}

function scrollToBottom(smooth) {
  const box = $('#messages');
  if (!box) return;
  box.scrollTo({ top: box.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
  S.newBelow = 0;
  renderJump();
  markReadIfSeen();
}

function renderJump() {
  const b = $('#jump');
  if (!b) return;
  b.hidden = S.newBelow === 0;
  b.textContent = t('n_new_messages', { n: S.newBelow });
}

function onScroll() {
  const box = $('#messages');
  if (atBottom()) {
    if (S.newBelow) { S.newBelow = 0; renderJump(); }
    markReadIfSeen();
  }
  if (box.scrollTop < 80) loadOlder();
}

async function loadOlder() {
  const id = S.current;
  const m = msgsFor(id);
  if (!m.more || m.loading || !m.list.length) return;
  const box = $('#messages');
  const before = box.scrollHeight - box.scrollTop;
  try { await loadHistory(id, m.list[0].seq); } catch (e) { toast(errorText(e), 'error'); return; }
  if (S.current !== id) return;
  renderMessages();
  box.scrollTop = box.scrollHeight - before;
}

function markReadIfSeen() {
  const r = S.rooms.get(S.current);
  if (!r || document.hidden || !atBottom()) return;
  const m = msgsFor(S.current);
  const last = m.list.length ? m.list[m.list.length - 1].seq : 0;
  const upTo = Math.max(last, r.last_seq);
  if (upTo > r.read_seq || r.unread) {
    r.read_seq = upTo;
    r.unread = 0; r.mentions = 0;
    if (S.conn) S.conn.sendNow({ t: 'read', room: r.id, seq: upTo });
    renderRoomList();
  }
}

async function highlight(seq) {
  const id = S.current;
  const m = msgsFor(id);
  for (let i = 0; i < 20 && !m.list.some((x) => x.seq === seq) && m.more; i++) {
    await loadHistory(id, m.list[0]?.seq);
  }
  if (S.current !== id) return;
  renderMessages();
  const node = $(`#messages .msg[data-seq="${seq}"]`);
  if (node) {
    node.scrollIntoView({ block: 'center' });
    node.classList.add('flash');
    node.focus();
    setTimeout(() => node.classList.remove('flash'), 2000);
  }
}

// ------------------------------------------------------------- composing --

function autoGrow(el) {
  el.style.height = 'auto';
  el.style.height = Math.min(el.scrollHeight, 200) + 'px';
}

let lastTyping = 0;
function composerInput(ev) {
  autoGrow(ev.target);
  S.drafts.set(S.current, ev.target.value);
  if (Date.now() - lastTyping > 3000 && ev.target.value && S.conn) {
    lastTyping = Date.now();
    S.conn.sendNow({ t: 'typing', room: S.current });
  }
}

function composerKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submitComposer(); }
  if (ev.key === 'Escape' && (S.replyTo || S.editing)) { S.replyTo = null; S.editing = null; ev.target.value = ''; renderComposeContext(); }
  if (ev.key === 'ArrowUp' && !ev.target.value) {
    const mine = [...msgsFor(S.current).list].reverse().find((x) => x.sender === S.me.id && !x.deleted && !x.call);
    if (mine) { ev.preventDefault(); startEdit(mine); }
  }
}

function renderComposeContext() {
  const box = $('#compose-context');
  if (!box) return;
  clear(box);
  const target = S.editing || S.replyTo;
  box.hidden = !target;
  if (!target) return;
  box.append(h('span', {}, S.editing ? t('editing') : t('replying_to', { name: userName(target.sender) }), ' ',
    h('q', {}, plainText(target.body, 80))),
  h('button', { type: 'button', class: 'icon small', 'aria-label': t('cancel'), onclick: () => {
    if (S.editing) $('#composer-input').value = '';
    S.replyTo = null; S.editing = null; renderComposeContext();
  } }, icon('close')));
}

function startReply(msg) {
  S.editing = null; S.replyTo = msg;
  renderComposeContext();
  $('#composer-input').focus();
}

function startEdit(msg) {
  S.replyTo = null; S.editing = msg;
  const input = $('#composer-input');
  input.value = msg.body;
  autoGrow(input);
  renderComposeContext();
  input.focus();
}

function submitComposer() {
  const input = $('#composer-input');
  const body = input.value;
  if (!body.trim() || S.current === null) return;
  if (new TextEncoder().encode(body).length > 16384) { toast(t('err_too_large'), 'error'); return; }
  if (S.editing) {
    S.conn.queue({ t: 'edit', id: newId(), room: S.current, seq: S.editing.seq, body });
  } else {
    const frame = { t: 'send', id: newId(), room: S.current, body, _ts: Date.now() };
    if (S.replyTo) frame.reply_to = S.replyTo.seq;
    S.conn.queue(frame);
    const box = $('#messages');
    $('#empty-hint')?.remove();
    const m = msgsFor(S.current);
    const pend = pendingFor(S.current);
    const own = pend.find((p) => p.client_id === frame.id);
    const prev = pend.length > 1 ? pend[pend.length - 2] : (m.list[m.list.length - 1] || null);
    if (own) appendMessage(box, own, prev);
    // Sending always brings you to your message.
    scrollToBottom(false);
  }
  input.value = '';
  S.drafts.set(S.current, '');
  S.replyTo = null; S.editing = null;
  renderComposeContext();
  autoGrow(input);
  renderConnState();
}

function react(msg, emoji, on) {
  S.conn.queue({ t: 'react', id: newId(), room: S.current, seq: msg.seq, emoji, on });
}

function deleteMessage(msg) {
  if (!confirm(t('confirm_delete'))) return;
  S.conn.queue({ t: 'delete', id: newId(), room: S.current, seq: msg.seq });
}

function reactionPicker(anchor, msg) {
  const d = h('dialog', { class: 'picker', 'aria-label': t('more_reactions') },
    h('div', { class: 'emoji-grid' }, ['👍', '👎', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀', '✅', '❌', '🔥', '💡', '🚀', '👏', '🤔'].map((e) =>
      h('button', { type: 'button', class: 'icon', 'aria-label': t('react_with', { emoji: e }), onclick: () => { react(msg, e, true); d.close(); } }, e))));
  showDialog(d);
  // beside the button that opened it, inside the window
  const r = anchor.getBoundingClientRect();
  const box = d.getBoundingClientRect();
  const left = Math.max(8, Math.min(r.right - box.width, window.innerWidth - box.width - 8));
  const below = r.bottom + 6 + box.height < window.innerHeight;
  d.style.left = left + 'px';
  d.style.top = (below ? r.bottom + 6 : Math.max(8, r.top - box.height - 6)) + 'px';
  // a click outside closes it
  d.addEventListener('click', (ev) => { if (ev.target === d) d.close(); });
}

// ---------------------------------------------------------------- frames --

function onFrame(f) {
  S.calls?.onFrame(f);
  switch (f.t) {
    case 'event': onEvent(f); break;
    case 'ack': onAck(f); break;
    case 'error': onError(f); break;
    case 'read': {
      const r = S.rooms.get(f.room);
      if (r && f.seq > r.read_seq) { r.read_seq = f.seq; if (f.seq >= r.last_seq) { r.unread = 0; r.mentions = 0; } renderRoomList(); }
      break;
    }
    case 'typing': onTyping(f); break;
    case 'reset': onReset(f); break;
    case 'gone': removeRoom(f.room); break;
    case 'synced': renderConnState(); break;
  }
}

const fetching = new Set();
async function fetchRoom(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    const res = await get('/rooms/' + id);
    S.rooms.set(id, res.room);
    S.known[id] = Math.max(S.known[id] || 0, res.room.last_seq);
    await refreshUsers(res.members.map((m) => m.user));
    renderRoomList();
  } catch { /* not a member (any more) */ } finally {
    fetching.delete(id);
  }
}

async function refreshUsers(ids) {
  if (ids.every((id) => S.users.has(id))) return;
  const users = await get('/users');
  S.users = new Map(users.map((u) => [u.id, u]));
}

function onEvent(ev) {
  const room = S.rooms.get(ev.room);
  if (!room) { fetchRoom(ev.room); return; }
  if (ev.seq <= (S.known[ev.room] || 0)) return;
  S.known[ev.room] = ev.seq;
  room.last_seq = ev.seq;
  const m = S.msgs.get(ev.room);
  const isCurrent = ev.room === S.current;
  const find = (seq) => m?.list.find((x) => x.seq === seq);
  switch (ev.kind) {
    case 'message': {
      const msg = { seq: ev.seq, sender: ev.actor, body: ev.body, client_id: ev.client_id, reply_to: ev.reply_to || null,
        mentions: ev.mentions || [], ts: ev.ts, edited: null, deleted: false, reactions: {} };
      if (m?.loaded) m.list.push(msg);
      const mine = ev.actor === S.me.id;
      if (mine) {
        room.read_seq = Math.max(room.read_seq, ev.seq);
      } else {
        if (!(isCurrent && !document.hidden && atBottom())) {
          room.unread += 1;
          if (msg.mentions.includes(S.me.id)) room.mentions += 1;
        }
        notify(room, msg);
      }
      if (isCurrent && m?.loaded) {
        const box = $('#messages');
        const stick = atBottom();
        const pendingNode = box.querySelector(`.msg.pending[data-cid="${CSS.escape(ev.client_id)}"]`);
        $('#empty-hint')?.remove();
        const prev = m.list.length > 1 ? m.list[m.list.length - 2] : null;
        if (pendingNode) {
          pendingNode.replaceWith(messageNode(msg, prev));
        } else {
          const firstPending = box.querySelector('.msg.pending');
          const node = messageNode(msg, prev);
          if (firstPending) box.insertBefore(node, firstPending); else appendMessage(box, msg, prev);
        }
        if (stick || mine) scrollToBottom(false);
        else { S.newBelow += 1; renderJump(); }
      }
      clearTypingOf(ev.room, ev.actor);
      break;
    }
    case 'edit': {
      const x = find(ev.target);
      if (x) { x.body = ev.body; x.edited = ev.ts; rerender(x); rerenderReplies(x); }
      break;
    }
    case 'delete': {
      const x = find(ev.target);
      if (x) { x.deleted = true; x.body = ''; x.reactions = {}; rerender(x); rerenderReplies(x); }
      break;
    }
    case 'react': {
      const x = find(ev.target);
      if (x) {
        const list = x.reactions[ev.emoji] || [];
        const has = list.includes(ev.actor);
        if (ev.on && !has) x.reactions[ev.emoji] = [...list, ev.actor];
        if (!ev.on && has) {
          const rest = list.filter((u) => u !== ev.actor);
          if (rest.length) x.reactions[ev.emoji] = rest; else delete x.reactions[ev.emoji];
        }
        rerender(x);
      }
      break;
    }
    case 'join':
      if (ev.user !== S.me.id) room.member_count += 1;
      refreshUsers([ev.user]).then(() => { if (isCurrent && !$('#panel').hidden) renderMembers(); });
      break;
    case 'leave':
      if (ev.user === S.me.id) { removeRoom(ev.room); return; }
      room.member_count -= 1;
      if (isCurrent && !$('#panel').hidden) renderMembers();
      break;
    case 'call_started':
    case 'call_ended': {
      const { t: _t, room: _r, seq, ts, actor, ...call } = ev;
      const msg = { seq, ts, sender: actor, body: '', call, reactions: {} };
      if (m?.loaded) m.list.push(msg);
      if (isCurrent && m?.loaded) {
        const stick = atBottom();
        $('#messages').append(callNode(msg));
        if (stick) scrollToBottom(false);
      }
      if (ev.kind === 'call_ended' && ev.outcome === 'missed' && actor !== S.me.id && room.kind === 'direct') {
        notifyCall(t('call_missed', { name: userName(actor) }), ev.room);
      }
      break;
    }
    case 'room':
      Object.assign(room, { name: ev.name, topic: ev.topic, visibility: ev.visibility, archived: ev.archived });
      if (isCurrent) { renderRoomHeader(); renderMessages(); }
      break;
  }
  renderRoomList();
}

/** The messages that quote `msg` show its current text. */
function rerenderReplies(msg) {
  for (const r of S.msgs.get(S.current)?.list || []) if (r.reply_to === msg.seq && r !== msg) rerender(r);
}

function rerender(msg) {
  if (!S.msgs.get(S.current)?.list.includes(msg)) return;
  const node = $(`#messages .msg[data-seq="${msg.seq}"]`);
  if (!node) return;
  const list = S.msgs.get(S.current).list;
  const prev = list[list.indexOf(msg) - 1] || null;
  const fresh = messageNode(msg, prev);
  if (!node.classList.contains('compact')) fresh.classList.remove('compact');
  node.replaceWith(fresh);
}

function onAck(f) {
  const node = $(`#messages .msg.pending[data-cid="${CSS.escape(f.id)}"]`);
  if (node) node.querySelector('.status')?.remove();
  renderConnState();
}

function onError(f) {
  const node = f.ref ? $(`#messages .msg.pending[data-cid="${CSS.escape(f.ref)}"]`) : null;
  const key = 'err_' + f.code;
  const text = t(key) !== key ? t(key) : f.message;
  if (f.ref && ['internal', 'outcome_unknown', 'rate_limited'].includes(f.code)) {
    // conn.js sends it again by itself: say so on the message, no alarm
    const st = node?.querySelector('.status');
    if (st) st.textContent = t('retrying');
    return;
  }
  if (node) {
    node.classList.add('failed');
    const st = node.querySelector('.status');
    if (st) st.textContent = t('send_failed') + ' — ' + text;
    setTimeout(() => node.remove(), 8000);
  }
  toast(text, 'error');
}

function onReset(f) {
  S.known[f.room] = f.seq;
  const m = S.msgs.get(f.room);
  if (m) { m.loaded = false; m.list = []; m.more = true; }
  const r = S.rooms.get(f.room);
  if (r) r.last_seq = f.seq;
  fetchRoomSummary(f.room);
  if (f.room === S.current) openRoom(f.room);
}

async function fetchRoomSummary(id) {
  try { const res = await get('/rooms/' + id); S.rooms.set(id, res.room); renderRoomList(); } catch { /* gone */ }
}

function removeRoom(id) {
  S.rooms.delete(id);
  S.msgs.delete(id);
  delete S.known[id];
  if (S.current === id) {
    S.current = null;
    const next = sortedRooms()[0];
    if (next) openRoom(next.id); else renderEmpty();
  }
  renderRoomList();
}

function onTyping(f) {
  if (!S.typing.has(f.room)) S.typing.set(f.room, new Map());
  S.typing.get(f.room).set(f.user, Date.now() + 5000);
  renderTyping();
  setTimeout(renderTyping, 5100);
}

function clearTypingOf(room, user) {
  S.typing.get(room)?.delete(user);
  renderTyping();
}

function renderTyping() {
  const el = $('#typing');
  if (!el) return;
  const now = Date.now();
  const who = [...(S.typing.get(S.current) || new Map())].filter(([, until]) => until > now).map(([u]) => userName(u));
  el.textContent = who.length ? t(who.length === 1 ? 'typing_one' : 'typing_many', { names: who.join(', ') }) : '';
}

// ---------------------------------------------------------- notifications --

function notifyPref() { return localStorage.getItem('parvis.notify') || 'all'; }

function notify(room, msg) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const pref = notifyPref();
  const mentioned = msg.mentions.includes(S.me.id);
  if (pref === 'off' || (pref === 'mentions' && !mentioned && room.kind !== 'direct')) return;
  if (room.id === S.current && !document.hidden) return;
  const title = room.kind === 'direct' ? userName(msg.sender) : `${userName(msg.sender)} · ${roomTitle(room)}`;
  showNotification(title, room.id, { body: msg.body.slice(0, 200), tag: 'parvis-room-' + room.id });
}

/** Calls notify whatever the room preference: a ring must be seen. */
function notifyCall(title, roomId) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || notifyPref() === 'off') return;
  if (!document.hidden && document.hasFocus()) return;
  showNotification(title, roomId, { body: roomTitle(S.rooms.get(roomId)), tag: 'parvis-call-' + roomId, requireInteraction: true });
}

/** Through the service worker when there is one; a click opens the room. */
function showNotification(title, roomId, options) {
  const full = { icon: '/assets/icon.svg', data: { room: roomId }, ...options };
  try {
    if (S.swReg) { S.swReg.showNotification(title, full); return; }
    const n = new Notification(title, full);
    n.onclick = () => { window.focus(); openRoom(roomId); n.close(); };
  } catch { /* not allowed in this context */ }
}

function maybeAskNotifications() {
  if (!('Notification' in window) || Notification.permission !== 'default' || localStorage.getItem('parvis.notify-asked')) return;
  const bar = h('div', { class: 'banner ask', role: 'region', 'aria-label': t('notifications') },
    t('notify_ask'), ' ',
    h('button', { class: 'primary small', onclick: async () => {
      localStorage.setItem('parvis.notify-asked', '1');
      await Notification.requestPermission();
      bar.remove();
    } }, t('notify_enable')),
    h('button', { class: 'link', onclick: () => { localStorage.setItem('parvis.notify-asked', '1'); bar.remove(); } }, t('not_now')));
  $('#conversation').prepend(bar);
}

// ---------------------------------------------------------------- dialogs --

function showDialog(d) {
  document.body.append(d);
  d.addEventListener('close', () => d.remove());
  d.showModal();
}

function dialogShell(title, ...content) {
  const d = h('dialog', { 'aria-label': title },
    h('header', {}, h('h2', {}, title), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => d.close() }, icon('close'))),
    ...content);
  return d;
}

function userCheckboxes(exclude = new Set()) {
  return h('fieldset', { class: 'user-list' }, h('legend', {}, t('members')),
    [...S.users.values()].filter((u) => u.id !== S.me.id && !u.disabled && !exclude.has(u.id)).map((u) =>
      h('label', { class: 'check' }, h('input', { type: 'checkbox', value: u.id }), ` ${u.display_name} (@${u.username})`)));
}

function newRoomDialog() {
  const err = formError();
  const name = h('input', { required: true, maxlength: 80, name: 'name' });
  const topic = h('input', { maxlength: 500, name: 'topic' });
  const vis = h('select', { name: 'visibility' }, h('option', { value: 'open' }, t('visibility_open')), h('option', { value: 'invite' }, t('visibility_invite')));
  const people = userCheckboxes();
  const d = dialogShell(t('new_room'), h('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    const members = [...people.querySelectorAll('input:checked')].map((i) => Number(i.value));
    try {
      const room = await post('/rooms', { name: name.value, topic: topic.value, visibility: vis.value, members });
      S.rooms.set(room.id, room);
      S.known[room.id] = Math.max(S.known[room.id] || 0, room.last_seq);
      d.close();
      openRoom(room.id);
    } catch (e) { showFormError(err, e); }
  } }, field(t('room_name'), name), field(t('topic'), topic), field(t('visibility'), vis), people, err,
  h('button', { type: 'submit', class: 'primary' }, t('create'))));
  showDialog(d);
  name.focus();
}

function directDialog() {
  const filter = h('input', { type: 'search', placeholder: t('find_person'), 'aria-label': t('find_person') });
  const list = h('ul', { class: 'pick-list' });
  const d = dialogShell(t('new_direct'), filter, list);
  const render = () => {
    clear(list);
    const q = filter.value.toLowerCase();
    for (const u of S.users.values()) {
      if (u.id === S.me.id || u.disabled) continue;
      if (q && !u.display_name.toLowerCase().includes(q) && !u.username.includes(q)) continue;
      list.append(h('li', {}, h('button', { class: 'link', onclick: async () => {
        try {
          const room = await post('/direct', { user: u.id });
          S.rooms.set(room.id, room);
          S.known[room.id] = Math.max(S.known[room.id] || 0, room.last_seq);
          d.close();
          openRoom(room.id);
        } catch (e) { toast(errorText(e), 'error'); }
      } }, `${u.display_name} (@${u.username})`)));
    }
  };
  filter.addEventListener('input', render);
  render();
  showDialog(d);
  filter.focus();
}

async function browseDialog() {
  let rooms;
  try { rooms = await get('/rooms/browse'); } catch (e) { toast(errorText(e), 'error'); return; }
  const d = dialogShell(t('browse_rooms'), rooms.length ? h('ul', { class: 'pick-list' }, rooms.map((r) => h('li', {},
    h('div', {}, h('strong', {}, '# ' + r.name), r.topic ? h('p', { class: 'topic' }, r.topic) : null, h('small', {}, t('n_members', { n: r.member_count }))),
    h('button', { class: 'primary small', onclick: async () => {
      try {
        await post(`/rooms/${r.id}/members`, { user: S.me.id });
        await fetchRoom(r.id);
        d.close();
        openRoom(r.id);
      } catch (e) { toast(errorText(e), 'error'); }
    } }, t('join'))))) : h('p', {}, t('no_open_rooms')));
  showDialog(d);
}

function roomSettingsDialog() {
  const r = S.rooms.get(S.current);
  if (!r || r.kind === 'direct') return;
  const err = formError();
  const editable = canModerate(r);
  const name = h('input', { required: true, maxlength: 80, value: r.name, disabled: !editable || r.archived });
  const topic = h('input', { maxlength: 500, value: r.topic, disabled: !editable || r.archived });
  const vis = h('select', { disabled: !editable || r.archived },
    h('option', { value: 'open', selected: r.visibility === 'open' }, t('visibility_open')),
    h('option', { value: 'invite', selected: r.visibility === 'invite' }, t('visibility_invite')));
  const save = async (change) => {
    try { await patch('/rooms/' + r.id, change); d.close(); } catch (e) { showFormError(err, e); }
  };
  const d = dialogShell(t('room_settings'), h('form', { class: 'stack', onsubmit: (ev) => {
    ev.preventDefault();
    save({ name: name.value, topic: topic.value, visibility: vis.value });
  } }, field(t('room_name'), name), field(t('topic'), topic), field(t('visibility'), vis), err,
  editable && !r.archived ? h('button', { type: 'submit', class: 'primary' }, t('save')) : null,
  editable ? h('button', { type: 'button', class: 'secondary', onclick: () => save({ archived: !r.archived }) }, r.archived ? t('unarchive') : t('archive')) : null,
  h('button', { type: 'button', class: 'danger', onclick: () => leaveRoom(r, d) }, t('leave_room'))));
  showDialog(d);
}

async function leaveRoom(r, d) {
  if (!confirm(t('confirm_leave', { room: r.name }))) return;
  try { await del(`/rooms/${r.id}/members/${S.me.id}`); d?.close(); } catch (e) { toast(errorText(e), 'error'); }
}

function toggleMembers() {
  const panel = $('#panel');
  if (!panel.hidden && panel.dataset.kind === 'members') { panel.hidden = true; return; }
  panel.hidden = false;
  panel.dataset.kind = 'members';
  renderMembers();
}

async function renderMembers() {
  const panel = $('#panel');
  const id = S.current;
  const r = S.rooms.get(id);
  if (!r) return;
  let res;
  try { res = await get('/rooms/' + id); } catch (e) { toast(errorText(e), 'error'); return; }
  if (S.current !== id) return;
  await refreshUsers(res.members.map((m) => m.user));
  const inRoom = new Set(res.members.map((m) => m.user));
  const mod = canModerate(r);
  clear(panel).append(
    h('header', {}, h('h2', {}, t('members_n', { n: res.members.length })), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => { panel.hidden = true; } }, icon('close'))),
    h('ul', { class: 'member-list' }, res.members.map((m) => h('li', {},
      h('span', { class: 'avatar small ' + avatarClass(m.user), 'aria-hidden': 'true' }, initialsOf(userName(m.user))),
      h('span', {}, userName(m.user), m.role === 'owner' ? h('small', {}, ' · ' + t('owner')) : null),
      r.kind === 'group' && mod && m.user !== S.me.id ? h('button', { class: 'link', 'aria-label': t('remove_x', { name: userName(m.user) }), onclick: async () => {
        try { await del(`/rooms/${id}/members/${m.user}`); renderMembers(); } catch (e) { toast(errorText(e), 'error'); }
      } }, t('remove')) : null))));
  if (r.kind === 'group' && !r.archived) {
    const sel = h('select', { 'aria-label': t('add_member') }, h('option', { value: '' }, t('add_member') + '…'),
      [...S.users.values()].filter((u) => !inRoom.has(u.id) && !u.disabled).map((u) => h('option', { value: u.id }, u.display_name)));
    sel.addEventListener('change', async () => {
      if (!sel.value) return;
      try { await post(`/rooms/${id}/members`, { user: Number(sel.value) }); renderMembers(); } catch (e) { toast(errorText(e), 'error'); }
    });
    panel.append(sel);
  }
}

async function runSearch(q) {
  if (!q.trim()) return;
  const panel = $('#panel');
  panel.hidden = false;
  panel.dataset.kind = 'search';
  let res;
  try { res = await get('/search?q=' + encodeURIComponent(q)); } catch (e) { toast(errorText(e), 'error'); return; }
  clear(panel).append(
    h('header', {}, h('h2', {}, t('search_results', { q })), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => { panel.hidden = true; } }, icon('close'))),
    res.hits.length ? h('ul', { class: 'hits' }, res.hits.map((hit) => h('li', {}, h('button', { class: 'hit', onclick: async () => {
      await openRoom(hit.room);
      highlight(hit.seq);
    } }, h('small', {}, roomTitle(S.rooms.get(hit.room)), ' · ', userName(hit.sender), ' · ', new Date(hit.ts).toLocaleString(lang())),
    h('p', {}, renderSnippet(hit.snippet)))))) : h('p', { class: 'empty' }, t('no_results')));
}

// --------------------------------------------------------------- settings --

/** Settings, in sections with their own URLs (#settings/people …). */
const SETTINGS_SECTIONS = [
  ['profile', 'profile', false], ['notifications', 'notifications', false],
  ['people', 'people', true], ['box', 'settings_box', true], ['certificates', 'wiz_certs', true], ['system', 'settings_system', true],
];

function settingsDialog(section = 'profile') {
  const mine = SETTINGS_SECTIONS.filter(([, , admin]) => !admin || S.me.role === 'admin');
  if (!mine.some(([id]) => id === section)) section = 'profile';
  const pane = h('div', { class: 'settings-pane', id: 'settings-pane' });
  const nav = h('nav', { class: 'settings-nav', 'aria-label': t('settings') },
    mine.map(([id, key]) => h('a', { href: '#settings/' + id, dataset: { section: id }, onclick: (ev) => { ev.preventDefault(); show(id); } }, t(key))));
  const show = (id) => {
    for (const a of nav.querySelectorAll('a')) a.toggleAttribute('aria-current', a.dataset.section === id);
    history.replaceState(null, '', '#settings/' + id);
    clear(pane).append(settingsSection(id, d));
  };
  const d = dialogShell(t('settings'), h('div', { class: 'settings-layout' }, nav, pane));
  d.classList.add('wide', 'settings');
  d.addEventListener('close', () => history.replaceState(null, '', S.current ? '#room=' + S.current : location.pathname));
  showDialog(d);
  show(section);
}

function settingsSection(id, d) {
  const err = formError();
  if (id === 'profile') {
    const display = h('input', { required: true, maxlength: 64, value: S.me.display_name });
    const cur = h('input', { type: 'password', autocomplete: 'current-password', required: true });
    const pw = h('input', { type: 'password', autocomplete: 'new-password', minlength: 8, required: true });
    return h('div', {},
      h('section', {}, h('h3', {}, t('profile')), h('form', { class: 'stack', onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          S.me = await patch('/me', { display_name: display.value });
          S.users.set(S.me.id, S.me);
          $('#me-name').textContent = S.me.display_name;
          toast(t('saved'));
        } catch (e) { showFormError(err, e); }
      } }, field(t('display_name'), display), field(t('language'), langPickerInline()), h('button', { type: 'submit', class: 'primary' }, t('save')))),
      h('section', {}, h('h3', {}, t('change_password')), h('form', { class: 'stack', onsubmit: async (ev) => {
        ev.preventDefault();
        try { await post('/me/password', { current: cur.value, new: pw.value }); cur.value = pw.value = ''; toast(t('saved')); } catch (e) { showFormError(err, e); }
      } }, field(t('current_password'), cur), field(t('new_password'), pw, t('password_hint')), h('button', { type: 'submit', class: 'primary' }, t('save')))),
      err);
  }
  if (id === 'notifications') {
    const notifySel = h('select', { onchange: () => localStorage.setItem('parvis.notify', notifySel.value) },
      ['all', 'mentions', 'off'].map((v) => h('option', { value: v, selected: notifyPref() === v }, t('notify_' + v))));
    const perm = 'Notification' in window ? Notification.permission : 'unsupported';
    return h('section', {}, h('h3', {}, t('notifications')),
      field(t('notifications'), notifySel, t('notify_permission_' + perm)),
      perm === 'default' ? h('button', { class: 'secondary', onclick: async () => {
        localStorage.setItem('parvis.notify-asked', '1');
        await Notification.requestPermission();
        $('.banner.ask')?.remove();
        clear($('#settings-pane')).append(settingsSection('notifications', d));
      } }, t('notify_enable')) : null);
  }
  if (id === 'people') return adminSection();
  return boxSettingsSection(toast, id);
}

function langPickerInline() {
  const sel = h('select', { onchange: () => { setLang(sel.value); location.hash = S.current ? '#room=' + S.current : ''; renderShell(); if (S.current) openRoom(S.current); renderConnState(); document.querySelector('dialog')?.close(); } },
    LANGS.map(([code, name]) => h('option', { value: code, selected: code === lang() }, name)));
  return sel;
}

function adminSection() {
  const list = h('table', { class: 'users' });
  const render = async () => {
    const users = await get('/users');
    S.users = new Map(users.map((u) => [u.id, u]));
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

async function logout(remote) {
  if (!remote) { try { await post('/logout'); } catch { /* already gone */ } }
  if (S.conn) S.conn.stop();
  S.conn = null;
  S.current = null;
  setCsrf('');
  history.replaceState(null, '', '/');
  boot();
}

// ------------------------------------------------------------------- boot --

document.addEventListener('visibilitychange', () => { if (!document.hidden) markReadIfSeen(); });

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
  document.documentElement.lang = lang();
  let status;
  try { status = await get('/status'); } catch (e) {
    centered(h('h1', {}, 'Parvis'), h('p', { class: 'form-error' }, t('server_unreachable')), h('button', { class: 'primary', onclick: boot }, t('retry')));
    return;
  }
  const invite = location.pathname.match(/^\/invite\/([A-Za-z0-9_-]+)$/);
  if (invite) { inviteView(invite[1]); return; }
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
