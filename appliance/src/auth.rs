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
pub fn hash_password(password: &str, rng: &mut impl CryptoRng) -> String {
    let salt = new_salt(rng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// A random 16-byte argon2 salt.
fn new_salt(rng: &mut impl CryptoRng) -> SaltString {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    SaltString::encode_b64(&bytes).expect("16 bytes are a valid salt")
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
    HASH.get_or_init(|| hash_password("parvis-dummy-password", &mut rand::rng()))
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
pub fn new_token(rng: &mut impl CryptoRng) -> String {
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

/// Counts attempts per key in a sliding window. An attempt is counted
/// *before* the work it guards (a password hash), atomically for all its
/// keys, so parallel requests cannot slip past the limit; a successful one
/// is given back.
pub struct RateLimiter {
    window_ms: Millis,
    attempts: Mutex<HashMap<String, Vec<Millis>>>,
}

impl RateLimiter {
    pub fn new(window_ms: Millis) -> Self {
        RateLimiter { window_ms, attempts: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt against every `(key, limit)`, unless one of the
    /// keys has reached its limit: then nothing is counted and the answer
    /// is `Err(seconds until that key has room)`.
    pub fn take(&self, keys: &[(&str, usize)], now: Millis) -> Result<(), u64> {
        let mut map = self.attempts.lock().expect("rate limiter poisoned");
        if map.len() > 100_000 {
            let window = self.window_ms;
            map.retain(|_, v| v.last().is_some_and(|&t| t > now - window));
        }
        let mut wait: Option<Millis> = None;
        for (key, limit) in keys {
            if let Some(list) = map.get_mut(*key) {
                list.retain(|&t| t > now - self.window_ms);
                if list.len() >= *limit {
                    let w = list[list.len() - limit] + self.window_ms - now;
                    wait = Some(wait.map_or(w, |x| x.max(w)));
                }
            }
        }
        if let Some(w) = wait {
            return Err((w.max(1000) as u64).div_ceil(1000));
        }
        for (key, _) in keys {
            map.entry((*key).to_string()).or_default().push(now);
        }
        Ok(())
    }

    /// Gives back the attempt counted at `at` for these keys (it succeeded).
    pub fn give_back(&self, keys: &[&str], at: Millis) {
        let mut map = self.attempts.lock().expect("rate limiter poisoned");
        for key in keys {
            if let Some(list) = map.get_mut(*key) {
                if let Some(i) = list.iter().rposition(|&t| t == at) {
                    list.remove(i);
                }
                if list.is_empty() {
                    map.remove(*key);
                }
            }
        }
    }

    /// Forgets every attempt of `key`.
    pub fn clear(&self, key: &str) {
        self.attempts.lock().expect("rate limiter poisoned").remove(key);
    }
}

/// The accounts side of the web: password hashing and the limits on
/// guessing (logins, the setup code, invite links).
pub struct Auth {
    pub hasher: Hasher,
    /// Login attempts ([`login_keys`]).
    pub logins: RateLimiter,
    /// Setup code and invite link attempts, per address and in all.
    pub links: RateLimiter,
}

impl Auth {
    pub fn new(limits: &crate::config::LimitsConfig) -> Auth {
        Auth {
            hasher: Hasher::new(limits.hashers(), limits.password_queue),
            logins: RateLimiter::new(LOGIN_WINDOW_MS),
            links: RateLimiter::new(10 * 60 * 1000),
        }
    }
}

/// Login limits per 15 minutes. The per-user-and-address and per-user
/// limits are strict; the per-address one is much higher, so that one
/// person's typos behind an office NAT never lock out their colleagues.
pub const LOGIN_WINDOW_MS: Millis = 15 * 60 * 1000;
pub const LOGIN_PER_USER_AND_ADDRESS: usize = 10;
pub const LOGIN_PER_USER: usize = 30;
pub const LOGIN_PER_ADDRESS: usize = 300;

/// The keys a login attempt counts against.
pub fn login_keys(username: &str, address: &str) -> [(String, usize); 3] {
    [
        (format!("user-ip:{username}|{address}"), LOGIN_PER_USER_AND_ADDRESS),
        (format!("user:{username}"), LOGIN_PER_USER),
        (format!("ip:{address}"), LOGIN_PER_ADDRESS),
    ]
}

/// Password hashing with a fixed cost in memory and CPU, whatever the load:
/// a few worker threads, each with its own argon2 working memory allocated
/// once and reused for every hash, fed by a bounded queue. When the queue
/// is full the caller is told to come back ([`Busy`]) instead of waiting:
/// hundreds of parallel logins cannot grow memory or starve other work.
pub struct Hasher {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
    /// Jobs reserved, queued or running; at most `capacity`.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    workers: usize,
}

/// A place held in the hashing queue ([`Hasher::reserve`]); given back if
/// dropped unused.
pub struct Slot<'a> {
    hasher: &'a Hasher,
    used: bool,
}

impl Slot<'_> {
    fn send(mut self, job: HashJob) {
        self.used = true;
        // the channel holds every reserved job: a reserved place never waits
        if self.hasher.jobs.try_send(job).is_err() {
            tracing::error!("password hashing queue: a reserved place was not free");
        }
    }

    /// Whether `password` matches the PHC string `phc` (constant time).
    pub async fn verify(self, password: String, phc: String) -> bool {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(HashJob::Verify { password, phc, done });
        rx.await.unwrap_or(false)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.hasher.pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The hashing queue is full: try again in `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub retry_after: u64,
}

enum HashJob {
    Hash { password: String, salt: SaltString, done: tokio::sync::oneshot::Sender<String> },
    Verify { password: String, phc: String, done: tokio::sync::oneshot::Sender<bool> },
}

impl Hasher {
    /// `workers` threads (each holds argon2's 19 MiB while Parvis runs) and
    /// a queue of `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Hasher {
        let workers = workers.max(1);
        let capacity = workers + queue.max(1);
        let (jobs, rx) = std::sync::mpsc::sync_channel::<HashJob>(capacity);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..workers {
            let (rx, pending) = (rx.clone(), pending.clone());
            let spawned = std::thread::Builder::new().name(format!("parvis-hash-{i}")).spawn(move || {
                // hashing yields to everything else (chat, calls, TLS)
                crate::system::sys::lower_thread_priority();
                let mut memory = vec![argon2::Block::default(); argon2::Params::default().block_count()];
                loop {
                    let job = match rx.lock().expect("hash queue poisoned").recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    match job {
                        HashJob::Hash { password, salt, done } => {
                            let _ = done.send(hash_with(&password, &salt, &mut memory));
                        }
                        HashJob::Verify { password, phc, done } => {
                            let _ = done.send(verify_with(&password, &phc, &mut memory));
                        }
                    }
                    pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            if let Err(e) = spawned {
                tracing::error!("password hasher {i}: {e}");
            }
        }
        Hasher { jobs, pending, capacity, workers }
    }

    /// Holds a place in the queue, before any other work of the request (a
    /// database read): an overloaded box answers 503 at no cost.
    pub fn reserve(&self) -> Result<Slot<'_>, Busy> {
        use std::sync::atomic::Ordering;
        let queued = self.pending.fetch_add(1, Ordering::Relaxed);
        if queued >= self.capacity {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            // about 20 ms a hash on a PC, 0.2 s on a Raspberry Pi
            return Err(Busy { retry_after: (1 + queued / (5 * self.workers)) as u64 });
        }
        Ok(Slot { hasher: self, used: false })
    }

    fn submit(&self, job: HashJob) -> Result<(), Busy> {
        let slot = self.reserve()?;
        slot.send(job);
        Ok(())
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let salt = new_salt(&mut rand::rng());
        self.submit(HashJob::Hash { password, salt, done })?;
        Ok(rx.await.unwrap_or_default())
    }

    /// Whether `password` matches the PHC string `phc` (constant time).
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, Busy> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.submit(HashJob::Verify { password, phc, done })?;
        Ok(rx.await.unwrap_or(false))
    }
}

/// argon2id with the default parameters into the worker's own memory.
fn hash_with(password: &str, salt: &SaltString, memory: &mut [argon2::Block]) -> String {
    let params = argon2::Params::default();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).expect("a generated salt decodes");
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory[..params.block_count()])
        .expect("argon2 with default parameters cannot fail");
    PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: (&params).try_into().expect("default parameters encode"),
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).expect("32 bytes is a valid output")),
    }
    .to_string()
}

/// Checks `password` against `phc` with the worker's memory. A hash whose
/// parameters need more memory than the worker holds is refused.
fn verify_with(password: &str, phc: &str, memory: &mut [argon2::Block]) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(params), Some(salt), Some(expected)) = (argon2::Params::try_from(&parsed), parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else { return false };
    if params.block_count() > memory.len() || expected.len() > 64 {
        tracing::warn!("a stored password hash asks for more memory than the hashers have: refused");
        return false;
    }
    let version = parsed.version.and_then(|v| argon2::Version::try_from(v).ok()).unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = [0u8; 64];
    let out = &mut out[..expected.len()];
    let blocks = params.block_count();
    if Argon2::new(algorithm, version, params).hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut memory[..blocks]).is_err() {
        return false;
    }
    bool::from(out.ct_eq(expected.as_bytes()))
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
    fn rate_limiter_counts_before_the_work_and_forgets() {
        let rl = RateLimiter::new(60_000);
        for t in 0..3 {
            assert!(rl.take(&[("ip", 3)], t).is_ok());
        }
        assert_eq!(rl.take(&[("ip", 3)], 10), Err(60), "the fourth is refused before any work");
        assert!(rl.take(&[("other", 3)], 10).is_ok());
        assert!(rl.take(&[("ip", 3)], 60_001).is_ok(), "the oldest left the window");
    }

    #[test]
    fn rate_limiter_counts_all_keys_or_none_and_gives_back_successes() {
        let rl = RateLimiter::new(60_000);
        assert!(rl.take(&[("user", 1)], 0).is_ok());
        assert!(rl.take(&[("ip", 5), ("user", 1)], 1).is_err());
        for t in 2..6 {
            assert!(rl.take(&[("ip", 5)], t).is_ok(), "the refused attempt counted nowhere");
        }
        rl.give_back(&["user"], 0);
        assert!(rl.take(&[("user", 1)], 7).is_ok(), "a success is given back");
    }

    #[test]
    fn per_address_limit_is_much_higher_than_per_user() {
        let rl = RateLimiter::new(LOGIN_WINDOW_MS);
        let keys = |u: &str| login_keys(u, "198.51.100.7");
        let take = |u: &str, t| {
            let k = keys(u);
            rl.take(&k.iter().map(|(k, l)| (k.as_str(), *l)).collect::<Vec<_>>(), t)
        };
        for t in 0..LOGIN_PER_USER_AND_ADDRESS as i64 {
            assert!(take("bob", t).is_ok());
        }
        assert!(take("bob", 100).is_err(), "bob's typos lock bob out");
        assert!(take("carol", 101).is_ok(), "but not carol behind the same NAT");
    }

    #[tokio::test]
    async fn the_hasher_verifies_its_own_and_the_crates_hashes() {
        let h = Hasher::new(2, 8);
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!h.verify("wrong horse".into(), phc).await.unwrap());
        let by_crate = hash_password("s3cret-pass", &mut rand::rng());
        assert!(h.verify("s3cret-pass".into(), by_crate.clone()).await.unwrap());
        assert!(verify_password("correct horse", &h.hash("correct horse".into()).await.unwrap()));
        assert!(!h.verify("x".into(), "not a hash".into()).await.unwrap());
        let greedy = by_crate.replace("m=19456", "m=262144");
        assert!(!h.verify("s3cret-pass".into(), greedy).await.unwrap(), "more memory than a worker has");
    }

    #[tokio::test]
    async fn a_full_queue_says_busy_instead_of_waiting() {
        let h = Hasher::new(1, 2);
        let phc = hash_password("password-1", &mut rand::rng());
        let mut waiting = Vec::new();
        let mut busy = 0;
        for _ in 0..20 {
            let (done, rx) = tokio::sync::oneshot::channel();
            match h.submit(HashJob::Verify { password: "password-1".into(), phc: phc.clone(), done }) {
                Ok(()) => waiting.push(rx),
                Err(b) => {
                    assert!(b.retry_after >= 1);
                    busy += 1;
                }
            }
        }
        assert!(busy >= 15, "one hashing, two queued, the rest refused: {busy} busy");
        for rx in waiting {
            assert!(rx.await.unwrap());
        }
        assert!(h.verify("password-1".into(), phc).await.unwrap(), "room again once the queue drained");
    }
}
