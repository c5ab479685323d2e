//! The STT, LLM, clause and TTS stages together, with scripted providers, on paused
//! time: streaming (speech starts on the first clause), history from what was
//! played, tool calls, end-call tool and phrase, interruption.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use voxgate_frames::{AudioFrame, EndReason, Frame, Stage, Transcript};
use voxgate_pipeline::{CancellationToken, Pipeline};
use voxgate_services::llm::{Role, ToolSpec};
use voxgate_services::processors::clauses::ClauseStage;
use voxgate_services::processors::llm::{LlmConfig, LlmStage, ToolRunner};
use voxgate_services::processors::stt::SttStage;
use voxgate_services::processors::tts::TtsStage;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, Step, ToneTts};

const MS: fn(u64) -> Duration = Duration::from_millis;

struct Chain {
    io: voxgate_pipeline::PipelineIo,
    llm: ScriptedLlm,
    convo: Arc<std::sync::Mutex<voxgate_services::context::Conversation>>,
}

fn chain(stt: ScriptedStt, llm: ScriptedLlm, cfg: LlmConfig, tools: Option<Arc<dyn ToolRunner>>) -> Chain {
    let tts = ToneTts { rate: 24_000, ms_per_char: 50, chunk_ms: 40, first_delay: MS(30) };
    let stage = LlmStage::new(Arc::new(llm.clone()), tools, cfg);
    let convo = stage.conversation();
    let io = Pipeline::default()
        .stage(SttStage::new(Arc::new(stt), 16_000))
        .stage(stage)
        .stage(ClauseStage::default())
        .stage(TtsStage::new(Arc::new(tts)))
        .spawn(CancellationToken::new());
    Chain { io, llm, convo }
}

/// A caller's turn: `ms` of speech, then the end of the turn at once.
async fn speak(io: &voxgate_pipeline::PipelineIo, ms: u32) {
    voiced(io, ms).await;
    io.head.send(Frame::EndOfTurn).await.unwrap();
}

/// Collects downstream frames until `until` matches (or 10 s of paused time pass).
async fn collect_until(io: &mut voxgate_pipeline::PipelineIo, until: impl Fn(&Frame) -> bool) -> Vec<(Frame, tokio::time::Instant)> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), io.downstream.recv()).await {
            Ok(Some((f, _))) => {
                let done = until(&f);
                got.push((f, tokio::time::Instant::now()));
                if done {
                    return got;
                }
            }
            _ => panic!("timed out; got {:?}", got.iter().map(|(f, _)| f.name()).collect::<Vec<_>>()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn speech_starts_on_the_first_clause_and_history_holds_what_was_played() {
    let stt = ScriptedStt::new(["what time is it"], MS(40));
    let reply = ScriptedLlm::words("It is noon. Anything else I can help you with today?", MS(25));
    let mut c = chain(stt, ScriptedLlm::new([reply]), LlmConfig { system_prompt: "Be brief.".into(), ..Default::default() }, None);

    let t0 = tokio::time::Instant::now();
    speak(&c.io, 400).await;
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseEnd)).await;
    let names: Vec<_> = frames.iter().map(|(f, _)| f.name()).collect();

    // The transcript comes before the end of turn, and the reply after it.
    let tr = names.iter().position(|n| *n == "transcript").unwrap();
    let eot = names.iter().position(|n| *n == "end-of-turn").unwrap();
    assert!(tr < eot, "{names:?}");
    assert!(frames.iter().any(|(f, _)| matches!(f, Frame::Metric { stage: Stage::Stt, .. })));
    assert!(frames.iter().any(|(f, _)| matches!(f, Frame::Metric { stage: Stage::LlmFirstToken, .. })));
    assert!(frames.iter().any(|(f, _)| matches!(f, Frame::Metric { stage: Stage::TtsFirstAudio, .. })));

    // Streaming: the first audio leaves before the model has finished the reply.
    let first_audio = frames.iter().find(|(f, _)| matches!(f, Frame::OutputAudio(_))).unwrap().1;
    let clauses: Vec<_> = frames.iter().filter_map(|(f, _)| match f { Frame::SpeechClause(t) => Some(t.clone()), _ => None }).collect();
    assert_eq!(clauses[0], "It is noon.");
    let tokens = 12u64;
    let reply_done = t0 + MS(40 + 25 * (tokens - 1));
    assert!(first_audio < reply_done, "first audio at {:?}, reply done at {:?}", first_audio - t0, reply_done - t0);

    // The output reports what was played; the history keeps exactly that.
    c.io.tail.send(Frame::Spoken("It is noon.".into())).await.unwrap();
    tokio::time::sleep(MS(10)).await;
    let convo = c.convo.lock().unwrap().clone();
    assert_eq!(convo.messages.len(), 2);
    assert_eq!(convo.messages[0].content, "what time is it");
    assert_eq!((convo.messages[1].role, convo.messages[1].content.as_str()), (Role::Assistant, "It is noon."));
    {
        let req = &c.llm.requests.lock().unwrap()[0];
        assert_eq!(req.messages[0].content, "Be brief.");
    }
    c.io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_interruption_cancels_the_model_and_speech_in_flight() {
    let stt = ScriptedStt::new(["tell me a story", "stop"], MS(10));
    let long = ScriptedLlm::words(&"Once upon a time there was a very long story. ".repeat(20), MS(50));
    let mut c = chain(stt, ScriptedLlm::new([long]), LlmConfig::default(), None);
    speak(&c.io, 200).await;
    collect_until(&mut c.io, |f| matches!(f, Frame::OutputAudio(_))).await;

    c.io.head.send(Frame::Interruption).await.unwrap();
    collect_until(&mut c.io, |f| matches!(f, Frame::Interruption)).await;
    // After the interruption, the old reply produces nothing more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut after = Vec::new();
    while let Ok((f, _)) = c.io.downstream.try_recv() {
        after.push(f.name());
    }
    assert!(after.iter().all(|n| !matches!(*n, "llm-text" | "output-audio" | "speech-clause" | "llm-response-end")), "{after:?}");
    assert_eq!(c.llm.requests.lock().unwrap().len(), 1);
    c.io.shutdown().await.unwrap();
}

struct Weather;

impl ToolRunner for Weather {
    fn call(&self, name: &str, arguments: &str) -> BoxFuture<'static, Result<Value, String>> {
        let out = if name == "weather" {
            let args: Value = serde_json::from_str(arguments).unwrap_or_default();
            Ok(json!({ "city": args["city"], "forecast": "sunny" }))
        } else {
            Err(format!("no tool {name}"))
        };
        Box::pin(async move { out })
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_round_trip() {
    let stt = ScriptedStt::new(["weather in Paris?"], MS(10));
    let first = vec![Step::Tool { name: "weather".into(), arguments: r#"{"city":"Paris"}"#.into(), delay: MS(20) }];
    let second = ScriptedLlm::words("It is sunny in Paris.", MS(10));
    let cfg = LlmConfig {
        tools: vec![ToolSpec { name: "weather".into(), description: "forecast".into(), parameters: json!({"type":"object"}) }],
        ..Default::default()
    };
    let mut c = chain(stt, ScriptedLlm::new([first, second]), cfg, Some(Arc::new(Weather)));
    speak(&c.io, 200).await;
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseEnd)).await;
    let call = frames.iter().find_map(|(f, _)| match f { Frame::ToolCall(t) => Some(t.clone()), _ => None }).unwrap();
    assert_eq!((call.name.as_str(), &call.arguments), ("weather", &json!({"city": "Paris"})));
    let result = frames.iter().find_map(|(f, _)| match f { Frame::ToolResult(r) => Some(r.clone()), _ => None }).unwrap();
    assert_eq!(result.content["forecast"], "sunny");
    assert!(frames.iter().any(|(f, _)| *f == Frame::SpeechClause("It is sunny in Paris.".into())));
    // The second round saw the call and its result.
    {
        let reqs = c.llm.requests.lock().unwrap();
        assert_eq!(reqs.len(), 2);
        let msgs = &reqs[1].messages;
        assert_eq!(msgs[msgs.len() - 2].tool_calls[0].name, "weather");
        assert_eq!(msgs[msgs.len() - 1].role, Role::Tool);
        assert!(msgs[msgs.len() - 1].content.contains("sunny"));
    }
    c.io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_end_call_tool_and_phrase_end_the_call() {
    let stt = ScriptedStt::new(["bye"], MS(10));
    let hang_up = vec![Step::Token("Goodbye!".into(), MS(5)), Step::Tool { name: "end_call".into(), arguments: "{}".into(), delay: MS(5) }];
    let cfg = LlmConfig { end_call_tool: Some("end_call".into()), end_call_phrases: vec!["talk soon".into()], ..Default::default() };
    let mut c = chain(stt, ScriptedLlm::new([hang_up]), cfg, None);
    speak(&c.io, 200).await;
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::End(_))).await;
    let names: Vec<_> = frames.iter().map(|(f, _)| f.name()).collect();
    assert_eq!(frames.last().unwrap().0, Frame::End(EndReason::EndCallTool));
    // The goodbye is spoken before the end.
    let audio = names.iter().rposition(|n| *n == "output-audio").unwrap();
    assert!(audio < names.len() - 1, "{names:?}");

    // The phrase: once the output reports it played.
    c.io.tail.send(Frame::Spoken("Okay, talk soon!".into())).await.unwrap();
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::End(_))).await;
    assert_eq!(frames.last().unwrap().0, Frame::End(EndReason::EndCallPhrase));
    c.io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn typed_text_is_a_turn_and_say_is_spoken_verbatim() {
    let llm = ScriptedLlm::new([ScriptedLlm::words("Hi there.", MS(5))]);
    let mut c = chain(ScriptedStt::new(Vec::<String>::new(), MS(0)), llm, LlmConfig::default(), None);
    c.io.head.send(Frame::Say("Welcome to the desk, how can I help?".into())).await.unwrap();
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseEnd)).await;
    let clauses: Vec<_> = frames.iter().filter_map(|(f, _)| match f { Frame::SpeechClause(t) => Some(t.as_str()), _ => None }).collect();
    assert_eq!(clauses, vec!["Welcome to the desk,", "how can I help?"], "the first clause goes early");
    c.io.head.send(Frame::UserText("hello".into())).await.unwrap();
    let frames = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseEnd)).await;
    assert!(frames.iter().any(|(f, _)| *f == Frame::SpeechClause("Hi there.".into())));
    assert_eq!(c.llm.requests.lock().unwrap()[0].messages.last().unwrap().content, "hello");
    // A blank transcript starts no reply.
    c.io.head.send(Frame::Transcript(Transcript { text: "   ".into(), is_final: true })).await.unwrap();
    c.io.head.send(Frame::EndOfTurn).await.unwrap();
    collect_until(&mut c.io, |f| matches!(f, Frame::EndOfTurn)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.llm.requests.lock().unwrap().len(), 1);
    c.io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn speech_leaves_in_20_ms_frames_whatever_the_synthesizer_chunk() {
    let tts = ToneTts { rate: 24_000, ms_per_char: 50, chunk_ms: 2_000, first_delay: MS(0) };
    let mut io = Pipeline::default().stage(ClauseStage::default()).stage(TtsStage::new(Arc::new(tts))).spawn(CancellationToken::new());
    io.head.send(Frame::Say("A sentence that lasts for seconds.".into())).await.unwrap();
    let frames = collect_until(&mut io, |f| matches!(f, Frame::LlmResponseEnd)).await;
    let sizes: Vec<usize> = frames.iter().filter_map(|(f, _)| match f { Frame::OutputAudio(a) => Some(a.len()), _ => None }).collect();
    assert!(sizes.len() > 50, "{} frames", sizes.len());
    assert!(sizes.iter().all(|&n| n <= 480), "a frame over 20 ms at 24 kHz: {sizes:?}");
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_streaming_transcriber_gives_partials_both_ways_and_its_final_at_the_end_of_turn() {
    // One more word per 200 ms of audio; "stop the music please" is four words.
    let stt = ScriptedStt::new(["stop the music please"], MS(30)).streaming(MS(200));
    let heard = stt.heard.clone();
    let mut c = chain(stt, ScriptedLlm::new([ScriptedLlm::words("Okay.", MS(0))]), LlmConfig::default(), None);
    speak(&c.io, 600).await;
    let got = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseStart)).await;
    let transcripts: Vec<(String, bool)> = got
        .iter()
        .filter_map(|(f, _)| match f {
            Frame::Transcript(t) => Some((t.text.clone(), t.is_final)),
            _ => None,
        })
        .collect();
    // 600 ms of audio: three words as partials, then the whole transcript as final.
    assert_eq!(
        transcripts,
        vec![
            ("stop".to_string(), false),
            ("stop the".to_string(), false),
            ("stop the music".to_string(), false),
            ("stop the music please".to_string(), true),
        ]
    );
    // The partials also went upstream, for the turn stage's word count.
    let mut up = Vec::new();
    while let Ok((f, _)) = c.io.upstream.try_recv() {
        if let Frame::Transcript(t) = f {
            up.push(t.text);
        }
    }
    assert_eq!(up, ["stop", "stop the", "stop the music"]);
    // The model got the final transcript, and the session heard all the audio.
    let reqs = c.llm.requests.lock().unwrap().clone();
    assert_eq!(reqs[0].messages.last().map(|m| m.content.as_str()), Some("stop the music please"));
    assert_eq!(*heard.lock().unwrap(), vec![9600]);
}

/// A knowledge base that answers after `delay`, counting its searches.
struct SlowRetriever {
    delay: Duration,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
}

impl voxgate_services::processors::llm::Retriever for SlowRetriever {
    fn retrieve(&self, query: &str) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let delay = self.delay;
        self.queries.lock().unwrap().push(query.to_string());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(vec!["The pool opens at six.".to_string()])
        })
    }
}

/// Retrieval within its budget joins the context for that reply only; past it,
/// the reply goes on without it, and the time is the budget (the Retrieval metric).
#[tokio::test(start_paused = true)]
async fn retrieval_joins_the_context_within_its_budget_and_is_skipped_past_it() {
    for (delay, budget, found) in [(MS(40), MS(300), true), (MS(2000), MS(300), false)] {
        let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = LlmConfig {
            system_prompt: "Be brief.".into(),
            retriever: Some(Arc::new(SlowRetriever { delay, queries: queries.clone() })),
            retrieval_budget: budget,
            ..Default::default()
        };
        let stt = ScriptedStt::new(["when does the pool open"], MS(10));
        let mut c = chain(stt, ScriptedLlm::new([ScriptedLlm::words("At six.", MS(5))]), cfg, None);
        speak(&c.io, 200).await;
        let frames = collect_until(&mut c.io, |f| matches!(f, Frame::LlmResponseEnd)).await;
        let took = frames
            .iter()
            .find_map(|(f, _)| match f {
                Frame::Metric { stage: Stage::Retrieval, value } => Some(*value),
                _ => None,
            })
            .expect("a retrieval metric");
        assert_eq!(queries.lock().unwrap().as_slice(), ["when does the pool open"]);
        let req = c.llm.requests.lock().unwrap()[0].clone();
        let context: Vec<&str> = req.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        if found {
            assert_eq!(took, delay, "{took:?}");
            assert_eq!(context.len(), 2, "{context:?}");
            assert!(context[1].contains("The pool opens at six."));
            // Just before the caller's words, which stay last.
            assert_eq!(req.messages[req.messages.len() - 2].role, Role::System);
            assert_eq!(req.messages.last().unwrap().role, Role::User);
        } else {
            assert_eq!(took, budget, "{took:?}");
            assert_eq!(context, ["Be brief."]);
        }
        // The history never holds the retrieved text.
        assert!(c.convo.lock().unwrap().messages.iter().all(|m| !m.content.contains("pool opens")));
        c.io.shutdown().await.unwrap();
    }
}

/// Transcribes any audio as its length, after `delay`; may transcribe early.
struct Measuring {
    delay: Duration,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl voxgate_services::stt::Stt for Measuring {
    fn transcribe(&self, audio: Vec<i16>, _rate: u32) -> BoxFuture<'static, Result<String, voxgate_services::ServiceError>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(format!("{} samples", audio.len()))
        })
    }

    fn speculative(&self) -> bool {
        true
    }
}

/// `ms` of speech between the VAD's start and stop, with no end of turn yet.
async fn voiced(io: &voxgate_pipeline::PipelineIo, ms: u32) {
    io.head.send(Frame::UserStartedSpeaking).await.unwrap();
    for _ in 0..ms / 20 {
        io.head.send(Frame::InputAudio(AudioFrame::new(vec![1000i16; 320], 16_000))).await.unwrap();
    }
    io.head.send(Frame::UserStoppedSpeaking).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_speculative_transcriber_starts_when_the_caller_stops_and_the_turn_waits_only_for_the_rest() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stt = Measuring { delay: MS(300), calls: calls.clone() };
    let mut io = Pipeline::default().stage(SttStage::new(Arc::new(stt), 16_000)).spawn(CancellationToken::new());

    voiced(&io, 400).await;
    // The turn detector waits out its endpointing silence (200 ms here): silence frames.
    for _ in 0..10 {
        io.head.send(Frame::InputAudio(AudioFrame::new(vec![0i16; 320], 16_000))).await.unwrap();
        tokio::time::sleep(MS(20)).await;
    }
    let end = tokio::time::Instant::now();
    io.head.send(Frame::EndOfTurn).await.unwrap();
    let frames = collect_until(&mut io, |f| matches!(f, Frame::EndOfTurn)).await;
    let (text, at) = frames
        .iter()
        .find_map(|(f, at)| match f {
            Frame::Transcript(t) => Some((t.text.clone(), *at)),
            _ => None,
        })
        .unwrap();
    // The words up to the stop (400 ms), transcribed from the stop: ready 100 ms
    // after the end of the turn instead of 300.
    assert_eq!(text, "6400 samples");
    assert_eq!(at - end, MS(100));
    let stt_ms = frames.iter().find_map(|(f, _)| match f {
        Frame::Metric { stage: Stage::Stt, value } => Some(*value),
        _ => None,
    });
    assert!(stt_ms.is_some_and(|v| v < MS(300)), "{stt_ms:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn speech_that_resumes_throws_the_early_transcript_away_and_the_whole_turn_is_transcribed() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stt = Measuring { delay: MS(300), calls: calls.clone() };
    let mut io = Pipeline::default().stage(SttStage::new(Arc::new(stt), 16_000)).spawn(CancellationToken::new());

    voiced(&io, 400).await;
    tokio::time::sleep(MS(100)).await;
    // The caller goes on before the end of the turn.
    voiced(&io, 200).await;
    tokio::time::sleep(MS(200)).await;
    io.head.send(Frame::EndOfTurn).await.unwrap();
    let frames = collect_until(&mut io, |f| matches!(f, Frame::EndOfTurn)).await;
    let texts: Vec<_> = frames
        .iter()
        .filter_map(|(f, _)| match f {
            Frame::Transcript(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect();
    // One transcript, of both parts (from the second stop), not of the first alone.
    assert_eq!(texts, ["9600 samples"]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    io.shutdown().await.unwrap();
}
