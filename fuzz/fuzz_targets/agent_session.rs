//! A whole `/agent` session's input side: a sequence of text and binary messages
//! parsed by `protocol::parse` and fed, in order, into one `InputDecoder`, as the
//! server's input pump does (a fatal error ends the session there). Covers `start`
//! in every format (valid or not), audio in each (PCM16 at 8/16/24/48 kHz, mu-law;
//! any length, odd ones too), mute in between, and arbitrary JSON.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use voxgate_transport::input::{InputDecoder, PIPELINE_RATE, Step};
use voxgate_transport::protocol::{Incoming, Limits, parse};
use voxgate_transport::{ServerEvent, WireIn};

/// Rates a client may declare: the supported ones first, then some that are not.
const RATES: [u32; 8] = [8000, 16000, 24000, 48000, 0, 22050, 44100, u32::MAX];

#[derive(Arbitrary, Debug)]
enum Message {
    /// A well-formed `start`.
    Start { mulaw: bool, rate: u8, output_rate: Option<u8> },
    Text(String),
    Mute,
    Unmute,
    Ping(Option<i64>),
    End,
    /// Any text message.
    Json(String),
    Audio(Vec<u8>),
    /// Audio of `frames` whole 20 ms frames at the declared format, plus `extra` bytes.
    Frames { frames: u8, extra: u8, seed: u8 },
    Close,
}

#[derive(Arbitrary, Debug)]
struct Session {
    /// Small limits, so size errors are reached too.
    small_limits: bool,
    messages: Vec<Message>,
}

fn wire(m: &Message, frame_bytes: usize) -> WireIn {
    let text = |v: serde_json::Value| WireIn::Text(v.to_string());
    let rate = |i: u8| RATES[usize::from(i) % RATES.len()];
    match m {
        Message::Start { mulaw, rate: r, output_rate } => {
            let mut audio = json!({"encoding": if *mulaw { "mulaw" } else { "pcm16" }, "sampleRate": rate(*r)});
            if let Some(o) = output_rate {
                audio["outputSampleRate"] = json!(rate(*o));
            }
            text(json!({"type": "start", "audio": audio}))
        }
        Message::Text(t) => text(json!({"type": "text", "text": t})),
        Message::Mute => text(json!({"type": "mute"})),
        Message::Unmute => text(json!({"type": "unmute"})),
        Message::Ping(id) => text(json!({"type": "ping", "id": id})),
        Message::End => text(json!({"type": "end"})),
        Message::Json(s) => WireIn::Text(s.clone()),
        Message::Audio(b) => WireIn::Binary(b.clone()),
        Message::Frames { frames, extra, seed } => {
            let len = usize::from(*frames) * frame_bytes + usize::from(*extra);
            WireIn::Binary((0..len).map(|i| (i as u8).wrapping_mul(*seed)).collect())
        }
        Message::Close => WireIn::Close,
    }
}

fuzz_target!(|session: Session| {
    let limits = if session.small_limits { Limits { max_text_bytes: 64, max_audio_bytes: 1000 } } else { Limits::default() };
    let mut decoder = InputDecoder::new(limits);
    let mut frames = Vec::new();
    for m in &session.messages {
        let frame_bytes = decoder.format().map_or(640, |f| f.frame_bytes());
        let msg = wire(m, frame_bytes);
        let result = match parse(&msg, decoder.limits()) {
            Ok(Incoming::Close) => break,
            Ok(Incoming::Audio(bytes)) => decoder.audio(bytes, &mut frames).map(|()| None),
            Ok(Incoming::Message(m)) => decoder.message(m).map(Some),
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(Step::Started(n))) => {
                assert_eq!(decoder.format(), Some(n.input));
                assert_eq!(n.input.encoding, n.output.encoding);
            }
            Ok(Some(Step::Reply(ev))) => {
                let _ = ev.to_wire();
            }
            Ok(Some(Step::End)) => break,
            Ok(_) => {}
            Err(e) => {
                // What the server sends back: an `error` event, and a close frame if fatal.
                let _ = ServerEvent::error(&e).to_wire();
                if let Some(close) = e.close() {
                    assert!(close.reason.len() <= voxgate_transport::close::MAX_REASON);
                    break;
                }
            }
        }
        for f in frames.drain(..) {
            assert_eq!(f.rate, PIPELINE_RATE.hz());
            assert_eq!(f.samples.len(), PIPELINE_RATE.frame_samples());
        }
    }
});
