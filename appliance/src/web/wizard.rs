//! The first-boot wizard. Its protocol: `POST /api/setup/unlock {code}`
//! (the one-time setup code, rate limited) gives a setup token; every other
//! wizard call carries it in `X-Setup-Token`. The draft (settings, admin
//! account with its password already hashed, the step reached) lives in
//! `<data>/wizard.json`, so a reboot mid-way resumes where it stopped.
//! `POST /api/setup/finish` creates the admin, the company and the General
//! room, applies the settings, and logs the admin in. Once setup is done
//! every wizard call answers 409.

use std::path::{Path, PathBuf};

use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::{check_password, hash_password, start_session};
use super::{ApiError, ApiResult, AppError, ClientIp, Json, State};
use crate::auth;
use crate::config::{AcmeChallenge, ConfigError, TlsMode};
use crate::settings::Settings;
use crate::store::rooms::{self, Visibility};
use crate::store::users::{self, Role, User};
use crate::store::{self, StoreError};

/// A port to forward on the router for guests outside.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Forward {
    /// A port or a range (`49152-65535`).
    pub port: String,
    /// `tcp`, `udp` or `udp+tcp`.
    pub proto: String,
    pub what: String,
}

/// What the admin needs to decide: addresses, certificate, ports to forward.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BoxInfo {
    pub hostname: Option<String>,
    pub addresses: Vec<String>,
    pub network: String,
    pub https_port: u16,
    pub http_port: u16,
    /// SHA-256 of the local CA certificate.
    pub ca_fingerprint: String,
    /// Where the local CA certificate is downloaded.
    pub ca_url: String,
    /// An IPv4 address of the box, offered as the public address.
    pub detected_address: Option<String>,
    pub forward: Vec<Forward>,
    /// The box's own origins, for the "does this browser trust it?" check:
    /// its `.local` name, its LAN addresses and other dotted names, never
    /// `localhost`, a loopback address or a bare host name (in a colleague's
    /// browser those are their own machine, or whatever their DNS says).
    pub trust_origins: Vec<String>,
    /// Parvis runs on its box (updates, restart, install are possible).
    pub on_box: bool,
}

pub(super) fn info(state: &State, s: &Settings) -> BoxInfo {
    let addrs = crate::system::net::local_addresses();
    let base = state.settings.base();
    let https_port = base.https.port();
    let fwd = |port: String, proto: &str, what: &str| Forward { port, proto: proto.into(), what: what.into() };
    let mut forward = vec![
        fwd(https_port.to_string(), "tcp", "HTTPS and TURN over TLS"),
        fwd(base.downloads.port().to_string(), "tcp", "downloads of shared files"),
    ];
    if base.turn.enabled {
        for l in &base.turn.listen {
            forward.push(fwd(l.port().to_string(), "udp+tcp", "STUN/TURN"));
        }
        forward.push(fwd(format!("{}-{}", s.relay_port_min, s.relay_port_max), "udp", "TURN relays"));
    }
    if s.tls.mode == TlsMode::Acme && s.tls.acme_challenge == AcmeChallenge::Http01 {
        forward.push(fwd(base.http.port().to_string(), "tcp", "ACME HTTP-01 (the CA connects to port 80)"));
    }
    BoxInfo {
        hostname: crate::system::net::hostname(),
        addresses: addrs.iter().map(ToString::to_string).collect(),
        network: "configured by the system (DHCP or static)".into(),
        https_port,
        http_port: base.http.port(),
        ca_fingerprint: state.certs.ca_fingerprint.clone(),
        ca_url: "/parvis-ca.pem".into(),
        detected_address: addrs.iter().find(|ip| ip.is_ipv4()).map(ToString::to_string),
        forward,
        trust_origins: trust_probes(&state.settings.own_origins()),
        on_box: crate::system::update::on_a_box(&crate::system::update::BoxPaths::default()),
    }
}

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
        AppError::internal("cannot save the wizard's progress")
    })
}

fn data_dir(state: &State) -> &Path {
    &state.settings.base().data
}

fn setup_pending(state: &State) -> ApiResult<()> {
    match state.setup_code.lock().expect("poisoned").is_some() {
        true => Ok(()),
        false => Err(AppError::new(StatusCode::CONFLICT, "already_setup", "this box is already set up")),
    }
}

/// The setup code check shared by the wizard and `POST /api/setup`: ten
/// tries per address and ten in all per 10 minutes (counted first), 409
/// once the box is set up.
pub(super) fn check_setup_code(state: &State, ip: &ClientIp, given: &str) -> ApiResult<()> {
    let now = state.chat.clock.now_ms();
    setup_pending(state)?;
    state.auth.links.take(&[(&ip.0, 10), ("*", 10)], now).map_err(AppError::too_many)?;
    let code = state.setup_code.lock().expect("poisoned").clone().unwrap_or_default();
    if !auth::setup_code_matches(given, &code) {
        return Err(AppError::forbidden("wrong setup code (it is printed on the box's console and in its log)"));
    }
    state.auth.links.give_back(&[&ip.0, "*"], now);
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
    state.settings.set_company(name);
    Ok(user)
}

/// Setup is over: the code is forgotten (memory and disk).
pub(super) fn end_setup(state: &State) {
    *state.setup_code.lock().expect("poisoned") = None;
    let _ = std::fs::remove_file(data_dir(state).join("setup-code"));
}

/// The draft of the caller's setup token.
fn authorized_draft(state: &State, headers: &HeaderMap) -> ApiResult<Draft> {
    setup_pending(state)?;
    let token = headers.get("x-setup-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let draft = load_draft(data_dir(state)).ok_or_else(|| AppError::forbidden("enter the setup code first"))?;
    let given = hex::encode(auth::token_hash(token));
    use subtle::ConstantTimeEq;
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(draft.token_hash.as_bytes())) {
        return Err(AppError::forbidden("setup session expired: enter the setup code again"));
    }
    Ok(draft)
}

/// The admin account as the draft holds it (never the password).
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftAdmin {
    pub username: String,
    pub display_name: String,
    pub password_set: bool,
}

/// The wizard's progress as the page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftView {
    /// The step reached (1-based).
    pub step: u32,
    pub settings: Settings,
    pub admin: DraftAdmin,
    pub info: BoxInfo,
}

fn draft_view(state: &State, d: &Draft) -> DraftView {
    DraftView {
        step: d.step,
        settings: d.settings.clone(),
        admin: DraftAdmin { username: d.username.clone(), display_name: d.display_name.clone(), password_set: !d.password_hash.is_empty() },
        info: info(state, &d.settings),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlockReq {
    code: String,
    /// The browser's language, for a wizard not started yet.
    #[serde(default)]
    language: Option<String>,
}

/// The setup token (send it in `X-Setup-Token`) and the draft so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unlocked {
    pub token: String,
    pub draft: DraftView,
}

#[utoipa::path(post, path = "/setup/unlock", tag = "wizard", request_body = UnlockReq,
    responses((status = 200, body = Unlocked), (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)))]
pub async fn unlock(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<UnlockReq>) -> ApiResult<axum::Json<Unlocked>> {
    check_setup_code(&state, &ip, &req.code)?;
    let token = auth::new_token(&mut rand::rng());
    let mut draft = load_draft(data_dir(&state)).unwrap_or_else(|| Draft { settings: state.settings.current(), ..Draft::default() });
    if draft.step == 0
        && let Some(l) = req.language.filter(|l| l == "fr" || l == "en") {
            draft.settings.language = l;
        }
    draft.token_hash = hex::encode(auth::token_hash(&token));
    save_draft(data_dir(&state), &draft)?;
    Ok(axum::Json(Unlocked { token, draft: draft_view(&state, &draft) }))
}

#[utoipa::path(get, path = "/setup/draft", tag = "wizard", params(("x-setup-token" = String, Header)),
    responses((status = 200, body = DraftView), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn get_draft(AxState(state): AxState<State>, headers: HeaderMap) -> ApiResult<axum::Json<DraftView>> {
    let d = authorized_draft(&state, &headers)?;
    Ok(axum::Json(draft_view(&state, &d)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminReq {
    username: String,
    display_name: String,
    /// Empty keeps the password given earlier.
    #[serde(default)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
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
            bad("admin.password", why.message);
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
        "federation" | "federation_allow" => 6,
        _ => 7,
    }
}

/// Saves a step: only what the steps up to it ask for is judged (422 with
/// every problem, keyed like the configuration).
#[utoipa::path(put, path = "/setup/draft", tag = "wizard", request_body = StepReq, params(("x-setup-token" = String, Header)),
    responses((status = 200, body = DraftView), (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn put_draft(AxState(state): AxState<State>, headers: HeaderMap, Json(req): Json<StepReq>) -> ApiResult<axum::Json<DraftView>> {
    let mut d = authorized_draft(&state, &headers)?;
    let mut errors: Vec<ConfigError> =
        req.settings.check(state.settings.base()).into_iter().filter(|e| step_of(&e.key) < req.step.max(2)).collect();
    if let Some(a) = &req.admin {
        errors.extend(check_admin(a, !d.password_hash.is_empty()));
    }
    if !errors.is_empty() {
        return Err(AppError::invalid(errors));
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
    save_draft(data_dir(&state), &d)?;
    Ok(axum::Json(draft_view(&state, &d)))
}

/// Creates the admin, the company and the General room, applies the
/// settings, logs the admin in.
#[utoipa::path(post, path = "/setup/finish", tag = "wizard", params(("x-setup-token" = String, Header)),
    responses((status = 200, body = super::account::SessionInfo), (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn finish(AxState(state): AxState<State>, headers: HeaderMap) -> ApiResult<Response> {
    let d = authorized_draft(&state, &headers)?;
    let mut errors = d.settings.check(state.settings.base());
    if d.username.is_empty() || d.password_hash.is_empty() {
        errors.push(ConfigError { key: "admin.username".into(), reason: "create the admin account first".into() });
    }
    if !errors.is_empty() {
        return Err(AppError::invalid(errors));
    }
    let (company, username, display, hash) =
        (d.settings.company.trim().to_string(), d.username.clone(), d.display_name.clone(), d.password_hash.clone());
    let user = claim(&state, company, username, display, hash).await?;
    if let Err(e) = state.settings.apply(d.settings.clone()).await {
        tracing::error!("setup: applying the settings: {e:#}");
        return Err(AppError::internal(format!("the settings could not be applied: {e}")));
    }
    end_setup(&state);
    let _ = std::fs::remove_file(draft_path(data_dir(&state)));
    tracing::info!(admin = %user.username, name = %d.settings.name, "setup complete");
    start_session(&state, user).await
}

/// For the wizard's "does this browser trust the box?" check: a page on
/// one of the box's names fetches this from another of its names. Public,
/// says nothing; readable cross-origin only by the box's own origins.
#[utoipa::path(get, path = "/trust", tag = "wizard", responses((status = 200, body = Object, example = json!({"trusted": true}))))]
pub async fn trust(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    let mut res = axum::Json(serde_json::json!({"trusted": true})).into_response();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && state.settings.own_origins().iter().any(|o| o == origin)
            && let Ok(v) = HeaderValue::from_str(origin) {
                res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                res.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
            }
    res
}

/// The origins worth probing from a colleague's browser (see `trust_origins`).
fn trust_probes(origins: &[String]) -> Vec<String> {
    origins
        .iter()
        .filter(|o| {
            let host = o.trim_start_matches("https://").split(':').next().unwrap_or("");
            let loopback = host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
            host != "localhost" && !host.ends_with(".localhost") && !loopback && host.contains('.')
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_trust_check_probes_only_the_boxs_own_names() {
        let all: Vec<String> = ["localhost", "127.0.0.1", "office", "office.local", "192.168.1.20", "chat.example.com"]
            .iter()
            .map(|n| format!("https://{n}:8443"))
            .collect();
        assert_eq!(
            super::trust_probes(&all),
            ["https://office.local:8443", "https://192.168.1.20:8443", "https://chat.example.com:8443"]
        );
    }
}
