// The waiting room, as moderators see it: guests who knocked on a link,
// with Admit / Deny / Admit all wherever one is in the app; and the
// customer call (a knock link and a call, in one click).
import { h, clear } from './dom.js';
import { get, post } from './api.js';
import { t } from './i18n.js';
import { errorText } from './forms.js';
import { S, on, changed, roomTitle } from './state.js';
import { notifyCall } from './notify.js';
import { toast } from './widgets.js';

/** Who waits (GET /api/guests/waiting), again after every (re)connection. */
export async function loadWaiting() {
  if (!S.me || S.me.role === 'guest') return;
  try { S.waiting = await get('/guests/waiting'); } catch { return; }
  changed('waiting');
}

/** A `guest` event of the audit trail (moderators only get them). */
export function onGuestEvent(ev) {
  if (ev.action === 'knocked') {
    if (!S.waiting.some((w) => w.guest === ev.guest)) {
      S.waiting.push({ room: ev.room, guest: ev.guest, name: ev.name, since: ev.ts, link: ev.link });
      notifyCall(t('knock_alert', { name: ev.name, room: roomTitle(S.rooms.get(ev.room)) }), ev.room);
    }
  } else if (ev.action === 'link_revoked') {
    // nobody can be let in by a revoked link
    S.waiting = S.waiting.filter((w) => w.link !== ev.link);
  } else if (ev.guest) {
    S.waiting = S.waiting.filter((w) => w.guest !== ev.guest);
  }
  changed('waiting');
}

async function decide(room, guests, admit) {
  const before = S.waiting;
  const decided = new Set(guests || S.waiting.filter((w) => w.room === room).map((w) => w.guest));
  S.waiting = S.waiting.filter((w) => !decided.has(w.guest));
  changed('waiting');
  try {
    await post(`/rooms/${room}/admission`, guests ? { admit, guests } : { admit });
  } catch (e) {
    S.waiting = before;
    changed('waiting');
    toast(errorText(e), 'error');
  }
}

/** The alerts' box: in the page, or inside the open modal dialog (the
 *  rest of the page is inert then, and a moderator waiting with the link
 *  dialog open must still be able to click Admit). */
const box = h('div', { id: 'knocks', class: 'knocks', role: 'region', 'aria-live': 'polite', hidden: true });

/** The alerts: one card per room with someone waiting, above everything. */
function renderKnocks() {
  box.setAttribute('aria-label', t('waiting_room'));
  const host = document.querySelector('dialog[open]') || document.body;
  if (box.parentNode !== host) host.append(box);
  const byRoom = new Map();
  for (const w of S.waiting) {
    if (!byRoom.has(w.room)) byRoom.set(w.room, []);
    byRoom.get(w.room).push(w);
  }
  clear(box).append(...[...byRoom].map(([room, list]) => h('div', { class: 'knock', role: 'group', dataset: { room }, 'aria-label': t('waiting_room') },
    h('header', {}, h('strong', {}, t('waiting_in', { n: list.length, room: roomTitle(S.rooms.get(room)) })),
      list.length > 1 ? h('button', { class: 'primary small', id: 'admit-all', onclick: () => decide(room, null, true) }, t('admit_all')) : null),
    h('ul', {}, list.map((w) => h('li', { dataset: { guest: w.guest } },
      h('span', { class: 'name' }, w.name, ' ', h('span', { class: 'badge-guest' }, t('guest_badge'))),
      h('button', { class: 'primary small admit', onclick: () => decide(room, [w.guest], true) }, t('admit')),
      h('button', { class: 'secondary small deny', onclick: () => decide(room, [w.guest], false) }, t('deny'))))))));
  box.hidden = !byRoom.size;
}
on('waiting', renderKnocks);
on('lang', renderKnocks);
on('dialog', renderKnocks);
// a dialog opened or closed: the alerts move with it
document.addEventListener('close', () => setTimeout(renderKnocks), true);

/** Remote support in two clicks: a 2-hour knock link for one customer,
 *  the call started, and the link to send (with its QR code). From a
 *  direct conversation the call gets a room of its own. */
export async function customerCall(roomId, { openRoom, showLink }) {
  let made;
  try { made = await post(`/rooms/${roomId}/customer-call`, { name: t('customer_call_room') }); } catch (e) { toast(errorText(e), 'error'); return; }
  if (!S.rooms.has(made.room.id)) { S.rooms.set(made.room.id, made.room); S.known[made.room.id] = made.room.last_seq; changed('rooms'); }
  await openRoom(made.room.id);
  if (!S.calls.active) S.calls.start(made.room.id);
  showLink(made, S.rooms.get(made.room.id), t('customer_call_hint'));
}
