//! Which speech-to-text, language model and text-to-speech a call uses. The binary
//! picks them per assistant (local models, or an OpenAI-compatible server, in the
//! issues that add them); tests inject scripted ones.

use std::sync::Arc;

use voxgate_domain::Assistant;
use voxgate_services::llm::Llm;
use voxgate_services::processors::llm::ToolRunner;
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
