//! The Realtime client against the fake Realtime server over real WebSockets on
//! loopback: set-up, spoken turns (server VAD and manual), interruptions, refused
//! keys, deadlines, garbage and cut connections.

use voxgate_fake_openai as fake;

use std::path::Path;
use std::time::{Duration, Instant};

use fake::Fake;
use fake::realtime::{Cut, Names, Push, audio_delta_event, error_event, pcm_b64, tone};
use futures_util::StreamExt;
use serde_json::{Value, json};
use voxgate_openai::{OpenAi, OpenAiConfig, RealtimeConfig, RealtimeEvent, RealtimeEvents, RealtimeSender, TurnDetection};
use voxgate_services::ServiceError;

const KEY: &str = "sk-test-0123456789abcdefghijklmnopqrstuvwxyzSECRET";
const WAIT: Duration = Duration::from_secs(20);

fn openai(base: &str, key: Option<&str>) -> OpenAi {
    let config = OpenAiConfig { api_key: key.map(str::to_string), base_url: base.to_string(), ..OpenAiConfig::default() };
    OpenAi::with_own_client(config).expect("providers")
}

async fn connect(fake: &Fake, config: &RealtimeConfig) -> (RealtimeSender, RealtimeEvents) {
    openai(&fake.base, Some(KEY)).realtime(config).await.expect("a realtime session")
}

fn manual() -> RealtimeConfig {
    RealtimeConfig { turn_detection: TurnDetection::Manual, ..RealtimeConfig::default() }
}

/// Events until one matches `last` (included), failing after `WAIT`.
async fn until(events: &mut RealtimeEvents, mut last: impl FnMut(&RealtimeEvent) -> bool) -> Vec<RealtimeEvent> {
    let mut seen = Vec::new();
    let end = Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(end.into(), events.next()).await;
        match next {
            Err(_) => panic!("no matching event within {WAIT:?}; saw {:?}", brief(&seen)),
            Ok(None) => panic!("the events ended; saw {:?}", brief(&seen)),
            Ok(Some(Err(e))) => panic!("error {e}; saw {:?}", brief(&seen)),
            Ok(Some(Ok(event))) => {
                let done = last(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
        }
    }
}

/// Everything up to the end of the stream (which must come within `WAIT`).
async fn to_end(events: &mut RealtimeEvents) -> Vec<Result<RealtimeEvent, ServiceError>> {
    tokio::time::timeout(WAIT, events.collect::<Vec<_>>()).await.expect("the events ended")
}

fn brief(events: &[RealtimeEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            RealtimeEvent::Audio { pcm, .. } => format!("Audio({})", pcm.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

fn is_done(e: &RealtimeEvent) -> bool {
    matches!(e, RealtimeEvent::ResponseDone { .. })
}

fn audio_of(events: &[RealtimeEvent]) -> Vec<i16> {
    events
        .iter()
        .flat_map(|e| match e {
            RealtimeEvent::Audio { pcm, .. } => pcm.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn position(events: &[RealtimeEvent], what: &str, f: impl Fn(&RealtimeEvent) -> bool) -> usize {
    events.iter().position(f).unwrap_or_else(|| panic!("no {what} in {:?}", brief(events)))
}

/// A sentence spoken by espeak-ng, at 24 kHz.
fn speech(text: &str, dir: &Path) -> Vec<i16> {
    let wav = dir.join("speech.wav");
    let status = std::process::Command::new("espeak-ng").arg("-w").arg(&wav).arg(text).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "espeak-ng could not speak the test sentence ({status:?}); install it (apt-get install espeak-ng)"
    );
    let audio = voxgate_audio::wav::read_wav_file(&wav).expect("espeak-ng's WAV");
    voxgate_audio::resample::resample_all(audio.rate, 24_000, &audio.samples).expect("resampled to 24 kHz")
}

/// Sends audio in 20 ms pieces, as a caller's microphone would.
async fn send_audio(sender: &RealtimeSender, pcm: &[i16]) {
    for piece in pcm.chunks(480) {
        sender.append(piece).await.expect("append");
    }
}

/// The audio the fake received (all appends, in order).
fn uplink(fake: &Fake) -> Vec<i16> {
    use base64::Engine;
    fake.realtime()
        .events_of("input_audio_buffer.append")
        .iter()
        .flat_map(|e| base64::engine::general_purpose::STANDARD.decode(e["audio"].as_str().unwrap()).unwrap())
        .collect::<Vec<u8>>()
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect()
}

#[tokio::test]
async fn the_session_is_configured_as_asked() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.require_key = Some(KEY.into()));
    let config = RealtimeConfig {
        model: "gpt-realtime-2025-08-28".into(),
        voice: "marin".into(),
        instructions: "You are a brief weather assistant.".into(),
        turn_detection: TurnDetection::Server { threshold: 0.6, prefix_padding_ms: 250, silence_ms: 400 },
        transcription_model: Some("gpt-4o-transcribe".into()),
        max_output_tokens: Some(300),
        ..RealtimeConfig::default()
    };
    let (sender, events) = connect(&fake, &config).await;
    let rt = fake.realtime();
    let connections = rt.connections();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].model.as_deref(), Some("gpt-realtime-2025-08-28"));
    assert_eq!(connections[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let updates = rt.events_of("session.update");
    assert_eq!(updates.len(), 1);
    let s = &updates[0]["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["model"], "gpt-realtime-2025-08-28");
    assert_eq!(s["instructions"], "You are a brief weather assistant.");
    assert_eq!(s["output_modalities"], json!(["audio"]));
    assert_eq!(s["max_output_tokens"], 300);
    assert!(s.get("temperature").is_none(), "{s}");
    let pcm = json!({"type": "audio/pcm", "rate": 24000});
    assert_eq!(s["audio"]["input"]["format"], pcm);
    assert_eq!(s["audio"]["output"]["format"], pcm);
    assert_eq!(s["audio"]["output"]["voice"], "marin");
    assert_eq!(s["audio"]["input"]["transcription"], json!({"model": "gpt-4o-transcribe"}));
    let td = &s["audio"]["input"]["turn_detection"];
    assert_eq!(td["type"], "server_vad");
    assert_eq!(td["threshold"], 0.6);
    assert_eq!(td["prefix_padding_ms"], 250);
    assert_eq!(td["silence_duration_ms"], 400);
    assert_eq!(events.session_id().as_deref(), Some("sess_fake"));
    for shown in [format!("{sender:?}"), format!("{events:?}"), format!("{:?}", openai(&fake.base, Some(KEY)))] {
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    // Manual turns send turn_detection null; no transcription model sends null too.
    let config = RealtimeConfig { transcription_model: None, ..manual() };
    let _session = connect(&fake, &config).await;
    let s = &rt.events_of("session.update")[1]["session"];
    assert!(s["audio"]["input"]["turn_detection"].is_null(), "{s}");
    assert!(s["audio"]["input"]["transcription"].is_null(), "{s}");
    assert_eq!(s["model"], "gpt-realtime");
    assert_eq!(s["audio"]["output"]["voice"], "alloy");
}

#[tokio::test]
async fn a_spoken_turn_with_server_vad() {
    let dir = tempfile::tempdir().unwrap();
    let mut caller = speech("What is the weather in Paris?", dir.path());
    let spoken = caller.len();
    caller.extend(std::iter::repeat_n(0i16, 24_000)); // a second of silence ends the turn
    let fake = Fake::start().await;
    let script = fake.realtime().script();
    let (sender, mut events) = connect(&fake, &RealtimeConfig::default()).await;
    send_audio(&sender, &caller).await;
    let seen = until(&mut events, is_done).await;

    let started = position(&seen, "SpeechStarted", |e| matches!(e, RealtimeEvent::SpeechStarted { .. }));
    let stopped = position(&seen, "SpeechStopped", |e| matches!(e, RealtimeEvent::SpeechStopped { .. }));
    let transcript = position(&seen, "UserTranscript", |e| matches!(e, RealtimeEvent::UserTranscript { .. }));
    let response = position(&seen, "ResponseStarted", |e| matches!(e, RealtimeEvent::ResponseStarted { .. }));
    let audio = position(&seen, "Audio", |e| matches!(e, RealtimeEvent::Audio { .. }));
    assert!(started < stopped && stopped < transcript && transcript < response && response < audio, "{:?}", brief(&seen));
    let (RealtimeEvent::SpeechStarted { item_id: speech_item, audio_start_ms }, RealtimeEvent::SpeechStopped { item_id: stop_item, audio_end_ms }) =
        (&seen[started], &seen[stopped])
    else {
        unreachable!()
    };
    assert_eq!(speech_item, stop_item);
    // The speech ends before the silence does, and the stop comes after it.
    let spoken_ms = (spoken as u64) * 1000 / 24_000;
    assert!(*audio_start_ms < spoken_ms / 2, "speech started at {audio_start_ms} ms of {spoken_ms}");
    assert!(*audio_end_ms > spoken_ms - 200 && *audio_end_ms <= spoken_ms + 1000, "speech stopped at {audio_end_ms} ms; spoken {spoken_ms}");
    assert_eq!(seen[transcript], RealtimeEvent::UserTranscript { item_id: speech_item.clone(), text: script.transcript.clone() });

    // The answer: every sample as the fake sent it, and its words.
    assert_eq!(audio_of(&seen), script.reply_audio);
    let words: String = seen
        .iter()
        .filter_map(|e| match e {
            RealtimeEvent::AssistantTranscriptDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(words, script.reply_text);
    assert!(seen.iter().any(|e| matches!(e, RealtimeEvent::AssistantTranscriptDone { text, .. } if *text == script.reply_text)));
    let RealtimeEvent::ResponseStarted { response_id } = &seen[response] else { unreachable!() };
    assert_eq!(seen.last(), Some(&RealtimeEvent::ResponseDone { response_id: response_id.clone(), status: "completed".into() }));
    assert!(seen.iter().all(|e| match e {
        RealtimeEvent::Audio { response_id: r, .. } => r == response_id,
        _ => true,
    }));

    // The fake got the caller's audio sample for sample.
    assert_eq!(uplink(&fake), caller);
    let stats = events.stats();
    assert_eq!((stats.unknown, stats.malformed, stats.binary), (0, 0, 0), "{stats:?}");
    assert!(stats.received > seen.len() as u64, "{stats:?}");
}

#[tokio::test]
async fn beta_event_names_are_read_too() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| {
        s.names = Names::Beta;
        s.reply_audio = tone(330.0, 0.45, 12_000.0);
        s.chunk_samples = 1111;
    });
    let script = fake.realtime().script();
    let (sender, mut events) = connect(&fake, &RealtimeConfig::default()).await;
    let mut caller = tone(200.0, 0.8, 9000.0);
    caller.extend(std::iter::repeat_n(0i16, 18_000));
    send_audio(&sender, &caller).await;
    let seen = until(&mut events, is_done).await;
    assert!(seen.iter().any(|e| matches!(e, RealtimeEvent::SpeechStarted { .. })), "{:?}", brief(&seen));
    assert_eq!(audio_of(&seen), script.reply_audio);
    let deltas = seen.iter().filter(|e| matches!(e, RealtimeEvent::AssistantTranscriptDelta { .. })).count();
    assert_eq!(deltas, script.reply_text.split_inclusive(' ').count());
    assert!(seen.iter().any(|e| matches!(e, RealtimeEvent::AssistantTranscriptDone { text, .. } if *text == script.reply_text)));
    assert_eq!(events.stats().unknown, 0);
}

#[tokio::test]
async fn manual_turns_commit_and_ask_for_the_answer() {
    let fake = Fake::start().await;
    let script = fake.realtime().script();
    let (sender, mut events) = connect(&fake, &manual()).await;

    // Nothing buffered: the server says so, and the session carries on.
    sender.commit().await.unwrap();
    let seen = until(&mut events, |e| matches!(e, RealtimeEvent::ServerError { .. })).await;
    assert!(
        matches!(seen.last(), Some(RealtimeEvent::ServerError { code, .. }) if code == "input_audio_buffer_commit_empty"),
        "{:?}",
        brief(&seen)
    );

    let caller = tone(250.0, 1.0, 9000.0);
    send_audio(&sender, &caller).await;
    sender.commit().await.unwrap();
    sender.create_response().await.unwrap();
    let seen = until(&mut events, is_done).await;
    assert!(!seen.iter().any(|e| matches!(e, RealtimeEvent::SpeechStarted { .. } | RealtimeEvent::SpeechStopped { .. })), "{:?}", brief(&seen));
    let committed = position(&seen, "Committed", |e| matches!(e, RealtimeEvent::Committed { .. }));
    let transcript = position(&seen, "UserTranscript", |e| matches!(e, RealtimeEvent::UserTranscript { text, .. } if *text == script.transcript));
    let response = position(&seen, "ResponseStarted", |e| matches!(e, RealtimeEvent::ResponseStarted { .. }));
    assert!(committed < transcript && transcript < response);
    assert_eq!(audio_of(&seen), script.reply_audio);
    assert!(matches!(seen.last(), Some(RealtimeEvent::ResponseDone { status, .. }) if status == "completed"));
    let kinds: Vec<String> = fake.realtime().events().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    let appends = caller.len().div_ceil(480);
    let mut expected = vec!["session.update", "input_audio_buffer.commit"];
    expected.extend(std::iter::repeat_n("input_audio_buffer.append", appends));
    expected.extend(["input_audio_buffer.commit", "response.create"]);
    assert_eq!(kinds, expected);

    // Typed text: an input_text item, then an answer.
    sender.user_text("And tomorrow?").await.unwrap();
    let seen = until(&mut events, is_done).await;
    assert_eq!(audio_of(&seen), script.reply_audio);
    let created = fake.realtime().events_of("conversation.item.create");
    assert_eq!(created[0]["item"], json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]}));
    assert_eq!(fake.realtime().events_of("response.create").len(), 2);
}

#[tokio::test]
async fn an_interruption_cancels_the_answer_and_truncates_it() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| {
        s.reply_audio = tone(500.0, 3.0, 8000.0);
        s.chunk_samples = 2400;
        s.chunk_pause = Duration::from_millis(40);
    });
    let full = fake.realtime().script().reply_audio.len();
    let (sender, mut events) = connect(&fake, &manual()).await;
    sender.user_text("Tell me a long story.").await.unwrap();
    let mut heard = 0usize;
    let seen = until(&mut events, |e| {
        matches!(e, RealtimeEvent::Audio { .. }) && {
            heard += 1;
            heard == 3
        }
    })
    .await;
    let Some(RealtimeEvent::Audio { item_id, response_id, .. }) = seen.last().cloned() else { unreachable!() };
    sender.cancel_response().await.unwrap();
    sender.truncate(&item_id, 250).await.unwrap();
    let after = until(&mut events, |e| matches!(e, RealtimeEvent::Truncated { .. })).await;
    assert!(
        after.contains(&RealtimeEvent::ResponseDone { response_id: response_id.clone(), status: "cancelled".into() }),
        "{:?}",
        brief(&after)
    );
    assert!(!after.iter().any(|e| matches!(e, RealtimeEvent::Audio { .. })), "audio after the cancel: {:?}", brief(&after));
    assert_eq!(after.last(), Some(&RealtimeEvent::Truncated { item_id: item_id.clone(), audio_end_ms: 250 }));
    assert!(audio_of(&seen).len() < full);

    let rt = fake.realtime();
    assert_eq!(rt.events_of("response.cancel"), vec![json!({"type": "response.cancel", "response_id": response_id})]);
    assert_eq!(
        rt.events_of("conversation.item.truncate"),
        vec![json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 250})]
    );
    // Audio of the cancelled response that is still on its way is dropped here.
    let late = audio_delta_event(Names::Ga, &response_id, &item_id, &pcm_b64(&[5; 480]));
    assert!(rt.push(Push::Text(late)));
    assert!(rt.push(Push::Text(error_event("server_error", "marker", "after the late audio"))));
    let late = until(&mut events, |e| matches!(e, RealtimeEvent::ServerError { .. })).await;
    assert_eq!(late.len(), 1, "{:?}", brief(&late));
    assert!(events.stats().dropped_after_cancel >= 1);

    // No more audio comes for it; the session goes on.
    sender.user_text("Short, please.").await.unwrap();
    let next = until(&mut events, is_done).await;
    assert!(matches!(next.last(), Some(RealtimeEvent::ResponseDone { status, .. }) if status == "completed"));
    assert!(next.iter().all(|e| !matches!(e, RealtimeEvent::Audio { response_id: r, .. } if *r == response_id)));
}

#[tokio::test]
async fn speech_over_the_answer_interrupts_it() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| {
        s.reply_audio = tone(500.0, 3.0, 8000.0);
        s.chunk_pause = Duration::from_millis(40);
    });
    let (sender, mut events) = connect(&fake, &RealtimeConfig::default()).await;
    sender.user_text("Tell me a long story.").await.unwrap();
    until(&mut events, |e| matches!(e, RealtimeEvent::Audio { .. })).await;
    send_audio(&sender, &tone(220.0, 0.3, 9000.0)).await;
    let seen = until(&mut events, is_done).await;
    let barge = position(&seen, "SpeechStarted", |e| matches!(e, RealtimeEvent::SpeechStarted { .. }));
    assert_eq!(barge, seen.len() - 2, "{:?}", brief(&seen));
    assert!(matches!(seen.last(), Some(RealtimeEvent::ResponseDone { status, .. }) if status == "cancelled"));
}

#[tokio::test]
async fn a_refused_key_is_unauthorized_and_never_shown() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.require_key = Some("sk-the-right-one".into()));
    for key in [Some(KEY), None] {
        let err = openai(&fake.base, key).realtime(&RealtimeConfig::default()).await.unwrap_err();
        let ServiceError::Unauthorized { message, .. } = &err else { panic!("{err:?}") };
        assert!(message.contains("401") && message.contains("API key"), "{message}");
        assert!(message.contains("/v1/realtime"), "{message}");
        assert!(!err.to_string().contains("SECRET") && !format!("{err:?}").contains("SECRET"), "{err}");
    }
    assert!(fake.realtime().connections().iter().all(|c| !c.accepted));
    assert!(fake.realtime().events().is_empty());
}

#[tokio::test]
async fn set_up_runs_under_its_deadline() {
    // A listener that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", silent.local_addr().unwrap());
    let config = RealtimeConfig { setup_deadline: Duration::from_millis(300), ..RealtimeConfig::default() };
    let started = Instant::now();
    let err = openai(&base, Some(KEY)).realtime(&config).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("setup_deadline")), "{err}");

    // A server that upgrades but never confirms the session.
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.answer_session_update = false);
    let err = openai(&fake.base, Some(KEY)).realtime(&config).await.unwrap_err();
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("setup_deadline")), "{err}");

    // Nobody listening at all.
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let err = openai(&format!("http://127.0.0.1:{port}/v1"), Some(KEY)).realtime(&config).await.unwrap_err();
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("connecting")), "{err}");
}

#[tokio::test]
async fn a_server_error_during_set_up_is_invalid() {
    let fake = Fake::start().await;
    let config = RealtimeConfig { temperature: Some(0.7), ..RealtimeConfig::default() };
    // The fake accepts any field; make it refuse this session as OpenAI refuses an
    // unknown parameter.
    fake.realtime().set(|s| s.answer_session_update = false);
    let ai = openai(&fake.base, Some(KEY));
    let attempt = tokio::spawn(async move { ai.realtime(&config).await });
    let rt = fake.realtime();
    rt.wait_for("session.update", 1, WAIT).await;
    assert!(rt.push(Push::Text(error_event("invalid_request_error", "unknown_parameter", "Unknown parameter: 'session.temperature'."))));
    let err = attempt.await.unwrap().unwrap_err();
    assert!(matches!(&err, ServiceError::Invalid { message, .. } if message.contains("session.temperature")), "{err}");
    assert_eq!(rt.events_of("session.update")[0]["session"]["temperature"], 0.7);
}

#[tokio::test]
async fn garbage_is_skipped_or_named_never_a_panic() {
    let fake = Fake::start().await;
    let (sender, mut events) = connect(&fake, &manual()).await;
    let rt = fake.realtime();
    let marker = |n: u32| Push::Text(error_event("server_error", &format!("marker{n}"), "a marker"));
    let next_marker = async |events: &mut RealtimeEvents| until(events, |e| matches!(e, RealtimeEvent::ServerError { .. })).await;

    // Not JSON, JSON without a type, an unknown type, a binary frame: skipped.
    for frame in [
        Push::Text("this is not json {".into()),
        Push::Text("[1,2,3]".into()),
        Push::Text(json!({"type": "response.hologram.delta", "delta": "x"}).to_string()),
        Push::Binary(vec![0, 1, 2, 3, 255]),
        Push::Text(json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "i"}).to_string()),
        marker(1),
    ] {
        assert!(rt.push(frame));
    }
    let seen = next_marker(&mut events).await;
    assert_eq!(seen, vec![RealtimeEvent::ServerError { code: "marker1".into(), message: "a marker".into() }]);
    let stats = events.stats();
    assert_eq!((stats.malformed, stats.unknown, stats.binary), (3, 1, 1), "{stats:?}");

    // Bad base64 in an audio delta: skipped.
    rt.push(Push::Text(audio_delta_event(Names::Ga, "resp_x", "item_x", "%%% not base64 %%%")));
    rt.push(marker(2));
    let seen = next_marker(&mut events).await;
    assert_eq!(seen.len(), 1, "{:?}", brief(&seen));
    assert_eq!(events.stats().malformed, 4);

    // Odd byte counts: a sample split over two deltas comes out whole.
    let samples: Vec<i16> = vec![1000, -2000, 3000, -32768, 32767];
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for piece in [&bytes[..3], &bytes[3..4], &bytes[4..9], &bytes[9..]] {
        rt.push(Push::Text(audio_delta_event(Names::Ga, "resp_x", "item_x", &b64(piece))));
    }
    rt.push(marker(3));
    let seen = next_marker(&mut events).await;
    assert_eq!(audio_of(&seen), samples);

    // The key, or anything shaped like an OpenAI key, never comes through.
    rt.push(Push::Text(error_event("invalid_request_error", "invalid_api_key", &format!("Incorrect API key provided: {KEY}."))));
    let seen = next_marker(&mut events).await;
    let RealtimeEvent::ServerError { message, .. } = &seen[0] else { unreachable!() };
    assert!(!message.contains("SECRET") && message.contains("[redacted]"), "{message}");

    // A failed transcription is its own event, with OpenAI's code (a default when the
    // error object is missing) and the message, redacted.
    let failed = |error: Value| Push::Text(json!({"type": "conversation.item.input_audio_transcription.failed", "item_id": "item_u1", "content_index": 0, "error": error}).to_string());
    rt.push(failed(json!({"type": "transcription_error", "code": "audio_unintelligible", "message": format!("Audio not understood ({KEY})")})));
    rt.push(failed(Value::Null));
    rt.push(marker(4));
    let seen = next_marker(&mut events).await;
    let failures: Vec<(String, String, String)> = seen
        .iter()
        .filter_map(|e| match e {
            RealtimeEvent::UserTranscriptFailed { item_id, code, message } => Some((item_id.clone(), code.clone(), message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{:?}", brief(&seen));
    assert_eq!((failures[0].0.as_str(), failures[0].1.as_str()), ("item_u1", "audio_unintelligible"));
    assert!(failures[0].2.contains("Audio not understood") && failures[0].2.contains("[redacted]") && !failures[0].2.contains("SECRET"), "{failures:?}");
    assert_eq!(failures[1].1, "input_audio_transcription_failed");

    // Still a working session after all that.
    sender.user_text("Hello?").await.unwrap();
    let seen = until(&mut events, is_done).await;
    assert_eq!(audio_of(&seen), rt.script().reply_audio);

    // An oversized message ends the session with a clear error.
    let big = audio_delta_event(Names::Ga, "resp_x", "item_x", &pcm_b64(&vec![7i16; 5 << 20]));
    assert!(big.len() > RealtimeConfig::default().max_message_bytes);
    rt.push(Push::Text(big));
    let rest = to_end(&mut events).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    let Err(ServiceError::Transient { message, .. }) = &rest[0] else { panic!("{rest:?}") };
    assert!(message.contains("max_message_bytes"), "{message}");
    // The writer learns of it: sending fails soon after.
    let end = Instant::now() + WAIT;
    while sender.append(&[0; 480]).await.is_ok() {
        assert!(Instant::now() < end, "the sender still works after the session ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_flood_of_malformed_events_ends_the_session() {
    let fake = Fake::start().await;
    let (_sender, mut events) = connect(&fake, &manual()).await;
    for i in 0..150 {
        fake.realtime().push(Push::Text(format!("garbage {i}")));
    }
    let rest = to_end(&mut events).await;
    assert!(matches!(rest.last(), Some(Err(ServiceError::Transient { message, .. })) if message.contains("malformed")), "{rest:?}");
}

#[tokio::test]
async fn a_connection_dropped_mid_answer_ends_the_events_with_an_error() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.cut = Some((2, Cut::Drop)));
    let (sender, mut events) = connect(&fake, &manual()).await;
    sender.user_text("Hi").await.unwrap();
    let rest = to_end(&mut events).await;
    let audio = rest.iter().filter(|e| matches!(e, Ok(RealtimeEvent::Audio { .. }))).count();
    assert_eq!(audio, 2, "{rest:?}");
    assert!(matches!(rest.last(), Some(Err(ServiceError::Transient { .. }))), "{rest:?}");
    assert!(!rest.iter().any(|e| matches!(e, Ok(RealtimeEvent::ResponseDone { .. }))));
}

#[tokio::test]
async fn a_close_mid_answer_ends_the_events_with_closed() {
    let fake = Fake::start().await;
    fake.realtime().set(|s| s.cut = Some((1, Cut::Close { code: 1011, reason: "server error".into() })));
    let (sender, mut events) = connect(&fake, &manual()).await;
    sender.user_text("Hi").await.unwrap();
    let rest = to_end(&mut events).await;
    assert!(matches!(rest.last(), Some(Ok(RealtimeEvent::Closed { code: 1011, reason })) if reason == "server error"), "{rest:?}");
    let end = Instant::now() + WAIT;
    while !sender.is_closed() {
        assert!(Instant::now() < end, "the sender stays open after the close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(sender.commit().await, Err(ServiceError::Transient { .. })));
}

#[tokio::test]
async fn closing_ends_the_session() {
    let fake = Fake::start().await;
    let (sender, mut events) = connect(&fake, &manual()).await;
    let copy = sender.clone();
    sender.append(&tone(300.0, 0.2, 5000.0)).await.unwrap();
    sender.close().await.unwrap();
    let rest = to_end(&mut events).await;
    assert!(matches!(rest.last(), Some(Ok(RealtimeEvent::Closed { code: 1000, .. }))), "{rest:?}");
    // The append queued before the close went out first.
    assert_eq!(fake.realtime().events_of("input_audio_buffer.append").len(), 1);
    assert!(copy.is_closed());
    assert!(matches!(copy.append(&[1, 2, 3]).await, Err(ServiceError::Transient { .. })));
    assert!(copy.close().await.is_ok());

    // Dropping every sender closes the session too.
    let (sender, mut events) = connect(&fake, &manual()).await;
    drop(sender);
    let rest = to_end(&mut events).await;
    assert!(matches!(rest.last(), Some(Ok(RealtimeEvent::Closed { .. }))), "{rest:?}");
}

#[test]
fn sessions_and_events_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let fake = Fake::start().await;
            let (sender, mut events) = connect(&fake, &manual()).await;
            sender.user_text("Hi").await.unwrap();
            until(&mut events, is_done).await;
            fake.realtime().push(Push::Text("garbage".into()));
            fake.realtime().push(Push::Text(error_event("server_error", "x", "y")));
            until(&mut events, |e| matches!(e, RealtimeEvent::ServerError { .. })).await;
            let snapshot = snapshotter.snapshot().into_vec();
            let value = |name: &str, label: Option<(&str, &str)>| {
                snapshot
                    .iter()
                    .find(|(key, ..)| {
                        key.key().name() == name && label.is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
                    })
                    .map(|(.., value)| value)
            };
            assert_eq!(value(voxgate_openai::realtime::SESSIONS, None), Some(&DebugValue::Gauge(1.0.into())));
            assert_eq!(value(voxgate_openai::realtime::CONNECTS, Some(("outcome", "ok"))), Some(&DebugValue::Counter(1)));
            assert!(matches!(value(voxgate_openai::realtime::CONNECT_SECONDS, None), Some(DebugValue::Histogram(h)) if h.len() == 1));
            let reply_chunks = fake.realtime().script().reply_audio.len().div_ceil(2400) as u64;
            let ev_in = |t: &str| value(voxgate_openai::realtime::EVENTS_IN, Some(("type", t)));
            assert_eq!(ev_in("response.output_audio.delta"), Some(&DebugValue::Counter(reply_chunks)));
            assert_eq!(ev_in("malformed"), Some(&DebugValue::Counter(1)));
            let ev_out = |t: &str| value(voxgate_openai::realtime::EVENTS_OUT, Some(("type", t)));
            assert_eq!(ev_out("conversation.item.create"), Some(&DebugValue::Counter(1)));
            assert_eq!(ev_out("response.create"), Some(&DebugValue::Counter(1)));
            sender.close().await.unwrap();
            to_end(&mut events).await;
            // Both tasks end soon after the close (a snapshot resets what it read,
            // so the gauge is summed over snapshots).
            let end = Instant::now() + WAIT;
            let mut open = 1.0;
            loop {
                let snapshot = snapshotter.snapshot().into_vec();
                if let Some((.., DebugValue::Gauge(v))) = snapshot.iter().find(|(key, ..)| key.key().name() == voxgate_openai::realtime::SESSIONS) {
                    open += v.0;
                }
                if open == 0.0 {
                    break;
                }
                assert!(Instant::now() < end, "the session gauge stays at {open}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    });
}
