// What a user sees: the main screens captured to PNG (tests/browser/out/,
// to be looked at), and the layout facts that matter asserted: the call dock
// never covers the composer or the newest message, on a wide screen and on a
// phone; no tile caption reads "null"; a shared screen and the sharer's
// camera are two tiles; every icon button has a name and a drawn SVG;
// quotes and banners show text, not Markdown. Calls need a non-loopback
// interface: run through tests/browser/in-netns (scripts/test does).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Server, launch, loggedIn, openRoomByName, sendVia, team } from './lib.mjs';

const OUT = join(import.meta.dirname, 'out');
mkdirSync(OUT, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(OUT, name + '.png') });

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Boxes of two elements overlap (by more than a pixel). */
async function overlap(page, a, b) {
  return page.evaluate(([a, b]) => {
    // the last element a selector names (the newest message)
    const x = [...document.querySelectorAll(a)].pop()?.getBoundingClientRect();
    const y = [...document.querySelectorAll(b)].pop()?.getBoundingClientRect();
    if (!x || !y || !x.width || !y.width) return `missing: ${a} ${JSON.stringify(x)} ${b} ${JSON.stringify(y)}`;
    const w = Math.min(x.right, y.right) - Math.max(x.left, y.left);
    const h = Math.min(x.bottom, y.bottom) - Math.max(x.top, y.top);
    return w > 1 && h > 1 ? `${a} ${JSON.stringify(x)} covers ${b} ${JSON.stringify(y)}` : null;
  }, [a, b]);
}

/** Every visible icon button has an accessible name and an SVG that is drawn. */
async function iconProblems(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const b of document.querySelectorAll('button.icon')) {
      const r = b.getBoundingClientRect();
      if (!r.width || getComputedStyle(b).visibility === 'hidden') continue;
      const name = (b.getAttribute('aria-label') || '').trim();
      const svg = b.querySelector('svg.i');
      const box = svg?.getBoundingClientRect();
      const symbol = svg && document.querySelector(svg.querySelector('use')?.getAttribute('href'));
      const text = [...b.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      const emoji = /\p{Extended_Pictographic}/u.test(text) && !b.closest('.actions') && !b.closest('.emoji-grid');
      if (!name || ((!svg || !box.width || !symbol?.childElementCount) && !text) || emoji) {
        bad.push(`${b.id || b.className} "${name}" svg=${!!svg} symbol=${!!symbol} text=${text}`);
      }
    }
    return bad;
  });
}

test('the main screens at desktop and phone width: dock beside the conversation, clean captions, drawn icons', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    const { alice, bob } = people;
    for (const p of [alice, bob]) await p.page.setViewportSize({ width: 1280, height: 800 });
    const general = await alice.page.evaluate(() => window.parvis.state.current);

    // a reply quotes plain text, and follows an edit of the original
    await alice.page.fill('#composer-input', 'Hello **team**, the _new_ build is `0.2` ready!');
    await alice.page.keyboard.press('Enter');
    const original = bob.page.locator('.msg .body', { hasText: 'Hello team' });
    await original.waitFor();
    await original.hover();
    await bob.page.locator('.msg:has-text("Hello team") button[aria-label="Reply"]').click();
    assert.doesNotMatch(await bob.page.textContent('#compose-context'), /\*\*|`/, 'the reply banner shows text, not Markdown');
    await bob.page.fill('#composer-input', 'Great, I will try it');
    await bob.page.keyboard.press('Enter');
    const quote = alice.page.locator('.reply-quote');
    await quote.waitFor();
    assert.match(await quote.textContent(), /Hello team, the new build is 0\.2 ready!/);
    await alice.page.locator('.msg:has-text("Hello team") .content').first().hover();
    await alice.page.locator('.msg:has-text("Hello team") button[aria-label="Edit"]').click();
    await alice.page.fill('#composer-input', 'Hello **team**, the build is `0.3` ready!');
    await alice.page.keyboard.press('Enter');
    await bob.page.locator('.reply-quote', { hasText: 'the build is 0.3 ready' }).waitFor({ timeout: 5000 });
    for (let i = 1; i <= 6; i++) await sendVia(bob.page, general, `Status update ${i}: everything is **fine**`);
    await alice.page.locator('.msg .body', { hasText: 'Status update 6' }).waitFor();
    await shot(alice.page, 'chat-desktop');
    assert.deepEqual(await iconProblems(alice.page), []);

    // the reaction picker opens beside its button, not as a strip
    await alice.page.locator('.msg:has-text("Status update 6") .content').hover();
    const more = alice.page.locator('.msg:has-text("Status update 6") button[aria-label="More reactions"]');
    const anchor = await more.boundingBox();
    await more.click();
    const picker = await alice.page.locator('dialog.picker').boundingBox();
    assert.ok(picker.width < 420, `picker width ${picker.width}`);
    assert.ok(Math.abs(picker.y - (anchor.y + anchor.height)) < 20 || Math.abs(picker.y + picker.height - anchor.y) < 20,
      `picker ${JSON.stringify(picker)} next to its button ${JSON.stringify(anchor)}`);
    await shot(alice.page, 'reaction-picker-desktop');
    await alice.page.locator('dialog.picker button[aria-label="React with 🎉"]').click();
    await bob.page.locator('.msg:has-text("Status update 6") .reaction', { hasText: '🎉' }).waitFor();

    // a call with a shared screen: the viewer sees the screen and the camera
    await alice.page.click('#call-btn');
    await alice.page.click('#call-prejoin-join');
    await bob.page.waitForSelector('#call-banner:not([hidden])');
    await bob.page.click('#call-btn');
    await bob.page.click('#call-prejoin-join');
    await alice.page.click('#call-share');
    await bob.page.waitForSelector('#call-tiles .tile.screen video');
    await bob.page.waitForFunction(() => [...document.querySelectorAll('#call-tiles .tile:not(.screen) video')]
      .filter((v) => v.videoWidth > 0).length >= 2, null, { timeout: 20000 });
    const tiles = await bob.page.$$eval('#call-tiles .tile', (els) => els.map((e) => ({ screen: e.classList.contains('screen'), caption: e.querySelector('figcaption .name').textContent, all: e.querySelector('figcaption').textContent })));
    assert.ok(tiles.every((x) => !/null|undefined/.test(x.all)), `captions: ${JSON.stringify(tiles)}`);
    assert.deepEqual(tiles.filter((x) => x.screen).map((x) => x.caption), ['Screen of Alice'], JSON.stringify(tiles));
    assert.ok(tiles.some((x) => !x.screen && x.caption.startsWith('Alice')), `Alice's camera keeps its tile: ${JSON.stringify(tiles)}`);
    await bob.page.waitForTimeout(1500); // video frames on screen
    await shot(bob.page, 'call-screen-share-desktop');
    assert.equal(await overlap(bob.page, '#call-dock', '#composer'), null);
    assert.deepEqual(await iconProblems(bob.page), []);

    // Bob reads and writes in another room: the dock stays beside it
    const side = await api.call('POST', '/rooms', { name: 'Side', topic: 'Where we talk during calls', visibility: 'invite', members: [] });
    const bobId = await bob.page.evaluate(() => window.parvis.state.me.id);
    await api.call('POST', `/rooms/${side.id}/members`, { user: bobId });
    await bob.page.waitForSelector('#room-list a.room:has-text("Side")');
    await openRoomByName(bob.page, 'Side');
    for (let i = 1; i <= 3; i++) await sendVia(bob.page, side.id, `Note ${i} while in the call`);
    await bob.page.locator('.msg .body', { hasText: 'Note 3' }).waitFor();
    await bob.page.fill('#composer-input', 'typing while the call goes on');
    assert.equal(await overlap(bob.page, '#call-dock', '#composer'), null, 'the dock covers the composer');
    assert.equal(await overlap(bob.page, '#call-dock', '#messages .msg'), null, 'the dock covers the newest message');
    assert.equal(await overlap(bob.page, '#call-dock', '#send'), null);
    await shot(bob.page, 'dock-while-reading-desktop');
    // shrunk: still beside, never over
    await bob.page.click('#call-size');
    assert.equal(await overlap(bob.page, '#call-dock', '#send'), null, 'the small dock covers Send');
    await shot(bob.page, 'dock-small-desktop');
    // remembered after a reload
    assert.equal(await bob.page.evaluate(() => localStorage.getItem('parvis.dock-size')), 'small');

    // phone width: a compact bar at the top with Leave, the conversation below
    await bob.page.setViewportSize({ width: 390, height: 844 });
    await bob.page.waitForTimeout(300);
    assert.equal(await overlap(bob.page, '#call-dock', '#composer'), null, 'phone: the bar covers the composer');
    assert.equal(await overlap(bob.page, '#call-dock', '#messages .msg'), null, 'phone: the bar covers the newest message');
    assert.equal(await overlap(bob.page, '#call-dock', '.conv-head'), null, 'phone: the bar covers the room header');
    assert.ok(await bob.page.isVisible('#call-leave'), 'phone: Leave is in the bar');
    const status = await bob.page.$eval('#call-status', (e) => e.getBoundingClientRect().height);
    assert.ok(status < 30, `phone: the call status stays on one line (${status}px)`);
    const width = await bob.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `phone: no horizontal scrolling (${width}px)`);
    await shot(bob.page, 'dock-bar-phone');
    // enlarged on a phone: the call takes the screen; opening a room shrinks it back
    await bob.page.click('#call-size');
    await shot(bob.page, 'call-phone');
    await bob.page.click('#call-dock .call-room');
    await bob.page.waitForFunction(() => document.getElementById('call-dock').dataset.size === 'small');
    assert.deepEqual(await iconProblems(bob.page), []);
    await bob.page.click('#call-leave');
    await alice.page.click('#call-leave');

    // settings
    await alice.page.click('button[aria-label="Settings"]');
    await alice.page.waitForSelector('dialog[open]');
    await alice.page.waitForTimeout(300);
    await shot(alice.page, 'settings-desktop');
    assert.deepEqual(await iconProblems(alice.page), []);
    await alice.page.keyboard.press('Escape');

    // the room list at phone width
    await alice.page.setViewportSize({ width: 390, height: 844 });
    await alice.page.click('.back');
    await shot(alice.page, 'rooms-phone');
    await openRoomByName(alice.page, 'General');
    await shot(alice.page, 'chat-phone');
    assert.deepEqual(await iconProblems(alice.page), []);
    for (const p of [alice, bob]) assert.deepEqual(p.page.errors || [], []);
    await api.dispose();
  } finally {
    server.kill9();
  }
});

test('the French and English dictionaries have the same keys; counts agree in number', async () => {
  const server = await Server.start();
  try {
    // a new box: its admin, alone, is shown how to invite the team
    const api = await server.setupAdmin();
    const { context: ctx, page } = await loggedIn(browser, server, 'alice', 'password-1');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.waitForSelector('#onboarding');
    await shot(page, 'onboarding-desktop');
    await page.click('#onboarding button.primary');
    await page.waitForSelector('.settings-nav a[data-section=people][aria-current]');
    assert.match(page.url(), /#settings\/people$/);
    await page.waitForSelector('table.users td');
    await shot(page, 'settings-people-desktop');
    // the section is a link: a reload opens it again
    await page.reload();
    await page.waitForSelector('.settings-nav a[data-section=people][aria-current]');
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, 'settings-people-phone');
    await page.keyboard.press('Escape');
    await api.dispose();
    const { keys, one, many, fr } = await page.evaluate(async () => {
      const i18n = await import('/assets/i18n.js');
      const one = i18n.t('n_members', { n: 1 });
      const many = i18n.t('n_members', { n: 3 });
      i18n.setLang('fr');
      const fr = [i18n.t('n_members', { n: 0 }), i18n.t('n_members', { n: 2 })];
      return { keys: i18n.KEYS, one, many, fr };
    });
    const onlyEn = keys.en.filter((k) => !keys.fr.includes(k));
    const onlyFr = keys.fr.filter((k) => !keys.en.includes(k));
    assert.deepEqual({ onlyEn, onlyFr }, { onlyEn: [], onlyFr: [] });
    assert.deepEqual([one, many], ['1 member', '3 members']);
    assert.deepEqual(fr, ['0 membre', '2 membres']);
    await ctx.close();
  } finally {
    server.kill9();
  }
});
