// Guests by link, in a real browser: a room owner makes a link from the
// room's settings, a customer with no account opens it in a fresh browser,
// gives a name and lands in that one room (no room list, the API refuses
// the others); both sides chat, the guest is badged; a reload keeps the
// guest the same guest; revoking with removal ends the guest's session.
// Then remote support: "Call with a customer" from a direct conversation,
// the customer knocks, waits seeing nothing, is admitted, lands in the
// call's pre-join, joins through the relay and shares its screen, which the
// member receives decoded. Calls need a non-loopback interface: run through
// tests/browser/in-netns (scripts/test does).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Server, flowing, launch, team, waitConnected } from './lib.mjs';

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
    // an open link (the waiting room is the default; the next test takes it)
    await alice.uncheck('input[name=knock]');
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
    // the guest allows notifications: they are recorded
    await ctx.grantPermissions(['notifications'], { origin: server.url });
    await ctx.addInitScript(() => {
      window.__notes = [];
      const Real = window.Notification;
      window.Notification = class extends Real {
        constructor(title, opts) { super(title, opts); window.__notes.push({ title, body: opts?.body }); }
      };
      if (window.ServiceWorkerRegistration) {
        ServiceWorkerRegistration.prototype.showNotification = function (title, opts) {
          window.__notes.push({ title, body: opts?.body });
          return Promise.resolve();
        };
      }
    });
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
    // the guest's tab in the background: a message of its room is notified
    await guest.evaluate(() => Object.defineProperty(document, 'hidden', { value: true, configurable: true }));
    await alice.fill('#composer-input', 'I sent you the manual');
    await alice.keyboard.press('Enter');
    await guest.waitForFunction(() => window.__notes.some((n) => n.body === 'I sent you the manual'));
    assert.match((await guest.evaluate(() => window.__notes.at(-1))).title, /Alice · Support/);
    await guest.evaluate(() => Object.defineProperty(document, 'hidden', { value: false, configurable: true }));
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

test('call with a customer: a knock link from a direct conversation, the waiting room, admitted into the call, the guest shares its screen', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    const alice = people.alice.page;
    await alice.setViewportSize({ width: 1280, height: 800 });
    // from the direct conversation with Bob: the call gets a room of its own
    const bobId = await people.bob.page.evaluate(() => window.parvis.state.me.id);
    const dm = await api.call('POST', '/direct', { user: bobId });
    await alice.waitForSelector(`#room-list a.room[href="#room=${dm.id}"]`);
    await alice.click(`#room-list a.room[href="#room=${dm.id}"]`);
    await alice.evaluate(() => { window.parvis.calls.forceRelay = true; });
    await alice.click('#customer-call-btn');
    await alice.waitForSelector('#customer-call-dialog svg.qr');
    const url = await alice.inputValue('#guest-link-url');
    assert.match(url, /\/g\/[A-Za-z0-9_-]{20,}$/);
    await alice.waitForSelector('#call-dock');
    assert.equal(await alice.textContent('#room-title'), 'Customer call');
    await shot(alice, 'customer-call-link-desktop');
    // the dialog stays open while she waits: the alert must still be clickable
    await people.bob.page.waitForSelector('#room-list a.room:has-text("Customer call")');

    // the customer knocks and waits, seeing nothing of the room
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
    const guest = await ctx.newPage();
    guest.on('pageerror', (e) => { guest.errors = [...(guest.errors || []), e.message]; });
    await guest.setViewportSize({ width: 390, height: 780 });
    await guest.goto(url);
    await guest.fill('input[name=display_name]', 'Dana (ACME)');
    await guest.click('button[type=submit]');
    await guest.waitForSelector('#guest-waiting');
    assert.equal(await guest.locator('#composer-input, #messages, #room-list').count(), 0, 'nothing of the room');
    const waitingApi = await guest.evaluate(async () => [(await fetch('/api/rooms')).status, (await fetch('/api/ice')).status, (await fetch('/api/me')).status]);
    assert.deepEqual(waitingApi, [403, 403, 200], 'a waiting guest gets no rooms and no TURN credentials');
    await shot(guest, 'guest-waiting-phone');
    // a reload waits again, as the same guest
    await guest.reload();
    await guest.waitForSelector('#guest-waiting');

    // the moderator is alerted wherever she is; nobody else is
    const card = alice.locator('#knocks .knock li', { hasText: 'Dana (ACME)' });
    await card.waitFor();
    await shot(alice, 'knock-alert-desktop');
    await alice.setViewportSize({ width: 390, height: 780 });
    await shot(alice, 'knock-alert-phone');
    await alice.setViewportSize({ width: 1280, height: 800 });
    assert.equal(await people.bob.page.locator('#knocks .knock').count(), 0, 'Bob is no moderator of the new room');
    assert.equal(await alice.locator('#customer-call-dialog #knocks').count(), 1, 'the alert rides in the open dialog');
    await card.locator('button.admit').click();
    await alice.waitForSelector('#knocks', { state: 'hidden' });
    await alice.keyboard.press('Escape');
    // the trail, for the moderator
    await alice.locator('.sys.audit[data-action=admitted]').waitFor();
    assert.match(await alice.textContent('#messages'), /Alice let Dana \(ACME\) in/);

    // admitted: the guest lands in the call's pre-join, joins, and shares its screen
    await guest.waitForSelector('#call-prejoin');
    await guest.evaluate(() => { window.parvis.calls.forceRelay = true; });
    await shot(guest, 'guest-prejoin-phone');
    await guest.click('#call-prejoin-join');
    await guest.waitForSelector('#call-dock');
    assert.equal(await guest.locator('#room-list').count(), 0, 'still one room');
    await flowing(guest, 1);
    await flowing(alice, 1);
    await guest.click('#call-share');
    await flowing(alice, 1, { screen: true });
    await shot(guest, 'guest-call-phone');
    await shot(alice, 'guest-screen-desktop');
    // the guest's composer stays usable beside the call
    await guest.fill('#composer-input', 'Can you see my screen?');
    await guest.keyboard.press('Enter');
    await alice.locator('.msg:has-text("Can you see my screen?")').waitFor();
    const other = await guest.evaluate(async (id) => (await fetch(`/api/rooms/${id}/messages`)).status, dm.id);
    assert.equal(other, 403, 'the direct conversation is not the guest\'s');
    assert.deepEqual(guest.errors || [], []);
    await ctx.close();
  } finally {
    server.kill9();
  }
});
