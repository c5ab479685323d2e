//! Deterministic providers for tests: fixed transcripts, tokens with chosen delays,
//! tone audio. They implement the same traits as the real providers, so a test
//! drives the real pipeline and only the models are fixed. Never a default for users.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::ServiceError;
use crate::llm::{ChatRequest, Llm, LlmEvent, ToolCallRequest};
use crate::stt::{Stt, SttEvent, SttSession};
use crate::tts::Tts;

/// Answers each utterance with the next scripted transcript, after `delay`; when
/// the script is used up, with the repeated transcript if there is one (see
/// [`ScriptedStt::repeating`]), else with nothing.
#[derive(Clone)]
pub struct ScriptedStt {
    transcripts: Arc<Mutex<VecDeque<String>>>,
    repeat: Option<String>,
    /// When set, the provider streams: one more word of the transcript as a
    /// partial per this much audio (see [`ScriptedStt::streaming`]).
    word_audio: Option<Duration>,
    pub delay: Duration,
    /// Samples of every utterance received, for assertions (not kept when repeating).
    pub heard: Arc<Mutex<Vec<usize>>>,
}

impl ScriptedStt {
    pub fn new<S: Into<String>>(transcripts: impl IntoIterator<Item = S>, delay: Duration) -> ScriptedStt {
        ScriptedStt {
            transcripts: Arc::new(Mutex::new(transcripts.into_iter().map(Into::into).collect())),
            repeat: None,
            word_audio: None,
            delay,
            heard: Arc::default(),
        }
    }

    /// Streams: each session takes the next transcript and gives one more of its
    /// words as a partial per `word_audio` of audio pushed, then the whole as the
    /// final transcript when finished.
    pub fn streaming(mut self, word_audio: Duration) -> ScriptedStt {
        self.word_audio = Some(word_audio);
        self
    }

    fn next(&self) -> String {
        self.transcripts.lock().expect("lock").pop_front().or_else(|| self.repeat.clone()).unwrap_or_default()
    }

    /// Answers every utterance with `transcript`, for as long as the call lasts
    /// (benchmarks and load tests). Keeps no record of what it heard, so a long
    /// call does not grow.
    pub fn repeating(transcript: impl Into<String>, delay: Duration) -> ScriptedStt {
        ScriptedStt { transcripts: Arc::default(), repeat: Some(transcript.into()), word_audio: None, delay, heard: Arc::default() }
    }
}

impl Stt for ScriptedStt {
    fn transcribe(&self, audio: Vec<i16>, _rate: u32) -> BoxFuture<'static, Result<String, ServiceError>> {
        if self.repeat.is_none() {
            self.heard.lock().expect("lock").push(audio.len());
        }
        let next = self.next();
        let delay = self.delay;
        Box::pin(async move {
            pause(delay).await;
            Ok(next)
        })
    }

    fn streams(&self) -> bool {
        self.word_audio.is_some()
    }

    fn stream(&self, rate: u32) -> Option<Result<Box<dyn SttSession>, ServiceError>> {
        let word_audio = self.word_audio?;
        let text = self.next();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let per_word = (word_audio.as_millis() as u64 * u64::from(rate) / 1000).max(1);
        Some(Ok(Box::new(ScriptedSession {
            words: text.split_whitespace().map(str::to_string).collect(),
            text,
            per_word,
            pushed: 0,
            given: 0,
            tx,
            rx: Some(rx),
            heard: (self.repeat.is_none()).then(|| self.heard.clone()),
        })))
    }
}

/// A scripted streaming recognition (see [`ScriptedStt::streaming`]).
struct ScriptedSession {
    text: String,
    words: Vec<String>,
    /// Samples of audio per word.
    per_word: u64,
    pushed: u64,
    /// Words given as partials so far.
    given: usize,
    tx: tokio::sync::mpsc::UnboundedSender<Result<SttEvent, ServiceError>>,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<Result<SttEvent, ServiceError>>>,
    heard: Option<Arc<Mutex<Vec<usize>>>>,
}

impl SttSession for ScriptedSession {
    fn push(&mut self, audio: &[i16]) -> Result<(), ServiceError> {
        self.pushed += audio.len() as u64;
        let due = ((self.pushed / self.per_word) as usize).min(self.words.len());
        if due > self.given {
            self.given = due;
            let _ = self.tx.send(Ok(SttEvent::Partial(self.words[..due].join(" "))));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ServiceError> {
        if let Some(h) = &self.heard {
            h.lock().expect("lock").push(self.pushed as usize);
        }
        let _ = self.tx.send(Ok(SttEvent::Final(self.text.clone())));
        Ok(())
    }

    fn events(&mut self) -> BoxStream<'static, Result<SttEvent, ServiceError>> {
        match self.rx.take() {
            Some(rx) => stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed(),
            None => stream::empty().boxed(),
        }
    }
}

/// Waits `d`; a zero delay does not wait at all (a zero sleep would still go
/// through the timer, whose resolution is a millisecond).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// One step of a scripted reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// A token, after a delay.
    Token(String, Duration),
    /// A tool call, after a delay.
    Tool { name: String, arguments: String, delay: Duration },
    /// A failure, after a delay.
    Fail(ServiceError, Duration),
}

/// Plays one scripted reply per request, and records the requests; when the
/// script is used up, the repeated reply if there is one (see
/// [`ScriptedLlm::repeating`]), else an empty reply.
#[derive(Clone, Default)]
pub struct ScriptedLlm {
    replies: Arc<Mutex<VecDeque<Vec<Step>>>>,
    repeat: Option<Vec<Step>>,
    /// Every request received, for assertions on the context (not kept when repeating).
    pub requests: Arc<Mutex<Vec<ChatRequest>>>,
}

impl ScriptedLlm {
    pub fn new(replies: impl IntoIterator<Item = Vec<Step>>) -> ScriptedLlm {
        ScriptedLlm { replies: Arc::new(Mutex::new(replies.into_iter().collect())), repeat: None, requests: Arc::default() }
    }

    /// Answers every request with `reply`, for as long as the call lasts
    /// (benchmarks and load tests). Keeps no record of the requests: each holds the
    /// whole conversation, so recording them would grow a long call quadratically.
    pub fn repeating(reply: Vec<Step>) -> ScriptedLlm {
        ScriptedLlm { replies: Arc::default(), repeat: Some(reply), requests: Arc::default() }
    }

    /// A reply of whitespace-separated tokens, each `gap` after the previous.
    pub fn words(text: &str, gap: Duration) -> Vec<Step> {
        let mut first = true;
        text.split_inclusive(' ')
            .map(|w| {
                let d = if first { Duration::ZERO } else { gap };
                first = false;
                Step::Token(w.to_string(), d)
            })
            .collect()
    }
}

impl Llm for ScriptedLlm {
    fn chat(&self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        if self.repeat.is_none() {
            self.requests.lock().expect("lock").push(request);
        }
        let steps = self.replies.lock().expect("lock").pop_front().or_else(|| self.repeat.clone()).unwrap_or_default();
        let mut n = 0usize;
        stream::iter(steps)
            .then(move |step| {
                n += 1;
                let id = format!("call_{n}");
                async move {
                    match step {
                        Step::Token(t, d) => {
                            pause(d).await;
                            Ok(LlmEvent::Token(t))
                        }
                        Step::Tool { name, arguments, delay } => {
                            pause(delay).await;
                            Ok(LlmEvent::ToolCall(ToolCallRequest { id, name, arguments }))
                        }
                        Step::Fail(e, d) => {
                            pause(d).await;
                            Err(e)
                        }
                    }
                }
            })
            .chain(stream::once(async { Ok(LlmEvent::Done) }))
            .boxed()
    }
}

/// Speaks any text as a 440 Hz tone, `ms_per_char` long per character, in chunks
/// of `chunk_ms`, the first after `first_delay`.
#[derive(Debug, Clone)]
pub struct ToneTts {
    pub rate: u32,
    pub ms_per_char: u32,
    pub chunk_ms: u32,
    pub first_delay: Duration,
}

impl Default for ToneTts {
    fn default() -> Self {
        ToneTts { rate: 24_000, ms_per_char: 60, chunk_ms: 40, first_delay: Duration::ZERO }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Tts for ToneTts {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>> {
        let total = (text.chars().count() as u64 * self.ms_per_char as u64 * self.rate as u64 / 1000) as usize;
        let chunk = (self.chunk_ms as usize * self.rate as usize / 1000).max(1);
        let first = self.first_delay;
        // One exact cycle of whole periods (600 samples at 24 kHz), computed once a
        // clause: a sine per sample would make load tests measure this fake voice.
        let rate = u64::from(self.rate.max(1));
        let cycle = (rate / gcd(rate, 440)) as usize;
        let table: Arc<[i16]> =
            (0..cycle).map(|n| ((n as f64 * 440.0 * std::f64::consts::TAU / rate as f64).sin() * 8000.0) as i16).collect();
        let starts: Vec<usize> = (0..total).step_by(chunk).collect();
        stream::iter(starts.into_iter().enumerate())
            .then(move |(i, start)| {
                let table = table.clone();
                async move {
                    if i == 0 {
                        pause(first).await;
                    }
                    let end = (start + chunk).min(total);
                    Ok((start..end).map(|n| table[n % table.len()]).collect::<Vec<i16>>())
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, Role};

    fn req() -> ChatRequest {
        ChatRequest { messages: vec![ChatMessage::new(Role::User, "hi")], tools: vec![], temperature: 0.0, max_tokens: 10 }
    }

    #[tokio::test(start_paused = true)]
    async fn llm_plays_tokens_with_their_delays_and_records_requests() {
        let llm = ScriptedLlm::new([ScriptedLlm::words("Hello there friend", Duration::from_millis(30))]);
        let start = tokio::time::Instant::now();
        let events: Vec<_> = llm.chat(req()).collect().await;
        assert_eq!(start.elapsed(), Duration::from_millis(60));
        assert_eq!(events.len(), 4);
        assert_eq!(events[0], Ok(LlmEvent::Token("Hello ".into())));
        assert_eq!(events[3], Ok(LlmEvent::Done));
        assert_eq!(llm.requests.lock().unwrap().len(), 1);
        // Unscripted: an empty reply, not a hang.
        let events: Vec<_> = llm.chat(req()).collect().await;
        assert_eq!(events, vec![Ok(LlmEvent::Done)]);
    }

    #[tokio::test(start_paused = true)]
    async fn tone_lasts_by_the_character() {
        let tts = ToneTts { rate: 16_000, ms_per_char: 50, chunk_ms: 20, first_delay: Duration::from_millis(5) };
        let chunks: Vec<_> = tts.synthesize("abcd".into()).collect().await;
        let samples: usize = chunks.iter().map(|c| c.as_ref().unwrap().len()).sum();
        assert_eq!(samples, 16_000 * 200 / 1000);
        assert_eq!(chunks.len(), 10);
        assert!(chunks[0].as_ref().unwrap().iter().any(|&s| s.abs() > 4000), "a real tone");
    }

    #[tokio::test(start_paused = true)]
    async fn stt_answers_in_order() {
        let stt = ScriptedStt::new(["one", "two"], Duration::from_millis(10));
        assert_eq!(stt.transcribe(vec![0; 320], 16_000).await.unwrap(), "one");
        assert_eq!(stt.transcribe(vec![0; 160], 16_000).await.unwrap(), "two");
        assert_eq!(stt.transcribe(vec![], 16_000).await.unwrap(), "");
        assert_eq!(*stt.heard.lock().unwrap(), vec![320, 160, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn repeating_providers_answer_every_time_at_once_and_keep_nothing() {
        let stt = ScriptedStt::repeating("hello there", Duration::ZERO);
        let llm = ScriptedLlm::repeating(ScriptedLlm::words("Hi! How can I help?", Duration::ZERO));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            assert_eq!(stt.transcribe(vec![0; 320], 16_000).await.unwrap(), "hello there");
            let events: Vec<_> = llm.chat(req()).collect().await;
            let text: String = events
                .iter()
                .filter_map(|e| match e {
                    Ok(LlmEvent::Token(t)) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(text, "Hi! How can I help?");
            assert_eq!(events.last(), Some(&Ok(LlmEvent::Done)));
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "no delay at all");
        assert!(stt.heard.lock().unwrap().is_empty());
        assert!(llm.requests.lock().unwrap().is_empty());
    }

    #[test]
    fn zero_delays_do_not_touch_the_timer() {
        // A runtime without a timer: a zero sleep would panic, a skipped one cannot.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stt = ScriptedStt::repeating("hi", Duration::ZERO);
        assert_eq!(rt.block_on(stt.transcribe(vec![], 16_000)).unwrap(), "hi");
        let llm = ScriptedLlm::repeating(ScriptedLlm::words("a b", Duration::ZERO));
        assert_eq!(rt.block_on(llm.chat(req()).collect::<Vec<_>>()).len(), 3);
        let tts = ToneTts::default();
        assert!(!rt.block_on(tts.synthesize("ab".into()).collect::<Vec<_>>()).is_empty());
    }
}
