//! The offline models: Whisper tiny.en for speech to text, SmolLM2-135M-Instruct
//! for the replies, the Piper voice "joe" for speech. They load once per process
//! ([`LocalModels::load`]) and every call shares them; each call gets its own
//! thin providers ([`LocalModels::services`]) that run the models on the shared
//! [`InferencePool`] and meter that call's queue wait.

mod llm;
mod stt;
mod tts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voxgate_models::Paths;
use voxgate_services::ServiceError;

use crate::pool::{InferencePool, PoolError, WaitMeter};

pub use llm::LocalLlm;
pub use stt::LocalStt;
pub use tts::LocalTts;

/// How the local models run.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Inference jobs that run at once (the pool's size). Default: 1, so one job
    /// has both cores to itself and a turn's latency is lowest; more calls queue.
    pub workers: usize,
    /// Threads each model uses inside one job. Default: the machine's cores (at most 4).
    pub threads: usize,
    /// Cached LLM conversations (their KV caches), so a call's next turn reuses its
    /// prefix. Default 16.
    pub llm_sessions: usize,
    /// LLM context per conversation, in tokens. Default 2048.
    pub llm_context: u32,
    /// The naive way, for benchmarks only: Whisper encodes its full 30-second
    /// window, the reply reaches the voice only once it is whole, and the voice
    /// speaks it in one piece.
    pub baseline: bool,
    /// The pool to run on, shared with other inference (the knowledge base's
    /// embeddings); a pool of `workers` of its own when `None`.
    pub pool: Option<InferencePool>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LocalOptions { workers: 1, threads: cores.clamp(1, 4), llm_sessions: 16, llm_context: 2048, baseline: false, pool: None }
    }
}

/// What loading the models can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("speech to text (Whisper): {0}")]
    Stt(#[from] voxgate_whisper::Error),
    #[error("language model (SmolLM2): {0}")]
    Llm(#[from] voxgate_llama::Error),
    #[error("voice (Piper): {0}")]
    Tts(#[from] voxgate_piper::Error),
}

/// The loaded models and the pool they run on. Cheap to clone.
#[derive(Clone)]
pub struct LocalModels {
    whisper: Arc<voxgate_whisper::Whisper>,
    llama: voxgate_llama::Llama,
    piper: Arc<voxgate_piper::Piper>,
    pool: InferencePool,
    baseline: bool,
    /// How long loading took.
    pub load_time: Duration,
}

impl std::fmt::Debug for LocalModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModels").field("pool", &self.pool).field("load_time", &self.load_time).finish()
    }
}

impl LocalModels {
    /// Loads the three models from `paths` (blocking: seconds; run it off the async
    /// runtime).
    pub fn load(paths: &Paths, options: &LocalOptions) -> Result<LocalModels, LoadError> {
        let started = Instant::now();
        let whisper = Arc::new(voxgate_whisper::Whisper::load(&paths.whisper)?);
        let llama = voxgate_llama::Llama::load(
            &paths.llm,
            voxgate_llama::LlamaOptions {
                threads: options.threads as u32,
                context_size: options.llm_context,
                sessions: options.llm_sessions.max(1),
                ..voxgate_llama::LlamaOptions::default()
            },
        )?;
        let piper = Arc::new(voxgate_piper::Piper::load(
            &paths.voice,
            &paths.onnxruntime,
            &paths.espeak,
            voxgate_piper::PiperOptions {
                intra_threads: options.threads,
                sessions: options.workers.max(1),
            },
        )?);
        let load_time = started.elapsed();
        tracing::info!(seconds = load_time.as_secs_f64(), workers = options.workers, threads = options.threads, "local models loaded");
        if options.baseline {
            tracing::warn!("local models in baseline mode: the naive pipeline, for benchmarks only");
        }
        let pool = options.pool.clone().unwrap_or_else(|| InferencePool::new(options.workers));
        Ok(LocalModels { whisper, llama, piper, pool, baseline: options.baseline, load_time })
    }

    /// One call's providers: they share the models and the pool, and meter this
    /// call's waits for a worker.
    pub fn services(&self) -> (Arc<LocalStt>, Arc<LocalLlm>, Arc<LocalTts>) {
        (
            Arc::new(LocalStt { whisper: self.whisper.clone(), pool: self.pool.clone(), waits: WaitMeter::default(), baseline: self.baseline }),
            Arc::new(LocalLlm { llama: self.llama.clone(), pool: self.pool.clone(), waits: WaitMeter::default(), baseline: self.baseline }),
            Arc::new(LocalTts { piper: self.piper.clone(), pool: self.pool.clone(), waits: WaitMeter::default(), baseline: self.baseline }),
        )
    }

    pub fn pool(&self) -> &InferencePool {
        &self.pool
    }
}

/// The items a model job sends, as the stream a service trait returns.
fn receiver_stream<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> futures_util::stream::BoxStream<'static, T> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

fn pool_error(provider: &'static str, e: PoolError) -> ServiceError {
    ServiceError::Transient { provider, message: e.to_string() }
}
