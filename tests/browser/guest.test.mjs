// Guests by link, in a real browser: a room owner makes a link from the
// room's settings, a customer with no account opens it in a fresh browser,
// gives a name and lands in that one room (no room list, the API refuses
// the others); both sides chat, the guest is badged; a reload keeps the
// guest the same guest; revoking with removal ends the guest's session.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Server, launch, team, waitConnected } from './lib.mjs';

const OUT = join(import.meta.dirname, 'out');
mkdirSync(OUT, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(OUT, name + '.png') });

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('a customer joins one room by a guest link, chats, reloads as the same guest, and is removed when the link is revoked', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice']);
    const alice = people.alice.page;
    await alice.setViewportSize({ width: 1280, height: 800 });
    const support = await api.call('POST', '/rooms', { name: 'Support', visibility: 'invite', topic: 'Helping ACME' });
    await alice.waitForSelector('#room-list a.room:has-text("Support")');
    await alice.click('#room-list a.room:has-text("Support")');

    // Room settings → Invite a guest: a link, shown once
    await alice.click('#room-settings-btn');
    await alice.click('#invite-guest');
    await alice.fill('input[name=label]', 'ACME support');
    await alice.click('button:text("Create the link")');
    const url = await (await alice.waitForSelector('#guest-link-url')).inputValue();
    assert.match(url, /\/g\/[A-Za-z0-9_-]{20,}$/);
    // this box has only its own CA: the owner is told a guest outside would meet a certificate warning
    assert.match(await alice.textContent('#guest-link-out [data-warning=local_certificate]'), /security warning/);
    await alice.waitForSelector('#guest-links li[data-link]');
    assert.match(await alice.textContent('#guest-links'), /ACME support.*0 joined/s);
    await shot(alice, 'guest-links-desktop');
    await alice.keyboard.press('Escape');

    // the customer: a browser of their own, no account
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
    const guest = await ctx.newPage();
    guest.on('pageerror', (e) => { guest.errors = [...(guest.errors || []), e.message]; });
    await guest.setViewportSize({ width: 390, height: 780 });
    await guest.goto(url);
    await guest.waitForSelector('#guest-form');
    assert.match(await guest.textContent('h1'), /Join Acme as a guest/);
    await shot(guest, 'guest-join-phone');
    // a member's name is refused, plainly
    await guest.fill('input[name=display_name]', 'alice');
    await guest.click('button[type=submit]');
    await guest.waitForSelector('.form-error:not(:empty)');
    assert.match(await guest.textContent('.form-error'), /member/);
    await guest.fill('input[name=display_name]', 'Claire Dupont');
    await guest.click('button[type=submit]');
    await guest.waitForSelector('#composer-input');
    await waitConnected(guest);
    assert.equal(await guest.locator('#room-list').count(), 0, 'a guest has no room list');
    assert.equal(await guest.textContent('#room-title'), 'Support');
    const me = await guest.evaluate(() => window.parvis.state.me);
    assert.equal(me.role, 'guest');
    // the API refuses everything else
    const refused = await guest.evaluate(async () => {
      const csrf = window.parvis.conn.csrf;
      const r1 = await fetch('/api/rooms/browse');
      const r2 = await fetch('/api/rooms', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"x","visibility":"open"}' });
      return [r1.status, r2.status, csrf === undefined];
    });
    assert.deepEqual(refused.slice(0, 2), [403, 403]);

    // both ways, and the guest is badged on the member's side
    await guest.fill('#composer-input', 'Hello, my printer is on fire');
    await guest.keyboard.press('Enter');
    const theirs = alice.locator('.msg:has-text("my printer is on fire")');
    await theirs.waitFor();
    assert.match(await theirs.locator('header').textContent(), /Claire Dupont\s*guest/);
    await alice.fill('#composer-input', 'Hi Claire, let us look at it together');
    await alice.keyboard.press('Enter');
    await guest.locator('.msg:has-text("let us look at it together")').waitFor();
    await shot(guest, 'guest-chat-phone');
    await guest.setViewportSize({ width: 1280, height: 800 });
    await shot(guest, 'guest-chat-desktop');

    // a reload: the same guest, its history since it came
    await guest.reload();
    await guest.waitForSelector('#composer-input');
    await waitConnected(guest);
    assert.equal(await guest.evaluate(() => window.parvis.state.me.id), me.id, 'the same guest after a reload');
    await guest.locator('.msg:has-text("my printer is on fire")').waitFor();

    // revoked with its guests: the guest is told, and is out
    const links = await api.call('GET', `/rooms/${support.id}/guest-links`);
    assert.equal(links[0].uses, 1);
    await api.call('DELETE', `/rooms/${support.id}/guest-links/${links[0].id}?remove_guests=true`);
    await guest.waitForSelector('h1:text("This guest link was ended")', { timeout: 15000 });
    await shot(guest, 'guest-ended-desktop');
    const after = await guest.evaluate(async () => (await fetch('/api/me')).status);
    assert.equal(after, 401);
    assert.deepEqual(guest.errors || [], []);
    await ctx.close();
  } finally {
    server.kill9();
  }
});
