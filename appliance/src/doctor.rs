//! `parvis doctor`: checks, from the box, that its STUN/TURN server answers
//! and relays, then says what to forward on the router. Speaks the wire
//! protocol over plain blocking sockets as an outside client would, with
//! stun-rs, an implementation independent of netstack's codec: a bug shared
//! by our encoder and our decoder cannot hide here.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use netstack::turn::auth;
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress};
use stun_rs::attributes::turn::{Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress};
use stun_rs::methods::{ALLOCATE, BINDING, CREATE_PERMMISSION, REFRESH, SEND};
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    MessageMethod, StunMessage, StunMessageBuilder,
};

use crate::config::Config;

const WAIT: Duration = Duration::from_secs(3);

/// Where to reach our own server: the listen address, or loopback for a
/// wildcard listen.
fn target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()) } else { addr }
}

fn encode(msg: &StunMessage) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1500];
    let n = MessageEncoderBuilder::default().build().encode(&mut buf, msg).map_err(|e| anyhow!("encode: {e:?}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// Decodes an answer; with a key, MESSAGE-INTEGRITY and FINGERPRINT must verify.
fn decode(raw: &[u8], key: Option<&HMACKey>) -> anyhow::Result<StunMessage> {
    let mut ctx = DecoderContextBuilder::default();
    if let Some(k) = key {
        ctx = ctx.with_key(k.clone()).with_validation();
    }
    let decoder = MessageDecoderBuilder::default().with_context(ctx.build()).build();
    let (m, _) = decoder.decode(raw).map_err(|e| anyhow!("malformed or unauthenticated answer: {e:?}"))?;
    Ok(m)
}

fn error_of(m: &StunMessage) -> Option<String> {
    let e = m.get::<ErrorCode>()?.as_error_code().ok()?.error_code();
    Some(format!("error {} {}", e.error_code(), e.reason()))
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
    username: UserName,
    realm: Realm,
    nonce: Nonce,
    key: HMACKey,
}

impl Client {
    fn new(server: SocketAddr, secret: &[u8], unix_now: u64) -> anyhow::Result<Client> {
        let sock = UdpSocket::bind(if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        sock.set_read_timeout(Some(WAIT))?;
        let name = auth::rest_username(unix_now + 300, "parvis-doctor");
        let password = auth::rest_password(secret, &name);
        // learn realm and nonce from the 401
        let probe = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
            .with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
            .build();
        let m = decode(&udp_exchange(&sock, server, &encode(&probe)?)?, None)?;
        let realm = m.get::<Realm>().context("the 401 has no REALM")?.as_realm().map_err(|e| anyhow!("{e:?}"))?.clone();
        let nonce = m.get::<Nonce>().context("the 401 has no NONCE")?.as_nonce().map_err(|e| anyhow!("{e:?}"))?.clone();
        let username = UserName::new(&name).map_err(|e| anyhow!("{e:?}"))?;
        let key = HMACKey::new_long_term(&username, &realm, &password, Algorithm::from(AlgorithmId::MD5))
            .map_err(|e| anyhow!("{e:?}"))?;
        Ok(Client { sock, server, username, realm, nonce, key })
    }

    fn request(&self, method: MessageMethod, f: impl Fn(StunMessageBuilder) -> StunMessageBuilder) -> anyhow::Result<StunMessage> {
        let req = f(StunMessageBuilder::new(method, MessageClass::Request))
            .with_attribute(self.username.clone())
            .with_attribute(self.realm.clone())
            .with_attribute(self.nonce.clone())
            .with_attribute(MessageIntegrity::new(self.key.clone()))
            .with_attribute(Fingerprint::default())
            .build();
        let raw = udp_exchange(&self.sock, self.server, &encode(&req)?)?;
        // an error answer carries no MESSAGE-INTEGRITY when it is a 401
        let unverified = decode(&raw, None)?;
        if let Some(e) = error_of(&unverified) {
            bail!(e);
        }
        let m = decode(&raw, Some(&self.key))?;
        if m.transaction_id() != req.transaction_id() || m.class() != MessageClass::SuccessResponse {
            bail!("unexpected answer");
        }
        Ok(m)
    }

    fn allocate(&self) -> anyhow::Result<SocketAddr> {
        let m = self.request(ALLOCATE, |b| b.with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP)))?;
        let a = m.get::<XorRelayedAddress>().context("no XOR-RELAYED-ADDRESS")?;
        Ok(*a.as_xor_relayed_address().map_err(|e| anyhow!("{e:?}"))?.socket_address())
    }

    fn permit(&self, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(CREATE_PERMMISSION, |b| b.with_attribute(XorPeerAddress::from(peer))).map(|_| ())
    }

    fn release(&self) {
        let _ = self.request(REFRESH, |b| b.with_attribute(LifeTime::from(0)));
    }
}

fn binding_request() -> anyhow::Result<(StunMessage, Vec<u8>)> {
    let m = StunMessageBuilder::new(BINDING, MessageClass::Request).build();
    let raw = encode(&m)?;
    Ok((m, raw))
}

fn mapped_address(answer: &[u8]) -> anyhow::Result<SocketAddr> {
    let m = decode(answer, None)?;
    let a = m.get::<XorMappedAddress>().context("no XOR-MAPPED-ADDRESS")?;
    Ok(*a.as_xor_mapped_address().map_err(|e| anyhow!("{e:?}"))?.socket_address())
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
        let (_, req) = binding_request()?;
        Ok(format!("mapped address {}", mapped_address(&udp_exchange(&sock, server, &req)?)?))
    })());

    check("STUN binding over TCP", (|| {
        let mut s = TcpStream::connect_timeout(&server, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(&binding_request()?.1)?;
        // RFC 8489 §6.2.2: a STUN message on a stream is its 20-byte header
        // plus the length it announces
        let mut answer = vec![0u8; 20];
        s.read_exact(&mut answer)?;
        let len = usize::from(u16::from_be_bytes([answer[2], answer[3]]));
        answer.resize(20 + len, 0);
        s.read_exact(&mut answer[20..])?;
        Ok(format!("mapped address {}", mapped_address(&answer)?))
    })());

    check("TURN allocation and relay round trip", (|| {
        let t0 = netstack::driver::now();
        let a = Client::new(server, &secret, t0.unix)?;
        let b = Client::new(server, &secret, t0.unix)?;
        let (ra, rb) = (a.allocate()?, b.allocate()?);
        a.permit(rb)?;
        b.permit(ra)?;
        let payload = b"parvis-doctor";
        let send = StunMessageBuilder::new(SEND, MessageClass::Indication)
            .with_attribute(XorPeerAddress::from(rb))
            .with_attribute(Data::from(&payload[..]))
            .build();
        a.sock.send_to(&encode(&send)?, server)?;
        let mut buf = vec![0u8; 2048];
        let (n, _) = b.sock.recv_from(&mut buf).context("the relayed data never arrived")?;
        let m = decode(&buf[..n], None)?;
        let data = m.get::<Data>().context("a Data indication without DATA")?;
        if data.as_data().map_err(|e| anyhow!("{e:?}"))?.as_bytes() != payload {
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

    let lan = crate::system::net::local_addresses().into_iter().find(IpAddr::is_ipv4);
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
