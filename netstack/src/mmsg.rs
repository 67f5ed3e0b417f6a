//! Batched UDP syscalls: one system call moves up to [`SLOTS`] datagrams,
//! which is where a relay's CPU goes on a busy box (per-datagram
//! `recvfrom`/`sendto` cost more than the protocol).
//!
//! Why unsafe here: `recvmmsg` is called through libc directly. nix's
//! `MultiHeaders` keeps one `mmsghdr` array across calls and never resets
//! `msg_namelen`, which the kernel shrinks to the length of each source
//! address: a batch that once held an IPv4 source (16 bytes) then cut an
//! IPv6 source (28 bytes) to 16 bytes, and its tail came from stale memory
//! (an IPv4 client of an IPv6 relay lost most of its peer's replies). Here
//! every header is built afresh for each call, on the stack, pointing into
//! buffers this struct owns, and a source address is read only within the
//! length the kernel returned and only for the family it names. The socket
//! options nix lacks for Linux (don't-fragment on IPv4) live here too.
#![allow(unsafe_code)]

use std::io;
use std::io::IoSlice;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const SLOTS: usize = 32;
/// Bytes per received datagram; a larger one arrives truncated and is
/// dropped (WebRTC keeps datagrams under the path MTU, about 1,200 bytes).
pub const SLOT_LEN: usize = 4096;

/// One received datagram in a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub truncated: bool,
}

/// Receive buffers for [`RecvBatch::recv`], reused for every call.
pub struct RecvBatch {
    buf: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    /// What the last call received, with the slot holding each.
    got: Vec<(Received, usize)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch { buf: vec![0u8; SLOTS * SLOT_LEN], names: vec![empty; SLOTS], got: Vec::with_capacity(SLOTS) }
    }
}

/// The address in `s`, of which the kernel filled `len` bytes; `None` for
/// another family or a length too short for the family it names.
fn socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, the
            // kernel wrote all of it (len), and sockaddr_storage is aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

impl RecvBatch {
    /// Reads what `sock` holds, up to [`SLOTS`] datagrams, without waiting
    /// (`WouldBlock` when empty; tokio's readiness is cleared then).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let RecvBatch { buf, names, got } = self;
        got.clear();
        let fd = sock.as_raw_fd();
        sock.try_io(Interest::READABLE, || {
            // SAFETY: iovec and mmsghdr are plain old data; zeroes are valid.
            let mut iovs: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
            for (i, ((iov, hdr), name)) in iovs.iter_mut().zip(hdrs.iter_mut()).zip(names.iter_mut()).enumerate() {
                iov.iov_base = buf[i * SLOT_LEN..].as_mut_ptr().cast();
                iov.iov_len = SLOT_LEN;
                hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                // the whole storage, every call: the kernel shrinks it to each source's length
                hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points into `buf` (SLOT_LEN bytes per slot),
            // `names` and `iovs`, all alive and unaliased for this call; at most
            // SLOTS headers are passed; no timeout.
            let n = unsafe {
                libc::recvmmsg(fd, hdrs.as_mut_ptr(), SLOTS as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for (slot, (hdr, name)) in hdrs.iter().zip(names.iter()).take(n as usize).enumerate() {
                let Some(from) = socket_addr(name, hdr.msg_hdr.msg_namelen) else { continue };
                let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                got.push((Received { len: hdr.msg_len as usize, from, truncated }, slot));
            }
            Ok(())
        })?;
        Ok(self.got.len())
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> (Received, &[u8]) {
        let (r, slot) = self.got[i];
        let start = slot * SLOT_LEN;
        (r, &self.buf[start..start + r.len.min(SLOT_LEN)])
    }
}

/// Outgoing datagrams of one socket, sent together by [`SendBatch::flush`].
pub struct SendBatch {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch { queue: Vec::new(), headers: MultiHeaders::preallocate(SLOTS, None) }
    }
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.queue.push((to, data));
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued, [`SLOTS`] per system call. A full socket
    /// buffer is waited for (briefly: UDP drains fast); a datagram the
    /// kernel refuses (e.g. unreachable) is skipped, not retried.
    pub async fn flush(&mut self, sock: &UdpSocket) {
        let mut done = 0;
        let mut stalls = 0;
        while done < self.queue.len() {
            let end = (done + SLOTS).min(self.queue.len());
            let chunk = &self.queue[done..end];
            let sent = sock.try_io(Interest::WRITABLE, || {
                let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
                let addrs: Vec<Option<SockaddrStorage>> =
                    chunk.iter().map(|(a, _)| Some(SockaddrStorage::from(*a))).collect();
                let res = sendmmsg(sock.as_raw_fd(), &mut self.headers, &slices, &addrs, [], MsgFlags::MSG_DONTWAIT)
                    .map_err(io::Error::from)?;
                Ok(res.count())
            });
            match sent {
                Ok(0) => done += 1,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && stalls < 100 => {
                    stalls += 1;
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(5), sock.writable()).await;
                }
                // sendmmsg reports the first datagram's error: skip it
                Err(_) => done += 1,
            }
        }
        self.queue.clear();
    }
}

/// Asks for large socket buffers (root may exceed `net.core.*mem_max`), so
/// bursts wait in the kernel instead of being dropped.
pub fn set_buffers(sock: &impl std::os::fd::AsFd, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(sock, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::SndBuf, &bytes);
    }
}

/// Sets the don't-fragment bit on every datagram `sock` sends (TURN
/// DONT-FRAGMENT, RFC 8656 §7.2): path MTU discovery "do" on IPv4
/// (`IP_MTU_DISCOVER`, which nix does not wrap for Linux), `IPV6_DONTFRAG`
/// on IPv6. A datagram larger than the path MTU is then refused by the
/// kernel (EMSGSIZE) instead of being fragmented.
pub fn set_dont_fragment(sock: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1 as libc::c_int)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)
    };
    // SAFETY: `value` is a c_int that outlives the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_moves_many_datagrams_each_way_with_their_addresses() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (b_addr, c_addr) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut out = SendBatch::default();
        for i in 0..(SLOTS + 5) as u8 {
            out.push(if i % 2 == 0 { b_addr } else { c_addr }, vec![i; 10 + i as usize]);
        }
        out.flush(&a).await;
        assert!(out.is_empty());
        let mut inb = RecvBatch::default();
        let mut seen = Vec::new();
        for _ in 0..50 {
            b.readable().await.unwrap();
            match inb.recv(&b) {
                Ok(n) => (0..n).for_each(|i| {
                    let (r, d) = inb.get(i);
                    assert_eq!(r.from, a.local_addr().unwrap());
                    assert_eq!(d.len(), 10 + d[0] as usize);
                    seen.push(d[0]);
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if seen.len() == (SLOTS + 5).div_ceil(2) {
                break;
            }
        }
        assert_eq!(seen, (0..(SLOTS + 5) as u8).step_by(2).collect::<Vec<_>>());
    }

    /// The regression: one batch reused across an IPv4 and an IPv6 socket
    /// cut the IPv6 source to the IPv4 length.
    #[tokio::test]
    async fn one_batch_reads_ipv4_then_ipv6_then_ipv4_sources_whole() {
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v6 = UdpSocket::bind("[::1]:0").await.unwrap();
        let from4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let from6 = UdpSocket::bind("[::1]:0").await.unwrap();
        let mut batch = RecvBatch::default();
        for round in 0..3 {
            let (sock, from) = if round % 2 == 0 { (&v4, &from4) } else { (&v6, &from6) };
            for i in 0..SLOTS {
                from.send_to(&[round as u8, i as u8], sock.local_addr().unwrap()).await.unwrap();
            }
            let mut seen = 0;
            while seen < SLOTS {
                sock.readable().await.unwrap();
                let Ok(n) = batch.recv(sock) else { continue };
                for k in 0..n {
                    let (r, d) = batch.get(k);
                    assert_eq!(r.from, from.local_addr().unwrap(), "round {round}, datagram {}", d[1]);
                    assert_eq!(d[0], round as u8);
                }
                seen += n;
            }
        }
    }

    fn int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len outlive the call; len is v's size.
        let r = unsafe { libc::getsockopt(sock.as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(r, 0);
        v
    }

    #[tokio::test]
    async fn dont_fragment_is_set_on_both_families() {
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_ne!(int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER), libc::IP_PMTUDISC_DO);
        set_dont_fragment(&v4, false).unwrap();
        assert_eq!(int_option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER), libc::IP_PMTUDISC_DO);
        let v6 = UdpSocket::bind("[::1]:0").await.unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
        set_dont_fragment(&v6, true).unwrap();
        assert_eq!(int_option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
    }

    #[tokio::test]
    async fn an_oversize_datagram_is_reported_truncated() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(&vec![7u8; SLOT_LEN + 100], b.local_addr().unwrap()).await.unwrap();
        b.readable().await.unwrap();
        let mut inb = RecvBatch::default();
        assert_eq!(inb.recv(&b).unwrap(), 1);
        let (r, d) = inb.get(0);
        assert!(r.truncated);
        assert_eq!(d.len(), SLOT_LEN);
    }
}
