//! STUN/TURN interop: coturn's own clients (`turnutils_stunclient`,
//! `turnutils_uclient`, `turnutils_peer`) against a real `parvis serve`.
//! coturn's server is never started here.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use netstack::stun::ChannelData;
use parvis_e2e::turn_client::Client;
use parvis_e2e::{Server, free_port, parvis_bin};
use serde_json::Value;
use tokio::process::{Child, Command};

type R = anyhow::Result<()>;

/// Runs a command to completion (60 s at most); returns exit code and output.
async fn run(cmd: &mut Command) -> anyhow::Result<(i32, String)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

/// A UDP echo peer (coturn's turnutils_peer) on loopback.
struct Peer {
    port: u16,
    _child: Child,
}

async fn peer() -> anyhow::Result<Peer> {
    let port = free_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Peer { port, _child: child })
}

fn secret(s: &Server) -> String {
    std::fs::read_to_string(s.data.join("turn-secret")).unwrap().trim().to_string()
}

/// `turnutils_uclient` with the given mode flags; returns (exit, output).
async fn uclient(s: &Server, mode: &[&str], auth: &[&str], peer: Option<u16>, tls: bool) -> anyhow::Result<(i32, String)> {
    let port = if tls { s.turn_tls_port } else { s.turn_port };
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(mode).args(auth).args(["-p", &port.to_string(), "-n", "40", "-m", "2", "-l", "160", "-c"]);
    if let Some(p) = peer {
        cmd.args(["-e", "127.0.0.1", "-r", &p.to_string()]);
    }
    cmd.arg("127.0.0.1");
    run(&mut cmd).await
}

fn no_loss(out: &str) -> bool {
    out.lines().any(|l| l.contains("Total lost packets 0 (0.000000%)"))
}

#[tokio::test]
async fn stun_binding_answers_coturns_client() -> R {
    let s = Server::start().await?;
    let (_, out) = run(Command::new("turnutils_stunclient").args(["-p", &s.turn_port.to_string(), "127.0.0.1"])).await?;
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
    Ok(())
}

#[tokio::test]
async fn coturns_client_relays_to_a_udp_peer_over_udp_tcp_and_tls() -> R {
    let s = Server::start_with(&["--turn-allow-loopback-peers"]).await?;
    let p = peer().await?;
    let secret = secret(&s);
    let auth = ["-W", secret.as_str(), "-u", "bob"];
    // ChannelData (uclient's default: channels in 0x4000-0x7FFF) and Send
    // indications (-s), over UDP, TCP (-t) and TLS (-S)
    for (mode, tls) in [
        (&[][..], false),
        (&["-t"][..], false),
        (&["-t", "-S"][..], true),
        (&["-s"][..], false),
        (&["-t", "-S", "-s"][..], true),
    ] {
        let (code, out) = uclient(&s, mode, &auth, Some(p.port), tls).await?;
        assert!(code == 0 && no_loss(&out), "mode {mode:?}: exit {code}\n{out}");
    }
    Ok(())
}

#[tokio::test]
async fn client_to_client_relaying_works_over_udp_and_tls() -> R {
    let s = Server::start_with(&["--turn-allow-loopback-peers"]).await?;
    let secret = secret(&s);
    let auth = ["-W", secret.as_str(), "-u", "bob"];
    for (mode, tls) in [(&["-y"][..], false), (&["-t", "-S", "-y"][..], true), (&["-y", "-s"][..], false)] {
        let (code, out) = uclient(&s, mode, &auth, None, tls).await?;
        assert!(code == 0 && no_loss(&out), "mode {mode:?}: exit {code}\n{out}");
    }
    // relay to relay never went through the kernel: it was handed over in-process
    tokio::time::sleep(Duration::from_millis(700)).await; // stats refresh every 500 ms
    let metrics = s.http("GET", "/metrics", None, None).await?.text;
    let in_process: u64 = metrics
        .lines()
        .find(|l| l.starts_with("parvis_turn_packets_total{direction=\"in_process\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(in_process >= 160, "in-process packets: {in_process}\n{metrics}");
    assert!(metrics.contains("parvis_turn_allocations_created_total"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_gets_nothing_relayed() -> R {
    let s = Server::start_with(&["--turn-allow-loopback-peers"]).await?;
    let p = peer().await?;
    let (_, out) = uclient(&s, &["-s"], &["-W", "not-the-secret-at-all", "-u", "bob"], Some(p.port), false).await?;
    assert!(!no_loss(&out), "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");
    Ok(())
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default() -> R {
    let s = Server::start().await?;
    let p = peer().await?;
    let secret = secret(&s);
    let (_, out) = uclient(&s, &["-s"], &["-W", secret.as_str(), "-u", "bob"], Some(p.port), false).await?;
    // CreatePermission gets 403; what it then sends is dropped: all lost.
    assert!(out.contains("(100.000000%)"), "{out}");
    Ok(())
}

#[tokio::test]
async fn turn_credentials_command_gives_working_credentials() -> R {
    let s = Server::start_with(&["--turn-allow-loopback-peers"]).await?;
    let p = peer().await?;
    let (code, out) = run(Command::new(parvis_bin())
        .arg("turn-credentials")
        .arg("--data")
        .arg(&s.data)
        .args(["--user", "carol", "--ttl", "600", "--json"]))
    .await?;
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim())?;
    let username = v["username"].as_str().unwrap();
    assert!(username.ends_with(":carol"));
    assert_eq!(v["ttl"], 600);
    assert!(v["uris"].as_array().unwrap().iter().any(|u| u.as_str().unwrap().starts_with("turns:")));
    let password = v["password"].as_str().unwrap();
    let (code, out) = uclient(&s, &["-s"], &["-u", username, "-w", password], Some(p.port), false).await?;
    assert!(code == 0 && no_loss(&out), "exit {code}\n{out}");
    let (code, _) = run(Command::new(parvis_bin())
        .arg("turn-credentials")
        .arg("--data")
        .arg(&s.data)
        .args(["--user", "carol", "--ttl", "999999"]))
    .await?;
    assert_eq!(code, 2, "a TTL beyond the horizon is refused");
    Ok(())
}

#[tokio::test]
async fn turn_over_tls_shares_the_https_port() -> R {
    let s = Server::start_with(&["--turn-allow-loopback-peers"]).await?;
    let p = peer().await?;
    let secret = secret(&s);
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-t", "-S", "-s", "-W", secret.as_str(), "-u", "bob", "-n", "40", "-m", "2", "-l", "160", "-c"])
        .args(["-p", &s.https_port.to_string(), "-e", "127.0.0.1", "-r", &p.port.to_string(), "127.0.0.1"]);
    let (code, out) = run(&mut cmd).await?;
    assert!(code == 0 && no_loss(&out), "exit {code}\n{out}");
    // and the web is still served on the very same port
    let status = s.http("GET", "/api/status", None, None).await?;
    assert_eq!(status.status, 200);
    Ok(())
}

#[tokio::test]
async fn doctor_checks_stun_turn_and_relaying_from_the_box() -> R {
    let s = Server::start().await?;
    let doctor = |turn_port: u16| {
        let mut cmd = Command::new(parvis_bin());
        cmd.arg("doctor").arg("--data").arg(&s.data).arg("--turn").arg(format!("127.0.0.1:{turn_port}"));
        cmd
    };
    let (code, out) = run(&mut doctor(s.turn_port)).await?;
    assert_eq!(code, 0, "{out}");
    for line in ["ok    STUN binding over UDP", "ok    STUN binding over TCP", "ok    TURN allocation and relay round trip",
        "ok    expired credentials are refused", "/udp (relays)"] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // nothing listening there: a clear failure, not a hang
    let (code, out) = run(&mut doctor(free_port())).await?;
    assert_ne!(code, 0);
    assert!(out.contains("is `parvis serve` running?"), "{out}");
    Ok(())
}

/// A `parvis turn` node listening on [::1] with IPv6 relays on ::1.
async fn ipv6_node(allow_loopback: bool) -> anyhow::Result<(Child, SocketAddr, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let secret = "ipv6-test-secret".to_string();
    std::fs::write(dir.path().join("turn-secret"), &secret)?;
    std::fs::write(dir.path().join("parvis.toml"), "[turn]\nrelay_address_v6 = \"::1\"\n")?;
    let (udp, tls) = (free_port(), free_port());
    let mut cmd = Command::new(parvis_bin());
    cmd.arg("turn").arg("--data").arg(dir.path());
    cmd.args(["--turn", &format!("[::1]:{udp}"), "--turn-tls", &format!("[::1]:{tls}"), "--log", "warn"]);
    if allow_loopback {
        cmd.arg("--turn-allow-loopback-peers");
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((child, SocketAddr::from((Ipv6Addr::LOCALHOST, udp)), secret, dir))
}

fn rest(secret: &str) -> (String, String) {
    let user = netstack::turn::auth::rest_username(netstack::driver::now().unix + 600, "v6");
    let pass = netstack::turn::auth::rest_password(secret.as_bytes(), &user);
    (user, pass)
}

#[tokio::test]
async fn an_ipv6_relay_carries_channel_data_both_ways_and_never_reaches_ipv4() -> R {
    let (_node, server, secret, _dir) = ipv6_node(true).await?;
    let (user, pass) = rest(&secret);
    let mut c = Client::connect(0, server, &user, &pass).await?;
    let relayed = c.allocate().await?;
    assert!(relayed.is_ipv6() && relayed.ip() == Ipv6Addr::LOCALHOST, "relayed {relayed}");

    let peer = tokio::net::UdpSocket::bind("[::1]:0").await?;
    c.bind(0x4000, peer.local_addr()?).await?;
    let mut frame = Vec::new();
    ChannelData::encode(0x4000, b"over ipv6", &mut frame);
    c.sock.send_to(&frame, server).await?;
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), peer.recv_from(&mut buf)).await??;
    assert_eq!((&buf[..n], from), (&b"over ipv6"[..], relayed));

    peer.send_to(b"and back", relayed).await?;
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), c.sock.recv_from(&mut buf)).await??;
    assert_eq!(ChannelData::parse(&buf[..n]).map(|d| d.data), Some(&b"and back"[..]));

    // Even with loopback peers allowed (test mode), the IPv6 relay socket is
    // IPv6-only: an IPv4-mapped peer never reaches the IPv4 loopback.
    let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mapped = SocketAddr::new(match v4.local_addr()?.ip() { std::net::IpAddr::V4(ip) => std::net::IpAddr::V6(ip.to_ipv6_mapped()), ip => ip }, v4.local_addr()?.port());
    let _ = c.bind(0x4001, mapped).await; // refused or not: nothing may arrive
    let mut frame = Vec::new();
    ChannelData::encode(0x4001, b"escape", &mut frame);
    c.sock.send_to(&frame, server).await?;
    assert!(tokio::time::timeout(Duration::from_millis(700), v4.recv_from(&mut buf)).await.is_err(), "reached IPv4");
    Ok(())
}

#[tokio::test]
async fn ipv6_spellings_of_forbidden_peers_are_refused_on_a_real_ipv6_node() -> R {
    let (_node, server, secret, _dir) = ipv6_node(false).await?;
    let (user, pass) = rest(&secret);
    let mut c = Client::connect(0, server, &user, &pass).await?;
    c.allocate().await?;
    for peer in ["[::1]:9", "[::ffff:127.0.0.1]:9", "[::127.0.0.1]:9", "[64:ff9b::7f00:1]:9", "[2002:7f00:1::1]:9",
        "[fe80::1]:9", "[fd00::1]:9", "[::ffff:169.254.169.254]:80", "[::]:9"] {
        let err = c.bind(0x4000, peer.parse()?).await.expect_err(peer).to_string();
        assert!(err.contains("403"), "{peer}: {err}");
    }
    Ok(())
}

/// A `parvis serve` on 127.0.0.1 with relays of both families (IPv6 on ::1).
async fn dual_stack_server() -> anyhow::Result<Server> {
    let mut s = Server::unstarted(&["--turn-allow-loopback-peers"])?;
    std::fs::write(s.data.join("parvis.toml"), "[turn]\nrelay_address_v6 = \"::1\"\n")?;
    s.launch().await?;
    Ok(s)
}

/// The receive batch is shared by the IPv4 listener and the IPv6 relay
/// sockets: every reply of an IPv6 peer must reach an IPv4 client (an
/// address cut to the IPv4 length lost most of them as no_permission).
#[tokio::test]
async fn an_ipv4_client_of_an_ipv6_relay_gets_every_reply() -> R {
    let s = dual_stack_server().await?;
    let secret = secret(&s);
    let user = netstack::turn::auth::rest_username(netstack::driver::now().unix + 600, "mixed");
    let pass = netstack::turn::auth::rest_password(secret.as_bytes(), &user);
    let server: SocketAddr = ([127, 0, 0, 1], s.turn_port).into();
    let mut c = Client::connect(0, server, &user, &pass).await?;
    let relayed = c.allocate_family(true).await?;
    assert!(relayed.is_ipv6(), "relayed {relayed}");
    let peer = tokio::net::UdpSocket::bind("[::1]:0").await?;
    c.bind(0x4000, peer.local_addr()?).await?;
    // the peer answers everything it gets, while the client keeps sending:
    // IPv4 datagrams from the client and IPv6 ones from the peer land in
    // the same receive batches
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while let Ok(Ok((len, from))) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf)).await {
            peer.send_to(&buf[..len], from).await.unwrap();
            n += 1;
        }
        n
    });
    const N: usize = 400;
    let mut got = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    for i in 0..N {
        let mut frame = Vec::new();
        ChannelData::encode(0x4000, format!("datagram {i}").as_bytes(), &mut frame);
        c.sock.send_to(&frame, server).await?;
        while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(if i % 20 == 19 { 50 } else { 0 }), c.sock.recv_from(&mut buf)).await {
            if let Some(d) = ChannelData::parse(&buf[..n]) {
                got.insert(d.data.to_vec());
            }
        }
    }
    while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), c.sock.recv_from(&mut buf)).await {
        if let Some(d) = ChannelData::parse(&buf[..n]) {
            got.insert(d.data.to_vec());
        }
    }
    let echoed = echo.await?;
    assert_eq!(echoed, N, "the peer got everything");
    assert_eq!(got.len(), N, "replies lost on the way back: {}", N - got.len());
    Ok(())
}

/// coturn's client asking for an IPv6 relay (-x) from IPv4, to an IPv6 peer.
#[tokio::test]
async fn coturns_client_relays_from_ipv4_through_an_ipv6_relay() -> R {
    let s = dual_stack_server().await?;
    let port = free_port();
    let _peer = Command::new("turnutils_peer")
        .args(["-L", "::1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let secret = secret(&s);
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-x", "-W", &secret, "-u", "bob", "-p", &s.turn_port.to_string(), "-n", "40", "-m", "2", "-l", "160", "-c"])
        .args(["-e", "::1", "-r", &port.to_string(), "127.0.0.1"]);
    let (code, out) = run(&mut cmd).await?;
    assert!(code == 0 && no_loss(&out), "exit {code}\n{out}");
    Ok(())
}

/// RFC 7443: a TURN client that says `stun.turn` in ALPN on the HTTPS port
/// is served TURN (browsers' h2 and http/1.1 still get the web).
#[tokio::test]
async fn turn_over_tls_with_alpn_stun_turn_on_the_https_port() -> R {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start().await?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.https_port)).await?;
    let connector = tokio_rustls::TlsConnector::from(s.tls(&[b"stun.turn"]));
    let mut tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"stun.turn"[..]));
    let req = netstack::stun::Builder::new(netstack::stun::Class::Request, netstack::stun::method::BINDING, [9; 12]).finish();
    tls.write_all(&req).await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await??;
    let m = netstack::stun::Message::parse(&buf[..n]).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!((m.class(), m.transaction_id()), (netstack::stun::Class::Success, [9; 12]));
    // the same port still serves the web
    assert_eq!(s.http("GET", "/api/status", None, None).await?.status, 200);
    Ok(())
}

/// The refusal an allocation gets within two seconds when asked to bind
/// `peer` (its credentials were revoked meanwhile), or `None`.
async fn refused_soon(c: &mut Client, channel: u16, peer: SocketAddr) -> Option<String> {
    for _ in 0..20 {
        match c.bind(channel, peer).await {
            Err(e) => return Some(e.to_string()),
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// Disabling an account ends its relayed media at once: the allocation made
/// with its `/api/ice` credentials is gone (its next request is refused, 401)
/// and those credentials make no new one.
#[tokio::test]
async fn disabling_an_account_ends_its_turn_allocations() -> R {
    let s = Server::start().await?;
    let admin = s.setup_admin().await?;
    let (bob_id, bob) = s.add_user(&admin, "bob").await?;
    let ice = s.http("GET", "/api/ice", None, Some(&bob)).await?;
    let relay = &ice.body["iceServers"][1];
    let (user, pass) = (relay["username"].as_str().unwrap_or_default(), relay["credential"].as_str().unwrap_or_default());
    assert!(user.ends_with(&format!(":u{bob_id}")), "{user}");
    let server: SocketAddr = ([127, 0, 0, 1], s.turn_port).into();
    let mut c = Client::connect(0, server, user, pass).await?;
    c.allocate().await?;
    let peer: SocketAddr = "93.184.216.34:9".parse()?;
    c.bind(0x4000, peer).await?;
    let r = s.http("PATCH", &format!("/api/users/{bob_id}"), Some(serde_json::json!({"disabled": true})), Some(&admin)).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let why = refused_soon(&mut c, 0x4001, peer).await.context("the allocation outlived the account")?;
    assert!(why.contains("401"), "refused as revoked credentials: {why}");
    // the credentials it was handed make no new allocation (still valid
    // for an hour otherwise), and the account gets no new ones
    let mut again = Client::connect(1, server, user, pass).await?;
    let refused = again.allocate().await.err().context("a disabled account allocated again")?.to_string();
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(s.http("GET", "/api/ice", None, Some(&bob)).await?.status, 401);
    Ok(())
}

/// A guest from the internet gets TURN credentials of its own (per session,
/// like a member's), and the relay keeps it off the company's LAN: private,
/// loopback, link-local and metadata peers are refused (403) whatever the
/// spelling; a public peer is allowed. When its link is revoked with its
/// guests, its allocation ends and the credentials make no new one.
#[tokio::test]
async fn a_guest_relays_to_the_internet_never_to_the_lan_and_not_after_its_link_is_revoked() -> R {
    let s = Server::start().await?;
    let admin = s.setup_admin().await?;
    let room = s.create_room(&admin, "Support", "invite", &[]).await?;
    let made = s.http("POST", &format!("/api/rooms/{room}/guest-links"), Some(serde_json::json!({})), Some(&admin)).await?;
    let token = made.body["token"].as_str().context("token")?.to_string();
    let link = made.body["link"]["id"].as_i64().context("link")?;
    let guest = s.http("POST", &format!("/api/guest/{token}"), Some(serde_json::json!({"display_name": "Claire"})), None).await?.session()?;
    let ice = s.http("GET", "/api/ice", None, Some(&guest)).await?;
    assert_eq!(ice.status, 200, "{}", ice.text);
    let relay = &ice.body["iceServers"][1];
    let (user, pass) = (relay["username"].as_str().unwrap_or_default(), relay["credential"].as_str().unwrap_or_default());
    assert!(user.ends_with(&format!(":u{}", guest.user)), "its own credentials: {user}");
    let server: SocketAddr = ([127, 0, 0, 1], s.turn_port).into();
    let mut c = Client::connect(0, server, user, pass).await?;
    c.allocate().await?;
    let mut channel = 0x4000;
    for peer in ["192.168.1.10:445", "10.0.0.2:22", "172.16.5.5:80", "127.0.0.1:8443", "169.254.169.254:80", "100.64.0.1:80", "0.0.0.0:9"] {
        let err = c.bind(channel, peer.parse()?).await.expect_err(peer).to_string();
        assert!(err.contains("403"), "{peer}: {err}");
        channel += 1;
    }
    let public: SocketAddr = "93.184.216.34:9".parse()?;
    c.bind(channel, public).await?;
    let r = s.http("DELETE", &format!("/api/rooms/{room}/guest-links/{link}?remove_guests=true"), None, Some(&admin)).await?;
    assert_eq!(r.status, 204);
    let why = refused_soon(&mut c, channel + 1, public).await.context("the guest's allocation outlived its link")?;
    assert!(why.contains("401"), "{why}");
    let mut again = Client::connect(1, server, user, pass).await?;
    assert!(again.allocate().await.is_err(), "no new allocation with a revoked guest's credentials");
    Ok(())
}
