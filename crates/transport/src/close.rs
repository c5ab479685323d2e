//! How a call's socket closes: the close codes of `voxgate.v1`, the crate's error
//! enum (every way a client can break the protocol, each with its close code and
//! its `error` event code), and the close for each way a call can end.

use std::time::Duration;

use voxgate_frames::EndReason;

/// The close codes the server sends (RFC 6455 and our 4000-4099 range).
pub mod code {
    /// The call ended normally (either side); the reason says why.
    pub const NORMAL: u16 = 1000;
    /// A malformed WebSocket frame.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid data: malformed JSON, an unknown message type or field, a wrong type,
    /// text that is not UTF-8, PCM16 audio with an odd number of bytes.
    pub const INVALID: u16 = 1007;
    /// Authentication or policy (sent by the server, never by this crate's parser).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed; the reason never carries internal details.
    pub const INTERNAL: u16 = 1011;
    /// The server is restarting or draining: connect again.
    pub const RESTART: u16 = 1012;
    /// A well-formed `start` whose audio format the server does not support.
    pub const UNSUPPORTED_AUDIO: u16 = 4001;
    /// No `start` message in time.
    pub const START_TIMEOUT: u16 = 4002;
    /// The client did not read the reply audio fast enough.
    pub const SLOW_CLIENT: u16 = 4003;
}

/// The longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_REASON: usize = 123;

/// A close frame: a code and a reason of at most [`MAX_REASON`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    /// A close frame; `reason` is cut at a char boundary to fit.
    pub fn new(code: u16, reason: impl Into<String>) -> Close {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Close { code, reason }
    }
}

/// What a client did wrong. Fatal errors close the socket with their
/// [`close_code`](ProtocolError::close_code); the others are answered with an
/// `error` event and the message is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON that is not a message: unknown type, unknown or missing field, wrong type.
    #[error("bad message: {0}")]
    BadMessage(String),
    #[error("text messages must be UTF-8")]
    InvalidUtf8,
    #[error("malformed WebSocket frame: {0}")]
    Frame(String),
    #[error("PCM16 audio must have an even number of bytes, got {0}")]
    OddByteCount(usize),
    #[error("unsupported audio format: {0}")]
    UnsupportedAudio(String),
    #[error("message too big: {len} bytes (max {max})")]
    TooBig { len: usize, max: usize },
    #[error("no start message within {0:?}")]
    StartTimeout(Duration),
    /// Not fatal: the audio is dropped.
    #[error("audio before the start message; send start first")]
    AudioBeforeStart,
    /// Not fatal: the message is dropped.
    #[error("{0} before the start message; send start first")]
    NotStarted(&'static str),
    /// Not fatal: the second start is ignored.
    #[error("the call has already started; the audio format cannot change")]
    AlreadyStarted,
}

impl ProtocolError {
    /// The close code, or `None` when the error is not fatal.
    pub fn close_code(&self) -> Option<u16> {
        use ProtocolError::*;
        match self {
            InvalidJson(_) | BadMessage(_) | InvalidUtf8 | OddByteCount(_) => Some(code::INVALID),
            Frame(_) => Some(code::PROTOCOL),
            UnsupportedAudio(_) => Some(code::UNSUPPORTED_AUDIO),
            TooBig { .. } => Some(code::TOO_BIG),
            StartTimeout(_) => Some(code::START_TIMEOUT),
            AudioBeforeStart | NotStarted(_) | AlreadyStarted => None,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.close_code().is_some()
    }

    /// The `code` of the `error` event.
    pub fn code(&self) -> &'static str {
        use ProtocolError::*;
        match self {
            InvalidJson(_) => "invalid-json",
            BadMessage(_) => "bad-message",
            InvalidUtf8 => "invalid-utf8",
            Frame(_) => "malformed-frame",
            OddByteCount(_) => "odd-byte-count",
            UnsupportedAudio(_) => "unsupported-audio-format",
            TooBig { .. } => "message-too-big",
            StartTimeout(_) => "start-timeout",
            AudioBeforeStart => "audio-before-start",
            NotStarted(_) => "not-started",
            AlreadyStarted => "already-started",
        }
    }

    /// The close frame for a fatal error.
    pub fn close(&self) -> Option<Close> {
        self.close_code().map(|c| Close::new(c, self.to_string()))
    }
}

/// How the socket closes when a call ends for `reason`; `None` when the connection
/// is already gone. Internal failures are never described to the client.
pub fn close_for(reason: &EndReason) -> Option<Close> {
    Some(match reason {
        EndReason::ConnectionLost => return None,
        EndReason::SlowClient => Close::new(code::SLOW_CLIENT, reason.as_str()),
        EndReason::ProtocolError => Close::new(code::INVALID, reason.as_str()),
        EndReason::ServerShutdown => Close::new(code::RESTART, "server restarting; reconnect"),
        EndReason::KeyRevoked => Close::new(code::POLICY, "the key that opened this call was revoked"),
        EndReason::PipelineError(_) => Close::new(code::INTERNAL, "internal error"),
        other => Close::new(code::NORMAL, other.as_str()),
    })
}
