//! Which peers a relay may reach (RFC 8656 §21, and the box's own rules).
//!
//! Addresses are normalized first, so every IPv6 spelling of an IPv4
//! address (mapped, compatible, NAT64, 6to4) is judged as that IPv4 address.
//! Refused by default: loopback, unspecified, "this network", link-local
//! (incl. 169.254.169.254), multicast, broadcast, private ranges (RFC 1918,
//! 100.64/10, fc00::/7), documentation ranges (192.0.2/24, 198.51.100/24,
//! 203.0.113/24, 2001:db8::/32, 3fff::/20) and the benchmarking range
//! (198.18/15), where nothing real lives, and the box's own addresses
//! except its active relay ports. An admin allow-list wins over everything
//! but is empty by default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().map_err(|_| format!("{s:?}: bad prefix"))? };
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr { addr: normalize(addr), prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv4 address behind an IPv6 spelling, else the address itself.
pub fn normalize(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let o = v6.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    // ::ffff:a.b.c.d (mapped)
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return v4(o[12], o[13], o[14], o[15]);
    }
    // ::a.b.c.d (compatible, deprecated), but not :: or ::1
    if s[..6] == [0; 6] && u32::from_be_bytes([o[12], o[13], o[14], o[15]]) > 1 {
        return v4(o[12], o[13], o[14], o[15]);
    }
    // 64:ff9b::a.b.c.d (NAT64 well-known prefix) and 64:ff9b:1::/48 (local use)
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return v4(o[12], o[13], o[14], o[15]);
    }
    // 2002:AABB:CCDD::/48 (6to4)
    if s[0] == 0x2002 {
        return v4(o[2], o[3], o[4], o[5]);
    }
    IpAddr::V6(v6)
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || o[0] == 0                                  // "this network"
        || ip.is_link_local()                         // 169.254/16, incl. cloud metadata
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] >= 240                                // reserved
        || ip.is_private()                            // RFC 1918
        || (o[0] == 100 && (o[1] & 0xC0) == 64)       // 100.64/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)    // 192.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xFE) == 18)       // 198.18/15 benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)    // 192.0.2/24 documentation (TEST-NET-1)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100) // 198.51.100/24 documentation (TEST-NET-2)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)  // 203.0.113/24 documentation (TEST-NET-3)
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xffc0) == 0xfe80                  // link-local
        || (s[0] & 0xffc0) == 0xfec0                  // site-local (deprecated)
        || (s[0] & 0xfe00) == 0xfc00                  // unique local fc00::/7
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0]     // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0x0db8)         // 2001:db8::/32 documentation
        || (s[0] & 0xfff0) == 0x3ff0                  // 3fff::/20 documentation (RFC 9637)
}

/// The relay's rules for peers.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Admin-allowed networks (e.g. a LAN range); wins over every refusal.
    pub allow: Vec<Cidr>,
    /// Extra refused networks.
    pub deny: Vec<Cidr>,
    /// The box's own addresses (interfaces and external address).
    pub own: Vec<IpAddr>,
    /// Tests only: let loopback peers through (logged loudly by the caller).
    pub allow_loopback: bool,
}

/// What the policy says about a peer IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// One of the box's own addresses: only its relay ports may be reached,
    /// and those are forwarded in-process.
    OwnAddress,
    Refused,
}

impl PeerPolicy {
    pub fn judge(&self, ip: IpAddr) -> Verdict {
        let ip = normalize(ip);
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Verdict::Allowed;
        }
        // Tests run everything on loopback, where the relay's own address is
        // also the peers'; relay ports there are still found by port.
        if self.allow_loopback && ip.is_loopback() {
            return Verdict::Allowed;
        }
        if self.own.iter().any(|o| normalize(*o) == ip) {
            return Verdict::OwnAddress;
        }
        let forbidden = match ip {
            IpAddr::V4(v4) => v4_forbidden(v4),
            IpAddr::V6(v6) => v6_forbidden(v6),
        };
        if forbidden || self.deny.iter().any(|c| c.contains(ip)) { Verdict::Refused } else { Verdict::Allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(p: &PeerPolicy, s: &str) -> Verdict {
        p.judge(s.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_a_forbidden_address_is_refused() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1", "0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255", "10.1.2.3",
            "172.16.0.1", "192.168.1.1", "100.64.0.1", "::1", "::", "fe80::1", "ff02::1", "fc00::1", "fd12::3",
            "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::7f00:1",
            "2002:7f00:1::1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:c0a8:101::1", "0.1.2.3", "240.0.0.1",
            "192.0.2.1", "198.51.100.7", "203.0.113.5", "198.18.0.1", "2001:db8::1", "3fff::1", "::ffff:203.0.113.5",
            "2002:cb00:7105::1",
        ] {
            assert_eq!(judge(&p, s), Verdict::Refused, "{s}");
        }
        for s in ["93.184.216.34", "8.8.8.8", "2a01:4f8::1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert_eq!(judge(&p, s), Verdict::Allowed, "{s}");
        }
    }

    #[test]
    fn allow_list_wins_and_own_addresses_are_special() {
        let p = PeerPolicy {
            allow: vec!["192.168.10.0/24".parse().unwrap()],
            deny: vec!["93.184.216.0/24".parse().unwrap()],
            own: vec!["192.168.1.10".parse().unwrap(), "198.51.100.7".parse().unwrap()],
            allow_loopback: false,
        };
        assert_eq!(judge(&p, "192.168.10.44"), Verdict::Allowed);
        assert_eq!(judge(&p, "::ffff:192.168.10.44"), Verdict::Allowed);
        assert_eq!(judge(&p, "192.168.11.1"), Verdict::Refused);
        assert_eq!(judge(&p, "93.184.216.5"), Verdict::Refused);
        assert_eq!(judge(&p, "8.8.8.8"), Verdict::Allowed);
        assert_eq!(judge(&p, "192.168.1.10"), Verdict::OwnAddress);
        assert_eq!(judge(&p, "::ffff:198.51.100.7"), Verdict::OwnAddress);
        let test = PeerPolicy { allow_loopback: true, ..PeerPolicy::default() };
        assert_eq!(judge(&test, "127.0.0.1"), Verdict::Allowed);
        assert_eq!(judge(&test, "::ffff:127.0.0.1"), Verdict::Allowed);
        assert_eq!(judge(&test, "169.254.169.254"), Verdict::Refused);
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!("fc00::/7".parse::<Cidr>().unwrap().contains("fd00::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("1.2.3.4".parse().unwrap()));
    }
}
