//! The runner: ordering, system frames skipping queues, interruption flushing,
//! backpressure, upstream never blocking, cancellation and errors. Paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use voxgate_frames::{Direction, Frame};
use voxgate_pipeline::harness::run;
use voxgate_pipeline::runner::Refused;
use voxgate_pipeline::{CancellationToken, Capacity, Outlet, Pipeline, PipelineError, Processor};

const DOWN: Direction = Direction::Downstream;
const UP: Direction = Direction::Upstream;

/// Forwards everything, taking `delay` over each data frame.
struct Slow {
    delay: Duration,
    interrupted: Arc<AtomicUsize>,
}

impl Processor for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if !frame.is_system() {
            tokio::time::sleep(self.delay).await;
        }
        out.push(frame, dir).await
    }

    fn interrupted(&mut self) {
        self.interrupted.fetch_add(1, Ordering::SeqCst);
    }
}

fn slow(ms: u64) -> (Slow, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    (Slow { delay: Duration::from_millis(ms), interrupted: n.clone() }, n)
}

fn text(s: &str) -> Frame {
    Frame::LlmText(s.into())
}

#[tokio::test(start_paused = true)]
async fn frames_keep_their_order_through_a_chain() {
    let frames: Vec<_> = (0..20).map(|i| (text(&i.to_string()), DOWN)).collect();
    let out = run(Pipeline::default().stage(slow(1).0).stage(slow(2).0).stage(slow(0).0), frames).await;
    let got: Vec<String> = out.down.iter().map(|f| match f { Frame::LlmText(t) => t.clone(), _ => panic!() }).collect();
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn system_frames_skip_queued_data() {
    let (p, _) = slow(100);
    let mut frames: Vec<_> = (0..5).map(|i| (text(&i.to_string()), DOWN)).collect();
    frames.push((Frame::UserStartedSpeaking, DOWN));
    let out = run(Pipeline::default().stage(p), frames).await;
    let pos = out.down.iter().position(|f| *f == Frame::UserStartedSpeaking).unwrap();
    assert!(pos < 5, "the system frame came out at {pos}, behind queued data: {:?}", out.down_names());
    assert_eq!(out.down.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn an_interruption_flushes_queued_data_but_not_system_frames() {
    let (p, interrupted) = slow(100);
    let mut frames: Vec<_> = (0..10).map(|i| (text(&i.to_string()), DOWN)).collect();
    frames.push((Frame::BotStartedSpeaking, DOWN));
    frames.push((Frame::Interruption, DOWN));
    let out = run(Pipeline::default().stage(p), frames).await;
    let data = out.down.iter().filter(|f| matches!(f, Frame::LlmText(_))).count();
    assert!(data < 10, "queued data survived the interruption: {:?}", out.down_names());
    assert!(out.down.contains(&Frame::BotStartedSpeaking));
    assert!(out.down.contains(&Frame::Interruption), "the interruption is forwarded");
    assert_eq!(interrupted.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn interruptions_travel_upstream_too() {
    let (a, ia) = slow(0);
    let (b, ib) = slow(0);
    let out = run(Pipeline::default().stage(a).stage(b), vec![(Frame::Interruption, UP)]).await;
    assert_eq!(out.up, vec![Frame::Interruption]);
    assert_eq!((ia.load(Ordering::SeqCst), ib.load(Ordering::SeqCst)), (1, 1));
}

/// Never reads its output: the pipeline's ends fill up.
#[tokio::test(start_paused = true)]
async fn a_stuck_consumer_fills_bounded_inboxes_and_no_more() {
    let cap = Capacity { system: 4, data: 2 };
    let mut io = Pipeline::new(cap).stage(slow(0).0).stage(slow(0).0).spawn(CancellationToken::new());
    let mut accepted = 0;
    for i in 0..10_000 {
        match io.head.try_send(text(&i.to_string())) {
            Ok(()) => accepted += 1,
            Err(Refused::Full) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(Refused::Closed) => panic!("closed"),
        }
    }
    // Two stages' inboxes, the frames each holds in hand, and the end channel: a
    // small constant, whatever was offered.
    assert!(accepted <= 2 * (cap.data + 1) + cap.system + cap.data + 2, "accepted {accepted}");
    io.shutdown().await.unwrap();
}

/// Pushes one frame upstream per data frame it sees, into an upstream end nobody reads.
struct Echo;

impl Processor for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if !frame.is_system() {
            out.up(Frame::Metric { stage: voxgate_frames::Stage::Stt, value: Duration::from_millis(1) }).await?;
        }
        out.push(frame, dir).await
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_pushes_never_block() {
    let mut io = Pipeline::new(Capacity { system: 4, data: 4 }).stage(Echo).spawn(CancellationToken::new());
    // Nobody reads io.upstream; 100 frames still all get through downstream.
    let feed = io.head.clone();
    tokio::spawn(async move {
        for i in 0..100 {
            feed.send(text(&i.to_string())).await.unwrap();
        }
    });
    let mut n = 0;
    while n < 100 {
        let (f, _) = tokio::time::timeout(Duration::from_secs(5), io.downstream.recv()).await.expect("not stuck").unwrap();
        assert!(matches!(f, Frame::LlmText(_)));
        n += 1;
    }
    io.shutdown().await.unwrap();
}

struct Fails;

impl Processor for Fails {
    fn name(&self) -> &'static str {
        "fails"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if matches!(frame, Frame::Say(_)) {
            return Err(PipelineError::Stage { stage: "fails", message: "boom".into() });
        }
        out.push(frame, dir).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_stage_cancels_the_pipeline_and_reports() {
    let cancel = CancellationToken::new();
    let mut io = Pipeline::default().stage(slow(0).0).stage(Fails).stage(slow(0).0).spawn(cancel.clone());
    io.head.send(Frame::Say("hi".into())).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), io.join()).await.expect("stages stop").unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(cancel.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_every_stage_even_mid_frame() {
    let mut io = Pipeline::default().stage(slow(3_600_000).0).stage(slow(0).0).spawn(CancellationToken::new());
    io.head.send(text("takes an hour")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await.expect("stops at once").unwrap();
}

struct Panics;

impl Processor for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if matches!(frame, Frame::Say(_)) {
            panic!("a bug in a stage (test)");
        }
        out.push(frame, dir).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_stage_cancels_the_pipeline_and_reports() {
    let cancel = CancellationToken::new();
    let mut io = Pipeline::default().stage(slow(0).0).stage(Panics).stage(slow(0).0).spawn(cancel.clone());
    io.head.send(Frame::Say("hi".into())).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), io.join()).await.expect("stages stop").unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(cancel.is_cancelled(), "the other stages were told to stop");
    // Every stage is gone: the ends see their channels close.
    assert!(tokio::time::timeout(Duration::from_secs(5), io.downstream.recv()).await.expect("closed").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_finished_or_dropped_pipeline_leaves_no_task_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let mut io = Pipeline::default().stage(slow(0).0).stage(slow(0).0).spawn(CancellationToken::new());
    assert!(metrics.num_alive_tasks() > before, "the stages and the watcher run");
    io.shutdown().await.unwrap();
    let io2 = Pipeline::default().stage(slow(3_600_000).0).spawn(CancellationToken::new());
    io2.head.send(text("takes an hour")).await.unwrap();
    drop(io2);
    drop(io);
    for _ in 0..100 {
        if metrics.num_alive_tasks() == before {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{} tasks left of {}", metrics.num_alive_tasks(), before);
}
