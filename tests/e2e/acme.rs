//! Certificates from a real ACME server: Pebble (with pebble-challtestsrv as
//! its DNS) against a real `parvis serve`, every challenge answered by
//! Parvis itself; hot reload, renewal, failure with the alert, and the
//! `parvis cert` commands.

// Tests wait on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parvis_e2e::pebble::{Pebble, served_chain};
use parvis_e2e::{Server, parvis_bin};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type R = anyhow::Result<()>;

const DOMAIN: &str = "box.test";

/// A server in ACME mode against `pebble` with `challenge`, started.
async fn acme_server(challenge: &str, validity_secs: u64) -> anyhow::Result<(Server, Pebble)> {
    let mut s = Server::unstarted(&[])?;
    let pebble = Pebble::start(s.http_port, s.https_port, validity_secs).await?;
    let toml = format!(
        "[tls]\nmode = \"acme\"\nacme_directory = \"{}\"\nacme_root = \"{}\"\nacme_domains = [\"{DOMAIN}\"]\n\
         acme_challenge = \"{challenge}\"\nacme_email = \"it@box.test\"\nacme_dns_resolver = \"127.0.0.1:{}\"\n",
        pebble.directory(),
        pebble.listener_ca.display(),
        pebble.dns_port
    );
    std::fs::write(s.data.join("parvis.toml"), toml)?;
    s.launch().await?;
    Ok((s, pebble))
}

fn status(s: &Server) -> Value {
    std::fs::read_to_string(s.data.join("tls/status.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
}

/// Waits until the status satisfies `ok` (60 s at most).
async fn wait_status(s: &Server, p: &Pebble, what: &str, ok: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(s);
        if ok(&st) {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; status {st:#}\nparvis log:\n{}\npebble log:\n{}", s.log(), p.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn state_is(v: &Value, state: &str) -> bool {
    v["state"] == state
}

/// The served certificate for DOMAIN chains to this Pebble run's root; the
/// local names still get the local CA's certificate. Returns the leaf.
async fn check_served(s: &Server, p: &Pebble) -> anyhow::Result<Vec<u8>> {
    let root = p.root_pem().await?;
    let chain = served_chain(s.https_port, DOMAIN, &root).await.context("the ACME certificate does not verify")?;
    let local_ca = std::fs::read_to_string(s.data.join("tls/ca.pem"))?;
    served_chain(s.https_port, "localhost", &local_ca).await.context("localhost lost the local certificate")?;
    assert!(served_chain(s.https_port, DOMAIN, &local_ca).await.is_err(), "the domain must not get the local cert");
    Ok(chain[0].to_vec())
}

#[tokio::test]
async fn http_01_issuance_is_answered_by_parvis_and_served_without_restart() -> R {
    let (s, p) = acme_server("http-01", 3600).await?;
    let st = wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    assert!(st["alert"].is_null());
    assert!(st["issuer"].as_str().unwrap_or("").to_lowercase().contains("pebble"), "{st}");
    let leaf1 = check_served(&s, &p).await?;
    // the web keeps working on the same port
    assert_eq!(s.http("GET", "/api/status", None, None).await?.status, 200);
    // TURN over TLS (its own port) presents the same certificate for the domain
    let turn_leaf = served_chain(s.turn_tls_port, DOMAIN, &p.root_pem().await?).await?;
    assert_eq!(turn_leaf[0].to_vec(), leaf1);

    // `parvis cert status` tells what is served; `parvis cert renew` renews now
    let out = std::process::Command::new(parvis_bin()).args(["cert", "status", "--data"]).arg(&s.data).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("valid") && text.contains(DOMAIN), "{text}");
    let before = st["not_after"].clone();
    let out = std::process::Command::new(parvis_bin()).args(["cert", "renew", "--data"]).arg(&s.data).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_status(&s, &p, "a renewed certificate", |v| state_is(v, "valid") && v["not_after"] != before).await?;
    let leaf2 = check_served(&s, &p).await?;
    assert_ne!(leaf1, leaf2, "a new certificate is served");
    Ok(())
}

#[tokio::test]
async fn tls_alpn_01_issuance_is_answered_on_the_https_port() -> R {
    let (s, p) = acme_server("tls-alpn-01", 3600).await?;
    wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    check_served(&s, &p).await?;
    Ok(())
}

#[tokio::test]
async fn dns_01_shows_the_txt_record_and_waits_until_dns_has_it() -> R {
    let (s, p) = acme_server("dns-01", 3600).await?;
    let st = wait_status(&s, &p, "waiting for DNS", |v| state_is(v, "waiting_dns")).await?;
    let record = &st["dns_records"][0];
    assert_eq!(record["name"], format!("_acme-challenge.{DOMAIN}"));
    assert!(st["message"].as_str().unwrap().contains("create the DNS record"), "{st}");
    // nothing happens until the record exists
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(state_is(&status(&s), "waiting_dns"));
    p.challtest("/set-txt", json!({"host": format!("{}.", record["name"].as_str().unwrap()), "value": record["value"]})).await?;
    let st = wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    assert!(st["dns_records"].as_array().unwrap().is_empty());
    check_served(&s, &p).await?;
    Ok(())
}

#[tokio::test]
async fn renewal_at_two_thirds_keeps_connections_and_a_failed_one_keeps_the_old_certificate_with_an_alert() -> R {
    // certificates of 30 s: renewal is due 20 s after issuance
    let (s, p) = acme_server("http-01", 30).await?;
    let first = wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    let nb = first["not_before"].as_i64().unwrap();
    assert_eq!(first["next_renewal"].as_i64().unwrap(), nb + (first["not_after"].as_i64().unwrap() - nb) * 2 / 3);
    let leaf1 = check_served(&s, &p).await?;

    // a connection opened on the first certificate survives the renewal
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.https_port)).await?;
    let connector = tokio_rustls::TlsConnector::from(s.tls(&[b"http/1.1"]));
    let mut open = connector.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?;

    let renewed = wait_status(&s, &p, "the renewal", |v| state_is(v, "valid") && v["not_after"] != first["not_after"]).await?;
    let leaf2 = check_served(&s, &p).await?;
    assert_ne!(leaf1, leaf2);
    open.write_all(format!("GET /api/status HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n", s.https_port).as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = open.read_to_end(&mut raw).await;
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"), "the open connection was dropped");

    // the domain now points elsewhere: the next renewal fails
    p.challtest("/add-a", json!({"host": format!("{DOMAIN}."), "addresses": ["127.0.0.2"]})).await?;
    let failed = wait_status(&s, &p, "a failed renewal", |v| state_is(v, "failed")).await?;
    let alert = failed["alert"].as_str().context("an alert")?;
    assert!(alert.contains("renewal failed") && alert.contains("Still serving"), "{alert}");
    let kept = failed["not_after"].as_i64().context("the previous certificate is still reported as served")?;
    assert!(kept >= renewed["not_after"].as_i64().unwrap());
    if kept > chrono_now() + 2 {
        check_served(&s, &p).await.context("the previous certificate is still served")?;
    }
    // once it expires, the domain falls back to the local certificate (which
    // does not name it: browsers show the problem instead of an expired page)
    tokio::time::sleep(Duration::from_secs((kept - chrono_now() + 1).max(0) as u64)).await;
    let root = p.root_pem().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_chain(s.https_port, DOMAIN, &root).await.is_ok() {
        assert!(Instant::now() < deadline, "an expired certificate is still served: {:#}", status(&s));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(status(&s)["not_after"].is_null());
    // the alert stays until a renewal succeeds, and says what is true now
    let st = wait_status(&s, &p, "the alert of an expired certificate", |v| {
        v["alert"].as_str().is_some_and(|a| a.contains("expired on"))
    })
    .await?;
    assert!(!st["alert"].as_str().unwrap().contains("Still serving"), "{st}");
    Ok(())
}

/// Renews now, as `parvis cert renew` does (SIGHUP to the server).
fn renew(s: &Server) -> anyhow::Result<()> {
    let out = std::process::Command::new(parvis_bin()).args(["cert", "renew", "--data"]).arg(&s.data).output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A private CA that was reset knows no account: Parvis registers again
/// and renews, instead of failing with accountDoesNotExist until someone
/// deletes tls/acme/account.json by hand.
#[tokio::test]
async fn a_ca_that_forgot_the_account_gets_a_new_one_and_the_renewal_succeeds() -> R {
    let (s, mut p) = acme_server("http-01", 3600).await?;
    let first = wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    p.start_ca().await?;
    renew(&s)?;
    wait_status(&s, &p, "a renewal from the reset CA", |v| state_is(v, "valid") && v["not_after"] != first["not_after"]).await?;
    check_served(&s, &p).await.context("the new CA's certificate is served")?;
    assert!(s.log().contains("registering again"), "{}", s.log());
    Ok(())
}

/// When Parvis cannot reach the CA at all, the alert says that (the fix is
/// on the box's side), not "forward port 80" (the CA's side).
#[tokio::test]
async fn an_unreachable_ca_is_reported_as_such() -> R {
    let (s, mut p) = acme_server("http-01", 3600).await?;
    wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    p.stop_ca();
    renew(&s)?;
    let failed = wait_status(&s, &p, "a failed renewal", |v| state_is(v, "failed")).await?;
    let alert = failed["alert"].as_str().context("an alert")?;
    assert!(alert.contains("cannot reach the ACME server") && !alert.contains("forward port"), "{alert}");
    assert!(alert.contains("Still serving"), "{alert}");
    Ok(())
}

/// After a failed renewal while the certificate is still valid, the retry
/// the status promises ("next attempt in 30 s") comes, and clears the alert
/// once it succeeds.
#[tokio::test]
async fn the_retry_promised_after_a_failed_renewal_comes() -> R {
    let (s, p) = acme_server("http-01", 3600).await?;
    let first = wait_status(&s, &p, "valid", |v| state_is(v, "valid")).await?;
    p.challtest("/add-a", json!({"host": format!("{DOMAIN}."), "addresses": ["127.0.0.2"]})).await?;
    renew(&s)?;
    let failed = wait_status(&s, &p, "a failed renewal", |v| state_is(v, "failed")).await?;
    assert!(failed["message"].as_str().unwrap_or("").contains("next attempt in 30 s"), "{failed}");
    // the domain points here again; nobody asks for anything
    p.challtest("/clear-a", json!({"host": format!("{DOMAIN}.")})).await?;
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        let st = status(&s);
        if state_is(&st, "valid") && st["not_after"] != first["not_after"] {
            assert!(st["alert"].is_null(), "{st}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no retry within 50 s: {st:#}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
