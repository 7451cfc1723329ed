//! `cargo +nightly fuzz run tunnel_messages` (from crates/proto): a tunnel fed any sequence
//! of messages by a hostile peer never panics and never buffers past its window.
//!
//! Input: the first byte picks the role; the rest is split into messages at each 0xff byte
//! (messages are mostly short, so the state machine sees many frames per input).
#![no_main]

use std::time::Duration;

use burrow_proto::tunnel::{Config, Event, Role, Tunnel};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const WINDOW: u32 = 4096;

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Client
    } else {
        Role::Agent
    };
    let mut tunnel = Tunnel::new(
        role,
        Config {
            initial_window: WINDOW,
            max_frame_payload: 1024,
            max_streams: 8,
            ..Config::default()
        },
    );
    let mut ids = Vec::new();
    if role == Role::Client {
        for port in [22, 80, 5432] {
            if let Ok(id) = tunnel.open(port) {
                ids.push(id);
            }
        }
    }
    // The clock advances by each message's length in seconds, so inputs reach keepalives
    // and the idle timeout as well as the frame handling.
    let mut now = Duration::ZERO;
    tunnel.handle_timeout(now);
    for msg in rest.split(|b| *b == 0xff) {
        let _ = tunnel.handle_message(Bytes::copy_from_slice(msg));
        now += Duration::from_secs(msg.len() as u64);
        tunnel.handle_timeout(now);
        while let Some(event) = tunnel.poll_event() {
            match event {
                Event::StreamOpened { id, .. } => {
                    ids.push(id);
                    if msg.len() % 2 == 0 {
                        let _ = tunnel.accept(id);
                    }
                }
                Event::Readable { id } if msg.len() % 3 == 0 => {
                    while let Ok(Some(_)) = tunnel.read(id) {}
                }
                _ => {}
            }
        }
        for id in &ids {
            assert!(tunnel.readable_len(*id) <= WINDOW as usize);
            let _ = tunnel.write(*id, msg);
        }
        while tunnel.poll_transmit().is_some() {}
    }
});
