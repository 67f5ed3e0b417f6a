//! The socket driver around [`crate::turn::Server`]: thin on purpose.
//!
//! One task owns the engine and the UDP listener; stream connections
//! (TCP, TLS) and relay sockets each have a small task that frames bytes
//! and passes them over a channel. The loop is `select!{ recv…,
//! sleep_until(next_timeout) }`; all protocol decisions are the engine's.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stun::{self, ChannelData};
use crate::turn::{AllocId, FiveTuple, Metrics, Now, Output, Server, Transport};

/// Where to listen and where to put relays.
#[derive(Clone)]
pub struct DriverConfig {
    /// UDP and TCP listeners (same addresses for both).
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (TURN over TLS: 5349, or 443 behind a demultiplexer).
    pub tls_listen: Vec<SocketAddr>,
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Addresses relay sockets bind to, per family (None: no relays of it).
    pub relay_v4: Option<IpAddr>,
    pub relay_v6: Option<IpAddr>,
    pub relay_ports: RangeInclusive<u16>,
}

/// What runs: the bound addresses and live counters.
#[derive(Clone)]
pub struct Handle {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub stats: Arc<Mutex<Stats>>,
    /// For streams accepted elsewhere (TURN over TLS on the HTTPS port).
    pub streams: StreamEvents,
}

/// A snapshot for /metrics, refreshed by the engine task.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub metrics: Metrics,
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
}

enum Event {
    StreamOpened(FiveTuple, mpsc::Sender<Vec<u8>>),
    Client(FiveTuple, Vec<u8>),
    StreamClosed(FiveTuple),
}

/// The real clock, read only here at the I/O boundary.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Now {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Now { mono: Instant::now(), unix }
}

/// Most bytes one STUN or ChannelData message may take on a stream.
const MAX_STREAM_MESSAGE: usize = 64 * 1024;
/// Largest datagram handled.
const MAX_DATAGRAM: usize = 65_535;

/// Binds every listener now (so errors name the address), then runs the
/// engine until `stop` fires.
pub async fn start(server: Server, cfg: DriverConfig, stop: CancellationToken) -> io::Result<(Handle, JoinHandle<()>)> {
    let mut udp = Vec::new();
    for addr in &cfg.listen {
        let s = UdpSocket::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("turn udp {addr}: {e}")))?;
        udp.push((s.local_addr()?, Arc::new(s)));
    }
    let (tx, rx) = mpsc::channel::<Event>(4096);
    let mut handle = Handle {
        udp: udp.iter().map(|(a, _)| *a).collect(),
        tcp: Vec::new(),
        tls: Vec::new(),
        stats: Arc::default(),
        streams: StreamEvents(tx.clone()),
    };
    for addr in &cfg.listen {
        let l = TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("turn tcp {addr}: {e}")))?;
        handle.tcp.push(l.local_addr()?);
        tokio::spawn(accept_loop(l, None, tx.clone(), stop.clone()));
    }
    if let Some(tls) = &cfg.tls {
        for addr in &cfg.tls_listen {
            let l =
                TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("turn tls {addr}: {e}")))?;
            handle.tls.push(l.local_addr()?);
            tokio::spawn(accept_loop(l, Some(tls.clone()), tx.clone(), stop.clone()));
        }
    }
    let engine = EngineTask {
        server,
        udp,
        cfg,
        events: rx,
        _events_tx: tx,
        streams: HashMap::new(),
        relays: HashMap::new(),
        next_port: 0,
        stats: handle.stats.clone(),
        ready: FuturesUnordered::new(),
        buf: vec![0u8; MAX_DATAGRAM],
        stop: stop.clone(),
    };
    let task = tokio::spawn(engine.run(stop));
    Ok((handle, task))
}

struct Relay {
    socket: Arc<UdpSocket>,
    /// Ends the readiness watch, which drops the last handle: the port is freed.
    cancel: CancellationToken,
}

/// A UDP socket the engine task reads itself: a listener or a relay.
#[derive(Clone)]
enum Source {
    Listener(SocketAddr, Arc<UdpSocket>),
    Relay(AllocId, SocketAddr, Arc<UdpSocket>),
}

/// Resolves when the socket has data (or `None` once cancelled).
fn watch(src: Source, cancel: CancellationToken) -> BoxFuture<'static, Option<Source>> {
    async move {
        let sock = match &src {
            Source::Listener(_, s) | Source::Relay(_, _, s) => s.clone(),
        };
        tokio::select! {
            r = sock.readable() => r.ok().map(|_| src),
            _ = cancel.cancelled() => None,
        }
    }
    .boxed()
}

/// Datagrams read from one socket before others get their turn.
const BURST: usize = 64;

struct EngineTask {
    server: Server,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    cfg: DriverConfig,
    events: mpsc::Receiver<Event>,
    /// Keeps the stream inbox open even when no stream listener runs.
    _events_tx: mpsc::Sender<Event>,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<AllocId, Relay>,
    next_port: u32,
    stats: Arc<Mutex<Stats>>,
    /// Readiness of every UDP socket; one receive buffer serves them all.
    ready: FuturesUnordered<BoxFuture<'static, Option<Source>>>,
    buf: Vec<u8>,
    stop: CancellationToken,
}

impl EngineTask {
    async fn run(mut self, stop: CancellationToken) {
        for (server, s) in self.udp.clone() {
            self.ready.push(watch(Source::Listener(server, s), stop.clone()));
        }
        let mut stats_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let deadline = self.server.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(src) = self.ready.next(), if !self.ready.is_empty() => {
                    if let Some(src) = src {
                        self.drain(src);
                    }
                }
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                _ = sleep_until(deadline) => self.server.handle_timeout(now().mono),
                _ = stats_tick.tick() => self.publish_stats(),
                _ = stop.cancelled() => break,
            }
            self.flush().await;
        }
        for (_, r) in self.relays.drain() {
            r.cancel.cancel();
        }
    }

    /// Reads what a ready socket holds (a bounded burst) into the engine,
    /// then watches it again.
    fn drain(&mut self, src: Source) {
        let t = now();
        let cancel = match &src {
            Source::Listener(server, sock) => {
                for _ in 0..BURST {
                    let Ok((n, from)) = sock.try_recv_from(&mut self.buf) else { break };
                    let five = FiveTuple { client: from, server: *server, transport: Transport::Udp };
                    self.server.handle_client(t, five, &self.buf[..n]);
                }
                self.stop.clone()
            }
            Source::Relay(alloc, local, sock) => {
                let Some(relay) = self.relays.get(alloc).filter(|r| Arc::ptr_eq(&r.socket, sock)) else { return };
                let cancel = relay.cancel.clone();
                for _ in 0..BURST {
                    let Ok((n, peer)) = sock.try_recv_from(&mut self.buf) else { break };
                    self.server.handle_peer(t, *local, peer, &self.buf[..n]);
                }
                cancel
            }
        };
        self.ready.push(watch(src, cancel));
    }

    fn publish_stats(&self) {
        let mut s = self.stats.lock().expect("stats poisoned");
        s.metrics = self.server.metrics.clone();
        s.allocations = self.server.allocation_count();
        s.permissions = self.server.permission_count();
        s.channels = self.server.channel_count();
    }

    async fn on_event(&mut self, ev: Event) {
        let t = now();
        match ev {
            Event::Client(five, data) => self.server.handle_client(t, five, &data),
            Event::StreamOpened(five, tx) => {
                self.streams.insert(five, tx);
            }
            Event::StreamClosed(five) => {
                self.streams.remove(&five);
                self.server.client_closed(five);
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::ToClient { five, data } => match five.transport {
                    Transport::Udp => {
                        if let Some((_, s)) = self.udp.iter().find(|(a, _)| *a == five.server) {
                            let _ = s.send_to(&data, five.client).await;
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(tx) = self.streams.get(&five) {
                            let _ = tx.try_send(data);
                        }
                    }
                },
                Output::ToPeer { alloc, peer, data, .. } => {
                    if let Some(r) = self.relays.get(&alloc) {
                        let _ = r.socket.send_to(&data, peer).await;
                    }
                }
                Output::OpenRelay { alloc, ipv6, even } => {
                    let result = self.open_relay(alloc, ipv6, even).await;
                    self.server.relay_opened(now(), alloc, result);
                }
                Output::CloseRelay { alloc, .. } => {
                    if let Some(r) = self.relays.remove(&alloc) {
                        r.cancel.cancel();
                    }
                }
            }
        }
    }

    /// Binds a UDP socket on the next free port of the relay range.
    async fn open_relay(&mut self, alloc: AllocId, ipv6: bool, even: bool) -> Result<SocketAddr, ()> {
        let ip = if ipv6 { self.cfg.relay_v6 } else { self.cfg.relay_v4 }.ok_or(())?;
        let (lo, hi) = (u32::from(*self.cfg.relay_ports.start()), u32::from(*self.cfg.relay_ports.end()));
        let span = hi - lo + 1;
        for _ in 0..span {
            let port = (lo + self.next_port % span) as u16;
            self.next_port = self.next_port.wrapping_add(1);
            if even && port % 2 == 1 {
                continue;
            }
            let Ok(socket) = bind_relay(SocketAddr::new(ip, port)) else { continue };
            let socket = Arc::new(socket);
            let local = socket.local_addr().map_err(|_| ())?;
            let cancel = self.stop.child_token();
            self.ready.push(watch(Source::Relay(alloc, local, socket.clone()), cancel.clone()));
            self.relays.insert(alloc, Relay { socket, cancel });
            return Ok(local);
        }
        tracing::warn!("relay port range {:?} exhausted", self.cfg.relay_ports);
        Err(())
    }
}

/// A relay socket: IPv6 ones are IPv6-only, so no IPv4-mapped destination
/// (e.g. ::ffff:127.0.0.1) can ever be reached through them.
fn bind_relay(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let Ok(server) = listener.local_addr() else { return };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, client) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (events, acceptor, stop) = (events.clone(), acceptor.clone(), stop.clone());
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let five = FiveTuple { client, server, transport: Transport::Tcp };
                    serve_stream(tcp, five, StreamEvents(events), stop).await;
                }
                Some(acc) => {
                    if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await {
                        let five = FiveTuple { client, server, transport: Transport::Tls };
                        serve_stream(s, five, StreamEvents(events), stop).await;
                    }
                }
            }
        });
    }
}

/// Serves one already-accepted stream (TCP, TLS, or TLS demultiplexed off
/// the HTTPS port by the caller).
pub async fn serve_stream<S>(stream: S, five: FiveTuple, events: StreamEvents, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let events = events.0;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    if events.send(Event::StreamOpened(five, tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stop.cancelled() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        // RFC 8656 §12.4 / RFC 8489 §6.2.2: messages are self-delimiting.
        loop {
            let need = match buf.first() {
                None => break,
                Some(0x40..=0x4F) => ChannelData::frame_len(&buf),
                Some(0x00..=0x03) => stun::stream_frame_len(&buf),
                Some(_) => break 'read, // not TURN: drop the connection
            };
            let Some(need) = need else { break };
            if need > MAX_STREAM_MESSAGE {
                break 'read;
            }
            if buf.len() < need {
                break;
            }
            let msg: Vec<u8> = buf.drain(..need).collect();
            tracing::trace!(client = %five.client, len = msg.len(), "stream message");
            if events.send(Event::Client(five, msg)).await.is_err() {
                break 'read;
            }
        }
    }
    tracing::debug!(client = %five.client, pending = buf.len(), "stream closed");
    let _ = events.send(Event::StreamClosed(five)).await;
    writer.abort();
}

/// The engine's inbox, for streams accepted elsewhere (TLS on 443).
#[derive(Clone)]
pub struct StreamEvents(mpsc::Sender<Event>);
