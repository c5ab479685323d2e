//! Whisper tiny.en behind [`Stt`]: a finished utterance, transcribed on the pool.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use voxgate_audio::resample::Resampler;
use voxgate_services::ServiceError;
use voxgate_services::stt::Stt;

use crate::pool::{InferencePool, WaitMeter};

const PROVIDER: &str = "local-whisper";
const WHISPER_RATE: u32 = 16_000;

/// One call's speech to text.
pub struct LocalStt {
    pub(super) whisper: Arc<voxgate_whisper::Whisper>,
    pub(super) pool: InferencePool,
    pub(super) waits: WaitMeter,
    pub(super) baseline: bool,
}

impl Stt for LocalStt {
    fn transcribe(&self, audio: Vec<i16>, rate: u32) -> BoxFuture<'static, Result<String, ServiceError>> {
        let (whisper, pool, waits) = (self.whisper.clone(), self.pool.clone(), self.waits.clone());
        let window = if self.baseline { voxgate_whisper::Window::Full } else { voxgate_whisper::Window::default() };
        async move {
            let pcm = to_whisper_input(&audio, rate)?;
            let result = pool.run("stt", &waits, move |_| whisper.transcribe_with(&pcm, window)).await;
            match result {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(e)) => Err(ServiceError::Invalid { provider: PROVIDER, message: e.to_string() }),
                Err(e) => Err(super::pool_error(PROVIDER, e)),
            }
        }
        .boxed()
    }

    /// The same audio gives the same words, and an unused transcription costs only
    /// compute; the naive baseline waits for the end of the turn.
    fn speculative(&self) -> bool {
        !self.baseline
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        Some(self.waits.take())
    }
}

/// PCM16 at `rate` as Whisper's input: f32 in [-1, 1] at 16 kHz.
fn to_whisper_input(audio: &[i16], rate: u32) -> Result<Vec<f32>, ServiceError> {
    let resampled;
    let samples = if rate == WHISPER_RATE {
        audio
    } else {
        let mut r = Resampler::with_rates(rate, WHISPER_RATE)
            .map_err(|e| ServiceError::Invalid { provider: PROVIDER, message: format!("audio at {rate} Hz: {e}") })?;
        let mut out = Vec::with_capacity(r.max_output_len(audio.len()) + 64);
        r.process(audio, &mut out);
        r.flush(&mut out);
        resampled = out;
        &resampled
    };
    Ok(samples.iter().map(|&s| f32::from(s) / 32768.0).collect())
}
