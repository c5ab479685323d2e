//! The pipeline runner. A call is a chain of stages (transport input, VAD and turn
//! detection, STT, context, LLM, TTS, transport output); each stage is a
//! [`Processor`] running in a task of its own, joined to its neighbours by bounded
//! channels. No I/O here: the transport and the services plug in as processors.
//!
//! Each stage has two inboxes, both bounded:
//! - system frames (see [`voxgate_frames::Category`]) are read first (a biased
//!   select), so they skip whatever data is queued;
//! - data and control frames wait their turn, and an [`Frame::Interruption`] drops
//!   every one still queued at that stage before the processor sees it.
//!
//! Backpressure without unbounded buffering: a stage pushing downstream waits for
//! room. Frames pushed upstream never wait (a full upstream inbox drops the frame
//! and counts it), so a stage blocked on its downstream neighbour can never be
//! waited on by it in turn, and the chain cannot deadlock. Cancellation is a
//! [`CancellationToken`] shared by every stage.
//!
//! # Layout
//! - [`processor`]: the [`Processor`] trait and the [`Outlet`] a stage pushes into.
//! - [`runner`]: building and running a chain; [`PipelineIo`] at its two ends.
//! - [`harness`]: running one processor with frames in and collecting frames out.

pub mod harness;
pub mod processor;
pub mod runner;

pub use processor::{Outlet, Processor};
pub use runner::{Pipeline, PipelineIo};
pub use tokio_util::sync::CancellationToken;
use voxgate_frames::Frame;

/// What can stop a stage.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The neighbour's inbox is gone: the pipeline is shutting down.
    #[error("the pipeline is closed")]
    Closed,
    /// A stage failed.
    #[error("{stage}: {message}")]
    Stage { stage: &'static str, message: String },
}

/// Inbox sizes. Data inboxes are short so that queued audio (and so barge-in
/// latency) stays small; system inboxes are longer since they carry input audio.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub system: usize,
    pub data: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { system: 128, data: 16 }
    }
}

/// A frame and its direction, as carried in an inbox.
pub type Envelope = (Frame, voxgate_frames::Direction);
