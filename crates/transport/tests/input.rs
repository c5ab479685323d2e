//! The input side: decoding client audio into 16 kHz, 20 ms frames, and the input
//! pump against a real pipeline end, with channels standing in for the socket.

use std::time::Duration;

use futures_util::stream::{self, Stream};
use tokio::sync::mpsc;
use voxgate_audio::pcm::{encode_pcm16le, rms};
use voxgate_audio::{SampleRate, mulaw};
use voxgate_frames::{AudioFrame, EndReason, Frame};
use voxgate_pipeline::{CancellationToken, Capacity, Pipeline, PipelineIo};
use voxgate_transport::close::code;
use voxgate_transport::input::Step;
use voxgate_transport::{
    AudioSpec, ClientMessage, Encoding, InputDecoder, InputEnd, Limits, ProtocolError, ServerEvent,
    WireError, WireIn, WireOut, await_start, pump_input, writer_channel,
};

fn tone(rate: u32, ms: u32, hz: f32) -> Vec<i16> {
    (0..rate * ms / 1000)
        .map(|i| (8000.0 * (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin()) as i16)
        .collect()
}

fn start(encoding: &str, rate: u32) -> WireIn {
    WireIn::Text(format!(
        r#"{{"type":"start","audio":{{"encoding":"{encoding}","sampleRate":{rate}}}}}"#
    ))
}

fn text(s: &str) -> WireIn {
    WireIn::Text(s.into())
}

fn started(encoding: Encoding, rate: u32) -> InputDecoder {
    let mut d = InputDecoder::new(Limits::default());
    let step = d
        .message(ClientMessage::Start {
            audio: AudioSpec {
                encoding,
                sample_rate: rate,
                output_sample_rate: None,
            },
        })
        .unwrap();
    assert!(matches!(step, Step::Started(_)));
    d
}

/// A pipeline with no stages: what the head is fed comes straight out downstream.
fn bare(cap: Capacity) -> PipelineIo {
    Pipeline::new(cap).spawn(CancellationToken::new())
}

fn drain_frames(io: &mut PipelineIo) -> Vec<Frame> {
    let mut v = Vec::new();
    while let Ok((f, _)) = io.downstream.try_recv() {
        v.push(f);
    }
    v
}

fn drain_events(rx: &mut mpsc::Receiver<WireOut>) -> Vec<ServerEvent> {
    let mut v = Vec::new();
    while let Ok(m) = rx.try_recv() {
        match m {
            WireOut::Text(s) => v.push(serde_json::from_str(&s).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    v
}

fn socket(msgs: Vec<WireIn>) -> impl Stream<Item = Result<WireIn, WireError>> + Unpin {
    stream::iter(msgs.into_iter().map(Ok))
}

fn audio_of(frames: &[Frame]) -> Vec<&AudioFrame> {
    frames
        .iter()
        .filter_map(|f| {
            if let Frame::InputAudio(a) = f {
                Some(a)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn pcm16_at_48k_becomes_16k_frames_of_20ms() {
    let mut d = started(Encoding::Pcm16, 48_000);
    let samples = tone(48_000, 1000, 440.0);
    let mut out = Vec::new();
    // 20 ms messages, then 10 ms and 30 ms ones: frames are whole whatever the split.
    for chunk in samples[..24_000].chunks(960) {
        d.audio(&encode_pcm16le(chunk), &mut out).unwrap();
    }
    for chunk in samples[24_000..].chunks(480) {
        d.audio(&encode_pcm16le(chunk), &mut out).unwrap();
    }
    assert_eq!(out.len(), 50, "one second of input is 50 frames");
    for f in &out {
        assert_eq!((f.rate, f.len()), (16_000, 320));
        assert_eq!(f.duration(), Duration::from_millis(20));
    }
    // The tone survives resampling at its level (8000 peak: rms ~ 0.17).
    let level = rms(&out[25].samples);
    assert!(
        (level - 8000.0 / 32768.0 / 2f32.sqrt()).abs() < 0.01,
        "{level}"
    );
}

#[test]
fn mulaw_at_8k_becomes_16k_frames_of_20ms() {
    let mut d = started(Encoding::Mulaw, 8000);
    let bytes = mulaw::encode(&tone(8000, 500, 300.0));
    let mut out = Vec::new();
    for chunk in bytes.chunks(160) {
        d.audio(chunk, &mut out).unwrap();
    }
    // Odd lengths are fine for mu-law (one byte a sample).
    d.audio(&bytes[..81], &mut out).unwrap();
    assert_eq!(out.len(), 25);
    assert!(out.iter().all(|f| f.rate == 16_000 && f.len() == 320));
    assert!(rms(&out[10].samples) > 0.1);
}

#[test]
fn pcm16_at_16k_passes_through_and_keeps_partial_frames() {
    let mut d = started(Encoding::Pcm16, 16_000);
    let samples = tone(16_000, 100, 200.0);
    let mut out = Vec::new();
    d.audio(&encode_pcm16le(&samples[..500]), &mut out).unwrap();
    assert_eq!(out.len(), 1);
    d.audio(&encode_pcm16le(&samples[500..]), &mut out).unwrap();
    assert_eq!(out.len(), 5);
    let joined: Vec<i16> = out.iter().flat_map(|f| f.samples.iter().copied()).collect();
    assert_eq!(joined, samples, "same rate: the samples themselves");
}

#[test]
fn the_decoder_refuses_odd_bytes_early_audio_and_a_second_start() {
    let mut d = InputDecoder::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(
        d.audio(&[0; 640], &mut out),
        Err(ProtocolError::AudioBeforeStart)
    );
    let mut d = started(Encoding::Pcm16, 16_000);
    assert_eq!(
        d.audio(&[0; 641], &mut out),
        Err(ProtocolError::OddByteCount(641))
    );
    let again = ClientMessage::Start {
        audio: AudioSpec {
            encoding: Encoding::Pcm16,
            sample_rate: 8000,
            output_sample_rate: None,
        },
    };
    assert_eq!(d.message(again), Err(ProtocolError::AlreadyStarted));
    assert!(out.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_call_feeds_audio_text_and_end_and_answers_pings() {
    let mut io = bare(Capacity::default());
    let (tx, mut rx) = writer_channel();
    let pcm = encode_pcm16le(&tone(16_000, 20, 300.0));
    let msgs = vec![
        start("pcm16", 16_000),
        WireIn::Binary(pcm.clone()),
        text(r#"{"type":"ping","id":1}"#),
        text(r#"{"type":"text","text":"what's the weather?"}"#),
        text(r#"{"type":"mute"}"#),
        WireIn::Binary(pcm.clone()),
        WireIn::Binary(pcm.clone()),
        text(r#"{"type":"unmute"}"#),
        WireIn::Binary(pcm.clone()),
        text(r#"{"type":"end"}"#),
        WireIn::Binary(pcm.clone()), // after end: never read
    ];
    let end = pump_input(
        socket(msgs),
        InputDecoder::new(Limits::default()),
        io.head.clone(),
        tx,
    )
    .await;
    assert_eq!(end, InputEnd::CustomerEnded);
    assert_eq!(end.reason(), EndReason::CustomerEnded);
    assert_eq!(end.close().unwrap().code, code::NORMAL);
    let frames = drain_frames(&mut io);
    let names: Vec<_> = frames.iter().map(Frame::name).collect();
    assert_eq!(
        names,
        ["input-audio", "user-text", "input-audio", "end"],
        "muted audio is dropped"
    );
    assert_eq!(frames[1], Frame::UserText("what's the weather?".into()));
    assert_eq!(frames[3], Frame::End(EndReason::CustomerEnded));
    assert_eq!(
        drain_events(&mut rx),
        [ServerEvent::Pong {
            id: Some(serde_json::json!(1))
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn audio_before_start_is_refused_once_with_an_error_event_and_dropped() {
    let mut io = bare(Capacity::default());
    let (tx, mut rx) = writer_channel();
    let pcm = encode_pcm16le(&[0; 320]);
    let msgs = vec![
        WireIn::Binary(pcm.clone()),
        WireIn::Binary(pcm.clone()),
        WireIn::Binary(pcm.clone()),
        text(r#"{"type":"text","text":"too soon"}"#),
        start("pcm16", 16_000),
        WireIn::Binary(pcm.clone()),
    ];
    let end = pump_input(
        socket(msgs),
        InputDecoder::new(Limits::default()),
        io.head.clone(),
        tx,
    )
    .await;
    assert_eq!(end, InputEnd::ConnectionLost, "the stream just ended");
    assert_eq!(end.close(), None);
    assert_eq!(
        audio_of(&drain_frames(&mut io)).len(),
        1,
        "only audio after start reaches the pipeline"
    );
    let codes: Vec<_> = drain_events(&mut rx)
        .into_iter()
        .map(|e| match e {
            ServerEvent::Error { code, .. } => code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, ["audio-before-start", "not-started"]);
}

/// Each hostile message ends the call with its close code and an error event.
#[tokio::test(start_paused = true)]
async fn hostile_input_closes_with_the_right_code() {
    let big = Limits::default().max_text_bytes + 1;
    let cases: Vec<(Vec<WireIn>, u16, &str)> = vec![
        (
            vec![start("pcm16", 16_000), WireIn::Binary(vec![0; 641])],
            code::INVALID,
            "odd-byte-count",
        ),
        (
            vec![start("pcm16", 44_100)],
            code::UNSUPPORTED_AUDIO,
            "unsupported-audio-format",
        ),
        (
            vec![start("mulaw", 16_000)],
            code::UNSUPPORTED_AUDIO,
            "unsupported-audio-format",
        ),
        (vec![text("{nope")], code::INVALID, "invalid-json"),
        (
            vec![start("pcm16", 16_000), text(r#"{"type":"shout"}"#)],
            code::INVALID,
            "bad-message",
        ),
        (
            vec![
                start("pcm16", 16_000),
                text(r#"{"type":"text","text":"hi","loud":true}"#),
            ],
            code::INVALID,
            "bad-message",
        ),
        (
            vec![start("pcm16", 16_000), text(&"x".repeat(big))],
            code::TOO_BIG,
            "message-too-big",
        ),
        (
            vec![start("pcm16", 16_000), WireIn::Binary(vec![0; 1 << 20])],
            code::TOO_BIG,
            "message-too-big",
        ),
    ];
    for (msgs, want, event) in cases {
        let mut io = bare(Capacity::default());
        let (tx, mut rx) = writer_channel();
        let end = pump_input(
            socket(msgs.clone()),
            InputDecoder::new(Limits::default()),
            io.head.clone(),
            tx,
        )
        .await;
        let close = end.close().unwrap_or_else(|| panic!("{msgs:?}: {end:?}"));
        assert_eq!(close.code, want, "{end:?}");
        assert!(!close.reason.is_empty() && close.reason.len() <= 123);
        assert_eq!(end.reason(), EndReason::ProtocolError);
        assert!(audio_of(&drain_frames(&mut io)).is_empty());
        match drain_events(&mut rx).as_slice() {
            [ServerEvent::Error { code, .. }] => assert_eq!(code, event),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn socket_errors_map_to_close_codes_or_a_lost_connection() {
    for (err, want) in [
        (WireError::TooBig { max: 1000 }, Some(code::TOO_BIG)),
        (WireError::InvalidUtf8, Some(code::INVALID)),
        (
            WireError::Malformed("reserved bits".into()),
            Some(code::PROTOCOL),
        ),
        (WireError::Lost, None),
    ] {
        let io = bare(Capacity::default());
        let (tx, _rx) = writer_channel();
        let s = stream::iter(vec![Ok(start("pcm16", 8000)), Err(err)]);
        let end = pump_input(s, InputDecoder::new(Limits::default()), io.head.clone(), tx).await;
        assert_eq!(end.close().map(|c| c.code), want, "{end:?}");
    }
    let io = bare(Capacity::default());
    let (tx, _rx) = writer_channel();
    let end = pump_input(
        socket(vec![start("pcm16", 8000), WireIn::Close]),
        InputDecoder::new(Limits::default()),
        io.head.clone(),
        tx,
    )
    .await;
    assert_eq!(
        end,
        InputEnd::CustomerEnded,
        "a close frame is the caller hanging up"
    );
}

/// Nobody reads the pipeline: the pump keeps reading the socket and drops audio.
#[tokio::test(start_paused = true)]
async fn a_full_pipeline_drops_audio_and_never_blocks_the_reader() {
    let mut io = bare(Capacity { system: 2, data: 2 });
    let (tx, _rx) = writer_channel();
    let pcm = encode_pcm16le(&[100; 320]);
    let mut msgs = vec![start("pcm16", 16_000)];
    msgs.extend((0..1000).map(|_| WireIn::Binary(pcm.clone())));
    msgs.push(text(r#"{"type":"end"}"#));
    let t0 = tokio::time::Instant::now();
    let end = tokio::time::timeout(
        Duration::from_secs(1),
        pump_input(
            socket(msgs),
            InputDecoder::new(Limits::default()),
            io.head.clone(),
            tx,
        ),
    )
    .await
    .expect("the pump never waits on the pipeline");
    assert_eq!(end, InputEnd::CustomerEnded);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let frames = drain_frames(&mut io);
    assert!(frames.len() <= 4, "bounded: {}", frames.len());
}

#[tokio::test(start_paused = true)]
async fn the_pump_stops_when_the_pipeline_is_gone() {
    let mut io = bare(Capacity::default());
    let head = io.head.clone();
    io.shutdown().await.unwrap();
    drop(io);
    let (tx, _rx) = writer_channel();
    let msgs = vec![
        start("pcm16", 16_000),
        WireIn::Binary(encode_pcm16le(&[0; 320])),
    ];
    assert_eq!(
        pump_input(socket(msgs), InputDecoder::new(Limits::default()), head, tx).await,
        InputEnd::PipelineClosed
    );
}

#[tokio::test(start_paused = true)]
async fn await_start_answers_pings_and_returns_the_formats() {
    let (tx, mut rx) = writer_channel();
    let mut s = socket(vec![
        text(r#"{"type":"ping","id":"a"}"#),
        WireIn::Binary(vec![0; 320]),
        text(
            r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":48000,"outputSampleRate":24000}}"#,
        ),
    ]);
    let mut d = InputDecoder::new(Limits::default());
    let n = await_start(&mut s, &mut d, &tx, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (n.input.rate, n.output.rate),
        (SampleRate::Hz48000, SampleRate::Hz24000)
    );
    assert_eq!(d.format(), Some(n.input));
    let ev = drain_events(&mut rx);
    assert!(
        matches!(&ev[..], [ServerEvent::Pong { .. }, ServerEvent::Error { code, .. }] if code == "audio-before-start"),
        "{ev:?}"
    );

    let mut s = socket(vec![text(r#"{"type":"end"}"#)]);
    let end = await_start(
        &mut s,
        &mut InputDecoder::new(Limits::default()),
        &tx,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(end, InputEnd::CustomerEnded);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_starts_is_closed_with_4002() {
    let (tx, mut rx) = writer_channel();
    let mut s = stream::pending::<Result<WireIn, WireError>>();
    let t0 = tokio::time::Instant::now();
    let end = await_start(
        &mut s,
        &mut InputDecoder::new(Limits::default()),
        &tx,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    assert_eq!(end.close().unwrap().code, code::START_TIMEOUT);
    assert!(
        matches!(&drain_events(&mut rx)[..], [ServerEvent::Error { code, .. }] if code == "start-timeout")
    );
}
