//! Speech to text. Batch providers transcribe a finished utterance; streaming ones
//! take audio as it comes and give partial and final transcripts.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::ServiceError;

/// Transcribes a whole utterance.
pub trait Stt: Send + Sync + 'static {
    /// `audio` is mono PCM16 at `rate`.
    fn transcribe(&self, audio: Vec<i16>, rate: u32) -> BoxFuture<'static, Result<String, ServiceError>>;

    /// A streaming session, for providers that can stream: audio goes in as the
    /// caller speaks and partial transcripts come out (what the interruption rule's
    /// word count needs). `None` (the default): batch only.
    fn stream(&self, _rate: u32) -> Option<Result<Box<dyn SttSession>, ServiceError>> {
        None
    }

    /// Whether [`stream`](Self::stream) gives sessions (and so partial transcripts).
    fn streams(&self) -> bool {
        false
    }

    /// Whether the stage may transcribe an utterance ahead of time, when the caller
    /// stops speaking but before the end of the turn is decided, and throw the
    /// result away if the caller goes on. Only for providers whose answer depends on
    /// the audio alone (the same audio, the same words), and whose unused requests
    /// cost nothing but compute. `false` (the default): transcribe at the end of the
    /// turn.
    fn speculative(&self) -> bool {
        false
    }

    /// The time this provider's requests waited for an inference worker since
    /// the last call of this method (local models share a bounded worker pool);
    /// `None` for providers with no such queue. The stage reports it as the turn's
    /// queue wait.
    fn take_queue_wait(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A transcript event from a streaming recogniser.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    Partial(String),
    Final(String),
}

/// One streaming recognition session: push audio in, read events out. Dropping
/// it ends the session.
pub trait SttSession: Send {
    /// Feeds audio (mono PCM16 at the session's rate).
    fn push(&mut self, audio: &[i16]) -> Result<(), ServiceError>;
    /// The caller's turn is over: finish and emit a final transcript.
    fn finish(&mut self) -> Result<(), ServiceError>;
    /// The transcript events, in order.
    fn events(&mut self) -> BoxStream<'static, Result<SttEvent, ServiceError>>;
}

/// Starts streaming sessions.
pub trait StreamingStt: Send + Sync + 'static {
    fn start(&self, rate: u32) -> Result<Box<dyn SttSession>, ServiceError>;
}
