//! The web UI: plain JavaScript modules and CSS from `appliance/ui/`,
//! embedded at compile time. No CDN, no build step.

use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::State;

/// (file name, MIME type, contents)
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/api.js")),
    ("conn.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/conn.js")),
    ("call.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/call.js")),
    ("format.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/format.js")),
    ("i18n.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/i18n.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/dom.js")),
    ("forms.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/forms.js")),
    ("wizard.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/wizard.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../ui/style.css")),
    ("icons.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/icons.js")),
    ("state.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/state.js")),
    ("widgets.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/widgets.js")),
    ("rooms.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/rooms.js")),
    ("roomlist.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/roomlist.js")),
    ("conversation.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/conversation.js")),
    ("composer.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/composer.js")),
    ("lobby.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/lobby.js")),
    ("files.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/files.js")),
    ("events.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/events.js")),
    ("notify.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/notify.js")),
    ("dialogs.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/dialogs.js")),
    ("settings.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/settings.js")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../ui/icon.svg")),
];

const INDEX: &[u8] = include_bytes!("../../ui/index.html");
const MANIFEST: &[u8] = include_bytes!("../../ui/manifest.webmanifest");
const SERVICE_WORKER: &[u8] = include_bytes!("../../ui/sw.js");

fn send(mime: &'static str, body: &'static [u8]) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn index() -> Response {
    send("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => send(mime, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The local CA certificate, for installing in browsers and systems.
pub async fn ca_certificate(AxState(state): AxState<State>) -> Response {
    let mut res = state.certs.ca_pem.clone().into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"parvis-ca.pem\""));
    res
}

pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(index))
        .route("/invite/{token}", get(index))
        .route("/g/{token}", get(index))
        .route("/assets/{name}", get(asset))
        .route("/manifest.webmanifest", get(|| async { send("application/manifest+json", MANIFEST) }))
        .route("/sw.js", get(|| async { send("text/javascript; charset=utf-8", SERVICE_WORKER) }))
        .route("/parvis-ca.pem", get(ca_certificate))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new module in `ui/` that is not embedded would be a 404 in the browser.
    #[test]
    fn every_ui_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let served = ["index.html", "manifest.webmanifest", "sw.js"];
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if served.contains(&name.as_str()) {
                continue;
            }
            let embedded = ASSETS.iter().find(|(n, _, _)| *n == name);
            assert!(embedded.is_some(), "ui/{name} is not in ASSETS");
            let on_disk = std::fs::read(dir.join(&name)).unwrap();
            assert_eq!(embedded.unwrap().2, on_disk.as_slice(), "ui/{name}");
        }
    }
}
