//! One `/agent` text message as raw bytes: the server's parser (`parse_text`, with
//! the default and with small limits, then format negotiation for `start`), and the
//! Rust client's reading of server events (`ServerEvent`, used by `voxgate call`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_transport::protocol::{Limits, parse_text};
use voxgate_transport::{ClientMessage, ServerEvent};

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer refuses text that is not UTF-8 before the parser sees it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    for limits in [Limits::default(), Limits { max_text_bytes: 32, max_audio_bytes: 32 }] {
        match parse_text(text, &limits) {
            Ok(ClientMessage::Start { audio }) => {
                if let Ok(n) = audio.negotiate() {
                    let _ = (n.input.frame_bytes(), n.output.frame_bytes());
                }
            }
            Ok(msg) => {
                // The Rust client serializes the same type: it must round-trip.
                let again = serde_json::to_string(&msg).expect("serializes");
                assert_eq!(parse_text(&again, &Limits { max_text_bytes: usize::MAX, ..limits }).ok(), Some(msg));
            }
            Err(e) => {
                let _ = (e.code(), e.close(), ServerEvent::error(&e).to_wire());
            }
        }
    }
    if let Ok(ev) = serde_json::from_str::<ServerEvent>(text) {
        let _ = ev.to_wire();
        let _ = ev.to_wire_with_resume_token(Some("token"));
    }
});
