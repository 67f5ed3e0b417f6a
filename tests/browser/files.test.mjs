// Files in a real browser: Alice pastes a screenshot into the composer and
// Bob (phone width) sees its preview, decoded from the download origin, and
// opens it full size; Bob drops a PDF on the conversation and Alice's
// download of it is the same bytes, as an attachment; the Files panel lists
// both and finds one by name; a file over the box's limit is refused before
// anything is sent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Server, launch, team, openRoomByName } from './lib.mjs';

const OUT = join(import.meta.dirname, 'out');
mkdirSync(OUT, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(OUT, name + '.png') });

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** A PNG drawn in the page (a "screenshot"), pasted into the composer. */
async function pasteScreenshot(page) {
  await page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 640; c.height = 360;
    const g = c.getContext('2d');
    g.fillStyle = '#1d4e89'; g.fillRect(0, 0, 640, 360);
    g.fillStyle = '#f2b134'; g.fillRect(40, 40, 260, 140);
    g.fillStyle = '#fff'; g.font = '40px sans-serif'; g.fillText('Q3 dashboard', 40, 300);
    const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
    const dt = new DataTransfer();
    dt.items.add(new File([blob], 'image.png', { type: 'image/png' }));
    document.getElementById('composer-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  });
}

/** A PDF dropped on the conversation, as from the file manager. */
const PDF = '%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n' + 'offer line\n'.repeat(3000) + '%%EOF\n';
async function dropPdf(page, name) {
  await page.evaluate(([name, pdf]) => {
    const dt = new DataTransfer();
    dt.items.add(new File([pdf], name, { type: 'application/pdf' }));
    const main = document.getElementById('conversation');
    for (const type of ['dragenter', 'dragover', 'drop']) main.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, [name, PDF]);
}

test('a pasted screenshot and a dropped PDF reach the other side, download as sent, show in the Files panel; too large is refused before sending', async () => {
  const server = await Server.start();
  try {
    const { api, people } = await team(browser, server, ['alice', 'bob']);
    // a 1 MiB limit for this box: the test's files fit, a 2 MiB one does not
    const current = await api.call('GET', '/admin/settings');
    current.settings.files.max_file_mb = 1;
    await api.call('PUT', '/admin/settings', { settings: current.settings });
    const users = await api.call('GET', '/users');
    const bobId = users.find((u) => u.username === 'bob').id;
    await api.call('POST', '/rooms', { name: 'Design', visibility: 'invite', members: [bobId] });
    const alice = people.alice.page;
    const bob = people.bob.page;
    for (const p of [alice, bob]) {
      await p.setViewportSize({ width: 1280, height: 800 });
      await p.waitForSelector('#room-list a.room:has-text("Design")');
      await openRoomByName(p, 'Design');
    }
    // Bob is on his phone
    await bob.setViewportSize({ width: 390, height: 800 });

    // Alice pastes a screenshot: it uploads in the tray, then goes with her text
    await pasteScreenshot(alice);
    await alice.waitForSelector('#tray .tray-item.done');
    assert.match(await alice.textContent('#tray .tray-item .name'), /^Screenshot \d{4}-\d\d-\d\d .*\.png$/);
    await alice.fill('#composer-input', 'Here is the dashboard');
    await shot(alice, 'files-tray-desktop');
    await alice.press('#composer-input', 'Enter');
    await alice.waitForSelector('#tray', { state: 'hidden' });
    // Bob sees the preview, decoded (loaded from the download origin, not the app's)
    const img = await bob.waitForSelector('.msg .file-image img');
    // the 1280-px preview: the original itself, being smaller (640 px)
    await bob.waitForFunction(() => document.querySelector('.msg .file-image img')?.naturalWidth === 640, null, { timeout: 15000 });
    const src = await img.getAttribute('src');
    assert.match(src, /\?thumb=1280$/, 'a preview, never larger than the original');
    const appPort = new URL(server.url).port;
    assert.equal(new URL(src).port, String(server.downloadsPort), `served from the download origin, not :${appPort}`);
    assert.match(await bob.textContent('.msg:has(.file-image)'), /Here is the dashboard/);
    await shot(bob, 'files-image-phone');
    // full size, keyboard: Escape closes
    await img.click();
    await bob.waitForSelector('dialog.viewer[open] img');
    await bob.waitForFunction(() => document.querySelector('dialog.viewer img')?.naturalWidth === 640);
    await shot(bob, 'files-viewer-phone');
    await bob.keyboard.press('Escape');
    await bob.waitForSelector('dialog.viewer', { state: 'detached' }).catch(() => bob.waitForSelector('dialog.viewer:not([open])'));

    // Bob drops a PDF and sends it without text
    await dropPdf(bob, 'Offer 2027 – ACME.pdf');
    await bob.waitForSelector('#tray .tray-item.done');
    await bob.click('#send');
    const card = await alice.waitForSelector('.msg .file-card:has-text("Offer 2027")');
    assert.match(await card.textContent(), /Offer 2027 – ACME\.pdf.*KiB/);
    const href = await (await card.$('a[download]')).getAttribute('href');
    assert.match(href, /\?download$/);
    const res = await people.alice.context.request.get(href);
    assert.equal(res.status(), 200);
    const bytes = await res.body();
    assert.equal(bytes.subarray(0, 8).toString(), '%PDF-1.4');
    assert.equal(bytes.toString(), PDF, 'the same bytes');
    assert.match(res.headers()['content-disposition'], /^attachment; filename="Offer 2027 _ ACME.pdf"; filename\*=UTF-8''Offer%202027%20%E2%80%93%20ACME\.pdf$/);
    assert.equal(res.headers()['x-content-type-options'], 'nosniff');
    assert.equal(res.headers()['content-security-policy'], "sandbox; default-src 'none'; frame-ancestors 'none'");
    await alice.waitForFunction(() => document.querySelector('.msg .file-image img')?.naturalWidth > 0);
    await shot(alice, 'files-desktop');
    await shot(bob, 'files-pdf-phone');

    // the Files panel: both, newest first; found by name
    await alice.click('#files-btn');
    await alice.waitForSelector('#panel .file-list li:nth-child(2)');
    const names = await alice.$$eval('#panel .file-list li', (lis) => lis.map((li) => li.dataset.name));
    assert.equal(names.length, 2);
    assert.equal(names[0], 'Offer 2027 – ACME.pdf');
    assert.match(names[1], /^Screenshot /);
    assert.match(await alice.textContent('#panel .file-list li:first-child'), /Bob/);
    // the screenshot's 320-px preview, made by the box
    await alice.waitForFunction(() => document.querySelector('#panel .file-thumb img')?.naturalWidth === 320);
    await shot(alice, 'files-panel-desktop');
    await alice.fill('#panel input[type=search]', 'offer');
    await alice.waitForFunction(() => document.querySelectorAll('#panel .file-list li').length === 1);
    await alice.click('#panel button[aria-label="Close"]');

    // too large: refused at once with the limit shown, nothing sent
    const asked = [];
    alice.on('request', (r) => { if (r.url().includes('/uploads')) asked.push(r.url()); });
    await alice.setInputFiles('#file-input', { name: 'video.mp4', mimeType: 'video/mp4', buffer: Buffer.alloc(2 * 1024 * 1024, 1) });
    const toast = await alice.waitForSelector('.toast:has-text("larger than")');
    assert.match(await toast.textContent(), /“video\.mp4” is larger than 1 MiB/);
    assert.equal(await alice.$('#tray .tray-item'), null);
    assert.deepEqual(asked, [], 'no upload was even created');
    await shot(alice, 'files-too-large-desktop');
    for (const p of [alice, bob]) assert.deepEqual(p.errors || [], [], 'no page errors');
  } finally {
    server.kill9();
  }
});
