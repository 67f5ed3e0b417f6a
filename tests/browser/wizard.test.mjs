// The first-boot wizard in a real browser, end to end: wrong code refused,
// every step (with the server's validation shown beside the field), resume
// after a server restart, finish lands in the chat; then the chosen box name
// is a secure context for a browser that trusts the box's CA (no
// certificate-error flag anywhere) announced as <name>.local by multicast
// DNS, and a second start skips the wizard and keeps the CA.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { Server, trustingBrowser, waitConnected, mdnsLookup } from './lib.mjs';

let browser;
after(async () => { await browser?.close(); });

// screenshots to look at (tests/browser/out/)
const OUT = join(import.meta.dirname, 'out');
mkdirSync(OUT, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(OUT, name + '.png'), fullPage: true });

const next = (page) => page.click('form button[type=submit]');
async function step(page, n) {
  try {
    await page.waitForFunction((n) => document.querySelector('main h2')?.textContent.startsWith(`Step ${n} of 7`), n, { timeout: 15000 });
  } catch (e) {
    throw new Error(`step ${n} not reached; page errors: ${JSON.stringify(page.errors || [])}; the page shows: ${(await page.textContent('body').catch(() => '?')).slice(0, 600)}`);
  }
}

test('the wizard claims the box step by step, resumes after a restart and lands in the chat; the box name is then a secure context', async () => {
  const server = await Server.start({ mdns: true });
  try {
    // the browser trusts the box's CA like a user's would after installing it
    // (its resolver finds the box's .local name, as mDNS would on a LAN)
    browser = await trustingBrowser(server, ['--host-resolver-rules=MAP office 127.0.0.1, MAP parvis.local 127.0.0.1']);
    const caBefore = readFileSync(join(server.data, 'tls', 'ca.pem'), 'utf8');
    const ctx = await browser.newContext({ locale: 'en-US' });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => { errors.push(e.message); page.errors = errors; });
    await page.goto(server.url + '/');

    await page.fill('input[name=code]', 'AAAA-AAAA');
    await next(page);
    await page.waitForSelector('.form-error:not([hidden])');
    assert.match(await page.textContent('.form-error'), /setup code/i);
    await page.fill('input[name=code]', server.setupCode().toLowerCase());
    await next(page);

    await step(page, 1); // language
    await page.selectOption('select[data-key=language]', 'en');
    await next(page);

    await step(page, 2); // company and admin
    await page.fill('[data-key=company]', 'Acme');
    await page.fill('[data-key="admin.display_name"]', 'Alice');
    await page.fill('[data-key="admin.username"]', 'alice');
    await page.fill('[data-key="admin.password"]', 'password-1');
    await page.fill('[data-key="admin.password2"]', 'password-X');
    await next(page);
    await page.waitForSelector('.field-error');
    assert.match(await page.textContent('.field-error'), /differ/i);
    await page.fill('[data-key="admin.password2"]', 'password-1');
    await next(page);

    await step(page, 3); // box name: the server's check is shown beside the field
    await page.fill('[data-key=name]', 'Bad Name!');
    await next(page);
    await page.waitForSelector('[data-key=name][aria-invalid=true]');
    assert.match(await page.textContent('.field-error'), /lowercase letters/);
    await page.fill('[data-key=name]', 'office');
    // a static address: the gateway must be in its subnet
    await page.check('input[type=radio][value=static]');
    await page.fill('[data-key="network.address"]', '10.99.0.1/24');
    await page.fill('[data-key="network.gateway"]', '10.98.0.254');
    await next(page);
    await page.waitForSelector('[data-key="network.gateway"][aria-invalid=true]');
    assert.match(await page.textContent('.field-error'), /is not in 10.99.0.1\/24/);
    await page.fill('[data-key="network.gateway"]', '10.99.0.254');
    await page.fill('[data-key="network.dns"]', '10.99.0.254, 10.99.0.253');
    await next(page);

    await step(page, 4); // certificates: local CA, its fingerprint, download, trust check
    const fp = new X509Certificate(caBefore).fingerprint256;
    assert.equal((await page.textContent('code.fingerprint')).trim(), fp);
    assert.equal(await page.getAttribute('a[download]', 'href'), '/parvis-ca.pem');
    await page.click('text=Check that this browser trusts the box');
    await page.waitForSelector('.trust.ok, .trust.no');
    assert.match(await page.textContent('.trust'), /trusts the box/);
    // the answer is in view, not below the fold
    assert.ok(await page.locator('.trust').evaluate((e) => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }),
      'the trust check result is visible');
    await shot(page, 'wizard-certificates');
    // ACME needs a domain: the server says so
    await page.check('input[type=radio][value=acme]');
    await next(page);
    await page.waitForSelector('[data-key="tls.acme_domains"][aria-invalid=true]');
    await page.check('input[type=radio][value=local]');
    await next(page);

    await step(page, 5); // calls from outside
    await page.fill('[data-key="turn.relay_port_min"]', '60000');
    await page.fill('[data-key="turn.relay_port_max"]', '50199');
    await next(page);
    await page.waitForSelector('[data-key="turn.relay_port_min"][aria-invalid=true]');
    await page.fill('[data-key="turn.relay_port_min"]', '50000');
    await page.fill('[data-key="turn.external_address"]', '203.0.113.7');
    assert.ok((await page.textContent("main")).includes(`${server.turnPort}/udp+tcp`));
    await next(page);

    await step(page, 6); // federation
    await page.check('input[type=radio][value=allowlist]');
    // "only boxes I list" asks for the list, and refuses an empty one
    await page.waitForSelector('[data-key=federation_allow]');
    await next(page);
    await page.waitForSelector('[data-key=federation_allow][aria-invalid=true]');
    await shot(page, 'wizard-federation');
    await page.fill('[data-key=federation_allow]', 'chat.partner.example\nbox.supplier.example');
    await next(page);
    await step(page, 7);
    assert.match(await page.textContent('table.review'), /chat\.partner\.example, box\.supplier\.example/);

    // the box restarts mid-way: the wizard resumes where it was
    await server.restart();
    await page.reload();
    await step(page, 7);
    const review = await page.textContent('table.review');
    for (const s of ['Acme', 'Alice (alice)', 'office.local', '10.99.0.1/24 · 10.99.0.254', '203.0.113.7', '50000–50199', 'Only boxes I list']) {
      assert.ok(review.includes(s), `review lacks ${s}: ${review}`);
    }
    // earlier steps can be revisited
    await page.click('.wizard-steps button:text("Box name and network")');
    await step(page, 3);
    assert.equal(await page.inputValue('[data-key=name]'), 'office');
    await page.click('.wizard-steps button:text("Review")');
    await step(page, 7);
    await next(page); // finish
    await page.waitForSelector('#composer-input');
    await waitConnected(page);
    assert.equal(await page.textContent('#room-title'), 'General');
    const saved = readFileSync(join(server.data, 'parvis.toml'), 'utf8');
    assert.match(saved, /name = "office"/);
    assert.match(saved, /external_address = "203.0.113.7"/);
    const network = saved.slice(saved.indexOf('[network]')).split(/\n\[/)[0];
    for (const line of ['mode = "static"', 'address = "10.99.0.1/24"', 'gateway = "10.99.0.254"', '"10.99.0.253"']) {
      assert.ok(network.includes(line), `[network] lacks ${line}: ${network}`);
    }

    // the new name is announced on the LAN by multicast DNS
    assert.equal(await mdnsLookup('office.local', '10.99.0.1'), '10.99.0.1');

    // Settings → Box: the same panels; updates are uploaded there (this
    // server is no box: the error says why); no install offer off a live system
    // (in sections with their own URLs: #settings/box, #settings/health)
    await page.click('button[aria-label=Settings]');
    await page.click('.settings-nav a[data-section=box]');
    await page.waitForSelector('[data-key="network.address"]');
    assert.match(page.url(), /#settings\/box$/);
    assert.equal(await page.isChecked('input[type=radio][value=static]'), true);
    assert.equal(await page.inputValue('[data-key="network.address"]'), '10.99.0.1/24');
    await page.click('.settings-nav a[data-section=health]');
    await page.waitForSelector('[data-key="update.file"]');
    // Health: the checks the server made, each with its words
    await page.waitForSelector('#health-summary');
    assert.match(page.url(), /#settings\/health$/);
    const checks = await page.$$eval('.health-checks li', (lis) => lis.map((li) => [li.dataset.check, li.className, li.querySelector('.detail').textContent]));
    assert.deepEqual(checks.map(([id]) => id), ['disk', 'database', 'certificate', 'turn']);
    for (const [id, level, detail] of checks) {
      assert.match(level, /^(ok|warn|fail)$/, id);
      assert.ok(detail.length > 3 && !/null|undefined/.test(detail), `${id}: ${detail}`);
    }
    assert.equal(checks[1][1], 'ok', 'the database answers');
    await shot(page, 'settings-health');
    assert.equal(await page.locator('form.install').count(), 0);
    assert.equal(await page.locator('#box-restart').count(), 0, 'no restart button off the box');
    await page.setInputFiles('[data-key="update.file"]', { name: 'parvis-x86_64-9.9.9.update', mimeType: 'application/octet-stream', buffer: Buffer.from('not a bundle') });
    await page.click('button:text("Install the update")');
    const updateError = page.locator('form:has([data-key="update.file"]) .form-error');
    await updateError.waitFor({ state: 'visible' });
    assert.match(await updateError.textContent(), /update key/);
    await page.keyboard.press('Escape');

    // applied without a restart: the certificate now names the box, and a
    // browser that trusts the CA gets a secure context there
    const url = `https://office:${server.httpsPort}/`;
    const secure = await ctx.newPage();
    for (let i = 0; ; i++) {
      try { await secure.goto(url); break; } catch (e) {
        if (i > 40) throw e; // the reissue takes a moment
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    assert.equal(await secure.evaluate(() => window.isSecureContext), true);
    const tracks = await secure.evaluate(async () => {
      const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const n = s.getTracks().length;
      s.getTracks().forEach((t) => t.stop());
      return n;
    });
    assert.equal(tracks, 2);
    await secure.waitForSelector('input[name=username]'); // another host: its own login
    assert.deepEqual(errors, []);
    await ctx.close();

    // a second start skips the wizard and keeps the CA
    await server.restart();
    const again = await (await browser.newContext({ locale: 'en-US' })).newPage();
    await again.goto(server.url + '/');
    await again.waitForSelector('input[name=username]');
    assert.equal(await again.locator('input[name=code]').count(), 0);
    assert.equal(readFileSync(join(server.data, 'tls', 'ca.pem'), 'utf8'), caBefore);
  } finally {
    server.kill9();
  }
});
