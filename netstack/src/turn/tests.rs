//! Scenario tests: the engine driven by hand with a fake clock.

use super::*;
use crate::stun::long_term_key;

const REALM: &str = "parvis";
const BOX_IP: &str = "192.0.2.1";

fn config() -> Config {
    let credentials = Credentials { secret: b"secret".to_vec(), horizon_secs: 86_400, ..Default::default() };
    let mut c = Config::new(REALM, credentials, [7; 32]);
    c.policy.own = vec![BOX_IP.parse().unwrap(), "2001:db8::1".parse().unwrap()];
    c
}

struct H {
    s: Server,
    now: Now,
    next_port: u16,
    tid: u8,
    /// DONT-FRAGMENT of each relay the engine asked for, in order.
    dont_fragment: Vec<bool>,
}

struct Client {
    five: FiveTuple,
    username: String,
    key: [u8; 16],
    nonce: Option<String>,
}

const UNIX0: u64 = 1_800_000_000;

fn five(client: &str) -> FiveTuple {
    FiveTuple { client: client.parse().unwrap(), server: format!("{BOX_IP}:3478").parse().unwrap(), transport: Transport::Udp }
}

impl H {
    fn new() -> H {
        H::with(config())
    }
    fn with(c: Config) -> H {
        // The fake clock starts at an arbitrary real instant and only moves by advance().
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        H { s: Server::new(c), now: Now { mono: t0, unix: UNIX0 }, next_port: 50000, tid: 0, dont_fragment: Vec::new() }
    }

    fn client(&self, addr: &str, user: &str) -> Client {
        self.client_until(addr, user, UNIX0 + 3600)
    }

    /// A client whose REST username expires at `expiry` (Unix seconds).
    fn client_until(&self, addr: &str, user: &str, expiry: u64) -> Client {
        let username = auth::rest_username(expiry, user);
        let password = auth::rest_password(b"secret", &username);
        Client { five: five(addr), key: long_term_key(&username, REALM, &password), username, nonce: None }
    }

    fn advance(&mut self, secs: u64) {
        self.now.mono += Duration::from_secs(secs);
        self.now.unix += secs;
        self.s.handle_timeout(self.now.mono);
    }

    /// Drains outputs, binding relay sockets when asked.
    fn outputs(&mut self) -> Vec<Output> {
        let mut all = Vec::new();
        while let Some(o) = self.s.poll_output() {
            if let Output::OpenRelay { alloc, ipv6, even, dont_fragment, .. } = o {
                self.dont_fragment.push(dont_fragment);
                let ip = if ipv6 { "2001:db8::1" } else { BOX_IP };
                if even && self.next_port % 2 == 1 {
                    self.next_port += 1;
                }
                let addr = SocketAddr::new(ip.parse().unwrap(), self.next_port);
                self.next_port += 1;
                self.s.relay_opened(self.now, alloc, Ok(addr));
            }
            all.push(o);
        }
        all
    }

    fn client_gets(&mut self, five: FiveTuple) -> Vec<Vec<u8>> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::ToClient { five: f, data } if f == five => Some(data),
                _ => None,
            })
            .collect()
    }

    fn tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        [self.tid; 12]
    }

    /// Sends an authenticated request (getting a nonce first if needed) and
    /// returns the one answer.
    fn request(&mut self, c: &mut Client, method: u16, f: impl Fn(Builder) -> Builder) -> Vec<u8> {
        self.request_tid(c, method, None, f)
    }

    fn request_tid(&mut self, c: &mut Client, method: u16, tid: Option<[u8; 12]>, f: impl Fn(Builder) -> Builder) -> Vec<u8> {
        if c.nonce.is_none() {
            // Learn a nonce the way clients do: an unauthenticated Allocate
            // (large enough for its 401 to pass the 3x amplification limit).
            let t = self.tid();
            let raw = Builder::new(Class::Request, method::ALLOCATE, t).u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).finish();
            self.s.handle_client(self.now, c.five, &raw);
            let answer = self.client_gets(c.five).pop().expect("a 401");
            let m = Message::parse(&answer).unwrap();
            assert_eq!(m.error_code().map(|e| e.0), Some(401));
            c.nonce = Some(m.text(attr::NONCE, 763).unwrap().to_string());
        }
        let t = tid.unwrap_or_else(|| self.tid());
        let raw = f(Builder::new(Class::Request, method, t))
            .attr(attr::USERNAME, c.username.as_bytes())
            .attr(attr::REALM, REALM.as_bytes())
            .attr(attr::NONCE, c.nonce.clone().unwrap().as_bytes())
            .integrity(&c.key)
            .finish_with_fingerprint();
        self.s.handle_client(self.now, c.five, &raw);
        self.client_gets(c.five).pop().expect("an answer")
    }

    /// [`H::request`], taking the new nonce of a 438 and asking again, as
    /// real clients do.
    fn request_fresh(&mut self, c: &mut Client, method: u16, f: impl Fn(Builder) -> Builder) -> Vec<u8> {
        let answer = self.request(c, method, &f);
        let m = Message::parse(&answer).unwrap();
        if m.error_code().map(|e| e.0) != Some(438) {
            return answer;
        }
        c.nonce = Some(m.text(attr::NONCE, 763).unwrap().to_string());
        self.request(c, method, f)
    }

    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self.request(c, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::Success, "{:?}", m.error_code());
        assert!(m.verify_integrity(&c.key));
        m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap()
    }

    fn permit(&mut self, c: &mut Client, peer: &str) -> Option<u16> {
        let peer: SocketAddr = peer.parse().unwrap();
        let r = self.request(c, method::CREATE_PERMISSION, |b| b.xor_address(attr::XOR_PEER_ADDRESS, peer));
        Message::parse(&r).unwrap().error_code().map(|e| e.0)
    }

    fn bind(&mut self, c: &mut Client, channel: u16, peer: &str) -> Option<u16> {
        let peer: SocketAddr = peer.parse().unwrap();
        let r = self.request(c, method::CHANNEL_BIND, |b| {
            b.u32_attr(attr::CHANNEL_NUMBER, u32::from(channel) << 16).xor_address(attr::XOR_PEER_ADDRESS, peer)
        });
        Message::parse(&r).unwrap().error_code().map(|e| e.0)
    }

    fn send(&mut self, c: &Client, peer: &str, data: &[u8]) {
        let peer: SocketAddr = peer.parse().unwrap();
        let t = self.tid();
        let raw = Builder::new(Class::Indication, method::SEND, t)
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data)
            .finish();
        self.s.handle_client(self.now, c.five, &raw);
    }

    fn peers_get(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::ToPeer { peer, data, .. } => Some((peer, data)),
                _ => None,
            })
            .collect()
    }
}

fn code(r: &[u8]) -> Option<u16> {
    Message::parse(r).unwrap().error_code().map(|e| e.0)
}

#[test]
fn binding_answers_with_xor_mapped_address_only_and_amplifies_little() {
    let mut h = H::new();
    let c = five("198.51.100.7:40000");
    let req = Builder::new(Class::Request, method::BINDING, [1; 12]).finish();
    h.s.handle_client(h.now, c, &req);
    let out = h.client_gets(c);
    let m = Message::parse(&out[0]).unwrap();
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(c.client)));
    assert!(out[0].len() as f64 <= 1.6 * req.len() as f64, "{} vs {}", out[0].len(), req.len());
    // CHANGE-REQUEST (RFC 5780) is not reflected: 420
    let req = Builder::new(Class::Request, method::BINDING, [2; 12]).attr(attr::CHANGE_REQUEST, &[0, 0, 0, 6]).finish();
    h.s.handle_client(h.now, c, &req);
    assert_eq!(code(&h.client_gets(c)[0]), Some(420));
    // an IPv6 client's bare 20-byte request would be amplified 2.2×: no answer
    let c6 = five("[2001:db8:5::9]:40000");
    let req = Builder::new(Class::Request, method::BINDING, [3; 12]).finish();
    h.s.handle_client(h.now, c6, &req);
    assert!(h.client_gets(c6).is_empty());
    let req = Builder::new(Class::Request, method::BINDING, [3; 12]).attr(attr::SOFTWARE, b"browser 1.0").finish();
    h.s.handle_client(h.now, c6, &req);
    let out = h.client_gets(c6);
    assert!(out[0].len() as f64 <= 1.6 * req.len() as f64);
}

#[test]
fn allocation_needs_credentials_and_the_challenge_is_small() {
    let mut h = H::new();
    let c = five("198.51.100.7:40000");
    let req = Builder::new(Class::Request, method::ALLOCATE, [1; 12]).u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).finish();
    h.s.handle_client(h.now, c, &req);
    let out = h.client_gets(c);
    let m = Message::parse(&out[0]).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(401));
    assert_eq!(m.text(attr::REALM, 100), Some(REALM));
    assert!(m.text(attr::NONCE, 100).is_some());
    assert!(out[0].len() <= 3 * req.len(), "401 is {} bytes for a {}-byte request", out[0].len(), req.len());
    // wrong password
    let mut bad = h.client("198.51.100.7:40000", "mallory");
    bad.key = long_term_key(&bad.username, REALM, "guess");
    let r = h.request(&mut bad, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(401));
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn rest_usernames_expired_or_too_far_ahead_are_refused() {
    let mut h = H::new();
    for expiry in [UNIX0 - 1, UNIX0 + 86_400 * 2] {
        let username = auth::rest_username(expiry, "bob");
        let key = long_term_key(&username, REALM, &auth::rest_password(b"secret", &username));
        let mut c = Client { five: five("198.51.100.7:40000"), username, key, nonce: None };
        let r = h.request(&mut c, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
        assert_eq!(code(&r), Some(401));
    }
}

#[test]
fn allocate_relays_and_lifetimes_are_clamped() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let relay = h.allocate(&mut c);
    assert_eq!(relay.ip().to_string(), BOX_IP);
    let t0 = h.now.mono;
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    for (asked, granted) in [(30, 600), (1200, 1200), (100_000, 3600)] {
        let r = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, asked));
        assert_eq!(Message::parse(&r).unwrap().lifetime(), Some(granted), "asked {asked}");
    }
}

#[test]
fn allocation_expires_without_refresh() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    h.advance(599);
    assert_eq!(h.s.allocation_count(), 1);
    h.advance(2);
    assert_eq!(h.s.allocation_count(), 0);
    assert!(matches!(h.outputs().as_slice(), [Output::CloseRelay { .. }]), "closed at expiry");
    c.nonce = None; // the nonce has gone stale too (438); take a fresh one
    let r = h.request(&mut c, method::REFRESH, |b| b);
    assert_eq!(code(&r), Some(437));
}

#[test]
fn refresh_with_lifetime_zero_deletes_at_once() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let relay = h.allocate(&mut c);
    let r = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0));
    assert_eq!(Message::parse(&r).unwrap().lifetime(), Some(0));
    assert_eq!(h.s.allocation_count(), 0);
    let r = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 600));
    assert_eq!(code(&r), Some(437), "nothing revives it");
    h.s.handle_peer(h.now, relay, "93.184.216.5:9".parse().unwrap(), b"late");
    assert!(h.outputs().is_empty());
}

#[test]
fn second_allocate_on_a_five_tuple_is_437_but_a_retransmission_is_answered() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let tid = [99; 12];
    let transport = |b: Builder| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
    h.request(&mut c, method::ALLOCATE, |b| b); // fetch a nonce (answer: 400, no transport)
    let first = h.request_tid(&mut c, method::ALLOCATE, Some(tid), transport);
    assert_eq!(code(&first), None);
    let again = h.request_tid(&mut c, method::ALLOCATE, Some(tid), transport);
    assert_eq!(code(&again), None, "same transaction: same success");
    let other = h.request(&mut c, method::ALLOCATE, transport);
    assert_eq!(code(&other), Some(437));
    assert_eq!(h.s.allocation_count(), 1);
}

#[test]
fn requests_without_allocation_get_437() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    assert_eq!(code(&h.request(&mut c, method::REFRESH, |b| b)), Some(437));
    assert_eq!(h.permit(&mut c, "93.184.216.5:1"), Some(437));
    assert_eq!(h.bind(&mut c, 0x4000, "93.184.216.5:1"), Some(437));
}

#[test]
fn permissions_are_per_ip_and_expire() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let relay = h.allocate(&mut c);
    // before any permission: both directions dropped
    h.send(&c, "93.184.216.5:7000", b"x");
    h.s.handle_peer(h.now, relay, "93.184.216.5:7000".parse().unwrap(), b"y");
    assert!(h.outputs().is_empty());
    assert_eq!(h.permit(&mut c, "93.184.216.5:7000"), None);
    h.send(&c, "93.184.216.5:7000", b"hello");
    assert_eq!(h.peers_get(), vec![("93.184.216.5:7000".parse().unwrap(), b"hello".to_vec())]);
    // any port of that IP may answer
    h.s.handle_peer(h.now, relay, "93.184.216.5:9999".parse().unwrap(), b"reply");
    let out = h.client_gets(c.five);
    let m = Message::parse(&out[0]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, method::DATA));
    assert_eq!(m.attr(attr::DATA), Some(&b"reply"[..]));
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok("93.184.216.5:9999".parse().unwrap())));
    h.advance(299);
    h.s.handle_peer(h.now, relay, "93.184.216.5:1".parse().unwrap(), b"still");
    assert_eq!(h.client_gets(c.five).len(), 1);
    h.advance(2);
    h.s.handle_peer(h.now, relay, "93.184.216.5:1".parse().unwrap(), b"too late");
    h.send(&c, "93.184.216.5:7000", b"too late");
    assert!(h.outputs().is_empty(), "permission expired after 300 s");
}

#[test]
fn channels_follow_the_rules_and_expire() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let relay = h.allocate(&mut c);
    for bad in [0x3FFF, 0x8000, 0xFFFF] {
        assert_eq!(h.bind(&mut c, bad, "93.184.216.5:7000"), Some(400), "{bad:#x}");
    }
    assert_eq!(h.bind(&mut c, 0x4001, "93.184.216.5:7000"), None);
    assert_eq!(h.bind(&mut c, 0x4001, "93.184.216.5:7000"), None, "refresh");
    assert_eq!(h.bind(&mut c, 0x4001, "93.184.216.6:7000"), Some(400), "same channel, other peer");
    assert_eq!(h.bind(&mut c, 0x4002, "93.184.216.5:7000"), Some(400), "same peer, other channel");
    let mut cd = Vec::new();
    ChannelData::encode(0x4001, b"via channel", &mut cd);
    h.s.handle_client(h.now, c.five, &cd);
    assert_eq!(h.peers_get(), vec![("93.184.216.5:7000".parse().unwrap(), b"via channel".to_vec())]);
    h.s.handle_peer(h.now, relay, "93.184.216.5:7000".parse().unwrap(), b"back");
    let out = h.client_gets(c.five);
    assert_eq!(ChannelData::parse(&out[0]), Some(ChannelData { channel: 0x4001, data: b"back" }));
    // keep the allocation and the permission alive but let the channel lapse (600 s)
    for _ in 0..2 {
        h.advance(250);
        assert_eq!(h.permit(&mut c, "93.184.216.5:7000"), None);
        assert_eq!(code(&h.request(&mut c, method::REFRESH, |b| b)), None);
    }
    h.advance(101);
    h.s.handle_client(h.now, c.five, &cd);
    assert!(h.peers_get().is_empty(), "channel expired");
    h.s.handle_peer(h.now, relay, "93.184.216.5:7000".parse().unwrap(), b"back");
    let out = h.client_gets(c.five);
    assert_eq!(Message::parse(&out[0]).unwrap().method(), method::DATA, "falls back to a Data indication");
}

#[test]
fn nonce_from_another_five_tuple_or_expired_is_stale() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    let mut other = h.client("198.51.100.7:40001", "alice");
    other.nonce = c.nonce.clone();
    let r = h.request(&mut other, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(438));
    h.advance(601);
    let r = h.request(&mut c, method::REFRESH, |b| b);
    assert_eq!(code(&r), Some(438));
    assert!(Message::parse(&r).unwrap().text(attr::NONCE, 100).is_some(), "a fresh nonce comes with 438");
}

#[test]
fn changed_username_mid_allocation_is_441() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    let mut mallory = h.client("198.51.100.7:40000", "mallory");
    mallory.nonce = c.nonce.clone();
    let r = h.request(&mut mallory, method::REFRESH, |b| b);
    assert_eq!(code(&r), Some(441));
}

#[test]
fn forbidden_peers_are_refused_in_every_spelling() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    for peer in [
        "127.0.0.1:80", "0.0.0.0:80", "169.254.169.254:80", "10.0.0.1:53", "192.168.1.1:161", "100.64.0.1:1",
        "224.0.0.251:5353", "255.255.255.255:67", "192.0.2.77:80", "198.51.100.1:80", "203.0.113.5:80",
        "198.18.0.1:80",
    ] {
        assert_eq!(h.permit(&mut c, peer), Some(403), "{peer}");
    }
    let mut c6 = h.client("[2001:db8:9::1]:40000", "alice6");
    let r = h.request(&mut c6, method::ALLOCATE, |b| {
        b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).u32_attr(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24)
    });
    assert_eq!(code(&r), None);
    for peer in ["[::ffff:127.0.0.1]:80", "[::ffff:0.0.0.0]:80", "[::ffff:169.254.169.254]:80", "[::127.0.0.1]:80",
        "[64:ff9b::7f00:1]:80", "[2002:7f00:1::1]:80", "[::1]:80", "[fe80::1]:80", "[fd00::1]:80",
        "[2001:db8:7::1]:80", "[3fff::1]:80", "[::ffff:203.0.113.5]:80"] {
        let r = h.request(&mut c6, method::CREATE_PERMISSION, |b| b.xor_address(attr::XOR_PEER_ADDRESS, peer.parse().unwrap()));
        let got = code(&r);
        assert!(got == Some(403) || got == Some(443), "{peer}: {got:?}");
    }
    // the box's own address is fine for a permission, but not its other ports
    assert_eq!(h.permit(&mut c, &format!("{BOX_IP}:1")), None);
    assert_eq!(h.bind(&mut c, 0x4000, &format!("{BOX_IP}:22")), Some(403));
    h.send(&c, &format!("{BOX_IP}:22"), b"ssh?");
    assert!(h.peers_get().is_empty());
    assert_eq!(h.s.permission_count(), 1);
}

#[test]
fn the_admin_can_allow_a_lan_range() {
    let mut cfg = config();
    cfg.policy.allow = vec!["192.168.10.0/24".parse().unwrap()];
    let mut h = H::with(cfg);
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    assert_eq!(h.permit(&mut c, "192.168.10.20:5000"), None);
    assert_eq!(h.permit(&mut c, "192.168.11.20:5000"), Some(403));
}

#[test]
fn relay_to_relay_is_forwarded_in_process() {
    let mut h = H::new();
    let mut a = h.client("198.51.100.7:40000", "alice");
    let mut b = h.client("93.184.216.50:40000", "bob");
    let ra = h.allocate(&mut a);
    let rb = h.allocate(&mut b);
    assert_eq!(h.permit(&mut a, &rb.to_string()), None);
    assert_eq!(h.permit(&mut b, &ra.to_string()), None);
    assert_eq!(h.bind(&mut b, 0x4005, &ra.to_string()), None);
    h.send(&a, &rb.to_string(), b"media");
    let outs = h.outputs();
    assert!(!outs.iter().any(|o| matches!(o, Output::ToPeer { .. })), "never through the kernel");
    let to_b: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::ToClient { five, data } if *five == b.five => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ChannelData::parse(&to_b[0]), Some(ChannelData { channel: 0x4005, data: b"media" }));
    assert_eq!(h.s.metrics.packets_in_process, 1);
    // without a permission on the far side, nothing is delivered
    let mut c = h.client("198.51.100.9:40000", "carol");
    let rc = h.allocate(&mut c);
    h.send(&a, &rc.to_string(), b"x");
    h.permit(&mut a, &rc.to_string());
    h.send(&a, &rc.to_string(), b"x");
    assert!(h.client_gets(c.five).is_empty());
}

#[test]
fn quotas_per_user_and_in_total() {
    let mut cfg = config();
    cfg.user_quota = 2;
    cfg.total_quota = 3;
    let mut h = H::with(cfg);
    for port in [1, 2] {
        let mut c = h.client(&format!("198.51.100.7:{port}"), "alice");
        h.allocate(&mut c);
    }
    let mut third = h.client("198.51.100.7:3", "alice");
    let r = h.request(&mut third, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(486));
    let mut bob = h.client("198.51.100.8:1", "bob");
    h.allocate(&mut bob);
    let mut carol = h.client("198.51.100.9:1", "carol");
    let r = h.request(&mut carol, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(508));
}

#[test]
fn unknown_required_attribute_gets_420_with_the_list() {
    let mut h = H::new();
    let c = five("198.51.100.7:40000");
    let req = Builder::new(Class::Request, method::ALLOCATE, [4; 12]).attr(0x7ABC, b"?").finish();
    h.s.handle_client(h.now, c, &req);
    let out = h.client_gets(c);
    let m = Message::parse(&out[0]).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(420));
    assert_eq!(m.attr(attr::UNKNOWN_ATTRIBUTES), Some(&[0x7A, 0xBC][..]));
}

#[test]
fn allocate_checks_transport_and_family() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    assert_eq!(code(&h.request(&mut c, method::ALLOCATE, |b| b)), Some(400));
    assert_eq!(code(&h.request(&mut c, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24))), Some(442));
    let r = h.request(&mut c, method::ALLOCATE, |b| {
        b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).u32_attr(attr::REQUESTED_ADDRESS_FAMILY, 0x07 << 24)
    });
    assert_eq!(code(&r), Some(400));
    let mut cfg = config();
    cfg.relay_v6 = false;
    let mut h = H::with(cfg);
    let mut c = h.client("198.51.100.7:40000", "alice");
    let r = h.request(&mut c, method::ALLOCATE, |b| {
        b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).u32_attr(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24)
    });
    assert_eq!(code(&r), Some(440));
    // an IPv4 allocation refuses IPv6 peers
    h.allocate(&mut c);
    assert_eq!(h.permit(&mut c, "[2a01:4f8:7::1]:5"), Some(443));
}

#[test]
fn bandwidth_cap_drops_the_excess() {
    let mut cfg = config();
    cfg.bandwidth_bytes_per_sec = 1000;
    let mut h = H::with(cfg);
    let mut c = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut c);
    h.permit(&mut c, "93.184.216.5:1");
    for _ in 0..5 {
        h.send(&c, "93.184.216.5:1", &[0; 400]);
    }
    assert_eq!(h.peers_get().len(), 2);
    h.advance(1);
    h.send(&c, "93.184.216.5:1", &[0; 400]);
    assert_eq!(h.peers_get().len(), 1);
    assert_eq!(h.s.metrics.drop_bandwidth, 3);
}

#[test]
fn stream_client_gone_means_allocation_gone() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    c.five.transport = Transport::Tcp;
    h.allocate(&mut c);
    h.s.client_closed(c.five);
    assert_eq!(h.s.allocation_count(), 0);
    assert!(h.outputs().iter().any(|o| matches!(o, Output::CloseRelay { .. })));
}

#[test]
fn garbage_is_counted_and_never_crashes() {
    let mut h = H::new();
    let c = five("198.51.100.7:40000");
    let mut x: u64 = 0x1234_5678;
    for len in 0..2000usize {
        let mut b = Vec::with_capacity(len % 300);
        for _ in 0..len % 300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(x as u8);
        }
        if len % 3 == 0 && b.len() >= 20 {
            b[0] = 0;
            b[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
        }
        h.s.handle_client(h.now, c, &b);
        h.s.handle_peer(h.now, "192.0.2.1:50000".parse().unwrap(), "93.184.216.1:1".parse().unwrap(), &b);
    }
    let _ = h.outputs();
    assert!(h.s.metrics.drop_malformed > 0);
}

#[test]
fn even_port_is_honoured_and_reservations_are_refused() {
    let mut h = H::new();
    h.next_port = 50001;
    let mut c = h.client("198.51.100.7:40000", "alice");
    let r = h.request(&mut c, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).attr(attr::EVEN_PORT, &[0]));
    let relay = Message::parse(&r).unwrap().xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap();
    assert_eq!(relay.port() % 2, 0);
    let mut d = h.client("198.51.100.7:40001", "alice");
    let r = h.request(&mut d, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).attr(attr::EVEN_PORT, &[0x80]));
    assert_eq!(code(&r), Some(508));
    let r = h.request(&mut d, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).attr(attr::RESERVATION_TOKEN, &[1; 8]));
    assert_eq!(code(&r), Some(420), "RESERVATION-TOKEN is not understood");
}

/// coturn's `turnutils_uclient` binds channels above RFC 8656's 0x4FFF.
#[test]
fn channels_up_to_0x7fff_carry_data_both_ways() {
    let mut h = H::new();
    let mut c = h.client("198.51.100.7:40000", "alice");
    let relay = h.allocate(&mut c);
    for (channel, port) in [(0x5000u16, 7001u16), (0x6ABC, 7002), (0x7FFF, 7003)] {
        let peer = format!("93.184.216.5:{port}");
        assert_eq!(h.bind(&mut c, channel, &peer), None, "{channel:#x}");
        let mut cd = Vec::new();
        ChannelData::encode(channel, b"out", &mut cd);
        h.s.handle_client(h.now, c.five, &cd);
        assert_eq!(h.peers_get(), vec![(peer.parse().unwrap(), b"out".to_vec())], "{channel:#x}");
        h.s.handle_peer(h.now, relay, peer.parse().unwrap(), b"in");
        let out = h.client_gets(c.five);
        assert_eq!(ChannelData::parse(&out[0]), Some(ChannelData { channel, data: b"in" }), "{channel:#x}");
    }
}

/// RFC 8656 §7.2: an Allocate on a 5-tuple that has an allocation is 437,
/// whoever sends it; other requests there with other credentials are 441.
#[test]
fn allocate_on_a_taken_five_tuple_is_437_for_anyone() {
    let mut h = H::new();
    let mut alice = h.client("198.51.100.7:40000", "alice");
    h.allocate(&mut alice);
    let mut bob = h.client("198.51.100.7:40000", "bob");
    let r = h.request(&mut bob, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(437));
    let r = h.request(&mut alice, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(437), "a second allocation by its owner");
    assert_eq!(code(&h.request(&mut bob, method::REFRESH, |b| b)), Some(441));
    assert_eq!(h.s.allocation_count(), 1);
}

#[test]
fn dont_fragment_is_asked_of_the_relay_socket() {
    let mut h = H::new();
    for (port, df) in [(40000, true), (40001, false)] {
        let mut c = h.client(&format!("198.51.100.7:{port}"), "alice");
        let r = h.request(&mut c, method::ALLOCATE, |b| {
            let b = b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
            if df { b.attr(attr::DONT_FRAGMENT, &[]) } else { b }
        });
        assert_eq!(code(&r), None, "RFC 8656 §7.2: honoured, not 420");
    }
    assert_eq!(h.dont_fragment, [true, false]);
}

#[test]
fn the_total_bandwidth_cap_holds_across_allocations() {
    let mut cfg = config();
    cfg.total_bandwidth_bytes_per_sec = 4000; // bursts of a quarter second: 1000 bytes
    let mut h = H::with(cfg);
    let mut clients = Vec::new();
    for port in 1..=3 {
        let mut c = h.client(&format!("198.51.100.7:{port}"), &format!("user{port}"));
        h.allocate(&mut c);
        h.permit(&mut c, "93.184.216.5:1");
        clients.push(c);
    }
    h.advance(1);
    for c in &clients {
        for _ in 0..2 {
            h.send(c, "93.184.216.5:1", &[0; 300]);
        }
    }
    assert_eq!(h.peers_get().len(), 3, "1000 bytes of burst: three datagrams of 300, whoever sends them");
    assert_eq!(h.s.metrics.drop_bandwidth_total, 3);
    h.advance(1);
    h.send(&clients[2], "93.184.216.5:1", &[0; 300]);
    assert_eq!(h.peers_get().len(), 1, "refilled");
}

/// Browsers keep the credentials an allocation was made with for its
/// refreshes: a relayed call must not end when they expire.
#[test]
fn a_live_allocation_outlives_its_credentials_up_to_the_horizon() {
    let mut cfg = config();
    cfg.credentials.horizon_secs = 3600;
    let mut h = H::with(cfg);
    let mut c = h.client_until("198.51.100.7:40000", "alice", UNIX0 + 60);
    h.allocate(&mut c);
    for _ in 0..12 {
        h.advance(280);
        assert_eq!(code(&h.request_fresh(&mut c, method::REFRESH, |b| b)), None, "refresh with expired credentials");
        let peer: SocketAddr = "93.184.216.5:1".parse().unwrap();
        let r = h.request_fresh(&mut c, method::CREATE_PERMISSION, |b| b.xor_address(attr::XOR_PEER_ADDRESS, peer));
        assert_eq!(code(&r), None, "permissions too");
    }
    // a new allocation needs valid credentials
    let mut other = h.client_until("198.51.100.7:40001", "alice", UNIX0 + 60);
    let r = h.request(&mut other, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(401));
    // and after the horizon (an hour from the allocation) the old one ends
    h.advance(280);
    assert_eq!(code(&h.request_fresh(&mut c, method::REFRESH, |b| b)), Some(401));
}

#[test]
fn revoking_a_user_ends_its_allocations_only() {
    let mut h = H::new();
    let mut g1 = h.client("198.51.100.7:1", "g42");
    let mut g2 = h.client("198.51.100.7:2", "g42");
    let mut m = h.client("198.51.100.8:1", "u7");
    h.allocate(&mut g1);
    h.allocate(&mut g2);
    h.allocate(&mut m);
    assert_eq!(h.s.revoke("g42", UNIX0 + 3600, UNIX0), 2);
    assert_eq!(h.s.allocation_count(), 1);
    let closed = h.outputs().iter().filter(|o| matches!(o, Output::CloseRelay { .. })).count();
    assert_eq!(closed, 2);
    assert_eq!(h.s.revoke("g4", UNIX0 + 3600, UNIX0), 0, "the whole user name, not a prefix");
}

#[test]
fn credentials_minted_before_a_revocation_make_no_new_allocation() {
    let mut h = H::new();
    let mut old = h.client("198.51.100.7:1", "u9");
    h.allocate(&mut old);
    h.s.revoke("u9", UNIX0 + 3600, UNIX0);
    // the same credentials, from another port: refused although still valid
    let mut again = h.client("198.51.100.7:2", "u9");
    let r = h.request_fresh(&mut again, method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24));
    assert_eq!(code(&r), Some(401));
    // credentials minted after it (a later expiry) work: the account came back
    let mut fresh = h.client_until("198.51.100.7:3", "u9", UNIX0 + 3601);
    h.allocate(&mut fresh);
    // other users are not concerned
    let mut other = h.client("198.51.100.8:1", "u10");
    h.allocate(&mut other);
    assert_eq!(h.s.allocation_count(), 2);
}
