//! A second provider for a stage, which takes over a turn the first one failed.
//!
//! Wrapped around a cloud provider, these keep a call going through an outage: a
//! transcription, reply or clause that fails with a rate limit or a transient
//! failure (after the provider's own bounded retries) is done again by the
//! fallback (the local models by default) for that turn, and the next turn tries
//! the first provider again. Refused credentials and bad requests are not hidden:
//! they reach the stage as they are, which tells the caller and logs the fix.
//!
//! The fallback is a shared future ([`Later`]): local models still loading when a
//! call starts do not hold the call up, only a turn that needs them.
//!
//! Each takeover counts in `voxgate_provider_fallbacks_total{stage}` and logs a
//! warning with the first provider's error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Shared};
use futures_util::stream::BoxStream;
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatMessage, ChatRequest, Llm, LlmEvent, Role};
use voxgate_services::stt::{Stt, SttSession};
use voxgate_services::tts::Tts;

/// The takeovers, by stage (`stt`, `llm`, `tts`).
pub const FALLBACKS: &str = "voxgate_provider_fallbacks_total";

/// A provider that may still be on its way (local models loading), or never come
/// (the reason why).
pub type Later<T> = Shared<BoxFuture<'static, Result<T, String>>>;

/// Waits for the fallback after `error`; `None` (with a log line) when it cannot
/// serve, so the first provider's error stands.
async fn take_over<T: Clone>(stage: &'static str, fallback: &Later<T>, error: &ServiceError) -> Option<T> {
    match fallback.clone().await {
        Ok(f) => {
            tracing::warn!(stage, %error, "the provider failed; the fallback takes this turn");
            metrics::counter!(FALLBACKS, "stage" => stage).increment(1);
            Some(f)
        }
        Err(reason) => {
            tracing::warn!(stage, %error, %reason, "the provider failed and the fallback cannot serve");
            None
        }
    }
}

/// The fallback's queue wait, when it has come and has one.
fn fallback_wait<T>(fallback: &Later<T>, wait: impl Fn(&T) -> Option<Duration>) -> Option<Duration> {
    fallback.peek().and_then(|r| r.as_ref().ok()).and_then(wait)
}

fn sum(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
    }
}

/// Speech to text with a fallback: the utterance is transcribed again by the
/// fallback when the first provider fails it. Streaming, when the first provider
/// streams, is the first provider's alone (the stage transcribes the utterance
/// when a streaming session fails).
pub struct FallbackStt {
    pub primary: Arc<dyn Stt>,
    pub fallback: Later<Arc<dyn Stt>>,
}

impl Stt for FallbackStt {
    fn transcribe(&self, audio: Vec<i16>, rate: u32) -> BoxFuture<'static, Result<String, ServiceError>> {
        let primary = self.primary.transcribe(audio.clone(), rate);
        let fallback = self.fallback.clone();
        Box::pin(async move {
            match primary.await {
                Err(e) if e.is_retryable() => match take_over("stt", &fallback, &e).await {
                    Some(f) => f.transcribe(audio, rate).await,
                    None => Err(e),
                },
                other => other,
            }
        })
    }

    fn stream(&self, rate: u32) -> Option<Result<Box<dyn SttSession>, ServiceError>> {
        self.primary.stream(rate)
    }

    fn streams(&self) -> bool {
        self.primary.streams()
    }

    fn speculative(&self) -> bool {
        self.primary.speculative()
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        sum(self.primary.take_queue_wait(), fallback_wait(&self.fallback, |f| f.take_queue_wait()))
    }
}

/// A chat model with a fallback. A reply that fails before its first word is
/// answered by the fallback instead. A reply cut mid-way keeps what was already
/// said (it went on to be spoken, and the history keeps what was played), and the
/// fallback goes on from there: it sees the words so far as the assistant's, and
/// its reply follows them.
pub struct FallbackLlm {
    pub primary: Arc<dyn Llm>,
    pub fallback: Later<Arc<dyn Llm>>,
}

impl Llm for FallbackLlm {
    fn chat(&self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        let mut first = self.primary.chat(request.clone());
        let fallback = self.fallback.clone();
        async_stream::stream! {
            let mut said = String::new();
            let mut failure = None;
            while let Some(event) = first.next().await {
                match event {
                    Ok(LlmEvent::Token(t)) => {
                        said.push_str(&t);
                        yield Ok(LlmEvent::Token(t));
                    }
                    Err(e) if e.is_retryable() => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                    Ok(event) => yield Ok(event),
                }
            }
            drop(first);
            let Some(error) = failure else { return };
            let Some(llm) = take_over("llm", &fallback, &error).await else {
                yield Err(error);
                return;
            };
            let mut request = request;
            let mut gap = false;
            if !said.trim().is_empty() {
                gap = !said.ends_with(char::is_whitespace);
                request.messages.push(ChatMessage::new(Role::Assistant, said));
            }
            let mut rest = llm.chat(request);
            while let Some(event) = rest.next().await {
                match event {
                    // The fallback's first word would run into the cut one.
                    Ok(LlmEvent::Token(t)) if gap => {
                        gap = false;
                        if t.starts_with(char::is_whitespace) {
                            yield Ok(LlmEvent::Token(t));
                        } else {
                            yield Ok(LlmEvent::Token(format!(" {t}")));
                        }
                    }
                    other => yield other,
                }
            }
        }
        .boxed()
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        sum(self.primary.take_queue_wait(), fallback_wait(&self.fallback, |f| f.take_queue_wait()))
    }
}

/// Text to speech with a fallback, at the first provider's sample rate (the
/// fallback's audio is resampled to it). A clause that fails is spoken by the
/// fallback from its start: a listener hears the sentence begin again, never a
/// gap where words were lost.
pub struct FallbackTts {
    pub primary: Arc<dyn Tts>,
    pub fallback: Later<Arc<dyn Tts>>,
    /// Built on first use for the fallback's rate; reused by later clauses.
    resampler: Arc<Mutex<Option<voxgate_audio::resample::Resampler>>>,
}

impl FallbackTts {
    pub fn new(primary: Arc<dyn Tts>, fallback: Later<Arc<dyn Tts>>) -> FallbackTts {
        FallbackTts { primary, fallback, resampler: Arc::default() }
    }
}

impl Tts for FallbackTts {
    fn sample_rate(&self) -> u32 {
        self.primary.sample_rate()
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>> {
        let mut first = self.primary.synthesize(text.clone());
        let fallback = self.fallback.clone();
        let rate = self.primary.sample_rate();
        let cache = self.resampler.clone();
        async_stream::stream! {
            let mut failure = None;
            while let Some(piece) = first.next().await {
                match piece {
                    Ok(pcm) => yield Ok(pcm),
                    Err(e) if e.is_retryable() => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
            drop(first);
            let Some(error) = failure else { return };
            let Some(tts) = take_over("tts", &fallback, &error).await else {
                yield Err(error);
                return;
            };
            let from = tts.sample_rate();
            let cached = cache.lock().expect("resampler lock").take();
            let mut resampler = match cached {
                Some(r) if r.from_hz() == from && r.to_hz() == rate => Some(r),
                _ if from == rate => None,
                _ => match voxgate_audio::resample::Resampler::with_rates(from, rate) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        yield Err(ServiceError::Invalid { provider: "fallback", message: format!("cannot resample the fallback voice: {e}") });
                        return;
                    }
                },
            };
            let mut rest = tts.synthesize(text);
            let mut out = Vec::new();
            while let Some(piece) = rest.next().await {
                match (piece, resampler.as_mut()) {
                    (Ok(pcm), Some(r)) => {
                        out.clear();
                        r.process(&pcm, &mut out);
                        if !out.is_empty() {
                            yield Ok(std::mem::take(&mut out));
                        }
                    }
                    (piece, _) => yield piece,
                }
            }
            if let Some(mut r) = resampler {
                out.clear();
                r.flush(&mut out);
                if !out.is_empty() {
                    yield Ok(out);
                }
                *cache.lock().expect("resampler lock") = Some(r);
            }
        }
        .boxed()
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        sum(self.primary.take_queue_wait(), fallback_wait(&self.fallback, |f| f.take_queue_wait()))
    }
}
