//! Certificates: the box's own CA and the certificate it issues (`local`),
//! ACME (`acme`), and the DNS TXT check for DNS-01 (`dns`).

pub mod acme;
pub mod dns;
pub mod local;

use std::sync::{Arc, Mutex};

/// What the web side knows of the certificates: the local CA to offer for
/// download, and the manager's status and renew button.
pub struct Certs {
    /// PEM of the local CA.
    pub ca_pem: String,
    /// SHA-256 of the local CA certificate, `AA:BB:…`.
    pub ca_fingerprint: String,
    /// What the certificate manager last did (ACME or local).
    pub status: Arc<Mutex<acme::CertStatus>>,
    /// Wakes the certificate manager for a renewal now.
    pub renew: Arc<tokio::sync::Notify>,
}
