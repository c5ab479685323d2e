//! The pool and request metrics, read back through a local recorder.

use voxgate_fake_openai as fake;

use std::time::Duration;

use fake::{Fake, Reply, Route};
use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use voxgate_openai::{OpenAi, OpenAiConfig, stats};
use voxgate_services::llm::{ChatMessage, ChatRequest, LlmEvent, Role};

type Snapshot = Vec<(metrics_util::CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)>;

fn find<'a>(snapshot: &'a Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let key = key.key();
        let matches = key.name() == name
            && labels.iter().all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            && key.labels().count() == labels.len();
        matches.then_some(value)
    })
}

/// A counter summed over snapshots (each snapshot resets what it read).
fn counter(snapshots: &[Snapshot], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshots.iter().map(|s| match find(s, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name} is {other:?}"),
    }).sum()
}

fn gauge(snapshots: &[Snapshot], name: &str, labels: &[(&str, &str)]) -> f64 {
    snapshots.iter().map(|s| match find(s, name, labels) {
        Some(DebugValue::Gauge(v)) => v.0,
        None => 0.0,
        other => panic!("{name} is {other:?}"),
    }).sum()
}

fn histogram_len(snapshots: &[Snapshot], name: &str, labels: &[(&str, &str)]) -> usize {
    snapshots.iter().map(|s| match find(s, name, labels) {
        Some(DebugValue::Histogram(v)) => v.len(),
        None => 0,
        other => panic!("{name} is {other:?}"),
    }).sum()
}

#[test]
fn connections_requests_retries_first_bytes_and_warm_ups_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let first = metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let fake = Fake::start().await;
            let config = OpenAiConfig { api_key: Some("k".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() };
            let ai = OpenAi::with_own_client(config).unwrap();
            ai.warm().await.unwrap();
            ai.stt().transcribe(vec![1; 1600], 16_000).await.unwrap();
            let audio: Vec<_> = ai.tts().synthesize("Hi".into()).collect().await;
            assert!(audio.iter().all(Result::is_ok));
            let request = ChatRequest { messages: vec![ChatMessage::new(Role::User, "hi")], tools: vec![], temperature: 0.0, max_tokens: 0 };
            fake.script(Route::Chat, [Reply::Normal]);
            let events: Vec<_> = ai.llm().chat(request.clone()).collect().await;
            assert_eq!(events.last(), Some(&Ok(LlmEvent::Done)));
            let first = snapshotter.snapshot().into_vec();

            fake.script(Route::Chat, [Reply::error(500, "server_error", "once")]);
            let events: Vec<_> = ai.llm().chat(request.clone()).collect().await;
            assert_eq!(events.last(), Some(&Ok(LlmEvent::Done)));
            fake.script(Route::Chat, [Reply::error(400, "invalid_request_error", "no")]);
            let _: Vec<_> = ai.llm().chat(request.clone()).collect().await;
            // Dropped after the first token: cancelled.
            let mut stream = ai.llm().chat(request);
            let _ = stream.next().await;
            drop(stream);
            tokio::time::sleep(Duration::from_millis(50)).await;
            first
        })
    });
    let snapshots = [first, snapshotter.snapshot().into_vec()];
    assert_eq!(counter(&snapshots[..1], stats::CONNECTIONS_OPENED, &[]), 1, "warm-up, STT, TTS and a chat share one connection");
    assert_eq!(counter(&snapshots, stats::WARMUPS, &[("outcome", "ok")]), 1);
    assert_eq!(counter(&snapshots, stats::REQUESTS, &[("stage", "stt"), ("outcome", "ok")]), 1);
    assert_eq!(counter(&snapshots, stats::REQUESTS, &[("stage", "tts"), ("outcome", "ok")]), 1);
    assert_eq!(counter(&snapshots, stats::REQUESTS, &[("stage", "llm"), ("outcome", "ok")]), 2);
    assert_eq!(counter(&snapshots, stats::REQUESTS, &[("stage", "llm"), ("outcome", "invalid")]), 1);
    assert_eq!(counter(&snapshots, stats::REQUESTS, &[("stage", "llm"), ("outcome", "cancelled")]), 1);
    assert_eq!(counter(&snapshots, stats::RETRIES, &[("stage", "llm"), ("reason", "transient")]), 1);
    for stage in ["stt", "llm", "tts"] {
        assert_eq!(gauge(&snapshots, stats::IN_FLIGHT, &[("stage", stage)]), 0.0, "{stage} in flight");
        assert!(histogram_len(&snapshots, stats::FIRST_BYTE, &[("stage", stage)]) >= 1, "{stage}");
    }
    // A first byte per attempt with a success status: the first chat, the retry after
    // the 500, and the cancelled one (error statuses are not counted).
    assert_eq!(histogram_len(&snapshots, stats::FIRST_BYTE, &[("stage", "llm")]), 3);
}
