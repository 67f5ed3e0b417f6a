//! Credentials and nonces.
//!
//! TURN REST credentials (the scheme of coturn's `use-auth-secret`):
//! `username = "<unix-expiry>:<user>"`, `password = base64(HMAC-SHA1(secret,
//! username))`. The long-term key is MD5(username:realm:password).
//! Nonces are stateless: an expiry and a MAC over it and the client's
//! 5-tuple, so a nonce used from another 5-tuple or after expiry is stale.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::stun::long_term_key;

/// The password of a REST username under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A REST username valid until `expiry` (Unix seconds).
pub fn rest_username(expiry: u64, user: &str) -> String {
    format!("{expiry}:{user}")
}

/// Why a username is refused (all answered 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Unknown,
    Expired,
    TooFarAhead,
}

/// Where keys come from.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Shared REST secret (empty: REST usernames are refused).
    pub secret: Vec<u8>,
    /// Longest accepted distance between now and a REST expiry, seconds.
    pub horizon_secs: u64,
    /// Static users for other apps: username → long-term key.
    pub static_keys: HashMap<String, [u8; 16]>,
}

impl Credentials {
    /// The long-term key for `username`, or why there is none.
    pub fn key(&self, username: &str, realm: &str, unix_now: u64) -> Result<[u8; 16], AuthError> {
        if let Some(k) = self.static_keys.get(username) {
            return Ok(*k);
        }
        let Some((exp, _user)) = username.split_once(':') else { return Err(AuthError::Unknown) };
        let Ok(exp) = exp.parse::<u64>() else { return Err(AuthError::Unknown) };
        if self.secret.is_empty() {
            return Err(AuthError::Unknown);
        }
        if exp <= unix_now {
            return Err(AuthError::Expired);
        }
        if exp - unix_now > self.horizon_secs {
            return Err(AuthError::TooFarAhead);
        }
        Ok(long_term_key(username, realm, &rest_password(&self.secret, username)))
    }
}

/// Makes and checks nonces bound to a 5-tuple.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("lifetime_secs", &self.lifetime_secs).finish_non_exhaustive()
    }
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Nonces {
        Nonces { key, lifetime_secs }
    }

    fn mac(&self, expiry: u64, client: SocketAddr, server: SocketAddr) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&expiry.to_be_bytes());
        mac.update(client.to_string().as_bytes());
        mac.update(b"|");
        mac.update(server.to_string().as_bytes());
        let out = mac.finalize().into_bytes();
        out[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fresh nonce for this client 5-tuple: 24 ASCII characters.
    pub fn issue(&self, unix_now: u64, client: SocketAddr, server: SocketAddr) -> String {
        let expiry = unix_now + self.lifetime_secs;
        format!("{:08x}{}", expiry as u32, self.mac(expiry, client, server))
    }

    /// Whether `nonce` was issued for this 5-tuple and is still fresh.
    pub fn valid(&self, nonce: &str, unix_now: u64, client: SocketAddr, server: SocketAddr) -> bool {
        use subtle::ConstantTimeEq;
        if nonce.len() != 24 || !nonce.is_ascii() {
            return false;
        }
        let Ok(exp32) = u32::from_str_radix(&nonce[..8], 16) else { return false };
        // Rebuild the full expiry around now (u32 seconds wrap in 2106).
        let expiry = (unix_now & !0xFFFF_FFFF) | u64::from(exp32);
        if expiry <= unix_now || expiry > unix_now + self.lifetime_secs {
            return false;
        }
        bool::from(self.mac(expiry, client, server).as_bytes().ct_eq(&nonce.as_bytes()[8..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently
        // with Python's hmac module.
        assert_eq!(rest_password(b"secret", "1700000000:alice"), "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn rest_usernames_expire_and_have_a_horizon() {
        let c = Credentials { secret: b"s".to_vec(), horizon_secs: 86_400, ..Default::default() };
        assert!(c.key("1000:bob", "r", 500).is_ok());
        assert_eq!(c.key("1000:bob", "r", 1000), Err(AuthError::Expired));
        assert_eq!(c.key("1000000:bob", "r", 500), Err(AuthError::TooFarAhead));
        assert_eq!(c.key("bob", "r", 500), Err(AuthError::Unknown));
        assert_eq!(c.key("x:bob", "r", 500), Err(AuthError::Unknown));
        let key = c.key("1000:bob", "r", 500).unwrap();
        assert_eq!(key, long_term_key("1000:bob", "r", &rest_password(b"s", "1000:bob")));
    }

    #[test]
    fn nonces_are_bound_to_the_five_tuple_and_expire() {
        let n = Nonces::new([9; 32], 600);
        let a: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        let s: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let nonce = n.issue(1_000_000, a, s);
        assert_eq!(nonce.len(), 24);
        assert!(n.valid(&nonce, 1_000_100, a, s));
        assert!(!n.valid(&nonce, 1_000_100, b, s), "another 5-tuple");
        assert!(!n.valid(&nonce, 1_000_600, a, s), "expired");
        assert!(!n.valid("000000000000000000000000", 1_000_100, a, s));
        assert!(!n.valid("short", 1_000_100, a, s));
    }
}
