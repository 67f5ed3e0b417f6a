// The chat in a real browser: the behaviours users complained about
// elsewhere (lost messages, no scroll to the newest, page reloads).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launch, loggedIn, waitConnected, sendVia, openRoomByName } from './lib.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('two people chat: formatting, links, no HTML injection, no duplicate', async () => {
  const server = await Server.start();
  try {
    // (claiming the box through the wizard is wizard.test.mjs)
    const api = await server.setupAdmin();
    await api.call('POST', '/users', { username: 'bob', display_name: 'Bob', password: 'password-2' });
    const alice = await loggedIn(browser, server, 'alice', 'password-1');
    const { page } = alice;
    const ctx = alice.context;
    assert.equal(await page.textContent('#room-title'), 'General');
    const bob = await loggedIn(browser, server, 'bob', 'password-2');
    assert.equal(await bob.page.textContent('#room-title'), 'General');

    await page.fill('#composer-input', 'Hello **Bob**, see https://example.org/doc.');
    await page.keyboard.press('Enter');
    const msg = bob.page.locator('.msg .body', { hasText: 'Hello Bob' });
    await msg.waitFor();
    assert.equal(await msg.locator('strong').textContent(), 'Bob');
    assert.equal(await msg.locator('a').getAttribute('href'), 'https://example.org/doc');
    assert.equal(await msg.locator('a').getAttribute('rel'), 'noopener noreferrer nofollow');

    await bob.page.fill('#composer-input', 'Hi Alice <img src=x onerror="window.pwned=1">');
    await bob.page.keyboard.press('Enter');
    await page.locator('.msg .body', { hasText: 'Hi Alice' }).waitFor();
    assert.equal(await page.locator('.messages img').count(), 0, 'HTML from a sender is never markup');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.match(await page.locator('.msg .body', { hasText: 'Hi Alice' }).textContent(), /<img src=x onerror=/);
    // the sender's pending copy became the committed message: no duplicate
    await page.waitForFunction(() => !document.querySelector('.msg.pending'));
    assert.equal(await page.locator('.msg .body', { hasText: 'Hello Bob' }).count(), 1);
    assert.deepEqual(page.errors || [], []);
    await api.dispose();
    await bob.context.close();
    await ctx.close();
  } finally {
    server.kill9();
  }
});

test('scrolling: stay at the bottom, never jump when scrolled up, unread divider', async () => {
  const server = await Server.start();
  try {
    const api = await server.setupAdmin();
    const bobUser = await api.call('POST', '/users', { username: 'bob', display_name: 'Bob', password: 'password-2' });
    const other = await api.call('POST', '/rooms', { name: 'Other', visibility: 'invite', members: [bobUser.id] });
    const alice = await loggedIn(browser, server, 'alice', 'password-1');
    const general = await alice.page.evaluate(() => [...window.parvis.state.rooms.values()].find((r) => r.name === 'General').id);
    const bob = await loggedIn(browser, server, 'bob', 'password-2', { viewport: { width: 1000, height: 600 } });
    await openRoomByName(bob.page, 'General');
    const box = bob.page.locator('#messages');
    const gap = () => box.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
    // 60 messages arrive while Bob reads at the bottom: he follows them
    for (let i = 0; i < 60; i++) await sendVia(alice.page, general, `history line ${i}\nwith a second line`);
    await bob.page.locator('.msg .body', { hasText: 'history line 59' }).waitFor();
    await bob.page.waitForTimeout(100);
    assert.ok(await gap() <= 40, 'followed the newest message');
    assert.ok(await box.evaluate((el) => el.scrollHeight > el.clientHeight * 2), 'the list really scrolls');

    // at the bottom, new messages keep you there
    await sendVia(alice.page, general, 'live 1');
    await bob.page.locator('.msg .body', { hasText: 'live 1' }).waitFor();
    await bob.page.waitForTimeout(100);
    assert.ok(await gap() <= 40, 'still at the bottom');
    assert.equal(await bob.page.isVisible('#jump'), false);

    // scrolled up: nothing moves, a button counts what arrived
    await box.evaluate((el) => { el.scrollTop = 200; });
    await bob.page.waitForTimeout(300); // a top-of-list history load may run; let it settle
    const top = await box.evaluate((el) => el.scrollTop);
    const anchor = await bob.page.evaluate(() => {
      const box = document.getElementById('messages');
      const first = [...box.querySelectorAll('.msg')].find((m) => m.getBoundingClientRect().top >= box.getBoundingClientRect().top);
      return { seq: first.dataset.seq, y: first.getBoundingClientRect().top };
    });
    for (const n of [2, 3, 4]) await sendVia(alice.page, general, `live ${n}`);
    await bob.page.locator('#jump').waitFor();
    assert.match(await bob.page.textContent('#jump'), /^3 new/);
    assert.equal(await box.evaluate((el) => el.scrollTop), top, 'scroll position unchanged');
    const y = await bob.page.evaluate((seq) => document.querySelector(`.msg[data-seq="${seq}"]`).getBoundingClientRect().top, anchor.seq);
    assert.equal(y, anchor.y, 'what you were reading did not move');
    await bob.page.click('#jump');
    await bob.page.waitForFunction(() => document.getElementById('jump').hidden);
    await bob.page.waitForFunction(() => {
      const el = document.getElementById('messages');
      return el.scrollHeight - el.scrollTop - el.clientHeight <= 40;
    });

    // away in another room: unread badge, then a divider where you left off
    await openRoomByName(bob.page, 'Other');
    await sendVia(alice.page, general, 'while you were away 1');
    await sendVia(alice.page, general, 'while you were away 2');
    const badge = bob.page.locator('#room-list a.room:has-text("General") .badge');
    await badge.waitFor();
    assert.equal(await badge.textContent(), '2');
    await openRoomByName(bob.page, 'General');
    const after = await bob.page.evaluate(() => {
      const d = document.querySelector('#messages .divider');
      let n = d?.nextElementSibling;
      while (n && !n.classList.contains('msg')) n = n.nextElementSibling;
      return n?.querySelector('.body')?.textContent;
    });
    assert.equal(after, 'while you were away 1', 'the divider sits before the first unread message');
    await bob.page.waitForFunction(() => !document.querySelector('#room-list .badge'), null, { timeout: 5000 });
    assert.equal(other.name, 'Other');
    await api.dispose();
  } finally {
    server.kill9();
  }
});

test('the server restarts: no page reload, the draft stays, queued messages are delivered', async () => {
  const server = await Server.start();
  try {
    const api = await server.setupAdmin();
    await api.call('POST', '/users', { username: 'bob', display_name: 'Bob', password: 'password-2' });
    const alice = await loggedIn(browser, server, 'alice', 'password-1');
    const bob = await loggedIn(browser, server, 'bob', 'password-2');
    await bob.page.evaluate(() => { window.__noReload = 'still here'; });
    let reloads = 0;
    bob.page.on('framenavigated', (f) => { if (f === bob.page.mainFrame()) reloads += 1; });

    server.kill9();
    await bob.page.waitForFunction(() => ['reconnecting', 'offline'].includes(window.parvis.conn.state));
    assert.match(await bob.page.textContent('#conn-state'), /Reconnecting|Offline/);
    assert.equal(await bob.page.isVisible('#offline-banner'), true, 'the UI says so honestly');
    // written while the server is down: queued, shown as pending
    await bob.page.fill('#composer-input', 'sent while offline');
    await bob.page.keyboard.press('Enter');
    await bob.page.locator('.msg.pending', { hasText: 'sent while offline' }).waitFor();
    await bob.page.fill('#composer-input', 'a draft in progress');

    await server.restart();
    await waitConnected(bob.page, 30000);
    await waitConnected(alice.page, 30000);
    assert.equal(await bob.page.evaluate(() => window.__noReload), 'still here');
    assert.equal(reloads, 0, 'no navigation happened');
    assert.equal(await bob.page.inputValue('#composer-input'), 'a draft in progress');
    await alice.page.locator('.msg .body', { hasText: 'sent while offline' }).waitFor();
    await bob.page.waitForFunction(() => !document.querySelector('.msg.pending'));

    await alice.page.fill('#composer-input', 'welcome back');
    await alice.page.keyboard.press('Enter');
    await bob.page.locator('.msg .body', { hasText: 'welcome back' }).waitFor();
    await api.dispose();
  } finally {
    server.kill9();
  }
});

test('notifications for rooms not in view and for mentions', async () => {
  const server = await Server.start();
  try {
    const api = await server.setupAdmin();
    const bobUser = await api.call('POST', '/users', { username: 'bob', display_name: 'Bob', password: 'password-2' });
    await api.call('POST', '/rooms', { name: 'Other', visibility: 'invite', members: [bobUser.id] });
    const alice = await loggedIn(browser, server, 'alice', 'password-1');
    const context = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
    await context.grantPermissions(['notifications'], { origin: server.url });
    await context.addInitScript(() => {
      window.__notes = [];
      const Real = window.Notification;
      class Recording extends Real {
        constructor(title, opts) { super(title, opts); window.__notes.push({ title, body: opts?.body }); }
      }
      window.Notification = Recording;
      if (window.ServiceWorkerRegistration) {
        ServiceWorkerRegistration.prototype.showNotification = function (title, opts) {
          window.__notes.push({ title, body: opts?.body });
          return Promise.resolve();
        };
      }
    });
    const page = await context.newPage();
    await page.goto(server.url + '/');
    await page.fill('input[name=username]', 'bob');
    await page.fill('input[name=password]', 'password-2');
    await page.click('button[type=submit]');
    await waitConnected(page);
    await openRoomByName(page, 'Other');
    const general = await alice.page.evaluate(() => [...window.parvis.state.rooms.values()].find((r) => r.name === 'General').id);
    await sendVia(alice.page, general, 'lunch at noon, @bob?');
    await page.waitForFunction(() => window.__notes.length > 0);
    const [note] = await page.evaluate(() => window.__notes);
    assert.match(note.title, /Alice/);
    assert.match(note.title, /General/);
    assert.equal(note.body, 'lunch at noon, @bob?');
    await api.dispose();
    await context.close();
  } finally {
    server.kill9();
  }
});

test('French by browser language, and usable at phone width', async () => {
  const server = await Server.start();
  try {
    const api = await server.setupAdmin();
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'fr-FR', viewport: { width: 390, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(server.url + '/');
    await page.waitForSelector('input[name=username]');
    assert.equal(await page.textContent('button[type=submit]'), 'Se connecter');
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'password-1');
    await page.keyboard.press('Enter');
    await waitConnected(page);
    // on a phone the conversation takes the screen; "back" shows the list
    assert.equal(await page.isVisible('#composer-input'), true);
    assert.equal(await page.isVisible('#room-list'), false);
    await page.click('.back');
    assert.equal(await page.isVisible('#room-list'), true);
    assert.match(await page.textContent('#room-list'), /Salons/);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling (${width}px)`);
    await api.dispose();
    await ctx.close();
  } finally {
    server.kill9();
  }
});
