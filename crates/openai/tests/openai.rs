//! The providers against a fake OpenAI server on loopback: the requests they send,
//! the replies they read, and every failure they must name.

use voxgate_fake_openai as fake;

use std::time::{Duration, Instant};

use fake::{Fake, Reply, Route, chat_events, chunk, words};
use futures_util::StreamExt;
use serde_json::{Value, json};
use voxgate_openai::{Deadlines, OpenAi, OpenAiConfig, Overrides, RetryPolicy};
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatMessage, ChatRequest, LlmEvent, Role, ToolCallRequest, ToolSpec};

const KEY: &str = "sk-test-0123456789abcdefghijklmnopqrstuvwxyzSECRET";

fn config(fake: &Fake) -> OpenAiConfig {
    let quick = Deadlines { first_byte: Duration::from_secs(3), idle: Duration::from_secs(3), total: Duration::from_secs(15) };
    let mut config = OpenAiConfig { api_key: Some(KEY.into()), base_url: fake.base.clone(), ..OpenAiConfig::default() };
    config.deadlines.stt = quick;
    config.deadlines.llm = quick;
    config.deadlines.tts = quick;
    config.retry = RetryPolicy {
        rate_limit_default_wait: Duration::from_millis(50),
        transient_pause: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    config
}

fn openai(config: OpenAiConfig) -> OpenAi {
    OpenAi::with_own_client(config).expect("providers")
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "The weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

/// A conversation with every kind of message, and one tool.
fn request() -> ChatRequest {
    let mut assistant = ChatMessage::new(Role::Assistant, "");
    assistant.tool_calls = vec![ToolCallRequest { id: "call_1".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() }];
    let mut tool = ChatMessage::new(Role::Tool, r#"{"sky":"rain"}"#);
    tool.tool_call_id = Some("call_1".into());
    ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are brief."),
            ChatMessage::new(Role::User, "Weather in Oslo?"),
            assistant,
            tool,
            ChatMessage::new(Role::Assistant, "Rain in Oslo."),
            ChatMessage::new(Role::User, "And Paris?"),
        ],
        tools: vec![weather_tool()],
        temperature: 0.3,
        max_tokens: 120,
    }
}

async fn chat(ai: &OpenAi, request: ChatRequest) -> Vec<Result<LlmEvent, ServiceError>> {
    tokio::time::timeout(Duration::from_secs(60), ai.llm().chat(request).collect::<Vec<_>>()).await.expect("the stream ended")
}

async fn speak(ai: &OpenAi, text: &str) -> Vec<Result<Vec<i16>, ServiceError>> {
    tokio::time::timeout(Duration::from_secs(60), ai.tts().synthesize(text.into()).collect::<Vec<_>>()).await.expect("the stream ended")
}

fn tokens(events: &[Result<LlmEvent, ServiceError>]) -> Vec<String> {
    events.iter().filter_map(|e| match e {
        Ok(LlmEvent::Token(t)) => Some(t.clone()),
        _ => None,
    }).collect()
}

fn last_error<T: std::fmt::Debug>(events: &[Result<T, ServiceError>]) -> ServiceError {
    match events.last() {
        Some(Err(e)) => e.clone(),
        other => panic!("expected an error last, got {other:?}"),
    }
}

fn assert_no_key(error: &ServiceError) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        assert!(!text.contains("SECRET"), "part of the key leaked: {text}");
    }
}

fn ramp(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i as i32 * 97) % 50_000 - 25_000) as i16).collect()
}

// ---- STT ----

#[tokio::test]
async fn stt_sends_a_wav_in_multipart_and_reads_the_text() {
    let fake = Fake::start().await;
    let mut config = config(&fake);
    config.language = Some("en".into());
    let audio = ramp(16_000);
    let text = openai(config).stt().transcribe(audio.clone(), 16_000).await.unwrap();
    assert_eq!(text, fake.normal_values().transcript);

    let seen = fake.seen(Route::Transcriptions);
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert!(seen.content_type.as_deref().unwrap().starts_with("multipart/form-data; boundary="));
    assert_eq!(seen.fields.get("model").map(String::as_str), Some("gpt-4o-mini-transcribe"));
    assert_eq!(seen.fields.get("response_format").map(String::as_str), Some("json"));
    assert_eq!(seen.fields.get("language").map(String::as_str), Some("en"));
    let (name, mime, wav) = seen.file.clone().expect("a file part");
    assert_eq!((name.as_str(), mime.as_str()), ("audio.wav", "audio/wav"));
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    assert_eq!(reader.spec().channels, 1);
    let sent: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(sent, audio);
}

#[tokio::test]
async fn stt_without_language_sends_none_and_rejects_bad_input_locally() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    ai.stt().transcribe(ramp(800), 8_000).await.unwrap();
    assert_eq!(fake.seen(Route::Transcriptions)[0].fields.get("language"), None);

    assert_eq!(ai.stt().transcribe(Vec::new(), 16_000).await.unwrap(), "");
    let err = ai.stt().transcribe(ramp(10), 0).await.unwrap_err();
    assert!(matches!(err, ServiceError::Invalid { .. }), "{err}");
    let mut small = config(&fake);
    small.limits.upload_bytes = 1000;
    let err = openai(small).stt().transcribe(ramp(1000), 16_000).await.unwrap_err();
    assert!(matches!(&err, ServiceError::Invalid { message, .. } if message.contains("upload limit")), "{err}");
    assert_eq!(fake.seen(Route::Transcriptions).len(), 1, "bad input never reaches the server");
}

#[tokio::test]
async fn stt_malformed_truncated_and_oversized_replies_are_transient() {
    let fake = Fake::start().await;
    let raw = |body: &str| Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        before: Duration::ZERO,
        between: Duration::ZERO,
        pieces: vec![body.as_bytes().to_vec()],
        cut: false,
    };
    let mut small = config(&fake);
    small.limits.json_bytes = 64;
    let ai = openai(small);
    for body in [r#"{"text": "cut of"#, r#"{"transcript": "x"}"#, "<html>oops</html>", &format!(r#"{{"text": "{}"}}"#, "a".repeat(100))] {
        fake.script(Route::Transcriptions, [raw(body)]);
        let err = ai.stt().transcribe(ramp(100), 16_000).await.unwrap_err();
        assert!(matches!(err, ServiceError::Transient { .. }), "{body}: {err}");
    }
    assert_eq!(fake.seen(Route::Transcriptions).len(), 4, "malformed replies are not retried");
}

// ---- LLM ----

#[tokio::test]
async fn llm_streams_tokens_and_sends_the_whole_conversation() {
    let fake = Fake::start().await;
    let events = chat(&openai(config(&fake)), request()).await;
    let reply = fake.normal_values().reply;
    assert_eq!(tokens(&events), words(&reply));
    assert_eq!(events.last(), Some(&Ok(LlmEvent::Done)));

    let seen = fake.seen(Route::Chat);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let body = seen[0].json.clone().unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(body["max_tokens"], 120, "a server other than api.openai.com gets max_tokens");
    assert_eq!(body["tools"], json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]));
    assert_eq!(body["messages"], json!([
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\":\"rain\"}"},
        {"role": "assistant", "content": "Rain in Oslo."},
        {"role": "user", "content": "And Paris?"},
    ]));
}

#[tokio::test]
async fn llm_assembles_tool_calls_split_across_chunks() {
    let fake = Fake::start().await;
    let tc = |v: Value| chunk(json!({"tool_calls": [v]}), None);
    let events = vec![
        chunk(json!({"role": "assistant", "content": null}), None),
        chunk(json!({"content": "Let me check."}), None),
        tc(json!({"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}})),
        tc(json!({"index": 0, "function": {"arguments": "{\"ci"}})),
        tc(json!({"index": 0, "function": {"arguments": "ty\":\"Pa"}})),
        tc(json!({"index": 0, "function": {"arguments": "ris\"}"}})),
        tc(json!({"index": 1, "id": "call_def", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\""}})),
        tc(json!({"index": 1, "function": {"arguments": ":\"Rome\"}"}})),
        chunk(json!({}), Some("tool_calls")),
        "[DONE]".into(),
    ];
    // One event split over several pieces too, in the middle of its JSON.
    let mut pieces: Vec<Vec<u8>> = events.iter().map(|e| format!("data: {e}\n\n").into_bytes()).collect();
    let split = pieces.remove(4);
    pieces.insert(4, split[..17].to_vec());
    pieces.insert(5, split[17..].to_vec());
    fake.script(Route::Chat, [Reply::Raw {
        status: 200, content_type: "text/event-stream".into(), before: Duration::ZERO, between: Duration::from_millis(2), pieces, cut: false,
    }]);
    let got = chat(&openai(config(&fake)), request()).await;
    let got: Vec<LlmEvent> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, vec![
        LlmEvent::Token("Let me check.".into()),
        LlmEvent::ToolCall(ToolCallRequest { id: "call_abc".into(), name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() }),
        LlmEvent::ToolCall(ToolCallRequest { id: "call_def".into(), name: "get_weather".into(), arguments: r#"{"city":"Rome"}"#.into() }),
        LlmEvent::Done,
    ]);
    let sent: Vec<Value> = serde_json::from_value(fake.seen(Route::Chat)[0].json.clone().unwrap()["tools"].clone()).unwrap();
    assert_eq!(sent[0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn llm_reads_crlf_comments_multiline_events_and_byte_by_byte_streams() {
    let fake = Fake::start().await;
    let a = chunk(json!({"content": "Hel"}), None);
    let b = chunk(json!({"content": "lo"}), None);
    let stop = chunk(json!({}), Some("stop"));
    // A keep-alive comment, CRLF line ends, a JSON object split over two data lines
    // (joined with a newline, which JSON allows), and an id field.
    let (b1, b2) = b.split_at(b.find(",").unwrap() + 1);
    let text = format!(": OPENROUTER PROCESSING\r\n\r\ndata: {a}\r\n\r\nid: 7\r\ndata: {b1}\r\ndata: {b2}\r\n\r\ndata: {stop}\r\n\r\ndata: [DONE]\r\n\r\n");
    for piece_len in [text.len(), 1, 5] {
        fake.script(Route::Chat, [Reply::Raw {
            status: 200,
            content_type: "text/event-stream".into(),
            before: Duration::ZERO,
            between: Duration::ZERO,
            pieces: text.as_bytes().chunks(piece_len).map(<[u8]>::to_vec).collect(),
            cut: false,
        }]);
        let events = chat(&openai(config(&fake)), request()).await;
        assert_eq!(tokens(&events), vec!["Hel", "lo"], "pieces of {piece_len}");
        assert_eq!(events.last(), Some(&Ok(LlmEvent::Done)));
    }
}

#[tokio::test]
async fn llm_max_completion_tokens_when_asked() {
    let fake = Fake::start().await;
    let mut config = config(&fake);
    config.max_tokens_field = voxgate_openai::MaxTokensField::MaxCompletionTokens;
    chat(&openai(config), request()).await;
    let body = fake.seen(Route::Chat)[0].json.clone().unwrap();
    assert_eq!(body["max_completion_tokens"], 120);
    assert!(body.get("max_tokens").is_none());
}

#[tokio::test]
async fn llm_malformed_line_is_transient_and_not_retried() {
    let fake = Fake::start().await;
    let mut events = chat_events("One two three");
    events.insert(2, "{\"choices\": [{\"delta\": {\"content\": \"bro".into());
    fake.script(Route::Chat, [Reply::sse(&events, Duration::ZERO, false)]);
    let got = chat(&openai(config(&fake)), request()).await;
    assert_eq!(tokens(&got), vec!["One "]);
    let err = last_error(&got);
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("malformed")), "{err}");

    // Malformed as the very first event: nothing was yielded, but bad data is not retried either.
    fake.script(Route::Chat, [Reply::sse(&["not json".to_string()], Duration::ZERO, false)]);
    let got = chat(&openai(config(&fake)), request()).await;
    assert_eq!(got.len(), 1);
    assert!(matches!(last_error(&got), ServiceError::Transient { .. }));
    assert_eq!(fake.seen(Route::Chat).len(), 2);
}

#[tokio::test]
async fn llm_stream_cut_mid_reply_is_transient_and_not_retried() {
    let fake = Fake::start().await;
    let mut events = chat_events("It is sunny in Paris today.");
    events.truncate(4);
    fake.script(Route::Chat, [Reply::sse(&events, Duration::from_millis(5), true)]);
    let got = chat(&openai(config(&fake)), request()).await;
    assert_eq!(tokens(&got), vec!["It ", "is ", "sunny "]);
    assert!(matches!(last_error(&got), ServiceError::Transient { .. }));
    assert_eq!(fake.seen(Route::Chat).len(), 1, "a stream that yielded tokens is left to the caller");

    // Ended cleanly but without [DONE] or a finish reason: also a cut.
    fake.script(Route::Chat, [Reply::sse(&events, Duration::ZERO, false), Reply::sse(&events, Duration::ZERO, false)]);
    let got = chat(&openai(config(&fake)), request()).await;
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("[DONE]")));
}

#[tokio::test]
async fn llm_cut_before_any_token_is_retried_once() {
    let fake = Fake::start().await;
    let role_only = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    fake.script(Route::Chat, [Reply::sse(&role_only, Duration::ZERO, true)]);
    let got = chat(&openai(config(&fake)), request()).await;
    assert_eq!(tokens(&got), words(&fake.normal_values().reply));
    assert_eq!(got.last(), Some(&Ok(LlmEvent::Done)));
    assert_eq!(fake.seen(Route::Chat).len(), 2);
}

#[tokio::test]
async fn llm_500_then_success_is_retried_and_two_500s_are_transient() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    fake.script(Route::Chat, [Reply::error(500, "server_error", "The server had an error")]);
    let got = chat(&ai, request()).await;
    assert_eq!(got.last(), Some(&Ok(LlmEvent::Done)));
    assert_eq!(fake.seen(Route::Chat).len(), 2);

    fake.script(Route::Chat, [Reply::error(500, "server_error", "boom one"), Reply::error(503, "server_error", "boom two")]);
    let got = chat(&ai, request()).await;
    let err = last_error(&got);
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("503") && message.contains("boom two")), "{err}");
    assert_eq!(fake.seen(Route::Chat).len(), 4);
}

#[tokio::test]
async fn llm_slow_first_byte_passes_the_deadline() {
    let fake = Fake::start().await;
    let mut config = config(&fake);
    config.deadlines.llm = Deadlines { first_byte: Duration::from_millis(150), idle: Duration::from_secs(1), total: Duration::from_secs(10) };
    let slow = Reply::slow(Route::Chat, &fake, Duration::from_millis(800));
    fake.script(Route::Chat, [slow.clone(), slow]);
    let got = chat(&openai(config.clone()), request()).await;
    let err = last_error(&got);
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("first-byte deadline")), "{err}");
    assert_eq!(fake.seen(Route::Chat).len(), 2, "retried once");

    // Slow once, then fast: the retry succeeds.
    fake.script(Route::Chat, [Reply::slow(Route::Chat, &fake, Duration::from_millis(800))]);
    let got = chat(&openai(config), request()).await;
    assert_eq!(got.last(), Some(&Ok(LlmEvent::Done)));
}

#[tokio::test]
async fn llm_stall_mid_stream_and_total_deadline() {
    let fake = Fake::start().await;
    let mut config = config(&fake);
    config.deadlines.llm = Deadlines { first_byte: Duration::from_secs(1), idle: Duration::from_millis(100), total: Duration::from_secs(10) };
    // Stalled after the role chunk, before any token: retried once, then given up.
    let stalled = Reply::sse(&chat_events("a b c"), Duration::from_millis(600), false);
    fake.script(Route::Chat, [stalled.clone(), stalled]);
    let got = chat(&openai(config.clone()), request()).await;
    assert_eq!(got.len(), 1);
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("stalled")));
    assert_eq!(fake.seen(Route::Chat).len(), 2);

    config.deadlines.llm = Deadlines { first_byte: Duration::from_secs(1), idle: Duration::from_secs(1), total: Duration::from_millis(300) };
    fake.script(Route::Chat, [Reply::sse(&chat_events("a b c d e f g"), Duration::from_millis(100), false)]);
    let got = chat(&openai(config), request()).await;
    assert!(!tokens(&got).is_empty());
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("total deadline")));
}

#[tokio::test]
async fn llm_oversized_stream_and_json_instead_of_sse() {
    let fake = Fake::start().await;
    let mut config = config(&fake);
    config.limits.chat_bytes = 2_000;
    fake.script(Route::Chat, [Reply::sse(&chat_events(&"word ".repeat(100)), Duration::ZERO, false)]);
    let got = chat(&openai(config.clone()), request()).await;
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("limit")));

    // One endless line without a newline.
    fake.script(Route::Chat, [Reply::Raw {
        status: 200, content_type: "text/event-stream".into(), before: Duration::ZERO, between: Duration::ZERO,
        pieces: vec![vec![b'x'; 1000]; 10], cut: false,
    }]);
    let got = chat(&openai(config.clone()), request()).await;
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("limit")));

    fake.script(Route::Chat, [Reply::Raw {
        status: 200, content_type: "application/json".into(), before: Duration::ZERO, between: Duration::ZERO,
        pieces: vec![br#"{"choices":[{"message":{"content":"hi"}}]}"#.to_vec()], cut: false,
    }]);
    let got = chat(&openai(config), request()).await;
    assert!(matches!(last_error(&got), ServiceError::Transient { message, .. } if message.contains("stream")));
}

#[tokio::test]
async fn dropping_the_stream_cancels() {
    let fake = Fake::start().await;
    fake.script(Route::Chat, [Reply::sse(&chat_events(&"slow ".repeat(50)), Duration::from_millis(50), false)]);
    let ai = openai(config(&fake));
    let mut stream = ai.llm().chat(request());
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(LlmEvent::Token(_)))));
    drop(stream);
    // The next call still works on the same client.
    assert_eq!(chat(&ai, request()).await.last(), Some(&Ok(LlmEvent::Done)));
}

// ---- status mapping ----

#[tokio::test]
async fn unauthorized_names_the_problem_without_the_key() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    fake.script(Route::Chat, [Reply::EchoKey]);
    let err = last_error(&chat(&ai, request()).await);
    match &err {
        ServiceError::Unauthorized { provider, message } => {
            assert_eq!(*provider, "openai");
            assert!(message.contains("401") && message.contains("Incorrect API key provided"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_no_key(&err);
    fake.script(Route::Speech, [Reply::error(403, "permission_denied", "Project does not have access")]);
    let err = last_error(&speak(&ai, "hello").await);
    assert!(matches!(&err, ServiceError::Unauthorized { message, .. } if message.contains("does not have access")), "{err}");
    assert_eq!(fake.seen(Route::Chat).len() + fake.seen(Route::Speech).len(), 2, "never retried");
}

#[tokio::test]
async fn rate_limits_wait_as_asked_then_give_up() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    // 429 with a wait in seconds, then success.
    fake.script(Route::Chat, [Reply::rate_limited("1")]);
    let started = Instant::now();
    let got = chat(&ai, request()).await;
    assert_eq!(got.last(), Some(&Ok(LlmEvent::Done)));
    assert!(started.elapsed() >= Duration::from_secs(1), "waited what the server asked");
    assert_eq!(fake.seen(Route::Chat).len(), 2);

    // Three 429s: two retries, then RateLimited with the server's wait.
    fake.script(Route::Chat, (0..3).map(|_| Reply::rate_limited("0.05")));
    let err = last_error(&chat(&ai, request()).await);
    assert_eq!(err, ServiceError::RateLimited { provider: "openai", retry_after: Some(Duration::from_millis(50)) });
    assert_eq!(fake.seen(Route::Chat).len(), 5);

    // A wait beyond the cap is handed to the caller at once.
    fake.script(Route::Chat, [Reply::rate_limited("30")]);
    let started = Instant::now();
    let err = last_error(&chat(&ai, request()).await);
    assert_eq!(err, ServiceError::RateLimited { provider: "openai", retry_after: Some(Duration::from_secs(30)) });
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(fake.seen(Route::Chat).len(), 6);

    // An HTTP date.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    fake.script(Route::Chat, [Reply::rate_limited(&date)]);
    match last_error(&chat(&ai, request()).await) {
        ServiceError::RateLimited { retry_after: Some(wait), .. } => assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}"),
        other => panic!("{other:?}"),
    }

    // A spent quota is not a wait.
    fake.script(Route::Chat, [Reply::Error {
        status: 429, kind: "insufficient_quota".into(), code: Some("insufficient_quota".into()),
        message: "You exceeded your current quota".into(), retry_after: None,
    }]);
    let err = last_error(&chat(&ai, request()).await);
    assert!(matches!(&err, ServiceError::Unauthorized { message, .. } if message.contains("quota")), "{err}");
}

#[tokio::test]
async fn client_errors_are_invalid() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    for (status, kind) in [(400, "invalid_request_error"), (404, "invalid_request_error"), (422, "unprocessable"), (413, "too_large")] {
        fake.script(Route::Chat, [Reply::Error {
            status, kind: kind.into(), code: Some("model_not_found".into()), message: format!("status {status} here"), retry_after: None,
        }]);
        let err = last_error(&chat(&ai, request()).await);
        assert!(matches!(&err, ServiceError::Invalid { message, .. } if message.contains(&format!("status {status} here"))), "{err}");
        fake.script(Route::Transcriptions, [Reply::error(status, kind, "bad audio")]);
        let err = ai.stt().transcribe(ramp(10), 16_000).await.unwrap_err();
        assert!(matches!(err, ServiceError::Invalid { .. }), "{err}");
    }
    assert_eq!(fake.seen(Route::Chat).len(), 4, "never retried");
}

#[tokio::test]
async fn connect_failures_are_transient() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = OpenAiConfig { api_key: Some(KEY.into()), base_url: format!("http://127.0.0.1:{port}/v1"), ..OpenAiConfig::default() };
    let ai = openai(config);
    let err = last_error(&chat(&ai, request()).await);
    assert!(matches!(&err, ServiceError::Transient { message, .. } if message.contains("failed")), "{err}");
    assert_no_key(&err);
    let err = ai.warm().await.unwrap_err();
    assert!(matches!(err, ServiceError::Transient { .. }));
}

// ---- TTS ----

#[tokio::test]
async fn tts_streams_whole_samples_from_odd_pieces() {
    let fake = Fake::start().await;
    let pieces = speak(&openai(config(&fake)), "  Hello there.  ").await;
    assert!(pieces.len() > 3, "streamed in pieces: {}", pieces.len());
    let samples: Vec<i16> = pieces.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(samples, fake.normal_values().speech);
    let seen = fake.seen(Route::Speech);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(seen[0].json.clone().unwrap(), json!({"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"}));
    assert_eq!(openai(config(&fake)).tts().sample_rate(), 24_000);
}

#[tokio::test]
async fn tts_retries_before_audio_but_not_after() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    fake.script(Route::Speech, [Reply::error(502, "server_error", "bad gateway")]);
    let samples: Vec<i16> = speak(&ai, "Hi").await.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(samples, fake.normal_values().speech);
    assert_eq!(fake.seen(Route::Speech).len(), 2);

    let half: Vec<Vec<u8>> = vec![vec![1, 0, 2, 0, 3], vec![0, 4, 0]];
    fake.script(Route::Speech, [Reply::Raw {
        status: 200, content_type: "audio/pcm".into(), before: Duration::ZERO, between: Duration::from_millis(5), pieces: half, cut: true,
    }]);
    let got = speak(&ai, "Hi").await;
    assert_eq!(got[0], Ok(vec![1, 2]));
    assert_eq!(got[1], Ok(vec![3, 4]));
    assert!(matches!(last_error(&got), ServiceError::Transient { .. }));
    assert_eq!(fake.seen(Route::Speech).len(), 3, "not retried once audio went out");

    assert!(speak(&ai, "   ").await.is_empty(), "nothing to say, no request");
    let err = last_error(&speak(&ai, &"a".repeat(5000)).await);
    assert!(matches!(err, ServiceError::Invalid { .. }));
    fake.script(Route::Speech, [Reply::Raw {
        status: 200, content_type: "application/json".into(), before: Duration::ZERO, between: Duration::ZERO, pieces: vec![b"{}".to_vec()], cut: false,
    }]);
    assert!(matches!(last_error(&speak(&ai, "Hi").await), ServiceError::Transient { message, .. } if message.contains("PCM")));
    assert_eq!(fake.seen(Route::Speech).len(), 4);
}

// ---- secrets, overrides, warm-up ----

#[tokio::test]
async fn the_key_never_shows() {
    let fake = Fake::start().await;
    let config = config(&fake);
    for text in [format!("{config:?}"), format!("{:?}", openai(config.clone()))] {
        assert!(!text.contains(KEY) && !text.contains("SECRET"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
    let overrides = Overrides { api_key: Some(KEY.into()), ..Overrides::default() };
    assert!(!format!("{overrides:?}").contains("SECRET"));

    let ai = openai(config);
    let mut errors = Vec::new();
    fake.script(Route::Chat, [Reply::EchoKey, Reply::error(400, "invalid_request_error", &format!("bad key {KEY}"))]);
    errors.push(last_error(&chat(&ai, request()).await));
    errors.push(last_error(&chat(&ai, request()).await));
    fake.script(Route::Transcriptions, [Reply::EchoKey]);
    errors.push(ai.stt().transcribe(ramp(10), 16_000).await.unwrap_err());
    fake.script(Route::Speech, [Reply::EchoKey]);
    errors.push(last_error(&speak(&ai, "hi").await));
    for e in &errors {
        assert_no_key(e);
    }
    let bad = OpenAi::with_own_client(OpenAiConfig { base_url: format!("http://u:{KEY}@127.0.0.1/v1"), ..OpenAiConfig::default() }).unwrap_err();
    assert!(!bad.to_string().contains("SECRET") && !format!("{bad:?}").contains("SECRET"), "{bad}");
}

#[tokio::test]
async fn overrides_change_models_and_keep_the_key_at_home() {
    let home = Fake::start().await;
    let other = Fake::start().await;
    let ai = openai(config(&home));
    let same_host = ai
        .with_overrides(&Overrides { llm_model: Some("gpt-4.1-mini".into()), voice: Some("nova".into()), ..Overrides::default() })
        .unwrap();
    chat(&same_host, request()).await;
    speak(&same_host, "hi").await;
    assert_eq!(home.seen(Route::Chat)[0].json.clone().unwrap()["model"], "gpt-4.1-mini");
    assert_eq!(home.seen(Route::Speech)[0].json.clone().unwrap()["voice"], "nova");
    assert!(home.seen(Route::Chat)[0].authorization.is_some());

    let elsewhere = ai.with_overrides(&Overrides { base_url: Some(other.base.clone()), ..Overrides::default() }).unwrap();
    assert_eq!(chat(&elsewhere, request()).await.last(), Some(&Ok(LlmEvent::Done)));
    assert_eq!(other.seen(Route::Chat)[0].authorization, None, "the key stays with its own server");
    let with_key = ai
        .with_overrides(&Overrides { base_url: Some(other.base.clone()), api_key: Some("other-key".into()), ..Overrides::default() })
        .unwrap();
    chat(&with_key, request()).await;
    assert_eq!(other.seen(Route::Chat)[1].authorization.as_deref(), Some("Bearer other-key"));
    assert!(ai.with_overrides(&Overrides { base_url: Some("not a url".into()), ..Overrides::default() }).is_err());
}

#[tokio::test]
async fn warm_up_asks_for_models_and_reports_a_bad_key() {
    let fake = Fake::start().await;
    let ai = openai(config(&fake));
    ai.warm().await.unwrap();
    let seen = fake.seen(Route::Models);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    fake.script(Route::Models, [Reply::EchoKey]);
    let err = ai.warm().await.unwrap_err();
    assert!(matches!(err, ServiceError::Unauthorized { .. }));
    assert_no_key(&err);
    fake.script(Route::Models, [Reply::error(404, "invalid_request_error", "no such route")]);
    ai.warm().await.expect("any answer leaves a warm connection");
}

#[test]
fn bad_configs_are_refused_with_the_fix() {
    let err = OpenAi::with_own_client(OpenAiConfig { base_url: "api.openai.com/v1".into(), ..OpenAiConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("OPENAI_BASE_URL"), "{err}");
    let mut config = OpenAiConfig::default();
    config.models.llm = " ".into();
    assert!(OpenAi::with_own_client(config).unwrap_err().to_string().contains("LLM model"));
    let config = OpenAiConfig { api_key: Some("sk-a\nb".into()), ..OpenAiConfig::default() };
    assert!(matches!(OpenAi::with_own_client(config), Err(voxgate_openai::Error::ApiKey)));
}
