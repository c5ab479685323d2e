//! What a provider is told: where the server is, the key, the models, the deadlines.

use std::fmt;
use std::time::Duration;

/// The OpenAI API root, used when no base URL is given.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Settings for the OpenAI providers (or any server that speaks the same API).
///
/// The API key is a secret: `Debug` prints `[redacted]` in its place, and no error
/// message of this crate ever carries it.
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Sent as `Authorization: Bearer <key>`; `None` sends no header (local servers).
    pub api_key: Option<String>,
    /// The API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The provider's name in errors and logs (`"openai"`, or e.g. `"groq"`).
    pub name: &'static str,
    pub models: Models,
    /// The language of the caller's speech (ISO-639-1, e.g. `"en"`), sent to STT when set.
    pub language: Option<String>,
    /// Which field carries the reply length limit.
    pub max_tokens_field: MaxTokensField,
    pub deadlines: StageDeadlines,
    pub retry: RetryPolicy,
    pub limits: Limits,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &crate::endpoint::display_url(&self.base_url))
            .field("name", &self.name)
            .field("models", &self.models)
            .field("language", &self.language)
            .field("max_tokens_field", &self.max_tokens_field)
            .field("deadlines", &self.deadlines)
            .field("retry", &self.retry)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            name: "openai",
            models: Models::default(),
            language: None,
            max_tokens_field: MaxTokensField::Auto,
            deadlines: StageDeadlines::default(),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
        }
    }
}

impl OpenAiConfig {
    /// The defaults with `OPENAI_API_KEY` and `OPENAI_BASE_URL` from the environment
    /// (an empty variable counts as unset).
    pub fn from_env() -> OpenAiConfig {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        OpenAiConfig {
            api_key: var("OPENAI_API_KEY").map(|k| k.trim().to_string()),
            base_url: var("OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
            ..OpenAiConfig::default()
        }
    }
}

/// The model of each stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    pub stt: String,
    pub llm: String,
    pub tts: String,
    /// The TTS voice (`alloy`, `nova`, ...).
    pub voice: String,
}

impl Default for Models {
    fn default() -> Self {
        Models {
            stt: "gpt-4o-mini-transcribe".into(),
            llm: "gpt-4o-mini".into(),
            tts: "gpt-4o-mini-tts".into(),
            voice: "alloy".into(),
        }
    }
}

/// `max_tokens` (what most OpenAI-compatible servers read) or `max_completion_tokens`
/// (what OpenAI now asks for, and requires for its reasoning models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens` when the base URL's host is `api.openai.com`, else `max_tokens`.
    Auto,
    MaxTokens,
    MaxCompletionTokens,
}

/// How long one stage may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From sending a request to the first byte of the reply body (per attempt).
    pub first_byte: Duration,
    /// The longest silence between two pieces of the body once it started.
    pub idle: Duration,
    /// The whole call, retries and waits included.
    pub total: Duration,
}

/// Deadlines per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageDeadlines {
    pub stt: Deadlines,
    pub llm: Deadlines,
    pub tts: Deadlines,
    /// The whole warm-up request.
    pub warm: Duration,
}

impl Default for StageDeadlines {
    fn default() -> Self {
        let s = Duration::from_secs;
        StageDeadlines {
            stt: Deadlines { first_byte: s(10), idle: s(10), total: s(30) },
            llm: Deadlines { first_byte: s(10), idle: s(15), total: s(90) },
            tts: Deadlines { first_byte: s(8), idle: s(10), total: s(60) },
            warm: s(5),
        }
    }
}

impl StageDeadlines {
    /// The shortest deadline a setting may give.
    pub const MIN: Duration = Duration::from_millis(10);
    /// The longest deadline a setting may give (an hour).
    pub const MAX: Duration = Duration::from_secs(3600);

    /// The defaults, with the stages named in `OPENAI_STT_DEADLINES`,
    /// `OPENAI_LLM_DEADLINES` and `OPENAI_TTS_DEADLINES` replaced (see
    /// [`StageDeadlines::from_vars`]).
    pub fn from_env() -> Result<StageDeadlines, String> {
        StageDeadlines::from_vars(|name| std::env::var(name).ok())
    }

    /// The defaults, with each stage whose variable `var` gives replaced. A value is
    /// `FIRST_BYTE,IDLE,TOTAL` in seconds (decimals allowed), e.g. `30,15,120` for a
    /// model server that is slow to start its answers; an empty value keeps the
    /// stage's defaults. Each must be from [`StageDeadlines::MIN`] to
    /// [`StageDeadlines::MAX`], and neither of the first two above the total.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<StageDeadlines, String> {
        let mut d = StageDeadlines::default();
        for (name, stage) in [("OPENAI_STT_DEADLINES", &mut d.stt), ("OPENAI_LLM_DEADLINES", &mut d.llm), ("OPENAI_TTS_DEADLINES", &mut d.tts)] {
            if let Some(v) = var(name).filter(|v| !v.trim().is_empty()) {
                *stage = Deadlines::parse(&v).map_err(|why| format!("{name}: {why}"))?;
            }
        }
        Ok(d)
    }
}

impl Deadlines {
    /// `FIRST_BYTE,IDLE,TOTAL` in seconds.
    fn parse(v: &str) -> Result<Deadlines, String> {
        const SHAPE: &str = "expected FIRST_BYTE,IDLE,TOTAL in seconds, e.g. 10,15,90";
        let parts: Vec<&str> = v.split(',').map(str::trim).collect();
        let [first_byte, idle, total] = parts[..] else {
            return Err(format!("{} values given; {SHAPE}", parts.len()));
        };
        let secs = |what: &str, s: &str| -> Result<Duration, String> {
            let n: f64 = s.parse().map_err(|_| format!("{what} {s:?} is not a number; {SHAPE}"))?;
            // Written so that NaN fails too.
            if !(StageDeadlines::MIN.as_secs_f64()..=StageDeadlines::MAX.as_secs_f64()).contains(&n) {
                return Err(format!("{what} {s:?} must be from 0.01 to {} seconds", StageDeadlines::MAX.as_secs()));
            }
            Ok(Duration::from_secs_f64(n))
        };
        let d = Deadlines { first_byte: secs("first byte", first_byte)?, idle: secs("idle", idle)?, total: secs("total", total)? };
        if d.first_byte > d.total || d.idle > d.total {
            return Err(format!("the first byte ({first_byte} s) and idle ({idle} s) deadlines cannot be longer than the total ({total} s)"));
        }
        Ok(d)
    }
}

/// Retries made inside a provider, before it gives up and lets the caller decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after a 429 (each waits what the server asked for).
    pub rate_limit_retries: u32,
    /// The most a call waits on 429s in total; a longer ask is returned as
    /// `RateLimited` at once.
    pub rate_limit_max_wait: Duration,
    /// The wait after a 429 that names none.
    pub rate_limit_default_wait: Duration,
    /// Retries after a 5xx, a connect failure, a timeout or a cut body, only while
    /// nothing has been yielded to the caller.
    pub transient_retries: u32,
    /// The pause before such a retry.
    pub transient_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            rate_limit_retries: 2,
            rate_limit_max_wait: Duration::from_secs(4),
            rate_limit_default_wait: Duration::from_millis(500),
            transient_retries: 1,
            transient_pause: Duration::from_millis(100),
        }
    }
}

/// Caps on what a server may send, so a hostile or broken one cannot fill memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A whole streamed chat reply (SSE text).
    pub chat_bytes: usize,
    /// A JSON reply (transcription).
    pub json_bytes: usize,
    /// A whole speech reply (PCM).
    pub audio_bytes: usize,
    /// An error body (only its start is kept for the message).
    pub error_bytes: usize,
    /// The audio sent to transcription (OpenAI accepts 25 MB).
    pub upload_bytes: usize,
    /// The text of one speech request (OpenAI accepts 4,096 characters).
    pub speech_chars: usize,
    /// Tool calls in one reply.
    pub tool_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chat_bytes: 8 << 20,
            json_bytes: 1 << 20,
            audio_bytes: 64 << 20,
            error_bytes: 64 << 10,
            upload_bytes: 25 << 20,
            speech_chars: 4096,
            tool_calls: 64,
        }
    }
}

/// Per-assistant changes to a provider set; the result shares the HTTP client.
#[derive(Clone, Default, PartialEq)]
pub struct Overrides {
    /// Another API root. When its host differs from the original one, the original
    /// key is NOT sent there: give `api_key` too if that server needs one.
    pub base_url: Option<String>,
    /// Another key (also a secret: never printed).
    pub api_key: Option<String>,
    pub stt_model: Option<String>,
    pub llm_model: Option<String>,
    pub tts_model: Option<String>,
    pub voice: Option<String>,
    pub language: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("base_url", &self.base_url.as_deref().map(crate::endpoint::display_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("stt_model", &self.stt_model)
            .field("llm_model", &self.llm_model)
            .field("tts_model", &self.tts_model)
            .field("voice", &self.voice)
            .field("language", &self.language)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn stage_deadlines_come_from_the_environment() {
        assert_eq!(StageDeadlines::from_vars(vars(&[])), Ok(StageDeadlines::default()));
        assert_eq!(StageDeadlines::from_vars(vars(&[("OPENAI_LLM_DEADLINES", " ")])), Ok(StageDeadlines::default()));
        let d = StageDeadlines::from_vars(vars(&[("OPENAI_LLM_DEADLINES", "30, 15,120"), ("OPENAI_TTS_DEADLINES", "0.5,0.25,1")])).unwrap();
        let s = Duration::from_secs;
        assert_eq!(d.llm, Deadlines { first_byte: s(30), idle: s(15), total: s(120) });
        assert_eq!(d.tts, Deadlines { first_byte: Duration::from_millis(500), idle: Duration::from_millis(250), total: s(1) });
        assert_eq!(d.stt, StageDeadlines::default().stt, "a stage not named keeps its defaults");
        assert_eq!(d.warm, StageDeadlines::default().warm);
    }

    #[test]
    fn malformed_and_hostile_deadlines_are_refused_by_name() {
        for (value, says) in [
            ("30", "1 values given"),
            ("30,15", "2 values given"),
            ("1,2,3,4", "4 values given"),
            (",,", "first byte \"\" is not a number"),
            ("ten,15,90", "first byte \"ten\" is not a number"),
            ("10,15s,90", "idle \"15s\" is not a number"),
            ("0,15,90", "must be from 0.01 to 3600 seconds"),
            ("0.001,15,90", "must be from 0.01"),
            ("1e-10,15,90", "must be from 0.01"),
            ("-1,15,90", "must be from 0.01"),
            ("10,15,NaN", "must be from 0.01"),
            ("10,15,inf", "must be from 0.01"),
            ("10,15,1e300", "to 3600 seconds"),
            ("10,15,3600.5", "to 3600 seconds"),
            ("100,15,90", "cannot be longer than the total"),
            ("10,150,90", "cannot be longer than the total"),
            ("1\u{0},2,3", "is not a number"),
        ] {
            let err = StageDeadlines::from_vars(vars(&[("OPENAI_STT_DEADLINES", value)])).unwrap_err();
            assert!(err.starts_with("OPENAI_STT_DEADLINES: "), "{value:?}: {err}");
            assert!(err.contains(says), "{value:?}: {err}");
        }
    }
}
