//! Secrets: password hashing (argon2id), session and invite tokens (only
//! their SHA-256 is stored), the one-time setup code, and rate limiting.
//! Randomness comes from the caller's RNG; time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::store::Millis;

/// Hashes a password with argon2id (the crate's recommended parameters).
pub fn hash_password(password: &str, rng: &mut (impl RngCore + CryptoRng)) -> String {
    let salt = SaltString::generate(rng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Checks a password against a stored PHC hash string, in constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that a login
/// for an unknown name costs the same time as one for a known name.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("parvis-dummy-password", &mut rand::rngs::OsRng))
}

/// Password rules: 8 to 1024 characters.
pub fn check_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 8 {
        Err("password: at least 8 characters")
    } else if password.len() > 1024 {
        Err("password: at most 1024 bytes")
    } else {
        Ok(())
    }
}

/// A random URL-safe token of 32 bytes.
pub fn new_token(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Alphabet of setup codes: no 0/O, 1/I/L, U/V confusion.
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTWXYZ";

/// A one-time setup code such as `4KQ7-9TXM` (about 39 bits).
pub fn new_setup_code(rng: &mut impl RngCore) -> String {
    let mut s = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            s.push('-');
        }
        let idx = (rng.next_u32() as usize) % CODE_ALPHABET.len();
        s.push(CODE_ALPHABET[idx] as char);
    }
    s
}

/// Compares a typed setup code with the real one, forgiving case, spaces
/// and the dash, in constant time.
pub fn setup_code_matches(typed: &str, real: &str) -> bool {
    use subtle::ConstantTimeEq;
    let norm = |s: &str| -> Vec<u8> {
        s.bytes().filter(|b| b.is_ascii_alphanumeric()).map(|b| b.to_ascii_uppercase()).collect()
    };
    let (a, b) = (norm(typed), norm(real));
    a.len() == b.len() && bool::from(a.ct_eq(&b))
}

/// Counts failures per key in a sliding window; blocks a key that reached
/// the limit until its oldest failure leaves the window.
pub struct RateLimiter {
    limit: usize,
    window_ms: Millis,
    failures: Mutex<HashMap<String, Vec<Millis>>>,
}

impl RateLimiter {
    pub fn new(limit: usize, window_ms: Millis) -> Self {
        RateLimiter { limit, window_ms, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds to wait)` while the key is blocked.
    pub fn check(&self, key: &str, now: Millis) -> Result<(), u64> {
        let mut map = self.failures.lock().expect("rate limiter poisoned");
        let Some(list) = map.get_mut(key) else { return Ok(()) };
        list.retain(|&t| t > now - self.window_ms);
        if list.len() >= self.limit {
            let wait = list[0] + self.window_ms - now;
            return Err((wait.max(1000) / 1000) as u64);
        }
        Ok(())
    }

    pub fn fail(&self, key: &str, now: Millis) {
        let mut map = self.failures.lock().expect("rate limiter poisoned");
        if map.len() > 100_000 {
            let window = self.window_ms;
            map.retain(|_, v| v.last().is_some_and(|&t| t > now - window));
        }
        map.entry(key.to_string()).or_default().push(now);
    }

    pub fn clear(&self, key: &str) {
        self.failures.lock().expect("rate limiter poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn password_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let h = hash_password("correct horse", &mut rng);
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn setup_codes_are_typable() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let code = new_setup_code(&mut rng);
        assert_eq!(code.len(), 9);
        assert!(setup_code_matches(&code.to_lowercase().replace('-', " "), &code));
        assert!(!setup_code_matches("AAAA-AAAA", &code));
        assert!(!setup_code_matches("", &code));
    }

    #[test]
    fn rate_limiter_blocks_then_forgets() {
        let rl = RateLimiter::new(3, 60_000);
        for t in 0..3 {
            assert!(rl.check("ip", t).is_ok());
            rl.fail("ip", t);
        }
        assert_eq!(rl.check("ip", 10), Err(59));
        assert!(rl.check("other", 10).is_ok());
        assert!(rl.check("ip", 60_001).is_ok());
    }
}
