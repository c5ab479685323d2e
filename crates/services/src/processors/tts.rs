//! The text-to-speech stage. Clauses are spoken one after another by a worker task
//! of the stage's own, so the stage keeps reading its inbox (and so sees an
//! interruption at once) while a clause is being synthesized. Frames that must stay
//! in order with the audio (the end of a reply) go through the worker's queue too.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use voxgate_frames::{AudioFrame, Direction, Frame, Stage};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

use super::TaskSlot;
use crate::tts::Tts;

/// Clauses waiting for synthesis; a reply rarely has more.
const QUEUE: usize = 32;

enum Job {
    Clause(String),
    /// Forwarded downstream after the audio queued before it.
    Forward(Frame),
}

pub struct TtsStage {
    tts: Arc<dyn Tts>,
    queue: Option<mpsc::Sender<Job>>,
    worker: TaskSlot,
}

impl TtsStage {
    pub fn new(tts: Arc<dyn Tts>) -> TtsStage {
        TtsStage { tts, queue: None, worker: TaskSlot::default() }
    }

    fn queue(&mut self, out: &Outlet) -> mpsc::Sender<Job> {
        if let Some(q) = &self.queue
            && self.worker.is_running()
        {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.worker.set(super::spawn_worker("speech synthesis", out.clone(), work(self.tts.clone(), rx, out.clone())));
        self.queue = Some(tx.clone());
        tx
    }

    async fn enqueue(&mut self, job: Job, out: &Outlet) -> Result<(), PipelineError> {
        self.queue(out).send(job).await.map_err(|_| PipelineError::Closed)
    }
}

impl Processor for TtsStage {
    fn name(&self) -> &'static str {
        "tts"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        match (frame, dir) {
            (Frame::TtsText(text), Direction::Downstream) => self.enqueue(Job::Clause(text), out).await,
            (frame @ (Frame::LlmResponseStart | Frame::LlmResponseEnd | Frame::End(_)), Direction::Downstream) => {
                self.enqueue(Job::Forward(frame), out).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }

    fn interrupted(&mut self) {
        // The worker and its queue go; the next clause starts a fresh one.
        self.worker.cancel();
        self.queue = None;
    }
}

async fn work(tts: Arc<dyn Tts>, mut rx: mpsc::Receiver<Job>, out: Outlet) {
    let rate = tts.sample_rate();
    let frame_len = (rate as usize / 50).max(1);
    // The first clause of a reply reports its time to first audio.
    let mut first_of_reply = true;
    while let Some(job) = rx.recv().await {
        let res = match job {
            Job::Forward(frame) => {
                if matches!(frame, Frame::LlmResponseStart) {
                    first_of_reply = true;
                }
                out.down(frame).await
            }
            Job::Clause(text) => {
                let started = Instant::now();
                let mut stream = tts.synthesize(text.clone());
                let mut res = out.down(Frame::SpeechClause(text)).await;
                while res.is_ok() {
                    match stream.next().await {
                        Some(Ok(samples)) if samples.is_empty() => {}
                        Some(Ok(samples)) => {
                            if first_of_reply {
                                first_of_reply = false;
                                res = out.down(Frame::Metric { stage: Stage::TtsFirstAudio, value: started.elapsed() }).await;
                            }
                            if let Some(wait) = tts.take_queue_wait().filter(|w| !w.is_zero())
                                && res.is_ok()
                            {
                                res = out.down(Frame::Metric { stage: Stage::QueueWait, value: wait }).await;
                            }
                            // 20 ms frames: the output stage paces one frame per step, so an
                            // interruption waits behind at most one frame, whatever the
                            // synthesizer's chunk size.
                            for frame in samples.chunks(frame_len) {
                                if res.is_err() {
                                    break;
                                }
                                res = out.down(Frame::OutputAudio(AudioFrame::new(frame, rate))).await;
                            }
                        }
                        Some(Err(e)) => {
                            e.log("speech synthesis");
                            res = out.up(Frame::Error { code: e.code(), message: e.to_string(), fatal: false }).await;
                            break;
                        }
                        None => break,
                    }
                }
                res
            }
        };
        if res.is_err() {
            return;
        }
    }
}
