//! `cargo +nightly fuzz run frame_decode` (from crates/proto): decoding any message never
//! panics, and whatever decodes re-encodes to a message that decodes to the same frame.
#![no_main]

use burrow_proto::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|msg: &[u8]| {
    if let Ok(frame) = Frame::decode(msg) {
        assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
    }
});
