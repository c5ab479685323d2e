//! Reply audio on its way to the client: TTS chunks of any length and rate are
//! resampled to the client's output rate and cut into exact 20 ms frames, each
//! encoded (PCM16 little-endian or mu-law) into the bytes of one binary message.
//! The output stage paces the frames; this only shapes them.

use voxgate_audio::pcm::encode_pcm16le_into;
use voxgate_audio::{Resampler, SampleRate, mulaw};
use voxgate_frames::AudioFrame;

use crate::protocol::{AudioFormat, Encoding};

/// Resamples, frames and encodes one call's reply audio.
#[derive(Debug)]
pub struct Framer {
    format: AudioFormat,
    /// From the TTS rate; rebuilt if that changes.
    resampler: Option<Resampler>,
    /// Samples at the output rate; those before `read` are already framed.
    pending: Vec<i16>,
    read: usize,
    /// Audio went into the resampler since its last flush: only then has it a tail
    /// to push out (a second flush would make a frame of silence out of nothing).
    unflushed: bool,
}

impl Framer {
    pub fn new(format: AudioFormat) -> Framer {
        Framer {
            format,
            resampler: None,
            pending: Vec::with_capacity(format.rate.frame_samples() * 4),
            read: 0,
            unflushed: false,
        }
    }

    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Samples per frame at the output rate.
    pub fn frame_samples(&self) -> usize {
        self.format.rate.frame_samples()
    }

    /// Samples held, not yet framed.
    pub fn pending(&self) -> usize {
        self.pending.len() - self.read
    }

    /// Adds a chunk of audio. A rate the resampler cannot convert is dropped (and
    /// logged): a TTS misconfiguration should not end the call.
    pub fn push(&mut self, frame: &AudioFrame) {
        if frame.is_empty() {
            return;
        }
        // Compact before growing, so `pending` stays about one chunk long.
        if self.read > 0 {
            self.pending.drain(..self.read);
            self.read = 0;
        }
        let to = self.format.rate;
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.from_hz() != frame.rate)
        {
            let r = match SampleRate::try_from(frame.rate) {
                Ok(from) => Ok(Resampler::new(from, to)),
                Err(_) => Resampler::with_rates(frame.rate, to.hz()),
            };
            match r {
                Ok(r) => self.resampler = Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "reply audio dropped");
                    return;
                }
            }
        }
        if let Some(r) = &mut self.resampler {
            r.process(&frame.samples, &mut self.pending);
            self.unflushed = true;
        }
    }

    /// The next whole frame, encoded; `None` until one is held.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let n = self.frame_samples();
        if self.pending() < n {
            return None;
        }
        let samples = &self.pending[self.read..self.read + n];
        self.read += n;
        Some(encode(self.format.encoding, samples))
    }

    /// The samples (at the output rate) of the frame [`next_frame`](Self::next_frame)
    /// returned last.
    pub fn last_frame_samples(&self) -> &[i16] {
        let n = self.frame_samples();
        if self.read >= n { &self.pending[self.read - n..self.read] } else { &[] }
    }

    /// The reply is over: push the resampler's tail through and pad what is left to
    /// a whole frame with silence, so [`next_frame`](Self::next_frame) drains it all.
    pub fn finish(&mut self) {
        if let Some(r) = &mut self.resampler
            && std::mem::take(&mut self.unflushed)
        {
            r.flush(&mut self.pending);
        }
        let n = self.frame_samples();
        let rest = self.pending() % n;
        if rest > 0 {
            self.pending.resize(self.pending.len() + n - rest, 0);
        }
    }

    /// Drops everything held (an interruption).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.read = 0;
        self.unflushed = false;
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
    }
}

fn encode(encoding: Encoding, samples: &[i16]) -> Vec<u8> {
    match encoding {
        Encoding::Pcm16 => {
            let mut out = Vec::with_capacity(samples.len() * 2);
            encode_pcm16le_into(samples, &mut out);
            out
        }
        Encoding::Mulaw => {
            let mut out = vec![0u8; samples.len()];
            mulaw::encode_into(samples, &mut out);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(f: &mut Framer) -> usize {
        std::iter::from_fn(|| f.next_frame()).count()
    }

    #[test]
    fn a_second_finish_adds_nothing() {
        let mut f = Framer::new(AudioFormat { encoding: Encoding::Pcm16, rate: SampleRate::Hz48000 });
        // 100 ms at 24 kHz, resampled to 48 kHz: five frames, and the tail.
        f.push(&AudioFrame::new(vec![1000i16; 2400], 24_000));
        f.finish();
        let first = drain(&mut f);
        assert!((5..=6).contains(&first), "{first} frames");
        f.finish();
        assert_eq!(drain(&mut f), 0, "the resampler's tail was already out");
        // New audio has a tail of its own again.
        f.push(&AudioFrame::new(vec![1000i16; 2400], 24_000));
        f.finish();
        assert!(drain(&mut f) >= 5);
    }
}
