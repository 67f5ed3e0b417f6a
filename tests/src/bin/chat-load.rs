//! Load generator for `scripts/bench-chat`: N real TLS WebSocket clients
//! in rooms of M members, R messages/s in aggregate for D seconds. Measures
//! delivery latency from send to every other member's connection, throughput,
//! and the server's CPU time and RSS (read from /proc). Not a test.
//!
//! Usage: chat-load --port P --data DIR --pid PID [--clients N] [--room-size M]
//!                  [--rate R] [--secs D] [--idle K]

// A benchmark measures real elapsed time.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use parvis_e2e::{Server, Session};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::protocol::Message;

struct Args {
    port: u16,
    data: std::path::PathBuf,
    pid: u32,
    clients: usize,
    room_size: usize,
    rate: f64,
    secs: u64,
    idle: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { port: 0, data: ".".into(), pid: 0, clients: 1000, room_size: 50, rate: 500.0, secs: 15, idle: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--port" => a.port = v.parse()?,
            "--data" => a.data = v.into(),
            "--pid" => a.pid = v.parse()?,
            "--clients" => a.clients = v.parse()?,
            "--room-size" => a.room_size = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--secs" => a.secs = v.parse()?,
            "--idle" => a.idle = v.parse()?,
            _ => anyhow::bail!("unknown option {k}"),
        }
    }
    Ok(a)
}

/// (utime + stime) of a process in clock ticks, and its RSS in KiB.
fn proc_stats(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn ticks_per_sec() -> f64 {
    100.0 // Linux USER_HZ on every architecture we run on
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A server that already runs (started by the script), seen through the
/// e2e harness's HTTP client.
fn attach(a: &Args) -> Server {
    Server::attach(a.data.clone(), a.port)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let server = Arc::new(attach(&a));
    let t0 = Instant::now();
    let admin = match server.setup_admin().await {
        Ok(s) => s,
        Err(_) => server.login("alice", "password-1").await?,
    };
    let (_, rss_empty) = proc_stats(a.pid);

    if a.idle > 0 {
        return idle(&a, &server, &admin, rss_empty).await;
    }

    // People and rooms: client i is user i, in room i / room_size.
    let rooms_n = a.clients.div_ceil(a.room_size);
    eprintln!("creating {} users in {rooms_n} rooms …", a.clients);
    let sessions: Arc<Mutex<Vec<Option<Session>>>> = Arc::new(Mutex::new(vec![None; a.clients]));
    let next = Arc::new(AtomicU64::new(0));
    let mut jobs = Vec::new();
    for _ in 0..8 {
        let (server, admin, sessions, next) = (server.clone(), admin.clone(), sessions.clone(), next.clone());
        let n = a.clients;
        jobs.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return anyhow::Ok(());
                }
                let inv = server.http("POST", "/api/invites", Some(json!({"hours": 1})), Some(&admin)).await?;
                let token = inv.body["token"].as_str().context("invite")?.to_string();
                let res = server
                    .http(
                        "POST",
                        &format!("/api/invites/{token}"),
                        Some(json!({"username": format!("u{i}"), "display_name": format!("User {i}"), "password": "password-9"})),
                        None,
                    )
                    .await?;
                sessions.lock().await[i] = Some(res.session()?);
            }
        }));
    }
    for j in jobs {
        j.await??;
    }
    let sessions: Vec<Session> = sessions.lock().await.iter().map(|s| s.clone().unwrap()).collect();
    let mut room_of = vec![0i64; a.clients];
    for r in 0..rooms_n {
        let range = r * a.room_size..((r + 1) * a.room_size).min(a.clients);
        let members: Vec<i64> = sessions[range.clone()].iter().map(|s| s.user).collect();
        let id = server.create_room(&admin, &format!("bench {r}"), "invite", &members).await?;
        room_of[range].fill(id);
    }
    eprintln!("setup took {:.1} s; connecting {} clients …", t0.elapsed().as_secs_f64(), a.clients);

    // Connect everyone; each client's reader records latencies.
    let start = Instant::now();
    let lat: Arc<std::sync::Mutex<Vec<u64>>> = Arc::new(std::sync::Mutex::new(Vec::with_capacity(1 << 20)));
    let received = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::with_capacity(a.clients);
    for (i, s) in sessions.iter().enumerate() {
        let mut ws = server.ws(s, json!({})).await?;
        ws.until_synced().await?;
        let (mut sink, mut stream) = ws.stream.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        senders.push(tx);
        tokio::spawn(async move {
            while let Some(t) = rx.recv().await {
                if sink.send(Message::Text(t.into())).await.is_err() {
                    break;
                }
            }
        });
        let (lat, received, acked, me) = (lat.clone(), received.clone(), acked.clone(), s.user);
        tokio::spawn(async move {
            let mut local = Vec::new();
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let now = start.elapsed().as_nanos() as u64;
                let v: Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v["t"] == "ack" {
                    acked.fetch_add(1, Ordering::Relaxed);
                } else if v["t"] == "event" && v["kind"] == "message" && v["actor"].as_i64() != Some(me)
                    && let Some(sent) = v["body"].as_str().and_then(|b| b.strip_prefix("bench ")).and_then(|x| x.parse::<u64>().ok()) {
                        local.push((now.saturating_sub(sent)) / 1000);
                        if local.len() >= 16 {
                            lat.lock().unwrap().append(&mut local);
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
            }
            lat.lock().unwrap().append(&mut local);
        });
        if i % 200 == 199 {
            eprintln!("  {} connected", i + 1);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, rss_idle) = proc_stats(a.pid);

    // Load: R messages/s from random clients, paced by a ticker.
    eprintln!("sending {} msg/s for {} s …", a.rate, a.secs);
    let (cpu0, _) = proc_stats(a.pid);
    let t_load = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (a.rate * a.secs as f64) as u64;
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rss_peak = 0;
    for n in 0..total {
        tick.tick().await;
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let i = (rng_state % a.clients as u64) as usize;
        let sent = start.elapsed().as_nanos() as u64;
        let frame = json!({"t": "send", "id": format!("b{n}"), "room": room_of[i], "body": format!("bench {sent}")});
        let _ = senders[i].send(frame.to_string());
        if n % 500 == 0 {
            rss_peak = rss_peak.max(proc_stats(a.pid).1);
        }
    }
    let send_secs = t_load.elapsed().as_secs_f64();
    // Wait for the tail (bounded).
    let members_per_msg: HashMap<i64, usize> = room_of.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(*r).or_default() += 1;
        m
    });
    let expected: u64 = (total as f64 * (members_per_msg.values().sum::<usize>() as f64 / rooms_n as f64 - 1.0)) as u64;
    let drain_until = Instant::now() + Duration::from_secs(15);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = t_load.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cpu1, rss_after) = proc_stats(a.pid);
    let got = received.load(Ordering::Relaxed);
    let mut l = lat.lock().unwrap().clone();
    l.sort_unstable();
    let cpu_s = (cpu1 - cpu0) as f64 / ticks_per_sec();
    println!(
        "{}",
        json!({
            "server": "parvis",
            "clients": a.clients, "room_size": a.room_size, "rate": a.rate, "secs": a.secs,
            "sent": total, "send_secs": send_secs, "acked": acked.load(Ordering::Relaxed),
            "deliveries": got, "expected": expected, "lost": expected.saturating_sub(got),
            "deliveries_per_s": got as f64 / wall,
            "p50_ms": percentile(&l, 0.50), "p99_ms": percentile(&l, 0.99), "max_ms": percentile(&l, 1.0),
            "cpu_s": cpu_s, "cpu_us_per_delivery": cpu_s * 1e6 / got.max(1) as f64,
            "rss_empty_mib": rss_empty as f64 / 1024.0, "rss_idle_mib": rss_idle as f64 / 1024.0,
            "rss_peak_mib": rss_peak.max(rss_after) as f64 / 1024.0,
        })
    );
    Ok(())
}

/// Opens `idle` connections for one user and reports the server's RSS.
async fn idle(a: &Args, server: &Arc<Server>, admin: &Session, rss_empty: u64) -> Result<()> {
    let mut conns = Vec::with_capacity(a.idle);
    let t = Instant::now();
    for i in 0..a.idle {
        let mut ws = server.ws(admin, json!({})).await?;
        ws.until_synced().await?;
        conns.push(ws);
        if i % 2000 == 1999 {
            eprintln!("  {} idle connections ({:.0} s)", i + 1, t.elapsed().as_secs_f64());
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, rss) = proc_stats(a.pid);
    println!(
        "{}",
        json!({"server": "parvis", "idle_connections": conns.len(), "rss_empty_mib": rss_empty as f64 / 1024.0,
               "rss_mib": rss as f64 / 1024.0,
               "kib_per_connection": (rss.saturating_sub(rss_empty)) as f64 / conns.len() as f64})
    );
    Ok(())
}
