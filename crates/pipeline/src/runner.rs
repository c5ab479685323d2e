//! Building and running a chain of stages.

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use voxgate_frames::{Direction, Frame};

use crate::processor::{Inbox, Outlet, Processor};
use crate::{Capacity, Envelope, PipelineError};

type Spawner = Box<dyn FnOnce(StageWiring, &mut JoinSet<Result<(), PipelineError>>) -> AbortHandle + Send>;

/// What the runner hands one stage: its inboxes and its outlet.
pub(crate) struct StageWiring {
    system: mpsc::Receiver<Envelope>,
    data: mpsc::Receiver<Envelope>,
    out: Outlet,
    /// Cancelled by a failing stage. Stages do not watch it: the pipeline's watcher
    /// task aborts them all when it is cancelled (see [`Pipeline::spawn`]).
    cancel: CancellationToken,
}

/// A chain of stages, not yet running.
pub struct Pipeline {
    stages: Vec<(&'static str, Spawner)>,
    capacity: Capacity,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new(Capacity::default())
    }
}

impl Pipeline {
    pub fn new(capacity: Capacity) -> Pipeline {
        Pipeline { stages: Vec::new(), capacity }
    }

    /// Appends a stage (downstream of the previous ones).
    pub fn stage<P: Processor>(mut self, p: P) -> Pipeline {
        let name = p.name();
        self.stages.push((
            name,
            Box::new(move |w: StageWiring, set: &mut JoinSet<Result<(), PipelineError>>| {
                set.spawn(async move {
                    // A stage that panics takes the whole pipeline down with it (its
                    // call ends as a pipeline error), never leaves it half alive.
                    let cancel = w.cancel.clone();
                    match std::panic::AssertUnwindSafe(run_stage(p, w)).catch_unwind().await {
                        Ok(res) => res,
                        Err(_) => {
                            tracing::error!(stage = name, "a stage panicked; cancelling the pipeline");
                            cancel.cancel();
                            Err(PipelineError::Stage { stage: name, message: "panicked".into() })
                        }
                    }
                })
            }),
        ));
        self
    }

    /// Starts a task per stage and returns the two ends.
    pub fn spawn(self, cancel: CancellationToken) -> PipelineIo {
        let cap = self.capacity;
        let n = self.stages.len();
        // The ends: one channel each, used for both system and data frames.
        let (down_tx, down_rx) = mpsc::channel(cap.system + cap.data);
        let (up_tx, up_rx) = mpsc::channel(cap.system + cap.data);
        let end_down = Inbox { system: down_tx.clone(), data: down_tx };
        let end_up = Inbox { system: up_tx.clone(), data: up_tx };

        let mut inboxes = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (stx, srx) = mpsc::channel(cap.system);
            let (dtx, drx) = mpsc::channel(cap.data);
            inboxes.push(Inbox { system: stx, data: dtx });
            receivers.push((srx, drx));
        }
        let head = inboxes.first().cloned().unwrap_or_else(|| end_down.clone());
        let tail = inboxes.last().cloned().unwrap_or_else(|| end_up.clone());

        let mut tasks = JoinSet::new();
        let mut handles = Vec::with_capacity(n);
        for (i, ((name, spawn), (system, data))) in self.stages.into_iter().zip(receivers).enumerate() {
            let down = inboxes.get(i + 1).cloned().unwrap_or_else(|| end_down.clone());
            let up = if i == 0 { end_up.clone() } else { inboxes[i - 1].clone() };
            let out = Outlet { down, up, stage: name };
            handles.push(spawn(StageWiring { system, data, out, cancel: cancel.clone() }, &mut tasks));
        }
        // One watcher per pipeline stops every stage when the token is cancelled, at
        // its next await, as a stage watching the token itself would. A stage loop
        // that polled the token took its mutex twice per frame (about 3 % of a
        // loaded server's CPU). `PipelineIo` cancels the token when dropped, so the
        // watcher always ends.
        let watched = cancel.clone();
        tokio::spawn(async move {
            watched.cancelled().await;
            for h in handles {
                h.abort();
            }
        });
        PipelineIo {
            head: Feeder { inbox: head, dir: Direction::Downstream },
            tail: Feeder { inbox: tail, dir: Direction::Upstream },
            downstream: down_rx,
            upstream: up_rx,
            cancel,
            tasks,
        }
    }
}

/// Pushes frames into one end of a pipeline.
#[derive(Clone, Debug)]
pub struct Feeder {
    inbox: Inbox,
    dir: Direction,
}

/// Why [`Feeder::try_send`] did not deliver.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl Feeder {
    /// Sends, waiting for room.
    pub async fn send(&self, frame: Frame) -> Result<(), PipelineError> {
        let tx = if frame.is_system() { &self.inbox.system } else { &self.inbox.data };
        tx.send((frame, self.dir)).await.map_err(|_| PipelineError::Closed)
    }

    /// Sends without waiting: the transport uses this for caller audio, which must
    /// never stall reading the socket (a full inbox drops the frame).
    pub fn try_send(&self, frame: Frame) -> Result<(), Refused> {
        let tx = if frame.is_system() { &self.inbox.system } else { &self.inbox.data };
        tx.try_send((frame, self.dir)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        })
    }
}

/// A running pipeline's two ends.
pub struct PipelineIo {
    /// Feeds the first stage, downstream.
    pub head: Feeder,
    /// Feeds the last stage, upstream.
    pub tail: Feeder,
    /// Frames that left the last stage downstream.
    pub downstream: mpsc::Receiver<Envelope>,
    /// Frames that left the first stage upstream.
    pub upstream: mpsc::Receiver<Envelope>,
    pub cancel: CancellationToken,
    tasks: JoinSet<Result<(), PipelineError>>,
}

impl Drop for PipelineIo {
    fn drop(&mut self) {
        // Ends the watcher task (the stages themselves end with the `JoinSet`).
        self.cancel.cancel();
    }
}

impl PipelineIo {
    /// Waits for every stage to stop; the first stage error, if any.
    pub async fn join(&mut self) -> Result<(), PipelineError> {
        let mut first = Ok(());
        while let Some(res) = self.tasks.join_next().await {
            let res = match res {
                Ok(res) => res,
                // Stopped by the watcher: a cancelled stage returns, as before.
                Err(e) if e.is_cancelled() && self.cancel.is_cancelled() => Ok(()),
                Err(e) => Err(PipelineError::Stage { stage: "task", message: e.to_string() }),
            };
            if first.is_ok() && res.is_err() {
                first = res;
            }
        }
        first
    }

    /// Cancels every stage and waits for them.
    pub async fn shutdown(&mut self) -> Result<(), PipelineError> {
        self.cancel.cancel();
        self.join().await
    }
}

async fn run_stage<P: Processor>(mut p: P, w: StageWiring) -> Result<(), PipelineError> {
    let StageWiring { mut system, mut data, out, cancel } = w;
    let name = p.name();
    loop {
        let (frame, dir) = tokio::select! {
            biased;
            Some(env) = system.recv() => env,
            Some(env) = data.recv() => env,
            else => return Ok(()),
        };
        if matches!(frame, Frame::Interruption) {
            let mut dropped = 0u64;
            while data.try_recv().is_ok() {
                dropped += 1;
            }
            if dropped > 0 {
                metrics::counter!("voxgate_pipeline_flushed_frames_total", "stage" => name).increment(dropped);
            }
            p.interrupted();
        }
        let last = matches!(frame, Frame::Cancel(_));
        match p.process(frame, dir, &out).await {
            Ok(()) if last => return Ok(()),
            Ok(()) => {}
            Err(PipelineError::Closed) => return Ok(()),
            Err(e) => {
                tracing::error!(stage = name, error = %e, "stage failed; cancelling the pipeline");
                cancel.cancel();
                return Err(e);
            }
        }
    }
}
