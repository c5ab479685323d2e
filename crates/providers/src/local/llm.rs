//! SmolLM2-135M-Instruct behind [`Llm`]: tokens streamed from the pool as they are
//! generated. The model is too small to call tools, so it is offered none.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use voxgate_llama::{GenParams, Llama, Message, Role as LlamaRole};
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatRequest, Llm, LlmEvent, Role};

use crate::pool::{InferencePool, WaitMeter};

const PROVIDER: &str = "local-smollm2";
/// The longest reply the local model may write, whatever the assistant asks: a
/// voice answer is a few sentences.
const MAX_TOKENS: u32 = 256;

static SEED: AtomicU32 = AtomicU32::new(1);

/// One call's language model.
pub struct LocalLlm {
    pub(super) llama: Llama,
    pub(super) pool: InferencePool,
    pub(super) waits: WaitMeter,
    pub(super) baseline: bool,
}

impl Llm for LocalLlm {
    fn chat(&self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        let messages = to_messages(&request);
        let params = GenParams {
            max_tokens: request.max_tokens.clamp(1, MAX_TOKENS),
            temperature: if request.temperature.is_finite() { request.temperature.clamp(0.0, 2.0) as f32 } else { 0.0 },
            seed: SEED.fetch_add(1, Ordering::Relaxed),
            ..GenParams::default()
        };
        let (tx, rx) = mpsc::channel::<Result<LlmEvent, ServiceError>>(64);
        let (llama, pool, waits, baseline) = (self.llama.clone(), self.pool.clone(), self.waits.clone(), self.baseline);
        tokio::spawn(async move {
            let job_tx = tx.clone();
            let result = pool
                .run("llm", &waits, move |turn| {
                    let mut whole = String::new();
                    let stats = llama.generate(&messages, &params, |piece| {
                        if baseline {
                            whole.push_str(piece);
                            return !job_tx.is_closed();
                        }
                        // A dropped stream (the caller barged in) stops generation at once.
                        job_tx.blocking_send(Ok(LlmEvent::Token(piece.to_string()))).is_ok() && turn.yield_if_contended()
                    });
                    if baseline && !whole.is_empty() {
                        let _ = job_tx.blocking_send(Ok(LlmEvent::Token(whole)));
                    }
                    stats
                })
                .await;
            let last = match result {
                Ok(Ok(_stats)) => Ok(LlmEvent::Done),
                Ok(Err(e)) => Err(ServiceError::Invalid { provider: PROVIDER, message: e.to_string() }),
                Err(e) => Err(super::pool_error(PROVIDER, e)),
            };
            let _ = tx.send(last).await;
        });
        super::receiver_stream(rx)
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        Some(self.waits.take())
    }
}

/// The conversation as the local model reads it: tool traffic left out (it has no
/// tools), empty messages dropped.
fn to_messages(request: &ChatRequest) -> Vec<Message> {
    request
        .messages
        .iter()
        .filter(|m| !m.content.trim().is_empty())
        .filter_map(|m| {
            let role = match m.role {
                Role::System => LlamaRole::System,
                Role::User => LlamaRole::User,
                Role::Assistant => LlamaRole::Assistant,
                Role::Tool => return None,
            };
            Some(Message::new(role, m.content.clone()))
        })
        .collect()
}
