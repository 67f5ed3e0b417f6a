//! STUN messages (RFC 8489) with the TURN (RFC 8656) and IPv6 (RFC 6156)
//! attributes: a zero-copy decoder for untrusted datagrams and an encoder.
//!
//! The decoder borrows the datagram, allocates nothing, and does bounded work
//! per byte: one pass over the attributes, each length checked against what
//! is left before it is read. Rules from RFC 8489 §14 and §9:
//! - attributes after MESSAGE-INTEGRITY are ignored, except
//!   MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; nothing follows FINGERPRINT;
//! - of duplicate attributes the first wins;
//! - unknown comprehension-required attributes (type < 0x8000) are reported
//!   so that the server answers 420 with UNKNOWN-ATTRIBUTES;
//! - MACs are compared in constant time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute types used here (RFC 8489 §18.3, RFC 8656 §18, RFC 5780, RFC 8445).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Comprehension-required attributes this implementation understands.
    /// CHANGE-REQUEST (RFC 5780) is deliberately absent: a request using it
    /// gets 420, never a reflection to another address. So is
    /// RESERVATION-TOKEN: relay port reservations are not offered.
    pub const KNOWN_REQUIRED: &[u16] = &[
        MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES, CHANNEL_NUMBER,
        LIFETIME, XOR_PEER_ADDRESS, DATA, REALM, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT, REQUESTED_TRANSPORT, DONT_FRAGMENT, MESSAGE_INTEGRITY_SHA256, PASSWORD_ALGORITHM,
        USERHASH, XOR_MAPPED_ADDRESS, PRIORITY, USE_CANDIDATE,
    ];
}

/// Methods (RFC 8489 §18.2, RFC 8656 §17).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// Splits the 14-bit message type into class and 12-bit method.
pub fn split_type(t: u16) -> (Class, u16) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    (class, method)
}

/// Builds the 14-bit message type from class and method.
pub fn join_type(class: Class, method: u16) -> u16 {
    let c = class.bits();
    (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Why a datagram is not a STUN message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("first two bits not zero")]
    NotStun,
    #[error("wrong magic cookie")]
    BadCookie,
    #[error("length not a multiple of 4")]
    UnalignedLength,
    #[error("header length does not match the datagram")]
    LengthMismatch,
    #[error("attribute runs past the end of the message")]
    TruncatedAttribute,
    #[error("FINGERPRINT is wrong")]
    BadFingerprint,
    #[error("attribute after FINGERPRINT")]
    AfterFingerprint,
}

/// Most distinct unknown comprehension-required attributes reported.
pub const MAX_UNKNOWN: usize = 8;

/// A decoded STUN message borrowing its datagram.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    class: Class,
    method: u16,
    /// Offset of MESSAGE-INTEGRITY's header, if present.
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    has_fingerprint: bool,
    /// End of the attributes that count (MESSAGE-INTEGRITY's end, or all).
    counted_end: usize,
    unknown: [u16; MAX_UNKNOWN],
    unknown_len: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// True when the first byte says "STUN" (RFC 7983 demultiplexing: 0–3).
pub fn looks_like_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] < 4 && be32(b, 4) == MAGIC_COOKIE
}

impl<'a> Message<'a> {
    /// Decodes a whole datagram (or one TCP-framed message).
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        if raw.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if raw[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        if be32(raw, 4) != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie);
        }
        let len = be16(raw, 2) as usize;
        if !len.is_multiple_of(4) {
            return Err(DecodeError::UnalignedLength);
        }
        if HEADER_LEN + len != raw.len() {
            return Err(DecodeError::LengthMismatch);
        }
        let (class, method) = split_type(be16(raw, 0));
        let mut m = Message {
            raw,
            class,
            method,
            integrity: None,
            integrity_sha256: None,
            has_fingerprint: false,
            counted_end: raw.len(),
            unknown: [0; MAX_UNKNOWN],
            unknown_len: 0,
        };
        let mut at = HEADER_LEN;
        while at < raw.len() {
            if raw.len() - at < 4 {
                return Err(DecodeError::TruncatedAttribute);
            }
            let t = be16(raw, at);
            let vlen = be16(raw, at + 2) as usize;
            let padded = (vlen + 3) & !3;
            if raw.len() - at - 4 < padded {
                return Err(DecodeError::TruncatedAttribute);
            }
            if m.has_fingerprint {
                return Err(DecodeError::AfterFingerprint);
            }
            let after_integrity = m.integrity.is_some() || m.integrity_sha256.is_some();
            match t {
                attr::FINGERPRINT => {
                    if vlen != 4 {
                        return Err(DecodeError::BadFingerprint);
                    }
                    let expected = crc32_adjusted(raw, at) ^ FINGERPRINT_XOR;
                    if be32(raw, at + 4) != expected {
                        return Err(DecodeError::BadFingerprint);
                    }
                    m.has_fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY if !after_integrity => {
                    m.integrity = Some(at);
                    m.counted_end = at + 4 + padded;
                }
                attr::MESSAGE_INTEGRITY_SHA256 if m.integrity_sha256.is_none() => {
                    m.integrity_sha256 = Some(at);
                    if m.integrity.is_none() {
                        m.counted_end = at + 4 + padded;
                    }
                }
                _ if after_integrity => {} // ignored (RFC 8489 §14.5)
                _ => {
                    if t < 0x8000 && !attr::KNOWN_REQUIRED.contains(&t) && m.unknown_len < MAX_UNKNOWN
                        && !m.unknown[..m.unknown_len].contains(&t)
                    {
                        m.unknown[m.unknown_len] = t;
                        m.unknown_len += 1;
                    }
                }
            }
            at += 4 + padded;
        }
        Ok(m)
    }

    pub fn class(&self) -> Class {
        self.class
    }
    pub fn method(&self) -> u16 {
        self.method
    }
    pub fn transaction_id(&self) -> [u8; 12] {
        self.raw[8..20].try_into().expect("12 bytes")
    }
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Unknown comprehension-required attributes (answer 420 with these).
    pub fn unknown_required(&self) -> &[u16] {
        &self.unknown[..self.unknown_len]
    }

    /// Every counted attribute with this type, in order.
    pub fn attrs(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let raw = self.raw;
        let end = self.counted_end;
        let mut at = HEADER_LEN;
        std::iter::from_fn(move || {
            while at + 4 <= end {
                let ty = be16(raw, at);
                let vlen = be16(raw, at + 2) as usize;
                let start = at + 4;
                at = start + ((vlen + 3) & !3);
                if ty == t {
                    return Some(&raw[start..start + vlen]);
                }
            }
            None
        })
    }

    /// The first counted attribute with this type.
    pub fn attr(&self, t: u16) -> Option<&'a [u8]> {
        self.attrs(t).next()
    }

    /// A UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE), bounded.
    pub fn text(&self, t: u16, max: usize) -> Option<&'a str> {
        let v = self.attr(t)?;
        if v.len() > max {
            return None;
        }
        std::str::from_utf8(v).ok()
    }

    pub fn u32_attr(&self, t: u16) -> Option<u32> {
        let v = self.attr(t)?;
        (v.len() == 4).then(|| be32(v, 0))
    }

    /// EVEN-PORT: `Some(reserve_next)` when present and well-formed.
    pub fn even_port(&self) -> Option<Result<bool, ()>> {
        let v = self.attr(attr::EVEN_PORT)?;
        Some(if v.len() == 1 { Ok(v[0] & 0x80 != 0) } else { Err(()) })
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Option<u32> {
        self.u32_attr(attr::LIFETIME)
    }

    /// CHANNEL-NUMBER (the upper 16 bits; RFFU is ignored on reception,
    /// RFC 8656 §18.1).
    pub fn channel_number(&self) -> Option<u16> {
        let v = self.attr(attr::CHANNEL_NUMBER)?;
        (v.len() == 4).then(|| be16(v, 0))
    }

    /// REQUESTED-TRANSPORT protocol number (17 = UDP).
    pub fn requested_transport(&self) -> Option<u8> {
        let v = self.attr(attr::REQUESTED_TRANSPORT)?;
        (v.len() == 4).then(|| v[0])
    }

    /// REQUESTED-ADDRESS-FAMILY: 0x01 IPv4, 0x02 IPv6; `Err` when malformed.
    pub fn requested_family(&self) -> Option<Result<u8, ()>> {
        let v = self.attr(attr::REQUESTED_ADDRESS_FAMILY)?;
        Some(if v.len() == 4 && (v[0] == 1 || v[0] == 2) { Ok(v[0]) } else { Err(()) })
    }

    /// An XOR-encoded address attribute; `Err` when malformed.
    pub fn xor_address(&self, t: u16) -> Option<Result<SocketAddr, ()>> {
        self.attr(t).map(|v| decode_xor_address(v, &self.transaction_id()))
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, ()>> + '_ {
        let tid = self.transaction_id();
        self.attrs(attr::XOR_PEER_ADDRESS).map(move |v| decode_xor_address(v, &tid))
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.attr(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, std::str::from_utf8(&v[4..]).unwrap_or("")))
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with a long-term or short-term
    /// key, in constant time. False when absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity else { return false };
        let v = &self.raw[at + 4..];
        if be16(self.raw, at + 2) != 20 || v.len() < 20 {
            return false;
        }
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        feed_adjusted(&mut mac, self.raw, at, 24);
        mac.verify_slice(&v[..20]).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated to ≥ 16 bytes).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_sha256 else { return false };
        let n = be16(self.raw, at + 2) as usize;
        if !(16..=32).contains(&n) || !n.is_multiple_of(4) {
            return false;
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        feed_adjusted(&mut mac, self.raw, at, 4 + n);
        mac.verify_truncated_left(&self.raw[at + 4..at + 4 + n]).is_ok()
    }
}

/// Feeds the message up to `at` into `mac`, with the header length set as if
/// the message ended `extra` bytes after `at` (RFC 8489 §14.5).
fn feed_adjusted<M: Mac>(mac: &mut M, raw: &[u8], at: usize, extra: usize) {
    let len = (at + extra - HEADER_LEN) as u16;
    mac.update(&raw[0..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&raw[4..at]);
}

fn crc32_adjusted(raw: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = (at + 8 - HEADER_LEN) as u16;
    h.update(&raw[0..2]);
    h.update(&len.to_be_bytes());
    h.update(&raw[4..at]);
    h.finalize()
}

fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Result<SocketAddr, ()> {
    if v.len() < 4 {
        return Err(());
    }
    let port = be16(v, 2) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (0x01, 8) => {
            let ip = be32(v, 4) ^ MAGIC_COOKIE;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(()),
    }
}

/// Writes a STUN message into a buffer. Attributes are appended in call
/// order; `finish*` fixes the length and adds integrity/fingerprint.
#[derive(Clone)]
pub struct Builder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl Builder {
    pub fn new(class: Class, method: u16, tid: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&join_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    /// A raw attribute, padded with zeros.
    pub fn attr(mut self, t: u16, value: &[u8]) -> Builder {
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    pub fn u32_attr(self, t: u16, v: u32) -> Builder {
        self.attr(t, &v.to_be_bytes())
    }

    /// An XOR-encoded address (XOR-MAPPED/-PEER/-RELAYED-ADDRESS).
    pub fn xor_address(self, t: u16, addr: SocketAddr) -> Builder {
        let port = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
        match addr.ip() {
            IpAddr::V4(ip) => {
                let x = (u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes();
                self.attr(t, &[0, 1, port[0], port[1], x[0], x[1], x[2], x[3]])
            }
            IpAddr::V6(ip) => {
                let mut v = vec![0, 2, port[0], port[1]];
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                mask[4..].copy_from_slice(&self.tid);
                v.extend(ip.octets().iter().zip(mask).map(|(a, b)| a ^ b));
                self.attr(t, &v)
            }
        }
    }

    /// ERROR-CODE with its reason phrase.
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// UNKNOWN-ATTRIBUTES listing `types`.
    pub fn unknown_attributes(self, types: &[u16]) -> Builder {
        let v: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.attr(attr::UNKNOWN_ATTRIBUTES, &v)
    }

    fn set_len(&mut self, extra: usize) {
        let len = (self.buf.len() + extra - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn integrity(mut self, key: &[u8]) -> Builder {
        self.set_len(24);
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag)
    }

    /// Adds MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256 with `key`, full 32 bytes).
    pub fn integrity_sha256(mut self, key: &[u8]) -> Builder {
        self.set_len(36);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &tag)
    }

    /// Adds FINGERPRINT and returns the bytes.
    pub fn finish_with_fingerprint(mut self) -> Vec<u8> {
        self.set_len(8);
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        let mut b = self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
        b.set_len(0);
        b.buf
    }

    /// Returns the bytes without FINGERPRINT.
    pub fn finish(mut self) -> Vec<u8> {
        self.set_len(0);
        self.buf
    }
}

/// The long-term credential key (RFC 8489 §9.2.2): MD5(username:realm:password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// A ChannelData message (RFC 8656 §12.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses one ChannelData message. Over UDP the datagram may carry
    /// padding after the data; over TCP use [`ChannelData::frame_len`].
    pub fn parse(b: &'a [u8]) -> Option<ChannelData<'a>> {
        if b.len() < 4 {
            return None;
        }
        let channel = be16(b, 0);
        if !crate::turn::CHANNELS.contains(&channel) {
            return None;
        }
        let len = be16(b, 2) as usize;
        if b.len() - 4 < len {
            return None;
        }
        Some(ChannelData { channel, data: &b[4..4 + len] })
    }

    /// Bytes one ChannelData occupies on a stream (padded to 4).
    pub fn frame_len(header: &[u8]) -> Option<usize> {
        (header.len() >= 4).then(|| 4 + ((be16(header, 2) as usize + 3) & !3))
    }

    /// Encodes, padding to a multiple of 4 (required on streams, allowed on UDP).
    pub fn encode(channel: u16, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&[0u8; 3][..(4 - data.len() % 4) % 4]);
    }
}

/// Length of the STUN message at the start of a stream buffer, once its
/// header is there (RFC 8489 §6.2.2 framing over TCP/TLS).
pub fn stream_frame_len(header: &[u8]) -> Option<usize> {
    (header.len() >= 4).then(|| HEADER_LEN + be16(header, 2) as usize)
}

#[cfg(test)]
mod tests;
