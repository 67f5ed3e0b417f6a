//! Pebble (Debian `pebble`), a real ACME server, on loopback for tests,
//! with `pebble-challtestsrv` as its DNS server so nothing leaves the
//! machine. Pebble's own HTTPS listener gets a throwaway CA made here; its
//! issuing root is new on every start and fetched from the management port.

// A test harness waits on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::free_port;

pub struct Pebble {
    pub acme_port: u16,
    pub mgmt_port: u16,
    pub dns_port: u16,
    pub challtest_port: u16,
    /// PEM of the CA that signed Pebble's own HTTPS listener.
    pub listener_ca: PathBuf,
    /// challtestsrv, then Pebble.
    children: Vec<Child>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_tcp(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn roots(pem: &[u8]) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        store.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

impl Pebble {
    /// Starts challtestsrv and Pebble. HTTP-01 is validated on 127.0.0.1:`http_port`,
    /// TLS-ALPN-01 on 127.0.0.1:`tls_port`; every name resolves to 127.0.0.1
    /// unless changed; certificates last `validity_secs`.
    pub async fn start(http_port: u16, tls_port: u16, validity_secs: u64) -> Result<Pebble> {
        let dir = tempfile::tempdir()?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "throwaway CA for Pebble's listener");
        let ca_cert = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .signed_by(&key, &ca_cert)?;
        let (ca_path, cert_path, key_path) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&ca_path, ca_cert.pem())?;
        std::fs::write(&cert_path, leaf.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;

        let (acme_port, mgmt_port, dns_port, challtest_port) = (free_port(), free_port(), free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": cert_path, "privateKey": key_path,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string())?;
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).map(Stdio::from);
        let mut children = Vec::new();
        children.push(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{challtest_port}"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdout(log("challtestsrv.log")?)
                .stderr(log("challtestsrv.err")?)
                .spawn()
                .context("pebble-challtestsrv (apt-get install pebble)")?,
        );
        let mut p = Pebble { acme_port, mgmt_port, dns_port, challtest_port, listener_ca: ca_path, children, config: config_path, _dir: dir };
        p.children.push(p.spawn_ca()?);
        wait_tcp(challtest_port).await?;
        wait_tcp(acme_port).await?;
        wait_tcp(mgmt_port).await?;
        Ok(p)
    }

    fn spawn_ca(&self) -> Result<Child> {
        let log = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(self._dir.path().join(name)).map(Stdio::from)
        };
        Command::new("pebble")
            .arg("-config")
            .arg(&self.config)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // every order validates for real (renewal and failure tests)
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log")?)
            .stderr(log("pebble.err")?)
            .spawn()
            .context("pebble (apt-get install pebble)")
    }

    /// Stops the ACME server (its DNS stays): the CA is down.
    pub fn stop_ca(&mut self) {
        if let Some(mut c) = self.children.pop() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the ACME server again, with nothing of before: no accounts, a
    /// new root (a private CA that was reset).
    pub async fn start_ca(&mut self) -> Result<()> {
        self.stop_ca();
        let child = self.spawn_ca()?;
        self.children.push(child);
        wait_tcp(self.acme_port).await?;
        wait_tcp(self.mgmt_port).await
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// Pebble's log, for failure messages.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self._dir.path().join(n)).unwrap_or_default();
        read("pebble.log") + &read("pebble.err")
    }

    /// GET on the management port (HTTPS with the throwaway CA).
    async fn mgmt_get(&self, path: &str) -> Result<String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.mgmt_port)).await?;
        let tls = TlsConnector::from(roots(&std::fs::read(&self.listener_ca)?));
        let mut s = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{path}: {head}");
        }
        Ok(body.to_string())
    }

    /// PEM of the root that signs this run's certificates.
    pub async fn root_pem(&self) -> Result<String> {
        self.mgmt_get("/roots/0").await
    }

    /// POST to challtestsrv's management API (e.g. `/set-txt`, `/add-a`).
    pub async fn challtest(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.challtest_port)).await?;
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw);
        if !text.starts_with("HTTP/1.1 200") {
            bail!("challtestsrv {path}: {text}");
        }
        Ok(())
    }
}

/// The certificate chain 127.0.0.1:`port` presents for `server_name`,
/// verified against `roots_pem` (the handshake fails otherwise).
pub async fn served_chain(port: u16, server_name: &str, roots_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = TlsConnector::from(roots(roots_pem.as_bytes()));
    let s = tls.connect(ServerName::try_from(server_name.to_string())?, tcp).await?;
    Ok(s.get_ref().1.peer_certificates().context("no certificate")?.to_vec())
}
