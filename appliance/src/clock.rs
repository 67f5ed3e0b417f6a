//! Where "now" comes from. Domain logic receives time from a [`Clock`] (or
//! as a parameter) so tests can move it; only [`SystemClock`] reads the
//! real one.

use crate::store::Millis;

pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis)
    }
}

