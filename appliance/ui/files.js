// Files in conversations: the tray of files being uploaded (tus 1.0, in
// 8 MiB PATCHes with progress, cancel and retry), the files of a message
// (image and media previews, cards), the image viewer and the Files panel.
// Files are shown and downloaded from the download origin (same host,
// another port), by links the server signs for an hour per room.
import { h, clear, $ } from './dom.js';
import { icon } from './icons.js';
import { get, csrfToken } from './api.js';
import { t, lang } from './i18n.js';
import { errorText } from './forms.js';
import { S, on, changed, userName } from './state.js';
import { toast, showDialog } from './widgets.js';

const CHUNK = 8 * 1024 * 1024;
const TUS = { 'tus-resumable': '1.0.0' };
const IMAGE = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const VIDEO = new Set(['video/mp4', 'video/webm']);
const AUDIO = new Set(['audio/mpeg', 'audio/ogg', 'audio/wav', 'audio/mp4', 'audio/flac']);

/** Bytes as people read them: 930 KiB, 4.2 MiB. */
export function sizeText(n) {
  const units = t('size_units').split(' ');
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  const num = i === 0 || n >= 100 ? Math.round(n) : n.toFixed(1);
  return `${Number(num).toLocaleString(lang())} ${units[i]}`;
}

// ---- the signed links of each room --------------------------------------

const links = new Map(); // room → { port, prefix, expires, limits }

/** The room's link and upload limits, fetched again when near expiry. */
export async function roomLink(room) {
  const l = links.get(room);
  if (l && l.expires - Date.now() > 10 * 60 * 1000) return l;
  const page = await get(`/rooms/${room}/files?limit=1`);
  const fresh = { ...page.link, limits: page.limits };
  links.set(room, fresh);
  return fresh;
}

/** An image or medium whose link expired (the room stayed open an hour)
 *  loads again with a fresh one, once. */
function reloadOnExpiry(el, room, file, thumb = 0) {
  el.addEventListener('error', async () => {
    if (el.dataset.retried) return;
    el.dataset.retried = '1';
    links.delete(room);
    try { await roomLink(room); el.src = fileUrl(room, file, false, thumb); } catch { /* offline: stays broken */ }
  });
  return el;
}

/** Before a download: a link with time left. */
async function freshDownload(ev, room, file) {
  const l = links.get(room);
  if (l && l.expires - Date.now() > 60 * 1000) return;
  ev.preventDefault();
  try { await roomLink(room); location.assign(fileUrl(room, file, true)); } catch (e) { toast(errorText(e), 'error'); }
}

/** A file's URL on the download origin (null until the room's link is
 *  known); `download` to save it, `thumb` (320, 1280) for an image's preview. */
export function fileUrl(room, file, download = false, thumb = 0) {
  const l = links.get(room);
  if (!l) return null;
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  const query = download ? '?download' : thumb && file.width ? `?thumb=${thumb}` : '';
  return `https://${host}:${l.port}${l.prefix}/${file.id}/${encodeURIComponent(file.name)}${query}`;
}

// ---- uploads -------------------------------------------------------------

/** The files attached to the message being written, per room. */
const trays = new Map(); // room → [item]

export const trayOf = (room) => trays.get(room) || [];

const csrf = csrfToken;

/** One PATCH of the upload's next chunk, with progress. */
function patchChunk(item) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    const end = Math.min(item.offset + CHUNK, item.file.size);
    xhr.open('PATCH', item.location);
    xhr.setRequestHeader('tus-resumable', '1.0.0');
    xhr.setRequestHeader('upload-offset', String(item.offset));
    xhr.setRequestHeader('content-type', 'application/offset+octet-stream');
    xhr.setRequestHeader('x-csrf-token', csrf());
    const start = item.offset;
    xhr.upload.onprogress = (e) => { item.sent = start + e.loaded; renderTray(); };
    xhr.onload = () => {
      item.xhr = null;
      if (xhr.status === 204) { item.offset = Number(xhr.getResponseHeader('upload-offset')); resolve(); return; }
      let message = xhr.statusText;
      try { message = JSON.parse(xhr.responseText).message; } catch { /* not JSON */ }
      reject(Object.assign(new Error(message), { status: xhr.status }));
    };
    xhr.onerror = () => { item.xhr = null; reject(Object.assign(new Error(t('file_network')), { status: 0 })); };
    xhr.onabort = () => { item.xhr = null; reject(Object.assign(new Error('aborted'), { status: -1 })); };
    xhr.send(item.file.slice(start, end));
  });
}

async function tusFetch(method, url, headers = {}) {
  const res = await fetch(url, { method, headers: { ...TUS, 'x-csrf-token': csrf(), ...headers }, credentials: 'same-origin' });
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch { /* none */ }
    throw Object.assign(new Error(body?.message || res.statusText), { status: res.status });
  }
  return res;
}

const b64 = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));

/** Uploads (or resumes) one item until done, cancelled or failed. */
async function run(item) {
  item.state = 'uploading'; item.error = null; renderTray();
  let tries = 0;
  while (item.state === 'uploading') {
    try {
      if (!item.location) {
        const res = await tusFetch('POST', `/api/rooms/${item.room}/uploads`,
          { 'upload-length': String(item.file.size), 'upload-metadata': 'filename ' + b64(item.file.name) });
        item.location = res.headers.get('location');
        item.id = item.location.split('/').pop();
      } else if (tries > 0) {
        // after a failure: where the server is
        const res = await tusFetch('HEAD', item.location);
        item.offset = Number(res.headers.get('upload-offset'));
      }
      while (item.offset < item.file.size && item.state === 'uploading') await patchChunk(item);
      if (item.file.size === 0 && item.state === 'uploading') await patchChunk(item);
      if (item.state === 'uploading') { item.state = 'done'; item.sent = item.file.size; }
    } catch (e) {
      if (item.state !== 'uploading' || e.status === -1) break;
      // the network or the box went away: try again from its offset, a few times
      if ((e.status === 0 || e.status >= 500 || e.status === 409 || e.status === 423) && ++tries <= 4) {
        await new Promise((r) => setTimeout(r, 1000 * tries));
        continue;
      }
      item.state = 'failed'; item.error = e.message;
    }
  }
  renderTray();
  changed('tray', item.room);
}

/** Files picked, dropped or pasted: checked against the limit, then sent. */
export async function addFiles(room, files) {
  if (room === null || !files.length) return;
  let limits;
  try { limits = (await roomLink(room)).limits; } catch (e) { toast(errorText(e), 'error'); return; }
  if (!limits.allowed) { toast(t('file_not_allowed'), 'error'); return; }
  const tray = trays.get(room) || [];
  for (const file of files) {
    if (file.size > limits.max_file) {
      toast(t('file_too_large', { name: file.name, limit: sizeText(limits.max_file) }), 'error');
      continue;
    }
    if (tray.length >= 10) { toast(t('file_max_count'), 'error'); break; }
    const item = { room, file, offset: 0, sent: 0, state: 'queued', location: null, id: null, key: Math.random().toString(36).slice(2) };
    tray.push(item);
    run(item);
  }
  trays.set(room, tray);
  renderTray();
}

function cancel(item) {
  item.state = 'cancelled';
  item.xhr?.abort();
  if (item.location) tusFetch('DELETE', item.location).catch(() => {});
  const tray = trayOf(item.room).filter((x) => x !== item);
  trays.set(item.room, tray);
  renderTray();
  changed('tray', item.room);
}

/** The tray's finished uploads, for a `send` frame (the ids) and its
 *  pending copy (what they are); the tray empties of them. */
export function takeUploads(room) {
  const tray = trayOf(room);
  const done = tray.filter((x) => x.state === 'done');
  trays.set(room, tray.filter((x) => x.state !== 'done'));
  renderTray();
  return { ids: done.map((x) => x.id), files: done.map((x) => ({ id: null, name: x.file.name, size: x.file.size, mime: x.file.type })) };
}

/** Some attached file is still on its way (or failed). */
export const trayBusy = (room) => trayOf(room).some((x) => x.state !== 'done');

export function renderTray() {
  const box = $('#tray');
  if (!box) return;
  const tray = trayOf(S.current);
  box.hidden = !tray.length;
  clear(box).append(...tray.map((item) => {
    const pct = item.file.size ? Math.floor((item.sent / item.file.size) * 100) : 100;
    const status = item.state === 'failed' ? item.error
      : item.state === 'done' ? sizeText(item.file.size)
        : `${sizeText(item.sent)} / ${sizeText(item.file.size)} · ${pct} %`;
    return h('div', { class: 'tray-item ' + item.state, dataset: { name: item.file.name } },
      icon(kindIcon(item.file.type)),
      h('div', { class: 'tray-text' },
        h('span', { class: 'name', title: item.file.name }, item.file.name),
        h('progress', { max: 100, value: item.state === 'done' ? 100 : pct, 'aria-label': t('file_progress', { name: item.file.name }) }),
        h('small', { class: item.state === 'failed' ? 'error' : '' }, status)),
      item.state === 'failed' ? h('button', { type: 'button', class: 'link', onclick: () => run(item) }, t('retry')) : null,
      h('button', { type: 'button', class: 'icon small', 'aria-label': t('file_remove', { name: item.file.name }), onclick: () => cancel(item) }, icon('close')));
  }));
}

on('open', () => renderTray());

// ---- a message's files ---------------------------------------------------

function kindIcon(mime) {
  if (IMAGE.has(mime) || mime?.startsWith('image/')) return 'image';
  if (VIDEO.has(mime) || AUDIO.has(mime)) return 'play';
  return 'file';
}

/** The files of a message: previews for images and media, cards else. */
export function filesNode(room, msg) {
  if (!msg.files?.length) return null;
  const images = msg.files.filter((f) => !f.gone && IMAGE.has(f.mime));
  return h('div', { class: 'files' }, msg.files.map((f) => {
    const url = fileUrl(room, f);
    if (f.gone) return h('div', { class: 'file-card gone' }, icon('file'), h('span', { class: 'name' }, f.name), h('small', {}, t('file_gone')));
    if (IMAGE.has(f.mime) && url) {
      return h('button', { type: 'button', class: 'file-image', 'aria-label': t('file_view', { name: f.name }), onclick: () => viewer(room, images, images.indexOf(f)) },
        // the 1280-px preview (sharp on a dense screen), sized before it loads
        reloadOnExpiry(h('img', { src: fileUrl(room, f, false, 1280), alt: f.name, loading: 'lazy', crossorigin: 'anonymous', decoding: 'async',
          width: f.width, height: f.height }), room, f, 1280));
    }
    if (VIDEO.has(f.mime) && url) return reloadOnExpiry(h('video', { class: 'file-media', src: url, controls: true, preload: 'metadata', crossorigin: 'anonymous', 'aria-label': f.name }), room, f);
    const card = h('div', { class: 'file-card' }, icon(kindIcon(f.mime)),
      h('div', { class: 'file-text' }, h('span', { class: 'name', title: f.name }, f.name), h('small', {}, sizeText(f.size))),
      url ? h('a', { class: 'icon small', href: fileUrl(room, f, true), download: f.name, 'aria-label': t('file_download', { name: f.name }), title: t('download'),
        onclick: (ev) => freshDownload(ev, room, f) }, icon('download')) : null);
    if (AUDIO.has(f.mime) && url) return h('div', { class: 'file-audio' }, card, h('audio', { src: url, controls: true, preload: 'none', crossorigin: 'anonymous' }));
    return card;
  }));
}

/** Full-size images of a message, one at a time: ← → to move, Esc to close. */
function viewer(room, images, at) {
  const img = h('img', { alt: '', crossorigin: 'anonymous' });
  const caption = h('span', { class: 'name' });
  const save = h('a', { class: 'link', download: '' }, t('download'));
  const show = (i) => {
    at = (i + images.length) % images.length;
    const f = images[at];
    img.src = fileUrl(room, f); img.alt = f.name;
    caption.textContent = images.length > 1 ? `${f.name} · ${at + 1} / ${images.length}` : f.name;
    save.href = fileUrl(room, f, true);
  };
  const many = images.length > 1;
  const d = h('dialog', { class: 'viewer', 'aria-label': t('file_viewer') },
    h('header', {}, caption, h('span', { class: 'row' }, save,
      h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => d.close() }, icon('close')))),
    h('div', { class: 'viewer-body' },
      many ? h('button', { class: 'icon', 'aria-label': t('previous'), onclick: () => show(at - 1) }, icon('back')) : null,
      img,
      many ? h('button', { class: 'icon next', 'aria-label': t('next'), onclick: () => show(at + 1) }, icon('back')) : null));
  d.addEventListener('keydown', (ev) => {
    if (ev.key === 'ArrowLeft') show(at - 1);
    if (ev.key === 'ArrowRight') show(at + 1);
  });
  show(at);
  showDialog(d);
}

// ---- the Files panel -----------------------------------------------------

export function toggleFiles() {
  const panel = $('#panel');
  if (!panel.hidden && panel.dataset.kind === 'files') { panel.hidden = true; return; }
  panel.hidden = false;
  panel.dataset.kind = 'files';
  renderFilesPanel('');
}

async function renderFilesPanel(q) {
  const panel = $('#panel');
  const room = S.current;
  let page;
  try { page = await get(`/rooms/${room}/files?limit=200` + (q ? '&q=' + encodeURIComponent(q) : '')); } catch (e) { toast(errorText(e), 'error'); return; }
  if (S.current !== room || panel.dataset.kind !== 'files') return;
  links.set(room, { ...page.link, limits: page.limits });
  const search = h('input', { type: 'search', value: q, placeholder: t('files_search'), 'aria-label': t('files_search') });
  let timer = null;
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => renderFilesPanel(search.value.trim()), 250); });
  const images = page.files.filter((f) => !f.gone && IMAGE.has(f.mime));
  clear(panel).append(
    h('header', {}, h('h2', {}, t('files_title')), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => { panel.hidden = true; } }, icon('close'))),
    search,
    page.files.length ? h('ul', { class: 'file-list' }, page.files.map((f) => h('li', { dataset: { name: f.name } },
      IMAGE.has(f.mime) && !f.gone
        ? h('button', { type: 'button', class: 'file-thumb', 'aria-label': t('file_view', { name: f.name }), onclick: () => viewer(room, images, images.indexOf(f)) },
          h('img', { src: fileUrl(room, f, false, 320), alt: '', loading: 'lazy', crossorigin: 'anonymous' }))
        : h('span', { class: 'file-thumb' }, icon(kindIcon(f.mime))),
      h('div', { class: 'file-text' },
        h('span', { class: 'name', title: f.name }, f.name),
        h('small', {}, f.gone ? t('file_gone') : sizeText(f.size), ' · ', userName(f.sender), ' · ', new Date(f.ts).toLocaleDateString(lang()))),
      f.gone ? null : h('a', { class: 'icon small', href: fileUrl(room, f, true), download: f.name, 'aria-label': t('file_download', { name: f.name }), title: t('download') }, icon('download')))))
      : h('p', { class: 'empty' }, q ? t('no_results') : t('files_none')));
  if (q) { search.focus(); search.setSelectionRange(q.length, q.length); }
}

/** A new file in the open room shows in its open panel. */
on('message', ({ room, msg }) => {
  const panel = $('#panel');
  if (msg.files?.length && room === S.current && panel && !panel.hidden && panel.dataset.kind === 'files') renderFilesPanel('');
});

// ---- dropping and pasting ------------------------------------------------

/** Files dropped anywhere on the conversation, or pasted into the composer. */
export function wireDropAndPaste(main, input) {
  let depth = 0;
  const overlay = h('div', { class: 'drop-overlay', hidden: true }, icon('upload'), h('span', {}, t('file_drop')));
  main.append(overlay);
  const hasFiles = (ev) => [...(ev.dataTransfer?.types || [])].includes('Files');
  main.addEventListener('dragenter', (ev) => { if (!hasFiles(ev) || S.current === null) return; ev.preventDefault(); depth++; overlay.hidden = false; });
  main.addEventListener('dragover', (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
  main.addEventListener('dragleave', () => { if (--depth <= 0) { depth = 0; overlay.hidden = true; } });
  main.addEventListener('drop', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0; overlay.hidden = true;
    addFiles(S.current, [...ev.dataTransfer.files]);
  });
  input.addEventListener('paste', (ev) => {
    const files = [...(ev.clipboardData?.files || [])];
    if (!files.length) return;
    ev.preventDefault();
    // a pasted screenshot is named by when it was taken
    const named = files.map((f) => (f.name && f.name !== 'image.png') ? f
      : new File([f], `${t('file_screenshot')} ${new Date().toISOString().slice(0, 19).replace('T', ' ').replaceAll(':', '.')}.${(f.type.split('/')[1] || 'png')}`, { type: f.type }));
    addFiles(S.current, named);
  });
}
