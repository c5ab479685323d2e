//! The pipeline stages around each service. Each stage owns one concern; see the
//! pipeline in `voxgate_frames`'s doc for their order and the frames between them.
//!
//! - [`stt::SttStage`]: captures the caller's utterance and transcribes it.
//! - [`llm::LlmStage`]: owns the conversation and streams the model's replies.
//! - [`clauses::ClauseStage`]: cuts replies into clauses.
//! - [`tts::TtsStage`]: speaks clauses, one after another, without blocking the stage.

pub mod clauses;
pub mod llm;
pub mod stt;
pub mod tts;

/// Spawns a stage's worker. A panic in it (a provider's bug) must not leave the
/// call waiting for a reply that will never come: it becomes a fatal error, sent
/// upstream, and the call ends (the panic itself is reported by the panic hook).
pub(crate) fn spawn_worker<F>(what: &'static str, out: voxgate_pipeline::Outlet, fut: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use futures_util::FutureExt;
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(fut).catch_unwind().await.is_err() {
            tracing::error!(worker = what, "a worker panicked; ending the call");
            let message = format!("the {what} failed unexpectedly");
            let _ = out.up(voxgate_frames::Frame::Error { code: "stage-failed", message, fatal: true }).await;
        }
    })
}

/// Aborts a spawned task when dropped, so a stage that ends (or is cancelled)
/// never leaves work running behind it.
#[derive(Debug, Default)]
pub(crate) struct TaskSlot(Option<tokio::task::JoinHandle<()>>);

impl TaskSlot {
    pub(crate) fn set(&mut self, h: tokio::task::JoinHandle<()>) {
        self.cancel();
        self.0 = Some(h);
    }

    pub(crate) fn cancel(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.cancel();
    }
}
