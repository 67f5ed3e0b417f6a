//! Batched UDP syscalls (recvmmsg/sendmmsg through nix): one system call
//! moves up to [`SLOTS`] datagrams, which is where a relay's CPU goes on a
//! busy box (per-datagram `recvfrom`/`sendto` cost more than the protocol).

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
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
    got: Vec<Received>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buf: vec![0u8; SLOTS * SLOT_LEN],
            got: Vec::with_capacity(SLOTS),
            headers: MultiHeaders::preallocate(SLOTS, None),
        }
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

impl RecvBatch {
    /// Reads what `sock` holds, up to [`SLOTS`] datagrams, without waiting
    /// (`WouldBlock` when empty; tokio's readiness is cleared then).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let RecvBatch { buf, got, headers } = self;
        got.clear();
        sock.try_io(Interest::READABLE, || {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buf.chunks_mut(SLOT_LEN).map(|c| [IoSliceMut::new(c)]).collect();
            let res = recvmmsg(sock.as_raw_fd(), headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            for m in res {
                let Some(from) = m.address.as_ref().and_then(socket_addr) else { continue };
                got.push(Received { len: m.bytes, from, truncated: m.flags.contains(MsgFlags::MSG_TRUNC) });
            }
            Ok(())
        })?;
        Ok(self.got.len())
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`].
    pub fn get(&self, i: usize) -> (Received, &[u8]) {
        let r = self.got[i];
        let start = i * SLOT_LEN;
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
