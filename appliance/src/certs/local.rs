//! Certificates: a local CA created on first start (rcgen) and a server
//! certificate it issues for every name and address of the box. The CA key
//! never leaves `<data>/tls`. The served certificate sits behind a resolver
//! so it can be replaced without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Server certificates live this long (browsers cap at 398 days).
const LEAF_DAYS: i64 = 397;
/// Renew the server certificate when it has less than this left.
const RENEW_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}: not a valid PEM file")]
    Pem(String),
}

/// What the server certificate was issued for, kept beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LeafInfo {
    names: Vec<String>,
    not_after: i64,
}

/// The TLS state of the box.
pub struct Tls {
    pub ca_pem: String,
    /// SHA-256 of the CA certificate (DER), as `AA:BB:…`.
    pub ca_fingerprint: String,
    /// The server certificate the local CA issued.
    pub leaf: Arc<CertifiedKey>,
}

/// Picks the certificate of each new connection; what it holds can be
/// swapped at any time (hot reload: open connections keep theirs).
/// - a TLS-ALPN-01 validation (ALPN `acme-tls/1`) gets the challenge
///   certificate for its server name (RFC 8737);
/// - a server name covered by the ACME certificate gets it;
/// - everything else (addresses, `<name>.local`, no SNI) gets the local one.
#[derive(Debug)]
pub struct CertResolver {
    local: RwLock<Arc<CertifiedKey>>,
    acme: RwLock<Option<(Vec<String>, Arc<CertifiedKey>)>>,
    alpn: RwLock<std::collections::HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of TLS-ALPN-01 validations.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The ALPN protocol of TURN over TLS (RFC 7443).
pub const TURN_ALPN: &[u8] = b"stun.turn";

impl CertResolver {
    pub fn new(local: Arc<CertifiedKey>) -> CertResolver {
        CertResolver { local: RwLock::new(local), acme: RwLock::default(), alpn: RwLock::default() }
    }

    /// Replaces the local CA's certificate.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.local.write().expect("resolver poisoned") = key;
    }

    /// Serves `key` for `domains` (None: back to the local certificate only).
    pub fn set_acme(&self, acme: Option<(Vec<String>, Arc<CertifiedKey>)>) {
        *self.acme.write().expect("resolver poisoned") = acme;
    }

    /// Adds (Some) or removes (None) the TLS-ALPN-01 certificate of `domain`.
    pub fn set_alpn_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut m = self.alpn.write().expect("resolver poisoned");
        match key {
            Some(k) => m.insert(domain.to_ascii_lowercase(), k),
            None => m.remove(&domain.to_ascii_lowercase()),
        };
    }

    /// What a connection to `server_name` gets (without ALPN challenge).
    pub fn for_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let (Some(name), Some((domains, key))) = (server_name, &*self.acme.read().expect("resolver poisoned"))
            && domains.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                return key.clone();
            }
        self.local.read().expect("resolver poisoned").clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme_alpn = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme_alpn {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.alpn.read().expect("resolver poisoned").get(&name).cloned();
        }
        Some(self.for_name(hello.server_name()))
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

/// Writes a file atomically, readable by the owner only (keys) or by all
/// (certificates).
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |source| TlsError::Io { path: path.display().to_string(), source };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    crate::system::durable::rename(&tmp, path).map_err(io)
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// Creates the CA on first use and (re)issues the server certificate when it
/// is missing, expiring within 30 days, or does not cover `names`.
pub fn ensure(dir: &Path, box_name: &str, names: &[String], now: OffsetDateTime) -> Result<Tls, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.display().to_string(), source })?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Parvis local CA ({box_name})"));
        dn.push(DnType::OrganizationName, "Parvis");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - days(1);
        params.not_after = now + days(3650);
        let cert = params.self_signed(&key)?;
        write_file(&ca_key_path, &key.serialize_pem(), true)?;
        write_file(&ca_cert_path, &cert.pem(), false)?;
        tracing::info!("created the local certificate authority in {}", dir.display());
    }
    let ca_pem = read(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| TlsError::Pem("ca.pem".into()))?;

    let (leaf_path, leaf_key_path, info_path) = (dir.join("server.pem"), dir.join("server.key"), dir.join("server.json"));
    let info: Option<LeafInfo> = read(&info_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let fresh = info.as_ref().is_some_and(|i| {
        names.iter().all(|n| i.names.contains(n)) && i.not_after - now.unix_timestamp() > RENEW_DAYS * 86_400
    });
    if !fresh || !leaf_path.exists() || !leaf_key_path.exists() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{box_name}.local"));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - days(1);
        params.not_after = now + days(LEAF_DAYS);
        let not_after = params.not_after.unix_timestamp();
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&leaf_key_path, &key.serialize_pem(), true)?;
        write_file(&leaf_path, &cert.pem(), false)?;
        let info = LeafInfo { names: names.to_vec(), not_after };
        write_file(&info_path, &serde_json::to_string_pretty(&info).expect("serializes"), false)?;
        tracing::info!(names = ?names, "issued the server certificate");
    }
    let certified = load_certified_key(&read(&leaf_path)?, &read(&leaf_key_path)?)?;
    let fingerprint = {
        use sha2::{Digest, Sha256};
        Sha256::digest(ca_der.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    };
    Ok(Tls {
        ca_pem,
        ca_fingerprint: fingerprint,
        leaf: Arc::new(certified),
    })
}

/// Builds a rustls signing key from PEM certificate chain and key.
pub fn load_certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem("certificate".into()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::Pem("key".into()))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

/// The rustls server configuration (HTTP/2 and HTTP/1.1 via ALPN).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = base_config(resolver)?;
    // acme-tls/1 only ever gets a challenge certificate (see CertResolver),
    // and such a connection is closed after the handshake
    // and a TURN client that says so (RFC 7443) is served TURN at once
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec(), TURN_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// ring provider, safe protocol versions, no client certificates.
fn base_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    Ok(rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

/// The rustls configuration for TURN over TLS: `stun.turn` when the client
/// offers ALPN (RFC 7443), none otherwise (most TURN clients send none).
pub fn turn_server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = base_config(resolver)?;
    config.alpn_protocols = vec![TURN_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Every name the certificate should cover: localhost, the host name, the
/// box name and `<box>.local`, and the given addresses.
pub fn names_for(box_name: &str, hostname: Option<&str>, addrs: &[std::net::IpAddr]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), box_name.to_string(), format!("{box_name}.local")];
    if let Some(h) = hostname {
        for n in [h.to_string(), format!("{h}.local")] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    for a in addrs {
        let s = a.to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_leaf_follows_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let names = names_for("parvis", Some("box1"), &["192.0.2.7".parse().unwrap()]);
        let a = ensure(dir.path(), "parvis", &names, now).unwrap();
        let leaf1 = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
        let b = ensure(dir.path(), "parvis", &names, now).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem, "the CA survives restarts");
        assert_eq!(leaf1, std::fs::read_to_string(dir.path().join("server.pem")).unwrap());
        // a new address: reissued by the same CA
        let more = names_for("parvis", Some("box1"), &["192.0.2.8".parse().unwrap()]);
        let c = ensure(dir.path(), "parvis", &more, now).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(leaf1, std::fs::read_to_string(dir.path().join("server.pem")).unwrap());
        // close to expiry: reissued
        let later = now + days(LEAF_DAYS - RENEW_DAYS + 1);
        ensure(dir.path(), "parvis", &more, later).unwrap();
        let info: LeafInfo =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("server.json")).unwrap()).unwrap();
        assert!(info.not_after > later.unix_timestamp() + 300 * 86_400);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
