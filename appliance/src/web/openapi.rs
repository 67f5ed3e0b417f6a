//! The HTTP API as OpenAPI 3.1, generated from the handlers' own types
//! (utoipa): every route of `/api` is registered here with its description,
//! so a route cannot exist without one. Served at `/api/openapi.json`; the
//! WebSocket's frames are in its components too (`ServerFrame`,
//! `ClientFrame`, one `oneOf` branch per frame), which docs/protocol.md
//! points to and lists (a test in chat/frames.rs checks the list).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{State, account, admin, calls, files, guests, health, invites, messages, rooms, users, wizard};
use crate::chat::frames::ServerFrame;
use crate::chat::protocol::ClientFrame;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(super::SESSION_COOKIE))));
        c.add_security_scheme("csrf", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-CSRF-Token"))));
    }
}

/// Every operation may also answer any other error status with the
/// documented body (a body not JSON, too large, a busy box…).
fn default_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let error = ResponseBuilder::new()
        .description("any other error: the documented `{error, message}` body")
        .content("application/json", ContentBuilder::new().schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ApiError")))).build())
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head, &mut item.options]
            .into_iter()
            .flatten()
        {
            op.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(error.clone()));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parvis",
        description = "The HTTP API of a Parvis box. Authenticated by the `parvis_session` cookie (HttpOnly, Secure, \
            SameSite=Strict) from `/api/login`; every POST, PUT, PATCH and DELETE also carries the session's CSRF token \
            in `X-CSRF-Token`, and a request from another origin is refused. Errors are `{\"error\": code, \"message\": \
            text}` with the status. The live part (chat, calls) is the WebSocket `/api/ws`: see docs/protocol.md."
    ),
    modifiers(&Security),
    components(schemas(ServerFrame, ClientFrame)),
    tags(
        (name = "account", description = "the box's status, setup, logging in, one's own profile"),
        (name = "users", description = "the company directory and accounts"),
        (name = "invites", description = "invite links for colleagues"),
        (name = "rooms", description = "rooms, direct conversations, members"),
        (name = "messages", description = "history and search"),
        (name = "files", description = "uploads (tus 1.0) and a conversation's files"),
        (name = "calls", description = "ICE servers and the WebSocket"),
        (name = "wizard", description = "the first-boot wizard"),
        (name = "admin", description = "Settings → Box (admins)"),
    )
)]
pub struct ApiDoc;

/// Every route under `/api`, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<State> {
    let update = OpenApiRouter::new()
        .routes(routes!(admin::upload_update))
        .layer(axum::extract::DefaultBodyLimit::max(128 << 20));
    // tus uploads: bodies streamed to disk (no size limit here: the upload's
    // declared length bounds them), every answer with Tus-Resumable
    let uploads = OpenApiRouter::new()
        .routes(routes!(files::upload_options, files::create_upload))
        .routes(routes!(files::upload_offset, files::upload_bytes, files::delete_upload))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(files::tus_layer));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(uploads)
        .routes(routes!(files::room_files))
        .routes(routes!(account::status))
        .routes(routes!(account::setup))
        .routes(routes!(account::login))
        .routes(routes!(account::logout))
        .routes(routes!(account::me, account::update_me))
        .routes(routes!(account::change_password))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::update_user))
        .routes(routes!(users::reset_password))
        .routes(routes!(invites::create_invite))
        .routes(routes!(invites::invite_info, invites::accept_invite))
        .routes(routes!(rooms::list_rooms, rooms::create_room))
        .routes(routes!(rooms::browse_rooms))
        .routes(routes!(rooms::room_detail, rooms::update_room))
        .routes(routes!(rooms::add_member))
        .routes(routes!(rooms::remove_member))
        .routes(routes!(rooms::open_direct))
        .routes(routes!(messages::history))
        .routes(routes!(messages::search))
        .routes(routes!(calls::ice_servers))
        .routes(routes!(calls::websocket))
        .routes(routes!(wizard::unlock))
        .routes(routes!(wizard::get_draft, wizard::put_draft))
        .routes(routes!(wizard::finish))
        .routes(routes!(wizard::trust))
        .routes(routes!(admin::get_settings, admin::put_settings))
        .routes(routes!(admin::renew_certificate))
        .routes(routes!(admin::get_install, admin::post_install))
        .routes(routes!(admin::post_restart))
        .routes(routes!(health::health))
        .routes(routes!(guests::create_link, guests::list_links))
        .routes(routes!(guests::revoke_link))
        .routes(routes!(guests::link_info, guests::join))
        .routes(routes!(guests::customer_call))
        .routes(routes!(guests::waiting))
        .routes(routes!(guests::admission))
        .merge(update)
}

/// The API description as the server serves it (paths under `/api`).
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    default_errors(&mut doc);
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths.into_iter().map(|(p, item)| (format!("/api{p}"), item)).collect();
    doc
}

/// The JSON Schemas of the WebSocket frames (`ServerFrame`, `ClientFrame`
/// and what they use), as one JSON Schema document: docs/frames.schema.json.
pub fn frame_schemas() -> serde_json::Value {
    let doc = serde_json::to_value(document()).expect("the document serializes");
    let all = doc["components"]["schemas"].as_object().cloned().unwrap_or_default();
    let mut defs = serde_json::Map::new();
    let mut todo = vec!["ServerFrame".to_string(), "ClientFrame".to_string()];
    while let Some(name) = todo.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let Some(schema) = all.get(&name) else { continue };
        let mut text = serde_json::to_string(schema).expect("serializes");
        for r in text.split("#/components/schemas/").skip(1) {
            todo.push(r.split('"').next().unwrap_or_default().to_string());
        }
        text = text.replace("#/components/schemas/", "#/$defs/");
        defs.insert(name, serde_json::from_str(&text).expect("still JSON"));
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Parvis WebSocket frames (docs/protocol.md)",
        "description": "A frame from the server is a ServerFrame, one from a client a ClientFrame; each is one branch of its oneOf, told apart by `t`. Generated from the server's types: PARVIS_BLESS=1 cargo test -p parvis frames_schema rewrites it.",
        "oneOf": [{"$ref": "#/$defs/ServerFrame"}, {"$ref": "#/$defs/ClientFrame"}],
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_frames_schema_json_is_what_the_server_types_say() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/frames.schema.json");
        let now = serde_json::to_string_pretty(&frame_schemas()).unwrap() + "\n";
        if std::env::var_os("PARVIS_BLESS").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed == now, "docs/frames.schema.json is stale: PARVIS_BLESS=1 cargo test -p parvis frames_schema");
        let defs = frame_schemas()["$defs"].as_object().unwrap().len();
        assert!(defs >= 5, "{defs} schemas");
    }

    #[test]
    fn the_document_describes_every_route_with_its_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 25, "{}", paths.len());
        for (path, item) in paths {
            assert!(path.starts_with("/api/"), "{path}");
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
                assert!(!responses.is_empty(), "{method} {path}");
                assert!(responses.contains_key("default"), "{method} {path}");
                for (status, r) in responses {
                    if status.starts_with('4') || status.starts_with('5') || status == "default" {
                        let schema = &r["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, "#/components/schemas/ApiError", "{method} {path} {status}");
                    }
                }
            }
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["ServerFrame", "ClientFrame", "ApiError", "SessionInfo", "RoomSummary", "IceServers", "Settings"] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
    }
}
