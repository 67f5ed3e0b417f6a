//! Load generator for `scripts/bench-turn` (not a test): the same tool
//! drives every server in a run, so their figures compare.
//!
//! N UDP client sockets, each with W datagrams in flight (closed loop: a
//! datagram is sent for each one that comes back, the window is sent again
//! after 100 ms of silence). Modes:
//! - `--echo-port P`: each client allocates a relay on `--server`, binds a
//!   channel to this tool's echo peer at 127.0.0.1:P and sends ChannelData;
//!   the peer sends every datagram back. With `--raw` the clients send plain
//!   datagrams to `--server` (a trivial UDP forwarder in front of the peer):
//!   the physical limit.
//! - `--pairs`: clients allocate in pairs and bind channels to each other's
//!   relayed address (client-to-client relaying; the only mode turn-rs
//!   supports); the odd client of a pair sends back what it gets.
//!
//! Prints one JSON line: datagrams sent and received (every receive is one
//! datagram the server relayed), seconds of traffic, setup time.
//!
//! Usage: turn-load --server ADDR [--secret S | --user U --password P]
//!                  (--echo-port P [--raw] | --pairs)
//!                  [--allocs N] [--window W] [--size B] [--secs D] [--hold S]

// A benchmark measures real elapsed time.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use netstack::stun::ChannelData;
use netstack::turn::auth;
use parvis_e2e::turn_client::Client;
use tokio::net::UdpSocket;

struct Args {
    server: SocketAddr,
    user: String,
    password: String,
    echo_port: Option<u16>,
    raw: bool,
    pairs: bool,
    allocs: usize,
    window: usize,
    size: usize,
    secs: f64,
    hold: f64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        server: "127.0.0.1:3478".parse()?,
        user: String::new(),
        password: String::new(),
        echo_port: None,
        raw: false,
        pairs: false,
        allocs: 1,
        window: 8,
        size: 100,
        secs: 5.0,
        hold: 0.0,
    };
    let mut secret = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--raw" => a.raw = true,
            "--pairs" => a.pairs = true,
            _ => {
                let v = it.next().with_context(|| format!("{k} needs a value"))?;
                match k.as_str() {
                    "--server" => a.server = v.parse()?,
                    "--secret" => secret = Some(v),
                    "--user" => a.user = v,
                    "--password" => a.password = v,
                    "--echo-port" => a.echo_port = Some(v.parse()?),
                    "--allocs" => a.allocs = v.parse()?,
                    "--window" => a.window = v.parse()?,
                    "--size" => a.size = v.parse()?,
                    "--secs" => a.secs = v.parse()?,
                    "--hold" => a.hold = v.parse()?,
                    _ => bail!("unknown option {k}"),
                }
            }
        }
    }
    if let Some(secret) = secret {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        a.user = auth::rest_username(unix + 3600, "bench");
        a.password = auth::rest_password(secret.as_bytes(), &a.user);
    }
    if a.pairs == a.echo_port.is_some() {
        bail!("choose one of --echo-port P or --pairs");
    }
    if a.pairs && a.allocs % 2 == 1 {
        a.allocs += 1;
    }
    Ok(a)
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

const CHANNEL: u16 = 0x4000;

/// Sends the window, then one datagram per datagram received; `reflect`:
/// sends nothing first and sends back what arrives.
async fn traffic(sock: Arc<UdpSocket>, to: SocketAddr, frame: Vec<u8>, window: usize, reflect: bool, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut buf = vec![0u8; 2048];
    let send_window = |n: usize| {
        let (sock, frame, c) = (&sock, &frame, &c);
        async move {
            for _ in 0..n {
                if sock.send_to(frame, to).await.is_ok() {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    if !reflect {
        send_window(window).await;
    }
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if n >= 4 => {
                c.received.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let out: &[u8] = if reflect { &buf[..n] } else { &frame };
                if sock.send_to(out, to).await.is_ok() {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(_) if !reflect => send_window(window).await,
            Err(_) => {}
        }
    }
    // count what is still in flight when the run stops
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
        c.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// The peer of echo mode: every datagram goes back where it came from.
async fn echo(sock: Arc<UdpSocket>, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await {
            c.received.fetch_add(1, Ordering::Relaxed);
            if sock.send_to(&buf[..n], from).await.is_ok() {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = args()?;
    let payload = vec![0x5Au8; a.size];
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();

    let mut echo_task = None;
    let peer = match a.echo_port {
        Some(p) => {
            let sock = UdpSocket::bind(("127.0.0.1", p)).await.context("echo peer port")?;
            netstack::mmsg::set_buffers(&sock, 4 << 20);
            let sock = Arc::new(sock);
            echo_task = Some(tokio::spawn(echo(sock, stop.clone(), counters.clone())));
            Some(SocketAddr::from(([127, 0, 0, 1], p)))
        }
        None => None,
    };

    // (socket, where to send, frame, reflects)
    let mut flows: Vec<(Arc<UdpSocket>, SocketAddr, Vec<u8>, bool)> = Vec::new();
    if a.raw {
        for _ in 0..a.allocs {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            netstack::mmsg::set_buffers(&sock, 1 << 20);
            flows.push((Arc::new(sock), a.server, payload.clone(), false));
        }
    } else {
        // set up in parallel, a bounded number at a time
        let mut clients = Vec::with_capacity(a.allocs);
        let mut relayed = Vec::with_capacity(a.allocs);
        for chunk in (0..a.allocs).collect::<Vec<_>>().chunks(50) {
            let jobs: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (server, user, password) = (a.server, a.user.clone(), a.password.clone());
                    tokio::spawn(async move {
                        let mut c = Client::connect(i, server, &user, &password).await?;
                        let r = c.allocate().await?;
                        if let Some(peer) = peer {
                            c.bind(CHANNEL, peer).await?;
                        }
                        anyhow::Ok((c, r))
                    })
                })
                .collect();
            for j in jobs {
                let (c, r) = j.await??;
                clients.push(c);
                relayed.push(r);
            }
        }
        if a.pairs {
            for i in (0..a.allocs).step_by(2) {
                let (ra, rb) = (relayed[i], relayed[i + 1]);
                clients[i].bind(CHANNEL, rb).await?;
                clients[i + 1].bind(CHANNEL, ra).await?;
            }
        }
        let mut frame = Vec::new();
        ChannelData::encode(CHANNEL, &payload, &mut frame);
        for c in clients {
            let reflect = a.pairs && c.id % 2 == 1;
                netstack::mmsg::set_buffers(&c.sock, 1 << 20);
            flows.push((Arc::new(c.sock), c.server, frame.clone(), reflect));
        }
    }
    let setup = t0.elapsed().as_secs_f64();
    if a.hold > 0.0 {
        eprintln!("{} allocations ready; holding {} s", flows.len(), a.hold);
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    }

    let t1 = Instant::now();
    let tasks: Vec<_> = flows
        .into_iter()
        .map(|(sock, to, frame, reflect)| tokio::spawn(traffic(sock, to, frame, a.window, reflect, stop.clone(), counters.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = t1.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    if let Some(t) = echo_task {
        t.await?;
    }
    let (sent, received) = (counters.sent.load(Ordering::Relaxed), counters.received.load(Ordering::Relaxed));
    println!(
        "{{\"allocs\":{},\"size\":{},\"window\":{},\"sent\":{sent},\"received\":{received},\"secs\":{secs:.3},\"setup_secs\":{setup:.3},\"loss_pct\":{:.3}}}",
        a.allocs,
        a.size,
        a.window,
        if sent > 0 { 100.0 * (sent.saturating_sub(received)) as f64 / sent as f64 } else { 0.0 }
    );
    Ok(())
}
