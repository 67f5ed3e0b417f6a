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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::limits::ConnGate;
use crate::mmsg::{RecvBatch, SendBatch};
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
    /// Bounds the TCP and TLS connections of the TURN listeners.
    pub stream_gate: ConnGate,
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
    Reconfigure(Reconfigure),
    /// End the allocations of this REST user.
    Revoke(String, u64),
    /// A stream connection, its writer, and whether it holds an allocation
    /// (set by the engine task; an allocation keeps an idle stream open).
    StreamOpened(FiveTuple, mpsc::Sender<Vec<u8>>, Arc<AtomicBool>),
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
/// A stream connection must send a whole first message within this.
pub const STREAM_FIRST_MESSAGE: Duration = Duration::from_secs(10);
/// A stream connection without an allocation is closed after this silence
/// (with one, the allocation's lifetime decides: it ends with the connection).
pub const STREAM_IDLE: Duration = Duration::from_secs(30);

/// Binds every listener now (so errors name the address), then runs the
/// engine on its own thread (a single-threaded runtime: one engine, no
/// wake-ups across worker threads, and web load never delays a relayed
/// datagram) until `stop` fires. Stream connections stay on the caller's
/// runtime and reach the engine through a channel.
pub async fn start(
    server: Server,
    cfg: DriverConfig,
    stop: CancellationToken,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let mut udp = Vec::new();
    for addr in &cfg.listen {
        let s = bind_udp(*addr, LISTENER_BUFFERS, false)
            .map_err(|e| io::Error::new(e.kind(), format!("turn udp {addr}: {e}")))?;
        udp.push((s.local_addr()?, s));
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
        tokio::spawn(accept_loop(l, None, cfg.stream_gate.clone(), tx.clone(), stop.clone()));
    }
    if let Some(tls) = &cfg.tls {
        for addr in &cfg.tls_listen {
            let l =
                TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("turn tls {addr}: {e}")))?;
            handle.tls.push(l.local_addr()?);
            tokio::spawn(accept_loop(l, Some(tls.clone()), cfg.stream_gate.clone(), tx.clone(), stop.clone()));
        }
    }
    let stats = handle.stats.clone();
    let thread = std::thread::Builder::new().name("turn-engine".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("TURN engine runtime: {e}"),
        };
        rt.block_on(async move {
            let mut sockets = Vec::new();
            for (addr, s) in udp {
                match UdpSocket::from_std(s) {
                    Ok(s) => sockets.push((addr, Arc::new(s))),
                    Err(e) => return tracing::error!("turn udp {addr}: {e}"),
                }
            }
            let engine = EngineTask {
                server,
                udp: sockets,
                cfg,
                events: rx,
                _events_tx: tx,
                streams: HashMap::new(),
                alloc_streams: HashMap::new(),
                relays: HashMap::new(),
                next_port: 0,
                stats,
                ready: FuturesUnordered::new(),
                inbox: RecvBatch::default(),
                to_clients: Vec::new(),
                stop: stop.clone(),
            };
            engine.run(stop).await;
        });
    })?;
    Ok((handle, thread))
}

/// Socket buffer sizes: a listener carries every client's traffic.
const LISTENER_BUFFERS: usize = 4 << 20;
const RELAY_BUFFERS: usize = 512 << 10;

struct Relay {
    socket: Arc<UdpSocket>,
    /// Datagrams to peers, sent together after each round of input.
    out: SendBatch,
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

/// recvmmsg calls on one socket before others get their turn.
const BURST_CALLS: usize = 4;

struct EngineTask {
    server: Server,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    cfg: DriverConfig,
    events: mpsc::Receiver<Event>,
    /// Keeps the stream inbox open even when no stream listener runs.
    _events_tx: mpsc::Sender<Event>,
    streams: HashMap<FiveTuple, (mpsc::Sender<Vec<u8>>, Arc<AtomicBool>)>,
    /// Allocations made over a stream, and that stream.
    alloc_streams: HashMap<AllocId, FiveTuple>,
    relays: HashMap<AllocId, Relay>,
    next_port: u32,
    stats: Arc<Mutex<Stats>>,
    /// Readiness of every UDP socket; one receive batch serves them all.
    ready: FuturesUnordered<BoxFuture<'static, Option<Source>>>,
    inbox: RecvBatch,
    /// Datagrams to clients, per listener (same order as `udp`).
    to_clients: Vec<SendBatch>,
    stop: CancellationToken,
}

impl EngineTask {
    async fn run(mut self, stop: CancellationToken) {
        for (server, s) in self.udp.clone() {
            self.ready.push(watch(Source::Listener(server, s), stop.clone()));
            self.to_clients.push(SendBatch::default());
        }
        let mut stats_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let deadline = self.server.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(src) = self.ready.next(), if !self.ready.is_empty() => {
                    if let Some(src) = src {
                        self.drain(src);
                    }
                    // every socket that is ready already: one flush for all
                    loop {
                        match self.ready.next().now_or_never() {
                            Some(Some(Some(src))) => self.drain(src),
                            Some(Some(None)) => {}
                            _ => break,
                        }
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

    /// Reads what a ready socket holds (a bounded burst, batched) into the
    /// engine, then watches it again.
    fn drain(&mut self, src: Source) {
        let t = now();
        let (sock, cancel) = match &src {
            Source::Listener(_, sock) => (sock, self.stop.clone()),
            Source::Relay(alloc, _, sock) => {
                let Some(relay) = self.relays.get(alloc).filter(|r| Arc::ptr_eq(&r.socket, sock)) else { return };
                (sock, relay.cancel.clone())
            }
        };
        for _ in 0..BURST_CALLS {
            let Ok(n) = self.inbox.recv(sock) else { break };
            for i in 0..n {
                let (r, data) = self.inbox.get(i);
                if r.truncated {
                    self.server.metrics.drop_oversize += 1;
                    continue;
                }
                match &src {
                    Source::Listener(server, _) => {
                        let five = FiveTuple { client: r.from, server: *server, transport: Transport::Udp };
                        self.server.handle_client(t, five, data);
                    }
                    Source::Relay(_, local, _) => self.server.handle_peer(t, *local, r.from, data),
                }
            }
            if n < crate::mmsg::SLOTS {
                break;
            }
        }
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
            Event::Reconfigure(r) => {
                tracing::info!(?r, "TURN settings changed");
                self.server.set_external(r.external_v4, r.external_v6);
                self.server.set_total_bandwidth(r.total_bandwidth_bytes_per_sec);
                self.cfg.relay_ports = r.relay_ports;
                self.next_port = 0;
            }
            Event::Revoke(user, minted_by_expiry) => {
                let n = self.server.revoke(&user, minted_by_expiry, t.unix);
                tracing::info!(%user, allocations = n, "TURN allocations revoked");
            }
            Event::Client(five, data) => self.server.handle_client(t, five, &data),
            Event::StreamOpened(five, tx, allocated) => {
                self.streams.insert(five, (tx, allocated));
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
                        if let Some(i) = self.udp.iter().position(|(a, _)| *a == five.server) {
                            self.to_clients[i].push(five.client, data);
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some((tx, _)) = self.streams.get(&five) {
                            let _ = tx.try_send(data);
                        }
                    }
                },
                Output::ToPeer { alloc, peer, data, .. } => {
                    if let Some(r) = self.relays.get_mut(&alloc) {
                        r.out.push(peer, data);
                    }
                }
                Output::OpenRelay { alloc, five, ipv6, even, dont_fragment } => {
                    let result = self.open_relay(alloc, ipv6, even, dont_fragment);
                    if result.is_ok() {
                        self.stream_allocated(alloc, five, true);
                    }
                    self.server.relay_opened(now(), alloc, result);
                }
                Output::CloseRelay { alloc, .. } => {
                    if let Some(r) = self.relays.remove(&alloc) {
                        r.cancel.cancel();
                    }
                    if let Some(five) = self.alloc_streams.get(&alloc).copied() {
                        self.stream_allocated(alloc, five, false);
                    }
                }
            }
        }
        for (batch, (_, sock)) in self.to_clients.iter_mut().zip(&self.udp) {
            if !batch.is_empty() {
                batch.flush(sock).await;
            }
        }
        for r in self.relays.values_mut() {
            if !r.out.is_empty() {
                r.out.flush(&r.socket).await;
            }
        }
    }

    /// Tells a stream connection whether it holds an allocation.
    fn stream_allocated(&mut self, alloc: AllocId, five: FiveTuple, on: bool) {
        if five.transport == Transport::Udp {
            return;
        }
        if on {
            self.alloc_streams.insert(alloc, five);
        } else {
            self.alloc_streams.remove(&alloc);
        }
        if let Some((_, flag)) = self.streams.get(&five) {
            flag.store(on, Ordering::Relaxed);
        }
    }

    /// Binds a UDP socket on the next free port of the relay range.
    fn open_relay(&mut self, alloc: AllocId, ipv6: bool, even: bool, dont_fragment: bool) -> Result<SocketAddr, ()> {
        let ip = if ipv6 { self.cfg.relay_v6 } else { self.cfg.relay_v4 }.ok_or(())?;
        let (lo, hi) = (u32::from(*self.cfg.relay_ports.start()), u32::from(*self.cfg.relay_ports.end()));
        let span = hi - lo + 1;
        for _ in 0..span {
            let port = (lo + self.next_port % span) as u16;
            self.next_port = self.next_port.wrapping_add(1);
            if even && port % 2 == 1 {
                continue;
            }
            let Ok(socket) = bind_udp(SocketAddr::new(ip, port), RELAY_BUFFERS, true) else { continue };
            if dont_fragment
                && let Err(e) = crate::mmsg::set_dont_fragment(&socket, ipv6) {
                    tracing::warn!("relay {ip}:{port}: cannot set don't-fragment: {e}");
                    return Err(());
                }
            let Ok(socket) = UdpSocket::from_std(socket) else { continue };
            let socket = Arc::new(socket);
            let local = socket.local_addr().map_err(|_| ())?;
            let cancel = self.stop.child_token();
            self.ready.push(watch(Source::Relay(alloc, local, socket.clone()), cancel.clone()));
            self.relays.insert(alloc, Relay { socket, out: SendBatch::default(), cancel });
            return Ok(local);
        }
        tracing::warn!("relay port range {:?} exhausted", self.cfg.relay_ports);
        Err(())
    }
}

/// A UDP socket with large buffers. Relay sockets (`v6_only`) on IPv6 are
/// IPv6-only, so no IPv4-mapped destination (e.g. ::ffff:127.0.0.1) can ever
/// be reached through them.
fn bind_udp(addr: SocketAddr, buffers: usize, v6_only: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && v6_only {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    crate::mmsg::set_buffers(&socket, buffers);
    socket.bind(&addr.into())?;
    Ok(socket.into())
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
    gate: ConnGate,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let Ok(server) = listener.local_addr() else { return };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of descriptors (EMFILE) or similar: back off, never spin
                    tracing::warn!("turn accept on {server}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue
                }
            },
            _ = stop.cancelled() => return,
        };
        // over budget: closed at once, so the backlog drains and nothing waits
        let permit = match gate.admit(client.ip()) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(%client, ?why, "turn connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (events, acceptor, stop) = (events.clone(), acceptor.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
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
    let allocated = Arc::new(AtomicBool::new(false));
    if events.send(Event::StreamOpened(five, tx, allocated.clone())).await.is_err() {
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
    // Until its first whole message a connection has STREAM_FIRST_MESSAGE;
    // then, while it holds no allocation, STREAM_IDLE of silence closes it.
    let mut deadline = tokio::time::Instant::now() + STREAM_FIRST_MESSAGE;
    let mut heard = false;
    'read: loop {
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = tokio::time::sleep_until(deadline) => {
                if heard && allocated.load(Ordering::Relaxed) {
                    deadline = tokio::time::Instant::now() + STREAM_IDLE;
                    continue;
                }
                tracing::debug!(client = %five.client, heard, "stream closed: silent");
                break;
            }
            _ = stop.cancelled() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        // RFC 8656 §12.4 / RFC 8489 §6.2.2: messages are self-delimiting.
        loop {
            let need = match buf.first() {
                None => break,
                Some(0x40..=0x7F) => ChannelData::frame_len(&buf),
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
            heard = true;
            deadline = tokio::time::Instant::now() + STREAM_IDLE;
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

/// Settings changed while running (the admin's settings page).
#[derive(Debug, Clone)]
pub struct Reconfigure {
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
    /// New relay sockets come from this range; open ones stay.
    pub relay_ports: RangeInclusive<u16>,
    /// The total relay cap (see `turn::Config::total_bandwidth_bytes_per_sec`).
    pub total_bandwidth_bytes_per_sec: u64,
}

impl Handle {
    /// Applies `r` in the engine task (next event).
    pub async fn reconfigure(&self, r: Reconfigure) -> io::Result<()> {
        self.streams.0.send(Event::Reconfigure(r)).await.map_err(|_| io::Error::other("the TURN engine has stopped"))
    }

    /// Ends every allocation of REST user `user` and refuses its credentials
    /// expiring by `minted_by_expiry` (see `Server::revoke`).
    pub async fn revoke(&self, user: &str, minted_by_expiry: u64) -> io::Result<()> {
        self.streams.0.send(Event::Revoke(user.to_string(), minted_by_expiry)).await.map_err(|_| io::Error::other("the TURN engine has stopped"))
    }
}

/// The engine's inbox, for streams accepted elsewhere (TLS on 443).
#[derive(Clone)]
pub struct StreamEvents(mpsc::Sender<Event>);
