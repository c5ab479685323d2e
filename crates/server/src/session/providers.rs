//! Which speech-to-text, language model and text-to-speech a call uses. The binary
//! picks them per assistant ([`PerAssistant`]: each stage on the local models or on
//! an OpenAI-compatible server, which the local models stand in for when it
//! fails); `--providers local` keeps every call on the local models ([`Local`]);
//! tests and benchmarks inject scripted ones.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared, ready};
use voxgate_models::Paths;
use voxgate_providers::local::{LocalModels, LocalOptions};

use voxgate_api::providers::{OpenAiInfo, ProviderInfo};
use voxgate_domain::Assistant;
use voxgate_domain::assistant::Provider;
use voxgate_openai::{OpenAi, Overrides};
use voxgate_providers::fallback::{FallbackLlm, FallbackStt, FallbackTts, Later};
use voxgate_services::llm::Llm;
use voxgate_services::processors::llm::ToolRunner;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, ToneTts};
use voxgate_services::stt::Stt;
use voxgate_services::tts::Tts;

/// The services of one call.
#[derive(Clone)]
pub struct Providers {
    pub stt: Arc<dyn Stt>,
    pub llm: Arc<dyn Llm>,
    pub tts: Arc<dyn Tts>,
    pub tools: Option<Arc<dyn ToolRunner>>,
}

/// A live OpenAI Realtime session: what the call sends, what it hears.
pub type SpeechToSpeech = (voxgate_openai::RealtimeSender, voxgate_openai::RealtimeEvents);

/// Chooses a call's services from its assistant.
pub trait ProviderFactory: Send + Sync + 'static {
    /// The services, or a sentence saying why none can serve this assistant. It
    /// may wait (for local models still loading after start).
    fn providers(&self, assistant: &Assistant) -> BoxFuture<'static, Result<Providers, String>>;

    /// For an assistant with `realtime` set: its speech-to-speech session, being
    /// set up, or why it cannot be. `None`: the assistant runs the cascade.
    fn speech_to_speech(&self, assistant: &Assistant) -> Option<BoxFuture<'static, Result<SpeechToSpeech, String>>> {
        assistant.spec.realtime.as_ref().map(|_| ready(Err("speech to speech needs the OpenAI-compatible provider (--providers auto or cloud)".to_string())).boxed())
    }

    /// What `GET /api/providers` shows of these providers.
    fn describe(&self) -> ProviderInfo {
        ProviderInfo { mode: "fixed".into(), ..ProviderInfo::default() }
    }
}

/// The local offline models, loading in the background from start; a call that
/// comes before they are ready waits for them. A model that fails to load makes
/// every call end with `providers-unavailable` and the reason.
pub struct Local {
    models: Shared<BoxFuture<'static, Result<LocalModels, String>>>,
}

impl Local {
    /// Starts loading the models from `paths` now, off the async runtime.
    pub fn start_loading(paths: Paths, options: LocalOptions) -> Local {
        let models = async move {
            match tokio::task::spawn_blocking(move || LocalModels::load(&paths, &options)).await {
                Ok(Ok(models)) => Ok(models),
                Ok(Err(e)) => Err(format!("the local models failed to load: {e}")),
                Err(e) => Err(format!("the local models failed to load: {e}")),
            }
        }
        .boxed()
        .shared();
        let watch = models.clone();
        tokio::spawn(async move {
            if let Err(message) = watch.await {
                tracing::error!(%message, "calls cannot be answered");
            }
        });
        Local { models }
    }

    /// Models that will never load: every call ends saying `reason`.
    pub fn unavailable(reason: &str) -> Local {
        Local { models: ready(Err(reason.to_string())).boxed().shared() }
    }

    /// Waits until the models are loaded (or failed to).
    pub async fn ready(&self) -> Result<LocalModels, String> {
        self.models.clone().await
    }
}

impl ProviderFactory for Local {
    fn providers(&self, _: &Assistant) -> BoxFuture<'static, Result<Providers, String>> {
        let models = self.models.clone();
        async move {
            let (stt, llm, tts) = models.await?.services();
            Ok(Providers { stt, llm, tts, tools: None })
        }
        .boxed()
    }

    /// `--providers local` keeps every call on this machine: a realtime
    /// assistant's calls run the local cascade.
    fn speech_to_speech(&self, _: &Assistant) -> Option<BoxFuture<'static, Result<SpeechToSpeech, String>>> {
        None
    }

    fn describe(&self) -> ProviderInfo {
        ProviderInfo { mode: "local".into(), local: true, ..ProviderInfo::default() }
    }
}

/// Each stage where the assistant says: on the local models, or on an
/// OpenAI-compatible server (`OPENAI_API_KEY` and `OPENAI_BASE_URL`, the
/// assistant's base URL and model names over them) wrapped so that the local
/// models take over a turn it fails (see `voxgate_providers::fallback`).
///
/// A call's OpenAI servers are warmed (a connection opened) as it starts, so its
/// first turn does not pay for DNS, TCP and TLS. A call with only cloud stages
/// does not wait for the local models to load.
pub struct PerAssistant {
    local: Arc<dyn ProviderFactory>,
    openai: Result<OpenAi, String>,
    /// Whether `local` serves (false under `--providers cloud`).
    local_on: bool,
    warm: bool,
}

impl PerAssistant {
    /// `local` gives the local stages (and the fallbacks): [`Local`] in the binary.
    /// `openai` is the process-wide set from the environment, or why it could not
    /// be built (then assistants that use it cannot start calls, and say why).
    pub fn new(local: Arc<dyn ProviderFactory>, openai: Result<OpenAi, String>) -> PerAssistant {
        PerAssistant { local, openai, local_on: true, warm: true }
    }

    /// No warm-up at call start: only to measure what the warm-up saves.
    pub fn without_warming(mut self) -> PerAssistant {
        self.warm = false;
        self
    }

    /// With no local models: cloud stages only, and no fallback.
    pub fn cloud_only(openai: Result<OpenAi, String>) -> PerAssistant {
        let reason = "the local models are off on this server (--providers cloud): give every stage of the assistant an OpenAI-compatible provider";
        PerAssistant { local: Arc::new(Local::unavailable(reason)), openai, local_on: false, warm: true }
    }

    /// The OpenAI set for one stage of an assistant.
    fn openai(&self, overrides: Overrides) -> Result<OpenAi, String> {
        let base = self.openai.as_ref().map_err(|e| format!("the OpenAI-compatible provider is not usable: {e}"))?;
        if overrides == Overrides::default() {
            return Ok(base.clone());
        }
        base.with_overrides(&overrides).map_err(|e| format!("the assistant's OpenAI-compatible settings are not usable: {e}"))
    }
}

impl ProviderFactory for PerAssistant {
    fn providers(&self, assistant: &Assistant) -> BoxFuture<'static, Result<Providers, String>> {
        let s = &assistant.spec;
        let cloud = |provider: Provider, overrides: Overrides| -> Result<Option<OpenAi>, String> {
            match provider {
                Provider::Local => Ok(None),
                Provider::Openai => self.openai(overrides).map(Some),
            }
        };
        let stages = (|| {
            let stt = cloud(
                s.transcriber.provider,
                Overrides {
                    base_url: s.transcriber.base_url.clone(),
                    stt_model: s.transcriber.model.clone(),
                    language: s.transcriber.language.clone(),
                    ..Overrides::default()
                },
            )?;
            let llm = cloud(s.model.provider, Overrides { base_url: s.model.base_url.clone(), llm_model: s.model.model.clone(), ..Overrides::default() })?;
            let tts = cloud(
                s.voice.provider,
                Overrides {
                    base_url: s.voice.base_url.clone(),
                    tts_model: s.voice.model.clone(),
                    voice: s.voice.voice.clone(),
                    ..Overrides::default()
                },
            )?;
            Ok::<_, String>((stt, llm, tts))
        })();
        let (stt, llm, tts) = match stages {
            Ok(stages) => stages,
            Err(message) => return ready(Err(message)).boxed(),
        };
        // One warm-up per server the call uses.
        let mut warmed: Vec<&str> = Vec::new();
        for set in [&stt, &llm, &tts].into_iter().flatten().filter(|_| self.warm) {
            if !warmed.contains(&set.config().base_url.as_str()) {
                warmed.push(&set.config().base_url);
                set.spawn_warm();
            }
        }
        // The call's own local services, made when first needed: at once for a
        // local stage, else only if a cloud stage fails.
        let local: Later<Providers> = self.local.providers(assistant).shared();
        async move {
            let now = if stt.is_none() || llm.is_none() || tts.is_none() { Some(local.clone().await?) } else { None };
            let stt: Arc<dyn Stt> = match stt {
                Some(o) => Arc::new(FallbackStt { primary: o.stt(), fallback: local.clone().map(|r| r.map(|p| p.stt)).boxed().shared() }),
                None => now.as_ref().expect("local services").stt.clone(),
            };
            let llm: Arc<dyn Llm> = match llm {
                Some(o) => Arc::new(FallbackLlm { primary: o.llm(), fallback: local.clone().map(|r| r.map(|p| p.llm)).boxed().shared() }),
                None => now.as_ref().expect("local services").llm.clone(),
            };
            let tts: Arc<dyn Tts> = match tts {
                Some(o) => Arc::new(FallbackTts::new(o.tts(), local.clone().map(|r| r.map(|p| p.tts)).boxed().shared())),
                None => now.as_ref().expect("local services").tts.clone(),
            };
            Ok(Providers { stt, llm, tts, tools: now.and_then(|p| p.tools) })
        }
        .boxed()
    }

    fn speech_to_speech(&self, assistant: &Assistant) -> Option<BoxFuture<'static, Result<SpeechToSpeech, String>>> {
        let settings = assistant.spec.realtime.as_ref()?;
        let s = &assistant.spec;
        let openai = self.openai(Overrides { base_url: s.model.base_url.clone(), ..Overrides::default() });
        let mut config = voxgate_openai::RealtimeConfig {
            instructions: s.system_prompt.clone(),
            // Turns are ours: the turn stage commits each one.
            turn_detection: voxgate_openai::TurnDetection::Manual,
            max_output_tokens: Some(s.model.max_tokens.clamp(1, 4096)),
            ..voxgate_openai::RealtimeConfig::default()
        };
        if let Some(model) = &settings.model {
            config.model = model.clone();
        }
        if let Some(voice) = &settings.voice {
            config.voice = voice.clone();
        }
        Some(
            async move {
                let openai = openai?;
                openai.realtime(&config).await.map_err(|e| format!("the speech-to-speech session could not start: {e}"))
            }
            .boxed(),
        )
    }

    fn describe(&self) -> ProviderInfo {
        let openai = match &self.openai {
            Ok(o) => OpenAiInfo {
                base_url: voxgate_openai::display_url(&o.config().base_url),
                key_set: o.config().api_key.is_some(),
                error: None,
            },
            Err(e) => {
                let env = voxgate_openai::OpenAiConfig::from_env();
                OpenAiInfo { base_url: voxgate_openai::display_url(&env.base_url), key_set: env.api_key.is_some(), error: Some(e.clone()) }
            }
        };
        ProviderInfo { mode: if self.local_on { "auto" } else { "cloud" }.into(), local: self.local_on, openai }
    }
}

/// No calls on this instance (an `api` or `ui` role): a call that reaches it
/// anyway is told `why`.
pub struct NoCalls(pub String);

impl ProviderFactory for NoCalls {
    fn providers(&self, _: &Assistant) -> BoxFuture<'static, Result<Providers, String>> {
        ready(Err(self.0.clone())).boxed()
    }

    fn describe(&self) -> ProviderInfo {
        ProviderInfo { mode: "none".into(), ..ProviderInfo::default() }
    }
}

/// The same services for every call (tests and benchmarks use scripted ones).
pub struct Fixed(pub Providers);

impl ProviderFactory for Fixed {
    fn providers(&self, _: &Assistant) -> BoxFuture<'static, Result<Providers, String>> {
        ready(Ok(self.0.clone())).boxed()
    }
}

/// Instant scripted services, new for each call: speech-to-text that hears
/// [`Scripted::HEARD`] in every utterance at once, a model that answers every turn
/// with [`Scripted::REPLY`] token by token with no delay, and a tone for a voice
/// (60 ms a character, first audio at once). With them a call's latency is the
/// platform's own: turn taking, the pipeline, pacing and the socket.
///
/// For benchmarks and load tests (`voxgate serve --providers scripted`), never for
/// real users: the assistant hears nothing the caller says.
pub struct Scripted;

impl Scripted {
    /// What the caller is heard to say, every time.
    pub const HEARD: &'static str = "hello there";
    /// What the assistant answers, every time.
    pub const REPLY: &'static str = "Hi! How can I help you today?";

    /// One call's services.
    pub fn providers() -> Providers {
        Providers {
            stt: Arc::new(ScriptedStt::repeating(Self::HEARD, Duration::ZERO)),
            llm: Arc::new(ScriptedLlm::repeating(ScriptedLlm::words(Self::REPLY, Duration::ZERO))),
            tts: Arc::new(ToneTts::default()),
            tools: None,
        }
    }
}

impl ProviderFactory for Scripted {
    fn providers(&self, _: &Assistant) -> BoxFuture<'static, Result<Providers, String>> {
        ready(Ok(Scripted::providers())).boxed()
    }

    fn describe(&self) -> ProviderInfo {
        ProviderInfo { mode: "scripted".into(), ..ProviderInfo::default() }
    }
}
