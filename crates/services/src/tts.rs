//! Text to speech, streamed: audio comes out in chunks while the rest of the
//! clause is still being synthesized.

use futures_util::stream::BoxStream;

use crate::ServiceError;

/// A speech synthesizer.
pub trait Tts: Send + Sync + 'static {
    /// The rate of the audio it yields (mono PCM16).
    fn sample_rate(&self) -> u32;
    /// Streams the audio of `text`. Dropping the stream cancels synthesis.
    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>>;

    /// The time this provider's requests waited for an inference worker since
    /// the last call of this method (local models share a bounded worker pool);
    /// `None` for providers with no such queue. The stage reports it as the turn's
    /// queue wait.
    fn take_queue_wait(&self) -> Option<std::time::Duration> {
        None
    }
}
