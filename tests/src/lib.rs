//! Harness for end-to-end tests: starts a real `parvis serve` process on
//! loopback ports, trusts the local CA it creates (so TLS is verified, not
//! skipped), and speaks HTTP/1.1 and WebSocket to it.

// A test harness waits on the real clock (process start-up, timeouts).
#![allow(clippy::disallowed_methods)]

pub mod contract;
pub mod pebble;
pub mod turn_client;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The `parvis` binary under test: `$PARVIS_BIN`, else the release build.
pub fn parvis_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PARVIS_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let p = root.join("target/x86_64-unknown-linux-gnu/release/parvis");
    assert!(p.exists(), "{} is missing: run `cargo build --release` first (scripts/test does)", p.display());
    p
}

/// A free loopback port (TCP and UDP both bindable), see [`free_ports`].
/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports, each bindable for TCP and UDP.
///
/// They come from below the kernel's ephemeral range (32768 and up), so an
/// outgoing connection of another test cannot take one between the check
/// and the server's bind (CI once lost a run to exactly that), and from a
/// process-wide counter, so two tests running in parallel never get the
/// same port. The start depends on the process id, so test binaries run one
/// after the other do not reuse the ports a previous one left in TIME_WAIT.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000; // up to 32000
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7919) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    std::array::from_fn(|_| {
        for _ in 0..SPAN {
            let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
            let free = TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
            if free {
                return port;
            }
        }
        panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
    })
}

/// A running `parvis serve`.
pub struct Server {
    pub data: PathBuf,
    pub https_port: u16,
    pub http_port: u16,
    /// The download origin's port.
    pub downloads_port: u16,
    pub turn_port: u16,
    pub turn_tls_port: u16,
    /// Extra arguments for `parvis serve`.
    pub extra: Vec<String>,
    /// Run as the box does: unprivileged (uid 65534, after binding the
    /// ports as root) in a mount namespace where no temporary directory is
    /// writable and the working directory is `/`. Needs root.
    pub boxlike: bool,
    /// Open-file limit to start the server with (soft and hard).
    pub nofile: Option<u64>,
    /// What the server says it answers (fetched on first use).
    contract: std::sync::OnceLock<Arc<contract::Contract>>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data folder.
    pub async fn start() -> Result<Server> {
        Server::start_with(&[]).await
    }

    /// Starts a server with extra `parvis serve` arguments.
    pub async fn start_with(extra: &[&str]) -> Result<Server> {
        let mut s = Server::unstarted(extra)?;
        s.spawn().await?;
        Ok(s)
    }

    /// Picks ports and creates the (empty, 0700) data folder without
    /// starting: the caller may write `parvis.toml` first, then [`Server::launch`].
    pub fn unstarted(extra: &[&str]) -> Result<Server> {
        use std::os::unix::fs::DirBuilderExt;
        let tmp = tempfile::tempdir()?;
        std::fs::DirBuilder::new().mode(0o700).create(tmp.path().join("data"))?;
        let [https_port, http_port, turn_port, turn_tls_port, downloads_port] = free_ports();
        Ok(Server {
            data: tmp.path().join("data"),
            https_port,
            http_port,
            downloads_port,
            turn_port,
            turn_tls_port,
            extra: extra.iter().map(|x| x.to_string()).collect(),
            boxlike: false,
            nofile: None,
            contract: std::sync::OnceLock::new(),
            child: None,
            _tmp: Some(tmp),
        })
    }

    /// Starts a server made by [`Server::unstarted`].
    pub async fn launch(&mut self) -> Result<()> {
        self.spawn().await
    }

    /// A server started by someone else (benchmarks): no process to manage.
    pub fn attach(data: PathBuf, https_port: u16) -> Server {
        Server {
            data,
            https_port,
            http_port: 0,
            downloads_port: 0,
            turn_port: 0,
            turn_tls_port: 0,
            extra: vec![],
            boxlike: false,
            nofile: None,
            contract: std::sync::OnceLock::new(),
            child: None,
            _tmp: None,
        }
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.with_extension("log"))?;
        let mut cmd = self.command()?;
        let child = cmd
            // multicast DNS would leave the machine: off in tests
            .args(["serve", "--log", "warn", "--no-mdns"])
            .arg("--https")
            .arg(format!("127.0.0.1:{}", self.https_port))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--downloads")
            .arg(format!("127.0.0.1:{}", self.downloads_port))
            .arg("--turn")
            .arg(format!("127.0.0.1:{}", self.turn_port))
            .arg("--turn-tls")
            .arg(format!("127.0.0.1:{}", self.turn_tls_port))
            .args(&self.extra)
            .args(if self.boxlike { vec![] } else { vec!["--data".into(), self.data.clone().into_os_string()] })
            // the log (tracing writes to standard output) and any panic
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn parvis")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.https_port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("parvis did not start listening; log: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `parvis` (wrapped for [`Server::boxlike`] and [`Server::nofile`]);
    /// the caller adds the command and its arguments.
    fn command(&self) -> Result<Command> {
        let bin = parvis_bin();
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--");
                c
            }
            None => Command::new(if self.boxlike { "unshare" } else { bin.to_str().context("binary path")? }),
        };
        if self.nofile.is_some() && !self.boxlike {
            cmd.arg(&bin);
        }
        if self.boxlike {
            // the data folder and the binary's folder are bound where the
            // hidden /tmp cannot hide them (a checkout under /tmp)
            let inside = format!("/run/parvis-e2e-{}", self.https_port);
            let bin_dir = format!("/run/parvis-e2e-bin-{}", self.https_port);
            let script = format!(
                "mkdir -p {inside} {bin_dir} && mount --bind \"$1\" {inside} && mount --bind \"$(dirname \"$0\")\" {bin_dir} \
                 && mount -t tmpfs -o mode=755 none /tmp && mount -t tmpfs -o mode=755 none /var/tmp && cd / && shift \
                 && exec {bin_dir}/\"$(basename \"$0\")\" \"$@\" --data {inside} --run-as 65534:65534"
            );
            if self.nofile.is_some() {
                cmd.arg("unshare");
            }
            cmd.args(["-m", "sh", "-c", &script]).arg(&bin).arg(&self.data);
            std::process::Command::new("chown").arg("-R").arg("65534:65534").arg(&self.data).status()?;
        }
        Ok(cmd)
    }

    /// The server's process id (for /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data folder and ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn().await
    }

    pub fn setup_code(&self) -> String {
        std::fs::read_to_string(self.data.join("setup-code")).unwrap().trim().to_string()
    }

    /// TLS client configuration that trusts only this server's local CA.
    pub fn tls(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let pem = std::fs::read(self.data.join("tls/ca.pem")).expect("ca.pem");
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile_certs(&pem) {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(config)
    }

    /// The server's API description, fetched once.
    pub async fn contract(&self) -> Result<Arc<contract::Contract>> {
        if let Some(c) = self.contract.get() {
            return Ok(c.clone());
        }
        let doc = self.http_raw("GET", "/api/openapi.json", None, None).await?;
        anyhow::ensure!(doc.status == 200, "/api/openapi.json: {}", doc.status);
        let c = Arc::new(contract::Contract::new(doc.body)?);
        Ok(self.contract.get_or_init(|| c).clone())
    }

    /// One HTTPS request (HTTP/1.1, `Connection: close`); the answer is
    /// checked against the server's API description.
    pub async fn http(&self, method: &str, path: &str, body: Option<Value>, session: Option<&Session>) -> Result<Response> {
        let res = self.http_raw(method, path, body, session).await?;
        self.contract().await?.check_response(method, path, res.status, res.header("content-type"), &res.text)?;
        Ok(res)
    }

    /// [`Server::http`] with extra headers.
    pub async fn http_with(&self, method: &str, path: &str, body: Option<Value>, session: Option<&Session>, headers: &[(&str, &str)]) -> Result<Response> {
        let res = self.request(method, path, body, session, headers).await?;
        self.contract().await?.check_response(method, path, res.status, res.header("content-type"), &res.text)?;
        Ok(res)
    }

    /// A request with a raw body and its own headers (Content-Type among
    /// them), checked against the description like [`Server::http`].
    pub async fn http_bytes(&self, method: &str, path: &str, body: &[u8], session: Option<&Session>, headers: &[(&str, &str)]) -> Result<Response> {
        let mut tls = self.connect(self.https_port).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n", self.https_port, body.len());
        if let Some(s) = session {
            req.push_str(&format!("Cookie: parvis_session={}\r\nX-CSRF-Token: {}\r\n", s.cookie, s.csrf));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).await?;
        tls.write_all(body).await?;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let res = Response::parse(&raw)?;
        self.contract().await?.check_response(method, path, res.status, res.header("content-type"), &res.text)?;
        Ok(res)
    }

    /// A TLS connection (HTTP/1.1) to one of the server's ports on 127.0.0.1.
    pub async fn connect(&self, port: u16) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let connector = TlsConnector::from(self.tls(&[b"http/1.1"]));
        Ok(connector.connect(ServerName::try_from("localhost")?, tcp).await?)
    }

    /// [`Server::http`] without the check.
    pub async fn http_raw(&self, method: &str, path: &str, body: Option<Value>, session: Option<&Session>) -> Result<Response> {
        self.request(method, path, body, session, &[]).await
    }

    async fn request(&self, method: &str, path: &str, body: Option<Value>, session: Option<&Session>, extra: &[(&str, &str)]) -> Result<Response> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.https_port)).await?;
        let connector = TlsConnector::from(self.tls(&[b"http/1.1"]));
        let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.https_port,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(s) = session {
            req.push_str(&format!("Cookie: parvis_session={}\r\nX-CSRF-Token: {}\r\n", s.cookie, s.csrf));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        tls.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await; // peers may skip close_notify
        Response::parse(&raw)
    }

    /// Creates the admin through the first-run API and logs in.
    pub async fn setup_admin(&self) -> Result<Session> {
        let res = self
            .http(
                "POST",
                "/api/setup",
                Some(json!({"code": self.setup_code(), "company": "Acme", "username": "alice",
                            "display_name": "Alice", "password": "password-1"})),
                None,
            )
            .await?;
        res.session()
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Session> {
        self.http("POST", "/api/login", Some(json!({"username": user, "password": password})), None).await?.session()
    }

    /// Admin creates `name` (password `password-2`); returns id and session.
    pub async fn add_user(&self, admin: &Session, name: &str) -> Result<(i64, Session)> {
        let res = self
            .http(
                "POST",
                "/api/users",
                Some(json!({"username": name, "display_name": name, "password": "password-2"})),
                Some(admin),
            )
            .await?;
        anyhow::ensure!(res.status == 201, "create user: {} {}", res.status, res.body);
        let id = res.body["id"].as_i64().unwrap();
        Ok((id, self.login(name, "password-2").await?))
    }

    /// Creates a room; returns its id.
    pub async fn create_room(&self, s: &Session, name: &str, visibility: &str, members: &[i64]) -> Result<i64> {
        let res = self
            .http("POST", "/api/rooms", Some(json!({"name": name, "visibility": visibility, "members": members})), Some(s))
            .await?;
        anyhow::ensure!(res.status == 201, "create room: {} {}", res.status, res.body);
        Ok(res.body["id"].as_i64().unwrap())
    }

    /// Opens the chat WebSocket as `s`, with the given Origin.
    pub async fn ws_with_origin(&self, s: &Session, origin: &str) -> Result<Ws> {
        let url = format!("wss://localhost:{}/api/ws", self.https_port);
        let mut req = url.into_client_request()?;
        let h = req.headers_mut();
        h.insert("cookie", HeaderValue::from_str(&format!("parvis_session={}", s.cookie))?);
        h.insert("origin", HeaderValue::from_str(origin)?);
        let connector = Connector::Rustls(self.tls(&[b"http/1.1"]));
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await?;
        let mut ws = Ws { stream, contract: Some(self.contract().await?) };
        let welcome = ws.recv().await?;
        anyhow::ensure!(welcome["t"] == "welcome", "expected welcome, got {welcome}");
        Ok(ws)
    }

    /// Opens the chat WebSocket and syncs with `since` (room → seq).
    pub async fn ws(&self, s: &Session, since: Value) -> Result<Ws> {
        let mut ws = self.ws_with_origin(s, &format!("https://localhost:{}", self.https_port)).await?;
        ws.send(json!({"t": "sync", "since": since})).await?;
        Ok(ws)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap()).collect()
}

/// A logged-in client: session cookie and CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub user: i64,
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Response {
    pub fn parse(raw: &[u8]) -> Result<Response> {
        let text = String::from_utf8_lossy(raw);
        let (head, rest) = text.split_once("\r\n\r\n").context("no header end")?;
        let mut lines = head.lines();
        let status: u16 = lines.next().context("no status")?.split(' ').nth(1).context("status")?.parse()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body_text = if chunked { dechunk(rest) } else { rest.to_string() };
        let body = serde_json::from_str(&body_text).unwrap_or(Value::Null);
        Ok(Response { status, headers, body, text: body_text })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The session a login-like response started.
    pub fn session(&self) -> Result<Session> {
        anyhow::ensure!(self.status == 200, "login failed: {} {}", self.status, self.text);
        let cookie = self.header("set-cookie").context("no cookie")?;
        let token = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        Ok(Session {
            cookie: token,
            csrf: self.body["csrf"].as_str().context("csrf")?.to_string(),
            user: self.body["user"]["id"].as_i64().context("user id")?,
        })
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A chat WebSocket client; every frame it receives is checked against
/// the server's `ServerFrame` schema.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    pub contract: Option<Arc<contract::Contract>>,
}

impl Ws {
    pub async fn send(&mut self, v: Value) -> Result<()> {
        self.stream.send(Message::Text(v.to_string().into())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, m: Message) -> Result<()> {
        self.stream.send(m).await?;
        Ok(())
    }

    /// The next JSON frame (pings skipped), within 10 s.
    pub async fn recv(&mut self) -> Result<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .context("no frame within 10 s")?
                .context("connection closed")??;
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if let Some(c) = &self.contract {
                        c.check_frame(&v)?;
                    }
                    return Ok(v);
                }
                Message::Close(c) => bail!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Reads frames until one matches; returns it.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        loop {
            let f = self.recv().await?;
            if pred(&f) {
                return Ok(f);
            }
        }
    }

    /// Reads frames until `synced`, returning the frames before it.
    pub async fn until_synced(&mut self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let f = self.recv().await?;
            if f["t"] == "synced" {
                return Ok(out);
            }
            out.push(f);
        }
    }

    /// Whether a frame arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.recv()).await {
            Ok(Ok(v)) => Some(v),
            _ => None,
        }
    }
}
