//! Differential: when stun-rs decodes a message and checks its FINGERPRINT,
//! ours must accept it too (the reverse is not required: stun-rs rejects
//! some valid messages, see shared/notes/STUN-CODECS.md).
#![no_main]
use libfuzzer_sys::fuzz_target;
use stun_rs::MessageDecoderBuilder;

fuzz_target!(|data: &[u8]| {
    let decoder = MessageDecoderBuilder::default().build();
    if let Ok((msg, size)) = decoder.decode(data) {
        let has_fingerprint = msg.attributes().iter().any(|a| a.is_fingerprint());
        if size == data.len() && has_fingerprint {
            assert!(netstack::stun::Message::parse(data).is_ok(), "stun-rs accepted, we refused");
        }
    }
});
