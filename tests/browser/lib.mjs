// Shared helpers for the browser tests: a real `parvis serve` process on
// loopback ports and Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { chromium, request } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const PARVIS_BIN = process.env.PARVIS_BIN
  || join(here, '../../target/x86_64-unknown-linux-gnu/release/parvis');

// Ports below the kernel's ephemeral range (32768 and up), so no outgoing
// connection takes one between this check and the server's bind; a counter
// so two picks in one run never repeat; each one bindable for TCP and UDP.
const PORT_LOW = 12000;
const PORT_SPAN = 20000;
let nextPort = (process.pid * 7919) % PORT_SPAN;

function bindable(port) {
  const tcp = new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  const udp = new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', () => { sock.close(); resolve(false); });
    sock.bind(port, '127.0.0.1', () => sock.close(() => resolve(true)));
  });
  return Promise.all([tcp, udp]).then(([t, u]) => t && u);
}

export async function freePort() {
  for (let i = 0; i < PORT_SPAN; i++) {
    const port = PORT_LOW + (nextPort++ % PORT_SPAN);
    if (await bindable(port)) return port;
  }
  throw new Error(`no free loopback port between ${PORT_LOW} and ${PORT_LOW + PORT_SPAN}`);
}

async function waitForPort(port, ms = 20000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((res) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); res(true); });
      s.on('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} did not open`);
}

/** A running parvis on a fresh data folder. */
export class Server {
  /** `mdns`: announce <name>.local (only inside the test network namespace). */
  static async start({ mdns = false, toml = '' } = {}) {
    if (!existsSync(PARVIS_BIN)) throw new Error(`${PARVIS_BIN} missing: run cargo build --release`);
    const s = new Server();
    s.mdns = mdns;
    s.data = join(mkdtempSync(join(tmpdir(), 'parvis-browser-')), 'data');
    if (toml) {
      mkdirSync(s.data, { recursive: true, mode: 0o700 });
      writeFileSync(join(s.data, 'parvis.toml'), toml);
    }
    s.httpsPort = await freePort();
    s.httpPort = await freePort();
    s.downloadsPort = await freePort();
    s.turnPort = await freePort();
    s.turnTlsPort = await freePort();
    s.url = `https://localhost:${s.httpsPort}`;
    await s.spawn();
    return s;
  }

  async spawn() {
    const log = openSync(this.data + '.log', 'a');
    this.proc = spawn(PARVIS_BIN, ['serve', '--log', process.env.PARVIS_LOG || 'warn', '--data', this.data,
      '--https', `127.0.0.1:${this.httpsPort}`, '--http', `127.0.0.1:${this.httpPort}`, '--downloads', `127.0.0.1:${this.downloadsPort}`,
      '--turn', `127.0.0.1:${this.turnPort}`, '--turn-tls', `127.0.0.1:${this.turnTlsPort}`, ...(this.mdns ? [] : ['--no-mdns'])],
    { stdio: ['ignore', log, log] });
    await waitForPort(this.httpsPort);
  }

  kill9() {
    if (this.proc) { this.proc.kill('SIGKILL'); this.proc = null; }
  }

  async restart() {
    this.kill9();
    await new Promise((r) => setTimeout(r, 200));
    await this.spawn();
  }

  setupCode() { return readFileSync(join(this.data, 'setup-code'), 'utf8').trim(); }

  /** An API client (its own cookie jar). */
  async api() {
    const ctx = await request.newContext({ baseURL: this.url, ignoreHTTPSErrors: true });
    let csrf = '';
    const call = async (method, path, data) => {
      const res = await ctx.fetch('/api' + path, { method, data, headers: csrf ? { 'x-csrf-token': csrf } : {} });
      const body = res.status() === 204 ? null : await res.json();
      if (!res.ok()) throw new Error(`${method} ${path}: ${res.status()} ${JSON.stringify(body)}`);
      if (body?.csrf) csrf = body.csrf;
      return body;
    };
    return { call, dispose: () => ctx.dispose() };
  }

  /** Creates the admin "alice" through the API; returns the API client. */
  async setupAdmin() {
    const api = await this.api();
    await api.call('POST', '/setup', { code: this.setupCode(), company: 'Acme', username: 'alice', display_name: 'Alice', password: 'password-1' });
    return api;
  }
}

const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];

export async function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [...extra, ...CHROMIUM_ARGS],
  });
}

/**
 * A Chromium that trusts this server's local CA the way a user's browser
 * does once they installed it: in the NSS database of its (throwaway) home.
 * No certificate-error flag, so TURN over TLS is verified for real.
 */
export async function trustingBrowser(server, extra = []) {
  const home = mkdtempSync(join(tmpdir(), 'parvis-home-'));
  const db = `sql:${home}/.pki/nssdb`;
  mkdirSync(`${home}/.pki/nssdb`, { recursive: true });
  execFileSync('certutil', ['-N', '-d', db, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', db, '-t', 'C,,', '-n', 'parvis-local-ca', '-i', join(server.data, 'tls', 'ca.pem')]);
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    env: { ...process.env, HOME: home },
    args: [...extra, ...CHROMIUM_ARGS],
  });
}

/** A fresh browser profile logged in as `user`, on the chat page. */
export async function loggedIn(browser, server, user, password, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US', ...options });
  const page = await context.newPage();
  page.on('pageerror', (e) => { page.errors = [...(page.errors || []), e.message]; });
  await page.goto(server.url + '/');
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  try {
    await page.waitForSelector('#composer-input');
  } catch (e) {
    const text = await page.textContent('body').catch(() => '?');
    throw new Error(`${user} could not log in (${e.message.split('\n')[0]}); the page shows: ${text.slice(0, 300)}`);
  }
  await waitConnected(page);
  return { context, page };
}

/**
 * Alice (admin, set up through the API) and the other `names`, each logged
 * in in a browser context of their own: `{ api, people: { name: {context, page} } }`.
 */
export async function team(browser, server, names) {
  const api = await server.setupAdmin();
  for (const n of names.filter((x) => x !== 'alice')) {
    await api.call('POST', '/users', { username: n, display_name: n[0].toUpperCase() + n.slice(1), password: 'password-2' });
  }
  const people = {};
  for (const n of names) people[n] = await loggedIn(browser, server, n, n === 'alice' ? 'password-1' : 'password-2');
  return { api, people };
}

export async function waitConnected(page, timeout = 15000) {
  await page.waitForFunction(() => window.parvis?.conn?.state === 'connected', null, { timeout });
}

/** Sends a chat message through the page's own connection and waits for its ack. */
export async function sendVia(page, room, body) {
  return page.evaluate(([room, body]) => new Promise((resolve) => {
    const id = Math.random().toString(36).slice(2);
    const conn = window.parvis.conn;
    const onAck = () => {
      if (!conn.outbox.has(id)) { clearInterval(timer); resolve(id); }
    };
    const timer = setInterval(onAck, 20);
    conn.queue({ t: 'send', id, room, body });
  }), [room, body]);
}

export async function openRoomByName(page, name) {
  await page.click(`#room-list a.room:has(.room-name:text-matches("${name}$"))`);
  await page.waitForFunction((n) => document.getElementById('room-title').textContent.startsWith(n), name);
}

/**
 * Asks multicast DNS (RFC 6762) for the IPv4 address of `host` (e.g.
 * "office.local") on the interface of `ifaceAddr`, the way a colleague's
 * computer does. Resolves to `ifaceAddr` once an answer gives it (the
 * box's LAN address), else after `ms` to the addresses seen (a list).
 */
export async function mdnsLookup(host, ifaceAddr, ms = 5000) {
  const dgram = await import('node:dgram');
  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise((r) => sock.bind(5353, r));
  sock.addMembership('224.0.0.251', ifaceAddr);
  sock.setMulticastInterface(ifaceAddr);
  const labels = host.split('.').flatMap((l) => [Buffer.from([l.length]), Buffer.from(l)]);
  const query = Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
  const name = (buf, at) => { // → [name, next offset]
    const parts = [];
    let jumped = false, next = at;
    for (let i = 0; i < 64; i++) {
      const len = buf[at];
      if (len === 0) { if (!jumped) next = at + 1; break; }
      if ((len & 0xc0) === 0xc0) { if (!jumped) next = at + 2; at = ((len & 0x3f) << 8) | buf[at + 1]; jumped = true; continue; }
      parts.push(buf.subarray(at + 1, at + 1 + len).toString());
      at += 1 + len;
    }
    return [parts.join('.'), next];
  };
  return new Promise((resolve) => {
    const seen = [];
    const timer = setTimeout(() => { clearInterval(again); sock.close(); resolve(seen); }, ms);
    const again = setInterval(() => sock.send(query, 5353, '224.0.0.251'), 1000);
    sock.on('message', (buf) => {
      try {
        if (!(buf[2] & 0x80)) return; // a query, maybe our own
        let at = 12;
        for (let q = buf.readUInt16BE(4); q > 0; q--) at = name(buf, at)[1] + 4;
        const records = buf.readUInt16BE(6) + buf.readUInt16BE(8) + buf.readUInt16BE(10);
        for (let i = 0; i < records; i++) {
          const [n, next] = name(buf, at);
          const type = buf.readUInt16BE(next), len = buf.readUInt16BE(next + 8);
          const addr = [...buf.subarray(next + 10, next + 14)].join('.');
          if (type === 1 && n.toLowerCase() === host.toLowerCase()) {
            seen.push(addr);
            if (addr === ifaceAddr) { clearTimeout(timer); clearInterval(again); sock.close(); resolve(addr); return; }
          }
          at = next + 10 + len;
        }
      } catch { /* not for us */ }
    });
    sock.send(query, 5353, '224.0.0.251');
  });
}

// ---------------------------------------------------------------- calls --

const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

export const stats = (page) => page.evaluate(() => window.parvis.calls.stats());

/** Totals per peer: audio bytes, decoded video frames (all video), the largest frame width. */
function totals(list) {
  return new Map(list.map((s) => [s.pid, {
    relay: s.relay, protocol: s.local?.protocol, audio: s.audio.bytes, states: [s.state, s.signaling, s.ice, s.gathering, s.polite, s.sent, s.received, s.held, s.error],
    frames: s.video.reduce((n, v) => n + v.frames, 0),
    wide: s.video.filter((v) => v.width >= 1000).reduce((n, v) => n + v.frames, 0),
  }]));
}

/**
 * Waits until `page` receives audio and video from `peers` others over the
 * relay, growing between two looks (so it flows now, not just once).
 * With `screen`, a ≥1000-pixel-wide video (a shared screen) must flow too.
 */
export async function flowing(page, peers, { screen = false, timeout = 30000, protocol } = {}) {
  const until = Date.now() + timeout;
  let last = '';
  while (Date.now() < until) {
    const a = totals(await stats(page));
    await sleepMs(1200);
    const b = totals(await stats(page));
    const good = [...b].filter(([pid, x]) => {
      const y = a.get(pid);
      return y && x.relay && x.audio > y.audio && x.frames > y.frames && (!protocol || x.protocol === protocol);
    });
    const wide = [...b].some(([pid, x]) => a.get(pid) && x.wide > a.get(pid).wide);
    if (good.length >= peers && (!screen || wide)) return b;
    last = JSON.stringify([...b]);
  }
  const who = await page.evaluate(() => [window.parvis.state.me.username, window.parvis.conn.state, window.parvis.calls.active?.pid]);
  const metrics = await page.evaluate(() => fetch('/metrics').then((r) => r.text())).catch(() => '');
  const turn = metrics.split('\n').filter((l) => l.startsWith('parvis_turn') && !l.endsWith(' 0')).join('; ');
  throw new Error(`media not flowing to ${who}: ${last}\nTURN: ${turn}`);
}

