//! The fallback taking over from OpenAI providers on a fake OpenAI server over real
//! HTTP: before the first word, mid-reply, for a transcription and for a clause;
//! and not taking over when the key is refused or the fallback cannot serve.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{FutureExt, ready};
use futures_util::StreamExt;
use voxgate_fake_openai::{Fake, Reply, Route, chat_events};
use voxgate_openai::{OpenAi, OpenAiConfig};
use voxgate_providers::fallback::{FallbackLlm, FallbackStt, FallbackTts, Later};
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatMessage, ChatRequest, Llm, LlmEvent, Role};
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_services::stt::Stt;
use voxgate_services::tts::Tts;

fn openai(fake: &Fake) -> OpenAi {
    let mut config = OpenAiConfig { api_key: Some("sk-test-fallback".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() };
    config.retry.transient_pause = Duration::from_millis(5);
    OpenAi::with_own_client(config).unwrap()
}

fn later<T: Clone + Send + Sync + 'static>(value: T) -> Later<T> {
    ready(Ok(value)).boxed().shared()
}

fn never<T: Clone + Send + Sync + 'static>() -> Later<T> {
    ready(Err("the local models failed to load: test".to_string())).boxed().shared()
}

fn request(question: &str) -> ChatRequest {
    ChatRequest { messages: vec![ChatMessage::new(Role::User, question)], tools: Vec::new(), temperature: 0.5, max_tokens: 50 }
}

fn server_error() -> Reply {
    Reply::error(500, "server_error", "The server had an error while processing your request.")
}

/// The reply's text, and the error that ended it if one did.
async fn run(llm: &dyn Llm, req: ChatRequest) -> (String, Option<ServiceError>) {
    let mut text = String::new();
    let mut stream = llm.chat(req);
    while let Some(event) = stream.next().await {
        match event {
            Ok(LlmEvent::Token(t)) => text.push_str(&t),
            Ok(_) => {}
            Err(e) => return (text, Some(e)),
        }
    }
    (text, None)
}

#[tokio::test]
async fn a_reply_that_fails_before_its_first_word_is_answered_by_the_fallback() {
    let fake = Fake::start().await;
    // The first attempt and its one retry both fail.
    fake.script(Route::Chat, [server_error(), server_error()]);
    let local = ScriptedLlm::new([ScriptedLlm::words("Local answer here.", Duration::ZERO)]);
    let llm = FallbackLlm { primary: openai(&fake).llm(), fallback: later(Arc::new(local.clone()) as Arc<dyn Llm>) };

    let (text, error) = run(&llm, request("Where is Paris?")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "Local answer here.");
    assert_eq!(fake.seen(Route::Chat).len(), 2, "one try and one retry before the fallback");
    {
        let seen = local.requests.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].messages, request("Where is Paris?").messages, "the fallback gets the same conversation");
    }

    // The next turn goes to OpenAI again.
    let (text, error) = run(&llm, request("And Rome?")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, fake.normal_values().reply);
}

#[tokio::test]
async fn a_reply_cut_mid_way_keeps_its_words_and_the_fallback_goes_on_from_them() {
    let fake = Fake::start().await;
    let events = chat_events("It is sunny in Paris today.");
    // The role chunk and two words arrive, then the connection drops.
    fake.script(Route::Chat, [Reply::sse(&events[..3], Duration::from_millis(1), true)]);
    let local = ScriptedLlm::new([ScriptedLlm::words("sunny today.", Duration::ZERO)]);
    let llm = FallbackLlm { primary: openai(&fake).llm(), fallback: later(Arc::new(local.clone()) as Arc<dyn Llm>) };

    let (text, error) = run(&llm, request("What is the weather in Paris?")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "It is sunny today.", "the words already sent stay; the fallback's follow");
    assert_eq!(fake.seen(Route::Chat).len(), 1, "a stream that already yielded words is not retried");
    let seen = local.requests.lock().unwrap();
    let last = seen[0].messages.last().unwrap();
    assert_eq!((last.role, last.content.as_str()), (Role::Assistant, "It is "), "the fallback sees what was said");
}

#[tokio::test]
async fn a_word_cut_without_a_space_is_not_run_into_the_fallbacks_first_word() {
    let fake = Fake::start().await;
    let events = [
        voxgate_fake_openai::chunk(serde_json::json!({"role": "assistant", "content": ""}), None),
        voxgate_fake_openai::chunk(serde_json::json!({"content": "Paris"}), None),
    ];
    fake.script(Route::Chat, [Reply::sse(&events, Duration::ZERO, true)]);
    let local = ScriptedLlm::new([ScriptedLlm::words("is lovely.", Duration::ZERO)]);
    let llm = FallbackLlm { primary: openai(&fake).llm(), fallback: later(Arc::new(local) as Arc<dyn Llm>) };
    let (text, error) = run(&llm, request("Tell me about Paris")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "Paris is lovely.");
}

#[tokio::test]
async fn refused_credentials_are_not_hidden_behind_the_fallback() {
    let fake = Fake::start().await;
    fake.script(Route::Chat, [Reply::EchoKey]);
    let local = ScriptedLlm::new([ScriptedLlm::words("Should not be heard.", Duration::ZERO)]);
    let llm = FallbackLlm { primary: openai(&fake).llm(), fallback: later(Arc::new(local.clone()) as Arc<dyn Llm>) };
    let (text, error) = run(&llm, request("Hello?")).await;
    assert_eq!(text, "");
    let error = error.expect("the 401 reaches the stage");
    assert_eq!(error.code(), "provider-unauthorized", "{error}");
    assert!(!error.to_string().contains("sk-test-fallback"), "the key leaked: {error}");
    assert!(local.requests.lock().unwrap().is_empty(), "the fallback was asked");
}

#[tokio::test]
async fn a_fallback_that_cannot_serve_leaves_the_first_error() {
    let fake = Fake::start().await;
    fake.script(Route::Chat, [server_error(), server_error()]);
    let llm = FallbackLlm { primary: openai(&fake).llm(), fallback: never() };
    let (text, error) = run(&llm, request("Hello?")).await;
    assert_eq!(text, "");
    assert_eq!(error.expect("the provider's error").code(), "provider-failed");
}

#[tokio::test]
async fn a_failed_transcription_is_done_again_by_the_fallback() {
    let fake = Fake::start().await;
    let unavailable = Reply::error(503, "server_error", "The engine is currently overloaded, please try again later");
    fake.script(Route::Transcriptions, [unavailable.clone(), unavailable]);
    let local = ScriptedStt::new(["heard locally"], Duration::ZERO);
    let stt = FallbackStt { primary: openai(&fake).stt(), fallback: later(Arc::new(local) as Arc<dyn Stt>) };
    let audio: Vec<i16> = (0..16_000).map(|i| ((i as f32 * 0.05).sin() * 4000.0) as i16).collect();
    assert_eq!(stt.transcribe(audio.clone(), 16_000).await.unwrap(), "heard locally");
    assert_eq!(fake.seen(Route::Transcriptions).len(), 2);
    // Then OpenAI again.
    assert_eq!(stt.transcribe(audio, 16_000).await.unwrap(), fake.normal_values().transcript);
}

#[tokio::test]
async fn a_rate_limit_past_its_retries_goes_to_the_fallback() {
    let fake = Fake::start().await;
    fake.script(Route::Transcriptions, (0..3).map(|_| Reply::rate_limited("0.01")));
    let stt = FallbackStt {
        primary: openai(&fake).stt(),
        fallback: later(Arc::new(ScriptedStt::new(["local"], Duration::ZERO)) as Arc<dyn Stt>),
    };
    assert_eq!(stt.transcribe(vec![0; 8000], 16_000).await.unwrap(), "local");
    assert_eq!(fake.seen(Route::Transcriptions).len(), 3, "the first try and two rate-limit retries");
}

#[tokio::test]
async fn a_failed_clause_is_spoken_by_the_fallback_at_the_first_voices_rate() {
    let fake = Fake::start().await;
    fake.script(Route::Speech, [server_error(), server_error()]);
    // The fallback speaks at Piper's rate; the call's output expects OpenAI's.
    let local = ToneTts { rate: 22_050, ..ToneTts::default() };
    let tts = FallbackTts::new(openai(&fake).tts(), later(Arc::new(local.clone()) as Arc<dyn Tts>));
    assert_eq!(tts.sample_rate(), voxgate_openai::TTS_SAMPLE_RATE);

    let text = "Hello there.";
    for round in 0..2 {
        let mut samples = 0usize;
        let mut peak = 0i16;
        let mut stream = tts.synthesize(text.into());
        while let Some(piece) = stream.next().await {
            let pcm = piece.unwrap();
            samples += pcm.len();
            peak = peak.max(pcm.iter().map(|s| s.saturating_abs()).max().unwrap_or(0));
        }
        if round == 0 {
            // The tone's length at 22,050 Hz, resampled to 24,000 Hz.
            let at_local = text.chars().count() * local.ms_per_char as usize * 22_050 / 1000;
            let expected = at_local * 24_000 / 22_050;
            assert!(samples.abs_diff(expected) < 200, "{samples} samples, expected about {expected}");
            assert!(peak > 6000, "the tone survives resampling (peak {peak})");
        } else {
            // The next clause is OpenAI's own audio again.
            assert_eq!(samples, fake.normal_values().speech.len(), "round {round}");
        }
    }
}
