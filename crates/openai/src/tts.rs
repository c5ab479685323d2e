//! Text to speech: `POST /audio/speech` with `response_format: "pcm"` (24 kHz mono
//! s16le), given out piece by piece as the body arrives.

use futures_util::stream::BoxStream;
use serde_json::json;
use voxgate_services::ServiceError;
use voxgate_services::tts::Tts;

use crate::call::{Call, Fail};
use crate::config::{Deadlines, Limits, RetryPolicy};
use crate::endpoint::Endpoint;
use crate::stats::Stage;

const PATH: &str = "audio/speech";

/// The rate of OpenAI's `pcm` format.
pub const SAMPLE_RATE: u32 = 24_000;

/// OpenAI speech.
#[derive(Clone)]
pub struct OpenAiTts {
    pub(crate) ep: Endpoint,
    pub(crate) model: String,
    pub(crate) voice: String,
    pub(crate) deadlines: Deadlines,
    pub(crate) retry: RetryPolicy,
    pub(crate) limits: Limits,
}

impl OpenAiTts {
    fn stream(self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>> {
        Box::pin(async_stream::stream! {
            let text = text.trim();
            if text.is_empty() {
                return;
            }
            let chars = text.chars().count();
            if chars > self.limits.speech_chars {
                yield Err(ServiceError::Invalid {
                    provider: self.ep.name,
                    message: format!("speech: {chars} characters exceed the limit of {} per request; send shorter clauses", self.limits.speech_chars),
                });
                return;
            }
            let body = json!({"model": self.model, "input": text, "voice": self.voice, "response_format": "pcm"});
            let mut call = Call::new(self.ep.clone(), Stage::Tts, reqwest::Method::POST, PATH, self.deadlines, self.retry, self.limits.error_bytes);
            let mut yielded = false;
            loop {
                let mut opened = match call.open(|call| call.request().json(&body)).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        call.finish::<()>(&Err(e.clone()));
                        yield Err(e);
                        return;
                    }
                };
                let mut pcm = Pcm::default();
                let outcome: Result<(), Fail> = loop {
                    if opened.content_type.starts_with("application/json") || opened.content_type.starts_with("text/") {
                        break Err(Fail::Malformed(format!("expected PCM audio, got {}", opened.content_type)));
                    }
                    match opened.next(self.limits.audio_bytes, "speech reply").await {
                        Ok(Some(piece)) => {
                            let samples = pcm.push(&piece);
                            if !samples.is_empty() {
                                yielded = true;
                                yield Ok(samples);
                            }
                        }
                        Ok(None) if yielded => break Ok(()),
                        Ok(None) => break Err(Fail::Cut("the reply held no audio".into())),
                        Err(fail) => break Err(fail),
                    }
                };
                let fail = match outcome {
                    Ok(()) => {
                        if pcm.odd_byte() {
                            tracing::warn!(provider = self.ep.name, "speech reply ended in half a sample; dropped it");
                        }
                        call.finish::<()>(&Ok(()));
                        return;
                    }
                    Err(fail) => fail,
                };
                match call.settle(fail, yielded).await {
                    None => continue,
                    Some(error) => {
                        yield Err(error);
                        return;
                    }
                }
            }
        })
    }
}

impl Tts for OpenAiTts {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>> {
        self.clone().stream(text)
    }
}

/// Little-endian 16-bit samples from pieces that may split a sample: the odd byte
/// waits for the next piece.
#[derive(Default)]
pub(crate) struct Pcm {
    carry: Option<u8>,
}

impl Pcm {
    pub fn push(&mut self, piece: &[u8]) -> Vec<i16> {
        let mut bytes = piece;
        let mut out = Vec::with_capacity(piece.len() / 2 + 1);
        if let Some(low) = self.carry.take() {
            match bytes.split_first() {
                Some((&high, rest)) => {
                    out.push(i16::from_le_bytes([low, high]));
                    bytes = rest;
                }
                None => {
                    self.carry = Some(low);
                    return out;
                }
            }
        }
        let mut pairs = bytes.chunks_exact(2);
        out.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
        self.carry = pairs.remainder().first().copied();
        out
    }

    /// Whether half a sample is left over.
    pub fn odd_byte(&self) -> bool {
        self.carry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::Pcm;

    #[test]
    fn samples_survive_any_split() {
        let samples: Vec<i16> = (0..257).map(|i| (i as i16).wrapping_mul(251).wrapping_sub(9000)).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for sizes in [&[1usize][..], &[3], &[2], &[7, 1, 0, 4], &[513]] {
            let mut pcm = Pcm::default();
            let mut out = Vec::new();
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                out.extend(pcm.push(&rest[..n]));
                rest = &rest[n..];
                i += 1;
                if n == 0 && sizes.iter().all(|&s| s == 0) {
                    break;
                }
            }
            assert_eq!(out, samples, "{sizes:?}");
            assert!(!pcm.odd_byte());
        }
        let mut pcm = Pcm::default();
        assert_eq!(pcm.push(&[1, 0, 2]), vec![1]);
        assert!(pcm.odd_byte());
    }
}
