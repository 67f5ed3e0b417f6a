//! `parvis serve`: builds the services, binds the listeners, runs until
//! shutdown. Everything a running server is made of is wired here.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::certs::{Certs, acme, local as tls};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::store::{self, Db};
use crate::system::{mdns, net, sys, update};
use crate::settings::SettingsService;
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
    let code = auth::new_setup_code(&mut rand::rng());
    tls::write_file(&path, &format!("{code}\n"), true).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(code)
}

/// How `parvis serve` will end when asked to by the web side (an update
/// was installed, an admin restarts the box or installs the live system).
pub struct Lifecycle {
    end: Arc<tokio::sync::Notify>,
    end_as: Mutex<Exit>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { end: Arc::default(), end_as: Mutex::new(Exit::Reboot) }
    }
}

impl Lifecycle {
    /// Ends `parvis serve` as `exit`, once the reply in hand has gone out.
    pub fn end_soon(&self, exit: Exit) {
        *self.end_as.lock().expect("poisoned") = exit;
        let end = self.end.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            end.notify_one();
        });
    }

    /// How it was asked to end.
    pub fn exit(&self) -> Exit {
        *self.end_as.lock().expect("poisoned")
    }
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
    let downloads =
        net::bind_tcp(config.downloads).with_context(|| format!("downloads: cannot listen on {} (--downloads)", config.downloads))?;
    if let Some(ids) = &config.run_as {
        sys::drop_privileges(ids)?;
    }
    let db = open_db(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let needs_setup = !db.read(store::users::admin_exists).await?;
    let code = if needs_setup { Some(setup_code(&config)?) } else { None };
    let (company, language) = db_settings(&db).await?;
    let settings = SettingsService::new(config.clone(), company, language, db.clone());

    let addrs = net::local_addresses();
    let names = tls::names_for(&config.name, net::hostname().as_deref(), &addrs);
    let now = time::OffsetDateTime::from_unix_timestamp(clock.now_ms() / 1000).context("clock")?;
    let tls_dir = config.data.join("tls");
    let tls_state = tls::ensure(&tls_dir, &config.name, &names, now).context("tls")?;
    let resolver = Arc::new(tls::CertResolver::new(tls_state.leaf.clone()));
    let tls_config = tls::server_config(resolver.clone())?;
    let challenges = Arc::new(acme::Challenges::default());
    let cert_manager = acme::Manager::new(tls_dir.clone(), settings.tls_watch(), resolver.clone(), challenges.clone(), clock.clone(), {
        let (dir, settings, clock) = (tls_dir.clone(), settings.clone(), clock.clone());
        Box::new(move || {
            // the local certificate follows the box's name and addresses
            let name = settings.name();
            let names = tls::names_for(&name, net::hostname().as_deref(), &net::local_addresses());
            let now = time::OffsetDateTime::from_unix_timestamp(clock.now_ms() / 1000).ok()?;
            tls::ensure(&dir, &name, &names, now).map_err(|e| tracing::warn!("local certificate: {e}")).ok().map(|t| t.leaf)
        })
    });
    let certs = Certs {
        ca_pem: tls_state.ca_pem.clone(),
        ca_fingerprint: tls_state.ca_fingerprint.clone(),
        status: cert_manager.status.clone(),
        renew: cert_manager.renew.clone(),
    };
    let cert_renew = certs.renew.clone();

    let https_port = https.local_addr()?.as_socket().context("https address")?.port();
    let downloads_port = downloads.local_addr()?.as_socket().context("downloads address")?.port();
    let files = crate::files::Files::open(&config.data, downloads_port).context("files")?;
    files.recover(&db).await.context("checking the files against the database")?;

    let stop = CancellationToken::new();
    let fd_limit = sys::raise_fd_limit();
    let budget = sys::FdBudget::of(fd_limit);
    tracing::info!(fd_limit, ?budget, "file descriptors");
    let web_gate = netstack::limits::ConnGate::new(budget.web, config.limits.web_per_address);
    let turn_tls = tls::turn_server_config(resolver.clone())?;
    let turn = turn::start(&config, Some(turn_tls), budget, stop.clone()).await.context(
        "STUN/TURN could not start: pick free addresses with --turn / --turn-tls, or set turn.enabled = false",
    )?;
    if let Some(t) = &turn {
        settings.attach_turn(t.clone());
    }

    let chat = chat::Chat::new(db.clone(), clock, config.chat.clone());
    let restored = chat.restore_calls().await.context("reading open calls")?;
    if restored > 0 {
        tracing::info!(calls = restored, "calls left open by the last run wait for their participants to rejoin");
    }
    let sweeper = tokio::spawn(chat.clone().sweep_calls());
    if config.mdns
        && let Some(m) = mdns::Announcer::start(&config.name, https_port) {
            settings.attach_mdns(m);
        }
    let lifecycle = Lifecycle::default();
    let ended = lifecycle.end.clone();
    let state = Arc::new(web::AppState {
        chat,
        auth: auth::Auth::new(&config.limits),
        settings,
        certs,
        turn: turn::TurnService::new(turn.clone(), &config)?,
        setup_code: Mutex::new(code.clone()),
        lifecycle,
        files: files.clone(),
    });
    // the hash unknown users are checked against, made now rather than by
    // the first login
    tokio::task::spawn_blocking(auth::dummy_hash).await.context("dummy hash")?;
    let guest_sweeper = tokio::spawn(web::guests::sweep_guests(state.clone()));
    let files_sweeper = tokio::spawn(sweep_files(state.clone()));
    let origin = crate::files::origin::router(crate::files::origin::Origin { files, db: db.clone(), clock: state.chat.clock.clone() });
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

    let (https, http, downloads) = (net::listen(https)?, net::listen(http)?, net::listen(downloads)?);
    let pid_file = config.data.join("parvis.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).context("pid file")?;
    let servers = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::join!(
                server::serve_https(https, tls_config.clone(), app, turn.map(|t| t.streams), web_gate.clone(), stop.clone()),
                server::serve_https(downloads, tls_config, origin, None, web_gate.clone(), stop.clone()),
                server::serve_http(http, https_port, tls_state.ca_pem.clone(), challenges, web_gate, stop.clone()),
                cert_manager.run(stop.clone()),
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
        _ = ended.notified() => ending.lifecycle.exit(),
    };
    tracing::info!(?exit, "shutting down");
    stop.cancel();
    let _ = servers.await;
    sweeper.abort();
    guest_sweeper.abort();
    files_sweeper.abort();
    if let Err(e) = db.checkpoint() {
        tracing::warn!("database checkpoint at shutdown: {e}");
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(exit)
}

/// Every 10 minutes: expired uploads end, the retention policy applies,
/// blobs nothing refers to are deleted.
async fn sweep_files(state: web::State) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let (now, days) = (state.chat.clock.now_ms(), state.settings.effective().files.retention_days);
        match state.files.sweep(&state.chat.db, now, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(blobs = n, "files: deleted what nothing refers to any more"),
            Err(e) => tracing::warn!("files sweep: {e}"),
        }
    }
}

/// Company name and default language as stored by setup / Settings.
async fn db_settings(db: &Db) -> anyhow::Result<(String, String)> {
    Ok(db
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
