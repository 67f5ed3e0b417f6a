//! The first-boot wizard and the admin Settings page. Both edit the same
//! [`Settings`] and validate them through [`Config::check`]; both apply
//! without a restart (certificates, box name, TURN addresses) and persist to
//! the configuration file.
//!
//! Wizard protocol: `POST /api/setup/unlock {code}` (the one-time setup
//! code, rate limited) gives a setup token; every other wizard call carries
//! it in `X-Setup-Token`. The draft (settings, admin account with its
//! password already hashed, the step reached) lives in `<data>/wizard.json`,
//! so a reboot mid-way resumes where it stopped. `POST /api/setup/finish`
//! creates the admin, the company and the General room, applies, and logs
//! the admin in. Once setup is done every wizard call answers 409.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{hash_password, start_session};
use super::{ApiResult, AppError, ClientIp, CurrentUser, State};
use crate::auth::{self, check_password};
use crate::config::{Config, ConfigError, Federation, NetworkConfig, TlsConfig};
use crate::store::rooms::{self, Visibility};
use crate::store::users::{self, Role, User};
use crate::store::{self, StoreError};

/// What the wizard and the Settings page edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Default language of the interface: `fr` or `en`.
    pub language: String,
    pub company: String,
    /// Box name (`<name>.local`, certificate).
    pub name: String,
    pub tls: TlsConfig,
    /// Public address of the box for guests outside the LAN (TURN).
    pub turn_external_address: Option<IpAddr>,
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    /// Upload speed of the internet connection, Mbit/s (0: not stated): the
    /// relay's total bandwidth cap follows from it.
    pub turn_uplink_mbps: u32,
    pub federation: Federation,
    /// The box's address (DHCP or static), used from its next start.
    pub network: NetworkConfig,
}

impl Settings {
    pub fn from_config(c: &Config, company: String, language: String) -> Settings {
        Settings {
            language,
            company,
            name: c.name.clone(),
            tls: c.tls.clone(),
            turn_external_address: c.turn.external_address,
            relay_port_min: c.turn.relay_port_min,
            relay_port_max: c.turn.relay_port_max,
            turn_uplink_mbps: c.turn.uplink_mbps,
            federation: c.federation,
            network: c.network.clone(),
        }
    }

    /// `base` with these settings.
    pub fn config(&self, base: &Config) -> Config {
        let mut c = base.clone();
        c.name = self.name.clone();
        c.tls = self.tls.clone();
        c.turn.external_address = self.turn_external_address;
        c.turn.relay_port_min = self.relay_port_min;
        c.turn.relay_port_max = self.relay_port_max;
        c.turn.uplink_mbps = self.turn_uplink_mbps;
        c.federation = self.federation;
        c.network = self.network.clone();
        c
    }

    /// Every problem, keyed like the configuration (`company`, `language` too).
    pub fn check(&self, base: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !matches!(self.language.as_str(), "fr" | "en") {
            errors.push(ConfigError { key: "language".into(), reason: "fr or en".into() });
        }
        let company = self.company.trim();
        if company.is_empty() || company.chars().count() > 100 {
            errors.push(ConfigError { key: "company".into(), reason: "1 to 100 characters".into() });
        }
        errors.extend(self.config(base).check());
        errors
    }
}

/// Writes the settings into the configuration file, keeping its other keys.
pub fn persist(file: &Path, s: &Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut doc: toml::Table = match std::fs::read_to_string(file) {
        Ok(text) => text.parse().with_context(|| format!("{} is not valid TOML", file.display()))?,
        Err(_) => toml::Table::new(),
    };
    doc.insert("name".into(), toml::Value::String(s.name.clone()));
    doc.insert("federation".into(), toml::Value::try_from(s.federation)?);
    doc.insert("tls".into(), toml::Value::try_from(&s.tls)?);
    doc.insert("network".into(), toml::Value::try_from(&s.network)?);
    let turn = doc.entry("turn").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let turn = turn.as_table_mut().context("turn is not a table")?;
    match s.turn_external_address {
        Some(ip) => turn.insert("external_address".into(), toml::Value::String(ip.to_string())),
        None => turn.remove("external_address"),
    };
    turn.insert("relay_port_min".into(), toml::Value::Integer(s.relay_port_min.into()));
    turn.insert("relay_port_max".into(), toml::Value::Integer(s.relay_port_max.into()));
    turn.insert("uplink_mbps".into(), toml::Value::Integer(s.turn_uplink_mbps.into()));
    crate::certs::local::write_file(file, &toml::to_string_pretty(&doc)?, true)?;
    Ok(())
}

/// `https://<name>[:port]` for each name or address.
/// IPv6 literals are left out: CSP source lists cannot name them.
pub fn origins(names: &[String], https_port: u16) -> Vec<String> {
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    names.iter().filter(|n| !n.contains(':')).map(|n| format!("https://{n}{port}")).collect()
}

/// Makes `new` the live settings: stored, persisted, applied.
pub async fn apply(state: &State, new: Settings) -> anyhow::Result<()> {
    let old = state.settings.lock().expect("poisoned").clone();
    persist(&state.config_file, &new)?;
    let (company, language) = (new.company.trim().to_string(), new.language.clone());
    state
        .chat
        .db
        .write(move |ctx| {
            store::set_setting(ctx.conn, "company", &company)?;
            store::set_setting(ctx.conn, "language", &language)
        })
        .await?;
    *state.settings.lock().expect("poisoned") = new.clone();
    if old.name != new.name || old.tls != new.tls {
        *state.box_name.write().expect("poisoned") = new.name.clone();
        // the certificate manager reissues the local certificate for the new
        // name and follows the new ACME settings
        state.tls_settings.send_replace(new.tls.clone());
    }
    if old.name != new.name {
        if let Some(m) = &state.mdns {
            m.announce(&new.name);
        }
        let names = crate::certs::local::names_for(&new.name, crate::system::net::hostname().as_deref(), &crate::system::net::local_addresses());
        *state.own_origins.write().expect("poisoned") = origins(&names, state.config.https.port());
    }
    if (old.turn_external_address, old.relay_port_min, old.relay_port_max, old.turn_uplink_mbps)
        != (new.turn_external_address, new.relay_port_min, new.relay_port_max, new.turn_uplink_mbps)
        && let Some(t) = &state.turn {
            let (v4, v6) = match new.turn_external_address {
                Some(ip @ IpAddr::V4(_)) => (Some(ip), None),
                Some(ip @ IpAddr::V6(_)) => (None, Some(ip)),
                None => (None, None),
            };
            t.reconfigure(netstack::driver::Reconfigure {
                external_v4: v4,
                external_v6: v6,
                relay_ports: new.relay_port_min..=new.relay_port_max,
                total_bandwidth_bytes_per_sec: new.config(&state.config).turn.total_kbps() * 1000 / 8,
            })
            .await?;
        }
    tracing::info!(name = %new.name, tls = ?new.tls.mode, "settings applied");
    Ok(())
}

fn invalid(errors: Vec<ConfigError>) -> Response {
    let msg = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "invalid", "message": msg, "errors": errors}))).into_response()
}

/// What the admin needs to decide: addresses, certificate, ports to forward.
fn info(state: &State, s: &Settings) -> Value {
    let addrs = crate::system::net::local_addresses();
    let https_port = state.config.https.port();
    let mut forward = vec![json!({"port": https_port, "proto": "tcp", "what": "HTTPS and TURN over TLS"})];
    if state.config.turn.enabled {
        for l in &state.config.turn.listen {
            forward.push(json!({"port": l.port(), "proto": "udp+tcp", "what": "STUN/TURN"}));
        }
        forward.push(json!({"port": format!("{}-{}", s.relay_port_min, s.relay_port_max), "proto": "udp", "what": "TURN relays"}));
    }
    if s.tls.mode == crate::config::TlsMode::Acme && s.tls.acme_challenge == crate::config::AcmeChallenge::Http01 {
        forward.push(json!({"port": state.config.http.port(), "proto": "tcp", "what": "ACME HTTP-01 (the CA connects to port 80)"}));
    }
    let detected = addrs.iter().copied().find(|ip| ip.is_ipv4());
    json!({
        "hostname": crate::system::net::hostname(),
        "addresses": addrs,
        "network": "configured by the system (DHCP or static)",
        "https_port": https_port,
        "http_port": state.config.http.port(),
        "ca_fingerprint": state.ca_fingerprint,
        "ca_url": "/parvis-ca.pem",
        "detected_address": detected,
        "forward": forward,
        "trust_origins": *state.own_origins.read().expect("poisoned"),
        "on_box": crate::system::update::on_a_box(&crate::system::update::BoxPaths::default()),
    })
}

// ---- the wizard ------------------------------------------------------------

/// The wizard's progress, kept in `<data>/wizard.json` (mode 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Draft {
    token_hash: String,
    step: u32,
    settings: Settings,
    username: String,
    display_name: String,
    password_hash: String,
}

fn draft_path(data: &Path) -> PathBuf {
    data.join("wizard.json")
}

fn load_draft(data: &Path) -> Option<Draft> {
    serde_json::from_str(&std::fs::read_to_string(draft_path(data)).ok()?).ok()
}

fn save_draft(data: &Path, d: &Draft) -> ApiResult<()> {
    let text = serde_json::to_string_pretty(d).expect("serializes");
    crate::certs::local::write_file(&draft_path(data), &text, true).map_err(|e| {
        tracing::error!("wizard: {e}");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot save the wizard's progress")
    })
}

fn setup_pending(state: &State) -> ApiResult<()> {
    match state.setup_code.lock().expect("poisoned").is_some() {
        true => Ok(()),
        false => Err(AppError::new(StatusCode::CONFLICT, "already_setup", "this box is already set up")),
    }
}

/// The setup code check shared by the wizard and `POST /api/setup`: rate
/// limited per address and overall, 409 once the box is set up.
pub(super) fn check_setup_code(state: &State, ip: &ClientIp, given: &str) -> ApiResult<()> {
    let now = state.chat.clock.now_ms();
    setup_pending(state)?;
    // ten tries per address and ten in all per 10 minutes: counted first
    state.setup_limiter.take(&[(&ip.0, 10), ("*", 10)], now).map_err(AppError::too_many)?;
    let code = state.setup_code.lock().expect("poisoned").clone().unwrap_or_default();
    if !auth::setup_code_matches(given, &code) {
        return Err(AppError::forbidden("wrong setup code (it is printed on the box's console and in its log)"));
    }
    state.setup_limiter.give_back(&[&ip.0, "*"], now);
    Ok(())
}

/// Claims the box in one transaction: the company, the first admin (its
/// password already hashed) and the General group. Refused if an admin
/// exists (two setups racing).
pub(super) async fn claim(state: &State, company: String, username: String, display_name: String, hash: String) -> ApiResult<User> {
    let name = company.clone();
    let user = state
        .chat
        .write(move |c, now| {
            if users::admin_exists(c)? {
                return Err(StoreError::Conflict("this box is already set up"));
            }
            store::set_setting(c, "company", &company)?;
            let admin = users::create_user(c, &username, &display_name, &hash, Role::Admin, now)?;
            let (_, published) = rooms::create_group(c, admin.id, "General", "", Visibility::Open, &[], now)?;
            Ok((admin, published))
        })
        .await?;
    state.settings.lock().expect("poisoned").company = name;
    Ok(user)
}

/// Setup is over: the code is forgotten (memory and disk).
pub(super) fn end_setup(state: &State) {
    *state.setup_code.lock().expect("poisoned") = None;
    let _ = std::fs::remove_file(state.config.data.join("setup-code"));
}

/// The draft of the caller's setup token.
fn authorized_draft(state: &State, headers: &HeaderMap) -> ApiResult<Draft> {
    setup_pending(state)?;
    let token = headers.get("x-setup-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let draft = load_draft(&state.config.data).ok_or_else(|| AppError::forbidden("enter the setup code first"))?;
    let given = hex::encode(auth::token_hash(token));
    use subtle::ConstantTimeEq;
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(draft.token_hash.as_bytes())) {
        return Err(AppError::forbidden("setup session expired: enter the setup code again"));
    }
    Ok(draft)
}

fn draft_view(state: &State, d: &Draft) -> Value {
    json!({
        "step": d.step,
        "settings": d.settings,
        "admin": {"username": d.username, "display_name": d.display_name, "password_set": !d.password_hash.is_empty()},
        "info": info(state, &d.settings),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockReq {
    code: String,
    #[serde(default)]
    language: Option<String>,
}

pub async fn unlock(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<UnlockReq>) -> ApiResult<Json<Value>> {
    check_setup_code(&state, &ip, &req.code)?;
    let token = auth::new_token(&mut rand::rngs::OsRng);
    let mut draft = load_draft(&state.config.data).unwrap_or_else(|| Draft {
        settings: state.settings.lock().expect("poisoned").clone(),
        ..Draft::default()
    });
    if draft.step == 0
        && let Some(l) = req.language.filter(|l| l == "fr" || l == "en") {
            draft.settings.language = l;
        }
    draft.token_hash = hex::encode(auth::token_hash(&token));
    save_draft(&state.config.data, &draft)?;
    Ok(Json(json!({"token": token, "draft": draft_view(&state, &draft)})))
}

pub async fn get_draft(AxState(state): AxState<State>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let d = authorized_draft(&state, &headers)?;
    Ok(Json(draft_view(&state, &d)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminReq {
    username: String,
    display_name: String,
    /// Empty keeps the password given earlier.
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepReq {
    /// The step the wizard moves to once this one is saved.
    step: u32,
    settings: Settings,
    #[serde(default)]
    admin: Option<AdminReq>,
}

/// Problems of the admin account part, keyed `admin.*`.
fn check_admin(a: &AdminReq, have_password: bool) -> Vec<ConfigError> {
    let mut e = Vec::new();
    let mut bad = |key: &str, reason: String| e.push(ConfigError { key: key.into(), reason });
    if let Err(StoreError::Invalid(why)) = users::check_username(&a.username) {
        bad("admin.username", why);
    }
    if let Err(StoreError::Invalid(why)) = users::check_display_name(&a.display_name) {
        bad("admin.display_name", why);
    }
    if !(a.password.is_empty() && have_password)
        && let Err(why) = check_password(&a.password) {
            bad("admin.password", why.into());
        }
    e
}

/// The wizard step where a setting is asked (1-based).
fn step_of(key: &str) -> u32 {
    match key.split('.').next().unwrap_or("") {
        "language" => 1,
        "company" | "admin" => 2,
        "name" | "mdns" | "network" => 3,
        "tls" => 4,
        "turn" => 5,
        "federation" => 6,
        _ => 7,
    }
}

pub async fn put_draft(AxState(state): AxState<State>, headers: HeaderMap, Json(req): Json<StepReq>) -> ApiResult<Response> {
    let mut d = authorized_draft(&state, &headers)?;
    // only what the steps up to this one asked for: later ones come later
    let mut errors: Vec<ConfigError> =
        req.settings.check(&state.config).into_iter().filter(|e| step_of(&e.key) < req.step.max(2)).collect();
    if let Some(a) = &req.admin {
        errors.extend(check_admin(a, !d.password_hash.is_empty()));
    }
    if !errors.is_empty() {
        return Ok(invalid(errors));
    }
    if let Some(a) = req.admin {
        d.username = a.username;
        d.display_name = a.display_name.trim().to_string();
        if !a.password.is_empty() {
            d.password_hash = hash_password(&state, a.password).await?;
        }
    }
    d.settings = req.settings;
    d.step = req.step.min(20);
    save_draft(&state.config.data, &d)?;
    Ok(Json(draft_view(&state, &d)).into_response())
}

pub async fn finish(AxState(state): AxState<State>, headers: HeaderMap) -> ApiResult<Response> {
    let d = authorized_draft(&state, &headers)?;
    let mut errors = d.settings.check(&state.config);
    if d.username.is_empty() || d.password_hash.is_empty() {
        errors.push(ConfigError { key: "admin.username".into(), reason: "create the admin account first".into() });
    }
    if !errors.is_empty() {
        return Ok(invalid(errors));
    }
    let (company, username, display, hash) =
        (d.settings.company.trim().to_string(), d.username.clone(), d.display_name.clone(), d.password_hash.clone());
    let user = claim(&state, company, username, display, hash).await?;
    if let Err(e) = apply(&state, d.settings.clone()).await {
        tracing::error!("setup: applying the settings: {e:#}");
        return Err(AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the settings could not be applied: {e}")));
    }
    end_setup(&state);
    let _ = std::fs::remove_file(draft_path(&state.config.data));
    tracing::info!(admin = %user.username, name = %d.settings.name, "setup complete");
    start_session(&state, user).await
}

// ---- Settings (admins, after setup) ----------------------------------------

fn settings_view(state: &State) -> Value {
    let s = state.settings.lock().expect("poisoned").clone();
    let cert = state.cert_status.lock().expect("poisoned").clone();
    json!({"settings": s, "info": info(state, &s), "certificate": cert})
}

pub async fn get_settings(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Json<Value>> {
    me.require_admin()?;
    Ok(Json(settings_view(&state)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsReq {
    settings: Settings,
}

pub async fn put_settings(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<SettingsReq>) -> ApiResult<Response> {
    me.require_admin()?;
    let errors = req.settings.check(&state.config);
    if !errors.is_empty() {
        return Ok(invalid(errors));
    }
    apply(&state, req.settings).await.map_err(|e| {
        tracing::error!("settings: {e:#}");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the settings could not be applied: {e}"))
    })?;
    Ok(Json(settings_view(&state)).into_response())
}

pub async fn renew_certificate(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Json<Value>> {
    me.require_admin()?;
    state.cert_renew.notify_one();
    Ok(Json(json!({"ok": true})))
}

/// An admin uploads a signed update bundle: verified, installed as the next
/// boot entry, then the box reboots into it (202 first).
pub async fn upload_update(AxState(state): AxState<State>, me: CurrentUser, body: axum::body::Bytes) -> ApiResult<Response> {
    me.require_admin()?;
    // This version's copy of the database, for going back to it if the new
    // version migrates the schema and then fails.
    if let Err(e) = state.chat.db.keep_rollback_copy().await {
        tracing::error!("update: database copy: {e}");
        return Err(AppError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "no_rollback_copy",
            "the database could not be copied for a rollback, so the update was not installed",
        ));
    }
    let running = crate::system::update::running_version();
    let installed = tokio::task::spawn_blocking(move || crate::system::update::install(&crate::system::update::BoxPaths::default(), &body, &running))
        .await
        .map_err(|_| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"))?;
    if installed.is_err() {
        state.chat.db.forget_rollback_copy();
    }
    match installed {
        Ok(path) => {
            tracing::warn!(by = %me.user.username, "update {} installed; rebooting", path.display());
            state.end_soon(crate::serve::Exit::Reboot);
            Ok((StatusCode::ACCEPTED, Json(json!({"installed": path.file_name().and_then(|n| n.to_str()), "rebooting": true}))).into_response())
        }
        Err(e @ crate::system::update::UpdateError::NoBox(_)) => Err(AppError::new(StatusCode::CONFLICT, "not_a_box", e.to_string())),
        Err(crate::system::update::UpdateError::Io(e)) => {
            tracing::error!("update: {e}");
            Err(AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the update could not be written"))
        }
        Err(e) => Err(AppError::new(StatusCode::BAD_REQUEST, "bad_update", e.to_string())),
    }
}

/// For the wizard's "does this browser trust the box?" check: a page on
/// one of the box's names fetches this from another of its names. Public,
/// says nothing; readable cross-origin only by the box's own origins.
pub async fn trust(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    let mut res = Json(json!({"trusted": true})).into_response();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && state.own_origins.read().expect("poisoned").iter().any(|o| o == origin)
            && let Ok(v) = HeaderValue::from_str(origin) {
                res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                res.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
            }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisting_keeps_the_files_other_keys_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("parvis.toml");
        std::fs::write(&file, "https = \"0.0.0.0:443\"\n[chat]\nsend_rate = 30\n[turn]\nuser_quota = 10\n").unwrap();
        let mut s = Settings::from_config(&Config::default(), "Acme".into(), "fr".into());
        s.name = "office".into();
        s.turn_external_address = Some("203.0.113.9".parse().unwrap());
        s.tls.mode = crate::config::TlsMode::Acme;
        s.tls.acme_domains = vec!["chat.example.com".into()];
        persist(&file, &s).unwrap();
        let c = Config::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!((c.name.as_str(), c.https.port(), c.chat.send_rate, c.turn.user_quota), ("office", 443, 30, 10));
        assert_eq!(Settings::from_config(&c, "Acme".into(), "fr".into()), s);
        assert!(s.check(&c).is_empty());
    }

    #[test]
    fn settings_are_checked_like_the_configuration() {
        let base = Config::default();
        let mut s = Settings::from_config(&base, String::new(), "de".into());
        s.name = "Bad Name".into();
        s.relay_port_min = 60000;
        let keys: Vec<String> = s.check(&base).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["language", "company", "name", "turn.relay_port_min"]);
    }
}
