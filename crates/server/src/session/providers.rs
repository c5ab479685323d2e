//! Which speech-to-text, language model and text-to-speech a call uses. The binary
//! picks them per assistant (local models, or an OpenAI-compatible server, in the
//! issues that add them); tests inject scripted ones.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared, ready};
use voxgate_models::Paths;
use voxgate_providers::local::{LocalModels, LocalOptions};

use voxgate_domain::Assistant;
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

/// Chooses a call's services from its assistant.
pub trait ProviderFactory: Send + Sync + 'static {
    /// The services, or a sentence saying why none can serve this assistant. It
    /// may wait (for local models still loading after start).
    fn providers(&self, assistant: &Assistant) -> BoxFuture<'static, Result<Providers, String>>;
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
}
