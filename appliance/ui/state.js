// The chat's state, in one place, and the one way views learn it changed.
//
// Frame handlers and actions change `S`, then call `changed(topic, detail)`;
// the views subscribed to that topic (`on(topic, fn)`) render from `S`.
// Nothing here touches the DOM.
import { t } from './i18n.js';

/** Everything the chat view knows. */
export const S = {
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
  waiting: [],        // guests waiting in the rooms one moderates (lobby.js)
  offerCall: false,   // a guest just let in: offer the room's call once
  guestLinkMaxHours: 720, // the longest a guest link may live (the admin's setting)
};

/**
 * Topics (detail in brackets):
 * - `rooms`: the room list or a room's counters changed
 * - `conn`: the connection's state or its outbox changed
 * - `open` [room id]: a room was opened (or reopened after a reset)
 * - `room` [room id]: a room's name, topic, visibility or archive state changed
 * - `message` [{ room, msg, mine }]: a new message or call record arrived
 * - `changed` [{ room, msg }]: a message was edited, deleted or reacted to
 * - `pending` [{ room, id }]: this tab queued a message
 * - `ack` [frame] and `failed` [error frame]: the server's answer to a write
 * - `typing` [room id], `members` [room id], `calls` [room id]
 * - `removed` [room id]: this user is no longer in the room
 * - `waiting`: a guest knocked, or was admitted or denied
 * - `synced`: the connection caught up (after every (re)connection)
 * - `tray` [room id]: an attached file finished uploading, failed or was removed
 * - `dialog`: a modal dialog opened (what must stay clickable moves into it)
 * - `lang`: the language changed (everything re-renders)
 */
const subscribers = new Map();

export function on(topic, fn) {
  if (!subscribers.has(topic)) subscribers.set(topic, new Set());
  subscribers.get(topic).add(fn);
}

export function changed(topic, detail) {
  for (const fn of subscribers.get(topic) || []) fn(detail);
}

/** Questions a view answers for state changes (set by the view; no DOM here). */
export const view = {
  /** Is the newest message of the open room on screen? */
  seesNewest: () => true,
};

// ---------------------------------------------------------------- reading --

export function userName(id) {
  const u = S.users.get(id);
  if (!u) return t('unknown_user');
  // a guest whose attendance ended keeps its name under its messages
  return u.role === 'guest' && u.disabled ? t('former_guest', { name: u.display_name }) : u.display_name;
}

export function roomTitle(r) {
  if (!r) return '';
  return r.kind === 'direct' ? userName(r.peer) : r.name;
}

export function sortedRooms() {
  return [...S.rooms.values()].sort((a, b) => (a.archived - b.archived) || (b.last_seq - a.last_seq) || (a.id - b.id));
}

export function msgsFor(room) {
  if (!S.msgs.has(room)) S.msgs.set(room, { list: [], loaded: false, more: true, loading: false });
  return S.msgs.get(room);
}

export function canModerate(room) {
  return S.me.role === 'admin' || room?.role === 'owner';
}

/** The messages this tab has queued for `room` and the server has not stored yet. */
export function pendingFor(room) {
  if (!S.conn) return [];
  return S.conn.pending().filter((f) => f.t === 'send' && f.room === room).map((f) => ({
    seq: Infinity, sender: S.me.id, body: f.body, client_id: f.id, reply_to: f.reply_to || null,
    ts: f._ts || Date.now(), pending: true, reactions: {}, files: f._files || [],
  }));
}
