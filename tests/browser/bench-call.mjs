// Call benchmark (not a test; scripts/bench-call runs it in a private
// network namespace): time from the "Join" click to the first decoded remote
// video frame, relay only, over 10 joins; then the CPU and RSS of the relay
// during a 4-person call relayed by Parvis, and by coturn 4.6 in the same run.
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { Server, launch, team, freePort } from './lib.mjs';

const JOINS = Number(process.env.JOINS || 10);
const CALL_SECONDS = Number(process.env.CALL_SECONDS || 20);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICK = 100; // Linux clock ticks per second

function proc(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(/\s+/);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  return { cpu: (Number(stat[11]) + Number(stat[12])) / TICK, rssMiB: rss / 1024 };
}

async function join(page, waitFrame = true) {
  await page.evaluate(() => { window.parvis.calls.forceRelay = true; });
  await page.click('#call-btn');
  await page.waitForSelector('#call-prejoin-join');
  // Clicked from inside the page so the clock starts at the click itself.
  return page.evaluate((wait) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    document.getElementById('call-prejoin-join').click();
    if (!wait) { resolve(0); return; }
    const poll = async () => {
      const stats = await window.parvis.calls.stats();
      if (stats.some((s) => s.video.some((v) => v.frames > 0))) { resolve(performance.now() - t0); return; }
      if (performance.now() - t0 > 20000) { reject(new Error('no frame in 20 s')); return; }
      setTimeout(poll, 10);
    };
    poll();
  }), waitFrame);
}

async function leave(page) {
  await page.click('#call-leave');
  await page.waitForSelector('#call-dock', { state: 'detached' });
}

/** Video frames decoded so far by everyone (the call is really flowing). */
async function totalFrames(people) {
  let n = 0;
  for (const p of people) {
    const stats = await p.page.evaluate(() => window.parvis.calls.stats());
    for (const s of stats) for (const v of s.video) n += v.frames;
  }
  return n;
}

/** coturn 4.6 with the box's REST secret, relaying on the namespace's address. */
async function startCoturn(server) {
  const port = await freePort();
  const secret = readFileSync(`${server.data}/turn-secret`, 'utf8').trim();
  const proc = spawn('turnserver', ['-n', '--no-cli', '--no-tls', '--no-dtls', '--listening-ip', '10.99.0.1',
    '--listening-port', String(port), '--relay-ip', '10.99.0.1', '--min-port', '52000', '--max-port', '52999',
    '--use-auth-secret', '--static-auth-secret', secret, '--realm', 'bench', '--log-file', '/dev/null', '--simple-log'],
  { stdio: 'ignore' });
  await sleep(1000);
  return { proc, port };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };

const browser = await launch();
const server = await Server.start();
try {
  const { api, people } = await team(browser, server, ['alice', 'bob', 'carol', 'dave']);
  const { alice, ...rest } = people;
  const others = Object.values(rest);

  // 1. join → first decoded remote frame (Alice waits in the call)
  await join(alice.page, false);
  const times = [];
  for (let i = 0; i < JOINS; i++) {
    times.push(await join(others[0].page));
    process.stderr.write(`join ${i + 1}: ${Math.round(times[i])} ms\n`);
    await leave(others[0].page);
    await sleep(300);
  }
  console.log(JSON.stringify({ bench: 'join_to_first_frame_ms', n: times.length, p50: Math.round(median(times)),
    p90: Math.round(pct(times, 0.9)), min: Math.round(Math.min(...times)), max: Math.round(Math.max(...times)), target_p50: 1500 }));
  await leave(alice.page);

  // 2. the same 4-person call relayed by Parvis's TURN, then by coturn
  // (the peer, same run, same browsers, same credentials: coturn is given
  // the box's REST secret); CPU and RSS of the relaying process.
  const parvisPid = server.proc.pid;
  const idle0 = proc(parvisPid);
  await sleep(5000);
  const idle = { cpu: (proc(parvisPid).cpu - idle0.cpu) / 5, rssMiB: proc(parvisPid).rssMiB };
  const everyone = [alice, ...others];
  const measure = async (label, relayPid, turnUrl) => {
    for (const p of everyone) {
      await p.page.evaluate(async (url) => {
        const calls = window.parvis.calls;
        if (!url) { calls.iceOverride = null; return; }
        const ice = await fetch('/api/ice').then((r) => r.json());
        calls.iceOverride = { iceServers: [{ urls: [url], username: ice.iceServers[1].username, credential: ice.iceServers[1].credential }] };
      }, turnUrl);
    }
    await join(alice.page, false);
    for (const p of others) await join(p.page);
    await sleep(5000); // let bitrates ramp up
    const a = proc(relayPid);
    const frames0 = await totalFrames(everyone);
    await sleep(CALL_SECONDS * 1000);
    const b = proc(relayPid);
    const frames = (await totalFrames(everyone)) - frames0;
    for (const p of everyone) await leave(p.page);
    const r = { relay: label, cpu_percent: +((b.cpu - a.cpu) / CALL_SECONDS * 100).toFixed(2), rss_mib: +b.rssMiB.toFixed(1),
      frames_decoded_per_s: Math.round(frames / CALL_SECONDS) };
    console.log(JSON.stringify({ bench: 'four_person_relayed_call', seconds: CALL_SECONDS, streams: 12, ...r }));
    return r;
  };
  const ours = await measure('parvis', parvisPid, null);
  const coturn = await startCoturn(server);
  try {
    const theirs = await measure('coturn', coturn.proc.pid, `turn:10.99.0.1:${coturn.port}?transport=udp`);
    console.log(JSON.stringify({ bench: 'four_person_relayed_call_ratios', idle_parvis_cpu_percent: +(idle.cpu * 100).toFixed(2),
      idle_parvis_rss_mib: +idle.rssMiB.toFixed(1), parvis: ours, coturn: theirs,
      coturn_over_parvis_cpu: +(theirs.cpu_percent / ours.cpu_percent).toFixed(2),
      coturn_over_parvis_rss: +(theirs.rss_mib / ours.rss_mib).toFixed(2) }));
  } finally {
    coturn.proc.kill('SIGKILL');
  }
  await api.dispose();
} finally {
  server.kill9();
  await browser.close();
}
