//! Settings → Health for admins: is the box well, in checks an admin can act
//! on (disk, database, certificate, TURN) and the figures behind them.

use std::path::Path;
use std::sync::OnceLock;

use axum::extract::State as AxState;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, CurrentUser, State};
use crate::certs::acme::CertStatus;

/// When this process started serving, in the chat clock's milliseconds.
static STARTED_MS: OnceLock<i64> = OnceLock::new();

/// Called when the router is built, so uptime counts from the start.
pub fn mark_start(now_ms: i64) {
    STARTED_MS.get_or_init(|| now_ms);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One thing checked, and in words what was found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `disk`, `database`, `certificate` or `turn`.
    pub id: &'static str,
    pub level: Level,
    pub detail: String,
}

/// The figures the checks read, for the admin's eyes and for monitoring.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Figures {
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub database_bytes: u64,
    pub chat_connections: u64,
    pub calls: u64,
    pub call_participants: u64,
    pub turn_allocations: u64,
    /// Unix seconds; absent without a certificate.
    pub certificate_not_after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub version: String,
    pub uptime_secs: u64,
    /// The worst level of the checks.
    pub level: Level,
    pub checks: Vec<Check>,
    pub figures: Figures,
}

const GIB: u64 = 1 << 30;

fn mib(b: u64) -> String {
    match b {
        _ if b >= 10 * GIB => format!("{} GiB", b / GIB),
        _ if b >= 1 << 20 => format!("{} MiB", b >> 20),
        _ => format!("{} KiB", b.div_ceil(1024)),
    }
}

/// Free space: below 5 % or 512 MiB warns (uploads and updates need room),
/// below 1 % or 64 MiB fails (the database may not be able to commit).
pub fn disk_check(free: u64, total: u64) -> Check {
    let pct = free.saturating_mul(100).checked_div(total).unwrap_or(0);
    let level = if free < 64 << 20 || pct < 1 {
        Level::Fail
    } else if free < 512 << 20 || pct < 5 {
        Level::Warn
    } else {
        Level::Ok
    };
    Check { id: "disk", level, detail: format!("{} free of {} ({pct} %)", mib(free), mib(total)) }
}

/// The certificate: a failed issuance or renewal fails; under 14 days left
/// warns (renewal should have happened at two thirds of its life).
pub fn certificate_check(c: &CertStatus, now_secs: i64) -> Check {
    let left = c.not_after.map(|t| (t - now_secs).div_euclid(86_400));
    let (level, detail) = match (c.alert.as_deref(), left) {
        (_, Some(d)) if d < 0 => (Level::Fail, "the certificate has expired".to_string()),
        (Some(alert), _) => (Level::Fail, alert.to_string()),
        (None, Some(d)) if d < 14 => (Level::Warn, format!("{d} days left, and not renewed yet")),
        (None, Some(d)) => (Level::Ok, format!("{} certificate, {d} days left", c.mode)),
        (None, None) if c.state == "failed" => (Level::Fail, c.message.clone()),
        // the box's own CA: its certificate is reissued by the box itself
        (None, None) if c.mode == "local" => (Level::Ok, c.message.clone()),
        (None, None) => (Level::Warn, c.message.clone()),
    };
    Check { id: "certificate", level, detail }
}

fn statvfs(dir: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let f = s.fragment_size();
            (s.blocks_available() * f, s.blocks() * f)
        }
        Err(_) => (0, 0),
    }
}

#[utoipa::path(get, path = "/admin/health", tag = "admin",
    responses((status = 200, body = Health), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn health(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Health>> {
    me.require_admin()?;
    let data = state.settings.base().data.clone();
    let (free, total) = tokio::task::spawn_blocking(move || statvfs(&data)).await.unwrap_or((0, 0));
    let db_path = state.settings.base().data.join("parvis.db");
    let database_bytes = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db_path.display())).ok())
        .map(|m| m.len())
        .sum();
    let (calls, participants) = state.chat.calls.counts();
    let cert = state.certs.status.lock().expect("poisoned").clone();
    let now_ms = state.chat.clock.now_ms();
    let now_secs = now_ms / 1000;
    let mut figures = Figures {
        disk_free_bytes: free,
        disk_total_bytes: total,
        database_bytes,
        chat_connections: state.chat.hub.connection_count() as u64,
        calls: calls as u64,
        call_participants: participants as u64,
        certificate_not_after: cert.not_after,
        ..Figures::default()
    };
    let mut checks = vec![disk_check(free, total)];
    checks.push(match state.chat.db.read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))?)).await {
        Ok(users) => {
            let accounts = if users == 1 { "1 account".to_string() } else { format!("{users} accounts") };
            Check { id: "database", level: Level::Ok, detail: format!("{}, {accounts}", mib(database_bytes)) }
        }
        Err(e) => Check { id: "database", level: Level::Fail, detail: format!("the database cannot be read: {e}") },
    });
    checks.push(certificate_check(&cert, now_secs));
    checks.push(match &state.turn.handle {
        Some(turn) => {
            let allocations = turn.stats.lock().expect("stats poisoned").allocations as u64;
            figures.turn_allocations = allocations;
            Check { id: "turn", level: Level::Ok, detail: format!("running, {allocations} relayed connections") }
        }
        None => Check { id: "turn", level: Level::Warn, detail: "not running: calls between networks may fail".into() },
    });
    let level = checks.iter().map(|c| c.level).max_by_key(|l| *l as u8).unwrap_or(Level::Ok);
    Ok(axum::Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: u64::try_from((now_ms - STARTED_MS.get().copied().unwrap_or(now_ms)) / 1000).unwrap_or(0),
        level,
        checks,
        figures,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_levels() {
        assert_eq!(disk_check(50 * GIB, 100 * GIB).level, Level::Ok);
        assert_eq!(disk_check(400 << 20, 4 * GIB).level, Level::Warn, "under 512 MiB");
        assert_eq!(disk_check(3 * GIB, 100 * GIB).level, Level::Warn, "3 % left");
        assert_eq!(disk_check(32 << 20, 100 * GIB).level, Level::Fail);
        assert_eq!(disk_check(0, 0).level, Level::Fail);
    }

    #[test]
    fn certificate_levels() {
        let day = 86_400;
        let mut c = CertStatus { mode: "local".into(), state: "local".into(), not_after: Some(100 * day), ..CertStatus::default() };
        assert_eq!(certificate_check(&c, 0).level, Level::Ok);
        assert_eq!(certificate_check(&c, 90 * day).level, Level::Warn);
        assert_eq!(certificate_check(&c, 101 * day).level, Level::Fail);
        c.alert = Some("renewal failed: DNS".into());
        assert_eq!(certificate_check(&c, 0).level, Level::Fail);
        assert_eq!(certificate_check(&c, 0).detail, "renewal failed: DNS");
        let own = CertStatus { mode: "local".into(), state: "local".into(), message: "the box's own CA".into(), ..CertStatus::default() };
        assert_eq!(certificate_check(&own, 0).level, Level::Ok);
        let issuing = CertStatus { mode: "acme".into(), state: "issuing".into(), ..CertStatus::default() };
        assert_eq!(certificate_check(&issuing, 0).level, Level::Warn);
    }
}
