//! The wire messages of `voxgate.v1`, both ways. Client text messages are parsed
//! here, once, into [`ClientMessage`]; anything else (malformed JSON, an unknown
//! `type`, an unknown or mistyped field, an oversized message) becomes a
//! [`ProtocolError`] that names its close code. Server events are [`ServerEvent`]s,
//! serialized here. Both enums also deserialize and serialize the other way, so
//! clients in Rust (`voxgate call`, the tests) share these types.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use voxgate_audio::SampleRate;

use crate::close::ProtocolError;
use crate::wire::{WireIn, WireOut};

/// The protocol version, sent in `call-started`.
pub const PROTOCOL: &str = "voxgate.v1";

/// How big a client message may be. The server's WebSocket limit should be at least
/// as large; these are checked again here so a test with channels sees them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON text message, in bytes.
    pub max_text_bytes: usize,
    /// Largest binary (audio) message, in bytes.
    pub max_audio_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 16 KiB of JSON is a long typed message; 64 KiB of audio is 680 ms at 48 kHz
        // PCM16, far more than the 20-100 ms a client should send at a time.
        Limits {
            max_text_bytes: 16 * 1024,
            max_audio_bytes: 64 * 1024,
        }
    }
}

/// How audio is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 16-bit signed little-endian mono PCM.
    Pcm16,
    /// G.711 mu-law, one byte per sample, 8 kHz only.
    Mulaw,
}

/// A validated audio format: an encoding at a rate the pipeline carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFormat", into = "RawFormat")]
pub struct AudioFormat {
    pub encoding: Encoding,
    pub rate: SampleRate,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFormat {
    encoding: Encoding,
    sample_rate: u32,
}

impl TryFrom<RawFormat> for AudioFormat {
    type Error = ProtocolError;
    fn try_from(r: RawFormat) -> Result<Self, ProtocolError> {
        AudioFormat::new(r.encoding, r.sample_rate)
    }
}

impl From<AudioFormat> for RawFormat {
    fn from(f: AudioFormat) -> RawFormat {
        RawFormat {
            encoding: f.encoding,
            sample_rate: f.rate.hz(),
        }
    }
}

impl AudioFormat {
    /// Checks the pair: PCM16 at 8, 16, 24 or 48 kHz; mu-law at 8 kHz only.
    pub fn new(encoding: Encoding, hz: u32) -> Result<AudioFormat, ProtocolError> {
        let rate = SampleRate::try_from(hz).map_err(|_| {
            ProtocolError::UnsupportedAudio(format!(
                "sample rate {hz} Hz; use 8000, 16000, 24000 or 48000"
            ))
        })?;
        if encoding == Encoding::Mulaw && rate != SampleRate::Hz8000 {
            return Err(ProtocolError::UnsupportedAudio(format!(
                "mulaw at {hz} Hz; mulaw is 8000 Hz only"
            )));
        }
        Ok(AudioFormat { encoding, rate })
    }

    /// PCM16 at `rate`.
    pub const fn pcm16(rate: SampleRate) -> AudioFormat {
        AudioFormat {
            encoding: Encoding::Pcm16,
            rate,
        }
    }

    /// Bytes per sample on the wire.
    pub const fn bytes_per_sample(&self) -> usize {
        match self.encoding {
            Encoding::Pcm16 => 2,
            Encoding::Mulaw => 1,
        }
    }

    /// Bytes of one 20 ms frame on the wire.
    pub const fn frame_bytes(&self) -> usize {
        self.rate.frame_samples() * self.bytes_per_sample()
    }
}

/// The `audio` object of a `start` message, as the client sent it (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AudioSpec {
    pub encoding: Encoding,
    /// The rate of the audio the client sends.
    pub sample_rate: u32,
    /// The rate the client wants to receive; `sample_rate` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sample_rate: Option<u32>,
}

/// The formats of a call, once `start` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub input: AudioFormat,
    /// Same encoding as the input.
    pub output: AudioFormat,
}

impl AudioSpec {
    /// Validates both directions.
    pub fn negotiate(&self) -> Result<Negotiated, ProtocolError> {
        let input = AudioFormat::new(self.encoding, self.sample_rate)?;
        let output = AudioFormat::new(
            self.encoding,
            self.output_sample_rate.unwrap_or(self.sample_rate),
        )?;
        Ok(Negotiated { input, output })
    }
}

/// A text message from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ClientMessage {
    /// Declares the audio format; must come first.
    Start {
        audio: AudioSpec,
    },
    /// Typed text instead of speech.
    Text {
        text: String,
    },
    // The field-less messages are empty struct variants, not unit variants: serde
    // ignores extra fields on internally tagged unit variants, and we refuse them.
    /// Stop listening to the microphone (audio is dropped) until `unmute`.
    Mute {},
    Unmute {},
    /// The caller hangs up.
    End {},
    /// Answered by `pong` with the same `id` (any JSON value).
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

/// Who spoke, in a `transcript` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn's latency breakdown, in milliseconds; a stage that did not run is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnLatency {
    /// The turn's index in the call, from 0.
    pub turn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpointing_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_first_token_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_first_audio_ms: Option<u64>,
    /// Time the turn's model jobs waited for a free inference worker (local models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    /// Time the turn spent searching the assistant's knowledge base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_to_voice_ms: Option<u64>,
    /// From the end-of-turn decision to the first reply audio frame written, in
    /// milliseconds with a tenth's precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<f64>,
}

/// A text message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The call is live; the formats are those both sides will use.
    CallStarted {
        call_id: String,
        assistant_id: String,
        protocol: String,
        input: AudioFormat,
        output: AudioFormat,
    },
    /// A call continues on a new socket (after `start` on it): the formats of this
    /// socket, and the token for the next resume.
    CallResumed {
        call_id: String,
        resume_token: String,
        input: AudioFormat,
        output: AudioFormat,
    },
    /// The caller started speaking (voice activity).
    SpeechStarted,
    /// The caller stopped speaking (before endpointing decides the turn is over).
    SpeechStopped,
    /// What the caller said (`final: false` for a partial), or what the assistant
    /// said as played (always final).
    Transcript {
        role: Role,
        text: String,
        #[serde(rename = "final")]
        is_final: bool,
    },
    /// The first audio frame of a reply follows.
    BotSpeechStarted,
    /// The reply's audio has played (or was cut by an interruption).
    BotSpeechStopped,
    /// The caller barged in: drop any reply audio not yet played.
    Interruption,
    /// A finished turn's latency.
    Latency(TurnLatency),
    /// The assistant called a tool.
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    /// The assistant hands the call to `destination` (the client or the telephony
    /// layer connects it); `call-ended` follows.
    Transfer { destination: String },
    /// Something went wrong; `code` is one of the documented codes.
    Error { code: String, message: String },
    /// The call is over; the socket closes next.
    CallEnded { reason: String },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

impl ServerEvent {
    /// The event as a text message.
    pub fn to_wire(&self) -> WireOut {
        // Serializing these types cannot fail: every map key is a string.
        WireOut::Text(serde_json::to_string(self).unwrap_or_default())
    }

    /// The event as a text message, with a `resumeToken` field added (for
    /// `call-started` on a call that may be resumed).
    pub fn to_wire_with_resume_token(&self, token: Option<&str>) -> WireOut {
        let Some(token) = token else { return self.to_wire() };
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("resumeToken".into(), Value::String(token.into()));
        }
        WireOut::Text(v.to_string())
    }

    /// An `error` event for `e`.
    pub fn error(e: &ProtocolError) -> ServerEvent {
        ServerEvent::Error {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

/// A client message, parsed.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    Message(ClientMessage),
    /// Audio in the declared format (checked by the input decoder).
    Audio(&'a [u8]),
    /// The client closed the socket.
    Close,
}

/// Parses one message from the client.
pub fn parse<'a>(msg: &'a WireIn, limits: &Limits) -> Result<Incoming<'a>, ProtocolError> {
    match msg {
        WireIn::Text(text) => parse_text(text, limits).map(Incoming::Message),
        WireIn::Binary(bytes) if bytes.len() > limits.max_audio_bytes => {
            Err(ProtocolError::TooBig {
                len: bytes.len(),
                max: limits.max_audio_bytes,
            })
        }
        WireIn::Binary(bytes) => Ok(Incoming::Audio(bytes)),
        WireIn::Close => Ok(Incoming::Close),
    }
}

/// Parses one JSON text message from the client.
pub fn parse_text(text: &str, limits: &Limits) -> Result<ClientMessage, ProtocolError> {
    if text.len() > limits.max_text_bytes {
        return Err(ProtocolError::TooBig {
            len: text.len(),
            max: limits.max_text_bytes,
        });
    }
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ProtocolError::BadMessage(e.to_string()),
        _ => ProtocolError::InvalidJson(e.to_string()),
    })
}
