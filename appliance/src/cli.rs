//! Command-line interface. Flags override `PARVIS_*` variables, which
//! override the configuration file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rustls::pki_types::pem::PemObject as _;

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "parvis",
    version,
    about = "Parvis: team chat, video calls, STUN/TURN and certificates for a small company, in one binary",
    long_about = "Parvis: team chat, video calls, STUN/TURN and certificates for a small company, in one binary.\n\n\
                  Start it with `parvis serve`; on first start it prints a setup code and the address to open."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (TOML). Default: <data>/parvis.toml when it exists.
    #[arg(long, short, env = "PARVIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder (database, certificates, uploads). Default: ./parvis-data.
    #[arg(long, env = "PARVIS_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run Parvis: web UI, API and chat over HTTPS, HTTP redirect.
    Serve {
        #[command(flatten)]
        common: Common,
        /// HTTPS listen address. Default: 0.0.0.0:8443.
        #[arg(long, env = "PARVIS_HTTPS", value_name = "ADDR")]
        https: Option<SocketAddr>,
        /// HTTPS listen address of the download origin (attached files only).
        /// Default: 0.0.0.0:8444.
        #[arg(long, env = "PARVIS_DOWNLOADS", value_name = "ADDR")]
        downloads: Option<SocketAddr>,
        /// HTTP listen address (redirects to HTTPS). Default: 0.0.0.0:8080.
        #[arg(long, env = "PARVIS_HTTP", value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Box name, announced as <name>.local. Default: parvis.
        #[arg(long, env = "PARVIS_NAME", value_name = "NAME")]
        name: Option<String>,
        /// Log filter, e.g. "info" or "parvis=debug". Default: info.
        #[arg(long, env = "PARVIS_LOG", value_name = "FILTER")]
        log: Option<String>,
        /// Do not announce <name>.local by multicast DNS (config key `mdns`).
        #[arg(long, env = "PARVIS_NO_MDNS")]
        no_mdns: bool,
        /// Once the ports are bound, run as this UID:GID (config key `run_as`).
        #[arg(long, env = "PARVIS_RUN_AS", value_name = "UID:GID")]
        run_as: Option<String>,
        #[command(flatten)]
        turn: TurnFlags,
    },
    /// Run only the STUN/TURN server (an extra TURN node sharing the secret).
    Turn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        turn: TurnFlags,
        /// Log filter. Default: info.
        #[arg(long, env = "PARVIS_LOG", value_name = "FILTER")]
        log: Option<String>,
    },
    /// Check from the box that STUN/TURN answers and relays, and print what
    /// to forward on the router.
    Doctor {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        turn: TurnFlags,
    },
    /// Print TURN REST credentials made from the box's secret, for other
    /// WebRTC apps of the company and for tests.
    TurnCredentials {
        #[command(flatten)]
        common: Common,
        /// User name to embed.
        #[arg(long)]
        user: String,
        /// Validity in seconds (at most turn.credential_horizon_secs).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Print {"username","password","ttl","uris"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage user accounts directly in the data folder.
    #[command(subcommand)]
    User(UserCommand),
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The HTTPS certificate: status, renewal.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print the HTTP API's description (OpenAPI 3.1, JSON), with the
    /// WebSocket frames' schemas among its components; the same as
    /// `GET /api/openapi.json`.
    Openapi,
    /// On the box: verify a signed update bundle and install it as the next
    /// boot entry (reboot to use it; a version that never gets healthy is
    /// rolled back by the boot loader).
    Update {
        /// The bundle (`parvis-x86_64-<version>.update`).
        file: PathBuf,
    },
    /// On the live box (run by init as root when the admin chose a disk):
    /// write the box's disk image onto DISK, then copy the live data there.
    InstallDisk {
        /// The gzipped disk image (on the ISO).
        #[arg(long)]
        image: PathBuf,
        /// The whole disk, e.g. /dev/nvme0n1. Everything on it is erased.
        #[arg(long)]
        disk: PathBuf,
        /// The live data folder to carry over (accounts, certificates).
        #[arg(long)]
        copy_data: Option<PathBuf>,
    },
    /// On the box (run by init at boot): grow the data partition to the
    /// end of its disk or SD card, and its mounted ext4 to the partition.
    GrowData {
        /// The data partition's device, e.g. /dev/mmcblk0p2.
        device: PathBuf,
        /// Where it is mounted.
        mount: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// What is served: issuer, names, validity, next renewal, alerts (as the
    /// running server last wrote it; falls back to the files on disk).
    Status {
        #[command(flatten)]
        common: Common,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running `parvis serve` to renew the certificate now.
    Renew {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Clone, Default)]
struct TurnFlags {
    /// STUN/TURN UDP+TCP listen address. Default: 0.0.0.0:3478.
    #[arg(long, env = "PARVIS_TURN", value_name = "ADDR")]
    turn: Option<SocketAddr>,
    /// TURN over TLS listen address. Default: 0.0.0.0:5349.
    #[arg(long, env = "PARVIS_TURN_TLS", value_name = "ADDR")]
    turn_tls: Option<SocketAddr>,
    /// Public address to advertise for relays (behind NAT).
    #[arg(long, env = "PARVIS_TURN_EXTERNAL", value_name = "IP")]
    turn_external: Option<std::net::IpAddr>,
    /// TESTS ONLY: let the relay reach loopback peers.
    #[arg(long, env = "PARVIS_TURN_ALLOW_LOOPBACK_PEERS")]
    turn_allow_loopback_peers: bool,
}

impl TurnFlags {
    fn apply(self, o: Overrides) -> Overrides {
        Overrides {
            turn: self.turn,
            turn_tls: self.turn_tls,
            turn_external: self.turn_external,
            turn_allow_loopback_peers: self.turn_allow_loopback_peers,
            ..o
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is read from standard input (one
    /// line) with --password-stdin, otherwise a random one is printed.
    Add {
        #[command(flatten)]
        common: Common,
        /// Login name: 2–32 of a-z 0-9 . _ -
        username: String,
        /// Name shown to others. Default: the username.
        #[arg(long)]
        display_name: Option<String>,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration; prints each problem as `key: reason`.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Print the effective configuration as TOML.
    Show {
        #[command(flatten)]
        common: Common,
    },
    /// Print the box's network settings as `key=value` lines, for its init
    /// (mode, address, gateway, dns, ntp): checked, so safe to use as arguments.
    Network {
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: &Common, extra: Overrides) -> Result<Config, ExitCode> {
    let over = Overrides { data: common.data.clone(), ..extra };
    Config::load(common.config.as_deref(), over).map_err(|errors| {
        for e in errors {
            eprintln!("configuration error: {e}");
        }
        ExitCode::from(2)
    })
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub fn main() -> ExitCode {
    crate::system::sys::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { common, https, downloads, http, name, log, no_mdns, run_as, turn } => {
            let over = turn.apply(Overrides { https, downloads, http, name, log, no_mdns, run_as, ..Overrides::default() });
            let config = match load(&common, over) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config.log);
            match runtime().block_on(crate::serve::run(config, shutdown_signal())) {
                Ok(crate::serve::Exit::Stopped) => ExitCode::SUCCESS,
                Ok(crate::serve::Exit::Reboot) => ExitCode::from(75),
                Ok(crate::serve::Exit::Install) => ExitCode::from(76),
                Err(e) => {
                    eprintln!("parvis: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Turn { common, turn, log } => {
            let config = match load(&common, turn.apply(Overrides { log, ..Overrides::default() })) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config.log);
            match runtime().block_on(crate::turn::run_standalone(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("parvis turn: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor { common, turn } => {
            let config = match load(&common, turn.apply(Overrides::default())) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::doctor::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("parvis doctor: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::TurnCredentials { common, user, ttl, json } => {
            let config = match load(&common, Overrides::default()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match crate::turn::credentials_command(&config, &user, ttl, json) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("parvis turn-credentials: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::User(UserCommand::Add { common, username, display_name, admin, password_stdin }) => {
            let config = match load(&common, Overrides::default()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging("warn");
            match user_add(&config, &username, display_name, admin, password_stdin) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("parvis user add: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::User(UserCommand::List { common }) => {
            let config = match load(&common, Overrides::default()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging("warn");
            let result = runtime().block_on(async {
                let db = crate::serve::open_db(&config)?;
                anyhow::Ok(db.read(crate::store::users::all_users).await?)
            });
            match result {
                Ok(list) => {
                    for u in list {
                        let state = if u.disabled { " (disabled)" } else { "" };
                        println!("{}\t{}\t{}\t{}{state}", u.id, u.username, u.role.as_str(), u.display_name);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("parvis user list: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config(ConfigCommand::Check { common }) => match load(&common, Overrides::default()) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Config(ConfigCommand::Show { common }) => match load(&common, Overrides::default()) {
            Ok(c) => {
                print!("{}", toml::to_string_pretty(&c).expect("config serializes"));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Config(ConfigCommand::Network { common }) => match load(&common, Overrides::default()) {
            Ok(c) => {
                let n = &c.network;
                let mode = if n.mode == crate::config::NetworkMode::Static { "static" } else { "dhcp" };
                println!("mode={mode}\naddress={}\ngateway={}\ndns={}\nntp={}", n.address.trim(), n.gateway, n.dns.join(" "), n.ntp.join(" "));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Cert(CertCommand::Status { common, json }) => match load(&common, Overrides::default()) {
            Ok(c) => report(cert_status(&c, json)),
            Err(code) => code,
        },
        Command::Cert(CertCommand::Renew { common }) => match load(&common, Overrides::default()) {
            Ok(c) => report(cert_renew(&c)),
            Err(code) => code,
        },
        Command::Openapi => {
            println!("{}", crate::web::openapi::document().to_pretty_json().expect("serializes"));
            ExitCode::SUCCESS
        }
        Command::Update { file } => report((|| {
            let raw = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let path = crate::system::update::install(&crate::system::update::BoxPaths::default(), &raw, &crate::system::update::running_version())?;
            println!("installed {}: reboot to use it", path.display());
            Ok(())
        })()),
        Command::InstallDisk { image, disk, copy_data } => report((|| {
            let mut last = 0;
            crate::system::install::write_image(&image, &disk, |done, total| {
                let pct = done * 100 / total.max(1);
                if pct >= last + 10 || done == total {
                    println!("installing on {}: {pct} % ({} of {} MiB)", disk.display(), done >> 20, total >> 20);
                    last = pct;
                }
            })?;
            if let Some(from) = copy_data {
                let part = crate::system::install::partition(&disk, 2);
                let bytes = crate::system::install::copy_data(&from, &part, (1000, 1000))?;
                println!("data carried over to {} ({} KiB)", part.display(), bytes >> 10);
            }
            Ok(())
        })()),
        Command::GrowData { device, mount } => report((|| {
            let g = crate::system::disk::grow_data(&device, &mount)?;
            let mib = |b: u64| b >> 20;
            if g.partition_after != g.partition_before || g.filesystem_after != g.filesystem_before {
                println!(
                    "data grown: partition {} → {} MiB, filesystem {} → {} MiB",
                    mib(g.partition_before),
                    mib(g.partition_after),
                    mib(g.filesystem_before),
                    mib(g.filesystem_after)
                );
            } else {
                println!("data: {} MiB, the whole disk", mib(g.filesystem_after));
            }
            Ok(())
        })()),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parvis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cert_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let dir = config.data.join("tls");
    let status = crate::certs::acme::read_status(&dir).unwrap_or_else(|| crate::certs::acme::CertStatus {
        mode: format!("{:?}", config.tls.mode).to_lowercase(),
        state: "unknown".into(),
        message: "parvis serve has not run with this data folder yet".into(),
        ..Default::default()
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let date = |t: Option<i64>| {
        t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "-".into())
    };
    println!("mode:          {}", status.mode);
    println!("state:         {} — {}", status.state, status.message);
    if !status.domains.is_empty() {
        println!("domains:       {}", status.domains.join(", "));
    }
    if let Some(i) = &status.issuer {
        println!("issuer:        {i}");
    }
    println!("valid:         {} → {}", date(status.not_before), date(status.not_after));
    println!("next renewal:  {}", date(status.next_renewal));
    for r in &status.dns_records {
        println!("create:        {} TXT \"{}\"", r.name, r.value);
    }
    if let Ok(ca) = std::fs::read_to_string(dir.join("ca.pem"))
        && let Ok(der) = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()) {
            use sha2::Digest;
            let fp: Vec<String> = sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect();
            println!("local CA:      {} (SHA-256 {})", dir.join("ca.pem").display(), fp.join(":"));
        }
    if let Some(a) = &status.alert {
        println!("ALERT:         {a}");
    }
    Ok(())
}

fn cert_renew(config: &Config) -> anyhow::Result<()> {
    let pid_file = config.data.join("parvis.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("parvis serve is not running with {} (no {})", config.data.display(), pid_file.display()))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)
        .with_context(|| format!("parvis serve (pid {pid}) is not running"))?;
    println!("asked parvis serve (pid {pid}) to renew; `parvis cert status` shows the result");
    Ok(())
}

fn user_add(
    config: &Config,
    username: &str,
    display_name: Option<String>,
    admin: bool,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use crate::store::users::{self, Role};
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        (line.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (crate::auth::new_token(&mut rand::rng())[..16].to_string(), true)
    };
    crate::auth::check_password(&password).map_err(anyhow::Error::msg)?;
    let hash = crate::auth::hash_password(&password, &mut rand::rng());
    let role = if admin { Role::Admin } else { Role::User };
    let display = display_name.unwrap_or_else(|| username.to_string());
    let now = <crate::clock::SystemClock as crate::clock::Clock>::now_ms(&crate::clock::SystemClock);
    let name = username.to_string();
    let user = runtime().block_on(async {
        let db = crate::serve::open_db(config)?;
        anyhow::Ok(
            db.write(move |ctx| {
                let user = users::create_user(ctx.conn, &name, &display, &hash, role, now)?;
                crate::store::rooms::join_default_room(ctx.conn, user.id, now)?;
                Ok(user)
            })
            .await?,
        )
    })?;
    println!("created {} (id {}, {})", user.username, user.id, role.as_str());
    if generated {
        println!("password: {password}");
    }
    Ok(())
}
