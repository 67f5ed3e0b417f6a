//! Guests by link: a room's owners (and admins) make links; anyone holding
//! one comes into that one room with a name, no account. Guests are held to
//! a short list of requests (`guest_may`) and, on the WebSocket, to their
//! link's permissions.

use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::account::{check_password, company, hash_password, start_session_until, verify_password};
use super::{ApiError, ApiResult, AppError, ClientIp, CurrentUser, Json, Path, State};
use crate::auth;
use crate::store::guests::{self, GuestLink, NewLink, Perms};
use crate::store::{Millis, RoomId, StoreError};

/// A link's life by default (7 days, or the admin's maximum if shorter),
/// and a customer call's (2 hours). The maximum is a setting
/// (`guests.max_link_days`).
pub const DEFAULT_HOURS: u32 = 168;
pub const CUSTOMER_CALL_HOURS: u32 = 2;
/// Tries per link and per address (an IPv6 /64 counts as one) in ten minutes.
const TRIES_PER_LINK: usize = 10;
const TRIES_PER_ADDRESS: usize = 30;
/// Guests one address may bring in by valid links in ten minutes (a person
/// comes in once; a reload keeps its session).
const JOINS_PER_ADDRESS: usize = 10;

/// What a guest may ask of the API (method, route); everything else is 403.
/// A route added later is closed to guests until it is listed here.
const GUEST_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/api/me"),
    (Method::PATCH, "/api/me"),
    (Method::POST, "/api/logout"),
    (Method::GET, "/api/users"),
    (Method::GET, "/api/rooms"),
    (Method::GET, "/api/rooms/{id}"),
    (Method::GET, "/api/rooms/{id}/messages"),
    (Method::GET, "/api/search"),
    (Method::GET, "/api/ice"),
    (Method::GET, "/api/ws"),
    // files: the room's, and uploads if the link allows them (checked there)
    (Method::GET, "/api/rooms/{id}/files"),
    (Method::POST, "/api/rooms/{id}/uploads"),
    (Method::HEAD, "/api/uploads/{id}"),
    (Method::PATCH, "/api/uploads/{id}"),
    (Method::DELETE, "/api/uploads/{id}"),
];

/// What a guest still waiting to be let in may ask: who it is, and to go.
const WAITING_ROUTES: &[(Method, &str)] = &[(Method::GET, "/api/me"), (Method::POST, "/api/logout")];

pub fn guest_may(method: &Method, route: &str) -> bool {
    GUEST_ROUTES.iter().any(|(m, r)| m == method && *r == route)
}

pub fn waiting_guest_may(method: &Method, route: &str) -> bool {
    WAITING_ROUTES.iter().any(|(m, r)| m == method && *r == route)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGuestLink {
    /// Hours until it expires: 1 to the admin's maximum
    /// (`guests.max_link_days`, 30 days by default); default 168 (7 days).
    #[serde(default)]
    hours: Option<u32>,
    /// Knock: guests wait until a moderator admits them (default: false,
    /// guests come in at once).
    #[serde(default)]
    knock: bool,
    /// How many guests may come by it (absent: any number).
    #[serde(default)]
    max_uses: Option<u32>,
    /// A password guests must also give (8 characters or more).
    #[serde(default)]
    password: Option<String>,
    /// What guests may do; default: chat, calls, camera and microphone,
    /// screen sharing.
    #[serde(default)]
    perms: Option<Perms>,
    /// For the moderators' list ("Support for ACME Corp").
    #[serde(default)]
    label: String,
}

/// A new link: its token is shown this once (only its hash is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedLink {
    pub link: GuestLink,
    pub token: String,
    /// `/g/{token}`: the page a guest opens.
    pub path: String,
    /// The whole link on the box's public name (its ACME domain), when it has
    /// one; else absent (the page's own origin, which only the LAN reaches).
    pub url: Option<String>,
    /// What would stop a guest outside: the certificate their browser would
    /// not trust, calls that cannot cross the internet.
    pub warnings: Vec<LinkWarning>,
    /// The whole link as a QR code, for a phone: `url`, else the link on the
    /// origin the request came from.
    pub qr: Qr,
}

/// A QR code: `size` × `size` modules, row by row, `1` dark and `0` light
/// (draw a 4-module light margin around it).
#[derive(Debug, Serialize, ToSchema)]
pub struct Qr {
    pub size: usize,
    pub modules: String,
}

impl Qr {
    pub fn of(text: &str) -> Qr {
        // a URL of a few dozen bytes always fits (version 40 holds 2 KiB)
        let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).expect("a short link fits a QR code");
        let modules = code.to_colors().iter().map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' }).collect();
        Qr { size: code.width(), modules }
    }
}

/// `local_certificate`, `certificate_pending` or `lan_only`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LinkWarning {
    pub code: &'static str,
    pub message: String,
}

/// Where a guest from the internet should open a link, and what would stop
/// them: a customer's browser does not trust the box's own CA, so without a
/// publicly trusted certificate a guest would meet a certificate warning.
pub fn reach(s: &crate::settings::Settings, cert: &crate::certs::acme::CertStatus, https_port: u16) -> (Option<String>, Vec<LinkWarning>) {
    let mut warnings = Vec::new();
    let public = (s.tls.mode == crate::config::TlsMode::Acme).then(|| s.tls.acme_domains.first()).flatten();
    let origin = public.and_then(|d| crate::settings::origins(std::slice::from_ref(d), https_port).pop());
    match public {
        None => warnings.push(LinkWarning {
            code: "local_certificate",
            message: "this box's certificate comes from its own authority: a guest's browser will show a security warning. \
                      Give the box a public name with a publicly trusted certificate (Settings → Certificates) before inviting people from outside"
                .into(),
        }),
        Some(d) if cert.state != "valid" => warnings.push(LinkWarning {
            code: "certificate_pending",
            message: format!("the public certificate for {d} is not issued yet: until it is, a guest's browser will show a security warning"),
        }),
        Some(_) => {}
    }
    if s.turn_external_address.is_none() {
        warnings.push(LinkWarning {
            code: "lan_only",
            message: "the box has no public address for calls (Settings → Box → Calls from outside): a guest on the internet may chat but calls may not connect".into(),
        });
    }
    (origin, warnings)
}

fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::NotFound => AppError::not_found("no such room or link"),
        e => e.into(),
    }
}

#[utoipa::path(post, path = "/rooms/{id}/guest-links", tag = "guests", request_body = NewGuestLink, params(("id" = i64, Path)),
    responses((status = 200, body = CreatedLink), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn create_link(
    AxState(state): AxState<State>,
    me: CurrentUser,
    headers: HeaderMap,
    Path(room): Path<RoomId>,
    Json(req): Json<NewGuestLink>,
) -> ApiResult<axum::Json<CreatedLink>> {
    let max = state.settings.current().guests.max_link_days * 24;
    let hours = req.hours.unwrap_or(DEFAULT_HOURS.min(max));
    if !(1..=max).contains(&hours) {
        return Err(AppError::bad_request(format!("hours: between 1 and {max} (the box's maximum, Settings → Box → Guests)")));
    }
    if req.max_uses == Some(0) {
        return Err(AppError::bad_request("max_uses: 1 or more, or absent for any number"));
    }
    let password_hash = match req.password.filter(|p| !p.is_empty()) {
        Some(p) => {
            check_password(&p)?;
            Some(hash_password(&state, p).await?)
        }
        None => None,
    };
    let terms = NewLink {
        expires: 0,
        max_uses: req.max_uses.map(i64::from),
        password_hash,
        perms: req.perms.unwrap_or(Perms::SUPPORT),
        label: req.label,
        knock: req.knock,
    };
    make_link(&state, &me, &headers, room, hours, terms).await.map(axum::Json)
}

/// Stores a link for `room` that lives `hours`, and says where and how a
/// guest outside would reach it.
async fn make_link(state: &State, me: &CurrentUser, headers: &HeaderMap, room: RoomId, hours: u32, mut terms: NewLink) -> ApiResult<CreatedLink> {
    let token = auth::new_token(&mut rand::rng());
    let hash = auth::token_hash(&token);
    terms.expires = state.chat.clock.now_ms() + Millis::from(hours) * 3_600_000;
    let (by, admin) = (me.user.id, me.is_admin());
    let link = state
        .chat
        .write(move |c, now| {
            let (link, audit) = guests::create_link(c, room, by, admin, &hash, terms, now)?;
            Ok((link, vec![audit]))
        })
        .await
        .map_err(store_error)?;
    let cert = state.certs.status.lock().expect("poisoned").clone();
    let (origin, warnings) = reach(&state.settings.current(), &cert, state.settings.base().https.port());
    let path = format!("/g/{token}");
    let url = origin.map(|o| format!("{o}{path}"));
    // without a public name, the QR code holds the link on the origin the
    // moderator is using (a writing request's Origin is checked to be ours)
    let here = headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let local = here.or_else(|| state.settings.own_origins().into_iter().next()).map(|o| format!("{o}{path}"));
    let qr = Qr::of(url.as_deref().or(local.as_deref()).unwrap_or(&path));
    Ok(CreatedLink { url, link, path, token, warnings, qr })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerCallReq {
    /// For a direct conversation: the name of the room made for the call
    /// (default "Customer call").
    #[serde(default)]
    name: Option<String>,
}

/// A customer call: its room (for a direct conversation, a new room with
/// both of its people) and a link for one customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerCall {
    pub room: crate::store::rooms::RoomSummary,
    #[serde(flatten)]
    pub link: CreatedLink,
}

/// Remote support in one click: a link that lives 2 hours, in knock mode,
/// for a call with camera, microphone and screen sharing. From a direct
/// conversation, the call gets a room of its own (a guest never enters a
/// 1:1). The caller then starts the call; the guest, once admitted, lands
/// in its pre-join screen.
#[utoipa::path(post, path = "/rooms/{id}/customer-call", tag = "guests", request_body = CustomerCallReq, params(("id" = i64, Path)),
    responses((status = 200, body = CustomerCall), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn customer_call(
    AxState(state): AxState<State>,
    me: CurrentUser,
    headers: HeaderMap,
    Path(room): Path<RoomId>,
    Json(req): Json<CustomerCallReq>,
) -> ApiResult<axum::Json<CustomerCall>> {
    let uid = me.user.id;
    let name = req.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "Customer call".into());
    let room = state
        .chat
        .write(move |c, now| {
            let here = crate::store::rooms::room_summary(c, room, uid).map_err(|_| StoreError::NotFound)?;
            if here.kind != "direct" {
                return Ok((room, vec![]));
            }
            let others: Vec<_> = crate::store::rooms::members_of(c, room)?.into_iter().filter(|u| *u != uid).collect();
            let visibility = crate::store::rooms::Visibility::Invite;
            crate::store::rooms::create_group(c, uid, &name, "", visibility, &others, now)
        })
        .await
        .map_err(store_error)?;
    let terms =
        NewLink { expires: 0, max_uses: None, password_hash: None, perms: Perms::SUPPORT, label: "Customer call".into(), knock: true };
    let link = make_link(&state, &me, &headers, room, CUSTOMER_CALL_HOURS, terms).await?;
    let summary = state.chat.db.read(move |c| crate::store::rooms::room_summary(c, room, uid)).await?;
    Ok(axum::Json(CustomerCall { room: summary, link }))
}

#[utoipa::path(get, path = "/rooms/{id}/guest-links", tag = "guests", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<GuestLink>), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn list_links(AxState(state): AxState<State>, me: CurrentUser, Path(room): Path<RoomId>) -> ApiResult<axum::Json<Vec<GuestLink>>> {
    let (by, admin) = (me.user.id, me.is_admin());
    Ok(axum::Json(state.chat.db.read(move |c| guests::links(c, room, by, admin)).await.map_err(store_error)?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Also remove the guests who came by it (their sessions end now).
    #[serde(default)]
    remove_guests: bool,
}

#[utoipa::path(delete, path = "/rooms/{id}/guest-links/{link}", tag = "guests", params(("id" = i64, Path), ("link" = i64, Path), RevokeQuery),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn revoke_link(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path((room, link)): Path<(RoomId, i64)>,
    Query(q): Query<RevokeQuery>,
) -> ApiResult<StatusCode> {
    let (by, admin, remove) = (me.user.id, me.is_admin(), q.remove_guests);
    let removed = state
        .chat
        .write(move |c, now| guests::revoke_link(c, room, link, by, admin, remove, now))
        .await
        .map_err(store_error)?;
    for guest in removed {
        state.chat.hub.disconnect_user(guest, 4003, "guest link revoked");
        state.turn.revoke(&crate::turn::rest_user(guest)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/guests/waiting", tag = "guests",
    responses((status = 200, body = Vec<guests::Waiting>), (status = 401, body = ApiError)))]
/// Everyone waiting to be let in, in the rooms one moderates.
pub async fn waiting(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Vec<guests::Waiting>>> {
    let uid = me.user.id;
    let now = state.chat.clock.now_ms();
    Ok(axum::Json(state.chat.db.read(move |c| guests::waiting(c, uid, now)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdmissionReq {
    /// Let them in (`true`) or send them away (`false`).
    admit: bool,
    /// The guests decided; absent: everyone waiting in the room.
    #[serde(default)]
    guests: Option<Vec<crate::store::UserId>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Admission {
    /// The guests decided now (those no longer waiting are passed over).
    pub decided: Vec<crate::store::UserId>,
}

/// A moderator admits or denies guests waiting in the room (Admit, Deny,
/// Admit all). Nobody is admitted otherwise.
#[utoipa::path(post, path = "/rooms/{id}/admission", tag = "guests", request_body = AdmissionReq, params(("id" = i64, Path)),
    responses((status = 200, body = Admission), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn admission(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(room): Path<RoomId>,
    Json(req): Json<AdmissionReq>,
) -> ApiResult<axum::Json<Admission>> {
    if req.guests.as_ref().is_some_and(|g| g.len() > 1000) {
        return Err(AppError::bad_request("guests: at most 1000"));
    }
    let (by, admin, admit) = (me.user.id, me.is_admin(), req.admit);
    let decided = state
        .chat
        .write(move |c, now| guests::decide(c, room, by, admin, req.guests.as_deref(), admit, now))
        .await
        .map_err(store_error)?;
    if !admit {
        for g in &decided {
            state.chat.hub.disconnect_user(*g, 4003, "not admitted");
        }
    }
    Ok(axum::Json(Admission { decided }))
}

/// A guest's place, for its own page (`GET /api/me`).
#[derive(Debug, Serialize, ToSchema)]
pub struct GuestStatus {
    pub room: RoomId,
    /// Still in the waiting room: nothing of the room is shown until a
    /// moderator admits it.
    pub waiting: bool,
    pub perms: Perms,
    pub expires: Millis,
}

pub async fn guest_status(state: &State, guest: crate::store::UserId) -> ApiResult<Option<GuestStatus>> {
    let found = state.chat.db.read(move |c| guests::guest_state(c, guest)).await?;
    Ok(found.map(|(l, waiting)| GuestStatus { room: l.room, waiting, perms: l.perms, expires: l.expires }))
}

/// A guest who leaves (or gives up waiting) is gone for good: its link
/// lets it in again only as a new guest.
pub async fn guest_leaves(state: &State, guest: crate::store::UserId) -> ApiResult<()> {
    let Some(status) = guest_status(state, guest).await? else { return Ok(()) };
    let room = status.room;
    state.chat.write(move |c, now| Ok(((), guests::leave(c, room, guest, crate::store::rooms::GuestAction::Left, now)?))).await?;
    state.chat.hub.disconnect_user(guest, 4003, "left");
    state.turn.revoke(&crate::turn::rest_user(guest)).await;
    Ok(())
}

/// Guests' life cycle (`store::guests::sweep`), every ten minutes: guests
/// whose link expired are let go; former guests past the admin's retention
/// are erased.
pub async fn sweep_guests(state: State) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let keep = Millis::from(state.settings.current().guests.retention_days) * 86_400_000;
        match state.chat.write(move |c, now| guests::sweep(c, now, keep)).await {
            Ok(ended) => {
                for guest in ended {
                    state.chat.hub.disconnect_user(guest, 4003, "guest link expired");
                    state.turn.revoke(&crate::turn::rest_user(guest)).await;
                }
            }
            Err(e) => tracing::warn!("guest sweep: {e}"),
        }
    }
}

/// What a link's page shows before the guest comes in: whose box, whether a
/// password is needed. Nothing of the room.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuestLinkInfo {
    pub company: String,
    pub password: bool,
    pub expires: Millis,
}

fn gone() -> AppError {
    AppError::new(StatusCode::GONE, "link_gone", "this guest link has expired or was revoked")
}

fn unknown() -> AppError {
    AppError::not_found("this guest link is not valid")
}

#[utoipa::path(get, path = "/guest/{token}", tag = "guests", params(("token" = String, Path)),
    responses((status = 200, body = GuestLinkInfo), (status = 404, body = ApiError), (status = 410, body = ApiError), (status = 429, body = ApiError)))]
pub async fn link_info(AxState(state): AxState<State>, ip: ClientIp, Path(token): Path<String>) -> ApiResult<axum::Json<GuestLinkInfo>> {
    let now = state.chat.clock.now_ms();
    let (link, _) = find_link(&state, &ip, &token, now).await?;
    Ok(axum::Json(GuestLinkInfo { company: company(&state).await?, password: link.password, expires: link.expires }))
}

/// The live link a token names. An unknown token counts against the
/// address (before the database is read); nothing sleeps.
async fn find_link(state: &State, ip: &ClientIp, token: &str, now: Millis) -> ApiResult<(GuestLink, Option<String>)> {
    let key = format!("guest-addr:{}", ip.0);
    state.auth.links.take(&[(&key, TRIES_PER_ADDRESS)], now).map_err(AppError::too_many)?;
    let hash = auth::token_hash(token);
    let found = state.chat.db.read(move |c| guests::link_by_token(c, &hash)).await?;
    let Some((link, pw)) = found else {
        return Err(unknown());
    };
    // a link that exists is not the address's fault
    state.auth.links.give_back(&[&key], now);
    if !link.live(now) {
        return Err(gone());
    }
    Ok((link, pw))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinReq {
    display_name: String,
    #[serde(default)]
    password: Option<String>,
}

/// Comes in as a guest: a session (cookie) that lasts as long as the link.
/// Wrong passwords count against the link and the address.
#[utoipa::path(post, path = "/guest/{token}", tag = "guests", request_body = JoinReq, params(("token" = String, Path)),
    responses((status = 200, body = super::account::SessionInfo), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 410, body = ApiError), (status = 429, body = ApiError)))]
pub async fn join(AxState(state): AxState<State>, ip: ClientIp, Path(token): Path<String>, Json(req): Json<JoinReq>) -> ApiResult<Response> {
    let now = state.chat.clock.now_ms();
    crate::store::users::check_display_name(&req.display_name)?;
    let (link, pw) = find_link(&state, &ip, &token, now).await?;
    // only guests who come in count against the address
    let jkey = format!("guest-join:{}", ip.0);
    state.auth.links.take(&[(&jkey, JOINS_PER_ADDRESS)], now).map_err(AppError::too_many)?;
    let joined = come_in(&state, &ip, link, pw, req, now).await;
    if joined.is_err() {
        state.auth.links.give_back(&[&jkey], now);
    }
    joined
}

async fn come_in(state: &State, ip: &ClientIp, link: GuestLink, pw: Option<String>, req: JoinReq, now: Millis) -> ApiResult<Response> {
    if let Some(phc) = pw {
        let (lkey, akey) = (format!("guest-link:{}", link.id), format!("guest-addr:{}", ip.0));
        state.auth.links.take(&[(&lkey, TRIES_PER_LINK), (&akey, TRIES_PER_ADDRESS)], now).map_err(AppError::too_many)?;
        let given = req.password.clone().unwrap_or_default();
        if !verify_password(state, given, phc).await? {
            return Err(AppError::new(StatusCode::UNAUTHORIZED, "wrong_password", "wrong password for this guest link"));
        }
        state.auth.links.give_back(&[&lkey, &akey], now);
    }
    let expires = link.expires;
    let name = req.display_name;
    let user = state.chat.write(move |c, now| guests::join(c, &link, &name, now)).await.map_err(|e| match e {
        StoreError::Forbidden(_) => gone(),
        e => e.into(),
    })?;
    start_session_until(state, user, expires).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_flagged_where_a_guest_outside_would_be_stopped() {
        use crate::certs::acme::CertStatus;
        use crate::config::{Config, TlsMode};
        let mut s = crate::settings::Settings::from_config(&Config::default(), "Acme".into(), "en".into());
        let codes = |w: Vec<LinkWarning>| w.into_iter().map(|w| w.code).collect::<Vec<_>>();
        let (url, w) = reach(&s, &CertStatus::default(), 443);
        assert_eq!((url, codes(w)), (None, vec!["local_certificate", "lan_only"]), "the box's own CA, LAN only");
        s.tls.mode = TlsMode::Acme;
        s.tls.acme_domains = vec!["chat.acme.example".into()];
        s.turn_external_address = Some("203.0.113.7".parse().unwrap());
        let (url, w) = reach(&s, &CertStatus { state: "issuing".into(), ..CertStatus::default() }, 443);
        assert_eq!((url.as_deref(), codes(w)), (Some("https://chat.acme.example"), vec!["certificate_pending"]));
        let (url, w) = reach(&s, &CertStatus { state: "valid".into(), ..CertStatus::default() }, 8443);
        assert_eq!((url.as_deref(), codes(w)), (Some("https://chat.acme.example:8443"), vec![]));
    }

    #[test]
    fn guests_are_held_to_a_short_list() {
        assert!(guest_may(&Method::GET, "/api/rooms/{id}/messages"));
        assert!(!guest_may(&Method::POST, "/api/rooms"));
        assert!(!guest_may(&Method::POST, "/api/rooms/{id}/guest-links"));
        assert!(!guest_may(&Method::POST, "/api/me/password"));
        assert!(!guest_may(&Method::GET, "/api/admin/settings"));
    }
}
