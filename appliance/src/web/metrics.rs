//! `GET /metrics`: Prometheus text format. Readable from the box itself
//! (loopback) or by an admin session; nobody else.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{AppError, State};
use crate::store::users;

/// A counter family: name, help, and (labels, value) per series.
type Family<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

fn client_is_loopback(req: &axum::http::request::Parts) -> bool {
    req.extensions.get::<ConnectInfo<SocketAddr>>().is_some_and(|ci| ci.0.ip().is_loopback())
}

pub async fn metrics(AxState(state): AxState<State>, mut parts: axum::http::request::Parts) -> Response {
    if !client_is_loopback(&parts) {
        use axum::extract::FromRequestParts;
        match super::CurrentUser::from_request_parts(&mut parts, &state).await {
            Ok(me) if me.user.role == users::Role::Admin => {}
            Ok(_) => return AppError::forbidden("admins only").into_response(),
            Err(e) => return e.into_response(),
        }
    }
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge("parvis_chat_connections", "Open chat WebSocket connections.", state.chat.hub.connection_count() as u64);
    let (calls, participants) = state.chat.calls.counts();
    gauge("parvis_calls", "Calls in progress.", calls as u64);
    gauge("parvis_call_participants", "Participants in calls (including those reconnecting).", participants as u64);
    if let Some(turn) = &state.turn.handle {
        let s = turn.stats.lock().expect("stats poisoned").clone();
        gauge("parvis_turn_allocations", "Active TURN allocations.", s.allocations as u64);
        gauge("parvis_turn_permissions", "Active TURN permissions.", s.permissions as u64);
        gauge("parvis_turn_channels", "Active TURN channel bindings.", s.channels as u64);
        let m = &s.metrics;
        let counters: &[Family<'_>] = &[
            ("parvis_turn_allocations_created_total", "Allocations created.", &[("", m.allocations_created)]),
            ("parvis_turn_allocations_expired_total", "Allocations that expired.", &[("", m.allocations_expired)]),
            ("parvis_turn_binding_requests_total", "STUN Binding requests.", &[("", m.binding_requests)]),
            ("parvis_turn_auth_failures_total", "Requests with wrong or expired credentials.", &[("", m.auth_failures)]),
            ("parvis_turn_stale_nonces_total", "Requests answered 438 Stale Nonce.", &[("", m.stale_nonces)]),
            (
                "parvis_turn_packets_total",
                "Relayed packets by direction.",
                &[
                    ("direction=\"to_peer\"", m.packets_to_peers),
                    ("direction=\"to_client\"", m.packets_to_clients),
                    ("direction=\"in_process\"", m.packets_in_process),
                ],
            ),
            (
                "parvis_turn_bytes_total",
                "Relayed payload bytes by direction.",
                &[("direction=\"to_peer\"", m.bytes_to_peers), ("direction=\"to_client\"", m.bytes_to_clients)],
            ),
            (
                "parvis_turn_dropped_total",
                "Packets dropped, by reason.",
                &[
                    ("reason=\"malformed\"", m.drop_malformed),
                    ("reason=\"oversize\"", m.drop_oversize),
                    ("reason=\"no_allocation\"", m.drop_no_allocation),
                    ("reason=\"no_permission\"", m.drop_no_permission),
                    ("reason=\"forbidden_peer\"", m.drop_forbidden_peer),
                    ("reason=\"bandwidth\"", m.drop_bandwidth),
                    ("reason=\"amplification\"", m.drop_amplification),
                ],
            ),
            (
                "parvis_turn_refused_total",
                "Requests refused, by reason.",
                &[("reason=\"forbidden_peer\"", m.refused_forbidden), ("reason=\"quota\"", m.refused_quota)],
            ),
        ];
        for (name, help, series) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in series.iter() {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
    }
    let mut res = out.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}
