//! The transcription pipeline: clean the samples, cut long audio into pieces, build
//! each piece's log-mel window, encode, and decode greedily.

use std::path::Path;

use candle_core::{Device, Tensor};

use serde::Deserialize;

use crate::mel::{HOP, SAMPLE_RATE};
use crate::vocab::Vocab;
use crate::{Error, Whisper};

/// Longest audio [`Whisper::transcribe`] accepts, in seconds.
pub const MAX_AUDIO_SECONDS: u32 = 600;
/// Whisper's window: 30 s.
const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
/// Below 0.1 s there is nothing to transcribe.
const MIN_SAMPLES: usize = SAMPLE_RATE / 10;
/// Audio whose peak stays under -60 dBFS is taken as silence without running the model.
const SILENCE_PEAK: f32 = 1e-3;
/// Whisper's rule for dropping a segment: the no-speech probability is high and the
/// decoded text is unlikely.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOGPROB_THRESHOLD: f32 = -1.0;

/// How much audio the encoder sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// The audio followed by `pad_seconds` of silence, at least `min_seconds` in all
    /// and at most 30 s. The encoder's cost grows with this length, so a 3 s
    /// utterance costs about a tenth of a 30 s window.
    Trimmed { pad_seconds: f32, min_seconds: f32 },
    /// Always 30 s, the audio padded with silence, as Whisper was trained and runs by
    /// default. Slower; kept as the baseline to compare against.
    Full,
}

impl Default for Window {
    /// 1 s of padding, 5 s at least. Chosen on espeak-ng sentences of 0.6 to 3.6 s:
    /// with no minimum, one-word answers ("Yes.") came back empty or garbled and
    /// short questions looped; with 4 s, "four five six seven" ended in "7 7"; from 5 s
    /// on, every transcript was as good as the 30 s window's (a few were better).
    fn default() -> Self {
        Self::Trimmed { pad_seconds: 1.0, min_seconds: 5.0 }
    }
}

impl Window {
    /// Samples in the window for `len` samples of audio: a multiple of two hops, since
    /// the encoder's second convolution halves the frame count.
    fn samples(self, len: usize) -> usize {
        let want = match self {
            Self::Full => WINDOW_SAMPLES,
            Self::Trimmed { pad_seconds, min_seconds } => {
                let secs = |s: f32| (s.clamp(0.0, 30.0) * SAMPLE_RATE as f32) as usize;
                (len + secs(pad_seconds)).max(secs(min_seconds))
            }
        };
        want.div_ceil(2 * HOP).saturating_mul(2 * HOP).min(WINDOW_SAMPLES).max(len.min(WINDOW_SAMPLES))
    }
}

/// Token ids the decoder needs, and which ones it must never emit.
pub(crate) struct Tokens {
    sot: u32,
    eot: u32,
    no_timestamps: u32,
    no_speech: Option<u32>,
    /// Never emitted: config.json's `suppress_ids`, and every special or timestamp
    /// token (all ids above end-of-text) since we want plain text.
    suppress: Vec<usize>,
    /// Not emitted first: config.json's `suppress_ids_begin` (a bare space, end-of-text).
    suppress_begin: Vec<usize>,
}

#[derive(Deserialize)]
struct Config {
    suppress_ids: Vec<i64>,
    suppress_ids_begin: Vec<i64>,
}

impl Tokens {
    pub(crate) fn new(vocab: &Vocab, vocab_path: &Path, config_path: &Path, n_vocab: usize) -> Result<Self, Error> {
        let special = |name: &str| {
            vocab.special(name).ok_or_else(|| Error::Vocabulary {
                path: vocab_path.to_owned(),
                reason: format!("the token {name} is missing"),
            })
        };
        let (sot, eot) = (special("<|startoftranscript|>")?, special("<|endoftext|>")?);
        let no_timestamps = special("<|notimestamps|>")?;
        let no_speech = vocab.special("<|nospeech|>").or_else(|| vocab.special("<|nocaptions|>"));

        let io = |source| Error::Io { path: config_path.to_owned(), source };
        let bad = |reason: String| Error::Config { path: config_path.to_owned(), reason };
        let size = std::fs::metadata(config_path).map_err(io)?.len();
        if size > 1 << 20 {
            return Err(bad(format!("it is {size} bytes, over the 1 MiB limit")));
        }
        let text = std::fs::read(config_path).map_err(io)?;
        let config: Config = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let ids = |field: &str, list: &[i64]| -> Result<Vec<usize>, Error> {
            list.iter()
                .map(|&id| match usize::try_from(id) {
                    Ok(id) if id < n_vocab => Ok(id),
                    _ => Err(bad(format!("`{field}` holds {id}, not a token id below {n_vocab}"))),
                })
                .collect()
        };
        let mut suppress = ids("suppress_ids", &config.suppress_ids)?;
        suppress.extend(eot as usize + 1..n_vocab);
        suppress.sort_unstable();
        suppress.dedup();
        let suppress_begin = ids("suppress_ids_begin", &config.suppress_ids_begin)?;
        Ok(Self { sot, eot, no_timestamps, no_speech, suppress, suppress_begin })
    }
}

pub(crate) fn transcribe(w: &Whisper, pcm: &[f32], window: Window) -> Result<String, Error> {
    let max = MAX_AUDIO_SECONDS as usize * SAMPLE_RATE;
    if pcm.len() > max {
        return Err(Error::AudioTooLong { seconds: pcm.len() as f64 / SAMPLE_RATE as f64, max: MAX_AUDIO_SECONDS });
    }
    let clean: Vec<f32> = pcm.iter().map(|&x| if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) }).collect();
    let mut texts = Vec::new();
    for piece in pieces(&clean) {
        let text = segment(w, piece, window)?;
        if !text.is_empty() {
            texts.push(text);
        }
    }
    Ok(texts.join(" "))
}

/// Cuts audio longer than 30 s into pieces of at most 30 s, each cut at the quietest
/// 100 ms between 20 s and 30 s into the piece (the latest such point, so that speech
/// after a long pause starts near the beginning of its piece).
fn pieces(pcm: &[f32]) -> Vec<&[f32]> {
    const SPAN: usize = SAMPLE_RATE / 10;
    let mut out = Vec::new();
    let mut rest = pcm;
    while rest.len() > WINDOW_SAMPLES {
        let lo = 20 * SAMPLE_RATE;
        let energy = |start: usize| rest[start..start + SPAN].iter().map(|x| x * x).sum::<f32>();
        let quietest = (lo..WINDOW_SAMPLES - SPAN)
            .step_by(SPAN / 2)
            .rev()
            .min_by(|&a, &b| energy(a).total_cmp(&energy(b)))
            .expect("the range is not empty");
        let cut = quietest + SPAN / 2;
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// Most tokens worth decoding for `samples` of audio: fast speech is about 5 tokens
/// a second, so twice that and a margin, within Whisper's own limit of 224.
fn max_tokens(samples: usize) -> usize {
    let secs = samples as f64 / SAMPLE_RATE as f64;
    ((8.0 + 10.0 * secs).ceil() as usize).min(224)
}

/// Transcribes one piece of at most 30 s.
fn segment(w: &Whisper, pcm: &[f32], window: Window) -> Result<String, Error> {
    let peak = pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
    if pcm.len() < MIN_SAMPLES || peak < SILENCE_PEAK {
        return Ok(String::new());
    }
    let mut samples = pcm.to_vec();
    samples.resize(window.samples(pcm.len()), 0.0);
    let (mel, frames) = w.mel.log_mel(&samples);
    let n_mels = w.model.config.num_mel_bins;
    let mel = Tensor::from_vec(mel, (1, n_mels, frames), &Device::Cpu)?;

    let started = std::time::Instant::now();
    let mut encoder = w.model.encoder.clone();
    let audio = encoder.forward(&mel, true)?;
    let encoded = started.elapsed();

    let t = &w.tokens;
    let mut state = w.decoder.start(&audio)?;
    let prompt = [t.sot, t.no_timestamps];
    let mut no_speech_prob = 0f32;
    let mut hidden = None;
    for (i, &token) in prompt.iter().enumerate() {
        let h = w.decoder.step(&mut state, token)?;
        if i == 0
            && let Some(id) = t.no_speech
        {
            no_speech_prob = log_softmax_at(&w.decoder.logits(&h)?, id as usize).exp();
        }
        hidden = Some(h);
    }
    let mut hidden = hidden.expect("the prompt is not empty");
    let mut tokens: Vec<u32> = prompt.to_vec();
    let limit = max_tokens(pcm.len()).min(w.decoder.max_len()? - prompt.len());
    let mut sum_logprob = 0f32;
    for step in 0..limit {
        let mut logits = w.decoder.logits(&hidden)?;
        for &id in &t.suppress {
            logits[id] = f32::NEG_INFINITY;
        }
        if step == 0 {
            for &id in &t.suppress_begin {
                logits[id] = f32::NEG_INFINITY;
            }
        }
        let next = argmax(&logits).unwrap_or(t.eot as usize) as u32;
        sum_logprob += log_softmax_at(&logits, next as usize);
        if next == t.eot {
            break;
        }
        tokens.push(next);
        if let Some(cut) = repeated_tail(&tokens[prompt.len()..]) {
            tokens.truncate(prompt.len() + cut);
            break;
        }
        if step + 1 < limit {
            hidden = w.decoder.step(&mut state, next)?;
        }
    }
    let prompt = prompt.len();
    let text_tokens = &tokens[prompt..];
    let avg_logprob = sum_logprob / (text_tokens.len() + 1) as f32;
    let decoded = started.elapsed() - encoded;
    tracing::debug!(frames, tokens = text_tokens.len(), no_speech_prob, avg_logprob, ?encoded, ?decoded, "whisper segment");
    if no_speech_prob > NO_SPEECH_THRESHOLD && avg_logprob < LOGPROB_THRESHOLD {
        return Ok(String::new());
    }
    Ok(w.vocab.decode(text_tokens))
}

/// Greedy decoding on a short window sometimes loops, saying the utterance again and
/// again. When the tokens end with the same run of at least `MIN_RUN` tokens twice in a
/// row, returns the length to keep (up to the end of the first run).
fn repeated_tail(tokens: &[u32]) -> Option<usize> {
    const MIN_RUN: usize = 4;
    let n = tokens.len();
    (MIN_RUN..=n / 2).find(|&run| tokens[n - 2 * run..n - run] == tokens[n - run..]).map(|run| n - run)
}

/// Index of the largest finite logit.
fn argmax(logits: &[f32]) -> Option<usize> {
    logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// `log_softmax(logits)[index]`, ignoring -inf entries.
fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().filter(|v| v.is_finite()).map(|&v| (v - max).exp()).sum();
    logits[index] - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_lengths() {
        let w = Window::Trimmed { pad_seconds: 1.0, min_seconds: 4.0 };
        assert_eq!(Window::default().samples(3 * 16_000), 80_000);
        assert_eq!(w.samples(16_000), 64_000);
        assert_eq!(w.samples(48_000), 64_000);
        assert_eq!(w.samples(64_001), 80_320);
        assert_eq!(w.samples(29 * 16_000 + 5), WINDOW_SAMPLES);
        assert_eq!(Window::Full.samples(10), WINDOW_SAMPLES);
        let odd = Window::Trimmed { pad_seconds: f32::NAN, min_seconds: -3.0 };
        assert_eq!(odd.samples(1000), 1280);
        assert_eq!(odd.samples(1000) % (2 * HOP), 0);
    }

    #[test]
    fn long_audio_is_cut_at_the_quiet_point() {
        let mut pcm = vec![0.5f32; 70 * SAMPLE_RATE];
        // A silent gap at 25 s.
        pcm[25 * SAMPLE_RATE..25 * SAMPLE_RATE + SAMPLE_RATE / 5].fill(0.0);
        let p = pieces(&pcm);
        assert!(p.iter().all(|s| s.len() <= WINDOW_SAMPLES));
        assert_eq!(p.iter().map(|s| s.len()).sum::<usize>(), pcm.len());
        let first = p[0].len();
        assert!((25 * SAMPLE_RATE..25 * SAMPLE_RATE + SAMPLE_RATE / 5).contains(&first), "cut at {first}");
        assert_eq!(pieces(&pcm[..WINDOW_SAMPLES]).len(), 1);
    }

    #[test]
    fn token_budget_grows_with_audio_and_is_capped() {
        assert_eq!(max_tokens(3 * SAMPLE_RATE), 38);
        assert_eq!(max_tokens(30 * SAMPLE_RATE), 224);
    }

    #[test]
    fn repeats_are_cut() {
        assert_eq!(repeated_tail(&[1, 2, 3, 4, 5, 1, 2, 3, 4, 5]), Some(5));
        assert_eq!(repeated_tail(&[9, 1, 2, 3, 4, 1, 2, 3, 4]), Some(5));
        assert_eq!(repeated_tail(&[1, 2, 3, 1, 2, 3]), None, "runs under 4 tokens are speech (\"no, no\")");
        assert_eq!(repeated_tail(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(repeated_tail(&[]), None);
    }

    #[test]
    fn argmax_skips_non_finite() {
        assert_eq!(argmax(&[1.0, f32::NAN, 3.0, f32::NEG_INFINITY]), Some(2));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), None);
        let p = log_softmax_at(&[0.0, 0.0, f32::NEG_INFINITY], 0).exp();
        assert!((p - 0.5).abs() < 1e-6);
    }
}
