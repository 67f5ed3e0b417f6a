// The room dialogs (new room, direct message, browse, room settings) and the
// side panel (members, search results).
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { get, post, patch, del } from './api.js';
import { avatarClass, initialsOf } from './call.js';
import { renderSnippet } from './format.js';
import { t, lang } from './i18n.js';
import { errorText, field, formError, showFormError } from './forms.js';
import { S, on, userName, roomTitle, canModerate } from './state.js';
import { addRoom, fetchRoom, refreshUsers } from './rooms.js';
import { openRoom, highlight } from './conversation.js';
import { toast, showDialog, dialogShell, guestBadge } from './widgets.js';
import { settingsDialog } from './settings.js';

function userCheckboxes(exclude = new Set()) {
  return h('fieldset', { class: 'user-list' }, h('legend', {}, t('members')),
    // guests come in by their link only
    [...S.users.values()].filter((u) => u.id !== S.me.id && !u.disabled && u.role !== 'guest' && !exclude.has(u.id)).map((u) =>
      h('label', { class: 'check' }, h('input', { type: 'checkbox', value: u.id }), ` ${u.display_name} (@${u.username})`)));
}

export function newRoomDialog() {
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
      addRoom(room);
      d.close();
      openRoom(room.id);
    } catch (e) { showFormError(err, e); }
  } }, field(t('room_name'), name), field(t('topic'), topic), field(t('visibility'), vis), people, err,
  h('button', { type: 'submit', class: 'primary' }, t('create'))));
  showDialog(d);
  name.focus();
}

export function directDialog() {
  const filter = h('input', { type: 'search', placeholder: t('find_person'), 'aria-label': t('find_person') });
  const list = h('ul', { class: 'pick-list' });
  const d = dialogShell(t('new_direct'), filter, list);
  const render = () => {
    clear(list);
    const q = filter.value.toLowerCase();
    for (const u of S.users.values()) {
      if (u.id === S.me.id || u.disabled || u.role === 'guest') continue;
      if (q && !u.display_name.toLowerCase().includes(q) && !u.username.includes(q)) continue;
      list.append(h('li', {}, h('button', { class: 'link', onclick: async () => {
        try {
          const room = await post('/direct', { user: u.id });
          addRoom(room);
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

export async function browseDialog() {
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

export function roomSettingsDialog() {
  const r = S.rooms.get(S.current);
  if (!r || r.kind === 'direct') return;
  const err = formError();
  const editable = canModerate(r);
  const name = h('input', { required: true, maxlength: 80, value: r.name, disabled: !editable || r.archived });
  const topic = h('input', { maxlength: 500, value: r.topic, disabled: !editable || r.archived });
  const vis = h('select', { disabled: !editable || r.archived },
    h('option', { value: 'open', selected: r.visibility === 'open' }, t('visibility_open')),
    h('option', { value: 'invite', selected: r.visibility === 'invite' }, t('visibility_invite')));
  const guestHistory = h('input', { type: 'checkbox', name: 'guest_history', checked: !!r.guest_history, disabled: !editable || r.archived });
  const save = async (change) => {
    try { await patch('/rooms/' + r.id, change); d.close(); } catch (e) { showFormError(err, e); }
  };
  const d = dialogShell(t('room_settings'), h('form', { class: 'stack', onsubmit: (ev) => {
    ev.preventDefault();
    save({ name: name.value, topic: topic.value, visibility: vis.value, guest_history: guestHistory.checked });
  } }, field(t('room_name'), name), field(t('topic'), topic), field(t('visibility'), vis),
  h('label', { class: 'check' }, guestHistory, ' ', t('guest_history'), h('small', { class: 'hint' }, ' ' + t('guest_history_hint'))), err,
  editable && !r.archived ? h('button', { type: 'submit', class: 'primary' }, t('save')) : null,
  editable && !r.archived ? h('button', { type: 'button', class: 'secondary', id: 'invite-guest', onclick: () => { d.close(); guestLinksDialog(r); } }, t('invite_guest')) : null,
  editable ? h('button', { type: 'button', class: 'secondary', onclick: () => save({ archived: !r.archived }) }, r.archived ? t('unarchive') : t('archive')) : null,
  h('button', { type: 'button', class: 'danger', onclick: () => leaveRoom(r, d) }, t('leave_room'))));
  showDialog(d);
}

async function leaveRoom(r, d) {
  if (!confirm(t('confirm_leave', { room: r.name }))) return;
  try { await del(`/rooms/${r.id}/members/${S.me.id}`); d?.close(); } catch (e) { toast(errorText(e), 'error'); }
}

export function toggleMembers() {
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
      h('span', {}, userName(m.user), guestBadge(m.user), m.role === 'owner' ? h('small', {}, ' · ' + t('owner')) : null),
      r.kind === 'group' && mod && m.user !== S.me.id ? h('button', { class: 'link', 'aria-label': t('remove_x', { name: userName(m.user) }), onclick: async () => {
        try { await del(`/rooms/${id}/members/${m.user}`); renderMembers(); } catch (e) { toast(errorText(e), 'error'); }
      } }, t('remove')) : null))));
  if (r.kind === 'group' && !r.archived && S.me.role !== 'guest') {
    const sel = h('select', { 'aria-label': t('add_member') }, h('option', { value: '' }, t('add_member') + '…'),
      [...S.users.values()].filter((u) => !inRoom.has(u.id) && !u.disabled && u.role !== 'guest').map((u) => h('option', { value: u.id }, u.display_name)));
    sel.addEventListener('change', async () => {
      if (!sel.value) return;
      try { await post(`/rooms/${id}/members`, { user: Number(sel.value) }); renderMembers(); } catch (e) { toast(errorText(e), 'error'); }
    });
    panel.append(sel);
  }
}

/** The members panel follows the open room and its joins and leaves. */
on('members', (room) => {
  const panel = $('#panel');
  if (room === S.current && panel && !panel.hidden && panel.dataset.kind === 'members') renderMembers();
});

export async function runSearch(q) {
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

/** A QR code (`{ size, modules }` from the server) as an SVG image. */
function qrSvg(qr) {
  const NS = 'http://www.w3.org/2000/svg';
  const m = 4; // the light margin a reader needs
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${qr.size + 2 * m} ${qr.size + 2 * m}`);
  svg.setAttribute('class', 'qr');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', t('qr_label'));
  svg.setAttribute('shape-rendering', 'crispEdges');
  const bg = document.createElementNS(NS, 'rect');
  bg.setAttribute('width', '100%'); bg.setAttribute('height', '100%'); bg.setAttribute('fill', '#fff');
  let d = '';
  for (let y = 0; y < qr.size; y++) {
    for (let x = 0; x < qr.size; x++) if (qr.modules[y * qr.size + x] === '1') d += `M${x + m} ${y + m}h1v1h-1z`;
  }
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', d); path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}

/** A link just made (shown this once): what would stop a guest outside,
 *  the link with a copy button, and its QR code for a phone. */
function madeLinkBlock(made, close) {
  const url = made.url || location.origin + made.path;
  const input = h('input', { readonly: true, value: url, 'aria-label': t('guest_link_new'), id: 'guest-link-url' });
  // what would stop a guest outside (their browser's trust, calls), said plainly
  const warnings = made.warnings.map((w) => h('p', { class: 'warn-note', dataset: { warning: w.code } },
    t('guest_warn_' + w.code), S.me.role === 'admin' && w.code !== 'lan_only'
      ? h('a', { href: '#settings/certificates', onclick: (ev) => { ev.preventDefault(); close(); settingsDialog('certificates'); } }, ' ' + t('guest_warn_fix'))
      : null));
  const copy = h('button', { type: 'button', class: 'primary', id: 'guest-link-copy', onclick: () => { navigator.clipboard?.writeText(url); input.select(); toast(t('copied')); } }, t('copy'));
  return { node: h('div', { class: 'made-link' }, ...warnings, h('p', {}, t('guest_link_new')),
    h('div', { class: 'link-and-qr' }, h('div', { class: 'stack' }, h('div', { class: 'row' }, input, copy),
      h('small', {}, t(made.link.knock ? 'guest_link_knock_note' : 'guest_link_open_note'), ' ',
        t('guest_expires', { when: new Date(made.link.expires).toLocaleString(lang()) }))), qrSvg(made.qr))), input, copy };
}

/** The customer call's link, to send while the call starts. */
export function customerLinkDialog(made, r, hint) {
  const d = dialogShell(t('customer_call') + ' · ' + roomTitle(r), h('div', { class: 'stack' }));
  const block = madeLinkBlock(made, () => d.close());
  d.querySelector('.stack').append(h('p', {}, hint), block.node);
  d.id = 'customer-call-dialog';
  showDialog(d);
  block.copy.focus();
}

/** A room's guest links: make one (shown once, with a copy button and a QR
 *  code), see who came by each, revoke (and remove its guests, if asked). */
export function guestLinksDialog(r) {
  const err = formError();
  // the choices the admin's maximum allows (Settings → Box → Guests)
  const max = S.guestLinkMaxHours || 720;
  const choices = [[2, 'hours_2'], [24, 'hours_24'], [168, 'hours_168'], [720, 'hours_720']].filter(([v]) => v <= max);
  if (!choices.some(([v]) => v === max)) choices.push([max, null]);
  const fallback = choices.some(([v]) => v === 168) ? 168 : max;
  const hours = h('select', { name: 'hours' }, choices.map(([v, k]) =>
    h('option', { value: v, selected: v === fallback }, k ? t(k) : t('days_n', { n: Math.round(v / 24) }))));
  const uses = h('select', { name: 'max_uses' }, h('option', { value: '' }, t('guest_uses_any')), h('option', { value: '1' }, t('guest_uses_one')));
  const knock = h('input', { type: 'checkbox', name: 'knock', checked: true });
  const upload = h('input', { type: 'checkbox', name: 'upload' });
  const pw = h('input', { type: 'password', name: 'password', minlength: 8, autocomplete: 'new-password' });
  const label = h('input', { name: 'label', maxlength: 80 });
  const out = h('div', { class: 'invite-out', id: 'guest-link-out' });
  const list = h('ul', { class: 'guest-links', id: 'guest-links' });
  const render = async () => {
    let links;
    try { links = await get(`/rooms/${r.id}/guest-links`); } catch (e) { clear(list).append(h('li', { class: 'form-error' }, errorText(e))); return; }
    const now = Date.now();
    clear(list).append(...(links.length ? links.map((l) => h('li', { dataset: { link: l.id } },
      h('div', {}, h('strong', {}, l.label || t('guest_title')), l.knock ? h('small', {}, ' · ' + t('guest_knock_short')) : null,
        l.password ? h('small', {}, ' · ' + t('guest_with_password')) : null,
        l.perms?.upload ? h('small', {}, ' · ' + t('guest_files_short')) : null,
        h('br'), h('small', {}, l.revoked ? t('guest_revoked') : l.expires <= now ? t('guest_expired')
          : t('guest_link_row', { uses: l.max_uses ? `${l.uses}/${l.max_uses}` : l.uses, when: new Date(l.expires).toLocaleString(lang()) }),
        ' · ', t('guest_link_by', { name: userName(l.created_by) }))),
      l.revoked || l.expires <= now ? null : h('button', { class: 'link danger', onclick: async () => {
        const remove = confirm(t('guest_revoke_remove'));
        try { await del(`/rooms/${r.id}/guest-links/${l.id}?remove_guests=${remove}`); render(); } catch (e) { toast(errorText(e), 'error'); }
      } }, t('guest_revoke')))) : [h('li', { class: 'empty' }, t('guest_no_links'))]));
  };
  const d = dialogShell(t('invite_guest') + ' · ' + roomTitle(r), h('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const made = await post(`/rooms/${r.id}/guest-links`, { hours: Number(hours.value), max_uses: uses.value ? Number(uses.value) : null,
        password: pw.value || null, label: label.value, knock: knock.checked,
        perms: { chat: true, call: true, media: true, screen: true, upload: upload.checked } });
      const block = madeLinkBlock(made, () => d.close());
      clear(out).append(block.node);
      block.node.scrollIntoView({ block: 'nearest' });
      block.input.select();
      pw.value = ''; label.value = '';
      render();
    } catch (e) { showFormError(err, e); }
  } }, field(t('guest_valid'), hours), field(t('guest_max_uses'), uses),
  h('label', { class: 'check' }, knock, ' ', t('guest_knock'), h('small', { class: 'hint' }, ' ' + t('guest_knock_hint'))),
  h('label', { class: 'check' }, upload, ' ', t('guest_files'), h('small', { class: 'hint' }, ' ' + t('guest_files_hint'))),
  field(t('guest_password_opt'), pw, t('password_hint')),
  field(t('guest_label'), label), err, h('button', { type: 'submit', class: 'primary' }, t('guest_create'))),
  out, h('h3', {}, t('guest_links')), list);
  showDialog(d);
  render();
}
