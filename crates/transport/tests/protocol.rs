//! The wire format: round trips both ways, the JSON shapes documented in
//! docs/agent-protocol.md, and hostile input, each to its typed error and close code.

use serde_json::json;
use voxgate_audio::SampleRate;
use voxgate_frames::EndReason;
use voxgate_transport::close::{MAX_REASON, code};
use voxgate_transport::protocol::{Incoming, Role, TurnLatency, parse, parse_text};
use voxgate_transport::{
    AudioFormat, AudioSpec, ClientMessage, Close, Encoding, Limits, PROTOCOL, ProtocolError,
    ServerEvent, WireIn, WireOut, close_for,
};

fn parse_str(s: &str) -> Result<ClientMessage, ProtocolError> {
    parse_text(s, &Limits::default())
}

fn close_code(s: &str) -> u16 {
    parse_str(s).unwrap_err().close_code().expect("fatal")
}

#[test]
fn client_messages_round_trip() {
    let spec = AudioSpec {
        encoding: Encoding::Pcm16,
        sample_rate: 48_000,
        output_sample_rate: Some(24_000),
    };
    let msgs = vec![
        ClientMessage::Start { audio: spec },
        ClientMessage::Start {
            audio: AudioSpec {
                encoding: Encoding::Mulaw,
                sample_rate: 8000,
                output_sample_rate: None,
            },
        },
        ClientMessage::Text {
            text: "héllo, 世界".into(),
        },
        ClientMessage::Mute {},
        ClientMessage::Unmute {},
        ClientMessage::End {},
        ClientMessage::Ping {
            id: Some(json!({"n": 7})),
        },
        ClientMessage::Ping { id: None },
    ];
    for m in msgs {
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(parse_str(&s).unwrap(), m, "{s}");
    }
}

#[test]
fn the_documented_start_message_parses() {
    let m = parse_str(r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":48000,"outputSampleRate":24000}}"#).unwrap();
    let ClientMessage::Start { audio } = m else {
        panic!("{m:?}")
    };
    let n = audio.negotiate().unwrap();
    assert_eq!(n.input, AudioFormat::pcm16(SampleRate::Hz48000));
    assert_eq!(n.output, AudioFormat::pcm16(SampleRate::Hz24000));
    assert_eq!(n.output.frame_bytes(), 960);

    let m =
        parse_str(r#"{"type":"start","audio":{"encoding":"mulaw","sampleRate":8000}}"#).unwrap();
    let ClientMessage::Start { audio } = m else {
        panic!()
    };
    let n = audio.negotiate().unwrap();
    assert_eq!(
        (n.input, n.output),
        (n.input, AudioFormat::new(Encoding::Mulaw, 8000).unwrap())
    );
    assert_eq!(n.output.frame_bytes(), 160);
    assert_eq!(
        parse_str(r#"{"type":"ping","id":"abc"}"#).unwrap(),
        ClientMessage::Ping {
            id: Some(json!("abc"))
        }
    );
}

#[test]
fn server_events_have_the_documented_shape() {
    let started = ServerEvent::CallStarted {
        call_id: "c1".into(),
        assistant_id: "a1".into(),
        protocol: PROTOCOL.into(),
        input: AudioFormat::pcm16(SampleRate::Hz48000),
        output: AudioFormat::new(Encoding::Pcm16, 24000).unwrap(),
    };
    let cases = [
        (
            started,
            json!({"type":"call-started","callId":"c1","assistantId":"a1","protocol":"voxgate.v1",
                   "input":{"encoding":"pcm16","sampleRate":48000},"output":{"encoding":"pcm16","sampleRate":24000}}),
        ),
        (ServerEvent::SpeechStarted, json!({"type":"speech-started"})),
        (ServerEvent::SpeechStopped, json!({"type":"speech-stopped"})),
        (
            ServerEvent::Transcript {
                role: Role::User,
                text: "hi".into(),
                is_final: false,
            },
            json!({"type":"transcript","role":"user","text":"hi","final":false}),
        ),
        (
            ServerEvent::BotSpeechStarted,
            json!({"type":"bot-speech-started"}),
        ),
        (
            ServerEvent::BotSpeechStopped,
            json!({"type":"bot-speech-stopped"}),
        ),
        (ServerEvent::Interruption, json!({"type":"interruption"})),
        (
            ServerEvent::Latency(TurnLatency {
                turn: 2,
                endpointing_ms: Some(500),
                stt_ms: Some(120),
                queue_wait_ms: Some(12),
                voice_to_voice_ms: Some(900),
                ..Default::default()
            }),
            json!({"type":"latency","turn":2,"endpointingMs":500,"sttMs":120,"queueWaitMs":12,"voiceToVoiceMs":900}),
        ),
        (
            ServerEvent::ToolCall {
                id: "t1".into(),
                name: "weather".into(),
                arguments: json!({"city":"Paris"}),
            },
            json!({"type":"tool-call","id":"t1","name":"weather","arguments":{"city":"Paris"}}),
        ),
        (
            ServerEvent::Error {
                code: "audio-before-start".into(),
                message: "m".into(),
            },
            json!({"type":"error","code":"audio-before-start","message":"m"}),
        ),
        (
            ServerEvent::CallEnded {
                reason: "customer-ended-call".into(),
            },
            json!({"type":"call-ended","reason":"customer-ended-call"}),
        ),
        (
            ServerEvent::Pong { id: Some(json!(3)) },
            json!({"type":"pong","id":3}),
        ),
        (ServerEvent::Pong { id: None }, json!({"type":"pong"})),
    ];
    for (ev, want) in cases {
        let WireOut::Text(s) = ev.to_wire() else {
            panic!()
        };
        let got: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(got, want);
        let back: ServerEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ev, "round trip of {s}");
    }
}

#[test]
fn malformed_json_and_unknown_types_close_with_1007() {
    for bad in ["", "{", "not json", "{\"type\":\"end\"", "\u{0}"] {
        let e = parse_str(bad).unwrap_err();
        assert!(matches!(e, ProtocolError::InvalidJson(_)), "{bad:?}: {e:?}");
        assert_eq!(e.close_code(), Some(code::INVALID));
        assert_eq!(e.code(), "invalid-json");
    }
    let e = parse_str(r#"{"type":"dance"}"#).unwrap_err();
    assert!(matches!(e, ProtocolError::BadMessage(_)));
    assert!(
        e.to_string().contains("dance"),
        "the reason names the type: {e}"
    );
    assert_eq!(e.close_code(), Some(code::INVALID));
    for bad in [
        "[]",
        "null",
        "\"start\"",
        "42",
        r#"{"text":"no type"}"#,
        r#"{"type":7}"#,
    ] {
        assert_eq!(close_code(bad), code::INVALID, "{bad}");
    }
}

#[test]
fn unknown_fields_wrong_types_and_missing_fields_close_with_1007() {
    let bad = [
        r#"{"type":"text","text":"hi","extra":1}"#,
        r#"{"type":"end","reason":"bye"}"#,
        r#"{"type":"mute","x":null}"#,
        r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000,"channels":2}}"#,
        r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000},"vad":true}"#,
        r#"{"type":"text","text":5}"#,
        r#"{"type":"text"}"#,
        r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":"16000"}}"#,
        r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":-8000}}"#,
        r#"{"type":"start","audio":{"encoding":"opus","sampleRate":48000}}"#,
        r#"{"type":"start"}"#,
    ];
    for b in bad {
        let e = parse_str(b).unwrap_err();
        assert!(matches!(e, ProtocolError::BadMessage(_)), "{b}: {e:?}");
        assert_eq!(e.close_code(), Some(code::INVALID), "{b}");
    }
}

#[test]
fn unsupported_rates_and_mulaw_above_8k_close_with_4001() {
    for (enc, hz) in [
        (Encoding::Pcm16, 44_100),
        (Encoding::Pcm16, 22_050),
        (Encoding::Pcm16, 0),
        (Encoding::Mulaw, 16_000),
        (Encoding::Mulaw, 48_000),
    ] {
        let e = AudioSpec {
            encoding: enc,
            sample_rate: hz,
            output_sample_rate: None,
        }
        .negotiate()
        .unwrap_err();
        assert_eq!(
            e.close_code(),
            Some(code::UNSUPPORTED_AUDIO),
            "{enc:?} {hz}"
        );
        assert_eq!(e.code(), "unsupported-audio-format");
        assert!(e.to_string().contains(&hz.to_string()), "{e}");
    }
    let e = AudioSpec {
        encoding: Encoding::Mulaw,
        sample_rate: 8000,
        output_sample_rate: Some(16000),
    }
    .negotiate()
    .unwrap_err();
    assert_eq!(e.close_code(), Some(code::UNSUPPORTED_AUDIO));
    let e = AudioSpec {
        encoding: Encoding::Pcm16,
        sample_rate: 16000,
        output_sample_rate: Some(44_100),
    }
    .negotiate()
    .unwrap_err();
    assert_eq!(e.close_code(), Some(code::UNSUPPORTED_AUDIO));
    // A server event carrying a bad format does not deserialize either.
    let bad = r#"{"type":"call-started","callId":"c","assistantId":"a","protocol":"voxgate.v1","input":{"encoding":"pcm16","sampleRate":44100},"output":{"encoding":"pcm16","sampleRate":16000}}"#;
    assert!(serde_json::from_str::<ServerEvent>(bad).is_err());
}

#[test]
fn oversized_messages_close_with_1009() {
    let limits = Limits::default();
    let huge = format!(
        r#"{{"type":"text","text":"{}"}}"#,
        "a".repeat(limits.max_text_bytes)
    );
    let e = parse_text(&huge, &limits).unwrap_err();
    assert!(matches!(e, ProtocolError::TooBig { .. }), "{e:?}");
    assert_eq!(e.close_code(), Some(code::TOO_BIG));
    let big = WireIn::Binary(vec![0; limits.max_audio_bytes + 2]);
    assert_eq!(
        parse(&big, &limits).unwrap_err().close_code(),
        Some(code::TOO_BIG)
    );
    // Just under the limit is fine.
    let ok = WireIn::Binary(vec![0; limits.max_audio_bytes]);
    assert!(
        matches!(parse(&ok, &limits).unwrap(), Incoming::Audio(b) if b.len() == limits.max_audio_bytes)
    );
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(
        r#"{{"type":"ping","id":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let e = parse_text(
        &deep,
        &Limits {
            max_text_bytes: 1 << 20,
            ..limits
        },
    )
    .unwrap_err();
    assert_eq!(e.close_code(), Some(code::INVALID));
}

#[test]
fn non_fatal_errors_have_no_close_code() {
    for e in [
        ProtocolError::AudioBeforeStart,
        ProtocolError::AlreadyStarted,
        ProtocolError::NotStarted("text"),
    ] {
        assert!(!e.is_fatal());
        assert_eq!(e.close(), None);
    }
    assert_eq!(ProtocolError::AudioBeforeStart.code(), "audio-before-start");
    assert_eq!(
        ProtocolError::OddByteCount(3).close_code(),
        Some(code::INVALID)
    );
    assert_eq!(
        ProtocolError::Frame("x".into()).close_code(),
        Some(code::PROTOCOL)
    );
}

#[test]
fn close_reasons_fit_in_123_bytes_at_a_char_boundary() {
    for filler in ["a", "é", "世", "🎤"] {
        let c = Close::new(code::INVALID, filler.repeat(200));
        assert!(c.reason.len() <= MAX_REASON, "{}", c.reason.len());
        assert!(c.reason.len() > MAX_REASON - 4);
        assert!(c.reason.chars().all(|ch| ch.to_string() == filler));
    }
    // A long serde message still makes a valid close.
    let e = parse_str(&format!(r#"{{"type":"{}"}}"#, "x".repeat(500))).unwrap_err();
    let c = e.close().unwrap();
    assert!(c.reason.len() <= MAX_REASON && c.reason.starts_with("bad message"));
}

#[test]
fn every_end_reason_has_a_close() {
    assert_eq!(close_for(&EndReason::ConnectionLost), None);
    assert_eq!(
        close_for(&EndReason::CustomerEnded).unwrap(),
        Close::new(1000, "customer-ended-call")
    );
    assert_eq!(
        close_for(&EndReason::SilenceTimeout).unwrap().code,
        code::NORMAL
    );
    assert_eq!(
        close_for(&EndReason::SlowClient).unwrap().code,
        code::SLOW_CLIENT
    );
    assert_eq!(
        close_for(&EndReason::ServerShutdown).unwrap().code,
        code::RESTART
    );
    let internal = close_for(&EndReason::PipelineError(
        "db password wrong at 10.0.0.3".into(),
    ))
    .unwrap();
    assert_eq!(internal.code, code::INTERNAL);
    assert!(
        !internal.reason.contains("password"),
        "internal details never reach the client"
    );
}
