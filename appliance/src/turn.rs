//! Glue between the configuration and netstack's TURN server: the shared
//! secret in the data folder, relay addresses, peer policy, and the
//! `parvis turn` / `parvis turn-credentials` commands.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use netstack::driver::{self, DriverConfig, Handle};
use netstack::turn::{self, Cidr, Credentials, PeerPolicy};
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The REST secret shared by the web side (credentials for browsers), this
/// server, and extra `parvis turn` nodes: `<data>/turn-secret`, created once.
/// As with coturn's `static-auth-secret`, the HMAC key is the secret's text
/// itself, so the same string configures other TURN-aware apps.
pub fn secret(data: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data.join("turn-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 16 && !text.contains(char::is_whitespace) {
            return Ok(text.as_bytes().to_vec());
        }
        // empty: an older version lost power while writing it; nobody can
        // have used it, so a new one is made below
        if !text.is_empty() {
            anyhow::bail!("{} must hold one secret of at least 16 characters", path.display());
        }
    }
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let text = hex::encode(&bytes);
    // atomic and durable: a power cut leaves no file or the whole secret
    crate::certs::local::write_file(&path, &format!("{text}\n"), true)?;
    Ok(text.into_bytes())
}

/// Relay addresses: configured, else the first usable local address of
/// each family (IPv4 falls back to 127.0.0.1 on a machine without a LAN).
pub fn relay_addresses(config: &Config, local: &[IpAddr]) -> (Option<IpAddr>, Option<IpAddr>) {
    let t = &config.turn;
    let v4 = t.relay_address.or_else(|| local.iter().copied().find(IpAddr::is_ipv4));
    let listen_loopback = t.listen.iter().all(|a| a.ip().is_loopback());
    let v4 = if listen_loopback { Some(IpAddr::from([127, 0, 0, 1])) } else { v4.or(Some(IpAddr::from([127, 0, 0, 1]))) };
    let v6 = t.relay_address_v6.or_else(|| if listen_loopback { None } else { local.iter().copied().find(IpAddr::is_ipv6) });
    (v4, v6)
}

/// The engine's configuration from Parvis's.
pub fn engine_config(config: &Config, secret: Vec<u8>, local: &[IpAddr], relays: (Option<IpAddr>, Option<IpAddr>)) -> turn::Config {
    let t = &config.turn;
    let credentials = Credentials { secret, horizon_secs: t.credential_horizon_secs, ..Default::default() };
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut c = turn::Config::new(&config.name, credentials, key);
    let mut own: Vec<IpAddr> = local.to_vec();
    own.extend(relays.0);
    own.extend(relays.1);
    own.extend(t.external_address);
    own.extend(t.listen.iter().chain(&t.tls_listen).map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()));
    c.policy = PeerPolicy {
        allow: t.allow_peers.iter().filter_map(|s| s.parse::<Cidr>().ok()).collect(),
        deny: t.deny_peers.iter().filter_map(|s| s.parse::<Cidr>().ok()).collect(),
        own,
        allow_loopback: t.allow_loopback_peers,
    };
    c.relay_v4 = relays.0.is_some();
    c.relay_v6 = relays.1.is_some();
    match t.external_address {
        Some(ip @ IpAddr::V4(_)) => c.external_v4 = Some(ip),
        Some(ip @ IpAddr::V6(_)) => c.external_v6 = Some(ip),
        None => {}
    }
    c.max_lifetime = std::time::Duration::from_secs(t.allocation_lifetime_secs);
    c.default_lifetime = c.default_lifetime.min(c.max_lifetime);
    c.user_quota = t.user_quota;
    c.total_quota = t.total_quota;
    c.bandwidth_bytes_per_sec = t.bandwidth_kbps * 1000 / 8;
    c.total_bandwidth_bytes_per_sec = t.total_kbps() * 1000 / 8;
    c
}

/// Starts the STUN/TURN listeners and relays.
pub async fn start(
    config: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    budget: crate::system::sys::FdBudget,
    stop: CancellationToken,
) -> anyhow::Result<Option<Handle>> {
    if !config.turn.enabled {
        return Ok(None);
    }
    if config.turn.allow_loopback_peers {
        tracing::warn!("TURN: loopback peers ALLOWED (--turn-allow-loopback-peers). For tests only: never on a real box.");
    }
    let local = crate::system::net::local_addresses();
    let relays = relay_addresses(config, &local);
    let mut engine_cfg = engine_config(config, secret(&config.data)?, &local, relays);
    // every allocation holds a relay socket: no more than the relays' share
    engine_cfg.total_quota = engine_cfg.total_quota.min(budget.relays.max(1));
    let engine = turn::Server::new(engine_cfg);
    let driver_cfg = DriverConfig {
        listen: config.turn.listen.clone(),
        tls_listen: config.turn.tls_listen.clone(),
        tls,
        relay_v4: relays.0,
        relay_v6: relays.1,
        relay_ports: config.turn.relay_port_min..=config.turn.relay_port_max,
        stream_gate: netstack::limits::ConnGate::new(budget.turn_streams, config.limits.turn_per_address),
    };
    let (handle, _task) = driver::start(engine, driver_cfg, stop).await?;
    tracing::info!(udp = ?handle.udp, tcp = ?handle.tcp, tls = ?handle.tls, relay_v4 = ?relays.0, relay_v6 = ?relays.1, "STUN/TURN listening");
    Ok(Some(handle))
}

/// The ICE server URIs browsers should use for this box: STUN, TURN over
/// UDP and TCP, TURN over TLS on its own port and on the HTTPS port.
pub fn uris(config: &Config, host: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = config.turn.listen.first() {
        let p = a.port();
        out.push(format!("stun:{host}:{p}"));
        out.push(format!("turn:{host}:{p}?transport=udp"));
        out.push(format!("turn:{host}:{p}?transport=tcp"));
    }
    if let Some(a) = config.turn.tls_listen.first() {
        out.push(format!("turns:{host}:{}?transport=tcp", a.port()));
    }
    if config.turn.enabled {
        out.push(format!("turns:{host}:{}?transport=tcp", config.https.port()));
    }
    out
}

/// The ICE servers handed to browsers (`GET /api/ice`): only this box's
/// own STUN/TURN, with TURN REST credentials minted for the caller.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct IceServers {
    /// For `new RTCPeerConnection({iceServers})`: STUN first, then TURN
    /// over UDP, TCP, TLS, and TLS on the HTTPS port.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials are valid for new allocations (fetch fresh
    /// ones before: a relayed call keeps its allocations beyond).
    pub ttl: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What the web side needs of TURN: the running engine (if any) and the
/// secret credentials are minted from.
pub struct TurnService {
    pub handle: Option<Handle>,
    secret: Vec<u8>,
    config: Config,
}

/// The TURN REST user name of an account (`u7`).
pub fn rest_user(id: crate::store::UserId) -> String {
    format!("u{id}")
}

impl TurnService {
    /// How long the credentials handed to browsers are valid, seconds.
    fn ttl(&self) -> u64 {
        self.config.turn.credential_ttl_secs.min(self.config.turn.credential_horizon_secs)
    }

    pub fn new(handle: Option<Handle>, config: &Config) -> anyhow::Result<TurnService> {
        let secret = if config.turn.enabled { secret(&config.data)? } else { Vec::new() };
        Ok(TurnService { handle, secret, config: config.clone() })
    }

    /// ICE servers for a browser that reached the box as `host`, with
    /// credentials naming `who` (e.g. `u7`), valid `turn.credential_ttl_secs`
    /// from `now` (Unix seconds).
    pub fn ice(&self, host: &str, who: &str, now: u64) -> IceServers {
        if !self.config.turn.enabled {
            return IceServers { ice_servers: vec![], ttl: 0 };
        }
        let ttl = self.ttl();
        let username = turn::auth::rest_username(now + ttl, who);
        let credential = turn::auth::rest_password(&self.secret, &username);
        let (stun, relays): (Vec<String>, Vec<String>) = uris(&self.config, host).into_iter().partition(|u| u.starts_with("stun:"));
        IceServers {
            ice_servers: vec![
                IceServer { urls: stun, username: None, credential: None },
                IceServer { urls: relays, username: Some(username), credential: Some(credential) },
            ],
            ttl,
        }
    }

    /// Ends the relayed media of `who` (e.g. `u7`) at once: their
    /// allocations go, and the credentials they were handed make no new
    /// ones. A disabled account, a password reset, a guest removed.
    pub async fn revoke(&self, who: &str) {
        // every credential handed out until now expires by now + ttl
        let minted_by = netstack::driver::now().unix + self.ttl();
        if let Some(h) = &self.handle
            && let Err(e) = h.revoke(who, minted_by).await
        {
            tracing::warn!(who, error = %e, "could not end TURN allocations");
        }
    }
}

/// `parvis turn-credentials`: a REST username/password from the secret.
pub fn credentials_command(config: &Config, user: &str, ttl: u64, json: bool) -> anyhow::Result<String> {
    if ttl == 0 || ttl > config.turn.credential_horizon_secs {
        anyhow::bail!("--ttl must be between 1 and {} seconds", config.turn.credential_horizon_secs);
    }
    if user.is_empty() || user.contains(':') {
        anyhow::bail!("--user must be non-empty and contain no ':'");
    }
    let secret = secret(&config.data)?;
    let username = turn::auth::rest_username(driver::now().unix + ttl, user);
    let password = turn::auth::rest_password(&secret, &username);
    let local = crate::system::net::local_addresses();
    let host = config
        .turn
        .external_address
        .or_else(|| relay_addresses(config, &local).0)
        .map_or_else(|| "localhost".to_string(), |ip| if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() });
    Ok(if json {
        serde_json::json!({"username": username, "password": password, "ttl": ttl, "uris": uris(config, &host)}).to_string()
    } else {
        format!("username: {username}\npassword: {password}")
    })
}

/// `parvis turn`: only STUN/TURN, with the data folder's secret and certificate.
pub async fn run_standalone(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    crate::serve::prepare_data_dir(&config)?;
    let names = crate::certs::local::names_for(&config.name, crate::system::net::hostname().as_deref(), &crate::system::net::local_addresses());
    let now = time::OffsetDateTime::from_unix_timestamp(driver::now().unix as i64).context("clock")?;
    let tls = crate::certs::local::ensure(&config.data.join("tls"), &config.name, &names, now).context("tls")?;
    let stop = CancellationToken::new();
    let budget = crate::system::sys::FdBudget::of(crate::system::sys::raise_fd_limit());
    let handle = start(&config, Some(crate::certs::local::turn_server_config(Arc::new(crate::certs::local::CertResolver::new(tls.leaf.clone())))?), budget, stop.clone())
        .await?
        .context("turn.enabled is false: nothing to run")?;
    println!("Parvis TURN node: udp {:?} tcp {:?} tls {:?}", handle.udp, handle.tcp, handle.tls);
    shutdown.await;
    stop.cancel();
    Ok(())
}
