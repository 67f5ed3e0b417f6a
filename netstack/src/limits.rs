//! Bounds on connections that anyone can open without an account: a total
//! per listener family and a share per source, so that a flood on one port
//! (thousands of idle TCP connections to the TURN port) can neither take the
//! file descriptors the web side needs nor lock out other sources.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one customer network gets
//! a /64; counting single addresses there would count nothing).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The unit a per-source limit counts: the IPv4 address (also when written
/// as IPv4-mapped IPv6), or the IPv6 /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This listener family holds its whole budget of connections.
    Full,
    /// This source holds its share.
    SourceFull,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_source: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Inner {
    max_open: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
    refused_full: AtomicU64,
    refused_source: AtomicU64,
}

/// A connection budget, shared by the listeners it covers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnGate(Arc<Inner>);

/// One admitted connection; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Arc<Inner>,
    source: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().expect("gate poisoned");
        c.open -= 1;
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

impl ConnGate {
    /// At most `max_open` connections, `max_per_source` from one source.
    pub fn new(max_open: usize, max_per_source: usize) -> ConnGate {
        ConnGate(Arc::new(Inner {
            max_open: max_open.max(1),
            max_per_source: max_per_source.max(1),
            counts: Mutex::default(),
            refused_full: AtomicU64::new(0),
            refused_source: AtomicU64::new(0),
        }))
    }

    /// A gate that never refuses (tests, tools).
    pub fn unbounded() -> ConnGate {
        ConnGate::new(usize::MAX, usize::MAX)
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let source = source_of(ip);
        let mut c = self.0.counts.lock().expect("gate poisoned");
        if c.open >= self.0.max_open {
            self.0.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Full);
        }
        let n = c.per_source.entry(source).or_insert(0);
        if *n >= self.0.max_per_source {
            self.0.refused_source.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceFull);
        }
        *n += 1;
        c.open += 1;
        Ok(ConnPermit { gate: self.0.clone(), source })
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.0.counts.lock().expect("gate poisoned").open
    }

    /// Connections refused so far: (budget full, source over its share).
    pub fn refused(&self) -> (u64, u64) {
        (self.0.refused_full.load(Ordering::Relaxed), self.0.refused_source.load(Ordering::Relaxed))
    }

    pub fn max_open(&self) -> usize {
        self.0.max_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_the_budget_is_shared() {
        let g = ConnGate::new(5, 2);
        let a1 = g.admit(ip("198.51.100.1")).unwrap();
        let _a2 = g.admit(ip("::ffff:198.51.100.1")).unwrap();
        assert_eq!(g.admit(ip("198.51.100.1")).unwrap_err(), Refusal::SourceFull, "mapped form counts as the same");
        let _b = g.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b2 = g.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(g.admit(ip("2001:db8:1:2::77")).unwrap_err(), Refusal::SourceFull, "one /64 is one source");
        let _c = g.admit(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(g.open(), 5);
        assert_eq!(g.admit(ip("192.0.2.9")).unwrap_err(), Refusal::Full);
        drop(a1);
        assert!(g.admit(ip("192.0.2.9")).is_ok(), "a closed connection gives its place back");
        assert_eq!(g.refused(), (1, 2));
    }
}
