// The first-boot wizard (setup code, then seven steps, resumable) and the
// admin's box settings, which reuse the same panels. Every step is checked
// by the server with the configuration's own validator; its errors come
// back keyed like the configuration and are shown beside their field.
import { h, clear } from './dom.js';
import { get, post, put, setSetupToken, ApiError } from './api.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { errorText, field, formError, showFormError } from './forms.js';

const STEPS = ['wiz_language', 'wiz_company', 'wiz_box', 'wiz_certs', 'wiz_calls', 'wiz_federation', 'wiz_review'];
const TOKEN_KEY = 'parvis.setup';

/** An input bound to `obj[key]` (string); `conv` turns the text into the value. */
const num = (v) => Number(v) || 0;

function bound(obj, key, attrs = {}, conv = (v) => v) {
  const cur = obj[key];
  const el = h('input', { ...attrs, value: cur === null || cur === undefined ? '' : String(cur) });
  el.addEventListener('input', () => { obj[key] = conv(el.value); });
  el.dataset.key = attrs['data-key'] || key;
  return el;
}

function choice(obj, key, options, labelOf) {
  const name = 'c-' + key + '-' + Math.random().toString(36).slice(2, 7);
  return h('div', { class: 'choices', role: 'radiogroup' }, options.map((o) => {
    const r = h('input', { type: 'radio', name, value: o, checked: obj[key] === o });
    r.addEventListener('change', () => { if (r.checked) { obj[key] = o; r.dispatchEvent(new CustomEvent('chosen', { bubbles: true })); } });
    return h('label', { class: 'check' }, r, ' ', labelOf(o));
  }));
}

/** Shows `errors` ([{key, reason}]) beside the inputs with that data-key; the rest in `general`. */
function showErrors(form, errors, general) {
  form.querySelectorAll('.field-error').forEach((e) => e.remove());
  form.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
  const left = [];
  for (const e of errors) {
    const input = form.querySelector(`[data-key="${CSS.escape(e.key)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.closest('.field')?.append(h('small', { class: 'field-error', role: 'alert' }, e.reason));
    } else left.push(`${e.key}: ${e.reason}`);
  }
  if (left.length) { general.textContent = left.join(' · '); general.hidden = false; } else general.hidden = true;
  form.querySelector('[aria-invalid]')?.focus();
}

// ------------------------------------------------------------------ panels --

function languagePanel(s) {
  const sel = h('select', { 'data-key': 'language', onchange: () => { s.language = sel.value; setLang(sel.value); } },
    LANGS.map(([code, name]) => h('option', { value: code, selected: code === s.language }, name)));
  return [h('p', {}, t('wiz_language_intro')), field(t('language'), sel)];
}

function companyPanel(s) {
  return [field(t('company'), bound(s, 'company', { maxlength: 100, required: true, autocomplete: 'organization' }))];
}

function adminPanel(admin) {
  const pw2 = h('input', { type: 'password', autocomplete: 'new-password', 'data-key': 'admin.password2' });
  return [
    h('h3', {}, t('wiz_admin')),
    field(t('display_name'), bound(admin, 'display_name', { maxlength: 64, autocomplete: 'name', 'data-key': 'admin.display_name' })),
    field(t('username'), bound(admin, 'username', { autocapitalize: 'none', autocomplete: 'username', 'data-key': 'admin.username' }, (v) => v.trim().toLowerCase()), t('username_hint')),
    field(t('password'), bound(admin, 'password', { type: 'password', autocomplete: 'new-password', 'data-key': 'admin.password' }),
      admin.password_set ? t('wiz_password_kept') : t('password_hint')),
    field(t('password_again'), pw2),
    { check: () => (pw2.value === (admin.password || '') ? null : { key: 'admin.password2', reason: t('passwords_differ') }) },
  ];
}

function boxPanel(s, info) {
  const addrs = (info.addresses || []).map((a) => h('li', {}, h('code', {}, a)));
  return [
    field(t('wiz_box_name'), bound(s, 'name', { autocapitalize: 'none', spellcheck: 'false' }, (v) => v.trim().toLowerCase()), t('wiz_box_name_hint')),
    h('h3', {}, t('wiz_network')),
    h('p', {}, t('wiz_network_intro', { host: info.hostname || '—' })),
    h('ul', { class: 'addresses' }, addrs.length ? addrs : h('li', {}, t('wiz_no_address'))),
    ...networkFields(s.network),
  ];
}

/** DHCP or a static IPv4 address, used from the box's next start. */
function networkFields(net) {
  const fixed = h('div', { class: 'stack' },
    field(t('wiz_net_address'), bound(net, 'address', { placeholder: '192.168.1.20/24', spellcheck: 'false', 'data-key': 'network.address' }, (v) => v.trim()), t('wiz_net_address_hint')),
    field(t('wiz_net_gateway'), bound(net, 'gateway', { placeholder: '192.168.1.1', spellcheck: 'false', 'data-key': 'network.gateway' }, (v) => v.trim())),
    field(t('wiz_net_dns'), (() => {
      const el = bound(net, 'dns', { placeholder: '192.168.1.1', spellcheck: 'false', 'data-key': 'network.dns' },
        (v) => v.split(/[\s,]+/).filter(Boolean));
      el.value = (net.dns || []).join(', ');
      return el;
    })()));
  const show = () => { fixed.hidden = net.mode !== 'static'; };
  const modes = choice(net, 'mode', ['dhcp', 'static'], (m) => t('wiz_net_' + m));
  modes.addEventListener('chosen', show);
  show();
  const ntp = bound(net, 'ntp', { placeholder: '192.168.1.1', spellcheck: 'false', 'data-key': 'network.ntp' },
    (v) => v.split(/[\s,]+/).filter(Boolean));
  ntp.value = (net.ntp || []).join(', ');
  return [modes, fixed, field(t('wiz_net_ntp'), ntp, t('wiz_net_ntp_hint')), h('p', { class: 'muted' }, t('wiz_net_next_start'))];
}

/** The box's other origins (names and addresses its certificate covers)
 *  than the one in the address bar, for the trust check. */
function otherOrigins(info) {
  return (info.trust_origins || []).filter((o) => o !== location.origin);
}

/** Whether this browser trusts the box's certificate: a page on one name
 *  fetches from another name (no exception the user clicked through there). */
async function trustCheck(info, out) {
  out.textContent = t('wiz_trust_checking'); out.className = 'trust';
  const one = async (origin) => {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const res = await fetch(origin + '/api/trust', { mode: 'cors', credentials: 'omit', signal: ctl.signal });
      if (!res.ok) throw new Error(String(res.status));
    } finally { clearTimeout(timer); }
  };
  // untrusted, or that name is not reachable from here: every attempt fails
  const trusted = await Promise.any(otherOrigins(info).map(one)).then(() => true, () => false);
  out.textContent = t(trusted ? 'wiz_trust_ok' : 'wiz_trust_no');
  out.className = 'trust ' + (trusted ? 'ok' : 'no');
  out.scrollIntoView({ block: 'nearest', behavior: 'smooth' }); // the answer in view
  return trusted;
}

const OSES = ['windows', 'macos', 'linux', 'android', 'ios'];

function certsPanel(s, info, status) {
  const tls = s.tls;
  const local = h('div', { class: 'stack' },
    h('p', {}, t('wiz_local_intro')),
    h('p', {}, h('a', { href: info.ca_url, download: 'parvis-ca.pem', class: 'button primary' }, t('wiz_ca_download'))),
    h('p', {}, t('wiz_ca_fingerprint'), h('br'), h('code', { class: 'fingerprint' }, info.ca_fingerprint)),
    OSES.map((os) => h('details', {}, h('summary', {}, t('wiz_os_' + os)), h('p', {}, t('wiz_os_' + os + '_steps')))),
  );
  const out = h('p', { class: 'trust', role: 'status' });
  local.append(h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', onclick: () => trustCheck(info, out) }, t('wiz_trust_check')), out));

  const preset = ['letsencrypt', 'letsencrypt-staging'].includes(tls.acme_directory) ? tls.acme_directory : 'custom';
  const dirSel = h('select', { 'data-key': 'tls.acme_directory' },
    ['letsencrypt', 'letsencrypt-staging', 'custom'].map((v) => h('option', { value: v, selected: v === preset }, t('wiz_acme_' + v.replace('-', '_')))));
  const custom = bound(tls, 'acme_directory', { type: 'url', placeholder: 'https://ca.example.com/acme/directory', 'data-key': 'tls.acme_directory' });
  const customField = field(t('wiz_acme_url'), custom);
  customField.hidden = preset !== 'custom';
  dirSel.addEventListener('change', () => {
    customField.hidden = dirSel.value !== 'custom';
    tls.acme_directory = dirSel.value === 'custom' ? custom.value : dirSel.value;
  });
  const domains = bound(tls, 'acme_domains', { placeholder: 'chat.example.com', 'data-key': 'tls.acme_domains' },
    (v) => v.split(/[\s,]+/).map((d) => d.trim().toLowerCase()).filter(Boolean));
  domains.value = (tls.acme_domains || []).join(', ');
  const acme = h('div', { class: 'stack' },
    h('p', {}, t('wiz_acme_intro')),
    field(t('wiz_acme_directory'), dirSel), customField,
    field(t('wiz_acme_email'), bound(tls, 'acme_email', { type: 'email', 'data-key': 'tls.acme_email' })),
    field(t('wiz_acme_domains'), domains, t('wiz_acme_domains_hint')),
    field(t('wiz_acme_challenge'), choice(tls, 'acme_challenge', ['http-01', 'tls-alpn-01', 'dns-01'], (c) => t('wiz_ch_' + c.replace(/-/g, '_')))),
    field(t('wiz_acme_root'), bound(tls, 'acme_root', { 'data-key': 'tls.acme_root', placeholder: '/perm/parvis/company-ca.pem' }), t('wiz_acme_root_hint')),
  );
  const show = () => { local.hidden = tls.mode !== 'local'; acme.hidden = tls.mode !== 'acme'; };
  const modes = choice(tls, 'mode', ['local', 'acme'], (m) => t('wiz_mode_' + m));
  modes.addEventListener('chosen', show);
  show();
  return [modes, local, acme, status ? certificateStatus(status) : null];
}

/** What the certificate manager reports (Settings page). */
function certificateStatus(c) {
  const date = (x) => (x ? new Date(x * 1000).toLocaleString(lang()) : '—');
  return h('div', { class: 'cert-status' },
    h('h3', {}, t('wiz_cert_status')),
    h('p', {}, h('strong', {}, t('wiz_cert_state_' + (c.state || 'local'))), ' — ', c.message || ''),
    c.not_after ? h('p', {}, t('wiz_cert_valid', { from: date(c.not_before), to: date(c.not_after) }), c.next_renewal ? ' · ' + t('wiz_cert_renewal', { when: date(c.next_renewal) }) : '') : null,
    (c.dns_records || []).map((r) => h('p', {}, t('wiz_dns_create'), h('br'), h('code', {}, `${r.name} TXT "${r.value}"`))),
    c.alert ? h('p', { class: 'form-error', role: 'alert' }, c.alert) : null);
}

function callsPanel(s, info) {
  const ext = bound(s, 'turn_external_address', { placeholder: info.detected_address || '203.0.113.10', 'data-key': 'turn.external_address' }, (v) => v.trim() || null);
  const useDetected = info.detected_address
    ? h('button', { type: 'button', class: 'link', onclick: () => { ext.value = info.detected_address; s.turn_external_address = info.detected_address; } }, t('wiz_use_detected', { ip: info.detected_address }))
    : null;
  return [
    h('p', {}, t('wiz_calls_intro')),
    field(t('wiz_external'), ext, t('wiz_external_hint')), useDetected,
    h('div', { class: 'row' },
      field(t('wiz_relay_min'), bound(s, 'relay_port_min', { type: 'number', min: 1, max: 65535, 'data-key': 'turn.relay_port_min' }, num)),
      field(t('wiz_relay_max'), bound(s, 'relay_port_max', { type: 'number', min: 1, max: 65535, 'data-key': 'turn.relay_port_max' }, num))),
    field(t('wiz_uplink'), bound(s, 'turn_uplink_mbps', { type: 'number', min: 0, max: 100000, placeholder: '0', 'data-key': 'turn.uplink_mbps' }, num), t('wiz_uplink_hint')),
    h('h3', {}, t('wiz_forward')),
    h('ul', {}, (info.forward || []).map((f) => h('li', {}, h('code', {}, `${f.port}/${f.proto}`), ' — ', f.what))),
  ];
}

function guestsPanel(s) {
  s.guests = s.guests || { max_link_days: 30, retention_days: 30 };
  return [
    field(t('guests_max_days'), bound(s.guests, 'max_link_days', { type: 'number', min: 1, max: 365, 'data-key': 'guests.max_link_days' }, num), t('guests_max_days_hint')),
    field(t('guests_retention'), bound(s.guests, 'retention_days', { type: 'number', min: 1, max: 3650, 'data-key': 'guests.retention_days' }, num), t('guests_retention_hint')),
  ];
}

function filesPanel(s) {
  s.files = s.files || { max_file_mb: 1024, user_quota_mb: 10240, guest_quota_mb: 100, room_quota_mb: 0, box_quota_mb: 0, retention_days: 0 };
  const mb = (key, label, hint, min = 0) =>
    field(t(label), bound(s.files, key, { type: 'number', min, max: 1048576, 'data-key': 'files.' + key }, num), hint ? t(hint) : null);
  return [
    mb('max_file_mb', 'files_max_file', 'files_max_file_hint', 1),
    h('div', { class: 'row' }, mb('user_quota_mb', 'files_user_quota'), mb('guest_quota_mb', 'files_guest_quota')),
    h('div', { class: 'row' }, mb('room_quota_mb', 'files_room_quota'), mb('box_quota_mb', 'files_box_quota')),
    h('p', { class: 'hint' }, t('files_quota_hint')),
    field(t('files_retention'), bound(s.files, 'retention_days', { type: 'number', min: 0, max: 36500, 'data-key': 'files.retention_days' }, num), t('files_retention_hint')),
  ];
}

function federationPanel(s) {
  const list = h('textarea', { rows: 3, 'data-key': 'federation_allow', placeholder: 'chat.partner.example', autocapitalize: 'none', spellcheck: 'false' });
  list.value = (s.federation_allow || []).join('\n');
  list.addEventListener('input', () => { s.federation_allow = list.value.split(/[\s,]+/).map((d) => d.trim().toLowerCase()).filter(Boolean); });
  const listField = field(t('wiz_fed_list'), list, t('wiz_fed_list_hint'));
  listField.hidden = s.federation !== 'allowlist';
  const modes = choice(s, 'federation', ['off', 'allowlist', 'open'], (f) => t('wiz_fed_' + f));
  modes.addEventListener('chosen', () => { listField.hidden = s.federation !== 'allowlist'; });
  return [h('p', {}, t('wiz_federation_intro')), modes, listField];
}

function reviewPanel(s, admin) {
  const row = (k, v) => h('tr', {}, h('th', {}, k), h('td', {}, v));
  return [h('table', { class: 'review' },
    row(t('language'), LANGS.find(([c]) => c === s.language)?.[1] || s.language),
    row(t('company'), s.company), row(t('wiz_admin'), `${admin.display_name} (${admin.username})`),
    row(t('wiz_box_name'), `${s.name}.local`),
    row(t('wiz_network'), s.network.mode === 'static'
      ? `${s.network.address}${s.network.gateway ? ' · ' + s.network.gateway : ''}` : t('wiz_net_dhcp')),
    row(t('wiz_certs'), s.tls.mode === 'acme' ? `ACME · ${(s.tls.acme_domains || []).join(', ')} · ${s.tls.acme_challenge}` : t('wiz_mode_local')),
    row(t('wiz_external'), s.turn_external_address || '—'), row(t('wiz_relay_range'), `${s.relay_port_min}–${s.relay_port_max}`),
    row(t('wiz_uplink'), s.turn_uplink_mbps ? `${s.turn_uplink_mbps} Mbit/s` : t('wiz_uplink_unknown')),
    row(t('wiz_federation'), t('wiz_fed_' + s.federation) + (s.federation === 'allowlist' ? ': ' + (s.federation_allow || []).join(', ') : ''))),
  h('p', {}, t('wiz_review_intro'))];
}

// ------------------------------------------------------------------ wizard --

function page(root, ...children) {
  clear(root);
  root.append(h('main', { class: 'center' }, h('div', { class: 'card wizard' },
    h('div', { class: 'brand' }, h('img', { src: '/assets/icon.svg', alt: '' }), 'Parvis'), ...children)));
  root.querySelector('input, select')?.focus();
}

/** First boot: the setup code, then the steps. `done(me)` enters the chat. */
export async function wizardView(root, done) {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    setSetupToken(saved);
    try { return steps(root, await get('/setup/draft'), done); } catch { setSetupToken(''); sessionStorage.removeItem(TOKEN_KEY); }
  }
  const err = formError();
  const code = h('input', { name: 'code', required: true, autocomplete: 'off', placeholder: 'XXXX-XXXX', autocapitalize: 'characters' });
  const form = h('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await post('/setup/unlock', { code: code.value, language: lang() });
      sessionStorage.setItem(TOKEN_KEY, r.token);
      setSetupToken(r.token);
      steps(root, r.draft, done);
    } catch (e) { showFormError(err, e); code.select(); }
  } },
  h('h1', {}, t('setup_title')), h('p', {}, t('setup_intro')),
  field(t('setup_code'), code, t('setup_code_hint')), err,
  h('button', { type: 'submit', class: 'primary' }, t('wiz_start')));
  page(root, form);
}

function steps(root, draft, done) {
  const s = draft.settings;
  const admin = { ...draft.admin, password: '' };
  let reached = Math.max(1, draft.step || 1);
  if (s.language) setLang(s.language);

  const show = (n) => {
    reached = Math.max(reached, n);
    const err = formError();
    const panels = [languagePanel, (x) => [...companyPanel(x), ...adminPanel(admin)], (x) => boxPanel(x, draft.info),
      (x) => certsPanel(x, draft.info), (x) => callsPanel(x, draft.info), federationPanel, (x) => reviewPanel(x, admin)][n - 1](s);
    const checks = panels.filter((p) => p && p.check).map((p) => p.check);
    const nav = h('ol', { class: 'wizard-steps' }, STEPS.map((k, i) => h('li', { class: i + 1 === n ? 'current' : '' },
      i + 1 <= reached ? h('button', { type: 'button', class: 'link', 'aria-current': i + 1 === n ? 'step' : null, onclick: () => show(i + 1) }, t(k)) : t(k))));
    const last = n === STEPS.length;
    const form = h('form', { class: 'stack', novalidate: true, onsubmit: async (ev) => {
      ev.preventDefault();
      const local = checks.map((c) => c()).filter(Boolean);
      if (local.length) { showErrors(form, local, err); return; }
      try {
        if (last) {
          const me = await post('/setup/finish');
          sessionStorage.removeItem(TOKEN_KEY);
          setSetupToken('');
          done(me);
          return;
        }
        const body = { step: n + 1, settings: s };
        if (n === 2) body.admin = { username: admin.username || '', display_name: admin.display_name || '', password: admin.password || '' };
        const d = await put('/setup/draft', body);
        Object.assign(draft, d);
        admin.password_set = d.admin.password_set;
        show(n + 1);
      } catch (e) {
        if (e instanceof ApiError && e.errors.length) showErrors(form, e.errors, err);
        else showFormError(err, e);
        if (e instanceof ApiError && e.status === 403) { sessionStorage.removeItem(TOKEN_KEY); setSetupToken(''); }
      }
    } },
    h('h2', {}, t('wiz_step', { n, total: STEPS.length }), ' · ', t(STEPS[n - 1])),
    panels.filter((p) => !(p && p.check)), err,
    h('div', { class: 'row wizard-buttons' },
      n > 1 ? h('button', { type: 'button', class: 'secondary', onclick: () => show(n - 1) }, t('wiz_back')) : null,
      h('button', { type: 'submit', class: 'primary' }, last ? t('wiz_finish') : t('wiz_next'))));
    page(root, nav, form);
  };
  show(reached);
}

// ---------------------------------------------------- admin: box settings --

/** The Settings dialog's "Box" section for admins: same panels, one Save. */
/**
 * Settings → Box ('box': company, name and network, calls, federation),
 * Certificates ('certificates') or System ('system': update, restart,
 * install). Each form saves the whole settings object it was shown.
 */
export function boxSettingsSection(toast, part = 'box') {
  const body = h('div', { class: 'stack' }, h('p', {}, t('loading')));
  const title = { box: 'wiz_box_settings', certificates: 'wiz_certs', system: 'settings_system' }[part];
  const section = h('section', {}, h('h3', {}, t(title)), body);
  const render = async () => {
    let v;
    try { v = await get('/admin/settings'); } catch (e) { clear(body).append(h('p', { class: 'form-error' }, errorText(e))); return; }
    const s = v.settings;
    const err = formError();
    const form = h('form', { class: 'stack', novalidate: true, onsubmit: async (ev) => {
      ev.preventDefault();
      try { await put('/admin/settings', { settings: s }); toast(t('saved')); render(); } catch (e) {
        if (e instanceof ApiError && e.errors.length) showErrors(form, e.errors, err); else showFormError(err, e);
      }
    } },
    ...(part === 'certificates' ? [...certsPanel(s, v.info, v.certificate),
      h('button', { type: 'button', class: 'secondary', onclick: async () => { await post('/admin/certificate/renew'); toast(t('wiz_renew_asked')); setTimeout(render, 3000); } }, t('wiz_renew_now'))]
      : [...companyPanel(s), ...boxPanel(s, v.info), h('h3', {}, t('wiz_calls')), ...callsPanel(s, v.info), h('h3', {}, t('wiz_federation')), ...federationPanel(s), h('h3', {}, t('guests_settings')), ...guestsPanel(s), h('h3', {}, t('files_settings')), ...filesPanel(s)]),
    err, h('button', { type: 'submit', class: 'primary' }, t('save')));
    if (part === 'system') clear(body).append(...[await updateBlock(), v.info.on_box ? restartBlock() : null, await installBlock()].filter(Boolean));
    else clear(body).append(form);
  };
  render();
  return section;
}

const mib = (bytes) => (bytes >= 10 * 2 ** 30 ? `${Math.round(bytes / 2 ** 30)} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`);

/** Live system (CD or USB stick): install on one of this computer's disks.
 *  The box erases it, carries its data over and turns off. */
async function installBlock() {
  let v;
  try { v = await get('/admin/install'); } catch { return null; }
  if (!v.live) return null;
  const choice = { disk: v.disks.length === 1 ? v.disks[0].name : null };
  const confirm = h('input', { autocapitalize: 'none', spellcheck: 'false', autocomplete: 'off', 'data-key': 'install.confirm' });
  const err = formError();
  const disks = h('div', { class: 'choices', role: 'radiogroup' }, v.disks.map((d) => {
    const r = h('input', { type: 'radio', name: 'install-disk', value: d.name, checked: choice.disk === d.name });
    r.addEventListener('change', () => { if (r.checked) choice.disk = d.name; });
    return h('label', { class: 'check' }, r, ' ', h('code', {}, d.name), ` — ${mib(d.size)}${d.model ? ' · ' + d.model : ''}${d.removable ? ' · ' + t('install_removable') : ''}`);
  }));
  const form = h('form', { class: 'stack install', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    if (!choice.disk) { showFormError(err, new Error(t('install_pick'))); return; }
    try {
      await post('/admin/install', { disk: choice.disk, confirm: confirm.value.trim() });
      clear(form).append(h('h3', {}, t('install_title')), h('p', { role: 'status' }, t('install_started', { disk: choice.disk })));
    } catch (e) { showFormError(err, e); }
  } },
  h('h3', {}, t('install_title')), h('p', {}, t('install_intro')),
  v.disks.length ? disks : h('p', { class: 'muted' }, t('install_no_disk')),
  v.disks.length ? field(t('install_confirm'), confirm) : null, err,
  v.disks.length ? h('button', { type: 'submit', class: 'danger' }, t('install_go')) : null);
  return form;
}

/** A signed update bundle (parvis-x86_64-<version>.update): verified by
 *  the box, which restarts into it and falls back if it never gets healthy. */
async function updateBlock() {
  let status;
  try { status = await get('/status'); } catch { status = {}; }
  const file = h('input', { type: 'file', accept: '.update', 'data-key': 'update.file' });
  const err = formError();
  const out = h('p', { role: 'status' });
  const form = h('form', { class: 'stack', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const f = file.files[0];
    if (!f) { showFormError(err, new Error(t('update_choose'))); return; }
    out.textContent = t('update_sending');
    try {
      const r = await post('/admin/update', f);
      out.textContent = t('update_installed', { entry: r.installed });
    } catch (e) { out.textContent = ''; showFormError(err, e); }
  } },
  h('h3', {}, t('update_title')), h('p', {}, t('update_intro', { version: status.image_version || status.version || '?' })),
  field(t('update_file'), file), err, out, h('button', { type: 'submit', class: 'secondary' }, t('update_go')));
  return form;
}

/** On the box: restart it (a network change applies at start). */
function restartBlock() {
  const err = formError();
  const out = h('p', { role: 'status' });
  const button = h('button', { type: 'submit', class: 'danger', id: 'box-restart' }, t('restart_go'));
  const form = h('form', { class: 'stack', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    if (!window.confirm(t('restart_confirm'))) return;
    try {
      await post('/admin/restart');
      button.disabled = true;
      out.textContent = t('restart_started');
    } catch (e) { showFormError(err, e); }
  } },
  h('h3', {}, t('restart_title')), h('p', {}, t('restart_intro')), err, out, button);
  return form;
}

/** For admins: the certificate alert, if any (shown as a banner). */
export async function certificateAlert() {
  try { return (await get('/admin/settings')).certificate?.alert || null; } catch { return null; }
}
