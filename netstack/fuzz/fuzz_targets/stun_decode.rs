//! Any bytes: the decoder and every typed getter return, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netstack::stun::{ChannelData, Message, attr};

fuzz_target!(|data: &[u8]| {
    let _ = ChannelData::parse(data);
    if let Ok(m) = Message::parse(data) {
        for t in [attr::XOR_PEER_ADDRESS, attr::XOR_MAPPED_ADDRESS, attr::USERNAME, attr::REALM, attr::NONCE] {
            let _ = (m.attr(t), m.xor_address(t), m.text(t, 763));
        }
        let _ = (m.lifetime(), m.channel_number(), m.requested_transport(), m.requested_family(), m.error_code());
        let _ = (m.verify_integrity(b"key"), m.verify_integrity_sha256(b"key"), m.xor_peer_addresses().count());
    }
});
