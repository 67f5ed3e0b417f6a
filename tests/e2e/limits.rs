//! What anyone can reach without an account is bounded (ARCHITECTURE §8b):
//! hundreds of parallel logins and guest link tries, thousands of idle connections to the TURN
//! ports, and the box's unprivileged sandbox, against a real `parvis serve`,
//! while two colleagues keep chatting and a call keeps relaying.

// Load tests wait and measure on the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netstack::stun::ChannelData;
use parvis_e2e::turn_client::Client;
use parvis_e2e::{Server, Session, Ws, rss_kib};
use serde_json::json;

type R = anyhow::Result<()>;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// This process may open as many files as its hard limit allows.
fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}


/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Two colleagues in a room, both connected.
struct Pair {
    alice: Session,
    bob: Session,
    room: i64,
    wa: Ws,
    wb: Ws,
}

async fn pair(s: &Server) -> anyhow::Result<Pair> {
    let alice = s.setup_admin().await?;
    let (bob_id, bob) = s.add_user(&alice, "bob").await?;
    let room = s.create_room(&alice, "Support", "invite", &[bob_id]).await?;
    let mut wa = s.ws(&alice, json!({})).await?;
    wa.until_synced().await?;
    let mut wb = s.ws(&bob, json!({})).await?;
    wb.until_synced().await?;
    Ok(Pair { alice, bob, room, wa, wb })
}

/// Bob sends `n` messages, one at a time, ten a second (under the chat's
/// rate limit); the time from each send to Alice receiving it, in ms.
async fn chat_latencies(p: &mut Pair, tag: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let t0 = Instant::now();
        p.wb.send(json!({"t": "send", "id": id, "room": p.room, "body": format!("{tag} {i}")})).await?;
        p.wa.recv_until(|f| f["t"] == "event" && f["client_id"] == id.as_str()).await?;
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        p.wb.recv_until(|f| f["t"] == "ack" && f["id"] == id.as_str()).await?;
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed())).await;
    }
    Ok(out)
}

fn p99(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_parallel_logins_keep_memory_bounded_and_chat_flowing() -> R {
    raise_own_fd_limit();
    let s = Server::start().await?;
    let pid = s.pid().unwrap();
    let mut p = pair(&s).await?;
    let quiet = chat_latencies(&mut p, "quiet", 30).await?;
    let rss_before = rss_kib(pid);
    // 500 at once: half with an account's right password, half unknown names
    let started = Instant::now();
    let logins: Vec<_> = (0..500)
        .map(|i| {
            let s_port = s.https_port;
            let data = s.data.clone();
            tokio::spawn(async move {
                let s = Server::attach(data, s_port);
                let body = if i % 2 == 0 {
                    json!({"username": "bob", "password": "password-2"})
                } else {
                    json!({"username": format!("nobody{i}"), "password": "not-a-password"})
                };
                let r = s.http("POST", "/api/login", Some(body), None).await;
                r.map(|r| (r.status, r.header("retry-after").is_some(), r.body["error"].as_str().unwrap_or("").to_string()))
            })
        })
        .collect();
    let mut peak = rss_before;
    let sampler = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        (stop, tokio::spawn(async move {
            let mut peak = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        }))
    };
    let busy = match chat_latencies(&mut p, "busy", 30).await {
        Ok(b) => b,
        Err(e) => panic!("{e:#} after {:?}; log:\n{}", started.elapsed(), s.log()),
    };
    let mut counts = std::collections::BTreeMap::new();
    for l in logins {
        // a connection over the per-address share (limits.web_per_address)
        // is closed at the door: counted as 0
        let (status, retry_after, error) = l.await?.unwrap_or((0, false, String::new()));
        match status {
            0 | 200 => {}
            401 => assert_eq!(error, "bad_credentials"),
            429 => assert!(retry_after && error == "rate_limited", "429 {error} retry-after {retry_after}"),
            503 => assert!(retry_after && error == "busy", "503 {error} retry-after {retry_after}"),
            other => panic!("login answered {other} {error}"),
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    peak = peak.max(sampler.1.await?);
    let grew_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "500 parallel logins in {elapsed:?}: {counts:?}; RSS {} → peak {} KiB (+{grew_mib:.1} MiB); \
         chat p99 {:.1} ms quiet, {:.1} ms during the logins",
        rss_before, peak, p99(&quiet), p99(&busy)
    );
    assert!(counts.get(&200).copied().unwrap_or(0) > 0, "some logins get through: {counts:?}");
    assert!(grew_mib <= 64.0, "RSS grew {grew_mib:.1} MiB");
    assert!(p99(&busy) < 500.0, "chat kept flowing: p99 {:.1} ms during the logins", p99(&busy));
    // and the box answers logins normally afterwards
    s.login("bob", "password-2").await?;
    Ok(())
}

/// Opens idle TCP connections to `port` from the loopback addresses
/// 127.0.0.2, 127.0.0.3, … (`per_source` from each), as fast as it can,
/// for 30 s at most.
async fn idle_flood(port: u16, total: usize, per_source: usize) -> Vec<tokio::net::TcpStream> {
    let mut conns = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..total {
        if Instant::now() > deadline {
            eprintln!("flood: stopped after 30 s with {} connections", conns.len());
            break;
        }
        let src = std::net::Ipv4Addr::new(127, 0, (2 + i / per_source / 250) as u8, (2 + (i / per_source) % 250) as u8);
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        if sock.bind(SocketAddr::from((src, 0))).is_err() {
            continue;
        }
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(500), sock.connect(([127, 0, 0, 1], port).into())).await {
            conns.push(c);
        }
    }
    conns
}

/// Connections the server closed (reading gives EOF or an error at once).
async fn closed(conns: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    let mut buf = [0u8; 16];
    for c in conns.iter_mut() {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(2), c.read(&mut buf)).await
            && matches!(r, Ok(0) | Err(_)) {
                n += 1;
            }
    }
    n
}

/// A relayed call: two TURN clients allocate and send each other ChannelData.
async fn relayed_call(s: &Server, tag: usize) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(s.data.join("turn-secret"))?.trim().to_string();
    let server: SocketAddr = ([127, 0, 0, 1], s.turn_port).into();
    let mut cs = Vec::new();
    for i in 0..2 {
        let user = netstack::turn::auth::rest_username(netstack::driver::now().unix + 600, &format!("call{tag}-{i}"));
        let pass = netstack::turn::auth::rest_password(secret.as_bytes(), &user);
        let mut c = Client::connect(tag * 10 + i, server, &user, &pass).await?;
        let relay = c.allocate().await?;
        cs.push((c, relay));
    }
    let (ra, rb) = (cs[0].1, cs[1].1);
    cs[0].0.bind(0x4000, rb).await?;
    cs[1].0.bind(0x4000, ra).await?;
    let mut frame = Vec::new();
    ChannelData::encode(0x4000, b"media", &mut frame);
    cs[0].0.sock.send_to(&frame, server).await?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), cs[1].0.sock.recv_from(&mut buf)).await??;
    anyhow::ensure!(ChannelData::parse(&buf[..n]).map(|d| d.data) == Some(&b"media"[..]), "not relayed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_turn_connections_leave_the_web_chat_and_calls_working() -> R {
    raise_own_fd_limit();
    // a small box: 2,048 open files, shared by the web, TURN streams and relays
    let mut s = Server::unstarted(&["--turn-allow-loopback-peers"])?;
    s.nofile = Some(2048);
    s.launch().await?;
    let pid = s.pid().unwrap();
    let mut p = pair(&s).await?;
    // 5,000 idle connections, to TURN over TCP and over TLS, 50 per source
    let started = Instant::now();
    let mut flood = idle_flood(s.turn_port, 2500, 50).await;
    flood.extend(idle_flood(s.turn_tls_port, 2500, 50).await);
    eprintln!("{} idle connections opened in {:?}; parvis holds {} descriptors", flood.len(), started.elapsed(), fds(pid));
    assert!(fds(pid) < 2048, "the server stays under its limit");
    // everything else works meanwhile
    chat_latencies(&mut p, "flooded", 20).await?;
    assert_eq!(s.http("GET", "/api/rooms", None, Some(&p.alice)).await?.status, 200);
    relayed_call(&s, 1).await?;
    let mut ws = s.ws(&p.bob, json!({})).await?;
    ws.until_synced().await?;
    // the idle ones are closed: no first message within 10 s
    tokio::time::sleep(Duration::from_secs(12)).await;
    let shut = closed(&mut flood).await;
    eprintln!("{shut} of {} idle connections closed by the server after 12 s", flood.len());
    assert_eq!(shut, flood.len(), "every idle connection was refused or timed out");
    // and TURN over TCP takes new clients again
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.turn_port)).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(tcp);
    let req = netstack::stun::Builder::new(netstack::stun::Class::Request, netstack::stun::method::BINDING, [5; 12]).finish();
    wr.write_all(&req).await?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await??;
    assert!(n >= 20, "a binding answer over TCP");
    relayed_call(&s, 2).await?;
    Ok(())
}

/// A connection from one source beyond its share is refused at once; the
/// others keep theirs.
#[tokio::test]
async fn one_source_cannot_take_all_turn_connections() -> R {
    raise_own_fd_limit();
    let s = Server::start().await?;
    let mut mine = idle_flood(s.turn_port, 100, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = closed(&mut mine).await;
    assert_eq!(refused, 100 - 64, "64 per source (limits.turn_per_address)");
    relayed_call(&s, 3).await?;
    Ok(())
}

/// The box runs Parvis as an unprivileged user with no writable temporary
/// directory. SQLite spills big savepoints (search index merges under a
/// burst of writes) to a temporary file: there it failed every batch with
/// "disk I/O error" until temporary data was kept in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_working_unprivileged_without_a_temporary_directory() -> R {
    if !is_root() {
        eprintln!("skipped: the box's sandbox (a mount namespace, another user) needs root");
        return Ok(());
    }
    let mut s = Server::unstarted(&[])?;
    std::fs::write(s.data.join("parvis.toml"), "[chat]\nsend_rate = 10000\n")?;
    s.boxlike = true;
    s.launch().await?;
    let alice = s.setup_admin().await?;
    let room = s.create_room(&alice, "Load", "open", &[]).await?;
    // eight connections sending at once: batches of many jobs, each growing
    // the search index
    let mut tasks = Vec::new();
    for c in 0..8 {
        let mut ws = s.ws(&alice, json!({})).await?;
        ws.until_synced().await?;
        tasks.push(tokio::spawn(async move {
            let words = ["réunion", "budget", "client", "facture", "livraison", "projet", "planning", "serveur"];
            let mut errors = Vec::new();
            for round in 0..10 {
                for i in 0..40 {
                    let body: String = (0..300).map(|k| format!("{}{} ", words[(k + i + c) % words.len()], (k * 7919 + i * 31 + round) % 5000)).collect();
                    ws.send(json!({"t": "send", "id": format!("c{c}r{round}m{i}"), "room": room, "body": body})).await?;
                }
                let mut acked = 0;
                while acked < 40 {
                    let f = ws.recv().await?;
                    match f["t"].as_str() {
                        Some("ack") => acked += 1,
                        Some("error") => {
                            errors.push(f.to_string());
                            acked += 1;
                        }
                        _ => {}
                    }
                }
            }
            anyhow::Ok(errors)
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await??);
    }
    assert!(errors.is_empty(), "{} sends refused, e.g. {:?}; log:\n{}", errors.len(), errors.first(), s.log());
    assert!(!s.log().contains("disk I/O error"), "{}", s.log());
    Ok(())
}

/// Guest links are reachable without an account: 400 clients at once try
/// unknown tokens and wrong passwords on a real link while a guest already
/// inside and a member keep chatting. Password checks stay bounded (the
/// link's 10 tries), nothing sleeps, memory and file descriptors come back,
/// and the guest inside is not slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_parallel_guest_link_attempts_leave_guests_and_members_chatting() -> R {
    raise_own_fd_limit();
    let s = Server::start().await?;
    let pid = s.pid().unwrap();
    let mut p = pair(&s).await?;
    let made = s
        .http("POST", &format!("/api/rooms/{}/guest-links", p.room), Some(json!({"password": "guest-pass-1"})), Some(&p.alice))
        .await?;
    anyhow::ensure!(made.status == 200, "{}", made.text);
    let token = made.body["token"].as_str().unwrap().to_string();
    // a guest already inside, in bob's place in the measuring pair
    let guest = s
        .http("POST", &format!("/api/guest/{token}"), Some(json!({"display_name": "Claire", "password": "guest-pass-1"})), None)
        .await?
        .session()?;
    p.wb = s.ws(&guest, json!({})).await?;
    p.wb.until_synced().await?;
    let quiet = chat_latencies(&mut p, "quiet", 20).await?;
    let (rss_before, fds_before) = (rss_kib(pid), fds(pid));
    let started = Instant::now();
    let tries: Vec<_> = (0..400)
        .map(|i| {
            let (port, data, token) = (s.https_port, s.data.clone(), token.clone());
            tokio::spawn(async move {
                let s = Server::attach(data, port);
                let r = match i % 3 {
                    0 => s.http("GET", &format!("/api/guest/unknown-token-{i}"), None, None).await,
                    1 => s.http("POST", &format!("/api/guest/unknown-token-{i}"), Some(json!({"display_name": "Mallory"})), None).await,
                    _ => {
                        let body = json!({"display_name": format!("Mallory {i}"), "password": "not-the-password"});
                        s.http("POST", &format!("/api/guest/{token}"), Some(body), None).await
                    }
                };
                r.map(|r| (r.status, r.header("retry-after").is_some(), r.body["error"].as_str().unwrap_or("").to_string()))
            })
        })
        .collect();
    let busy = chat_latencies(&mut p, "busy", 20).await?;
    let mut counts = std::collections::BTreeMap::new();
    for t in tries {
        // 0: closed at the door (over the per-address share of connections)
        let (status, retry_after, error) = t.await?.unwrap_or((0, false, String::new()));
        match status {
            0 => {}
            401 => assert_eq!(error, "wrong_password"),
            404 => assert_eq!(error, "not_found"),
            429 => assert!(retry_after && error == "rate_limited", "429 {error} retry-after {retry_after}"),
            503 => assert!(retry_after && error == "busy", "503 {error}"),
            other => panic!("a guest link try answered {other} {error}"),
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, fds_after) = (rss_kib(pid), fds(pid));
    let grew_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "400 parallel guest link tries in {elapsed:?}: {counts:?}; RSS +{grew_mib:.1} MiB; fds {fds_before} → {fds_after}; \
         guest's chat p99 {:.1} ms quiet, {:.1} ms during the tries",
        p99(&quiet),
        p99(&busy)
    );
    assert!(counts.get(&401).copied().unwrap_or(0) <= 10, "at most the link's 10 password checks: {counts:?}");
    assert!(counts.get(&429).copied().unwrap_or(0) > 0, "the rest is refused at once: {counts:?}");
    assert!(grew_mib <= 32.0, "RSS grew {grew_mib:.1} MiB");
    assert!(fds_after <= fds_before + 16, "file descriptors come back: {fds_before} → {fds_after}");
    assert!(p99(&busy) < 500.0, "the guest inside kept chatting: p99 {:.1} ms", p99(&busy));
    // members still log in and the guest inside is still itself
    s.login("bob", "password-2").await?;
    assert_eq!(s.http("GET", "/api/me", None, Some(&guest)).await?.body["user"]["role"], "guest");
    Ok(())
}

/// A knock link leaked on the internet: 300 clients at once knock on it.
/// Only what one address may bring in comes in (10 in ten minutes), the rest
/// is 429 at once or closed at the door; the owner is alerted once per guest
/// that actually waits, the waiting room holds exactly those, memory and file
/// descriptors come back, and "Admit all" lets exactly them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_parallel_knocks_bring_in_only_what_an_address_may() -> R {
    raise_own_fd_limit();
    let s = Server::start().await?;
    let pid = s.pid().unwrap();
    let alice = s.setup_admin().await?;
    let room = s.create_room(&alice, "Support", "invite", &[]).await?;
    let made = s.http("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({"knock": true})), Some(&alice)).await?;
    anyhow::ensure!(made.status == 200, "{}", made.text);
    let token = made.body["token"].as_str().unwrap().to_string();
    let mut a = s.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    let (rss_before, fds_before) = (rss_kib(pid), fds(pid));
    let started = Instant::now();
    let knocks: Vec<_> = (0..300)
        .map(|i| {
            let (port, data, token) = (s.https_port, s.data.clone(), token.clone());
            tokio::spawn(async move {
                let s = Server::attach(data, port);
                let r = s.http("POST", &format!("/api/guest/{token}"), Some(json!({"display_name": format!("Knocker {i}")})), None).await;
                r.map(|r| (r.status, r.header("retry-after").is_some(), r.body["error"].as_str().unwrap_or("").to_string()))
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for k in knocks {
        let (status, retry_after, error) = k.await?.unwrap_or((0, false, String::new()));
        match status {
            0 | 200 => {}
            429 => assert!(retry_after && error == "rate_limited", "429 {error} retry-after {retry_after}"),
            other => panic!("a knock answered {other} {error}"),
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    let came = counts.get(&200).copied().unwrap_or(0);
    // what the server let in (a client may have lost its answer in the crowd)
    let waiting = s.http("GET", "/api/guests/waiting", None, Some(&alice)).await?;
    let waited = waiting.body.as_array().map_or(0, Vec::len);
    // the owner is told of each one that waits, once, and of nobody else
    let mut alerts = 0;
    while let Ok(f) = tokio::time::timeout(Duration::from_secs(2), a.recv_until(|f| f["kind"] == "guest")).await {
        assert_eq!(f?["action"], "knocked");
        alerts += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, fds_after) = (rss_kib(pid), fds(pid));
    let grew_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!("300 parallel knocks in {elapsed:?}: {counts:?}; {waited} waiting, {alerts} alerts; RSS +{grew_mib:.1} MiB; fds {fds_before} → {fds_after}");
    assert_eq!(waited, 10, "one address brings in 10 guests in ten minutes: {counts:?}");
    assert!(came <= waited, "every 200 is a guest waiting: {counts:?}");
    assert_eq!(alerts, waited, "one alert per guest waiting");
    assert!(grew_mib <= 32.0, "RSS grew {grew_mib:.1} MiB");
    assert!(fds_after <= fds_before + 16, "file descriptors come back: {fds_before} → {fds_after}");
    let all = s.http("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true})), Some(&alice)).await?;
    assert_eq!(all.body["decided"].as_array().unwrap().len(), waited, "{}", all.text);
    Ok(())
}
