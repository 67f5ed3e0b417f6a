//! `parvis serve`: builds the services, binds the listeners, runs until
//! shutdown. Everything a running server is made of is wired here.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::certs::{acme, local as tls};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::store::{self, Db};
use crate::system::{mdns, net, sys, update};
use crate::{auth, chat, server, turn, web};

/// Opens (creating) the data folder, readable by its owner only.
pub fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data)
        .with_context(|| format!("data: cannot create {}", config.data.display()))
}

pub fn open_db(config: &Config) -> anyhow::Result<Db> {
    prepare_data_dir(config)?;
    let path = config.data.join("parvis.db");
    Db::open(&path).with_context(|| format!("cannot open the database {}", path.display()))
}

/// The setup code while the box has no admin: kept in `<data>/setup-code`
/// so it stays the same across restarts until setup is done.
fn setup_code(config: &Config) -> anyhow::Result<String> {
    let path = config.data.join("setup-code");
    if let Ok(code) = std::fs::read_to_string(&path) {
        let code = code.trim().to_string();
        if code.len() == 9 {
            return Ok(code);
        }
    }
    let code = auth::new_setup_code(&mut rand::rngs::OsRng);
    tls::write_file(&path, &format!("{code}\n"), true).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(code)
}

/// Why `parvis serve` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (signal).
    Stopped,
    /// An update was installed, or an admin restarts the box: it reboots
    /// (exit code 75, which `firmware/init` turns into a reboot).
    Reboot,
    /// The admin chose a disk to install the live system on (exit code 76:
    /// `firmware/init` installs, as root, then turns the box off).
    Install,
}

/// Runs `parvis serve` until `shutdown` completes (or an update asks for a
/// reboot).
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<Exit> {
    // The privileged ports are bound first (80 and 443 on the box), then,
    // with `run_as`, nothing more runs as root: every file is created by the
    // user Parvis runs as. They listen only once everything is ready, so an
    // open port means a working server.
    let https = net::bind_tcp(config.https).with_context(|| format!("https: cannot listen on {}", config.https))?;
    let http = net::bind_tcp(config.http).with_context(|| format!("http: cannot listen on {}", config.http))?;
    if let Some(ids) = &config.run_as {
        sys::drop_privileges(ids)?;
    }
    let db = open_db(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let needs_setup = !db.read(store::users::admin_exists).await?;
    let code = if needs_setup { Some(setup_code(&config)?) } else { None };

    let hostname = net::hostname();
    let addrs = net::local_addresses();
    let names = tls::names_for(&config.name, hostname.as_deref(), &addrs);
    let now = time::OffsetDateTime::from_unix_timestamp(clock.now_ms() / 1000).context("clock")?;
    let tls_dir = config.data.join("tls");
    let tls_state = tls::ensure(&tls_dir, &config.name, &names, now).context("tls")?;
    let resolver = Arc::new(tls::CertResolver::new(tls_state.leaf.clone()));
    let tls_config = tls::server_config(resolver.clone())?;
    let challenges = Arc::new(acme::Challenges::default());
    let (tls_settings, tls_rx) = tokio::sync::watch::channel(config.tls.clone());
    let box_name = Arc::new(std::sync::RwLock::new(config.name.clone()));
    let certs = acme::Manager::new(tls_dir.clone(), tls_rx, resolver.clone(), challenges.clone(), clock.clone(), {
        let (dir, box_name, clock) = (tls_dir.clone(), box_name.clone(), clock.clone());
        Box::new(move || {
            // the local certificate follows the box's names and addresses
            let name = box_name.read().expect("poisoned").clone();
            let names = tls::names_for(&name, net::hostname().as_deref(), &net::local_addresses());
            let now = time::OffsetDateTime::from_unix_timestamp(clock.now_ms() / 1000).ok()?;
            tls::ensure(&dir, &name, &names, now).map_err(|e| tracing::warn!("local certificate: {e}")).ok().map(|t| t.leaf)
        })
    });
    let (cert_status, cert_renew) = (certs.status.clone(), certs.renew.clone());

    let https_port = https.local_addr()?.as_socket().context("https address")?.port();

    let stop = CancellationToken::new();
    let fd_limit = sys::raise_fd_limit();
    let budget = sys::FdBudget::of(fd_limit);
    tracing::info!(fd_limit, ?budget, "file descriptors");
    let web_gate = netstack::limits::ConnGate::new(budget.web, config.limits.web_per_address);
    let turn_tls = tls::turn_server_config(resolver.clone())?;
    let turn = turn::start(&config, Some(turn_tls), budget, stop.clone()).await.context(
        "STUN/TURN could not start: pick free addresses with --turn / --turn-tls, or set turn.enabled = false",
    )?;

    let chat = chat::Chat::new(db.clone(), clock, config.chat.clone());
    let restored = chat.restore_calls().await.context("reading open calls")?;
    if restored > 0 {
        tracing::info!(calls = restored, "calls left open by the last run wait for their participants to rejoin");
    }
    let sweeper = tokio::spawn(chat.clone().sweep_calls());
    let (company, language) = db_settings(&chat).await?;
    let settings = web::setup::Settings::from_config(&config, company, language);
    let own_origins = web::setup::origins(&names, https_port);
    let mdns = if config.mdns { mdns::Announcer::start(&config.name, https_port) } else { None };
    let end = Arc::new(tokio::sync::Notify::new());
    let state = Arc::new(web::AppState {
        chat,
        config: config.clone(),
        setup_code: Mutex::new(code.clone()),
        login_limiter: auth::RateLimiter::new(auth::LOGIN_WINDOW_MS),
        setup_limiter: auth::RateLimiter::new(10 * 60 * 1000),
        hasher: auth::Hasher::new(config.limits.hashers(), config.limits.password_queue),
        ca_pem: tls_state.ca_pem.clone(),
        turn: turn.clone(),
        turn_secret: if config.turn.enabled { turn::secret(&config.data)? } else { Vec::new() },
        cert_status: cert_status.clone(),
        cert_renew: cert_renew.clone(),
        tls_settings,
        settings: Mutex::new(settings),
        config_file: config.file_to_save(),
        box_name,
        mdns,
        ca_fingerprint: tls_state.ca_fingerprint.clone(),
        own_origins: std::sync::RwLock::new(own_origins),
        end: end.clone(),
        end_as: Mutex::new(Exit::Reboot),
    });
    // the hash unknown users are checked against, made now rather than by
    // the first login
    tokio::task::spawn_blocking(auth::dummy_hash).await.context("dummy hash")?;
    let ending = state.clone();
    let app = web::router(state);

    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    println!("Parvis {} is running.", env!("CARGO_PKG_VERSION"));
    println!("  Open https://{}.local{port}/", config.name);
    for a in &addrs {
        let host = if a.is_ipv6() { format!("[{a}]") } else { a.to_string() };
        println!("    or https://{host}{port}/");
    }
    println!("  Local CA fingerprint (SHA-256): {}", tls_state.ca_fingerprint);
    if let Some(t) = &turn {
        println!("  STUN/TURN: udp+tcp {:?}, tls {:?}", t.udp, t.tls);
    }
    if let Some(code) = &code {
        println!("  First start: setup code {code} (also in {})", config.data.join("setup-code").display());
    }
    tracing::info!(https = %config.https, http = %config.http, data = %config.data.display(), "listening");

    let (https, http) = (net::listen(https)?, net::listen(http)?);
    let pid_file = config.data.join("parvis.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).context("pid file")?;
    let servers = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::join!(
                server::serve_https(https, tls_config, app, turn.map(|t| t.streams), web_gate.clone(), stop.clone()),
                server::serve_http(http, https_port, tls_state.ca_pem.clone(), challenges, web_gate, stop.clone()),
                certs.run(stop.clone()),
                renew_on_sighup(cert_renew, stop),
            );
        }
    });
    // healthy: the copy of the database kept for going back to the previous
    // version is no longer wanted, and the boot entry this system came from
    // is good (on the box)
    db.forget_rollback_copy();
    match update::bless(&update::BoxPaths::default()) {
        Ok(Some(entry)) => tracing::info!("boot entry blessed: {entry}"),
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot bless the boot entry: {e}"),
    }
    let exit = tokio::select! {
        _ = shutdown => Exit::Stopped,
        _ = end.notified() => *ending.end_as.lock().expect("poisoned"),
    };
    tracing::info!(?exit, "shutting down");
    stop.cancel();
    let _ = servers.await;
    sweeper.abort();
    if let Err(e) = db.checkpoint() {
        tracing::warn!("database checkpoint at shutdown: {e}");
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(exit)
}

/// Company name and default language as stored by setup / Settings.
async fn db_settings(chat: &chat::Chat) -> anyhow::Result<(String, String)> {
    Ok(chat
        .db
        .read(|c| {
            Ok((
                store::get_setting(c, "company")?.unwrap_or_default(),
                store::get_setting(c, "language")?.unwrap_or_else(|| "fr".into()),
            ))
        })
        .await?)
}

/// `parvis cert renew` sends SIGHUP: renew the certificate now.
async fn renew_on_sighup(renew: Arc<tokio::sync::Notify>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                tracing::info!("SIGHUP: renewing the certificate now");
                renew.notify_one();
            }
            _ = stop.cancelled() => return,
        }
    }
}
