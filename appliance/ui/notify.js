// Desktop notifications (Notification API, through the service worker when
// there is one). A click opens the room.
import { h, $ } from './dom.js';
import { t } from './i18n.js';
import { S, userName, roomTitle } from './state.js';
import { openRoom } from './conversation.js';
import { notifyPref } from './settings.js';

export function notify(room, msg) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const pref = notifyPref();
  const mentioned = msg.mentions.includes(S.me.id);
  if (pref === 'off' || (pref === 'mentions' && !mentioned && room.kind !== 'direct')) return;
  if (room.id === S.current && !document.hidden) return;
  const title = room.kind === 'direct' ? userName(msg.sender) : `${userName(msg.sender)} · ${roomTitle(room)}`;
  showNotification(title, room.id, { body: msg.body.slice(0, 200), tag: 'parvis-room-' + room.id });
}

/** Calls notify whatever the room preference: a ring must be seen. */
export function notifyCall(title, roomId) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || notifyPref() === 'off') return;
  if (!document.hidden && document.hasFocus()) return;
  showNotification(title, roomId, { body: roomTitle(S.rooms.get(roomId)), tag: 'parvis-call-' + roomId, requireInteraction: true });
}

function showNotification(title, roomId, options) {
  const full = { icon: '/assets/icon.svg', data: { room: roomId }, ...options };
  try {
    if (S.swReg) { S.swReg.showNotification(title, full); return; }
    const n = new Notification(title, full);
    n.onclick = () => { window.focus(); openRoom(roomId); n.close(); };
  } catch { /* not allowed in this context */ }
}

/** Once per browser: a banner offering notifications ("Not now" is remembered). */
export function maybeAskNotifications() {
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
