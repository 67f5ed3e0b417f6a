use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const TID: &str = "b7e7a701 bc34d686 fa87dfae";

// RFC 5769 §2.1: sample request, short-term credentials.
fn rfc5769_request() -> Vec<u8> {
    hex(&format!(
        "00010058 2112a442 {TID}
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf"
    ))
}

#[test]
fn rfc5769_sample_request() {
    let raw = rfc5769_request();
    let m = Message::parse(&raw).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Request, method::BINDING));
    assert_eq!(m.text(attr::USERNAME, 513), Some("evtj:h6vY"));
    assert_eq!(m.text(attr::SOFTWARE, 763), Some("STUN test client"));
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    assert!(m.unknown_required().is_empty(), "PRIORITY is known");
}

#[test]
fn rfc5769_ipv4_response() {
    let raw = hex(&format!(
        "0101003c 2112a442 {TID}
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96"
    ));
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok("192.0.2.1:32853".parse().unwrap())));
    assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
}

#[test]
fn rfc5769_ipv6_response() {
    let raw = hex(&format!(
        "01010048 2112a442 {TID}
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c"
    ));
    let m = Message::parse(&raw).unwrap();
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(Ok("[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()))
    );
    assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
}

#[test]
fn rfc5769_long_term_credentials() {
    let raw = hex(
        "00010060 2112a442 78ad3433 c6ad72c0 29da412e
         00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
         0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
         0014000b 6578616d 706c652e 6f726700
         00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666",
    );
    let m = Message::parse(&raw).unwrap();
    let user = m.text(attr::USERNAME, 513).unwrap();
    assert_eq!(user, "マトリックス");
    assert_eq!(m.text(attr::REALM, 763), Some("example.org"));
    assert_eq!(m.text(attr::NONCE, 763), Some("f//499k954d6OL34oL9FSTvy64sA"));
    // the password "The\u{ad}M\u{aa}tr\u{2168}" after SASLprep
    let key = long_term_key(user, "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
}

#[test]
fn builder_output_verifies_and_round_trips() {
    let tid = [7u8; 12];
    let key = long_term_key("1700000000:alice", "parvis", "secret");
    let peer4: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let peer6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let raw = Builder::new(Class::Request, method::CREATE_PERMISSION, tid)
        .attr(attr::USERNAME, b"1700000000:alice")
        .xor_address(attr::XOR_PEER_ADDRESS, peer4)
        .xor_address(attr::XOR_PEER_ADDRESS, peer6)
        .u32_attr(attr::LIFETIME, 600)
        .integrity(&key)
        .finish_with_fingerprint();
    let m = Message::parse(&raw).unwrap();
    assert_eq!((m.class(), m.method(), m.transaction_id()), (Class::Request, method::CREATE_PERMISSION, tid));
    let peers: Vec<_> = m.xor_peer_addresses().collect();
    assert_eq!(peers, vec![Ok(peer4), Ok(peer6)]);
    assert_eq!(m.lifetime(), Some(600));
    assert!(m.verify_integrity(&key));
    let err = Builder::new(Class::Error, method::ALLOCATE, tid).error(438, "Stale Nonce").finish_with_fingerprint();
    assert_eq!(Message::parse(&err).unwrap().error_code(), Some((438, "Stale Nonce")));
}

#[test]
fn message_type_encoding_matches_rfc() {
    assert_eq!(join_type(Class::Request, method::BINDING), 0x0001);
    assert_eq!(join_type(Class::Success, method::BINDING), 0x0101);
    assert_eq!(join_type(Class::Error, method::ALLOCATE), 0x0113);
    assert_eq!(join_type(Class::Indication, method::SEND), 0x0016);
    assert_eq!(join_type(Class::Indication, method::DATA), 0x0017);
    for t in 0..0x4000u16 {
        let (c, m) = split_type(t);
        assert_eq!(join_type(c, m), t);
    }
}

#[test]
fn the_packet_that_kills_turn_rs_is_refused() {
    // Binding, length 5 (unaligned), one attribute of length 1, no padding.
    let raw = hex(&format!("00010005 2112a442 {TID} 80220001 41"));
    assert_eq!(Message::parse(&raw).unwrap_err(), DecodeError::UnalignedLength);
    // Same with a lying aligned length: truncated, not over-read.
    let raw = hex(&format!("00010008 2112a442 {TID} 80220001 41"));
    assert_eq!(Message::parse(&raw).unwrap_err(), DecodeError::LengthMismatch);
}

#[test]
fn every_attribute_type_and_short_length_without_padding_is_safe() {
    let mut buf = hex(&format!("00010000 2112a442 {TID}"));
    for t in 0..=u16::MAX {
        for len in 0..8usize {
            buf.truncate(HEADER_LEN);
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&(len as u16).to_be_bytes());
            buf.extend(std::iter::repeat_n(0xA5, len));
            let body = (buf.len() - HEADER_LEN) as u16;
            buf[2..4].copy_from_slice(&body.to_be_bytes());
            if let Ok(m) = Message::parse(&buf) {
                // typed getters on whatever came in must not panic either
                let _ = (m.lifetime(), m.channel_number(), m.requested_transport(), m.requested_family());
                let _ = (m.xor_address(t), m.error_code(), m.text(t, 763), m.verify_integrity(b"k"));
                let _ = m.verify_integrity_sha256(b"k");
            }
        }
    }
}

#[test]
fn header_length_beyond_the_datagram_is_refused() {
    let mut raw = rfc5769_request();
    raw[3] = 0x5c;
    assert_eq!(Message::parse(&raw).unwrap_err(), DecodeError::LengthMismatch);
    assert_eq!(Message::parse(&raw[..19]).unwrap_err(), DecodeError::TooShort);
    let mut bad = rfc5769_request();
    bad[4] = 0;
    assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadCookie);
}

#[test]
fn two_thousand_attributes_parse_in_one_bounded_pass() {
    let mut b = Builder::new(Class::Request, method::BINDING, [1; 12]);
    for i in 0..2000u16 {
        b = b.attr(0x8100 + (i % 64), &[1, 2, 3, 4]);
    }
    let raw = b.finish();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.attrs(0x8100).count(), 32);
}

#[test]
fn malformed_xor_peer_address_is_an_error_not_a_crash() {
    let raw = Builder::new(Class::Request, method::CREATE_PERMISSION, [2; 12])
        .attr(attr::XOR_PEER_ADDRESS, &[0, 3, 0, 1])
        .finish();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.xor_peer_addresses().collect::<Vec<_>>(), vec![Err(())]);
}

#[test]
fn attributes_after_integrity_are_ignored_and_first_duplicate_wins() {
    let key = b"key";
    let mut raw = Builder::new(Class::Request, method::REFRESH, [3; 12])
        .u32_attr(attr::LIFETIME, 600)
        .u32_attr(attr::LIFETIME, 0)
        .integrity(key)
        .finish();
    // append an attribute after MESSAGE-INTEGRITY (unknown, required) by hand
    raw.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 0]); // LIFETIME 0
    raw.extend_from_slice(&[0x7F, 0xFF, 0x00, 0x00]); // unknown required
    let len = (raw.len() - HEADER_LEN) as u16;
    raw[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.lifetime(), Some(600), "first of duplicates, and nothing after MI");
    assert!(m.unknown_required().is_empty(), "unknown attributes after MI are ignored");
    assert!(m.verify_integrity(key), "the MAC covers only what precedes it");
}

#[test]
fn unknown_comprehension_required_attributes_are_reported() {
    let raw = Builder::new(Class::Request, method::BINDING, [4; 12])
        .attr(attr::CHANGE_REQUEST, &[0, 0, 0, 6])
        .attr(0x7FFE, b"x")
        .attr(0xC001, b"optional")
        .finish_with_fingerprint();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.unknown_required(), &[attr::CHANGE_REQUEST, 0x7FFE]);
}

#[test]
fn wrong_fingerprint_or_attribute_after_it_is_refused() {
    let mut raw = Builder::new(Class::Request, method::BINDING, [5; 12]).finish_with_fingerprint();
    let n = raw.len();
    raw[n - 1] ^= 1;
    assert_eq!(Message::parse(&raw).unwrap_err(), DecodeError::BadFingerprint);
    let mut raw = Builder::new(Class::Request, method::BINDING, [5; 12]).finish_with_fingerprint();
    raw.extend_from_slice(&[0x80, 0x22, 0, 0]);
    let len = (raw.len() - HEADER_LEN) as u16;
    raw[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(Message::parse(&raw).is_err());
}

#[test]
fn integrity_sha256_full_and_truncated() {
    let key = b"sha-key";
    let raw = Builder::new(Class::Request, method::ALLOCATE, [6; 12]).attr(attr::USERNAME, b"u").finish();
    // compute the SHA-256 MAC by hand, full length
    let mut full = raw.clone();
    let len = (full.len() + 36 - HEADER_LEN) as u16;
    full[2..4].copy_from_slice(&len.to_be_bytes());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(&full);
    let tag = mac.finalize().into_bytes();
    full.extend_from_slice(&[0x00, 0x1C, 0x00, 0x20]);
    full.extend_from_slice(&tag);
    let m = Message::parse(&full).unwrap();
    assert!(m.verify_integrity_sha256(key));
    assert!(!m.verify_integrity_sha256(b"other"));
    assert!(!m.verify_integrity(key), "no SHA-1 MAC present");
}

#[test]
fn channel_data_framing() {
    let mut out = Vec::new();
    ChannelData::encode(0x4001, b"hello", &mut out);
    assert_eq!(out.len(), 12);
    assert_eq!(ChannelData::frame_len(&out), Some(12));
    assert_eq!(ChannelData::parse(&out), Some(ChannelData { channel: 0x4001, data: b"hello" }));
    assert_eq!(ChannelData::parse(&[0x80, 0, 0, 0]), None, "channel numbers stop at 0x7FFF");
    assert_eq!(ChannelData::parse(&[0x3F, 0xFF, 0, 0]), None, "and start at 0x4000");
    assert_eq!(ChannelData::parse(&[0x7F, 0xFF, 0, 0]), Some(ChannelData { channel: 0x7FFF, data: b"" }));
    assert_eq!(ChannelData::parse(&[0x40, 0, 0, 9, 1]), None, "length past the end");
}

/// stun-rs as an independent implementation: what it encodes with
/// MESSAGE-INTEGRITY and FINGERPRINT, this decoder accepts and verifies.
#[test]
fn interop_with_stun_rs_encoder() {
    use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
    use stun_rs::methods::BINDING;
    use stun_rs::{HMACKey, MessageClass, MessageEncoderBuilder, StunMessageBuilder};
    let key = HMACKey::new_short_term("secret-pw").unwrap();
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_attribute(UserName::try_from("alice:bob").unwrap())
        .with_attribute(MessageIntegrity::new(key))
        .with_attribute(Fingerprint::default())
        .build();
    let encoder = MessageEncoderBuilder::default().build();
    let mut buf = [0u8; 256];
    let n = encoder.encode(&mut buf, &msg).unwrap();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!(m.text(attr::USERNAME, 513), Some("alice:bob"));
    assert!(m.has_fingerprint());
    assert!(m.verify_integrity(b"secret-pw"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
        let _ = ChannelData::parse(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_stun_shaped_bytes(body in proptest::collection::vec(any::<u8>(), 0..400), tid in any::<[u8; 12]>()) {
        let mut raw = Builder::new(Class::Request, method::ALLOCATE, tid).finish();
        raw.extend_from_slice(&body);
        let len = (body.len() as u16) & !3;
        raw.truncate(HEADER_LEN + len as usize);
        raw[2..4].copy_from_slice(&len.to_be_bytes());
        if let Ok(m) = Message::parse(&raw) {
            for t in [attr::XOR_PEER_ADDRESS, attr::LIFETIME, attr::USERNAME, attr::CHANNEL_NUMBER] {
                let _ = (m.attr(t), m.xor_address(t), m.text(t, 513));
            }
            let _ = (m.verify_integrity(b"k"), m.verify_integrity_sha256(b"k"), m.xor_peer_addresses().count());
        }
    }

    #[test]
    fn encode_then_decode_round_trips(
        attrs in proptest::collection::vec((0x8100u16..0x8200, proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
        tid in any::<[u8; 12]>(),
        key in proptest::collection::vec(any::<u8>(), 1..32),
        port in any::<u16>(), ip in any::<[u8; 16]>(),
    ) {
        let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port);
        let mut b = Builder::new(Class::Success, method::ALLOCATE, tid).xor_address(attr::XOR_RELAYED_ADDRESS, addr);
        for (t, v) in &attrs {
            b = b.attr(*t, v);
        }
        let raw = b.integrity(&key).finish_with_fingerprint();
        let m = Message::parse(&raw).unwrap();
        prop_assert_eq!(m.transaction_id(), tid);
        prop_assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS), Some(Ok(addr)));
        for (t, v) in &attrs {
            // first of duplicates wins
            let first = attrs.iter().find(|(t2, _)| t2 == t).unwrap();
            prop_assert_eq!(m.attr(*t), Some(first.1.as_slice()));
            let _ = v;
        }
        prop_assert!(m.verify_integrity(&key));
    }
}
