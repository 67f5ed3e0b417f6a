//! Facts about the machine's network, read through nix.

use std::net::IpAddr;

/// The machine's host name, if it has a usable one.
pub fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim().to_lowercase();
    // "(none)" is what a kernel says before anyone set the name
    (!name.is_empty() && name != "localhost" && name != "(none)").then_some(name)
}

/// Addresses of the machine's interfaces that a browser could use to reach
/// it: IPv4 and non-link-local IPv6, loopback excluded.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(storage) = ifa.address else { continue };
            let ip = if let Some(v4) = storage.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = storage.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let skip = ip.is_loopback()
                || ip.is_unspecified()
                || matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if !skip && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// A TCP socket bound to `addr` (privileged ports need root here) but not
/// listening yet: connections are refused until [`listen`].
pub fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Starts accepting on a socket from [`bind_tcp`] (no privilege needed).
pub fn listen(s: socket2::Socket) -> std::io::Result<tokio::net::TcpListener> {
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(s.into())
}
