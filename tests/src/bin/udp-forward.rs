//! A trivial UDP forwarder for `scripts/bench-turn` (not a test): the
//! physical limit a relay is compared with. Each client address gets its own
//! upstream socket (as a TURN allocation gets its relay socket); datagrams go
//! client → target and back, with no parsing, no policy, no accounting.
//!
//! Usage: udp-forward --listen ADDR --to ADDR

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut to: Option<SocketAddr> = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--listen" => listen = Some(v.parse()?),
            "--to" => to = Some(v.parse()?),
            _ => anyhow::bail!("unknown option {k}"),
        }
    }
    let (listen, to) = (listen.context("--listen")?, to.context("--to")?);
    let front = Arc::new(UdpSocket::bind(listen).await?);
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let up = match upstream.get(&client) {
            Some(u) => u.clone(),
            None => {
                let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
                u.connect(to).await?;
                let (u2, front2) = (u.clone(), front.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok(n) = u2.recv(&mut buf).await {
                        let _ = front2.send_to(&buf[..n], client).await;
                    }
                });
                upstream.insert(client, u.clone());
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}
