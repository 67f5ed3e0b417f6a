// Calls: WebRTC mesh with "perfect negotiation", signaled over the tab's one
// WebSocket (docs/protocol.md, calls). The call lives in a dock outside the
// chat view, so browsing and writing in other rooms never touches it; a
// dropped WebSocket does not end the media (the browsers talk through
// Parvis's TURN), and the tab rebinds its participant when it reconnects.
import { h, clear, append, $ } from './dom.js';
import { icon } from './icons.js';
import { get } from './api.js';
import { newId } from './conn.js';
import { t } from './i18n.js';
import { guestBadge } from './widgets.js';

const STATS_MS = 1000;
const SPEAKING_LEVEL = 0.04;
const DISCONNECTED_RESTART_MS = 4000;
const NEVER_CONNECTED_MS = 6000;
const SAVED = 'parvis.call';
const DOCK_SIZE = 'parvis.dock-size';
const DOCK_WIDTH = 'parvis.dock-width';
const PHONE = '(max-width: 899px)';
const JOIN_ERRORS = ['call_full', 'not_member', 'archived', 'invalid', 'forbidden'];

/** Video sending quality by participant count (each sender sends n−1 streams). */
export function videoQuality(n) {
  if (n <= 2) return { maxBitrate: 1_500_000, scaleResolutionDownBy: 1 };
  if (n <= 4) return { maxBitrate: 700_000, scaleResolutionDownBy: 1.5 };
  if (n <= 6) return { maxBitrate: 400_000, scaleResolutionDownBy: 2 };
  return { maxBitrate: 250_000, scaleResolutionDownBy: 3 };
}

/** Initials of a name, for avatars. */
export function initialsOf(name) {
  // the first letter or digit of the first two words, what is in brackets
  // aside ("Alice (you)" → "A", "Dana Li (ACME)" → "DL")
  const core = (name || '').replace(/\([^)]*\)/g, ' ').trim() || name || '';
  const firsts = core.split(/\s+/).map((w) => w.match(/[\p{L}\p{N}]/u)?.[0]).filter(Boolean);
  return firsts.slice(0, 2).map((c) => c.toUpperCase()).join('') || '?';
}

/** One of eight avatar colours, the same for a user everywhere. */
export function avatarClass(userId) {
  return 'c' + (((Number(userId) || 0) * 2654435761) % 2 ** 32 % 8);
}

/**
 * A participant's streams as their camera and their shared screens. The
 * screen is the stream its sender named in `call_state`; until that state
 * arrives (it may come after the media), a stream without sound next to one
 * with sound is taken for the screen (the camera stream carries the mic).
 */
export function splitStreams(streams, screenId) {
  const named = streams.filter((s) => screenId && s.id === screenId);
  const rest = streams.filter((s) => !named.includes(s));
  const cam = rest.find((s) => s.getAudioTracks().length) || (named.length ? rest[0] : rest[0]) || null;
  const guessed = rest.filter((s) => s !== cam && s.getVideoTracks().length);
  return { cam, screens: [...named, ...guessed] };
}

/** One RTCPeerConnection to one other participant. */
class Peer {
  constructor(call, pid) {
    this.call = call;
    this.pid = pid;
    // The pattern needs one polite side per pair; the pids decide.
    this.polite = call.active.pid < pid;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.chain = Promise.resolve();
    this.held = [];          // ICE candidates not applicable yet
    this.sent = 0;
    this.received = 0;
    this.lastError = null;
    this.created = Date.now();
    this.streams = new Map(); // stream id → MediaStream
    this.level = 0;
    this.disconnectedSince = 0;
    this.pc = new RTCPeerConnection(call.rtcConfig());
    this.senders = new Map(); // track id → RTCRtpSender
    // The first offer comes from the impolite side only: the polite side
    // adds its tracks when that offer arrives (they ride on its m-lines).
    // Perfect negotiation still settles every later collision, but a first
    // offer from both sides can lose ICE candidates to the rollback.
    this.waiting = this.polite;
    if (!this.waiting) {
      const tracks = call.localTracks();
      for (const track of tracks) this.addTrack(track.track, track.stream);
      // Nothing to send: still offer to receive.
      if (!tracks.some((x) => x.track.kind === 'audio')) this.pc.addTransceiver('audio', { direction: 'recvonly' });
      if (!tracks.some((x) => x.track.kind === 'video')) this.pc.addTransceiver('video', { direction: 'recvonly' });
    }
    this.pc.onnegotiationneeded = () => this.offer();
    this.pc.onicecandidate = ({ candidate }) => this.send({ candidate });
    this.pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] || new MediaStream([track]);
      this.streams.set(stream.id, stream);
      track.onunmute = () => call.render();
      stream.onremovetrack = () => { if (!stream.getTracks().length) this.streams.delete(stream.id); call.render(); };
      call.render();
    };
    this.pc.oniceconnectionstatechange = () => this.checkIce();
    this.pc.onconnectionstatechange = () => {
      // Encodings exist only once negotiated: the quality for the call's
      // size is applied when the pair connects (and when the size changes).
      if (this.pc.connectionState === 'connected') call.applyQuality();
      call.render();
    };
  }

  send(data) {
    this.sent += 1;
    this.call.signal(this.pid, data);
  }

  addTrack(track, stream) {
    if (!track || this.senders.has(track.id) || this.waiting) return;
    this.senders.set(track.id, this.pc.addTrack(track, stream));
  }

  removeTrack(track) {
    const s = this.senders.get(track.id);
    if (!s) return;
    this.senders.delete(track.id);
    try { this.pc.removeTrack(s); } catch { /* closed */ }
  }

  async offer() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.send({ description: this.pc.localDescription });
    } catch (e) {
      this.lastError = String(e);
      console.warn('offer failed', e);
    } finally {
      this.makingOffer = false;
    }
  }

  /** Signals are applied one at a time, in the order they arrived. */
  receive(data) {
    this.received += 1;
    this.chain = this.chain.then(() => this.apply(data)).catch((e) => { this.lastError = String(e); console.warn('signal failed', e); });
  }

  async apply({ description, candidate }) {
    const pc = this.pc;
    if (description) {
      const collision = description.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription(description);
      if (description.type === 'offer' && this.waiting) {
        this.waiting = false;
        for (const track of this.call.localTracks()) this.addTrack(track.track, track.stream);
      }
      if (description.type === 'offer') {
        await pc.setLocalDescription();
        this.send({ description: pc.localDescription });
      }
      // Candidates that came before their description (or with an offer we
      // ignored during a collision) may belong to this one: try them again.
      const held = this.held;
      this.held = [];
      for (const c of held) await pc.addIceCandidate(c).catch(() => {});
    } else if (candidate !== undefined) {
      if (!pc.remoteDescription || this.ignoreOffer) {
        this.held.push(candidate);
        return;
      }
      try {
        await pc.addIceCandidate(candidate);
      } catch {
        this.held.push(candidate);
      }
    }
  }

  checkIce() {
    const st = this.pc.iceConnectionState;
    if (st === 'failed') this.restart();
    this.disconnectedSince = st === 'disconnected' ? (this.disconnectedSince || Date.now()) : 0;
    this.call.render();
  }

  restart() {
    this.disconnectedSince = 0;
    try { this.pc.restartIce(); } catch { /* closed */ }
  }

  /** After a reconnect: whatever was in flight may be lost; renegotiate. */
  resync() {
    if (this.pc.signalingState === 'have-local-offer' && this.pc.localDescription) {
      this.send({ description: this.pc.localDescription });
    } else if (this.pc.connectionState !== 'connected') {
      this.restart();
    }
  }

  close() {
    try { this.pc.close(); } catch { /* already */ }
  }
}

/**
 * The calls of every room (from `call` frames) and the one this tab is in.
 * `app` gives what the chat knows: me, userName, roomTitle, openRoom,
 * canModerate, toast, notify.
 */
export class Calls {
  constructor(conn, app) {
    this.conn = conn;
    this.app = app;
    this.rooms = new Map();  // room → latest `call` frame
    this.versions = new Map();
    this.active = null;      // { room, pid, callId, participants, ... }
    this.ringing = null;
    this.outbox = [];        // signals while the socket is down
    this.timer = setInterval(() => this.tick(), STATS_MS);
    this.prefs = JSON.parse(localStorage.getItem('parvis.call-prefs') || '{}');
  }

  // ------------------------------------------------------------ frames --

  onFrame(f) {
    switch (f.t) {
      case 'welcome': this.onWelcome(); break;
      case 'call': this.onState(f); break;
      case 'call_joined': this.onJoined(f); break;
      case 'call_signal': this.onSignal(f); break;
      case 'call_moderated': this.onModerated(f); break;
      case 'synced': this.onSynced(); break;
      case 'error':
        if (this.joining && f.room === this.joining.room && JOIN_ERRORS.includes(f.code)) this.joinFailed(f);
        break;
    }
  }

  /** A new connection: the server sends every call again before `synced`
   * (its versions restart with it, and calls may have ended meanwhile). */
  onWelcome() {
    this.versions.clear();
    this.announced = new Set();
  }

  onState(f) {
    if ((this.versions.get(f.room) || 0) > f.v) return;
    this.versions.set(f.room, f.v);
    this.announced?.add(f.room);
    if (f.call === null) {
      this.rooms.delete(f.room);
      if (this.active?.room === f.room) this.hangUp(false, f.outcome === 'declined' ? t('call_declined') : null);
    } else {
      this.rooms.set(f.room, f);
      // Before our own join is confirmed, peers would start without ICE
      // servers and their offers be refused: call_joined reconciles.
      if (this.active?.room === f.room && this.active.joinedOnce) this.reconcile(f.participants);
    }
    this.checkRing(f);
    this.app.changed(f.room);
  }

  onJoined(f) {
    const a = this.active;
    this.joining = null;
    if (!a || a.room !== f.room || a.pid !== f.pid) return;
    a.callId = f.call;
    const rejoin = a.joinedOnce;
    a.joinedOnce = true;
    this.reconcile(f.participants);
    const out = this.outbox.splice(0);
    for (const frame of out) this.conn.raw(frame);
    // Back after a drop: what was in flight may be lost. (Not on the first
    // join: the peers were just created and are negotiating.)
    if (rejoin) for (const p of a.peers.values()) p.resync();
    this.render();
  }

  onSignal(f) {
    const a = this.active;
    if (!a || a.room !== f.room || !a.ice) return;
    this.peer(f.from).receive(f.data);
  }

  onModerated(f) {
    const a = this.active;
    if (!a || a.room !== f.room) return;
    if (f.action === 'mute') {
      this.setMic(false);
      this.app.toast(t('call_muted_by', { name: this.app.userName(f.by) }));
    } else if (f.action === 'remove') {
      this.hangUp(false, t('call_removed_by', { name: this.app.userName(f.by) }));
    }
  }

  onSynced() {
    // Calls that ended while the socket was down were not announced again.
    const announced = this.announced;
    this.announced = null;
    for (const room of announced ? [...this.rooms.keys()] : []) {
      if (announced.has(room)) continue;
      this.rooms.delete(room);
      if (this.ringing?.room === room) this.stopRing();
      this.app.changed(room);
    }
    // The socket is back: rebind our participant (same pid), or rejoin
    // after a page reload.
    if (this.active) {
      this.sendJoin();
      return;
    }
    const saved = JSON.parse(sessionStorage.getItem(SAVED) || 'null');
    if (saved && this.rooms.has(saved.room)) this.start(saved.room, { replaces: saved.pid });
    else sessionStorage.removeItem(SAVED);
  }

  joinFailed(f) {
    this.app.toast(f.code === 'call_full' ? t('call_full') : f.message, 'error');
    this.hangUp(false);
  }

  // ------------------------------------------------------------- verbs --

  /** The call in `room`, or undefined. */
  of(room) { return this.rooms.get(room); }

  /** Pre-join: device choice with a preview, then join. */
  async prejoin(room) {
    if (this.active?.room === room) { this.setDock('large'); return; }
    if (this.active) { this.app.toast(t('call_already'), 'error'); return; }
    const d = h('dialog', { id: 'call-prejoin', class: 'call-prejoin', 'aria-label': t('call_join_title') });
    const video = h('video', { autoplay: true, muted: true, playsinline: true, class: 'preview' });
    const camSel = h('select', { 'aria-label': t('camera') });
    const micSel = h('select', { 'aria-label': t('microphone') });
    const camOn = h('input', { type: 'checkbox', checked: this.prefs.video !== false });
    const micOn = h('input', { type: 'checkbox', checked: this.prefs.audio !== false });
    let stream = null;
    let closed = false;
    const stop = () => stream?.getTracks().forEach((tr) => tr.stop());
    const preview = async () => {
      stop();
      const s = await this.capture({ audio: micOn.checked, video: camOn.checked, cam: camSel.value, mic: micSel.value });
      // Closed (or joined) meanwhile: this preview is nobody's; release the camera.
      if (closed) { s.getTracks().forEach((tr) => tr.stop()); return; }
      stream = s;
      video.srcObject = stream;
    };
    const fill = async () => {
      const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
      for (const [sel, kind, pref] of [[camSel, 'videoinput', this.prefs.cam], [micSel, 'audioinput', this.prefs.mic]]) {
        clear(sel).append(...devices.filter((x) => x.kind === kind).map((x, i) =>
          h('option', { value: x.deviceId, selected: x.deviceId === pref }, x.label || `${kind} ${i + 1}`)));
      }
    };
    camSel.onchange = micSel.onchange = camOn.onchange = micOn.onchange = () => preview();
    const join = h('button', { class: 'primary', id: 'call-prejoin-join', onclick: () => {
      this.prefs = { video: camOn.checked, audio: micOn.checked, cam: camSel.value, mic: micSel.value, speaker: this.prefs.speaker };
      localStorage.setItem('parvis.call-prefs', JSON.stringify(this.prefs));
      const s = stream;
      stream = null;
      d.close();
      this.start(room, { stream: s });
    } }, this.of(room) ? t('call_join') : t('call_start'));
    d.append(
      h('header', {}, h('h2', {}, t('call_join_title')), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => d.close() }, icon('close'))),
      h('p', {}, this.app.roomTitle(room)), video,
      h('div', { class: 'devices' },
        h('label', { class: 'check' }, camOn, ' ', t('camera')), camSel,
        h('label', { class: 'check' }, micOn, ' ', t('microphone')), micSel),
      h('div', { class: 'row' }, h('button', { class: 'secondary', onclick: () => d.close() }, t('cancel')), join));
    d.addEventListener('close', () => { closed = true; stop(); d.remove(); });
    document.body.append(d);
    d.showModal();
    join.focus();
    try { await preview(); await fill(); } catch { /* no devices: join receive-only */ }
  }

  /** Camera and microphone as allowed; falls back to audio, then nothing. */
  async capture({ audio, video, cam, mic }) {
    if (!navigator.mediaDevices?.getUserMedia || (!audio && !video)) return new MediaStream();
    const a = audio ? (mic ? { deviceId: { exact: mic } } : true) : false;
    const v = video ? { ...(cam ? { deviceId: { exact: cam } } : {}), width: { ideal: 1280 }, height: { ideal: 720 } } : false;
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: a, video: v });
    } catch (e) {
      if (v && a) {
        this.app.toast(t('call_no_camera'), 'error');
        try { return await navigator.mediaDevices.getUserMedia({ audio: a }); } catch { /* below */ }
      }
      this.app.toast(t('call_no_devices'), 'error');
      return new MediaStream();
    }
  }

  async start(room, { stream, replaces } = {}) {
    if (this.active) return;
    const pid = newId();
    const a = this.active = {
      room, pid, replaces, callId: null, peers: new Map(), participants: [], joinedOnce: false,
      local: stream || null, screen: null, hand: false, audioOnly: false, layout: 'grid', since: Date.now(),
      levels: new Map(),
    };
    sessionStorage.setItem(SAVED, JSON.stringify({ room, pid }));
    this.stopRing();
    this.renderDock();
    if (!a.local) a.local = await this.capture({ ...this.prefs, audio: this.prefs.audio !== false, video: this.prefs.video !== false });
    if (this.active !== a) { a.local.getTracks().forEach((tr) => tr.stop()); return; }
    try {
      a.ice = await get('/ice');
    } catch (e) {
      a.ice = { iceServers: [] };
    }
    // fresh credentials well before these expire: new allocations (an ICE
    // restart after a network change) need valid ones; the allocations a
    // call already has keep theirs on the server
    a.iceTimer = setInterval(() => this.refreshIce(), Math.max(15, (a.ice.ttl || 3600) * 0.75) * 1000);
    this.sendJoin();
    this.render();
  }

  sendJoin() {
    const a = this.active;
    if (!a || !a.ice) return;
    this.joining = a;
    this.conn.raw({ t: 'call_join', room: a.room, pid: a.pid, replaces: a.replaces || undefined, media: this.media() });
  }

  async refreshIce() {
    const a = this.active;
    if (!a) return;
    try {
      a.ice = await get('/ice');
      for (const p of a.peers.values()) p.pc.setConfiguration(this.rtcConfig());
    } catch { /* next time */ }
  }

  rtcConfig() {
    // `iceOverride`: benchmarks point the same call at another TURN server.
    const ice = this.iceOverride || this.active?.ice || { iceServers: [] };
    const c = { iceServers: ice.iceServers, bundlePolicy: 'max-bundle' };
    // Tests (and admins debugging) can force the relay: ?relay in the URL.
    if (this.forceRelay || new URLSearchParams(location.search).has('relay')) c.iceTransportPolicy = 'relay';
    return c;
  }

  media() {
    const a = this.active;
    const track = (kind) => a.local?.getTracks().find((tr) => tr.kind === kind);
    return {
      audio: !!track('audio')?.enabled,
      video: !!track('video') && track('video').readyState === 'live',
      screen: a.screen ? a.screen.id : undefined,
      hand: a.hand,
    };
  }

  sendState() {
    const a = this.active;
    if (!a) return;
    this.conn.raw({ t: 'call_state', room: a.room, media: this.media() });
    this.render();
  }

  signal(to, data) {
    const a = this.active;
    if (!a) return;
    const frame = { t: 'call_signal', room: a.room, to, data: JSON.parse(JSON.stringify(data)) };
    if (!this.conn.synced || !this.conn.raw(frame)) this.outbox.push(frame);
  }

  /** Tracks every peer connection should carry. */
  localTracks() {
    const a = this.active;
    const out = [];
    for (const track of a.local?.getTracks() || []) {
      if (a.audioOnly && track.kind === 'video') continue;
      out.push({ track, stream: a.local });
    }
    for (const track of a.screen?.getTracks() || []) out.push({ track, stream: a.screen });
    return out;
  }

  peer(pid) {
    const a = this.active;
    let p = a.peers.get(pid);
    if (!p) {
      p = new Peer(this, pid);
      a.peers.set(pid, p);
    }
    return p;
  }

  reconcile(participants) {
    const a = this.active;
    a.participants = participants;
    const present = new Set(participants.map((p) => p.pid));
    if (a.joinedOnce && !present.has(a.pid) && this.conn.synced) {
      // Our participant is gone (expired while away, removed): join again.
      this.sendJoin();
    }
    for (const p of participants) if (p.pid !== a.pid) this.peer(p.pid);
    for (const [pid, peer] of a.peers) {
      if (!present.has(pid)) { peer.close(); a.peers.delete(pid); }
    }
    this.applyQuality();
    this.render();
  }

  applyQuality() {
    const a = this.active;
    const q = videoQuality(a.peers.size + 1);
    const cam = a.local?.getVideoTracks()[0];
    for (const p of a.peers.values()) {
      for (const s of p.pc.getSenders()) {
        if (!s.track || s.track.kind !== 'video') continue;
        const params = s.getParameters();
        if (!params.encodings?.length) continue;
        const screen = s.track !== cam;
        params.encodings[0].maxBitrate = screen ? 2_500_000 : q.maxBitrate;
        params.encodings[0].scaleResolutionDownBy = screen ? 1 : q.scaleResolutionDownBy;
        s.setParameters(params).catch(() => { /* not negotiated yet */ });
      }
    }
  }

  setMic(on) {
    const track = this.active?.local?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = on;
    this.sendState();
  }

  async setCam(on) {
    const a = this.active;
    if (!a) return;
    const old = a.local.getVideoTracks()[0];
    if (!on && old) {
      old.stop();
      a.local.removeTrack(old);
      for (const p of a.peers.values()) p.removeTrack(old);
    } else if (on && !old) {
      const s = await this.capture({ video: true, audio: false, cam: this.prefs.cam });
      const track = s.getVideoTracks()[0];
      if (!track) return;
      a.local.addTrack(track);
      a.audioOnly = false;
      for (const p of a.peers.values()) p.addTrack(track, a.local);
      this.applyQuality();
    }
    this.sendState();
  }

  async toggleScreen() {
    const a = this.active;
    if (!a) return;
    if (a.screen) { this.stopScreen(); return; }
    let s;
    try {
      s = await navigator.mediaDevices.getDisplayMedia({ video: { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 15 } }, audio: false });
    } catch {
      return; // the user cancelled
    }
    const track = s.getVideoTracks()[0];
    if (!track) return;
    track.contentHint = 'detail';
    track.onended = () => this.stopScreen();
    a.screen = s;
    for (const p of a.peers.values()) p.addTrack(track, s);
    this.applyQuality();
    this.sendState();
  }

  stopScreen() {
    const a = this.active;
    if (!a?.screen) return;
    for (const track of a.screen.getTracks()) {
      track.stop();
      for (const p of a.peers.values()) p.removeTrack(track);
    }
    a.screen = null;
    this.sendState();
  }

  /** Audio only: stop sending and receiving video (bad networks). */
  setAudioOnly(on) {
    const a = this.active;
    if (!a) return;
    a.audioOnly = on;
    if (on) this.setCam(false);
    for (const p of a.peers.values()) {
      for (const tr of p.pc.getTransceivers()) {
        if (tr.receiver.track?.kind !== 'video' || tr.stopped) continue;
        const sending = !!tr.sender.track;
        if (on) tr.direction = sending ? 'sendonly' : 'inactive';
        else tr.direction = sending ? 'sendrecv' : 'recvonly';
      }
    }
    this.render();
  }

  toggleHand() {
    if (!this.active) return;
    this.active.hand = !this.active.hand;
    this.sendState();
  }

  moderate(pid, action) {
    const a = this.active;
    if (a) this.conn.raw({ t: 'call_moderate', room: a.room, pid, action });
  }

  /** Leaves the call (`tell`: say so to the server). */
  hangUp(tell = true, why = null) {
    const a = this.active;
    if (!a) return;
    if (tell) this.conn.raw({ t: 'call_leave', room: a.room });
    this.active = null;
    this.joining = null;
    this.outbox = [];
    clearInterval(a.iceTimer);
    for (const p of a.peers.values()) p.close();
    for (const s of [a.local, a.screen]) s?.getTracks().forEach((tr) => tr.stop());
    sessionStorage.removeItem(SAVED);
    $('#call-dock')?.remove();
    delete document.body.dataset.dock;
    if (why) this.app.toast(why);
    this.app.changed(a.room);
  }

  // ------------------------------------------------------------ ringing --

  checkRing(f) {
    const room = this.app.room(f.room);
    const ringsMe = f.call !== null && f.ring && f.by !== this.app.me().id && room?.kind === 'direct'
      && this.active?.room !== f.room;
    if (ringsMe && !this.ringing) this.ring(f);
    if (!ringsMe && this.ringing?.room === f.room) this.stopRing();
  }

  ring(f) {
    const caller = this.app.userName(f.by);
    const d = h('div', { id: 'call-ring', class: 'call-ring', role: 'alertdialog', 'aria-label': t('call_incoming', { name: caller }) },
      h('div', { class: 'ring-who' }, h('span', { class: 'avatar ' + avatarClass(f.by), 'aria-hidden': 'true' }, initialsOf(caller)),
        h('p', {}, h('strong', {}, caller), ' ', t('call_is_calling'))),
      h('div', { class: 'row' },
        h('button', { class: 'danger', id: 'call-decline', onclick: () => { this.conn.raw({ t: 'call_decline', room: f.room }); this.stopRing(); } }, t('call_decline')),
        h('button', { class: 'primary', id: 'call-accept', onclick: () => { this.stopRing(); this.app.openRoom(f.room); this.start(f.room); } }, t('call_accept'))));
    document.body.append(d);
    this.ringing = { room: f.room, node: d, tone: this.tone() };
    this.app.notify(t('call_incoming', { name: caller }), f.room);
  }

  /** A two-note ring made here (no audio file to fetch). */
  tone() {
    let ctx;
    try { ctx = new AudioContext(); } catch { return null; }
    const beep = () => {
      for (const [freq, at] of [[660, 0], [880, 0.25]]) {
        const o = ctx.createOscillator();
        const g = ctx.createGain();
        g.gain.value = 0.08;
        o.frequency.value = freq;
        o.connect(g).connect(ctx.destination);
        o.start(ctx.currentTime + at);
        o.stop(ctx.currentTime + at + 0.2);
      }
    };
    beep();
    const timer = setInterval(beep, 2000);
    return () => { clearInterval(timer); ctx.close(); };
  }

  stopRing() {
    if (!this.ringing) return;
    this.ringing.node.remove();
    this.ringing.tone?.();
    this.ringing = null;
  }

  // -------------------------------------------------------------- stats --

  async tick() {
    const a = this.active;
    if (!a) return;
    for (const p of a.peers.values()) {
      if (p.disconnectedSince && Date.now() - p.disconnectedSince > DISCONNECTED_RESTART_MS) p.restart();
      // Never connected after a while (e.g. candidates lost to a collision):
      // the impolite side starts over with fresh candidates.
      const stuck = p.pc.connectionState === 'new' && Date.now() - p.created > NEVER_CONNECTED_MS;
      if (stuck && !p.polite) {
        p.created = Date.now();
        // An offer without an answer may have been lost on the way: send it
        // again (answering the same offer twice is harmless); else restart.
        if (p.pc.signalingState === 'have-local-offer' && p.pc.localDescription) p.send({ description: p.pc.localDescription });
        else p.restart();
      }
    }
    const stats = await this.stats();
    for (const s of stats) a.levels.set(s.pid, s.audio.level);
    this.renderTimer();
    this.renderSpeaking();
  }

  /** Per peer: what is received and over which path (tests use this too). */
  async stats() {
    const a = this.active;
    if (!a) return [];
    const out = [];
    for (const p of a.peers.values()) {
      const r = { pid: p.pid, state: p.pc.connectionState, signaling: p.pc.signalingState, ice: p.pc.iceConnectionState,
        gathering: p.pc.iceGatheringState, polite: p.polite, sent: p.sent, received: p.received, error: p.lastError,
        held: p.held.length, relay: false, local: null, remote: null,
        audio: { bytes: 0, level: 0 }, video: [] };
      let report;
      try { report = await p.pc.getStats(); } catch { continue; }
      let pairId = null;
      report.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          r.audio.bytes += s.bytesReceived || 0;
          r.audio.level = Math.max(r.audio.level, s.audioLevel || 0);
        }
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          r.video.push({ bytes: s.bytesReceived || 0, frames: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0 });
        }
        if (s.type === 'candidate-pair' && (s.id === pairId || (!pairId && s.selected))) {
          const l = report.get(s.localCandidateId);
          const rm = report.get(s.remoteCandidateId);
          r.pair = s.id;
          r.local = l && { type: l.candidateType, protocol: l.relayProtocol || l.protocol, address: `${l.address}:${l.port}` };
          r.remote = rm && { type: rm.candidateType };
          r.relay = l?.candidateType === 'relay' || rm?.candidateType === 'relay';
        }
      });
      out.push(r);
    }
    return out;
  }

  // ------------------------------------------------------------- the dock --

  /**
   * The dock's size: 'large' (beside the conversation on wide screens, the
   * whole screen on phones) or 'small' (a narrow column beside it; a bar at
   * the top on phones). Remembered, as is the width it was dragged to. The
   * page makes room for it: the dock never covers the composer.
   */
  setDock(size) {
    const dock = $('#call-dock');
    if (!dock) return;
    dock.dataset.size = size;
    document.body.dataset.dock = size;
    localStorage.setItem(DOCK_SIZE, size);
    const b = $('#call-size');
    if (b) {
      const label = size === 'large' ? t('call_minimize') : t('call_maximize');
      b.setAttribute('aria-label', label);
      b.title = label;
      b.replaceChildren(icon(size === 'large' ? 'minimize' : 'maximize'));
    }
  }

  /** Phones: reading a conversation shrinks a full-screen call to its bar. */
  compactForReading() {
    if ($('#call-dock')?.dataset.size === 'large' && matchMedia(PHONE).matches) this.setDock('small');
  }

  /** Dragging the dock's edge sets its width (wide screens). */
  resizer(dock) {
    const grip = h('div', { class: 'dock-grip', role: 'separator', 'aria-orientation': 'vertical', 'aria-label': t('call_resize'), tabindex: '0' });
    const apply = (px) => {
      const w = Math.round(Math.min(Math.max(px, 300), window.innerWidth * 0.7));
      document.documentElement.style.setProperty('--dock-w', w + 'px');
      localStorage.setItem(DOCK_WIDTH, String(w));
    };
    grip.addEventListener('pointerdown', (ev) => {
      ev.preventDefault();
      grip.setPointerCapture(ev.pointerId);
      const move = (e) => apply(window.innerWidth - e.clientX);
      const up = () => { grip.removeEventListener('pointermove', move); grip.removeEventListener('pointerup', up); };
      grip.addEventListener('pointermove', move);
      grip.addEventListener('pointerup', up);
    });
    grip.addEventListener('keydown', (ev) => {
      const step = ev.key === 'ArrowLeft' ? 40 : ev.key === 'ArrowRight' ? -40 : 0;
      if (step) { ev.preventDefault(); apply(dock.getBoundingClientRect().width + step); }
    });
    const saved = Number(localStorage.getItem(DOCK_WIDTH));
    if (saved) apply(saved);
    return grip;
  }

  renderDock() {
    const a = this.active;
    $('#call-dock')?.remove();
    const btn = (id, label, icon, onclick) => h('button', { id, class: 'icon', title: label, 'aria-label': label, onclick }, icon);
    const dock = h('section', { id: 'call-dock', class: 'call-dock', dataset: { size: 'large', layout: 'grid' }, 'aria-label': t('call') },
      h('header', {},
        h('span', { class: 'call-live', 'aria-hidden': 'true' }),
        h('button', { class: 'link call-room', onclick: () => this.app.openRoom(a.room) }, this.app.roomTitle(a.room)),
        h('span', { class: 'call-timer', id: 'call-timer' }),
        h('span', { class: 'call-status', id: 'call-status', role: 'status' }),
        h('span', { class: 'spacer' }),
        btn('call-layout', t('call_layout'), icon('grid'), () => { dock.dataset.layout = dock.dataset.layout === 'grid' ? 'speaker' : 'grid'; this.render(); }),
        btn('call-size', t('call_minimize'), icon('minimize'), () => this.setDock(dock.dataset.size === 'large' ? 'small' : 'large')),
        btn('call-fullscreen', t('call_fullscreen'), icon('fullscreen'), () => {
          if (document.fullscreenElement) document.exitFullscreen(); else dock.requestFullscreen?.().catch(() => {});
        })),
      h('div', { class: 'tiles', id: 'call-tiles' }),
      h('footer', { class: 'controls' },
        btn('call-mic', t('call_mic'), icon('mic'), () => this.setMic(!this.media().audio)),
        btn('call-cam', t('call_cam'), icon('camera'), () => this.setCam(!this.media().video)),
        navigator.mediaDevices?.getDisplayMedia ? btn('call-share', t('call_share'), icon('screen'), () => this.toggleScreen()) : null,
        btn('call-hand', t('call_hand'), icon('hand'), () => this.toggleHand()),
        btn('call-audio-only', t('call_audio_only'), icon('speaker'), () => this.setAudioOnly(!a.audioOnly)),
        btn('call-devices', t('call_devices'), icon('settings'), () => this.devicesDialog()),
        h('button', { id: 'call-leave', class: 'danger', onclick: () => this.hangUp(true) }, t('call_leave'))),
      h('div', { id: 'call-audio', hidden: true }));
    dock.prepend(this.resizer(dock));
    document.body.append(dock);
    this.setDock(localStorage.getItem(DOCK_SIZE) === 'small' ? 'small' : 'large');
    this.render();
  }

  async devicesDialog() {
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    const outs = devices.filter((x) => x.kind === 'audiooutput');
    const d = h('dialog', { 'aria-label': t('call_devices') },
      h('header', {}, h('h2', {}, t('call_devices')), h('button', { class: 'icon', 'aria-label': t('close'), onclick: () => d.close() }, icon('close'))));
    const pick = (label, kind, current, onpick) => {
      const list = devices.filter((x) => x.kind === kind);
      if (!list.length) return null;
      const sel = h('select', { onchange: () => onpick(sel.value) },
        list.map((x, i) => h('option', { value: x.deviceId, selected: x.deviceId === current }, x.label || `${label} ${i + 1}`)));
      return h('label', { class: 'field' }, h('span', {}, label), sel);
    };
    d.append(
      pick(t('camera'), 'videoinput', this.prefs.cam, async (id) => { this.prefs.cam = id; await this.setCam(false); await this.setCam(true); this.savePrefs(); }),
      pick(t('microphone'), 'audioinput', this.prefs.mic, (id) => { this.prefs.mic = id; this.switchMic(); this.savePrefs(); }),
      outs.length && 'setSinkId' in HTMLMediaElement.prototype
        ? pick(t('speaker'), 'audiooutput', this.prefs.speaker, (id) => { this.prefs.speaker = id; this.savePrefs(); this.render(); })
        : null);
    document.body.append(d);
    d.addEventListener('close', () => d.remove());
    d.showModal();
  }

  savePrefs() { localStorage.setItem('parvis.call-prefs', JSON.stringify(this.prefs)); }

  async switchMic() {
    const a = this.active;
    if (!a) return;
    const s = await this.capture({ audio: true, video: false, mic: this.prefs.mic });
    const track = s.getAudioTracks()[0];
    const old = a.local.getAudioTracks()[0];
    if (!track) return;
    track.enabled = old ? old.enabled : true;
    for (const p of a.peers.values()) {
      const sender = old && p.senders.get(old.id);
      if (sender) {
        await sender.replaceTrack(track);
        p.senders.delete(old.id);
        p.senders.set(track.id, sender);
      } else {
        p.addTrack(track, a.local);
      }
    }
    if (old) { old.stop(); a.local.removeTrack(old); }
    a.local.addTrack(track);
    this.sendState();
  }

  renderTimer() {
    const el = $('#call-timer');
    const a = this.active;
    if (!el || !a) return;
    const info = this.rooms.get(a.room);
    const secs = Math.max(0, Math.floor((Date.now() - (info?.started || a.since)) / 1000));
    el.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, '0')}`;
  }

  renderSpeaking() {
    const a = this.active;
    for (const tile of document.querySelectorAll('#call-tiles .tile[data-pid]')) {
      tile.classList.toggle('speaking', (a.levels.get(tile.dataset.pid) || 0) > SPEAKING_LEVEL);
    }
  }

  /** Rebuilds the tiles, reusing media elements so playback never stutters. */
  render() {
    const a = this.active;
    const box = $('#call-tiles');
    if (!a || !box) return;
    const dock = $('#call-dock');
    const me = this.app.me();
    const mine = this.media();
    const byPid = new Map(a.participants.map((p) => [p.pid, p]));
    const tiles = [];
    // Own tile (muted preview) and own screen.
    tiles.push(this.tile('self', a.local, { name: me.display_name + ' ' + t('call_you'), ...mine, self: true }));
    for (const [pid, peer] of a.peers) {
      const info = byPid.get(pid) || {};
      const name = this.app.userName(info.user);
      const { cam, screens } = splitStreams([...peer.streams.values()], info.screen);
      for (const sc of screens) tiles.push(this.tile(pid + ':screen:' + sc.id, sc, { name: t('call_screen_of', { name }), screen: true }));
      // the camera tile is the person, never styled as a screen
      tiles.push(this.tile(pid, cam, { ...info, screen: false, name, pid, state: peer.pc.connectionState }));
      this.audioFor(pid, cam);
    }
    if (a.screen) tiles.push(this.tile('self:screen', a.screen, { name: t('call_your_screen'), screen: true, self: true }));
    const current = new Set(tiles.map((x) => x.dataset.key));
    for (const el of [...box.children]) if (!current.has(el.dataset.key)) el.remove();
    for (const el of tiles) box.append(el); // re-append keeps order; elements are reused
    for (const el of [...$('#call-audio').children]) if (!a.peers.has(el.dataset.pid)) el.remove();
    dock.classList.toggle('has-screen', tiles.some((x) => x.classList.contains('screen')));
    const away = this.conn.state !== 'connected';
    // the caller of a direct call waits for the other person: "Ringing…"
    const ringing = this.rooms.get(a.room)?.ring && a.participants.length <= 1;
    $('#call-status').textContent = away ? t('call_reconnecting') : ringing ? t('call_ringing') : t('call_n', { n: a.participants.length || 1 });
    dock.classList.toggle('ringing', !!ringing);
    for (const [id, on] of [['#call-mic', mine.audio], ['#call-cam', mine.video], ['#call-share', !!a.screen], ['#call-hand', a.hand], ['#call-audio-only', a.audioOnly]]) {
      const b = $(id);
      if (b) { b.setAttribute('aria-pressed', String(!!on)); b.classList.toggle('off', (id === '#call-mic' || id === '#call-cam') && !on); }
    }
    this.renderTimer();
  }

  tile(key, stream, info) {
    const box = $('#call-tiles');
    let el = box.querySelector(`.tile[data-key="${CSS.escape(key)}"]`);
    if (!el) {
      el = h('figure', { class: 'tile', dataset: { key } },
        h('video', { autoplay: true, playsinline: true, muted: true }),
        h('figcaption', {}));
      if (info.pid) el.dataset.pid = info.pid;
    }
    const video = el.querySelector('video');
    const hasVideo = !!stream?.getVideoTracks().some((tr) => tr.readyState === 'live');
    if (video.srcObject !== (stream || null)) video.srcObject = stream || null;
    el.classList.toggle('no-video', !hasVideo || (!info.screen && info.video === false));
    el.classList.toggle('screen', !!info.screen);
    el.classList.toggle('self', !!info.self);
    el.classList.toggle('away', !!info.away);
    const cap = clear(el.querySelector('figcaption'));
    append(cap, [
      h('span', { class: 'avatar ' + avatarClass(info.user ?? this.app.me().id), 'aria-hidden': 'true' }, initialsOf(info.name)),
      h('span', { class: 'name' }, info.name || ''),
      info.self ? null : guestBadge(info.user),
      info.audio === false && !info.screen ? h('span', { class: 'badge', title: t('call_muted') }, icon('mic-off')) : null,
      info.hand ? h('span', { class: 'badge hand', title: t('call_hand_up') }, icon('hand')) : null,
      info.away ? h('span', { class: 'badge', title: t('call_away') }, icon('away')) : null,
      info.state && info.state !== 'connected' && !info.away ? h('span', { class: 'badge', title: info.state }, '…') : null,
      info.pid && this.app.canModerate(this.active.room) ? h('span', { class: 'mod' },
        h('button', { class: 'icon small', title: t('call_mute_them'), 'aria-label': t('call_mute_them'), onclick: () => this.moderate(info.pid, 'mute') }, icon('mic-off')),
        h('button', { class: 'icon small', title: t('call_remove_them'), 'aria-label': t('call_remove_them'), onclick: () => this.moderate(info.pid, 'remove') }, icon('eject'))) : null]);
    return el;
  }

  /** Remote sound plays through an audio element (video tiles stay muted so they autoplay). */
  audioFor(pid, stream) {
    const box = $('#call-audio');
    let el = box.querySelector(`audio[data-pid="${CSS.escape(pid)}"]`);
    if (!stream?.getAudioTracks().length) { el?.remove(); return; }
    if (!el) {
      el = h('audio', { autoplay: true, dataset: { pid } });
      box.append(el);
    }
    if (el.srcObject !== stream) {
      el.srcObject = stream;
      el.play().catch(() => this.needSound());
    }
    if (this.prefs.speaker && el.setSinkId && el.sinkId !== this.prefs.speaker) el.setSinkId(this.prefs.speaker).catch(() => {});
  }

  /** Autoplay refused (e.g. rejoined after a reload): one click enables sound. */
  needSound() {
    if ($('#call-sound')) return;
    const b = h('button', { id: 'call-sound', class: 'primary small', onclick: () => {
      for (const el of document.querySelectorAll('#call-audio audio')) el.play().catch(() => {});
      b.remove();
    } }, t('call_enable_sound'));
    $('#call-dock header')?.append(b);
  }
}
