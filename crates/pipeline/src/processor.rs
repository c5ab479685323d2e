//! The processor trait: what one stage does with each frame, and the outlet it
//! pushes frames into.

use std::future::Future;

use tokio::sync::mpsc;
use voxgate_frames::{Direction, Frame};

use crate::{Envelope, PipelineError};

/// One stage of a pipeline. The runner calls [`Processor::process`] for every frame
/// that reaches the stage, in order (system frames first); the processor pushes
/// what it produces, and forwards what it does not consume, through the outlet.
pub trait Processor: Send + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Handles one frame.
    fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> impl Future<Output = Result<(), PipelineError>> + Send;

    /// An interruption reached this stage: its queued data and control frames are
    /// already dropped; cancel any work in flight. The interruption itself is then
    /// passed to [`Processor::process`] (which normally forwards it).
    fn interrupted(&mut self) {}
}

/// The two inboxes of a neighbouring stage (or of the pipeline's end).
#[derive(Clone, Debug)]
pub(crate) struct Inbox {
    pub(crate) system: mpsc::Sender<Envelope>,
    pub(crate) data: mpsc::Sender<Envelope>,
}

/// Where a stage pushes frames: its downstream and upstream neighbours. Cheap to
/// clone, so a processor may hand a clone to a task of its own (a streaming
/// request, say) and cancel that task on interruption.
#[derive(Clone, Debug)]
pub struct Outlet {
    pub(crate) down: Inbox,
    pub(crate) up: Inbox,
    pub(crate) stage: &'static str,
}

impl Outlet {
    /// Pushes a frame toward `dir`. Downstream, data and control frames wait for
    /// room (backpressure) and system frames too; upstream, nothing waits: a full
    /// inbox drops the frame and counts it (see the crate's doc on deadlocks).
    pub async fn push(&self, frame: Frame, dir: Direction) -> Result<(), PipelineError> {
        let inbox = match dir {
            Direction::Downstream => &self.down,
            Direction::Upstream => &self.up,
        };
        let tx = if frame.is_system() { &inbox.system } else { &inbox.data };
        match dir {
            Direction::Downstream => tx.send((frame, dir)).await.map_err(|_| PipelineError::Closed),
            Direction::Upstream => match tx.try_send((frame, dir)) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full((f, _))) => {
                    metrics::counter!("voxgate_pipeline_dropped_frames_total", "stage" => self.stage, "frame" => f.name()).increment(1);
                    tracing::warn!(stage = self.stage, frame = f.name(), "upstream inbox full; frame dropped");
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(PipelineError::Closed),
            },
        }
    }

    /// Pushes downstream.
    pub async fn down(&self, frame: Frame) -> Result<(), PipelineError> {
        self.push(frame, Direction::Downstream).await
    }

    /// Pushes upstream.
    pub async fn up(&self, frame: Frame) -> Result<(), PipelineError> {
        self.push(frame, Direction::Upstream).await
    }

    /// Pushes an interruption both ways (what a turn detector does on barge-in).
    pub async fn interrupt_both_ways(&self) -> Result<(), PipelineError> {
        self.up(Frame::Interruption).await?;
        self.down(Frame::Interruption).await
    }
}
