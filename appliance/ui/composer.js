// The composer: typing, replying, editing, sending; and the message actions
// (react, delete). It queues frames and announces them; the conversation
// view shows them.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { newId } from './conn.js';
import { plainText } from './format.js';
import { t } from './i18n.js';
import { S, on, changed, msgsFor, userName } from './state.js';
import { toast, showDialog } from './widgets.js';
import { takeUploads, trayBusy, trayOf } from './files.js';

const MAX_BODY_BYTES = 16384;

export function autoGrow(el) {
  el.style.height = 'auto';
  el.style.height = Math.min(el.scrollHeight, 200) + 'px';
}

let lastTyping = 0;
export function composerInput(ev) {
  autoGrow(ev.target);
  S.drafts.set(S.current, ev.target.value);
  if (Date.now() - lastTyping > 3000 && ev.target.value && S.conn) {
    lastTyping = Date.now();
    S.conn.sendNow({ t: 'typing', room: S.current });
  }
}

export function composerKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submitComposer(); }
  if (ev.key === 'Escape' && (S.replyTo || S.editing)) { S.replyTo = null; S.editing = null; ev.target.value = ''; renderComposeContext(); }
  if (ev.key === 'ArrowUp' && !ev.target.value) {
    const mine = [...msgsFor(S.current).list].reverse().find((x) => x.sender === S.me.id && !x.deleted && !x.call && !x.audit);
    if (mine) { ev.preventDefault(); startEdit(mine); }
  }
}

/** The open room's draft, reply and edit state, put back in the composer. */
export function showComposer() {
  const input = $('#composer-input');
  if (!input) return;
  input.value = S.drafts.get(S.current) || '';
  autoGrow(input);
  $('#composer').hidden = false;
  renderComposeContext();
}

export function renderComposeContext() {
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

export function startReply(msg) {
  S.editing = null; S.replyTo = msg;
  renderComposeContext();
  $('#composer-input').focus();
}

export function startEdit(msg) {
  S.replyTo = null; S.editing = msg;
  const input = $('#composer-input');
  input.value = msg.body;
  autoGrow(input);
  renderComposeContext();
  input.focus();
}

/** The message goes once its files are uploaded (set while they are). */
let sendWhenUploaded = null;

export function submitComposer() {
  const input = $('#composer-input');
  const body = input.value;
  const room = S.current;
  const withFiles = !S.editing && trayOf(room).length > 0;
  if ((!body.trim() && !withFiles) || room === null) return;
  if (new TextEncoder().encode(body).length > MAX_BODY_BYTES) { toast(t('err_too_large'), 'error'); return; }
  if (withFiles && trayBusy(room)) {
    if (trayOf(room).some((x) => x.state === 'failed')) { toast(t('file_failed_first'), 'error'); return; }
    // sent by itself when the last file is up
    sendWhenUploaded = room;
    renderSendButton();
    return;
  }
  sendWhenUploaded = null;
  renderSendButton();
  if (S.editing) {
    S.conn.queue({ t: 'edit', id: newId(), room, seq: S.editing.seq, body });
  } else {
    const frame = { t: 'send', id: newId(), room, body: body.trim() ? body : '', _ts: Date.now() };
    if (withFiles) {
      const { ids, files } = takeUploads(room);
      frame.files = ids;
      frame._files = files;
    }
    if (S.replyTo) frame.reply_to = S.replyTo.seq;
    S.conn.queue(frame);
    changed('pending', { room: S.current, id: frame.id });
  }
  input.value = '';
  S.drafts.set(S.current, '');
  S.replyTo = null; S.editing = null;
  renderComposeContext();
  autoGrow(input);
  changed('conn');
}

function renderSendButton() {
  const b = $('#send');
  if (!b) return;
  const waiting = sendWhenUploaded !== null && sendWhenUploaded === S.current;
  b.textContent = waiting ? t('file_sending_after') : t('send');
  b.classList.toggle('waiting', waiting);
}

// an upload ended: the message waiting for it goes, or waits on
on('tray', (room) => {
  if (room !== sendWhenUploaded) return;
  if (trayOf(room).some((x) => x.state === 'failed')) { sendWhenUploaded = null; renderSendButton(); toast(t('file_failed_first'), 'error'); return; }
  if (!trayBusy(room) && room === S.current) submitComposer();
});
on('open', () => renderSendButton());

export function react(msg, emoji, on) {
  S.conn.queue({ t: 'react', id: newId(), room: S.current, seq: msg.seq, emoji, on });
}

export function deleteMessage(msg) {
  if (!confirm(t('confirm_delete'))) return;
  S.conn.queue({ t: 'delete', id: newId(), room: S.current, seq: msg.seq });
}

export function reactionPicker(anchor, msg) {
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
