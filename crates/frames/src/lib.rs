//! The frames that flow through a call's pipeline. The transport turns wire
//! messages into frames at the edge; every stage after it sees only frames.
//!
//! Frames come in three categories, as in Pipecat:
//! - system frames skip queues (a stage handles them before any queued data) and
//!   survive an interruption: start, cancel, interruption, speaking events, metrics;
//! - data frames (audio, text, transcripts) and
//! - control frames (the start and end of a reply, of speech synthesis) are queued
//!   in order and are flushed by an interruption.
//!
//! # A call's pipeline, downstream
//! 1. the transport (not a stage) feeds `InputAudio` at 16 kHz, `UserText`, `End`;
//! 2. turn taking: VAD, `UserStartedSpeaking`/`UserStoppedSpeaking`, `EndOfTurn`
//!    after the silence, `Interruption` both ways on barge-in, timeouts (`Say`, `End`);
//! 3. speech to text: `Transcript` (partials also upstream, for the word rule), then
//!    `EndOfTurn`;
//! 4. the language model: owns the conversation; on `EndOfTurn` streams
//!    `LlmResponseStart`, `LlmText`..., `LlmResponseEnd`; appends `Spoken` (coming
//!    upstream) to the history;
//! 5. clauses: `LlmText` and `Say` into `TtsText` clauses;
//! 6. text to speech: `SpeechClause(text)` then its `OutputAudio`;
//! 7. the output transport: paces audio in real time, sends `BotStartedSpeaking`,
//!    `BotStoppedSpeaking` and `Spoken` upstream.
//!
//! `Metric` frames travel downstream to the pipeline's end, where the call session
//! turns them into the turn's latency record.
//!
//! # Layout
//! - [`audio`]: [`AudioFrame`], PCM16 samples with their rate.
//! - [`Frame`], [`Category`], [`Direction`]: this file.

pub mod audio;

use std::time::Duration;

pub use audio::AudioFrame;
use serde_json::Value;

/// Which way a frame travels: downstream from the caller's microphone toward the
/// speaker, or upstream (acknowledgements, errors, interruptions from below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Downstream,
    Upstream,
}

/// How a frame is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Skips queues, survives interruptions.
    System,
    /// Queued in order, flushed by interruptions.
    Data,
    /// Queued in order with data, flushed by interruptions.
    Control,
}

/// Why a call ended; also the `endedReason` kept on the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    CustomerEnded,
    AssistantEnded,
    SilenceTimeout,
    MaxDuration,
    EndCallPhrase,
    EndCallTool,
    ConnectionLost,
    SlowClient,
    ProtocolError,
    ServerShutdown,
    /// The key that opened the call was revoked while it went on.
    KeyRevoked,
    /// The assistant handed the call on with its transfer tool.
    Transferred,
    PipelineError(String),
}

impl EndReason {
    /// The reason as stored and sent to clients.
    pub fn as_str(&self) -> &str {
        match self {
            EndReason::CustomerEnded => "customer-ended-call",
            EndReason::AssistantEnded => "assistant-ended-call",
            EndReason::SilenceTimeout => "silence-timed-out",
            EndReason::MaxDuration => "exceeded-max-duration",
            EndReason::EndCallPhrase => "assistant-said-end-call-phrase",
            EndReason::EndCallTool => "assistant-ended-call-with-tool",
            EndReason::ConnectionLost => "connection-lost",
            EndReason::SlowClient => "slow-client",
            EndReason::ProtocolError => "protocol-error",
            EndReason::ServerShutdown => "server-shutdown",
            EndReason::KeyRevoked => "key-revoked",
            EndReason::Transferred => "assistant-forwarded-call",
            EndReason::PipelineError(_) => "pipeline-error",
        }
    }
}

/// A transcript of the caller's speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// False for a partial (interim) result that may still change.
    pub is_final: bool,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// The result of a tool call, fed back to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub id: String,
    pub name: String,
    pub content: Value,
}

/// One stage's timing in the current turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Endpointing,
    Stt,
    LlmFirstToken,
    TtsFirstAudio,
    QueueWait,
    /// Embedding the caller's words and searching the knowledge base.
    Retrieval,
    VoiceToVoice,
    /// From the end-of-turn decision to the first reply audio frame handed to the
    /// socket's writer: what the platform and the models add after endpointing.
    Response,
}

/// Everything that moves through a pipeline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    // ---- system ----
    /// The call starts; every stage may set itself up.
    Start,
    /// Stop at once: no more processing, no flushing; the call is over.
    Cancel(EndReason),
    /// The caller barged in: drop queued data and control frames, cancel work in flight.
    Interruption,
    /// Voice activity: the caller began speaking.
    UserStartedSpeaking,
    /// Voice activity: the caller stopped speaking (before endpointing decides the turn is over).
    UserStoppedSpeaking,
    /// The turn stage decided the caller's turn is over, at this instant; the output
    /// stage times the reply's first audio from it ([`Stage::Response`]).
    TurnEnded(std::time::Instant),
    /// The first reply audio reached the transport.
    BotStartedSpeaking,
    /// The last reply audio was played (or flushed).
    BotStoppedSpeaking,
    /// Audio from the caller. A system frame, as in Pipecat: input must never wait
    /// behind queued output, and it survives an interruption.
    InputAudio(AudioFrame),
    /// A stage's latency in the current turn.
    Metric { stage: Stage, value: Duration },
    /// A stage failed; `fatal` ends the call. `code` is the error event's code
    /// (`provider-unauthorized`, `provider-failed`, ...: see docs/agent-protocol.md).
    Error { code: &'static str, message: String, fatal: bool },
    /// The text whose audio has just been played, sent upstream by the output so
    /// the context keeps only what the caller heard. A system frame: a fact about
    /// the past must survive the interruption that follows it.
    Spoken(String),
    /// The caller's turn could not be transcribed (`code` and `message` as in
    /// [`Frame::Error`]): sent down by speech to text in place of the transcript,
    /// ahead of the `EndOfTurn`, so the call's record keeps the turn. A system
    /// frame, as `Spoken`: a fact about the past.
    TranscriptionFailed {
        code: &'static str,
        message: String,
    },

    // ---- data ----
    /// Audio for the caller.
    OutputAudio(AudioFrame),
    /// Caller speech as text: final ones are data (in order with the turn), partial
    /// ones system frames (see [`Frame::category`]).
    Transcript(Transcript),
    /// The caller typed instead of speaking.
    UserText(String),
    /// Tokens from the model.
    LlmText(String),
    /// A clause or sentence ready for speech synthesis.
    TtsText(String),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    /// Something the assistant must say verbatim (the first message, a prompt).
    Say(String),
    /// Text to speech marks the start of one clause's audio: the `OutputAudio`
    /// frames that follow, up to the next `SpeechClause` or the end of the reply,
    /// speak `text`. The output stage uses it to report what was heard.
    SpeechClause(String),

    // ---- control ----
    /// The caller's turn is over: the context may run the model.
    EndOfTurn,
    LlmResponseStart,
    LlmResponseEnd,
    TtsStarted,
    TtsStopped,
    /// Hand the call to a destination (the client or the telephony layer acts on
    /// the `transfer` event); an `End` follows.
    Transfer(String),
    /// End the call after what is queued has played.
    End(EndReason),
}

impl Frame {
    /// How this frame is queued.
    pub fn category(&self) -> Category {
        use Frame::*;
        match self {
            // A partial transcript is news, not part of the conversation's order: it
            // must reach the client (and the turn stage's word count) without
            // waiting behind reply audio.
            Transcript(t) if !t.is_final => Category::System,
            Start | Cancel(_) | Interruption | UserStartedSpeaking | UserStoppedSpeaking | TurnEnded(_) | BotStartedSpeaking
            | BotStoppedSpeaking | InputAudio(_) | Metric { .. } | Error { .. } | Spoken(_) | TranscriptionFailed { .. } => {
                Category::System
            }
            OutputAudio(_) | Transcript(_) | UserText(_) | LlmText(_) | TtsText(_) | ToolCall(_)
            | ToolResult(_) | Say(_) | SpeechClause(_) => Category::Data,
            EndOfTurn | LlmResponseStart | LlmResponseEnd | TtsStarted | TtsStopped | Transfer(_) | End(_) => Category::Control,
        }
    }

    pub fn is_system(&self) -> bool {
        self.category() == Category::System
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        use Frame::*;
        match self {
            Start => "start",
            Cancel(_) => "cancel",
            Interruption => "interruption",
            UserStartedSpeaking => "user-started-speaking",
            UserStoppedSpeaking => "user-stopped-speaking",
            TurnEnded(_) => "turn-ended",
            BotStartedSpeaking => "bot-started-speaking",
            BotStoppedSpeaking => "bot-stopped-speaking",
            InputAudio(_) => "input-audio",
            Metric { .. } => "metric",
            Error { .. } => "error",
            OutputAudio(_) => "output-audio",
            Transcript(_) => "transcript",
            UserText(_) => "user-text",
            LlmText(_) => "llm-text",
            TtsText(_) => "tts-text",
            Spoken(_) => "spoken",
            TranscriptionFailed { .. } => "transcription-failed",
            ToolCall(_) => "tool-call",
            ToolResult(_) => "tool-result",
            Say(_) => "say",
            SpeechClause(_) => "speech-clause",
            EndOfTurn => "end-of-turn",
            LlmResponseStart => "llm-response-start",
            LlmResponseEnd => "llm-response-end",
            TtsStarted => "tts-started",
            TtsStopped => "tts-stopped",
            Transfer(_) => "transfer",
            End(_) => "end",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_pipecat() {
        assert_eq!(Frame::Interruption.category(), Category::System);
        assert_eq!(Frame::InputAudio(AudioFrame::silence(16_000, 20)).category(), Category::System);
        assert_eq!(Frame::OutputAudio(AudioFrame::silence(16_000, 20)).category(), Category::Data);
        assert_eq!(Frame::LlmResponseStart.category(), Category::Control);
        assert_eq!(Frame::End(EndReason::CustomerEnded).category(), Category::Control);
        assert_eq!(EndReason::SilenceTimeout.as_str(), "silence-timed-out");
    }
}
