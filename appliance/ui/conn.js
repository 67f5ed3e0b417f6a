// The one WebSocket of a tab (docs/protocol.md). It reconnects by itself,
// resumes from the last sequence of every room (no page reload, no gap, no
// duplicate), keeps unsent messages in an outbox that survives reloads, and
// says honestly whether it is connected.

const PING_MS = 20000;     // client heartbeat
const DEAD_MS = 45000;     // nothing heard for this long: the socket is dead
const MAX_BACKOFF = 10000;
// error codes after which a frame is sent again with the same id
const RETRY_CODES = new Set(['internal', 'outcome_unknown', 'rate_limited']);

export class Conn extends EventTarget {
  /**
   * @param {object} o
   * @param {() => Record<string, number>} o.known  last seq held per room
   * @param {(frame: object) => void} o.onFrame     every server frame
   * @param {string} o.outboxKey                    localStorage key
   */
  constructor({ known, onFrame, outboxKey }) {
    super();
    this.known = known;
    this.onFrame = onFrame;
    this.outboxKey = outboxKey;
    this.state = 'connecting';
    this.ws = null;
    this.synced = false;
    this.attempt = 0;
    this.lastHeard = 0;
    this.stopped = false;
    this.outbox = new Map(loadOutbox(outboxKey));
    this.timer = setInterval(() => this.heartbeat(), 5000);
    window.addEventListener('online', () => this.reconnectNow());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && this.state !== 'connected') this.reconnectNow();
    });
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  start() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/api/ws`);
    this.ws = ws;
    this.synced = false;
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    ws.onmessage = (ev) => {
      this.lastHeard = Date.now();
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      this.handle(f);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.synced = false;
      if (ev.code === 4001 || ev.code === 4002 || ev.code === 4003) {
        this.stopped = true;
        this.setState('offline');
        this.dispatchEvent(new CustomEvent('logout', { detail: ev.reason }));
        return;
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.attempt += 1;
    this.setState(navigator.onLine === false ? 'offline' : 'reconnecting');
    const base = Math.min(MAX_BACKOFF, 500 * 2 ** Math.min(this.attempt - 1, 5));
    const delay = base / 2 + Math.random() * base / 2;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    this.attempt = 0;
    this.start();
  }

  /** Closes the socket as if the network dropped (tests, "reconnect" button). */
  drop() {
    if (this.ws) this.ws.close();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.ws) this.ws.close();
  }

  heartbeat() {
    if (!this.ws || this.ws.readyState !== 1) return;
    if (Date.now() - this.lastHeard > DEAD_MS) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
      this.scheduleReconnect();
      return;
    }
    if (Date.now() - (this.lastPing || 0) >= PING_MS) {
      this.lastPing = Date.now();
      this.raw({ t: 'ping' });
    }
  }

  raw(frame) {
    if (this.ws && this.ws.readyState === 1) {
      // Fields starting with "_" are local bookkeeping, not protocol.
      this.ws.send(JSON.stringify(frame, (k, v) => (k.startsWith('_') ? undefined : v)));
      return true;
    }
    return false;
  }

  handle(f) {
    switch (f.t) {
      case 'welcome':
        this.raw({ t: 'sync', since: this.known() });
        break;
      case 'synced':
        this.synced = true;
        this.attempt = 0;
        this.setState('connected');
        for (const frame of this.outbox.values()) this.raw(frame);
        break;
      case 'ack':
        this.outbox.delete(f.id);
        this.saveOutbox();
        break;
      case 'error':
        if (!f.ref || !this.outbox.has(f.ref)) break;
        if (RETRY_CODES.has(f.code)) {
          // Nothing stored (internal), maybe stored (outcome_unknown), or
          // too fast (rate_limited): the same id again, later, is safe —
          // the server stores it once and a repeat acks with dup: true.
          this.retryLater(f.ref);
        } else {
          this.outbox.delete(f.ref);
          this.saveOutbox();
        }
        break;
    }
    this.onFrame(f);
  }

  /** Sends `id` again after a growing pause (1 s doubling to 30 s). */
  retryLater(id) {
    const frame = this.outbox.get(id);
    if (!frame) return;
    frame._tries = (frame._tries || 0) + 1;
    const delay = Math.min(30000, 1000 * 2 ** Math.min(frame._tries - 1, 5)) * (0.75 + Math.random() / 2);
    setTimeout(() => {
      if (this.synced && this.outbox.get(id) === frame) this.raw(frame);
    }, delay);
  }

  /** Sends a frame with an id now if possible, else when reconnected. */
  queue(frame) {
    this.outbox.set(frame.id, frame);
    this.saveOutbox();
    if (this.synced) this.raw(frame);
  }

  /** Frames without an id (read markers, typing): best effort. */
  sendNow(frame) {
    if (this.synced) this.raw(frame);
  }

  pending() {
    return [...this.outbox.values()];
  }

  saveOutbox() {
    try { localStorage.setItem(this.outboxKey, JSON.stringify([...this.outbox])); } catch { /* full */ }
  }
}

function loadOutbox(key) {
  try { return JSON.parse(localStorage.getItem(key) || '[]'); } catch { return []; }
}

export function newId() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
