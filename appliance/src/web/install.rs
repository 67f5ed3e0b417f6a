//! Settings → Box → "Install on this computer" (live system only): the
//! disks that can take the box, and the admin's choice, which ends Parvis
//! with [`crate::serve::Exit::Install`] so the box's init installs as root. And
//! Settings → Box → "Restart", which ends it with [`crate::serve::Exit::Reboot`].

use axum::Json;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppError, CurrentUser, State};
use crate::system::install;

fn offer() -> Option<(install::Live, u64, Vec<install::Disk>)> {
    let live = install::live(std::path::Path::new(install::LIVE_MARK))?;
    let size = install::image_size(&live.image).ok()?;
    let disks = install::candidates(std::path::Path::new("/sys/block"), &live.medium, size);
    Some((live, size, disks))
}

pub async fn get_install(me: CurrentUser) -> ApiResult<Json<Value>> {
    me.require_admin()?;
    Ok(Json(match offer() {
        Some((_, size, disks)) => json!({"live": true, "image_size": size, "disks": disks}),
        None => json!({"live": false, "disks": []}),
    }))
}

/// An admin restarts the box (a network change applies at start): 202,
/// then Parvis ends and `firmware/init` reboots. Off a box, Parvis is
/// restarted the way it was started.
pub async fn post_restart(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Response> {
    me.require_admin()?;
    if !crate::system::update::on_a_box(&crate::system::update::BoxPaths::default()) {
        return Err(AppError::new(StatusCode::CONFLICT, "not_a_box", "Parvis does not run on its box here: restart it the way it was started"));
    }
    tracing::warn!(by = %me.user.username, "restart asked by {}: the box reboots", me.user.username);
    state.end_soon(crate::serve::Exit::Reboot);
    Ok((StatusCode::ACCEPTED, Json(json!({"restarting": true}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReq {
    disk: String,
    /// The disk's name typed again: everything on it is erased.
    confirm: String,
}

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
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the installation could not be started")
    })?;
    tracing::warn!(by = %me.user.username, disk = %disk.name, "installing on the disk; the box turns off when done");
    state.end_soon(crate::serve::Exit::Install);
    Ok((StatusCode::ACCEPTED, Json(json!({"installing": disk.name}))).into_response())
}
