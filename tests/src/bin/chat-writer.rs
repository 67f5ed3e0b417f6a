//! Chat load for the box's power-cut test (tests/image/boot): real TLS
//! WebSocket clients of a running box write messages as fast as the rate
//! limit allows and record every acknowledged id; `--verify` checks that
//! each recorded id is in the room's history exactly once. Not a benchmark.
//!
//! Usage:
//!   chat-writer --port P --ca CA.pem --out ACKED [--secs S] [--conns N] [--tag T] [--expect-clean]
//!   chat-writer --port P --ca CA.pem --verify ACKED
//! The box must have the admin `alice` / `password-1`; messages go to her
//! first room.

// Load runs for real seconds.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parvis_e2e::Server;
use serde_json::json;

struct Args {
    port: u16,
    ca: std::path::PathBuf,
    out: Option<std::path::PathBuf>,
    verify: Option<std::path::PathBuf>,
    secs: u64,
    conns: usize,
    tag: String,
    expect_clean: bool,
}

fn args() -> Result<Args> {
    let mut a = Args { port: 0, ca: ".".into(), out: None, verify: None, secs: 10, conns: 8, tag: "w".into(), expect_clean: false };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--expect-clean" {
            a.expect_clean = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--port" => a.port = v.parse()?,
            "--ca" => a.ca = v.into(),
            "--out" => a.out = Some(v.into()),
            "--verify" => a.verify = Some(v.into()),
            "--secs" => a.secs = v.parse()?,
            "--conns" => a.conns = v.parse()?,
            "--tag" => a.tag = v,
            _ => bail!("unknown option {k}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    // the harness trusts `<data>/tls/ca.pem`
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("tls"))?;
    std::fs::copy(&a.ca, dir.path().join("tls/ca.pem")).context("the box's CA")?;
    let server = Server::attach(dir.path().to_path_buf(), a.port);
    let alice = server.login("alice", "password-1").await?;
    let rooms = server.http("GET", "/api/rooms", None, Some(&alice)).await?;
    let room = rooms.body[0]["id"].as_i64().context("no room")?;
    if let Some(file) = &a.verify {
        return verify(&server, &alice, room, file).await;
    }
    let out = a.out.clone().context("--out or --verify")?;
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    let mut tasks = Vec::new();
    for c in 0..a.conns {
        let (server_port, dir_path, alice, tag, out) = (a.port, dir.path().to_path_buf(), alice.clone(), a.tag.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let server = Server::attach(dir_path, server_port);
            let mut ws = server.ws(&alice, json!({})).await?;
            ws.until_synced().await?;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&out)?;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let (mut n, mut acked) = (0u64, 0u64);
            let mut in_flight: HashMap<String, Instant> = HashMap::new();
            while Instant::now() < deadline {
                // about 15 a second each, under the chat's rate limit
                while in_flight.len() < 8 {
                    let id = format!("{tag}-{c}-{n}");
                    n += 1;
                    ws.send(json!({"t": "send", "id": id, "room": room, "body": format!("load {id} réunion budget")})).await?;
                    in_flight.insert(id, Instant::now());
                }
                let Some(f) = ws.quiet_for(Duration::from_millis(500)).await else { continue };
                match f["t"].as_str() {
                    Some("ack") => {
                        if let Some(id) = f["id"].as_str()
                            && in_flight.remove(id).is_some()
                        {
                            // one write(2) per line: O_APPEND keeps the
                            // connections' lines whole
                            file.write_all(format!("{id}\n").as_bytes())?;
                            acked += 1;
                        }
                    }
                    Some("error") => {
                        *errors.entry(f["code"].as_str().unwrap_or("?").to_string()).or_default() += 1;
                        if let Some(id) = f["ref"].as_str() {
                            in_flight.remove(id);
                        }
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            anyhow::Ok((acked, errors))
        }));
    }
    let (mut acked, mut errors) = (0, BTreeMap::<String, u64>::new());
    for t in tasks {
        // a connection the power cut ended counts what it had
        if let Ok(Ok((a, e))) = t.await {
            acked += a;
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    println!("acked {acked} errors {errors:?}");
    let serious: u64 = errors.iter().filter(|(k, _)| k.as_str() != "rate_limited").map(|(_, v)| v).sum();
    if a.expect_clean && (serious > 0 || acked == 0) {
        bail!("writes were refused: {errors:?} ({acked} acked)");
    }
    Ok(())
}

/// Every id of `file` is in the room's history exactly once.
async fn verify(server: &Server, who: &parvis_e2e::Session, room: i64, file: &std::path::Path) -> Result<()> {
    let wanted: Vec<String> = std::fs::read_to_string(file)?.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut before: Option<i64> = None;
    loop {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        let page = server.http("GET", &format!("/api/rooms/{room}/messages?limit=200{q}"), None, Some(who)).await?;
        let msgs = page.body["messages"].as_array().context("messages")?;
        for m in msgs {
            if let Some(id) = m["client_id"].as_str().filter(|s| !s.is_empty()) {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
        if !page.body["more"].as_bool().unwrap_or(false) || msgs.is_empty() {
            break;
        }
        before = msgs[0]["seq"].as_i64();
    }
    let unique: HashSet<&String> = wanted.iter().collect();
    let missing: Vec<&&String> = unique.iter().filter(|id| !seen.contains_key(**id)).take(5).collect();
    let doubled: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    println!("{} acknowledged, {} in history, {} missing, {} doubled", unique.len(), seen.len(), missing.len(), doubled.len());
    if !missing.is_empty() || !doubled.is_empty() {
        bail!("lost: {missing:?}; doubled: {doubled:?}");
    }
    Ok(())
}
