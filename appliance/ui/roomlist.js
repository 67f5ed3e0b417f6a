// The sidebar's room list: rendered from S.rooms whenever `rooms` changes.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { t } from './i18n.js';
import { S, on, roomTitle, sortedRooms } from './state.js';
import { openRoom } from './conversation.js';
import { browseDialog, newRoomDialog, directDialog } from './dialogs.js';

let queued = false;
export function renderRoomList() {
  if (queued) return;
  queued = true;
  queueMicrotask(() => {
    queued = false;
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

for (const topic of ['rooms', 'open', 'calls']) on(topic, renderRoomList);
