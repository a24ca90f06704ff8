//! Fuzz `protocol::Message::decode`: it must never panic, and whatever it accepts must encode
//! back to the same bytes but for the reserved fields (which decode ignores and encode writes as
//! zero), fit in `MAX_PACKET`, and decode again to the same message.
#![no_main]

use asound_module_pcm_rdmix::protocol::{Message, MAX_PACKET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let b = m.encode();
        let mut canon = data.to_vec();
        // The reserved u32 at bytes 12..16 of Hello, Welcome and Query.
        if matches!(m, Message::Hello { .. } | Message::Welcome { .. } | Message::Query { .. }) {
            canon[12..16].fill(0);
        }
        assert_eq!(b, canon, "{m:?} re-encodes differently");
        assert!(b.len() <= MAX_PACKET, "{m:?} encodes to {} bytes", b.len());
        assert_eq!(Message::decode(&b).expect("re-decode"), m);
    }
});
