//! Calls and their turns. The agent writes them as a call goes; the API reads them.
//! A turn carries what was said and, for assistant turns, how long each stage took.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    InProgress,
    Ended,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::InProgress => "in-progress",
            CallStatus::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<CallStatus> {
        match s {
            "in-progress" => Some(CallStatus::InProgress),
            "ended" => Some(CallStatus::Ended),
            _ => None,
        }
    }
}

/// `endedReason`s the server writes on a call's record when the call could not end
/// itself, because the process that held it is gone: no `call-ended` event ever
/// carries them (the caller's socket went with that process). Every other reason is
/// an `EndReason` of the call's pipeline (`voxgate-frames`), sent in `call-ended`.
pub mod ended_by_server {
    /// The next start of the same `INSTANCE_ID` found the call left in progress by
    /// its earlier run (a crash, `kill -9`).
    pub const SERVER_RESTARTED: &str = "server-restarted";
    /// Another agent instance found the call's instance gone: its heartbeat had
    /// stopped for longer than the lease (`INSTANCE_LEASE_SECS`).
    pub const INSTANCE_LOST: &str = "instance-lost";
}

/// A call: who it was with, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: String,
    pub assistant_id: String,
    /// The key that opened the call, if any.
    pub key_id: Option<String>,
    pub status: CallStatus,
    /// Why the call ended (`customer-ended-call`, `silence-timed-out`, `server-shutdown`, ...).
    pub ended_reason: Option<String>,
    #[serde(with = "crate::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    #[serde(with = "crate::clock::rfc3339_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The agent instance that holds (or held) the call.
    pub instance: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// The transcript, in order; present when one call is fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns: Option<Vec<CallTurn>>,
    /// Where to fetch the call's recording (a stereo WAV: the caller left, the
    /// assistant right), when its assistant records calls.
    #[serde(default)]
    pub recording_url: Option<String>,
}

impl Call {
    /// A call starting now on `instance`, with a new id.
    pub fn start(assistant_id: impl Into<String>, key_id: Option<String>, instance: impl Into<String>) -> Call {
        Call {
            id: crate::clock::new_id(),
            assistant_id: assistant_id.into(),
            key_id,
            status: CallStatus::InProgress,
            ended_reason: None,
            started_at: crate::clock::now_ms(),
            ended_at: None,
            duration_ms: None,
            instance: Some(instance.into()),
            metadata: Map::new(),
            turns: None,
            recording_url: None,
        }
    }
}

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    User,
    Assistant,
    System,
    Tool,
}

impl TurnRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TurnRole::User => "user",
            TurnRole::Assistant => "assistant",
            TurnRole::System => "system",
            TurnRole::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<TurnRole> {
        match s {
            "user" => Some(TurnRole::User),
            "assistant" => Some(TurnRole::Assistant),
            "system" => Some(TurnRole::System),
            "tool" => Some(TurnRole::Tool),
            _ => None,
        }
    }
}

/// How long each stage of one turn took, in milliseconds. Absent stages are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnLatency {
    /// End of speech to the end-of-turn decision.
    pub endpointing_ms: Option<f64>,
    /// End of turn to the final transcript.
    pub stt_ms: Option<f64>,
    /// Transcript to the model's first token.
    pub llm_first_token_ms: Option<f64>,
    /// First clause to the first audio out of text-to-speech.
    pub tts_first_audio_ms: Option<f64>,
    /// Time spent waiting for a shared inference worker.
    pub queue_wait_ms: Option<f64>,
    /// End of the caller's speech to the first audio of the reply.
    pub voice_to_voice_ms: Option<f64>,
    /// End-of-turn decision to the first reply audio frame written: everything
    /// after endpointing (speech to text, the model, speech synthesis, the platform).
    #[serde(default)]
    pub response_ms: Option<f64>,
    /// Embedding the caller's words and searching the assistant's knowledge base.
    #[serde(default)]
    pub retrieval_ms: Option<f64>,
}

/// One turn of a call's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallTurn {
    /// 0-based position in the call.
    pub idx: i64,
    pub role: TurnRole,
    pub text: String,
    /// Milliseconds from the start of the call.
    pub started_ms: i64,
    /// True when the caller cut the reply short; `text` then holds only what was played.
    pub interrupted: bool,
    pub latency: TurnLatency,
    /// A caller's turn whose speech could not be transcribed (the speech-to-text
    /// provider failed): `text` is empty, and this says why. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TurnError>,
}

/// Why a turn has no words: the code and message of the `error` event the caller
/// was sent (docs/agent-protocol.md), e.g. `provider-failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TurnError {
    pub code: String,
    pub message: String,
}
