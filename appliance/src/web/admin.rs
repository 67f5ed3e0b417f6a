//! The admins' Settings → Box: the live settings, the certificate's renewal,
//! signed updates, installing the live system on a disk, restarting.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wizard::{BoxInfo, info};
use super::{ApiError, ApiResult, AppError, CurrentUser, Json, State};
use crate::certs::acme::CertStatus;
use crate::settings::Settings;
use crate::system::install;

/// The settings, what the admin needs to decide them, and the certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub settings: Settings,
    pub info: BoxInfo,
    pub certificate: CertStatus,
}

fn settings_view(state: &State) -> SettingsView {
    let s = state.settings.current();
    let certificate = state.certs.status.lock().expect("poisoned").clone();
    SettingsView { info: info(state, &s), settings: s, certificate }
}

#[utoipa::path(get, path = "/admin/settings", tag = "admin",
    responses((status = 200, body = SettingsView), (status = 403, body = ApiError)))]
pub async fn get_settings(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<SettingsView>> {
    me.require_admin()?;
    Ok(axum::Json(settings_view(&state)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsReq {
    settings: Settings,
}

/// Checks (422 with every problem), saves and applies at once.
#[utoipa::path(put, path = "/admin/settings", tag = "admin", request_body = SettingsReq,
    responses((status = 200, body = SettingsView), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
pub async fn put_settings(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<SettingsReq>) -> ApiResult<axum::Json<SettingsView>> {
    me.require_admin()?;
    let errors = req.settings.check(state.settings.base());
    if !errors.is_empty() {
        return Err(AppError::invalid(errors));
    }
    state.settings.apply(req.settings).await.map_err(|e| {
        tracing::error!("settings: {e:#}");
        AppError::internal(format!("the settings could not be applied: {e}"))
    })?;
    Ok(axum::Json(settings_view(&state)))
}

/// Asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Asked {
    pub ok: bool,
}

/// Renews the certificate now (the status says how it went).
#[utoipa::path(post, path = "/admin/certificate/renew", tag = "admin", responses((status = 200, body = Asked), (status = 403, body = ApiError)))]
pub async fn renew_certificate(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Asked>> {
    me.require_admin()?;
    state.certs.renew.notify_one();
    Ok(axum::Json(Asked { ok: true }))
}

/// An update was installed; the box reboots into it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Installed {
    /// The new boot entry.
    pub installed: Option<String>,
    pub rebooting: bool,
}

/// An admin uploads a signed update bundle (`application/octet-stream`,
/// at most 128 MiB): verified, installed as the next boot entry, then the
/// box reboots into it (202 first).
#[utoipa::path(post, path = "/admin/update", tag = "admin", request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = Installed), (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 409, description = "not a box", body = ApiError), (status = 413, body = ApiError), (status = 507, body = ApiError)))]
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
    use crate::system::update::{self, UpdateError};
    let running = update::running_version();
    let installed = tokio::task::spawn_blocking(move || update::install(&update::BoxPaths::default(), &body, &running))
        .await
        .map_err(|_| AppError::internal("internal error"))?;
    if installed.is_err() {
        state.chat.db.forget_rollback_copy();
    }
    match installed {
        Ok(path) => {
            tracing::warn!(by = %me.user.username, "update {} installed; rebooting", path.display());
            state.lifecycle.end_soon(crate::serve::Exit::Reboot);
            let installed = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
            Ok((StatusCode::ACCEPTED, axum::Json(Installed { installed, rebooting: true })).into_response())
        }
        Err(e @ UpdateError::NoBox(_)) => Err(AppError::new(StatusCode::CONFLICT, "not_a_box", e.to_string())),
        Err(UpdateError::Io(e)) => {
            tracing::error!("update: {e}");
            Err(AppError::internal("the update could not be written"))
        }
        Err(e) => Err(AppError::new(StatusCode::BAD_REQUEST, "bad_update", e.to_string())),
    }
}

fn offer() -> Option<(install::Live, u64, Vec<install::Disk>)> {
    let live = install::live(std::path::Path::new(install::LIVE_MARK))?;
    let size = install::image_size(&live.image).ok()?;
    let disks = install::candidates(std::path::Path::new("/sys/block"), &live.medium, size);
    Some((live, size, disks))
}

/// Whether the box runs live (from its ISO) and the disks it can go on.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallOffer {
    pub live: bool,
    /// Bytes of the disk image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    pub disks: Vec<install::Disk>,
}

#[utoipa::path(get, path = "/admin/install", tag = "admin", responses((status = 200, body = InstallOffer), (status = 403, body = ApiError)))]
pub async fn get_install(me: CurrentUser) -> ApiResult<axum::Json<InstallOffer>> {
    me.require_admin()?;
    Ok(axum::Json(match offer() {
        Some((_, size, disks)) => InstallOffer { live: true, image_size: Some(size), disks },
        None => InstallOffer { live: false, image_size: None, disks: vec![] },
    }))
}

/// The box is restarting.
#[derive(Debug, Serialize, ToSchema)]
pub struct Restarting {
    pub restarting: bool,
}

/// An admin restarts the box (a network change applies at start): 202,
/// then Parvis ends and the box's init reboots. Off a box, Parvis is
/// restarted the way it was started (409).
#[utoipa::path(post, path = "/admin/restart", tag = "admin",
    responses((status = 202, body = Restarting), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn post_restart(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Response> {
    me.require_admin()?;
    if !crate::system::update::on_a_box(&crate::system::update::BoxPaths::default()) {
        return Err(AppError::new(StatusCode::CONFLICT, "not_a_box", "Parvis does not run on its box here: restart it the way it was started"));
    }
    tracing::warn!(by = %me.user.username, "restart asked: the box reboots");
    state.lifecycle.end_soon(crate::serve::Exit::Reboot);
    Ok((StatusCode::ACCEPTED, axum::Json(Restarting { restarting: true })).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallReq {
    disk: String,
    /// The disk's name typed again: everything on it is erased.
    confirm: String,
}

/// Installing started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Installing {
    pub installing: String,
}

/// Installs the live system on a disk (ends Parvis with 76: the box's init
/// writes the disk as root, then turns the box off).
#[utoipa::path(post, path = "/admin/install", tag = "admin", request_body = InstallReq,
    responses((status = 202, body = Installing), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn post_install(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<InstallReq>) -> ApiResult<Response> {
    me.require_admin()?;
    let Some((_, _, disks)) = offer() else {
        return Err(AppError::new(StatusCode::CONFLICT, "not_live", "this box already runs from its own disk"));
    };
    let Some(disk) = disks.iter().find(|d| d.name == req.disk) else {
        return Err(AppError::bad_request(format!("{:?} is not a disk this box can be installed on", req.disk)));
    };
    if req.confirm.trim() != disk.name {
        return Err(AppError::bad_request(format!("type {} to confirm: everything on it will be erased", disk.name)));
    }
    std::fs::write(install::REQUEST, format!("{}\n", disk.name)).map_err(|e| {
        tracing::error!("install: cannot record the choice in {}: {e}", install::REQUEST);
        AppError::internal("the installation could not be started")
    })?;
    tracing::warn!(by = %me.user.username, disk = %disk.name, "installing on the disk; the box turns off when done");
    state.lifecycle.end_soon(crate::serve::Exit::Install);
    Ok((StatusCode::ACCEPTED, axum::Json(Installing { installing: disk.name.clone() })).into_response())
}
