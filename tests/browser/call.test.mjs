// Calls in real browsers through Parvis's own TURN (relay only), with fake
// camera, microphone and screen. Chromium gathers no ICE candidates with
// loopback alone: run this inside a network namespace with a veth pair
// (tests/browser/in-netns does that; scripts/test uses it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { Server, flowing, launch, openRoomByName, stats, team, trustingBrowser, waitConnected } from './lib.mjs';

let browser;
before(async () => {
  const external = Object.values(networkInterfaces()).flat().some((i) => !i.internal && i.family === 'IPv4');
  assert.ok(external, 'no non-loopback interface: run through tests/browser/in-netns');
  browser = await launch();
});
after(async () => { await browser?.close(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function joinCall(page) {
  await page.evaluate(() => { window.parvis.calls.forceRelay = true; });
  await page.click('#call-btn');
  await page.click('#call-prejoin-join');
  await page.waitForSelector('#call-dock');
}

test('three people in a relayed call: media both ways, screen sharing, chatting elsewhere, a dropped socket, a restart', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob', 'carol']);
    const { alice, bob, carol } = people;
    await joinCall(alice.page);
    // the others see the call in progress and join from the room
    await bob.page.waitForSelector('#call-banner:not([hidden])');
    await joinCall(bob.page);
    await joinCall(carol.page);
    for (const p of [alice, bob, carol]) await flowing(p.page, 2);

    // screen sharing reaches both others as a large decoded track
    await alice.page.click('#call-share');
    await flowing(bob.page, 2, { screen: true });
    await flowing(carol.page, 2, { screen: true });

    // Bob reads and writes in another room; the call keeps flowing
    const side = await api.call('POST', '/rooms', { name: 'Side', topic: '', visibility: 'invite', members: [] });
    const bobId = await bob.page.evaluate(() => window.parvis.state.me.id);
    await api.call('POST', `/rooms/${side.id}/members`, { user: bobId });
    await bob.page.waitForSelector('#room-list a.room:has-text("Side")');
    await openRoomByName(bob.page, 'Side');
    await bob.page.fill('#composer-input', 'writing while in the call');
    await bob.page.keyboard.press('Enter');
    await bob.page.locator('.msg:not(.pending) .body', { hasText: 'writing while in the call' }).waitFor();
    assert.equal(await bob.page.locator('#call-dock').count(), 1, 'the dock survives navigation');
    await flowing(bob.page, 2);
    await flowing(alice.page, 2);

    // Carol's WebSocket drops: media goes on, signaling comes back
    await carol.page.evaluate(() => window.parvis.conn.drop());
    await flowing(carol.page, 2);
    await carol.page.waitForFunction(() => window.parvis.conn.state === 'connected');
    await carol.page.click('#call-hand');
    await alice.page.waitForSelector('#call-tiles .tile .badge.hand');
    const away = await alice.page.evaluate(() => window.parvis.calls.active.participants.filter((p) => p.away).length);
    assert.equal(away, 0);

    // The server restarts (TURN with it): calls come back by themselves, no reload
    const marker = await alice.page.evaluate(() => (window.marker = 1));
    await server.restart();
    for (const p of [alice, bob, carol]) await flowing(p.page, 2, { timeout: 60000 });
    assert.equal(await alice.page.evaluate(() => window.marker), marker, 'no page reload');
    assert.equal(await alice.page.locator('#call-dock').count(), 1);

    // leaving: the last one out ends the call and the room records it
    for (const p of [alice, bob, carol]) await p.page.click('#call-leave');
    await openRoomByName(alice.page, 'General');
    await alice.page.locator('.call-record', { hasText: 'Call ended' }).waitFor();
    // Everyone knows it ended (the restarted server's frames are not taken
    // for old ones): no call banner left behind.
    for (const p of [alice, bob, carol]) await p.page.waitForFunction(() => window.parvis.calls.rooms.size === 0, null, { timeout: 10000 });
    assert.equal(await alice.page.locator('#call-banner:not([hidden])').count(), 0);
    for (const p of [alice, bob, carol]) assert.deepEqual(p.page.errors || [], []);
    await api.dispose();
  } finally {
    server.kill9();
  }
});

// TURN credentials of one minute and allocations of two: a relayed call
// held for three minutes must outlive both (its allocations are refreshed
// with the credentials they were made with; the page keeps fresh ones for
// new allocations).
test('a relayed call lasts longer than its TURN credentials', async () => {
  const server = await Server.start({ toml: '[turn]\ncredential_ttl_secs = 60\nallocation_lifetime_secs = 120\n' });
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    const { alice, bob } = people;
    const ttl = await alice.page.evaluate(() => fetch('/api/ice').then((r) => r.json()).then((v) => v.ttl));
    assert.equal(ttl, 60);
    await joinCall(alice.page);
    await bob.page.waitForSelector('#call-banner:not([hidden])');
    await joinCall(bob.page);
    for (const p of [alice, bob]) await flowing(p.page, 1);
    const relays = async (page) => (await stats(page)).map((s) => `${s.pid} ${s.pair} ${s.local?.address}`).sort().join(', ');
    const allocations = async () => {
      const m = await alice.page.evaluate(() => fetch('/metrics').then((r) => r.text()));
      return Number(m.split('\n').find((l) => l.startsWith('parvis_turn_allocations_created_total '))?.split(' ')[1]);
    };
    const before = { alice: await relays(alice.page), bob: await relays(bob.page), created: await allocations() };
    const started = Date.now();
    while (Date.now() - started < 180_000) {
      for (const p of [alice, bob]) await flowing(p.page, 1, { timeout: 15000 });
      await sleep(20000);
    }
    for (const p of [alice, bob]) await flowing(p.page, 1, { timeout: 15000 });
    // the same relayed path all along: no allocation was lost and redone,
    // no ICE restart (each would have broken the media for a moment)
    assert.equal(await relays(alice.page), before.alice);
    assert.equal(await relays(bob.page), before.bob);
    assert.equal(await allocations(), before.created, 'no new TURN allocation in three minutes');
    for (const p of [alice, bob]) assert.deepEqual(p.page.errors || [], []);
    await api.dispose();
  } finally {
    server.kill9();
  }
});

test('a direct call rings the other person, who can decline or accept', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    const { alice, bob } = people;
    const bobId = await bob.page.evaluate(() => window.parvis.state.me.id);
    await api.call('POST', '/direct', { user: bobId });
    await alice.page.reload();
    await alice.page.waitForSelector('#room-list a.room:has-text("Bob")');
    await openRoomByName(alice.page, 'Bob');
    await joinCall(alice.page);
    await bob.page.waitForSelector('#call-ring');
    // the caller sees it ring; the person called sees who calls
    await alice.page.waitForFunction(() => document.getElementById('call-status')?.textContent === 'Ringing…');
    assert.equal(await bob.page.textContent('#call-ring .avatar'), 'A');
    await bob.page.click('#call-decline');
    await alice.page.waitForSelector('#call-dock', { state: 'detached' });
    await alice.page.locator('.call-record', { hasText: 'declined' }).waitFor();

    await joinCall(alice.page);
    await bob.page.click('#call-accept');
    await bob.page.waitForSelector('#call-dock');
    await alice.page.waitForFunction(() => document.getElementById('call-status')?.textContent === '2 in the call');
    await flowing(bob.page, 1);
    await flowing(alice.page, 1);
    await api.dispose();
  } finally {
    server.kill9();
  }
});

test('a call that ended while someone was offline is gone when they reconnect', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    const { alice, bob } = people;
    await joinCall(alice.page);
    await bob.page.waitForSelector('#call-banner:not([hidden])');
    // Bob's network goes away (a laptop lid closed) ...
    await bob.page.evaluate(() => { const c = window.parvis.conn; c.stopped = true; c.ws.close(); });
    // ... the call ends meanwhile ...
    await alice.page.click('#call-leave');
    await alice.page.locator('.call-record', { hasText: 'Call ended' }).waitFor();
    // ... and comes back: no banner inviting him into a call that is over.
    await bob.page.evaluate(() => { const c = window.parvis.conn; c.stopped = false; c.reconnectNow(); });
    await waitConnected(bob.page);
    await bob.page.locator('.call-record', { hasText: 'Call ended' }).waitFor();
    await bob.page.waitForFunction(() => !document.querySelector('#call-banner:not([hidden])'), null, { timeout: 5000 });
    assert.equal(await bob.page.evaluate(() => window.parvis.calls.rooms.size), 0);
    await api.dispose();
  } finally {
    server.kill9();
  }
});

function nft(rules) {
  execFileSync('nft', ['-f', '-'], { input: rules });
}

test('TURN over TLS on the HTTPS port alone carries the call when UDP and the TURN ports are blocked', async () => {
  const server = await Server.start();
  const table = 'parvis_call_test';
  // A browser that trusts the box's CA as an installed CA (TURN over TLS
  // verifies the certificate; no error-ignoring flag).
  const trusting = await trustingBrowser(server);
  try {
    const { api, people } = await team(trusting, server, ['alice', 'bob']);
    const { alice, bob } = people;
    // The firewall refuses UDP and the TURN ports: only the HTTPS port is open.
    nft(`table inet ${table} {
      chain out {
        type filter hook output priority 0;
        udp dport ${server.turnPort} reject
        tcp dport { ${server.turnPort}, ${server.turnTlsPort} } reject
      }
    }`);
    await joinCall(alice.page);
    await joinCall(bob.page);
    await flowing(alice.page, 1, { protocol: 'tls' });
    await flowing(bob.page, 1, { protocol: 'tls' });
    for (const p of [alice, bob]) await p.page.click('#call-leave');
    // TURN over TCP when only UDP is refused
    nft(`delete table inet ${table}
    table inet ${table} {
      chain out {
        type filter hook output priority 0;
        udp dport ${server.turnPort} reject
      }
    }`);
    await joinCall(alice.page);
    await joinCall(bob.page);
    await flowing(alice.page, 1, { protocol: 'tcp' });
    await api.dispose();
  } finally {
    try { nft(`delete table inet ${table}`); } catch { /* not created */ }
    await trusting.close();
    server.kill9();
  }
});

test('someone outside the room can neither join its call nor see its signaling', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob', 'eve']);
    const { alice, bob, eve } = people;
    const bobId = await bob.page.evaluate(() => window.parvis.state.me.id);
    const room = await api.call('POST', '/rooms', { name: 'Board', topic: '', visibility: 'invite', members: [bobId] });
    await alice.page.waitForSelector('#room-list a.room:has-text("Board")');
    await openRoomByName(alice.page, 'Board');
    await joinCall(alice.page);
    await bob.page.waitForSelector('#room-list a.room:has-text("Board")');
    await openRoomByName(bob.page, 'Board');
    await joinCall(bob.page);
    await flowing(bob.page, 1);
    const seen = await eve.page.evaluate((room) => new Promise((resolve) => {
      const frames = [];
      const conn = window.parvis.conn;
      const orig = conn.onFrame;
      conn.onFrame = (f) => { frames.push(f); orig(f); };
      conn.raw({ t: 'call_join', room, pid: 'eve1' });
      conn.raw({ t: 'call_signal', room, to: 'x', data: { candidate: null } });
      setTimeout(() => resolve(frames), 1500);
    }), room.id);
    const errors = seen.filter((f) => f.t === 'error').map((f) => f.code);
    assert.deepEqual(errors, ['not_member', 'not_in_call']);
    assert.equal(seen.filter((f) => f.t.startsWith('call')).length, 0, JSON.stringify(seen));
    assert.equal(await eve.page.evaluate(() => window.parvis.calls.rooms.size), 0);
    await api.dispose();
  } finally {
    server.kill9();
  }
});
