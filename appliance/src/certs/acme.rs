//! Certificates from an ACME server (RFC 8555, instant-acme): Let's Encrypt
//! or the company's own CA. The [`Manager`] task owns the lifecycle:
//! issue, store (`<data>/tls/acme/`), serve through the [`CertResolver`]
//! (hot reload: open connections keep theirs), renew at two thirds of the
//! lifetime, retry with backoff, and when renewal fails keep serving what is
//! still valid (else the local certificate) with a visible alert. Its state
//! is written to `<data>/tls/status.json` for `parvis cert status` and the
//! admin pages.
//!
//! Challenges: HTTP-01 is answered by our HTTP listener ([`Challenges`]),
//! TLS-ALPN-01 by our HTTPS listener (a certificate with the acmeIdentifier
//! extension, RFC 8737), DNS-01 by a TXT record the admin creates: Parvis
//! shows it, then asks DNS until it is visible before telling the CA to look.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AcmeChallenge, TlsConfig, TlsMode};
use crate::certs::local::{self as tls, CertResolver};

/// HTTP-01 answers: token → key authorization, served on the HTTP port.
#[derive(Default)]
pub struct Challenges {
    http: RwLock<HashMap<String, String>>,
}

impl Challenges {
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.read().expect("challenges poisoned").get(token).cloned()
    }
}

/// A TXT record the admin must create for DNS-01.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DnsRecord {
    pub name: String,
    pub value: String,
}

/// What `parvis cert status` and the admin pages show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertStatus {
    /// `local` or `acme`.
    pub mode: String,
    /// `local`, `issuing`, `waiting_dns`, `valid` or `failed`.
    pub state: String,
    /// The current step or the last error, in words.
    pub message: String,
    pub domains: Vec<String>,
    /// Of the certificate served for `domains` (ACME) or for the box (local).
    pub issuer: Option<String>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub next_renewal: Option<i64>,
    /// DNS-01: the records to create.
    pub dns_records: Vec<DnsRecord>,
    /// Set when issuance or renewal failed; cleared by the next success.
    pub alert: Option<String>,
    pub updated: i64,
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// at two thirds of its lifetime.
pub fn renewal_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

/// Wait before the next attempt after `failures` consecutive failures:
/// 30 s, 1 min, 2 min, … up to 6 h.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs((30u64 << failures.saturating_sub(1).min(10)).min(6 * 3600))
}

/// A certificate as stored: chain + key, and what it covers.
struct Stored {
    chain_pem: String,
    key_pem: String,
    domains: Vec<String>,
    not_before: i64,
    not_after: i64,
    issuer: String,
}

fn parse_leaf(chain_pem: &str) -> anyhow::Result<(Vec<String>, i64, i64, String)> {
    let der = CertificateDer::from_pem_slice(chain_pem.as_bytes()).map_err(|_| anyhow!("not a PEM certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| anyhow!("bad certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    let v = cert.validity();
    Ok((names, v.not_before.timestamp(), v.not_after.timestamp(), cert.issuer().to_string()))
}

fn acme_dir(tls_dir: &Path) -> PathBuf {
    tls_dir.join("acme")
}

fn load_stored(tls_dir: &Path) -> Option<Stored> {
    let dir = acme_dir(tls_dir);
    let chain_pem = std::fs::read_to_string(dir.join("cert.pem")).ok()?;
    let key_pem = std::fs::read_to_string(dir.join("key.pem")).ok()?;
    let (domains, not_before, not_after, issuer) = parse_leaf(&chain_pem).ok()?;
    Some(Stored { chain_pem, key_pem, domains, not_before, not_after, issuer })
}

fn save_stored(tls_dir: &Path, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let dir = acme_dir(tls_dir);
    create_private_dir(&dir)?;
    // key first: a crash between the two leaves the old pair unusable rather
    // than mismatched, and the next start issues again
    tls::write_file(&dir.join("key.pem"), key_pem, true)?;
    tls::write_file(&dir.join("cert.pem"), chain_pem, false)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("{}", dir.display()))
}

/// The status file beside the certificates.
pub fn status_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("status.json")
}

fn write_status(tls_dir: &Path, status: &CertStatus) {
    let text = serde_json::to_string_pretty(status).expect("serializes");
    if let Err(e) = tls::write_file(&status_path(tls_dir), &text, false) {
        tracing::warn!("cannot write the certificate status: {e}");
    }
}

/// Reads what the running server last wrote.
pub fn read_status(tls_dir: &Path) -> Option<CertStatus> {
    serde_json::from_str(&std::fs::read_to_string(status_path(tls_dir)).ok()?).ok()
}

/// Why an issuance failed, from the errors' types (never their text): who
/// could not reach whom decides what the admin must fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// Parvis could not reach the ACME server (its internet access, DNS,
    /// firewall, or the server is down).
    Unreachable { url: String, detail: String },
    /// The ACME server answered with a problem document (RFC 8555 §6.7):
    /// its type without `urn:ietf:params:acme:error:`, and its detail.
    Problem { kind: String, detail: String },
    /// Something on the box failed (writing a file, a key).
    Local(String),
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::Unreachable { url, detail } => write!(f, "cannot reach {url}: {detail}"),
            Trouble::Problem { kind, detail } => write!(f, "{kind}: {detail}"),
            Trouble::Local(d) => f.write_str(d),
        }
    }
}

fn problem_kind(t: Option<&str>) -> String {
    let t = t.unwrap_or("");
    t.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(t).to_string()
}

impl Trouble {
    fn from_acme(e: instant_acme::Error, url: &str) -> Trouble {
        use instant_acme::Error as E;
        let unreachable = |detail: String| Trouble::Unreachable { url: url.to_string(), detail };
        match e {
            E::Api(p) => {
                // a validation problem carries the challenge's own in its subproblems
                let kind = problem_kind(p.r#type.as_deref());
                Trouble::Problem { kind, detail: p.detail.unwrap_or_default() }
            }
            E::Hyper(e) => unreachable(e.to_string()),
            E::Http(e) => unreachable(e.to_string()),
            E::Timeout(_) => unreachable("no answer in time".into()),
            E::Other(inner) => match inner.downcast::<hyper_util::client::legacy::Error>() {
                Ok(e) => unreachable(format!("{e}{}", std::error::Error::source(&*e).map(|s| format!(": {s}")).unwrap_or_default())),
                Err(other) => Trouble::Local(other.to_string()),
            },
            other => Trouble::Local(other.to_string()),
        }
    }

    /// The account the box holds is unknown to the CA (a private CA was
    /// reset, the account was deactivated): register again.
    fn account_forgotten(&self) -> bool {
        matches!(self, Trouble::Problem { kind, .. } if kind == "accountDoesNotExist")
    }
}

impl From<anyhow::Error> for Trouble {
    fn from(e: anyhow::Error) -> Trouble {
        Trouble::Local(format!("{e:#}"))
    }
}

/// Words for an ACME failure that tell the admin what to fix.
fn explain(t: &Trouble, challenge: AcmeChallenge) -> String {
    let hint = match t {
        Trouble::Unreachable { .. } => {
            "Parvis cannot reach the ACME server: check the box's internet access, its DNS, and that outgoing HTTPS is allowed"
        }
        Trouble::Problem { kind, .. } => match kind.as_str() {
            "rateLimited" => "the certificate authority is rate limiting this box: it will retry later",
            "dns" => "the CA cannot resolve the domain: check its DNS records",
            "connection" => match challenge {
                AcmeChallenge::Http01 => "the CA could not reach port 80 of this box: forward port 80 to it, and point the domain's DNS here",
                AcmeChallenge::TlsAlpn01 => "the CA could not reach port 443 of this box: forward port 443 to it, and point the domain's DNS here",
                AcmeChallenge::Dns01 => "the CA could not query the domain's DNS servers",
            },
            "unauthorized" | "incorrectResponse" => {
                "the CA reached a different server or saw a wrong answer: does the domain point to this box?"
            }
            "tls" => "the CA's TLS connection to this box failed: does port 443 reach this box?",
            "caa" => "the domain's CAA records do not allow this certificate authority",
            "rejectedIdentifier" | "unsupportedIdentifier" => "the CA will not issue for this domain name",
            "accountDoesNotExist" => "the CA no longer knows this box's account",
            _ => "",
        },
        Trouble::Local(_) => "",
    };
    let text = t.to_string();
    if hint.is_empty() { text } else { format!("{hint} ({text})") }
}

/// Where the ACME account is kept.
fn account_path(tls_dir: &Path) -> PathBuf {
    acme_dir(tls_dir).join("account.json")
}

/// The ACME account for a directory: created once, kept in `account.json`.
async fn account(tls_dir: &Path, cfg: &TlsConfig) -> Result<Account, Trouble> {
    #[derive(Serialize, Deserialize)]
    struct Saved {
        directory: String,
        credentials: AccountCredentials,
    }
    let url = cfg.directory_url();
    let acme = |e| Trouble::from_acme(e, &url);
    let builder = || -> Result<_, Trouble> {
        if cfg.acme_root.is_empty() {
            Account::builder().map_err(acme)
        } else {
            Account::builder_with_root(&cfg.acme_root).map_err(|e| Trouble::Local(format!("tls.acme_root: {e}")))
        }
    };
    let path = account_path(tls_dir);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<Saved>(&text)
            && saved.directory == url {
                return builder()?.from_credentials(saved.credentials).await.map_err(acme);
            }
    let contact = (!cfg.acme_email.is_empty()).then(|| format!("mailto:{}", cfg.acme_email));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?.create(&new, url.clone(), None).await.map_err(acme)?;
    create_private_dir(&acme_dir(tls_dir))?;
    let saved = serde_json::to_string_pretty(&Saved { directory: url.clone(), credentials }).map_err(|e| Trouble::Local(e.to_string()))?;
    tls::write_file(&path, &saved, true).map_err(|e| Trouble::Local(e.to_string()))?;
    tracing::info!("ACME account registered with {url}");
    Ok(account)
}

/// Everything an issuance touches besides the ACME server.
struct Issuer<'a> {
    tls_dir: &'a Path,
    cfg: &'a TlsConfig,
    challenges: &'a Challenges,
    resolver: &'a CertResolver,
    status: &'a Mutex<CertStatus>,
    dns_resolver: Option<std::net::SocketAddr>,
    stop: &'a CancellationToken,
}

impl Issuer<'_> {
    fn step(&self, state: &str, message: String) {
        tracing::info!("certificate: {message}");
        let mut s = self.status.lock().expect("status poisoned");
        s.state = state.into();
        s.message = message;
        write_status(self.tls_dir, &s);
    }

    /// Waits until the TXT record is visible through DNS (30 min at most).
    async fn wait_for_txt(&self, record: &DnsRecord) -> anyhow::Result<()> {
        let resolver = self.dns_resolver.context("no DNS server to check with: set tls.acme_dns_resolver")?;
        for _ in 0..900 {
            match crate::certs::dns::txt(resolver, &record.name).await {
                Ok(values) if values.iter().any(|v| v == &record.value) => return Ok(()),
                Ok(_) => {}
                Err(e) => tracing::debug!("DNS check: {e:#}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.stop.cancelled() => bail!("stopped"),
            }
        }
        bail!("the TXT record {} was not visible after 30 minutes", record.name)
    }

    /// Issues the certificate; an account the CA forgot is registered
    /// again, once, and the issuance tried again.
    async fn issue(&self) -> Result<(String, String), Trouble> {
        match self.issue_once().await {
            Err(t) if t.account_forgotten() => {
                tracing::warn!("the ACME server no longer knows this box's account: registering again");
                let _ = std::fs::remove_file(account_path(self.tls_dir));
                self.issue_once().await
            }
            other => other,
        }
    }

    async fn issue_once(&self) -> Result<(String, String), Trouble> {
        let cfg = self.cfg;
        let url = cfg.directory_url();
        let acme = |e| Trouble::from_acme(e, &url);
        self.step("issuing", format!("asking {url} for {}", cfg.acme_domains.join(", ")));
        let account = account(self.tls_dir, cfg).await?;
        let ids: Vec<Identifier> = cfg.acme_domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(acme)?;
        let kind = match cfg.acme_challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Dns01 => ChallengeType::Dns01,
        };
        let mut http_tokens = Vec::new();
        let mut alpn_domains = Vec::new();
        let result: Result<(String, String), Trouble> = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(acme)?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(Trouble::Problem { kind: "authorization".into(), detail: format!("the authorization is {other:?}") }),
                }
                let mut challenge = authz
                    .challenge(kind.clone())
                    .ok_or_else(|| Trouble::Problem { kind: "unsupported".into(), detail: format!("the CA does not offer {kind:?} here") })?;
                let domain = challenge.identifier().to_string();
                let key_auth = challenge.key_authorization();
                match cfg.acme_challenge {
                    AcmeChallenge::Http01 => {
                        let token = challenge.token.clone();
                        self.challenges.http.write().expect("poisoned").insert(token.clone(), key_auth.as_str().into());
                        http_tokens.push(token);
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        let cert = alpn_certificate(&domain, key_auth.digest().as_ref())?;
                        self.resolver.set_alpn_challenge(&domain, Some(Arc::new(cert)));
                        alpn_domains.push(domain.clone());
                    }
                    AcmeChallenge::Dns01 => {
                        let record = DnsRecord {
                            name: format!("_acme-challenge.{}", domain.trim_start_matches("*.")),
                            value: key_auth.dns_value(),
                        };
                        self.status.lock().expect("poisoned").dns_records.push(record.clone());
                        self.step(
                            "waiting_dns",
                            format!("create the DNS record {} TXT \"{}\"; waiting until it is visible", record.name, record.value),
                        );
                        self.wait_for_txt(&record).await?;
                        self.step("issuing", format!("the TXT record for {domain} is visible; the CA checks it"));
                    }
                }
                challenge.set_ready().await.map_err(acme)?;
            }
            let retry = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(Duration::from_secs(120));
            let status = order.poll_ready(&retry).await.map_err(acme)?;
            if status != OrderStatus::Ready {
                // the challenges' own problems say what went wrong
                let mut kinds = Vec::new();
                let mut details = Vec::new();
                let mut authorizations = order.authorizations();
                while let Some(Ok(a)) = authorizations.next().await {
                    for c in &a.challenges {
                        if let Some(e) = &c.error {
                            kinds.push(problem_kind(e.r#type.as_deref()));
                            details.push(e.detail.clone().unwrap_or_default());
                        }
                    }
                }
                return Err(Trouble::Problem {
                    kind: kinds.into_iter().next().unwrap_or_else(|| "validation".into()),
                    detail: if details.is_empty() { format!("the order is {status:?}") } else { details.join("; ") },
                });
            }
            let local = |e: rcgen::Error| Trouble::Local(e.to_string());
            let key = rcgen::KeyPair::generate().map_err(local)?;
            let mut params = rcgen::CertificateParams::new(cfg.acme_domains.clone()).map_err(local)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params.serialize_request(&key).map_err(local)?;
            order.finalize_csr(csr.der()).await.map_err(acme)?;
            let chain = order.poll_certificate(&retry).await.map_err(acme)?;
            Ok((chain, key.serialize_pem()))
        }
        .await;
        for t in http_tokens {
            self.challenges.http.write().expect("poisoned").remove(&t);
        }
        for d in alpn_domains {
            self.resolver.set_alpn_challenge(&d, None);
        }
        self.status.lock().expect("poisoned").dns_records.clear();
        result
    }
}

/// The TLS-ALPN-01 certificate for `domain` (RFC 8737 §3).
fn alpn_certificate(domain: &str, digest: &[u8]) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    // not CertifiedKey::from_der: its key/certificate consistency check parses
    // the certificate with webpki, which refuses the critical acmeIdentifier
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow!("{e}"))?;
    let signing = rustls::crypto::ring::default_provider().key_provider.load_private_key(der)?;
    Ok(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Owns the certificate lifecycle while `parvis serve` runs.
pub struct Manager {
    tls_dir: PathBuf,
    config: watch::Receiver<TlsConfig>,
    resolver: Arc<CertResolver>,
    challenges: Arc<Challenges>,
    /// What the manager last did, for the web side.
    pub status: Arc<Mutex<CertStatus>>,
    clock: Arc<dyn Clock>,
    /// Notified by `parvis cert renew` (SIGHUP) and the admin page.
    pub renew: Arc<Notify>,
    /// Reissues the local certificate when due (names, expiry).
    local_refresh: Box<dyn Fn() -> Option<Arc<rustls::sign::CertifiedKey>> + Send + Sync>,
    force: bool,
    failures: u32,
    retry_at: Option<i64>,
    /// Why the last attempt failed, while attempts fail.
    last_failure: Option<String>,
    last: Option<TlsConfig>,
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

impl Manager {
    pub fn new(
        tls_dir: PathBuf,
        config: watch::Receiver<TlsConfig>,
        resolver: Arc<CertResolver>,
        challenges: Arc<Challenges>,
        clock: Arc<dyn Clock>,
        local_refresh: Box<dyn Fn() -> Option<Arc<rustls::sign::CertifiedKey>> + Send + Sync>,
    ) -> Manager {
        Manager {
            tls_dir,
            config,
            resolver,
            challenges,
            status: Arc::default(),
            clock,
            renew: Arc::default(),
            local_refresh,
            force: false,
            failures: 0,
            retry_at: None,
            last_failure: None,
            last: None,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms() / 1000
    }

    fn publish(&self) {
        let mut s = self.status.lock().expect("status poisoned");
        s.updated = self.now();
        write_status(&self.tls_dir, &s);
    }

    /// Serves `stored` for its domains if still valid; returns whether it is.
    fn serve(&self, stored: &Stored) -> bool {
        if stored.not_after <= self.now() {
            self.resolver.set_acme(None);
            return false;
        }
        match tls::load_certified_key(&stored.chain_pem, &stored.key_pem) {
            Ok(k) => {
                self.resolver.set_acme(Some((stored.domains.clone(), Arc::new(k))));
                true
            }
            Err(e) => {
                tracing::warn!("stored ACME certificate unusable: {e}");
                false
            }
        }
    }

    /// Runs until `stop`: one decision per wake-up (config change, renewal
    /// due, retry due, renew request).
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let cfg = self.config.borrow_and_update().clone();
            if self.last.as_ref() != Some(&cfg) {
                // new settings deserve an attempt now
                (self.failures, self.retry_at, self.last) = (0, None, Some(cfg.clone()));
            }
            // the local certificate serves every other name in both modes
            if let Some(k) = (self.local_refresh)() {
                self.resolver.set(k);
            }
            let wait = match cfg.mode {
                TlsMode::Local => {
                    self.resolver.set_acme(None);
                    let mut s = self.status.lock().expect("poisoned");
                    *s = CertStatus { mode: "local".into(), state: "local".into(), ..CertStatus::default() };
                    s.message = "served by the box's own certificate authority".into();
                    drop(s);
                    Duration::from_secs(12 * 3600)
                }
                TlsMode::Acme => self.acme_round(&cfg, &stop).await,
            };
            self.publish();
            // wake at least hourly: a box without a real-time clock may have
            // jumped from 1970 to today since the last decision
            let wait = wait.min(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.renew.notified() => self.force = true,
                r = self.config.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One decision in ACME mode; returns how long to wait before the next.
    async fn acme_round(&mut self, cfg: &TlsConfig, stop: &CancellationToken) -> Duration {
        let now = self.now();
        let stored = load_stored(&self.tls_dir).filter(|s| cfg.acme_domains.iter().all(|d| s.domains.contains(d)));
        let valid = stored.as_ref().filter(|s| self.serve(s));
        if valid.is_none() {
            self.resolver.set_acme(None);
        }
        let force = std::mem::take(&mut self.force);
        {
            let mut st = self.status.lock().expect("poisoned");
            st.mode = "acme".into();
            st.domains = cfg.acme_domains.clone();
            st.issuer = valid.map(|s| s.issuer.clone());
            st.not_before = valid.map(|s| s.not_before);
            st.not_after = valid.map(|s| s.not_after);
            st.next_renewal = valid.map(|s| renewal_at(s.not_before, s.not_after));
            // the alert says what is true now (a kept certificate may have
            // expired since the failure)
            if let Some(why) = &self.last_failure {
                st.alert = Some(alert(why, valid, stored.as_ref()));
            }
        }
        // a retry promised after a failure comes when promised, even while
        // the current certificate is still valid
        let retry_due = self.retry_at.is_some_and(|at| at <= now);
        if let Some(s) = valid {
            let due = renewal_at(s.not_before, s.not_after);
            if now < due && !force && !retry_due {
                if self.failures == 0 {
                    let mut st = self.status.lock().expect("poisoned");
                    st.state = "valid".into();
                    st.message = format!("valid until {}; renewal on {}", date(s.not_after), date(due));
                }
                let next = self.retry_at.map_or(due, |at| at.min(due));
                return Duration::from_secs((next - now).max(1) as u64);
            }
        }
        if let Some(at) = self.retry_at.filter(|&at| at > now && !force) {
            return Duration::from_secs((at - now) as u64);
        }
        self.publish();
        let issuer = Issuer {
            tls_dir: &self.tls_dir,
            cfg,
            challenges: &self.challenges,
            resolver: &self.resolver,
            status: &self.status,
            dns_resolver: cfg.acme_dns_resolver.or_else(crate::certs::dns::system_resolver),
            stop,
        };
        let result = tokio::select! {
            r = issuer.issue() => r,
            _ = stop.cancelled() => return Duration::ZERO,
        };
        let stored_new = result.and_then(|(chain, key)| {
            save_stored(&self.tls_dir, &chain, &key)?;
            load_stored(&self.tls_dir).ok_or_else(|| Trouble::Local("the new certificate cannot be read back".into()))
        });
        match stored_new {
            Ok(s) if self.serve(&s) => {
                (self.failures, self.retry_at, self.last_failure) = (0, None, None);
                let due = renewal_at(s.not_before, s.not_after);
                let mut st = self.status.lock().expect("poisoned");
                st.state = "valid".into();
                st.message = format!("issued by {}; valid until {}; renewal on {}", s.issuer, date(s.not_after), date(due));
                (st.issuer, st.not_before, st.not_after, st.next_renewal) =
                    (Some(s.issuer.clone()), Some(s.not_before), Some(s.not_after), Some(due));
                st.alert = None;
                tracing::info!(domains = ?s.domains, not_after = %date(s.not_after), "certificate installed (no restart needed)");
                Duration::from_secs((due - self.now()).max(1) as u64)
            }
            other => {
                let t = match other {
                    Err(t) => t,
                    Ok(_) => Trouble::Local("the new certificate has already expired: is the box's clock right?".into()),
                };
                self.failures += 1;
                let delay = retry_delay(self.failures);
                self.retry_at = Some(self.now() + delay.as_secs() as i64);
                let why = explain(&t, cfg.acme_challenge);
                tracing::warn!("certificate: {why}");
                let mut st = self.status.lock().expect("poisoned");
                st.state = "failed".into();
                st.message = format!("{why}; next attempt in {} s", delay.as_secs());
                st.alert = Some(alert(&why, valid, stored.as_ref()));
                self.last_failure = Some(why);
                // wake when the kept certificate expires: the local one takes over then
                let until_expiry = valid.map_or(delay.as_secs(), |s| (s.not_after - self.now()).max(1) as u64);
                delay.min(Duration::from_secs(until_expiry))
            }
        }
    }
}

/// The alert after a failed attempt, for the certificate served now.
fn alert(why: &str, valid: Option<&Stored>, stored: Option<&Stored>) -> String {
    match (valid, stored) {
        (Some(s), _) => format!("certificate renewal failed: {why}. Still serving the current certificate, valid until {}.", date(s.not_after)),
        (None, Some(s)) => format!(
            "the certificate from the ACME server expired on {} and could not be renewed: {why}. Browsers get the local certificate meanwhile.",
            date(s.not_after)
        ),
        (None, None) => format!("no certificate from the ACME server: {why}. Browsers get the local certificate meanwhile."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_of_the_lifetime() {
        let day = 86_400;
        assert_eq!(renewal_at(0, 90 * day), 60 * day);
        assert_eq!(renewal_at(1000, 1000 + 30), 1020);
        assert_eq!(renewal_at(50, 10), 50, "a certificate that ends before it starts is renewed at once");
    }

    #[test]
    fn retries_back_off_from_30_seconds_to_6_hours() {
        let d: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(&d[..5], &[30, 60, 120, 240, 480]);
        assert_eq!(*d.last().unwrap(), 6 * 3600);
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn failures_are_explained_by_who_could_not_reach_whom() {
        let theirs = Trouble::Problem { kind: "connection".into(), detail: "Connection refused".into() };
        assert!(explain(&theirs, AcmeChallenge::Http01).contains("port 80"));
        assert!(explain(&theirs, AcmeChallenge::TlsAlpn01).contains("port 443"));
        // our side: the same words in the text, but the CA was never reached
        let ours = Trouble::Unreachable { url: "https://ca.test/dir".into(), detail: "connection refused".into() };
        for c in [AcmeChallenge::Http01, AcmeChallenge::TlsAlpn01, AcmeChallenge::Dns01] {
            let text = explain(&ours, c);
            assert!(text.contains("cannot reach the ACME server") && !text.contains("forward port"), "{text}");
        }
        let limited = Trouble::Problem { kind: "rateLimited".into(), detail: "too many certificates".into() };
        assert!(explain(&limited, AcmeChallenge::Http01).contains("rate limiting"));
        // a connection error of the HTTP client is classified by its type
        let e = instant_acme::Error::Other(Box::new(std::io::Error::other("connection refused")));
        assert!(matches!(Trouble::from_acme(e, "u"), Trouble::Local(_)), "not an HTTP client error");
        let problem = instant_acme::Error::Api(serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:accountDoesNotExist","detail":"x"}"#).unwrap());
        assert!(Trouble::from_acme(problem, "u").account_forgotten());
    }

    #[test]
    fn the_alert_follows_the_served_certificate() {
        let s = |not_after| Stored {
            chain_pem: String::new(),
            key_pem: String::new(),
            domains: vec![],
            not_before: 0,
            not_after,
            issuer: String::new(),
        };
        assert!(alert("x", Some(&s(2_000_000_000)), None).contains("Still serving"));
        let expired = alert("x", None, Some(&s(1_000)));
        assert!(expired.contains("expired on 1970") && !expired.contains("Still serving"), "{expired}");
        assert!(alert("x", None, None).contains("no certificate"));
    }

    #[test]
    fn the_tls_alpn_certificate_carries_the_acme_identifier() {
        let k = alpn_certificate("box.test", &[7u8; 32]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(k.cert[0].as_ref()).unwrap();
        let ext = cert.extensions().iter().find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31").unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &[7u8; 32], "an OCTET STRING of the digest");
    }
}
