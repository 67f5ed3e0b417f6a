// Call benchmark (not a test; scripts/bench-call runs it in a private
// network namespace): time from the "Join" click to the first decoded remote
// video frame, relay only, over 10 joins; then CPU and RSS of parvis during
// a 4-person relayed call, against the same call's idle baseline.
import { readFileSync } from 'node:fs';
import { Server, launch, team } from './lib.mjs';

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

  // 2. a 4-person relayed call: parvis CPU and RSS (idle baseline first)
  const pid = server.proc.pid;
  const idle0 = proc(pid);
  await sleep(5000);
  const idle1 = proc(pid);
  await join(alice.page, false);
  for (const p of others) await join(p.page);
  await sleep(5000); // let bitrates ramp up
  const a = proc(pid);
  const m0 = await alice.page.evaluate(() => fetch('/metrics').then((r) => r.text()));
  await sleep(CALL_SECONDS * 1000);
  const b = proc(pid);
  const m1 = await alice.page.evaluate(() => fetch('/metrics').then((r) => r.text()));
  const counter = (m, name) => Number((new RegExp(`^${name} (\\d+)`, 'm').exec(m) || [0, 0])[1]);
  const pkts = counter(m1, 'parvis_turn_packets_total\\{direction="in_process"\\}') - counter(m0, 'parvis_turn_packets_total\\{direction="in_process"\\}');
  const bytes = counter(m1, 'parvis_turn_bytes_total\\{direction="to_client"\\}') - counter(m0, 'parvis_turn_bytes_total\\{direction="to_client"\\}');
  const cpuCall = (b.cpu - a.cpu) / CALL_SECONDS;
  const cpuIdle = (idle1.cpu - idle0.cpu) / 5;
  console.log(JSON.stringify({
    bench: 'four_person_relayed_call', seconds: CALL_SECONDS, streams: 12,
    parvis_cpu_percent: +(cpuCall * 100).toFixed(1), idle_cpu_percent: +(cpuIdle * 100).toFixed(1),
    parvis_rss_mib: +b.rssMiB.toFixed(1), idle_rss_mib: +idle1.rssMiB.toFixed(1),
    relayed_packets_per_s: Math.round(pkts / CALL_SECONDS), relayed_mbit_per_s: +(bytes * 8 / CALL_SECONDS / 1e6).toFixed(2),
    cpu_us_per_packet: pkts ? +((b.cpu - a.cpu) * 1e6 / pkts).toFixed(1) : null,
  }));
  for (const p of [alice, ...others]) await leave(p.page);
  await api.dispose();
} finally {
  server.kill9();
  await browser.close();
}
