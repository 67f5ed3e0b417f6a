// Loading rooms, members and history into the state. No DOM.
import { get } from './api.js';
import { S, msgsFor, changed } from './state.js';

export async function loadHistory(room, before) {
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

/** A room this user just created, joined or was added to. */
export function addRoom(room) {
  S.rooms.set(room.id, room);
  S.known[room.id] = Math.max(S.known[room.id] || 0, room.last_seq);
  changed('rooms');
}

const fetching = new Set();
export async function fetchRoom(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    const res = await get('/rooms/' + id);
    await refreshUsers(res.members.map((m) => m.user));
    addRoom(res.room);
  } catch { /* not a member (any more) */ } finally {
    fetching.delete(id);
  }
}

export async function fetchRoomSummary(id) {
  try { const res = await get('/rooms/' + id); S.rooms.set(id, res.room); changed('rooms'); } catch { /* gone */ }
}

export async function refreshUsers(ids) {
  if (ids.every((id) => S.users.has(id))) return;
  const users = await get('/users');
  S.users = new Map(users.map((u) => [u.id, u]));
}

export function removeRoom(id) {
  S.rooms.delete(id);
  S.msgs.delete(id);
  delete S.known[id];
  changed('removed', id);
  changed('rooms');
}
