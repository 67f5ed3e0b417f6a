//! `parvis doctor`: checks, from the box, that its STUN/TURN server answers
//! and relays, then says what to forward on the router. Speaks the wire
//! protocol itself over plain blocking sockets, as an outside client would.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context as _, bail};
use netstack::stun::{self, Builder, Class, Message, attr, method};
use netstack::turn::auth;

use crate::config::Config;

const WAIT: Duration = Duration::from_secs(3);

fn tid(n: u8) -> [u8; 12] {
    let mut t = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut t);
    t[0] = n;
    t
}

/// Where to reach our own server: the listen address, or loopback for a
/// wildcard listen.
fn target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()) } else { addr }
}

fn udp_exchange(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> anyhow::Result<Vec<u8>> {
    sock.send_to(req, to)?;
    let mut buf = vec![0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).with_context(|| format!("no answer from {to}: is `parvis serve` running?"))?;
    buf.truncate(n);
    Ok(buf)
}

/// A TURN client over UDP with REST credentials.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    realm: String,
    nonce: String,
}

impl Client {
    fn new(server: SocketAddr, secret: &[u8], unix_now: u64) -> anyhow::Result<Client> {
        let sock = UdpSocket::bind(if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        sock.set_read_timeout(Some(WAIT))?;
        let username = auth::rest_username(unix_now + 300, "parvis-doctor");
        let password = auth::rest_password(secret, &username);
        // learn realm and nonce
        let probe = Builder::new(Class::Request, method::ALLOCATE, tid(1)).u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).finish();
        let answer = udp_exchange(&sock, server, &probe)?;
        let m = Message::parse(&answer).map_err(|e| anyhow::anyhow!("malformed answer: {e}"))?;
        let realm = m.text(attr::REALM, 763).context("the 401 has no REALM")?.to_string();
        let nonce = m.text(attr::NONCE, 763).context("the 401 has no NONCE")?.to_string();
        let key = stun::long_term_key(&username, &realm, &password);
        Ok(Client { sock, server, username, key, realm, nonce })
    }

    fn request(&self, m: u16, f: impl Fn(Builder) -> Builder) -> anyhow::Result<Vec<u8>> {
        let raw = f(Builder::new(Class::Request, m, tid(2)))
            .attr(attr::USERNAME, self.username.as_bytes())
            .attr(attr::REALM, self.realm.as_bytes())
            .attr(attr::NONCE, self.nonce.as_bytes())
            .integrity(&self.key)
            .finish_with_fingerprint();
        let answer = udp_exchange(&self.sock, self.server, &raw)?;
        let parsed = Message::parse(&answer).map_err(|e| anyhow::anyhow!("malformed answer: {e}"))?;
        if let Some((code, reason)) = parsed.error_code() {
            bail!("error {code} {reason}");
        }
        if !parsed.verify_integrity(&self.key) {
            bail!("answer without valid MESSAGE-INTEGRITY");
        }
        Ok(answer)
    }

    fn allocate(&self) -> anyhow::Result<SocketAddr> {
        let a = self.request(method::ALLOCATE, |b| b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24))?;
        let m = Message::parse(&a).expect("parsed above");
        match m.xor_address(attr::XOR_RELAYED_ADDRESS) {
            Some(Ok(addr)) => Ok(addr),
            _ => bail!("no XOR-RELAYED-ADDRESS"),
        }
    }

    fn permit(&self, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(method::CREATE_PERMISSION, |b| b.xor_address(attr::XOR_PEER_ADDRESS, peer)).map(|_| ())
    }

    fn release(&self) {
        let _ = self.request(method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0));
    }
}

/// Runs every check, printing one line each; fails if any failed.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let Some(listen) = config.turn.listen.first().copied() else { bail!("turn.listen is empty") };
    let server = target(listen);
    let secret = crate::turn::secret(&config.data)?;
    let mut failures = 0;
    let mut check = |name: &str, r: anyhow::Result<String>| match r {
        Ok(detail) => println!("  ok    {name}: {detail}"),
        Err(e) => {
            failures += 1;
            println!("  FAIL  {name}: {e:#}");
        }
    };
    println!("Parvis doctor: STUN/TURN at {server}");

    check("STUN binding over UDP", (|| {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(WAIT))?;
        let req = Builder::new(Class::Request, method::BINDING, tid(3)).finish();
        let answer = udp_exchange(&sock, server, &req)?;
        let m = Message::parse(&answer).map_err(|e| anyhow::anyhow!("{e}"))?;
        match m.xor_address(attr::XOR_MAPPED_ADDRESS) {
            Some(Ok(a)) => Ok(format!("mapped address {a}")),
            _ => bail!("no XOR-MAPPED-ADDRESS"),
        }
    })());

    check("STUN binding over TCP", (|| {
        let mut s = TcpStream::connect_timeout(&server, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(&Builder::new(Class::Request, method::BINDING, tid(4)).finish())?;
        let mut head = [0u8; 20];
        s.read_exact(&mut head)?;
        let len = stun::stream_frame_len(&head).context("bad frame")?;
        let mut rest = vec![0u8; len - 20];
        s.read_exact(&mut rest)?;
        Ok("answered".to_string())
    })());

    check("TURN allocation and relay round trip", (|| {
        let t0 = netstack::driver::now();
        let a = Client::new(server, &secret, t0.unix)?;
        let b = Client::new(server, &secret, t0.unix)?;
        let (ra, rb) = (a.allocate()?, b.allocate()?);
        a.permit(rb)?;
        b.permit(ra)?;
        let payload = b"parvis-doctor";
        let send = Builder::new(Class::Indication, method::SEND, tid(5))
            .xor_address(attr::XOR_PEER_ADDRESS, rb)
            .attr(attr::DATA, payload)
            .finish();
        a.sock.send_to(&send, server)?;
        let mut buf = vec![0u8; 2048];
        let (n, _) = b.sock.recv_from(&mut buf).context("the relayed data never arrived")?;
        let m = Message::parse(&buf[..n]).map_err(|e| anyhow::anyhow!("{e}"))?;
        if m.attr(attr::DATA) != Some(&payload[..]) {
            bail!("unexpected data");
        }
        a.release();
        b.release();
        let ms = netstack::driver::now().mono.duration_since(t0.mono).as_millis();
        Ok(format!("relayed {ra} → {rb} in {ms} ms"))
    })());

    check("expired credentials are refused", (|| {
        let old = Client::new(server, &secret, netstack::driver::now().unix.saturating_sub(600))?;
        match old.allocate() {
            Err(e) if e.to_string().contains("401") => Ok("401 as expected".into()),
            Err(e) => bail!("unexpected: {e}"),
            Ok(_) => bail!("an expired username was accepted"),
        }
    })());

    let lan = crate::net::local_addresses().into_iter().find(IpAddr::is_ipv4);
    let t = &config.turn;
    println!("\nFor guests outside the company network, forward to {}:", lan.map_or("this box".into(), |ip| ip.to_string()));
    println!("  {}/tcp (HTTPS, and TURN over TLS)", config.https.port());
    for l in &t.listen {
        println!("  {}/udp and {}/tcp (STUN/TURN)", l.port(), l.port());
    }
    for l in &t.tls_listen {
        println!("  {}/tcp (TURN over TLS)", l.port());
    }
    println!("  {}-{}/udp (relays)", t.relay_port_min, t.relay_port_max);
    match t.external_address {
        Some(ip) => println!("and keep turn.external_address = {ip} pointing at the router's public address."),
        None => println!("and set turn.external_address to the router's public address."),
    }
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    Ok(())
}
