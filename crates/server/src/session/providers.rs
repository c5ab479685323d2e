//! Which speech-to-text, language model and text-to-speech a call uses. The binary
//! picks them per assistant (local models, or an OpenAI-compatible server, in the
//! issues that add them); tests inject scripted ones.

use std::sync::Arc;
use std::time::Duration;

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
    /// The services, or a sentence saying why none can serve this assistant.
    fn providers(&self, assistant: &Assistant) -> Result<Providers, String>;
}

/// No models installed: every call says so and ends.
pub struct Unconfigured;

impl ProviderFactory for Unconfigured {
    fn providers(&self, _: &Assistant) -> Result<Providers, String> {
        Err("no speech models are configured on this server yet (local models and OpenAI providers are being added)".into())
    }
}

/// The same services for every call (tests and benchmarks use scripted ones).
pub struct Fixed(pub Providers);

impl ProviderFactory for Fixed {
    fn providers(&self, _: &Assistant) -> Result<Providers, String> {
        Ok(self.0.clone())
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
    fn providers(&self, _: &Assistant) -> Result<Providers, String> {
        Ok(Scripted::providers())
    }
}
