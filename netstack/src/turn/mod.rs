//! The TURN server engine (RFC 8656, RFC 6156), sans-IO.
//!
//! Feed it what arrives — [`Server::handle_client`] for the listening
//! sockets, [`Server::handle_peer`] for relay sockets, [`Server::relay_opened`]
//! when a relay socket was bound — with the time of the event, then drain
//! [`Server::poll_output`] and sleep until [`Server::poll_timeout`]. It never
//! reads a clock or touches a socket, so lifetimes are tested by moving time.
//!
//! Relays are real sockets (the driver binds one per allocation), so any
//! permitted peer can be reached. When the peer is one of our own relayed
//! addresses, the data is handed to that allocation in-process instead.

pub mod auth;
pub mod policy;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::stun::{self, Builder, ChannelData, Class, Message, attr, method};
pub use auth::{AuthError, Credentials, Nonces};
pub use policy::{Cidr, PeerPolicy, Verdict, normalize};

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's 5-tuple: allocations are bound to it (RFC 8656 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

/// The time of one event: monotonic for lifetimes, Unix seconds for REST
/// expiries and nonces.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

pub type AllocId = u64;

/// Engine settings. [`Config::new`] gives the RFC defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub credentials: Credentials,
    pub nonce_key: [u8; 32],
    pub nonce_lifetime_secs: u64,
    pub policy: PeerPolicy,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// Relay families the driver can bind.
    pub relay_v4: bool,
    pub relay_v6: bool,
    /// Public addresses to advertise instead of the relay sockets' own.
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
    /// Allocations per username (486 beyond) and in total (508 beyond).
    pub user_quota: usize,
    pub total_quota: usize,
    pub max_permissions: usize,
    pub max_channels: usize,
    /// Relayed bytes per second per allocation, both directions; 0 = no cap.
    pub bandwidth_bytes_per_sec: u64,
    /// Bytes per second the whole relay may send (to clients and to peers,
    /// all allocations together), so that no guest or group of guests can
    /// fill the company's uplink; 0 = no cap.
    pub total_bandwidth_bytes_per_sec: u64,
}

impl Config {
    pub fn new(realm: &str, credentials: Credentials, nonce_key: [u8; 32]) -> Config {
        Config {
            realm: realm.to_string(),
            credentials,
            nonce_key,
            nonce_lifetime_secs: 600,
            policy: PeerPolicy::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            relay_v4: true,
            relay_v6: true,
            external_v4: None,
            external_v6: None,
            user_quota: 20,
            total_quota: 2000,
            max_permissions: 64,
            max_channels: 64,
            bandwidth_bytes_per_sec: 0,
            total_bandwidth_bytes_per_sec: 0,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to a client on its 5-tuple (streams need no extra framing: STUN
    /// and padded ChannelData are self-delimiting).
    ToClient { five: FiveTuple, data: Vec<u8> },
    /// Send from an allocation's relay socket to a peer.
    ToPeer { alloc: AllocId, relay: SocketAddr, peer: SocketAddr, data: Vec<u8> },
    /// Bind a relay socket (IPv6 if `ipv6`, on an even port if `even`, with
    /// the don't-fragment bit on every datagram if `dont_fragment`) for the
    /// client on `five`, and report with `relay_opened`.
    OpenRelay { alloc: AllocId, five: FiveTuple, ipv6: bool, even: bool, dont_fragment: bool },
    /// Close this allocation's relay socket.
    CloseRelay { alloc: AllocId, relay: SocketAddr },
}

/// Counters for /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub allocations_created: u64,
    pub allocations_expired: u64,
    pub binding_requests: u64,
    pub auth_failures: u64,
    pub stale_nonces: u64,
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_to_clients: u64,
    pub bytes_to_clients: u64,
    pub packets_in_process: u64,
    pub drop_malformed: u64,
    /// UDP datagrams larger than the driver's receive slot (truncated).
    pub drop_oversize: u64,
    pub drop_no_allocation: u64,
    pub drop_no_permission: u64,
    pub drop_forbidden_peer: u64,
    pub drop_bandwidth: u64,
    /// Dropped because the whole relay reached its total cap.
    pub drop_bandwidth_total: u64,
    pub drop_amplification: u64,
    pub refused_forbidden: u64,
    pub refused_quota: u64,
}

#[derive(Debug)]
struct Pending {
    tid: [u8; 12],
}

#[derive(Debug)]
struct Allocation {
    five: FiveTuple,
    username: String,
    key: [u8; 16],
    ipv6: bool,
    relay: Option<SocketAddr>,
    pending: Option<Pending>,
    created_tid: [u8; 12],
    created: Instant,
    expires: Instant,
    lifetime: Duration,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of: HashMap<SocketAddr, u16>,
    tokens: f64,
    tokens_at: Instant,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&normalize(ip)).is_some_and(|&exp| exp > now)
    }
}

/// The TURN server state machine.
pub struct Server {
    cfg: Config,
    nonces: Nonces,
    allocs: HashMap<AllocId, Allocation>,
    by_five: HashMap<FiveTuple, AllocId>,
    /// (is IPv6, relay port) → allocation, for relay sockets and in-process delivery.
    by_port: HashMap<(bool, u16), AllocId>,
    per_user: HashMap<String, usize>,
    /// Revoked REST users: their usernames expiring at or before this (Unix
    /// seconds) were minted before the revocation and make no allocation.
    revoked: HashMap<String, u64>,
    out: VecDeque<Output>,
    next_due: Option<Instant>,
    next_id: AllocId,
    tid_state: u64,
    /// The total bandwidth bucket: bytes available, and when it was filled.
    total_tokens: f64,
    total_at: Option<Instant>,
    pub metrics: Metrics,
}

/// An authenticated request's credentials.
struct Auth {
    username: String,
    key: [u8; 16],
    sha256: bool,
}

fn lifetime_secs(d: Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

impl Server {
    pub fn new(cfg: Config) -> Server {
        let nonces = Nonces::new(cfg.nonce_key, cfg.nonce_lifetime_secs);
        let tid_state = u64::from_le_bytes(cfg.nonce_key[..8].try_into().expect("8 bytes")) | 1;
        Server {
            cfg,
            nonces,
            allocs: HashMap::new(),
            by_five: HashMap::new(),
            revoked: HashMap::new(),
            by_port: HashMap::new(),
            per_user: HashMap::new(),
            out: VecDeque::new(),
            next_due: None,
            next_id: 1,
            tid_state,
            total_tokens: 0.0,
            total_at: None,
            metrics: Metrics::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the peer policy (settings changed).
    /// Changes the advertised public addresses (e.g. from the admin's
    /// settings) without touching live allocations; the box's own-address
    /// list follows (the old external address is no longer ours).
    pub fn set_external(&mut self, v4: Option<IpAddr>, v6: Option<IpAddr>) {
        let old: Vec<IpAddr> = self.cfg.external_v4.into_iter().chain(self.cfg.external_v6).collect();
        self.cfg.policy.own.retain(|ip| !old.contains(ip));
        self.cfg.policy.own.extend(v4.into_iter().chain(v6));
        (self.cfg.external_v4, self.cfg.external_v6) = (v4, v6);
    }

    /// Changes the total relay cap (bytes per second; 0: none).
    pub fn set_total_bandwidth(&mut self, bytes_per_sec: u64) {
        self.cfg.total_bandwidth_bytes_per_sec = bytes_per_sec;
    }

    pub fn set_policy(&mut self, policy: PeerPolicy) {
        self.cfg.policy = policy;
    }

    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    pub fn permission_count(&self) -> usize {
        self.allocs.values().map(|a| a.permissions.len()).sum()
    }

    pub fn channel_count(&self) -> usize {
        self.allocs.values().map(|a| a.channels.len()).sum()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }

    fn due(&mut self, t: Instant) {
        self.next_due = Some(self.next_due.map_or(t, |d| d.min(t)));
    }

    /// Expires allocations, permissions and channel bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_due.is_none_or(|d| d > now) {
            return;
        }
        let expired: Vec<AllocId> = self.allocs.iter().filter(|(_, a)| a.expires <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.metrics.allocations_expired += 1;
            self.remove(id);
        }
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for a in self.allocs.values_mut() {
            a.permissions.retain(|_, exp| *exp > now);
            let gone: Vec<u16> = a.channels.iter().filter(|(_, (_, exp))| *exp <= now).map(|(c, _)| *c).collect();
            for c in gone {
                if let Some((peer, _)) = a.channels.remove(&c) {
                    a.channel_of.remove(&peer);
                }
            }
            earliest(a.expires);
            a.permissions.values().for_each(|t| earliest(*t));
            a.channels.values().for_each(|(_, t)| earliest(*t));
        }
        self.next_due = next;
    }

    fn remove(&mut self, id: AllocId) {
        let Some(a) = self.allocs.remove(&id) else { return };
        self.by_five.remove(&a.five);
        if let Some(relay) = a.relay {
            self.by_port.remove(&(a.ipv6, relay.port()));
            self.out.push_back(Output::CloseRelay { alloc: id, relay });
        }
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
    }

    /// Ends at once every allocation made with a REST username for `user`
    /// (`<expiry>:<user>`), e.g. a disabled account or a guest whose link was
    /// revoked: its relays close, and credentials of that user expiring at or
    /// before `minted_by_expiry` (every one minted until now: the minter
    /// passes now + the validity it hands out) make no new allocation.
    /// Credentials minted later work again (an account enabled again).
    pub fn revoke(&mut self, user: &str, minted_by_expiry: u64, unix_now: u64) -> usize {
        self.revoked.retain(|_, until| *until > unix_now);
        let until = self.revoked.entry(user.to_string()).or_insert(0);
        *until = (*until).max(minted_by_expiry);
        let ids: Vec<AllocId> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.username.split_once(':').is_some_and(|(_, u)| u == user))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.remove(id);
        }
        ids.len()
    }

    /// A stream client went away: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, five: FiveTuple) {
        if let Some(id) = self.by_five.get(&five).copied() {
            self.remove(id);
        }
    }

    fn next_tid(&mut self) -> [u8; 12] {
        let mut t = [0u8; 12];
        for chunk in t.chunks_mut(4) {
            self.tid_state ^= self.tid_state << 13;
            self.tid_state ^= self.tid_state >> 7;
            self.tid_state ^= self.tid_state << 17;
            chunk.copy_from_slice(&self.tid_state.to_le_bytes()[..4]);
        }
        t
    }

    /// Bytes from a client on a listening socket (one datagram, or one
    /// framed message from a stream).
    pub fn handle_client(&mut self, now: Now, five: FiveTuple, data: &[u8]) {
        match data.first() {
            // ChannelData: channels 0x4000-0x7FFF (see `CHANNELS`)
            Some(0x40..=0x7F) => self.client_channel_data(now, five, data),
            Some(0x00..=0x03) => match Message::parse(data) {
                Ok(m) => self.client_stun(now, five, &m),
                Err(_) => self.metrics.drop_malformed += 1,
            },
            _ => self.metrics.drop_malformed += 1,
        }
    }

    fn client_stun(&mut self, now: Now, five: FiveTuple, m: &Message<'_>) {
        match (m.class(), m.method()) {
            (Class::Request, method::BINDING) => self.binding(five, m),
            (Class::Request, method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND) => {
                if !m.unknown_required().is_empty() {
                    let unknown = m.unknown_required().to_vec();
                    self.reply(five, m, None, |b| b.error(420, "Unknown Attribute").unknown_attributes(&unknown));
                    return;
                }
                let Some(auth) = self.authenticate(now, five, m) else { return };
                match m.method() {
                    method::ALLOCATE => self.allocate(now, five, m, auth),
                    method::REFRESH => self.refresh(now, five, m, auth),
                    method::CREATE_PERMISSION => self.create_permission(now, five, m, auth),
                    _ => self.channel_bind(now, five, m, auth),
                }
            }
            (Class::Indication, method::SEND) => self.send_indication(now, five, m),
            _ => self.metrics.drop_malformed += 1,
        }
    }

    /// Answers `m`; with `auth`, the answer carries MESSAGE-INTEGRITY and
    /// FINGERPRINT. Unauthenticated answers are never more than `max_ratio`
    /// times the request (else dropped), FINGERPRINT included only if asked
    /// for and if it fits.
    fn reply_with(
        &mut self,
        five: FiveTuple,
        m: &Message<'_>,
        class: Class,
        auth: Option<&Auth>,
        max_ratio: f64,
        f: impl FnOnce(Builder) -> Builder,
    ) {
        let b = f(Builder::new(class, m.method(), m.transaction_id()));
        let data = match auth {
            Some(a) if a.sha256 => b.integrity_sha256(&a.key).finish_with_fingerprint(),
            Some(a) => b.integrity(&a.key).finish_with_fingerprint(),
            None => {
                // FINGERPRINT only when asked for and when it fits the ratio.
                let limit = m.raw().len() as f64 * max_ratio;
                let with_fp = m.has_fingerprint().then(|| b.clone().finish_with_fingerprint());
                match with_fp.filter(|d| d.len() as f64 <= limit) {
                    Some(d) => d,
                    None => b.finish(),
                }
            }
        };
        if auth.is_none() && data.len() as f64 > m.raw().len() as f64 * max_ratio {
            self.metrics.drop_amplification += 1;
            return;
        }
        self.out.push_back(Output::ToClient { five, data });
    }

    fn reply(&mut self, five: FiveTuple, m: &Message<'_>, auth: Option<&Auth>, f: impl FnOnce(Builder) -> Builder) {
        self.reply_with(five, m, Class::Error, auth, 3.0, f);
    }

    fn success(&mut self, five: FiveTuple, m: &Message<'_>, auth: &Auth, f: impl FnOnce(Builder) -> Builder) {
        self.reply_with(five, m, Class::Success, Some(auth), f64::INFINITY, f);
    }

    /// RFC 8489 Binding: XOR-MAPPED-ADDRESS only; at most 1.6× the request.
    fn binding(&mut self, five: FiveTuple, m: &Message<'_>) {
        self.metrics.binding_requests += 1;
        if !m.unknown_required().is_empty() {
            let unknown = m.unknown_required().to_vec();
            self.reply(five, m, None, |b| b.error(420, "").unknown_attributes(&unknown));
            return;
        }
        let client = five.client;
        self.reply_with(five, m, Class::Success, None, 1.6, |b| b.xor_address(attr::XOR_MAPPED_ADDRESS, client));
    }

    fn challenge(&mut self, now: Now, five: FiveTuple, m: &Message<'_>, code: u16) {
        let nonce = self.nonces.issue(now.unix, five.client, five.server);
        let realm = self.cfg.realm.clone();
        self.reply(five, m, None, |b| b.error(code, "").attr(attr::REALM, realm.as_bytes()).attr(attr::NONCE, nonce.as_bytes()));
    }

    /// RFC 8489 §9.2 long-term credentials, with REST usernames.
    fn authenticate(&mut self, now: Now, five: FiveTuple, m: &Message<'_>) -> Option<Auth> {
        if !m.has_integrity() {
            self.challenge(now, five, m, 401);
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) =
            (m.text(attr::USERNAME, 513), m.text(attr::REALM, 763), m.text(attr::NONCE, 763))
        else {
            self.reply(five, m, None, |b| b.error(400, "Bad Request"));
            return None;
        };
        if !self.nonces.valid(nonce, now.unix, five.client, five.server) {
            self.metrics.stale_nonces += 1;
            self.challenge(now, five, m, 438);
            return None;
        }
        if realm != self.cfg.realm {
            self.metrics.auth_failures += 1;
            self.challenge(now, five, m, 401);
            return None;
        }
        // A live allocation keeps the credentials it was made with: its
        // later requests (Refresh, CreatePermission, ChannelBind) are checked
        // against them even once a REST username has expired, for up to the
        // credential horizon, so a relayed call lasts as long as the meeting.
        // New allocations always need valid credentials.
        let held = self
            .by_five
            .get(&five)
            .and_then(|id| self.allocs.get(id))
            .filter(|a| m.method() != method::ALLOCATE && a.username == username)
            .filter(|a| now.mono.saturating_duration_since(a.created).as_secs() < self.cfg.credentials.horizon_secs)
            .map(|a| a.key);
        let revoked = held.is_none()
            && username.split_once(':').is_some_and(|(expiry, user)| {
                self.revoked.get(user).is_some_and(|&until| expiry.parse::<u64>().is_ok_and(|e| e <= until))
            });
        if revoked {
            self.metrics.auth_failures += 1;
            self.challenge(now, five, m, 401);
            return None;
        }
        let key = match held.map_or_else(|| self.cfg.credentials.key(username, realm, now.unix), Ok) {
            Ok(k) => k,
            Err(_) => {
                self.metrics.auth_failures += 1;
                self.challenge(now, five, m, 401);
                return None;
            }
        };
        let sha1_ok = m.verify_integrity(&key);
        let sha256_ok = !sha1_ok && m.verify_integrity_sha256(&key);
        if !sha1_ok && !sha256_ok {
            self.metrics.auth_failures += 1;
            self.challenge(now, five, m, 401);
            return None;
        }
        let auth = Auth { username: username.to_string(), key, sha256: sha256_ok };
        // RFC 8656 §5: later requests on an allocation's 5-tuple must use its
        // credentials (441). An Allocate there is answered 437 instead
        // (§7.2), whoever sends it: see `allocate`.
        if let Some(a) = self.by_five.get(&five).and_then(|id| self.allocs.get(id))
            && a.username != auth.username && m.method() != method::ALLOCATE {
                self.reply(five, m, Some(&auth), |b| b.error(441, "Wrong Credentials"));
                return None;
            }
        Some(auth)
    }

    fn clamp_lifetime(&self, requested: Option<u32>) -> Duration {
        let d = requested.map_or(self.cfg.default_lifetime, |s| Duration::from_secs(u64::from(s)));
        d.clamp(self.cfg.default_lifetime, self.cfg.max_lifetime)
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        let ext = if relay.is_ipv6() { self.cfg.external_v6 } else { self.cfg.external_v4 };
        ext.map_or(relay, |ip| SocketAddr::new(ip, relay.port()))
    }

    fn allocate(&mut self, now: Now, five: FiveTuple, m: &Message<'_>, auth: Auth) {
        if let Some(&id) = self.by_five.get(&five) {
            let a = &self.allocs[&id];
            if a.created_tid == m.transaction_id() {
                if let Some(relay) = a.relay {
                    // A retransmission of the request that created it.
                    let (client, lifetime, adv) = (five.client, lifetime_secs(a.lifetime), self.advertised(relay));
                    self.success(five, m, &auth, |b| {
                        b.xor_address(attr::XOR_RELAYED_ADDRESS, adv)
                            .xor_address(attr::XOR_MAPPED_ADDRESS, client)
                            .u32_attr(attr::LIFETIME, lifetime)
                    });
                }
            } else {
                self.reply(five, m, Some(&auth), |b| b.error(437, "Allocation Mismatch"));
            }
            return;
        }
        match m.requested_transport() {
            None => return self.reply(five, m, Some(&auth), |b| b.error(400, "REQUESTED-TRANSPORT missing")),
            Some(17) => {}
            Some(_) => return self.reply(five, m, Some(&auth), |b| b.error(442, "Unsupported Transport Protocol")),
        }
        let ipv6 = match m.requested_family() {
            None | Some(Ok(1)) => false,
            Some(Ok(_)) => true,
            Some(Err(())) => return self.reply(five, m, Some(&auth), |b| b.error(400, "bad REQUESTED-ADDRESS-FAMILY")),
        };
        let even = match m.even_port() {
            None => false,
            Some(Ok(false)) => true,
            // RFC 8656 §7.2: a reservation we cannot make is 508.
            Some(Ok(true)) => return self.reply(five, m, Some(&auth), |b| b.error(508, "Port Reservation Unsupported")),
            Some(Err(())) => return self.reply(five, m, Some(&auth), |b| b.error(400, "bad EVEN-PORT")),
        };
        let dont_fragment = m.attr(attr::DONT_FRAGMENT).is_some();
        if m.attr(attr::RESERVATION_TOKEN).is_some() {
            return self.reply(five, m, Some(&auth), |b| b.error(508, "Port Reservation Unsupported"));
        }
        if (ipv6 && !self.cfg.relay_v6) || (!ipv6 && !self.cfg.relay_v4) {
            return self.reply(five, m, Some(&auth), |b| b.error(440, "Address Family not Supported"));
        }
        if self.per_user.get(&auth.username).copied().unwrap_or(0) >= self.cfg.user_quota {
            self.metrics.refused_quota += 1;
            return self.reply(five, m, Some(&auth), |b| b.error(486, "Allocation Quota Reached"));
        }
        if self.allocs.len() >= self.cfg.total_quota {
            self.metrics.refused_quota += 1;
            return self.reply(five, m, Some(&auth), |b| b.error(508, "Insufficient Capacity"));
        }
        let lifetime = self.clamp_lifetime(m.lifetime());
        let id = self.next_id;
        self.next_id += 1;
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        self.allocs.insert(
            id,
            Allocation {
                five,
                username: auth.username.clone(),
                key: auth.key,
                ipv6,
                relay: None,
                pending: Some(Pending { tid: m.transaction_id() }),
                created_tid: m.transaction_id(),
                created: now.mono,
                expires: now.mono + lifetime,
                lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
                tokens: self.cfg.bandwidth_bytes_per_sec as f64,
                tokens_at: now.mono,
            },
        );
        self.by_five.insert(five, id);
        self.due(now.mono + lifetime);
        self.metrics.allocations_created += 1;
        self.out.push_back(Output::OpenRelay { alloc: id, five, ipv6, even, dont_fragment });
    }

    /// The driver bound (or failed to bind) the relay socket of `alloc`.
    pub fn relay_opened(&mut self, _now: Now, alloc: AllocId, result: Result<SocketAddr, ()>) {
        let Some(a) = self.allocs.get_mut(&alloc) else {
            // Deleted meanwhile: give the socket back.
            if let Ok(relay) = result {
                self.out.push_back(Output::CloseRelay { alloc, relay });
            }
            return;
        };
        let Some(pending) = a.pending.take() else { return };
        let (five, key, lifetime) = (a.five, a.key, lifetime_secs(a.lifetime));
        let hdr = |class| Builder::new(class, method::ALLOCATE, pending.tid);
        let data = match result {
            Ok(relay) => {
                a.relay = Some(relay);
                let ipv6 = a.ipv6;
                self.by_port.insert((ipv6, relay.port()), alloc);
                hdr(Class::Success)
                    .xor_address(attr::XOR_RELAYED_ADDRESS, self.advertised(relay))
                    .xor_address(attr::XOR_MAPPED_ADDRESS, five.client)
                    .u32_attr(attr::LIFETIME, lifetime)
                    .integrity(&key)
                    .finish_with_fingerprint()
            }
            Err(()) => {
                self.remove(alloc);
                hdr(Class::Error).error(508, "Insufficient Capacity").integrity(&key).finish_with_fingerprint()
            }
        };
        self.out.push_back(Output::ToClient { five, data });
    }

    fn refresh(&mut self, now: Now, five: FiveTuple, m: &Message<'_>, auth: Auth) {
        let Some(&id) = self.by_five.get(&five) else {
            return self.reply(five, m, Some(&auth), |b| b.error(437, "Allocation Mismatch"));
        };
        let ipv6 = self.allocs[&id].ipv6;
        if let Some(fam) = m.requested_family()
            && fam != Ok(if ipv6 { 2 } else { 1 }) {
                return self.reply(five, m, Some(&auth), |b| b.error(443, "Peer Address Family Mismatch"));
            }
        if m.lifetime() == Some(0) {
            self.remove(id);
            return self.success(five, m, &auth, |b| b.u32_attr(attr::LIFETIME, 0));
        }
        let lifetime = self.clamp_lifetime(m.lifetime());
        let a = self.allocs.get_mut(&id).expect("present");
        a.expires = now.mono + lifetime;
        a.lifetime = lifetime;
        self.due(now.mono + lifetime);
        self.success(five, m, &auth, |b| b.u32_attr(attr::LIFETIME, lifetime_secs(lifetime)));
    }

    /// Whether `peer` may be used: refused addresses never; the box's own
    /// addresses only on an active relay port (when `port_matters`).
    fn peer_allowed(&self, peer: SocketAddr, port_matters: bool) -> bool {
        match self.cfg.policy.judge(peer.ip()) {
            Verdict::Allowed => true,
            Verdict::Refused => false,
            Verdict::OwnAddress => !port_matters || self.own_relay(peer).is_some(),
        }
    }

    /// The allocation whose relayed address `peer` is, if any.
    fn own_relay(&self, peer: SocketAddr) -> Option<AllocId> {
        let ip = normalize(peer.ip());
        self.by_port.get(&(ip.is_ipv6(), peer.port())).copied()
    }

    fn create_permission(&mut self, now: Now, five: FiveTuple, m: &Message<'_>, auth: Auth) {
        let Some(&id) = self.by_five.get(&five) else {
            return self.reply(five, m, Some(&auth), |b| b.error(437, "Allocation Mismatch"));
        };
        let peers: Vec<Result<SocketAddr, ()>> = m.xor_peer_addresses().take(16).collect();
        if peers.is_empty() || peers.iter().any(Result::is_err) {
            return self.reply(five, m, Some(&auth), |b| b.error(400, "bad or missing XOR-PEER-ADDRESS"));
        }
        let peers: Vec<SocketAddr> = peers.into_iter().map(|p| p.expect("checked")).collect();
        // Forbidden first, whatever the family: `::ffff:127.0.0.1` is refused
        // like 127.0.0.1, on an IPv4 and on an IPv6 relay alike.
        if peers.iter().any(|p| !self.peer_allowed(*p, false)) {
            self.metrics.refused_forbidden += 1;
            return self.reply(five, m, Some(&auth), |b| b.error(403, "Forbidden"));
        }
        let ipv6 = self.allocs[&id].ipv6;
        if peers.iter().any(|p| normalize(p.ip()).is_ipv6() != ipv6) {
            return self.reply(five, m, Some(&auth), |b| b.error(443, "Peer Address Family Mismatch"));
        }
        let a = self.allocs.get_mut(&id).expect("present");
        let new = peers.iter().filter(|p| !a.permissions.contains_key(&normalize(p.ip()))).count();
        if a.permissions.len() + new > self.cfg.max_permissions {
            return self.reply(five, m, Some(&auth), |b| b.error(508, "Insufficient Capacity"));
        }
        let exp = now.mono + self.cfg.permission_lifetime;
        for p in &peers {
            a.permissions.insert(normalize(p.ip()), exp);
        }
        self.due(exp);
        self.success(five, m, &auth, |b| b);
    }

    fn channel_bind(&mut self, now: Now, five: FiveTuple, m: &Message<'_>, auth: Auth) {
        let Some(&id) = self.by_five.get(&five) else {
            return self.reply(five, m, Some(&auth), |b| b.error(437, "Allocation Mismatch"));
        };
        let channel = match m.channel_number() {
            Some(c) if CHANNELS.contains(&c) => c,
            _ => return self.reply(five, m, Some(&auth), |b| b.error(400, "bad CHANNEL-NUMBER")),
        };
        let Some(Ok(peer)) = m.xor_address(attr::XOR_PEER_ADDRESS) else {
            return self.reply(five, m, Some(&auth), |b| b.error(400, "bad or missing XOR-PEER-ADDRESS"));
        };
        if !self.peer_allowed(peer, true) {
            self.metrics.refused_forbidden += 1;
            return self.reply(five, m, Some(&auth), |b| b.error(403, "Forbidden"));
        }
        let a = &self.allocs[&id];
        if normalize(peer.ip()).is_ipv6() != a.ipv6 {
            return self.reply(five, m, Some(&auth), |b| b.error(443, "Peer Address Family Mismatch"));
        }
        let other_peer = a.channels.get(&channel).is_some_and(|(p, _)| *p != peer);
        let other_channel = a.channel_of.get(&peer).is_some_and(|c| *c != channel);
        if other_peer || other_channel {
            return self.reply(five, m, Some(&auth), |b| b.error(400, "channel or peer already bound"));
        }
        let a = self.allocs.get_mut(&id).expect("present");
        if !a.channels.contains_key(&channel) && a.channels.len() >= self.cfg.max_channels {
            return self.reply(five, m, Some(&auth), |b| b.error(508, "Insufficient Capacity"));
        }
        let exp = now.mono + self.cfg.channel_lifetime;
        a.channels.insert(channel, (peer, exp));
        a.channel_of.insert(peer, channel);
        let perm = now.mono + self.cfg.permission_lifetime;
        a.permissions.insert(normalize(peer.ip()), perm);
        self.due(perm);
        self.success(five, m, &auth, |b| b);
    }

    fn send_indication(&mut self, now: Now, five: FiveTuple, m: &Message<'_>) {
        let Some(&id) = self.by_five.get(&five) else {
            self.metrics.drop_no_allocation += 1;
            return;
        };
        let (Some(Ok(peer)), Some(data)) = (m.xor_address(attr::XOR_PEER_ADDRESS), m.attr(attr::DATA)) else {
            self.metrics.drop_malformed += 1;
            return;
        };
        self.relay_out(now, id, peer, data);
    }

    fn client_channel_data(&mut self, now: Now, five: FiveTuple, data: &[u8]) {
        let Some(cd) = ChannelData::parse(data) else {
            self.metrics.drop_malformed += 1;
            return;
        };
        let Some(&id) = self.by_five.get(&five) else {
            self.metrics.drop_no_allocation += 1;
            return;
        };
        let peer = match self.allocs[&id].channels.get(&cd.channel) {
            Some((peer, exp)) if *exp > now.mono => *peer,
            _ => {
                self.metrics.drop_no_permission += 1;
                return;
            }
        };
        self.relay_out(now, id, peer, cd.data);
    }

    /// Takes `bytes` from the allocation's bucket and, when the relay sends
    /// them out (`outgoing`: to a peer or to a client, not a hand-over
    /// between two allocations), from the total bucket. Both or neither.
    fn spend(&mut self, id: AllocId, now: Instant, bytes: usize, outgoing: bool) -> bool {
        let need = bytes as f64;
        let cap = self.cfg.bandwidth_bytes_per_sec as f64;
        if cap > 0.0 {
            let a = self.allocs.get_mut(&id).expect("present");
            let elapsed = now.saturating_duration_since(a.tokens_at).as_secs_f64();
            a.tokens_at = now;
            a.tokens = (a.tokens + elapsed * cap).min(cap);
            if a.tokens < need {
                self.metrics.drop_bandwidth += 1;
                return false;
            }
        }
        let total = self.cfg.total_bandwidth_bytes_per_sec as f64;
        if outgoing && total > 0.0 {
            let elapsed = self.total_at.map_or(1.0, |at| now.saturating_duration_since(at).as_secs_f64());
            self.total_at = Some(now);
            // a burst of at most a quarter second of the cap
            self.total_tokens = (self.total_tokens + elapsed * total).min(total / 4.0);
            if self.total_tokens < need {
                self.metrics.drop_bandwidth_total += 1;
                return false;
            }
            self.total_tokens -= need;
        }
        if cap > 0.0 {
            self.allocs.get_mut(&id).expect("present").tokens -= need;
        }
        true
    }

    /// Data from allocation `id`'s client to `peer`.
    fn relay_out(&mut self, now: Now, id: AllocId, peer: SocketAddr, data: &[u8]) {
        let a = &self.allocs[&id];
        let Some(relay) = a.relay else { return };
        if !a.permitted(peer.ip(), now.mono) {
            self.metrics.drop_no_permission += 1;
            return;
        }
        // One judgement per packet. Our own addresses (and loopback in tests)
        // are reachable only on an active relay port, handed over in-process.
        let verdict = self.cfg.policy.judge(peer.ip());
        let ours = verdict == Verdict::OwnAddress
            || (self.cfg.policy.allow_loopback && normalize(peer.ip()).is_loopback());
        let target = if ours { self.own_relay(peer) } else { None };
        if verdict == Verdict::Refused || (verdict == Verdict::OwnAddress && target.is_none()) {
            self.metrics.drop_forbidden_peer += 1;
            return;
        }
        if !self.spend(id, now.mono, data.len(), target.is_none()) {
            return;
        }
        if let Some(target) = target {
            self.metrics.packets_in_process += 1;
            let from = self.advertised(relay);
            self.deliver(now, target, from, data);
            return;
        }
        self.metrics.packets_to_peers += 1;
        self.metrics.bytes_to_peers += data.len() as u64;
        self.out.push_back(Output::ToPeer { alloc: id, relay, peer, data: data.to_vec() });
    }

    /// A datagram from `peer` arrived on the relay socket bound at `relay`.
    pub fn handle_peer(&mut self, now: Now, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let Some(&id) = self.by_port.get(&(relay.is_ipv6(), relay.port())) else {
            self.metrics.drop_no_allocation += 1;
            return;
        };
        self.deliver(now, id, peer, data);
    }

    /// Data for allocation `id`'s client from `from`: ChannelData when a
    /// channel is bound, else a Data indication; nothing without permission.
    fn deliver(&mut self, now: Now, id: AllocId, from: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocs.get(&id) else { return };
        if !a.permitted(from.ip(), now.mono) {
            self.metrics.drop_no_permission += 1;
            return;
        }
        let five = a.five;
        let channel = a.channel_of.get(&from).copied().filter(|c| a.channels.get(c).is_some_and(|(_, e)| *e > now.mono));
        if !self.spend(id, now.mono, data.len(), true) {
            return;
        }
        let mut out = Vec::with_capacity(data.len() + 36);
        match channel {
            Some(c) => ChannelData::encode(c, data, &mut out),
            None => {
                let tid = self.next_tid();
                out = Builder::new(Class::Indication, method::DATA, tid)
                    .xor_address(attr::XOR_PEER_ADDRESS, from)
                    .attr(attr::DATA, data)
                    .finish();
            }
        }
        self.metrics.packets_to_clients += 1;
        self.metrics.bytes_to_clients += data.len() as u64;
        self.out.push_back(Output::ToClient { five, data: out });
    }
}

/// Channel numbers a client may bind: RFC 5766's 0x4000-0x7FFF, which
/// coturn and its `turnutils_uclient` use, not only RFC 8656's narrower
/// 0x4000-0x4FFF (which exists for demultiplexing with DTLS-SRTP on one
/// port; on a TURN listening port nothing else arrives).
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// Whether bytes from a client start a STUN message or ChannelData.
pub fn is_turn_traffic(b: &[u8]) -> bool {
    stun::looks_like_stun(b) || matches!(b.first(), Some(0x40..=0x7F))
}

#[cfg(test)]
mod tests;
