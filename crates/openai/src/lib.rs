//! Speech to text, chat and speech from OpenAI, or any server that speaks its HTTP
//! API (vLLM, llama.cpp's server, Groq, ...), behind the `voxgate-services` traits.
//!
//! ```no_run
//! # async fn demo() -> Result<(), voxgate_openai::Error> {
//! let openai = voxgate_openai::OpenAi::new(voxgate_openai::OpenAiConfig::from_env())?;
//! let _ = openai.warm().await; // opens a connection before the first turn
//! let (stt, llm, tts) = (openai.stt(), openai.llm(), openai.tts());
//! # let _ = (stt, llm, tts); Ok(()) }
//! ```
//!
//! Every provider of one process shares one HTTP client (one connection pool). Each
//! call runs under deadlines (first byte, idle, total), retries by itself only what
//! cannot have reached the caller (429s after the wait they ask for, bounded; one
//! 5xx, timeout or cut before anything was yielded), and fails with a precise
//! [`ServiceError`]: `Unauthorized` (401, 403, a spent quota), `RateLimited` (429
//! with its wait), `Transient` (5xx, connect failures, timeouts, cut or malformed
//! streams), `Invalid` (other 4xx, bad input). The key never appears in `Debug`
//! output, logs or errors. Metrics: see [`stats`].
//!
//! Speech to speech over the Realtime WebSocket API: [`OpenAi::realtime`] (see [`realtime`]).

mod call;
mod client;
pub mod config;
mod endpoint;
mod llm;
pub mod realtime;
pub mod stats;
mod stt;
mod tts;

use std::sync::Arc;

use voxgate_services::ServiceError;
use voxgate_services::llm::Llm;
use voxgate_services::stt::Stt;
use voxgate_services::tts::Tts;

pub use config::{Deadlines, Limits, MaxTokensField, Models, OpenAiConfig, Overrides, RetryPolicy, StageDeadlines};
pub use llm::OpenAiLlm;
pub use realtime::{RealtimeConfig, RealtimeEvent, RealtimeEvents, RealtimeSender, RealtimeStats, TurnDetection};
pub use stt::OpenAiStt;
pub use tts::{OpenAiTts, SAMPLE_RATE as TTS_SAMPLE_RATE};

pub use crate::endpoint::display_url;
use crate::endpoint::Endpoint;

/// Why the providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the OpenAI base URL {url} is not usable: {reason}; set OPENAI_BASE_URL (or the assistant's base URL) to an API root such as https://api.openai.com/v1")]
    BaseUrl { url: String, reason: String },
    #[error("the OpenAI API key holds characters an HTTP header cannot carry; check OPENAI_API_KEY for stray quotes, spaces or line breaks")]
    ApiKey,
    #[error("the {stage} model name is empty; name a model (e.g. {example}) in the configuration")]
    EmptyModel { stage: &'static str, example: &'static str },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// The OpenAI providers over one shared HTTP client. Cheap to clone (one `Arc`);
/// `Send + Sync`.
#[derive(Clone)]
pub struct OpenAi {
    inner: Arc<Inner>,
}

struct Inner {
    config: OpenAiConfig,
    ep: Endpoint,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi").field("config", &self.inner.config).finish()
    }
}

impl OpenAi {
    /// Providers on the process-wide HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, Error> {
        OpenAi::on_client(client::shared()?, config)
    }

    /// Providers on a client of their own (a separate connection pool): for tests and
    /// benchmarks that need a cold pool. A server process uses [`OpenAi::new`].
    pub fn with_own_client(config: OpenAiConfig) -> Result<OpenAi, Error> {
        OpenAi::on_client(client::build()?, config)
    }

    fn on_client(client: reqwest::Client, config: OpenAiConfig) -> Result<OpenAi, Error> {
        let m = &config.models;
        for (stage, name, example) in [
            ("STT", &m.stt, "gpt-4o-mini-transcribe"),
            ("LLM", &m.llm, "gpt-4o-mini"),
            ("TTS", &m.tts, "gpt-4o-mini-tts"),
            ("TTS voice", &m.voice, "alloy"),
        ] {
            if name.trim().is_empty() {
                return Err(Error::EmptyModel { stage, example });
            }
        }
        let ep = Endpoint::new(client, &config.base_url, config.api_key.clone(), config.name)?;
        Ok(OpenAi { inner: Arc::new(Inner { config, ep }) })
    }

    /// The configuration these providers run with.
    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }

    /// A provider set for one assistant: other models, voice, language or server, on
    /// the same HTTP client. A base URL on another origin does not get this set's key
    /// unless `overrides.api_key` gives one.
    pub fn with_overrides(&self, overrides: &Overrides) -> Result<OpenAi, Error> {
        let mut config = self.inner.config.clone();
        if let Some(base) = &overrides.base_url {
            let old = endpoint::check_base_url(&config.base_url)?;
            let new = endpoint::check_base_url(base)?;
            if !endpoint::same_origin(&old, &new) {
                config.api_key = None;
            }
            config.base_url = new;
        }
        if let Some(key) = &overrides.api_key {
            config.api_key = Some(key.clone());
        }
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                *slot = v.clone();
            }
        };
        set(&mut config.models.stt, &overrides.stt_model);
        set(&mut config.models.llm, &overrides.llm_model);
        set(&mut config.models.tts, &overrides.tts_model);
        set(&mut config.models.voice, &overrides.voice);
        if overrides.language.is_some() {
            config.language = overrides.language.clone();
        }
        OpenAi::on_client(self.inner.ep.client.clone(), config)
    }

    /// Transcription (`POST /audio/transcriptions`).
    pub fn stt(&self) -> Arc<dyn Stt> {
        Arc::new(self.openai_stt())
    }

    /// Streaming chat (`POST /chat/completions`).
    pub fn llm(&self) -> Arc<dyn Llm> {
        Arc::new(self.openai_llm())
    }

    /// Speech (`POST /audio/speech`), 24 kHz mono.
    pub fn tts(&self) -> Arc<dyn Tts> {
        Arc::new(self.openai_tts())
    }

    /// [`stt`](Self::stt) as its concrete type.
    pub fn openai_stt(&self) -> OpenAiStt {
        let c = &self.inner.config;
        OpenAiStt {
            ep: self.inner.ep.clone(),
            model: c.models.stt.clone(),
            language: c.language.clone().filter(|l| !l.trim().is_empty()),
            deadlines: c.deadlines.stt,
            retry: c.retry,
            limits: c.limits,
        }
    }

    /// [`llm`](Self::llm) as its concrete type.
    pub fn openai_llm(&self) -> OpenAiLlm {
        let c = &self.inner.config;
        let max_tokens_field = match c.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::Auto if endpoint::is_openai(self.inner.ep.base()) => "max_completion_tokens",
            MaxTokensField::Auto => "max_tokens",
        };
        OpenAiLlm {
            ep: self.inner.ep.clone(),
            model: c.models.llm.clone(),
            max_tokens_field,
            deadlines: c.deadlines.llm,
            retry: c.retry,
            limits: c.limits,
        }
    }

    /// [`tts`](Self::tts) as its concrete type.
    pub fn openai_tts(&self) -> OpenAiTts {
        let c = &self.inner.config;
        OpenAiTts {
            ep: self.inner.ep.clone(),
            model: c.models.tts.clone(),
            voice: c.models.voice.clone(),
            deadlines: c.deadlines.tts,
            retry: c.retry,
            limits: c.limits,
        }
    }

    /// Opens a connection to the server ahead of the first turn (`GET /models`, under
    /// `deadlines.warm`), so the first request does not pay for TCP and TLS set-up.
    ///
    /// Counted in `voxgate_openai_warmups_total` by outcome. Any HTTP answer leaves a
    /// warm connection and gives `Ok`, except 401 and 403, which give `Unauthorized`
    /// (the key is wrong, better known before the first call). A failure to connect
    /// gives `Transient`. Callers may ignore the result.
    pub async fn warm(&self) -> Result<(), ServiceError> {
        let ep = &self.inner.ep;
        let deadline = self.inner.config.deadlines.warm;
        let transient = |message: String| ServiceError::Transient { provider: ep.name, message: ep.redact(&message) };
        let shown = ep.shown("models");
        let request = ep.request(reqwest::Method::GET, "models").send();
        let (outcome, result) = match tokio::time::timeout(deadline, request).await {
            Err(_) => ("failed", Err(transient(format!("warm-up GET {shown}: no answer within {deadline:?} (deadlines.warm)")))),
            Ok(Err(e)) => ("failed", Err(transient(format!("warm-up GET {shown} failed: {}", call::error_chain(&e.without_url()))))),
            Ok(Ok(mut response)) => {
                let status = response.status();
                // Read the (small) body so the connection goes back to the pool.
                let _ = tokio::time::timeout(deadline, async {
                    let mut read = 0usize;
                    while let Ok(Some(piece)) = response.chunk().await {
                        read += piece.len();
                        if read > 4 << 20 {
                            break;
                        }
                    }
                })
                .await;
                if matches!(status.as_u16(), 401 | 403) {
                    let message = format!("warm-up GET {shown} answered {status}; check the API key");
                    ("http_error", Err(ServiceError::Unauthorized { provider: ep.name, message }))
                } else if status.is_success() {
                    ("ok", Ok(()))
                } else {
                    ("http_error", Ok(()))
                }
            }
        };
        metrics::counter!(stats::WARMUPS, "outcome" => outcome).increment(1);
        if let Err(e) = &result {
            tracing::debug!("{e}");
        }
        result
    }

    /// Runs [`warm`](Self::warm) in the background (nothing without a Tokio runtime).
    pub fn spawn_warm(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.warm().await;
            });
        }
    }
}
