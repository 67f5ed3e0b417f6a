// What the server's frames do to the state. Each handler changes S and
// announces the change (state.js `changed`); views render. No DOM here.
import { t } from './i18n.js';
import { S, changed, view, userName } from './state.js';
import { fetchRoom, fetchRoomSummary, refreshUsers, removeRoom } from './rooms.js';
import { notify, notifyCall } from './notify.js';
import { onGuestEvent } from './lobby.js';

export function onFrame(f) {
  S.calls?.onFrame(f);
  switch (f.t) {
    case 'event': onEvent(f); break;
    case 'ack': changed('ack', f); changed('conn'); break;
    case 'error': changed('failed', f); break;
    case 'read': {
      const r = S.rooms.get(f.room);
      if (r && f.seq > r.read_seq) { r.read_seq = f.seq; if (f.seq >= r.last_seq) { r.unread = 0; r.mentions = 0; } changed('rooms'); }
      break;
    }
    case 'typing': onTyping(f); break;
    case 'reset': onReset(f); break;
    case 'gone': removeRoom(f.room); break;
    case 'synced': changed('conn'); changed('synced'); break;
  }
}

function onEvent(ev) {
  const room = S.rooms.get(ev.room);
  if (!room) { fetchRoom(ev.room); return; }
  if (ev.seq <= (S.known[ev.room] || 0)) return;
  S.known[ev.room] = ev.seq;
  room.last_seq = ev.seq;
  const m = S.msgs.get(ev.room);
  const find = (seq) => m?.list.find((x) => x.seq === seq);
  switch (ev.kind) {
    case 'message': {
      const msg = { seq: ev.seq, sender: ev.actor, body: ev.body, client_id: ev.client_id, reply_to: ev.reply_to || null,
        mentions: ev.mentions || [], ts: ev.ts, edited: null, deleted: false, reactions: {}, files: ev.files || [] };
      if (m?.loaded) m.list.push(msg);
      const mine = ev.actor === S.me.id;
      if (mine) {
        room.read_seq = Math.max(room.read_seq, ev.seq);
      } else {
        if (!(ev.room === S.current && view.seesNewest())) {
          room.unread += 1;
          if (msg.mentions.includes(S.me.id)) room.mentions += 1;
        }
        notify(room, msg);
      }
      changed('message', { room: ev.room, msg, mine });
      clearTypingOf(ev.room, ev.actor);
      break;
    }
    case 'edit': {
      const x = find(ev.target);
      if (x) { x.body = ev.body; x.edited = ev.ts; changed('changed', { room: ev.room, msg: x }); }
      break;
    }
    case 'delete': {
      const x = find(ev.target);
      if (x) { x.deleted = true; x.body = ''; x.reactions = {}; x.files = []; changed('changed', { room: ev.room, msg: x }); }
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
        changed('changed', { room: ev.room, msg: x });
      }
      break;
    }
    case 'join':
      if (ev.user !== S.me.id) room.member_count += 1;
      refreshUsers([ev.user]).then(() => changed('members', ev.room));
      break;
    case 'leave':
      if (ev.user === S.me.id) { removeRoom(ev.room); return; }
      room.member_count -= 1;
      changed('members', ev.room);
      break;
    case 'call_started':
    case 'call_ended': {
      const { t: _t, room: _r, seq, ts, actor, ...call } = ev;
      const msg = { seq, ts, sender: actor, body: '', call, reactions: {} };
      if (m?.loaded) m.list.push(msg);
      changed('message', { room: ev.room, msg, mine: false });
      if (ev.kind === 'call_ended' && ev.outcome === 'missed' && actor !== S.me.id && room.kind === 'direct') {
        notifyCall(t('call_missed', { name: userName(actor) }), ev.room);
      }
      break;
    }
    case 'guest': {
      // the guests' audit trail (moderators only): a line in the timeline,
      // and the waiting room's alerts
      const { t: _t, room: _r, seq, ts, actor, ...audit } = ev;
      const msg = { seq, ts, sender: actor, body: '', audit, reactions: {} };
      if (m?.loaded) m.list.push(msg);
      changed('message', { room: ev.room, msg, mine: false });
      onGuestEvent(ev);
      break;
    }
    case 'room':
      Object.assign(room, { name: ev.name, topic: ev.topic, visibility: ev.visibility, archived: ev.archived, guest_history: !!ev.guest_history });
      changed('room', ev.room);
      break;
  }
  changed('rooms');
}

function onReset(f) {
  S.known[f.room] = f.seq;
  const m = S.msgs.get(f.room);
  if (m) { m.loaded = false; m.list = []; m.more = true; }
  const r = S.rooms.get(f.room);
  if (r) r.last_seq = f.seq;
  fetchRoomSummary(f.room);
  changed('reset', f.room);
}

function onTyping(f) {
  if (!S.typing.has(f.room)) S.typing.set(f.room, new Map());
  S.typing.get(f.room).set(f.user, Date.now() + 5000);
  changed('typing', f.room);
  setTimeout(() => changed('typing', f.room), 5100);
}

function clearTypingOf(room, user) {
  S.typing.get(room)?.delete(user);
  changed('typing', room);
}
