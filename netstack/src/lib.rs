//! STUN/TURN for Parvis (RFC 8489, RFC 8656, RFC 6156).
//!
//! `stun` is the wire codec: zero-copy, allocation-free decoding of untrusted
//! datagrams (see ../shared/notes/STUN-CODECS.md for why it is ours and
//! stun-rs is kept as an independent implementation in tests). The TURN
//! engine and the socket drivers build on it.

pub mod driver;
pub mod limits;
pub mod mmsg;
pub mod stun;
pub mod turn;
