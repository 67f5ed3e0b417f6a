//! A small TURN client over UDP (netstack's codec) for end-to-end tests
//! and the `turn-load` benchmark tool: REST credentials, Allocate,
//! ChannelBind, retransmissions.

// Retransmission timers wait on the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use netstack::stun::{self, Builder, Class, Message, attr, method};
use tokio::net::UdpSocket;

fn tid(i: usize, n: u32) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&(i as u64).to_be_bytes());
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

/// One TURN client: a socket, its credentials and its relayed address.
pub struct Client {
    pub id: usize,
    pub sock: UdpSocket,
    pub server: SocketAddr,
    user: String,
    key: [u8; 16],
    realm: String,
    nonce: String,
    n: u32,
}

impl Client {
    async fn exchange(&mut self, req: &[u8]) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..6 {
            self.sock.send_to(req, self.server).await?;
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), self.sock.recv_from(&mut buf)).await {
                let (n, _) = r?;
                if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == req[8..20]) {
                    buf.truncate(n);
                    return Ok(buf);
                }
            }
        }
        bail!("client {}: no answer from {}", self.id, self.server)
    }

    /// Binds a loopback socket of the server's family and learns realm and
    /// nonce from the server's 401.
    pub async fn connect(i: usize, server: SocketAddr, user: &str, password: &str) -> Result<Client> {
        let sock = UdpSocket::bind(if server.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).await?;
        let mut c = Client { id: i, sock, server, user: user.into(), key: [0; 16], realm: String::new(), nonce: String::new(), n: 0 };
        let probe = Builder::new(Class::Request, method::ALLOCATE, tid(i, 0)).u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24).finish();
        let answer = c.exchange(&probe).await?;
        let m = Message::parse(&answer).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.realm = m.text(attr::REALM, 763).context("401 without REALM")?.into();
        c.nonce = m.text(attr::NONCE, 763).context("401 without NONCE")?.into();
        c.key = stun::long_term_key(user, &c.realm, password);
        Ok(c)
    }

    /// An authenticated request; a 438 is retried once with the new nonce;
    /// an error answer is an `Err` that names its code.
    pub async fn request(&mut self, method: u16, f: impl Fn(Builder) -> Builder) -> Result<Vec<u8>> {
        for _ in 0..2 {
            self.n += 1;
            let raw = f(Builder::new(Class::Request, method, tid(self.id, self.n)))
                .attr(attr::USERNAME, self.user.as_bytes())
                .attr(attr::REALM, self.realm.as_bytes())
                .attr(attr::NONCE, self.nonce.as_bytes())
                .integrity(&self.key)
                .finish_with_fingerprint();
            let answer = self.exchange(&raw).await?;
            let m = Message::parse(&answer).map_err(|e| anyhow::anyhow!("{e}"))?;
            match m.error_code() {
                Some((438, _)) => self.nonce = m.text(attr::NONCE, 763).context("438 without NONCE")?.into(),
                Some((code, reason)) => bail!("client {}: method {method:#x}: {code} {reason}", self.id),
                None => return Ok(answer),
            }
        }
        bail!("client {}: stale nonce twice", self.id)
    }

    /// Allocates a UDP relay of the server address's family (RFC 6156).
    pub async fn allocate(&mut self) -> Result<SocketAddr> {
        self.allocate_family(self.server.is_ipv6()).await
    }

    /// Allocates a UDP relay of the given family, whatever the client's.
    pub async fn allocate_family(&mut self, ipv6: bool) -> Result<SocketAddr> {
        let a = self
            .request(method::ALLOCATE, |b| {
                let b = b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
                // RFC 6156: REQUESTED-ADDRESS-FAMILY 0x02 asks for an IPv6 relay
                if ipv6 { b.u32_attr(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24) } else { b }
            })
            .await?;
        let m = Message::parse(&a).map_err(|e| anyhow::anyhow!("{e}"))?;
        m.xor_address(attr::XOR_RELAYED_ADDRESS).and_then(Result::ok).context("no XOR-RELAYED-ADDRESS")
    }

    pub async fn bind(&mut self, channel: u16, peer: SocketAddr) -> Result<()> {
        self.request(method::CHANNEL_BIND, |b| {
            b.u32_attr(attr::CHANNEL_NUMBER, u32::from(channel) << 16).xor_address(attr::XOR_PEER_ADDRESS, peer)
        })
        .await
        .map(|_| ())
    }
}

