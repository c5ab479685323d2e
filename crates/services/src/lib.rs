//! The services a call uses, behind small streaming traits, so the pipeline does
//! not care whether a model runs on this machine, at OpenAI, or is scripted.
//!
//! # Layout
//! - [`stt`]: speech to text, batch and streaming.
//! - [`llm`]: streaming chat with tool calls; the chat message types.
//! - [`tts`]: text to streaming audio.
//! - [`clauses`]: cuts a stream of tokens into clauses, so speech starts on the
//!   first clause rather than the whole reply.
//! - [`context`]: the conversation, and truncating a reply to what was played.
//! - [`scripted`]: deterministic providers for tests (fixed transcripts, tokens
//!   with chosen delays, tone audio). Never a default for users.
//! - [`turn`]: the turn-taking stage: VAD, endpointing, barge-in, timeouts.
//! - [`processors`]: the pipeline stages around each service.

pub mod clauses;
pub mod context;
pub mod llm;
pub mod scripted;
pub mod stt;
pub mod tts;
pub mod turn;
pub mod processors;

/// What a provider can fail with. The pipeline decides (per stage, per issue 5)
/// whether to retry, fall back, or end the turn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// Credentials refused (401, 403): a configuration problem, never retried.
    #[error("{provider}: not authorized: {message}")]
    Unauthorized { provider: &'static str, message: String },
    /// Rate limited (429), with the wait the provider asked for.
    #[error("{provider}: rate limited")]
    RateLimited { provider: &'static str, retry_after: Option<std::time::Duration> },
    /// A failure worth one retry (5xx, a timeout, a cut stream).
    #[error("{provider}: {message}")]
    Transient { provider: &'static str, message: String },
    /// The request itself is wrong (bad audio, a model that does not exist).
    #[error("{provider}: {message}")]
    Invalid { provider: &'static str, message: String },
}

impl ServiceError {
    /// The code of the error event a caller is sent for it.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Unauthorized { .. } => "provider-unauthorized",
            ServiceError::RateLimited { .. } => "provider-rate-limited",
            ServiceError::Transient { .. } => "provider-failed",
            ServiceError::Invalid { .. } => "provider-invalid",
        }
    }

    /// Whether another provider might do better than this one now: true for
    /// rate limits and transient failures, false for refused credentials and bad
    /// requests (configuration problems to show, not to hide behind a fallback).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::RateLimited { .. } | ServiceError::Transient { .. })
    }

    /// Logs a failure of `what`: refused credentials as an error naming the fix
    /// (they need someone to act), the rest as a warning.
    pub fn log(&self, what: &str) {
        match self {
            ServiceError::Unauthorized { provider, .. } => tracing::error!(
                error = %self,
                "{what} failed: {provider} refused the credentials; check the API key (OPENAI_API_KEY) and the base URL of the assistant"
            ),
            _ => tracing::warn!(error = %self, "{what} failed"),
        }
    }
}
