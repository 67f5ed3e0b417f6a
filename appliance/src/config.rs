//! Parvis configuration: one TOML file, overridden by `PARVIS_*` environment
//! variables and command-line flags (clap merges those two), checked by one
//! validator, [`Config::check`], that the wizard and settings page reuse.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `parvis serve` needs. Every field has a working default, so a
/// fresh machine runs with no file at all.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data folder: database, uploads, TLS material.
    /// Default: `./parvis-data`. Example: `data = "/perm/parvis"`.
    pub data: PathBuf,
    /// Plain HTTP listener; it only redirects to HTTPS (and, later, answers
    /// ACME HTTP-01). Default: `0.0.0.0:8080`. Example: `http = "0.0.0.0:80"`.
    pub http: SocketAddr,
    /// HTTPS listener serving the web UI, the API and the WebSocket.
    /// Default: `0.0.0.0:8443`. Example: `https = "0.0.0.0:443"`.
    pub https: SocketAddr,
    /// HTTPS listener of the download origin: attached files only, on their
    /// own origin (same host, this port, same certificate), so user content
    /// never runs in the app's. Default: `0.0.0.0:8444` (the box: 444).
    pub downloads: SocketAddr,
    /// Name of the box: announced as `<name>.local` and put in its
    /// certificate. A DNS label. Default: `parvis`.
    pub name: String,
    /// Log filter in `tracing` syntax. Default: `info`.
    /// Example: `log = "parvis=debug,info"`.
    pub log: String,
    /// Chat limits.
    pub chat: ChatConfig,
    /// The STUN/TURN server.
    pub turn: TurnConfig,
    /// Certificates: the local CA (default) or ACME.
    pub tls: TlsConfig,
    /// Announce `<name>.local` on the LAN by multicast DNS. Default: true.
    pub mdns: bool,
    /// Federation with other companies' boxes: `off` (default), `allowlist`
    /// (only the boxes listed in the admin settings) or `open`.
    pub federation: Federation,
    /// With `federation = "allowlist"`: the partner boxes allowed, by domain
    /// name (their HTTPS name, e.g. `chat.partner.example`). Default: `[]`.
    pub federation_allow: Vec<String>,
    /// The box's network, applied by its init at boot (elsewhere the
    /// system's own network settings rule and this is ignored).
    pub network: NetworkConfig,
    /// `UID:GID` to run as once the listening ports are bound (the box binds
    /// 80 and 443 as root, then drops to an unprivileged user). Default: none.
    pub run_as: Option<String>,
    /// Bounds on what anyone can reach without an account.
    pub limits: LimitsConfig,
    /// Guests by link: how long links may live, how long former guests are
    /// kept.
    pub guests: GuestsConfig,
    /// Files in conversations: sizes, quotas, retention.
    pub files: FilesConfig,
    /// The file this configuration was read from (not a key): where the
    /// wizard and the Settings page save. None: `<data>/parvis.toml`.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// How the box gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// From the LAN's DHCP server; a link-local address when none answers.
    #[default]
    Dhcp,
    /// The address, gateway and DNS servers below.
    Static,
}

/// `[network]`: the box's IPv4 settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `dhcp` (default) or `static`.
    pub mode: NetworkMode,
    /// Static: the address and prefix length. Example: `"192.168.1.20/24"`.
    pub address: String,
    /// Static: the router. Example: `"192.168.1.1"`. Empty: none (LAN only).
    pub gateway: String,
    /// Static: DNS servers (for ACME and federation). Example: `["192.168.1.1"]`.
    pub dns: Vec<String>,
    /// Time servers (any mode, besides those DHCP offers): a box without a
    /// clock (Raspberry Pi) needs one. Example: `["192.168.1.1"]`.
    pub ntp: Vec<String>,
}

impl NetworkConfig {
    /// Every problem of a static setting, keyed `network.*`.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, reason: String| errors.push(ConfigError { key: format!("network.{key}"), reason });
        if self.ntp.len() > 4 {
            bad("ntp", "at most 4 servers".into());
        }
        for s in &self.ntp {
            let host_ok = s.split('.').all(|l| check_dns_label(l).is_ok()) && s.len() <= 253;
            if s.parse::<std::net::IpAddr>().is_err() && !host_ok {
                bad("ntp", format!("{s:?} is not an address or a host name"));
            }
        }
        if self.mode == NetworkMode::Dhcp {
            return errors;
        }
        let net = match parse_cidr4(&self.address) {
            Ok(n) => Some(n),
            Err(reason) => {
                bad("address", reason);
                None
            }
        };
        if !self.gateway.is_empty() {
            match self.gateway.parse::<std::net::Ipv4Addr>() {
                Ok(gw) => {
                    if let Some((ip, prefix)) = net {
                        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                        if u32::from(gw) & mask != u32::from(ip) & mask {
                            bad("gateway", format!("{gw} is not in {}", self.address));
                        } else if gw == ip {
                            bad("gateway", "is the box's own address".into());
                        }
                    }
                }
                Err(_) => bad("gateway", format!("{:?} is not an IPv4 address (example: 192.168.1.1)", self.gateway)),
            }
        }
        if self.dns.len() > 3 {
            bad("dns", "at most 3 servers".into());
        }
        for d in &self.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                bad("dns", format!("{d:?} is not an IP address"));
            }
        }
        errors
    }
}

/// `a.b.c.d/n`: a usable host address (not the network or broadcast
/// address of its subnet, not loopback, multicast or 0.0.0.0), n in 8..=30.
pub fn parse_cidr4(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let example = "(example: 192.168.1.20/24)";
    let (ip, prefix) = s.trim().split_once('/').ok_or_else(|| format!("{s:?} needs a prefix length {example}"))?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address {example}"))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p)).ok_or_else(|| format!("/{prefix}: the prefix length must be 8 to 30"))?;
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || ip.is_broadcast() {
        return Err(format!("{ip} cannot be the box's address"));
    }
    let host = u32::from(ip) & (u32::MAX >> prefix);
    if host == 0 || host == u32::MAX >> prefix {
        return Err(format!("{ip} is the network or broadcast address of /{prefix}"));
    }
    Ok((ip, prefix))
}

/// Federation mode (used by the federation service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Federation {
    #[default]
    Off,
    Allowlist,
    Open,
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// The box's own certificate authority (works offline; browsers trust it
    /// once its CA certificate is installed).
    #[default]
    Local,
    /// A certificate from an ACME server (Let's Encrypt or the company's CA)
    /// for `acme_domains`; the local certificate still serves other names.
    Acme,
}

/// ACME challenge types (RFC 8555 §8.3, §8.4; RFC 8737).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
pub enum AcmeChallenge {
    /// Answered on the HTTP port (port 80 must be reachable from the CA).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// Answered on the HTTPS port (port 443 must be reachable from the CA).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record the admin creates; Parvis shows it and waits for it.
    #[serde(rename = "dns-01")]
    Dns01,
}

/// Certificates (`[tls]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `local` (default) or `acme`.
    pub mode: TlsMode,
    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging`.
    /// Default: `letsencrypt`. Example: `"https://ca.example.com/acme/directory"`.
    pub acme_directory: String,
    /// Contact e-mail given to the ACME server (expiry notices). Default: none.
    pub acme_email: String,
    /// Domain names of the certificate; each must resolve to this box.
    /// Example: `["chat.example.com"]`.
    pub acme_domains: Vec<String>,
    /// `http-01` (default), `tls-alpn-01` or `dns-01`.
    pub acme_challenge: AcmeChallenge,
    /// PEM file of the ACME server's own root (a company CA); empty: the
    /// system's roots.
    pub acme_root: String,
    /// DNS server (`IP:port`) asked whether a DNS-01 TXT record is in place
    /// before the CA is told to look. Default: the first `nameserver` of
    /// /etc/resolv.conf.
    #[schema(value_type = Option<String>)]
    pub acme_dns_resolver: Option<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: TlsMode::Local,
            acme_directory: "letsencrypt".into(),
            acme_email: String::new(),
            acme_domains: Vec::new(),
            acme_challenge: AcmeChallenge::Http01,
            acme_root: String::new(),
            acme_dns_resolver: None,
        }
    }
}

impl TlsConfig {
    /// The directory URL (`letsencrypt` and `letsencrypt-staging` expanded).
    pub fn directory_url(&self) -> String {
        match self.acme_directory.as_str() {
            "letsencrypt" => "https://acme-v02.api.letsencrypt.org/directory".into(),
            "letsencrypt-staging" => "https://acme-staging-v02.api.letsencrypt.org/directory".into(),
            other => other.into(),
        }
    }
}

/// Parvis's own STUN/TURN server (netstack).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Run it. Default: true.
    pub enabled: bool,
    /// UDP and TCP listen addresses. Default: `["0.0.0.0:3478"]`.
    pub listen: Vec<SocketAddr>,
    /// TURN over TLS listen addresses. Default: `["0.0.0.0:5349"]`.
    pub tls_listen: Vec<SocketAddr>,
    /// Relay ports, first and last. Default: 50000–50199 (49152–65535 on the box).
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    /// Address relay sockets bind to. Default: the machine's first LAN IPv4
    /// address (127.0.0.1 if it has none).
    pub relay_address: Option<std::net::IpAddr>,
    /// IPv6 relay address. Default: the first global or ULA IPv6 address, if any.
    pub relay_address_v6: Option<std::net::IpAddr>,
    /// Public address advertised to clients when the box is behind NAT
    /// (forward the listen and relay ports to it). Default: none.
    pub external_address: Option<std::net::IpAddr>,
    /// Peer networks the relay may reach although private (e.g. `"192.168.1.0/24"`).
    /// Default: none: guests cannot reach the LAN through the box.
    pub allow_peers: Vec<String>,
    /// Peer networks refused in addition to the built-in list.
    pub deny_peers: Vec<String>,
    /// Tests only: allow loopback peers. Default: false; logged loudly when on.
    pub allow_loopback_peers: bool,
    /// Allocations per user and in total. Defaults: 64 and 2000. A browser
    /// allocates once per transport (UDP, TCP, TLS, TLS on the HTTPS port)
    /// for each other participant, and again on an ICE restart: a full
    /// 8-person mesh needs 28, up to 56 while restarting.
    pub user_quota: usize,
    pub total_quota: usize,
    /// Bandwidth cap per allocation in kbit/s (both directions), 0 for none.
    /// Default: 10000 (a camera and a shared screen each way, with room).
    pub bandwidth_kbps: u64,
    /// Upload speed of the company's internet connection in Mbit/s, as the
    /// admin states it in the wizard ("calls from outside"); 0: not stated.
    /// The total relay cap follows from it. Default: 0.
    pub uplink_mbps: u32,
    /// Total relay bandwidth in kbit/s, everything the relay sends together,
    /// so guests cannot fill the uplink; 0 for none. Default: 80 % of
    /// `uplink_mbps` when stated, else 50000. Example: `total_bandwidth_kbps = 20000`.
    pub total_bandwidth_kbps: Option<u64>,
    /// Longest accepted validity of a REST username, seconds; also how long
    /// an allocation made with one may be refreshed. Default: 86400.
    pub credential_horizon_secs: u64,
    /// Longest lifetime an allocation is granted between two refreshes,
    /// seconds (clients refresh before it ends; the default lifetime is 600
    /// or this, whichever is less). Default: 3600. Range 60–3600.
    pub allocation_lifetime_secs: u64,
    /// Validity of the credentials handed to browsers (`/api/ice`), seconds.
    /// A relayed call outlives them: its allocations are refreshed with the
    /// same credentials. Default: 3600. Range 30–86400.
    pub credential_ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            listen: vec!["0.0.0.0:3478".parse().expect("literal")],
            tls_listen: vec!["0.0.0.0:5349".parse().expect("literal")],
            relay_port_min: 50000,
            relay_port_max: 50199,
            relay_address: None,
            relay_address_v6: None,
            external_address: None,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            allow_loopback_peers: false,
            user_quota: 64,
            total_quota: 2000,
            bandwidth_kbps: 10_000,
            uplink_mbps: 0,
            total_bandwidth_kbps: None,
            credential_horizon_secs: 86_400,
            credential_ttl_secs: 3600,
            allocation_lifetime_secs: 3600,
        }
    }
}

impl TurnConfig {
    /// The total relay cap in force, kbit/s (0: none); see `total_bandwidth_kbps`.
    pub fn total_kbps(&self) -> u64 {
        match (self.total_bandwidth_kbps, self.uplink_mbps) {
            (Some(k), _) => k,
            (None, 0) => 50_000,
            (None, up) => u64::from(up) * 800,
        }
    }
}

/// `[limits]`: bounds on everything reachable without an account (login,
/// invite and guest links, the listening ports). The open-file limit is
/// raised to the hard limit at start and shared between the web, TURN
/// streams and TURN relays (see `sys::FdBudget`); these keys set the rest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Password hashes (argon2id; each hasher keeps its 19 MiB) computed at
    /// once. 0: one per CPU core, at most 2. Default: 0.
    pub password_hashers: usize,
    /// Password checks that may wait for a hasher; beyond, the answer is 503
    /// with Retry-After. Default: 32.
    pub password_queue: usize,
    /// Web connections (HTTPS and HTTP, WebSockets included) from one
    /// address (an IPv6 /64 counts as one). Default: 256.
    pub web_per_address: usize,
    /// TURN connections over TCP and TLS from one address. Default: 64.
    pub turn_per_address: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { password_hashers: 0, password_queue: 32, web_per_address: 256, turn_per_address: 64 }
    }
}

impl LimitsConfig {
    /// Hashers in force: `password_hashers`, or one per core (1 to 2).
    pub fn hashers(&self) -> usize {
        if self.password_hashers > 0 {
            return self.password_hashers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 2)
    }
}

/// Guests by link (Settings → Box → Guests).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GuestsConfig {
    /// The longest a guest link may live, in days (1–365). Default: 30.
    pub max_link_days: u32,
    /// Days a former guest's record is kept after its attendance ended (its
    /// link expired, it left, was denied or removed); then it is deleted and
    /// only its name stays, under its messages, as a former guest's.
    /// 1–3650. Default: 30.
    pub retention_days: u32,
}

impl Default for GuestsConfig {
    fn default() -> Self {
        GuestsConfig { max_link_days: 30, retention_days: 30 }
    }
}

/// Files in conversations (Settings → Box → Files). Sizes in MiB; 0 means
/// no limit of that kind (the disk still bounds them: uploads always leave
/// 512 MiB free).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file, MiB (1–1048576). Default: 1024 (1 GiB).
    pub max_file_mb: u32,
    /// What one member's files may take in all, MiB. Default: 10240.
    pub user_quota_mb: u32,
    /// What one guest's files may take, MiB (guests upload only when their
    /// link allows it). Default: 100.
    pub guest_quota_mb: u32,
    /// What the files of one conversation may take, MiB. Default: 0 (none).
    pub room_quota_mb: u32,
    /// What all files may take on the box, MiB. Default: 0 (the disk).
    pub box_quota_mb: u32,
    /// Delete attachments older than this many days (their names stay in
    /// the conversation). Default: 0 (keep them).
    pub retention_days: u32,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig { max_file_mb: 1024, user_quota_mb: 10240, guest_quota_mb: 100, room_quota_mb: 0, box_quota_mb: 0, retention_days: 0 }
    }
}

/// Limits of the chat service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Seconds without any frame from a client before the server drops the
    /// connection (the browser pings every 20 s). Default: 60. Range 15–600.
    pub idle_timeout_secs: u64,
    /// Events replayed per room on resume before the client is told to
    /// reload that room instead. Default: 1000. Range 10–100000.
    pub resume_limit: u32,
    /// Messages a connection may send per second (burst is 5× this).
    /// Default: 20. Range 1–10000.
    pub send_rate: u32,
    /// People in one call at most (mesh: each sends to every other).
    /// Default: 8. Range 2–25.
    pub max_call_participants: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("parvis-data"),
            http: "0.0.0.0:8080".parse().expect("valid literal"),
            https: "0.0.0.0:8443".parse().expect("valid literal"),
            downloads: "0.0.0.0:8444".parse().expect("valid literal"),
            name: "parvis".into(),
            log: "info".into(),
            chat: ChatConfig::default(),
            turn: TurnConfig::default(),
            tls: TlsConfig::default(),
            mdns: true,
            federation: Federation::Off,
            federation_allow: Vec::new(),
            network: NetworkConfig::default(),
            run_as: None,
            limits: LimitsConfig::default(),
            guests: GuestsConfig::default(),
            files: FilesConfig::default(),
            file: None,
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig { idle_timeout_secs: 60, resume_limit: 1000, send_rate: 20, max_call_participants: 8 }
    }
}

/// One problem found by [`Config::check`]: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Overrides from the command line / environment; `None` keeps the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub downloads: Option<SocketAddr>,
    pub name: Option<String>,
    pub log: Option<String>,
    pub turn: Option<SocketAddr>,
    pub turn_tls: Option<SocketAddr>,
    pub turn_external: Option<std::net::IpAddr>,
    pub turn_allow_loopback_peers: bool,
    pub no_mdns: bool,
    pub run_as: Option<String>,
}

impl Config {
    /// Parses a TOML document. Unknown keys are errors that name the key.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let key = e
                .message()
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "(file)".into());
            ConfigError { key, reason: e.message().trim().to_string() }
        })
    }

    /// Loads the file if given (or `<data>/parvis.toml` if it exists), applies
    /// the overrides, and checks the result.
    pub fn load(file: Option<&Path>, over: Overrides) -> Result<Config, Vec<ConfigError>> {
        let data_hint = over.data.clone().unwrap_or_else(|| Config::default().data);
        let implicit = data_hint.join("parvis.toml");
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None if implicit.exists() => Some(implicit),
            None => None,
        };
        let mut config = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    vec![ConfigError { key: "config".into(), reason: format!("cannot read {}: {e}", p.display()) }]
                })?;
                Config::from_toml(&text).map_err(|e| vec![e])?
            }
            None => Config::default(),
        };
        config.file = path;
        if let Some(v) = over.data {
            config.data = v;
        }
        if let Some(v) = over.http {
            config.http = v;
        }
        if let Some(v) = over.https {
            config.https = v;
        }
        if let Some(v) = over.downloads {
            config.downloads = v;
        }
        if let Some(v) = over.name {
            config.name = v;
        }
        if let Some(v) = over.log {
            config.log = v;
        }
        if let Some(v) = over.turn {
            config.turn.listen = vec![v];
        }
        if let Some(v) = over.turn_tls {
            config.turn.tls_listen = vec![v];
        }
        if let Some(v) = over.turn_external {
            config.turn.external_address = Some(v);
        }
        if over.turn_allow_loopback_peers {
            config.turn.allow_loopback_peers = true;
        }
        if over.no_mdns {
            config.mdns = false;
        }
        if over.run_as.is_some() {
            config.run_as = over.run_as;
        }
        let errors = config.check();
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// Where settings changed at run time are saved.
    pub fn file_to_save(&self) -> PathBuf {
        self.file.clone().unwrap_or_else(|| self.data.join("parvis.toml"))
    }

    /// Validates every field; returns all problems, each naming its key.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, reason: String| errors.push(ConfigError { key: key.into(), reason });
        if self.data.as_os_str().is_empty() {
            bad("data", "must not be empty".into());
        }
        if self.http == self.https {
            bad("https", format!("must differ from http ({})", self.http));
        }
        if let Err(reason) = check_dns_label(&self.name) {
            bad("name", reason);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            bad("log", format!("{:?} is not a valid log filter (example: \"info\")", self.log));
        }
        if !(15..=600).contains(&self.chat.idle_timeout_secs) {
            bad("chat.idle_timeout_secs", "must be between 15 and 600".into());
        }
        if !(10..=100_000).contains(&self.chat.resume_limit) {
            bad("chat.resume_limit", "must be between 10 and 100000".into());
        }
        if !(1..=10_000).contains(&self.chat.send_rate) {
            bad("chat.send_rate", "must be between 1 and 10000".into());
        }
        if !(2..=25).contains(&self.chat.max_call_participants) {
            bad("chat.max_call_participants", "must be between 2 and 25 (every participant sends to every other)".into());
        }
        if self.federation_allow.len() > 500 {
            bad("federation_allow", "at most 500 boxes".into());
        }
        for d in &self.federation_allow {
            if let Err(reason) = check_domain(d) {
                bad("federation_allow", reason);
            }
        }
        if self.federation == Federation::Allowlist && self.federation_allow.is_empty() {
            bad("federation_allow", "list at least one box (its domain name), or choose another mode".into());
        }
        let t = &self.turn;
        if t.enabled && t.listen.is_empty() {
            bad("turn.listen", "needs at least one address when turn.enabled".into());
        }
        if t.relay_port_min == 0 || t.relay_port_min > t.relay_port_max {
            bad("turn.relay_port_min", format!("must be 1..=relay_port_max ({})", t.relay_port_max));
        }
        for (key, list) in [("turn.allow_peers", &t.allow_peers), ("turn.deny_peers", &t.deny_peers)] {
            for c in list {
                if let Err(e) = c.parse::<netstack::turn::Cidr>() {
                    bad(key, e);
                }
            }
        }
        if t.user_quota == 0 || t.total_quota == 0 {
            bad("turn.user_quota", "quotas must be at least 1".into());
        }
        if t.uplink_mbps > 100_000 {
            bad("turn.uplink_mbps", "at most 100000 (100 Gbit/s)".into());
        }
        if !(1..=365).contains(&self.guests.max_link_days) {
            bad("guests.max_link_days", "must be between 1 and 365".into());
        }
        if !(1..=1_048_576).contains(&self.files.max_file_mb) {
            bad("files.max_file_mb", "must be between 1 and 1048576".into());
        }
        if self.files.retention_days > 36500 {
            bad("files.retention_days", "must be at most 36500 (0 keeps files)".into());
        }
        if !(1..=3650).contains(&self.guests.retention_days) {
            bad("guests.retention_days", "must be between 1 and 3650".into());
        }
        let l = &self.limits;
        if l.password_hashers > 64 {
            bad("limits.password_hashers", "at most 64 (each takes 19 MiB while it runs)".into());
        }
        if !(1..=10_000).contains(&l.password_queue) {
            bad("limits.password_queue", "must be between 1 and 10000".into());
        }
        if l.web_per_address == 0 || l.turn_per_address == 0 {
            bad("limits.web_per_address", "per-address limits must be at least 1".into());
        }
        if !(60..=3600).contains(&t.allocation_lifetime_secs) {
            bad("turn.allocation_lifetime_secs", "must be between 60 and 3600".into());
        }
        if !(30..=86_400).contains(&t.credential_ttl_secs) {
            bad("turn.credential_ttl_secs", "must be between 30 and 86400".into());
        }
        if !(60..=7 * 86_400).contains(&t.credential_horizon_secs) {
            bad("turn.credential_horizon_secs", "must be between 60 and 604800".into());
        }
        if let Some(ip) = t.external_address
            && (ip.is_unspecified() || ip.is_loopback() || ip.is_multicast()) {
                bad("turn.external_address", format!("{ip} cannot be reached by anyone else"));
            }
        let tls = &self.tls;
        if tls.mode == TlsMode::Acme {
            if tls.acme_domains.is_empty() {
                bad("tls.acme_domains", "give at least one domain name that points to this box".into());
            }
            for d in &tls.acme_domains {
                if let Err(reason) = check_domain(d) {
                    bad("tls.acme_domains", reason);
                }
            }
            let url = tls.directory_url();
            if !url.starts_with("https://") || url.len() < 12 {
                bad("tls.acme_directory", format!("{url:?} is not an https:// URL"));
            }
        }
        if !tls.acme_email.is_empty() {
            let ok = tls.acme_email.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
                && !tls.acme_email.contains(char::is_whitespace);
            if !ok {
                bad("tls.acme_email", format!("{:?} is not an e-mail address", tls.acme_email));
            }
        }
        for e in self.network.check() {
            bad(&e.key, e.reason);
        }
        if let Some(ids) = &self.run_as
            && parse_ids(ids).is_none() {
                bad("run_as", format!("{ids:?} is not UID:GID (numbers, e.g. \"1000:1000\"), and not root"));
            }
        if !tls.acme_root.is_empty() && !Path::new(&tls.acme_root).is_file() {
            bad("tls.acme_root", format!("{} is not a file", tls.acme_root));
        }
        errors
    }
}

/// `UID:GID`, both numbers, neither 0.
pub fn parse_ids(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':')?;
    let (u, g) = (u.parse().ok()?, g.parse().ok()?);
    (u != 0 && g != 0).then_some((u, g))
}

/// A fully qualified domain name for a certificate: dot-separated DNS
/// labels, at least two, no wildcard (HTTP-01 and TLS-ALPN-01 cannot prove one).
pub fn check_domain(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 || name.len() > 253 {
        return Err(format!("{name:?} is not a full domain name (example: chat.example.com)"));
    }
    for l in labels {
        check_dns_label(l).map_err(|r| format!("{name:?}: {r}"))?;
    }
    Ok(())
}

/// A host name label: 1–63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 {
        Err("must be 1 to 63 characters".into())
    } else if !ok_chars {
        Err(format!("{name:?} may contain only lowercase letters, digits and '-'"))
    } else if name.starts_with('-') || name.ends_with('-') {
        Err(format!("{name:?} must not start or end with '-'"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_check() {
        assert!(Config::default().check().is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("htps = \"0.0.0.0:1\"").unwrap_err();
        assert_eq!(err.key, "htps");
    }

    #[test]
    fn check_names_each_bad_key() {
        let mut c = Config { name: "Bad_Name".into(), log: "[[[".into(), ..Config::default() };
        c.https = c.http;
        c.chat.send_rate = 0;
        let keys: Vec<_> = c.check().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["https", "name", "log", "chat.send_rate"]);
    }

    #[test]
    fn an_allowlist_names_its_boxes_by_domain() {
        let keys = |text: &str| -> Vec<String> { toml::from_str::<Config>(text).unwrap().check().into_iter().map(|e| e.key).collect() };
        assert_eq!(keys("federation = \"allowlist\""), ["federation_allow"], "an empty list is refused");
        assert!(keys("federation = \"allowlist\"\nfederation_allow = [\"chat.partner.example\"]").is_empty());
        assert_eq!(keys("federation = \"allowlist\"\nfederation_allow = [\"partner\", \"https://x.example\"]"), ["federation_allow", "federation_allow"]);
        assert!(keys("federation = \"off\"").is_empty());
    }

    #[test]
    fn a_static_network_needs_a_usable_address_and_a_gateway_in_its_subnet() {
        let from = |text: &str| -> Vec<String> {
            let c: Config = toml::from_str(text).unwrap();
            c.check().into_iter().map(|e| e.key).collect()
        };
        assert!(from("[network]\nmode = \"dhcp\"\naddress = \"junk\"").is_empty(), "DHCP ignores the static fields");
        let good = "[network]\nmode = \"static\"\naddress = \"192.168.1.20/24\"\ngateway = \"192.168.1.1\"\ndns = [\"192.168.1.1\", \"2001:db8::53\"]";
        assert!(from(good).is_empty(), "{:?}", from(good));
        assert!(from("[network]\nmode = \"static\"\naddress = \"10.0.0.5/8\"").is_empty(), "no gateway: LAN only");
        for (text, key) in [
            ("address = \"\"", "network.address"),
            ("address = \"192.168.1.20\"", "network.address"),
            ("address = \"192.168.1.300/24\"", "network.address"),
            ("address = \"192.168.1.0/24\"", "network.address"),
            ("address = \"192.168.1.255/24\"", "network.address"),
            ("address = \"127.0.0.2/8\"", "network.address"),
            ("address = \"192.168.1.20/31\"", "network.address"),
            ("address = \"192.168.1.20/24\"\ngateway = \"192.168.2.1\"", "network.gateway"),
            ("address = \"192.168.1.20/24\"\ngateway = \"192.168.1.20\"", "network.gateway"),
            ("address = \"192.168.1.20/24\"\ngateway = \"router\"", "network.gateway"),
            ("address = \"192.168.1.20/24\"\ndns = [\"dns.example\"]", "network.dns"),
        ] {
            assert_eq!(from(&format!("[network]\nmode = \"static\"\n{text}")), vec![key.to_string()], "{text}");
        }
        assert!(toml::from_str::<Config>("[network]\nmode = \"manual\"").is_err());
        assert!(from("[network]\nntp = [\"192.168.1.1\", \"ntp.example.com\", \"router\"]").is_empty());
        assert_eq!(from("[network]\nntp = [\"ntp example\"]"), ["network.ntp"]);
    }

    #[test]
    fn run_as_is_two_numbers_and_never_root() {
        assert_eq!(parse_ids("1000:1000"), Some((1000, 1000)));
        for bad in ["0:0", "1000:0", "parvis", "1000", "a:b", ""] {
            assert_eq!(parse_ids(bad), None, "{bad}");
        }
        let c = Config { run_as: Some("0:0".into()), ..Config::default() };
        assert_eq!(c.check()[0].key, "run_as");
    }

    #[test]
    fn acme_needs_domains_a_https_directory_and_a_real_email() {
        let mut c = Config::default();
        c.tls.mode = TlsMode::Acme;
        c.tls.acme_directory = "http://ca.test/dir".into();
        c.tls.acme_email = "not an email".into();
        let keys: Vec<_> = c.check().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["tls.acme_domains", "tls.acme_directory", "tls.acme_email"]);
        c.tls.acme_domains = vec!["chat.example.com".into()];
        c.tls.acme_directory = "letsencrypt-staging".into();
        c.tls.acme_email = "it@example.com".into();
        assert!(c.check().is_empty());
        c.tls.acme_domains = vec!["*.example.com".into(), "localhost".into()];
        assert_eq!(c.check().len(), 2);
        let t: Config = Config::from_toml("[tls]\nmode = \"acme\"\nacme_challenge = \"dns-01\"\nacme_domains = [\"a.b.c\"]\n").unwrap();
        assert_eq!(t.tls.acme_challenge, AcmeChallenge::Dns01);
    }

    #[test]
    fn file_values_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "name = \"office\"\nhttps = \"127.0.0.1:9443\"\n[chat]\nsend_rate = 5\n").unwrap();
        let over = Overrides { https: Some("127.0.0.1:7443".parse().unwrap()), ..Default::default() };
        let c = Config::load(Some(&file), over).unwrap();
        assert_eq!(c.name, "office");
        assert_eq!(c.https.port(), 7443);
        assert_eq!(c.chat.send_rate, 5);
    }
}
