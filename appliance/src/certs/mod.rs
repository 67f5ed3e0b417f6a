//! Certificates: the box's own CA and the certificate it issues (`local`),
//! ACME (`acme`), and the DNS TXT check for DNS-01 (`dns`).

pub mod acme;
pub mod dns;
pub mod local;
