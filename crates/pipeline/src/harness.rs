//! Runs processors with frames in and collects the frames out, both ways, as
//! Pipecat's `run_test` does. For tests of processors and of the runner itself.

use voxgate_frames::{Direction, Frame};

use crate::runner::Pipeline;
use crate::{CancellationToken, Envelope};

/// The frames that left a pipeline, by direction, in order.
#[derive(Debug, Default)]
pub struct Collected {
    pub down: Vec<Frame>,
    pub up: Vec<Frame>,
}

impl Collected {
    /// Names of the downstream frames, for compact assertions.
    pub fn down_names(&self) -> Vec<&'static str> {
        self.down.iter().map(Frame::name).collect()
    }

    pub fn up_names(&self) -> Vec<&'static str> {
        self.up.iter().map(Frame::name).collect()
    }
}

/// Feeds `frames` (each with its direction: downstream frames enter at the head,
/// upstream ones at the tail) into `pipeline`, and collects everything that comes
/// out until nothing has for `quiet` after the last frame went in. Meant for
/// paused tokio time, where the wait costs nothing.
pub async fn run(pipeline: Pipeline, frames: Vec<Envelope>) -> Collected {
    run_until_quiet(pipeline, frames, std::time::Duration::from_secs(2)).await
}

/// [`run`] with a chosen quiet period.
pub async fn run_until_quiet(pipeline: Pipeline, frames: Vec<Envelope>, quiet: std::time::Duration) -> Collected {
    let mut io = pipeline.spawn(CancellationToken::new());
    let (head, tail) = (io.head.clone(), io.tail.clone());
    let feed = tokio::spawn(async move {
        for (frame, dir) in frames {
            let r = match dir {
                Direction::Downstream => head.send(frame).await,
                Direction::Upstream => tail.send(frame).await,
            };
            if r.is_err() {
                break;
            }
        }
    });
    let mut out = Collected::default();
    let mut down_open = true;
    let mut up_open = true;
    let stop = io.cancel.clone();
    let feeders_done = async {
        let _ = feed.await;
    };
    tokio::pin!(feeders_done);
    let mut fed = false;
    // Keep draining both ends; once everything is fed and the stages go quiet,
    // cancel and collect what is left.
    loop {
        tokio::select! {
            Some((f, _)) = io.downstream.recv(), if down_open => out.down.push(f),
            Some((f, _)) = io.upstream.recv(), if up_open => out.up.push(f),
            _ = &mut feeders_done, if !fed => fed = true,
            _ = tokio::time::sleep(quiet), if fed => {
                stop.cancel();
                down_open = false;
                up_open = false;
            }
            else => break,
        }
        if !down_open && !up_open {
            break;
        }
    }
    let _ = io.join().await;
    while let Ok((f, _)) = io.downstream.try_recv() {
        out.down.push(f);
    }
    while let Ok((f, _)) = io.upstream.try_recv() {
        out.up.push(f);
    }
    out
}
