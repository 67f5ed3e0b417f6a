// The open room: its header, the timeline, the jump-to-newest button and who
// is typing. It renders from S, and follows state changes by topic.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { avatarClass, initialsOf } from './call.js';
import { renderBody, plainText } from './format.js';
import { t, lang } from './i18n.js';
import { errorText } from './forms.js';
import { S, on, changed, view, userName, roomTitle, msgsFor, canModerate, pendingFor, sortedRooms } from './state.js';
import { loadHistory } from './rooms.js';
import { showComposer, startReply, startEdit, react, deleteMessage, reactionPicker } from './composer.js';
import { settingsDialog } from './settings.js';
import { filesNode, roomLink } from './files.js';
import { toast, timeOf, dayOf, durationText, guestBadge } from './widgets.js';

const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
const BOTTOM_SLACK = 40; // px from the bottom that still counts as "at the bottom"

export async function openRoom(id) {
  const room = S.rooms.get(id);
  if (!room) return;
  const input = $('#composer-input');
  if (S.current !== null && input) S.drafts.set(S.current, input.value);
  S.current = id;
  S.replyTo = null; S.editing = null;
  S.newBelow = 0;
  S.divider = room.unread > 0 ? room.read_seq : null;
  document.getElementById('app').classList.add('in-room');
  S.calls?.compactForReading();
  if (location.hash !== '#room=' + id) history.replaceState(null, '', '#room=' + id);
  renderRoomHeader();
  renderCallBanner();
  showComposer();
  changed('open', id);
  const m = msgsFor(id);
  // the room's signed link for its files, and whether one may attach here
  const link = roomLink(id).then((l) => {
    const attach = $('#attach');
    if (attach && S.current === id) attach.hidden = !l.limits.allowed || !!room.archived;
  }).catch(() => {});
  if (!m.loaded) {
    clear($('#messages')).append(h('p', { class: 'empty' }, t('loading')));
    try { await loadHistory(id); } catch (e) { toast(errorText(e), 'error'); return; }
    if (S.current !== id) return;
  }
  await link;
  if (S.current !== id) return;
  renderMessages();
  const divider = $('#messages .divider');
  if (divider) divider.scrollIntoView({ block: 'start' });
  else scrollToBottom(false);
  changed('members', id);
  renderTyping();
  markReadIfSeen();
  if (window.matchMedia('(min-width: 700px)').matches) $('#composer-input').focus();
}

export function renderEmpty() {
  $('#room-title').textContent = t('no_room');
  $('#room-topic').textContent = '';
  clear($('#messages')).append(h('p', { class: 'empty' }, t('no_room_hint')));
  $('#composer').hidden = true;
}

function renderRoomHeader() {
  const r = S.rooms.get(S.current);
  if (!r) return;
  $('#room-title').textContent = roomTitle(r) + (r.archived ? ' · ' + t('archived') : '');
  $('#room-topic').textContent = r.kind === 'direct' ? '@' + (S.users.get(r.peer)?.username || '') : r.topic;
  $('#room-settings-btn').hidden = r.kind === 'direct';
  $('#call-btn').hidden = r.archived;
  const support = $('#customer-call-btn');
  if (support) support.hidden = r.archived || !(r.kind === 'direct' || canModerate(r));
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

/** The timeline's line for an entry of the guests' audit trail. */
function auditText(msg) {
  const a = msg.audit;
  const by = userName(msg.sender);
  const label = a.name || t('guest_link_unnamed');
  switch (a.action) {
    case 'link_created': return t('audit_link_created', { by, label });
    case 'link_revoked': return t('audit_link_revoked', { by, label });
    case 'joined': return t('audit_joined', { name: a.name });
    case 'knocked': return t('audit_knocked', { name: a.name });
    case 'admitted': return t('audit_admitted', { by, name: a.name });
    case 'denied': return t('audit_denied', { by, name: a.name });
    case 'left': return t('audit_left', { name: a.name });
    case 'expired': return t('audit_expired', { name: a.name });
    default: return a.action;
  }
}

/** An entry of the guests' audit trail (only moderators get them). */
function auditNode(msg) {
  return h('div', { class: 'sys audit', dataset: { seq: msg.seq, action: msg.audit.action } },
    icon('lock'), h('span', {}, auditText(msg)), h('time', { datetime: new Date(msg.ts).toISOString() }, timeOf(msg.ts)));
}

/** A line of the timeline that is not a message (a call, the audit trail). */
const isRecord = (msg) => !!(msg.call || msg.audit);
const recordNode = (msg) => (msg.call ? callNode(msg) : auditNode(msg));

function messageNode(msg, prev) {
  if (isRecord(msg)) return recordNode(msg);
  const room = S.rooms.get(S.current);
  const mine = msg.sender === S.me.id;
  const compact = prev && !isRecord(prev) && prev.sender === msg.sender && !prev.pending === !msg.pending
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
    compact ? null : h('header', {}, h('span', { class: 'sender' }, sender), guestBadge(msg.sender), ' ',
      h('time', { datetime: new Date(msg.ts).toISOString(), title: new Date(msg.ts).toLocaleString(lang()) }, timeOf(msg.ts))),
    quote, body, msg.deleted ? null : filesNode(S.current, msg),
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
  const alone = [...S.users.values()].filter((u) => !u.disabled && u.role !== 'guest').length <= 1;
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

function atBottom() {
  const box = $('#messages');
  return !box || box.scrollHeight - box.scrollTop - box.clientHeight <= BOTTOM_SLACK;
}
view.seesNewest = () => !document.hidden && atBottom();

export function scrollToBottom(smooth) {
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

export function onScroll() {
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

export function markReadIfSeen() {
  const r = S.rooms.get(S.current);
  if (!r || document.hidden || !atBottom()) return;
  const m = msgsFor(S.current);
  const last = m.list.length ? m.list[m.list.length - 1].seq : 0;
  const upTo = Math.max(last, r.last_seq);
  if (upTo > r.read_seq || r.unread) {
    r.read_seq = upTo;
    r.unread = 0; r.mentions = 0;
    if (S.conn) S.conn.sendNow({ t: 'read', room: r.id, seq: upTo });
    changed('rooms');
  }
}

export async function highlight(seq) {
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

function renderTyping() {
  const el = $('#typing');
  if (!el) return;
  const now = Date.now();
  const who = [...(S.typing.get(S.current) || new Map())].filter(([, until]) => until > now).map(([u]) => userName(u));
  el.textContent = who.length ? t(who.length === 1 ? 'typing_one' : 'typing_many', { names: who.join(', ') }) : '';
}

/** A message node re-rendered in place (an edit, a delete, a reaction). */
function rerender(msg) {
  const list = S.msgs.get(S.current)?.list;
  if (!list?.includes(msg)) return;
  const node = $(`#messages .msg[data-seq="${msg.seq}"]`);
  if (!node) return;
  const fresh = messageNode(msg, list[list.indexOf(msg) - 1] || null);
  if (!node.classList.contains('compact')) fresh.classList.remove('compact');
  node.replaceWith(fresh);
}

// ------------------------------------------------- following the state --

on('message', ({ room, msg, mine }) => {
  if (room !== S.current || !S.msgs.get(room)?.loaded || !$('#messages')) return;
  const box = $('#messages');
  const stick = atBottom();
  $('#empty-hint')?.remove();
  if (isRecord(msg)) {
    box.append(recordNode(msg));
  } else {
    const list = S.msgs.get(room).list;
    const prev = list.length > 1 ? list[list.length - 2] : null;
    const pendingNode = box.querySelector(`.msg.pending[data-cid="${CSS.escape(msg.client_id)}"]`);
    if (pendingNode) {
      pendingNode.replaceWith(messageNode(msg, prev));
    } else {
      const firstPending = box.querySelector('.msg.pending');
      if (firstPending) box.insertBefore(messageNode(msg, prev), firstPending); else appendMessage(box, msg, prev);
    }
  }
  if (stick || mine) scrollToBottom(false);
  else if (!isRecord(msg)) { S.newBelow += 1; renderJump(); }
});

on('changed', ({ room, msg }) => {
  if (room !== S.current) return;
  rerender(msg);
  // the messages that quote it show its current text
  for (const r of S.msgs.get(room)?.list || []) if (r.reply_to === msg.seq && r !== msg) rerender(r);
});

on('pending', ({ room, id }) => {
  if (room !== S.current) return;
  const box = $('#messages');
  $('#empty-hint')?.remove();
  const m = msgsFor(room);
  const pend = pendingFor(room);
  const own = pend.find((p) => p.client_id === id);
  const prev = pend.length > 1 ? pend[pend.length - 2] : (m.list[m.list.length - 1] || null);
  if (own) appendMessage(box, own, prev);
  // Sending always brings you to your message.
  scrollToBottom(false);
});

on('ack', (f) => {
  $(`#messages .msg.pending[data-cid="${CSS.escape(f.id)}"]`)?.querySelector('.status')?.remove();
});

on('failed', (f) => {
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
});

on('room', (id) => { if (id === S.current) { renderRoomHeader(); renderMessages(); } });
on('reset', (id) => { if (id === S.current) openRoom(id); });
on('removed', (id) => {
  if (S.current !== id) return;
  S.current = null;
  const next = sortedRooms()[0];
  if (next) openRoom(next.id); else renderEmpty();
});
on('typing', (room) => { if (room === S.current) renderTyping(); });
on('calls', (room) => { if (room === S.current) renderCallBanner(); });
document.addEventListener('visibilitychange', () => { if (!document.hidden) markReadIfSeen(); });
