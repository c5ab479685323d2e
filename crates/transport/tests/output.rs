//! The output stage in a real pipeline, paused time, a channel for the socket:
//! real-time pacing, barge-in, what was spoken, slow clients, speaking events.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use voxgate_audio::SampleRate;
use voxgate_frames::{AudioFrame, EndReason, Frame, Stage};
use voxgate_pipeline::{CancellationToken, Pipeline, PipelineIo};
use voxgate_transport::protocol::Role;
use voxgate_transport::wire::WRITER_CAPACITY;
use voxgate_transport::{
    AudioFormat, Encoding, OutputConfig, OutputStage, ServerEvent, WireOut, pump_output,
    writer_channel,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A message as the client received it, and when.
#[derive(Debug)]
enum Got {
    Audio(Instant, usize),
    Event(Instant, ServerEvent),
}

impl Got {
    fn at(&self) -> Instant {
        match self {
            Got::Audio(t, _) | Got::Event(t, _) => *t,
        }
    }
}

struct Call {
    io: PipelineIo,
    got: mpsc::UnboundedReceiver<Got>,
}

/// The output stage alone in a pipeline, with a client reading everything at once.
fn call(cfg: OutputConfig) -> Call {
    let (tx, mut rx) = writer_channel();
    let io = Pipeline::default()
        .stage(OutputStage::new(cfg, tx))
        .spawn(CancellationToken::new());
    let (gtx, got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let now = Instant::now();
            let g = match m {
                WireOut::Binary(b) => Got::Audio(now, b.len()),
                WireOut::Text(s) => Got::Event(now, serde_json::from_str(&s).unwrap()),
                WireOut::Close(_) | WireOut::Ping => continue,
            };
            if gtx.send(g).is_err() {
                return;
            }
        }
    });
    Call { io, got }
}

fn tone(rate: u32, ms: u32) -> AudioFrame {
    let n = rate * ms / 1000;
    AudioFrame::new(
        (0..n)
            .map(|i| ((i % 50) as i16 - 25) * 400)
            .collect::<Vec<_>>(),
        rate,
    )
}

/// A reply: its start, one clause per text with `frames` chunks of `ms` each, its end.
fn reply(clauses: &[(&str, usize)], rate: u32, ms: u32) -> Vec<Frame> {
    let mut v = vec![Frame::LlmResponseStart];
    for (text, frames) in clauses {
        v.push(Frame::SpeechClause((*text).into()));
        v.extend((0..*frames).map(|_| Frame::OutputAudio(tone(rate, ms))));
    }
    v.push(Frame::LlmResponseEnd);
    v
}

fn feed(io: &PipelineIo, frames: Vec<Frame>) -> JoinHandle<()> {
    let head = io.head.clone();
    tokio::spawn(async move {
        for f in frames {
            if head.send(f).await.is_err() {
                return;
            }
        }
    })
}

/// Everything the client gets until nothing has come for `quiet`.
async fn collect(got: &mut mpsc::UnboundedReceiver<Got>, quiet: Duration) -> Vec<Got> {
    let mut v = Vec::new();
    while let Ok(Some(g)) = tokio::time::timeout(quiet, got.recv()).await {
        v.push(g);
    }
    v
}

fn drain(rx: &mut mpsc::Receiver<(Frame, voxgate_frames::Direction)>) -> Vec<Frame> {
    let mut v = Vec::new();
    while let Ok((f, _)) = rx.try_recv() {
        v.push(f);
    }
    v
}

fn audio_times(got: &[Got]) -> Vec<Instant> {
    got.iter()
        .filter_map(|g| {
            if let Got::Audio(t, _) = g {
                Some(*t)
            } else {
                None
            }
        })
        .collect()
}

fn events(got: &[Got]) -> Vec<&ServerEvent> {
    got.iter()
        .filter_map(|g| {
            if let Got::Event(_, e) = g {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

fn assert_paced(times: &[Instant]) {
    let t0 = times[0];
    for (k, t) in times.iter().enumerate() {
        let want = t0 + MS(20) * k as u32;
        let off = if *t > want { *t - want } else { want - *t };
        assert!(
            off <= MS(1),
            "frame {k} is {off:?} off its slot: no burst, no drift"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn audio_is_written_in_20ms_frames_at_20ms_intervals() {
    let mut c = call(OutputConfig::default());
    // The TTS hands over one second at once, as fast as it can.
    let t0 = Instant::now();
    feed(&c.io, reply(&[("Hello there.", 50)], 16_000, 20));
    let got = collect(&mut c.got, MS(500)).await;
    let times = audio_times(&got);
    assert_eq!(times.len(), 50);
    assert!(
        got.iter()
            .all(|g| !matches!(g, Got::Audio(_, n) if *n != 640)),
        "20 ms of PCM16 at 16 kHz each"
    );
    assert_eq!(times[0], t0, "the first frame goes at once");
    assert_paced(&times);
    // Events: started before the first frame, the clause as heard, stopped after the last frame played.
    let ev = events(&got);
    assert_eq!(ev[0], &ServerEvent::BotSpeechStarted);
    assert_eq!(
        ev[1],
        &ServerEvent::Transcript {
            role: Role::Assistant,
            text: "Hello there.".into(),
            is_final: true
        }
    );
    assert_eq!(ev[2], &ServerEvent::BotSpeechStopped);
    let stopped = got.last().unwrap().at();
    assert!(
        stopped >= times[49] + MS(20),
        "stopped once the last frame played"
    );
    c.io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn tts_audio_is_resampled_and_reframed_for_the_client() {
    // 24 kHz TTS in 30 ms chunks to a 48 kHz client: 20 ms frames of 960 samples.
    let cfg = OutputConfig {
        format: AudioFormat::pcm16(SampleRate::Hz48000),
        ..Default::default()
    };
    let mut c = call(cfg);
    feed(&c.io, reply(&[("One.", 10)], 24_000, 30));
    let got = collect(&mut c.got, MS(500)).await;
    let sizes: Vec<usize> = got
        .iter()
        .filter_map(|g| {
            if let Got::Audio(_, n) = g {
                Some(*n)
            } else {
                None
            }
        })
        .collect();
    // 300 ms of audio plus the resampler's ~1 ms tail, padded to a whole frame.
    assert!(sizes.len() == 15 || sizes.len() == 16, "{}", sizes.len());
    assert!(sizes.iter().all(|&n| n == 1920));
    assert_paced(&audio_times(&got));

    // mu-law at 8 kHz: 160 bytes a frame.
    let cfg = OutputConfig {
        format: AudioFormat::new(Encoding::Mulaw, 8000).unwrap(),
        ..Default::default()
    };
    let mut c = call(cfg);
    feed(&c.io, reply(&[("Two.", 10)], 16_000, 20));
    let got = collect(&mut c.got, MS(500)).await;
    let sizes: Vec<usize> = got
        .iter()
        .filter_map(|g| {
            if let Got::Audio(_, n) = g {
                Some(*n)
            } else {
                None
            }
        })
        .collect();
    assert!(
        sizes.len() >= 10 && sizes.iter().all(|&n| n == 160),
        "{sizes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_tts_restarts_the_schedule_instead_of_bursting() {
    let mut c = call(OutputConfig::default());
    let head = c.io.head.clone();
    tokio::spawn(async move {
        head.send(Frame::LlmResponseStart).await.unwrap();
        head.send(Frame::SpeechClause("a b".into())).await.unwrap();
        for _ in 0..5 {
            head.send(Frame::OutputAudio(tone(16_000, 20)))
                .await
                .unwrap();
        }
        tokio::time::sleep(MS(500)).await; // the TTS stalls
        for _ in 0..5 {
            head.send(Frame::OutputAudio(tone(16_000, 20)))
                .await
                .unwrap();
        }
        head.send(Frame::LlmResponseEnd).await.unwrap();
    });
    let got = collect(&mut c.got, MS(1000)).await;
    let times = audio_times(&got);
    assert_eq!(times.len(), 10);
    assert_paced(&times[..5]);
    assert_paced(&times[5..]);
    assert!(times[5] - times[4] >= MS(400));
}

#[tokio::test(start_paused = true)]
async fn an_interruption_stops_the_audio_within_a_frame_and_reports_what_was_heard() {
    // 18 characters spoken over 1.8 s: the estimate of the clause's length is exact.
    let cfg = OutputConfig {
        time_per_char: MS(100),
        ..Default::default()
    };
    let mut c = call(cfg);
    let text = "one two three four";
    feed(&c.io, reply(&[(text, 90)], 16_000, 20));
    // Let 45 frames (900 ms) reach the client, then barge in.
    let mut before = Vec::new();
    while audio_times(&before).len() < 45 {
        before.push(c.got.recv().await.unwrap());
    }
    let barge = Instant::now();
    c.io.head.send(Frame::Interruption).await.unwrap();
    let after = collect(&mut c.got, MS(3000)).await;
    let late = after
        .iter()
        .take_while(|g| matches!(g, Got::Audio(..)))
        .count();
    assert!(late <= 1, "{late} frames after the interruption");
    let rest = &after[late..];
    match &rest[0] {
        Got::Event(t, ServerEvent::Interruption) => {
            assert!(*t - barge <= MS(20), "within one frame")
        }
        other => panic!("the interruption event comes next: {other:?}"),
    }
    assert!(
        audio_times(rest).is_empty(),
        "no audio of the old reply after the interruption"
    );
    let ev = events(rest);
    assert_eq!(
        ev[1],
        &ServerEvent::Transcript {
            role: Role::Assistant,
            text: "one two".into(),
            is_final: true
        }
    );
    assert_eq!(ev[2], &ServerEvent::BotSpeechStopped);
    let up = drain(&mut c.io.upstream);
    assert_eq!(
        up,
        [
            Frame::BotStartedSpeaking,
            Frame::Spoken("one two".into()),
            Frame::BotStoppedSpeaking
        ]
    );
    let down = drain(&mut c.io.downstream);
    assert!(down.contains(&Frame::Interruption), "forwarded: {down:?}");

    // The next reply plays normally.
    feed(&c.io, reply(&[("Sorry, go on.", 5)], 16_000, 20));
    let got = collect(&mut c.got, MS(500)).await;
    assert_eq!(audio_times(&got).len(), 5);
    assert_eq!(
        drain(&mut c.io.upstream),
        [
            Frame::BotStartedSpeaking,
            Frame::Spoken("Sorry, go on.".into()),
            Frame::BotStoppedSpeaking
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stale_audio_after_an_interruption_is_dropped_until_the_next_clause() {
    let mut c = call(OutputConfig::default());
    let head = c.io.head.clone();
    head.send(Frame::LlmResponseStart).await.unwrap();
    head.send(Frame::SpeechClause("old".into())).await.unwrap();
    head.send(Frame::OutputAudio(tone(16_000, 20)))
        .await
        .unwrap();
    tokio::time::sleep(MS(10)).await;
    head.send(Frame::Interruption).await.unwrap();
    tokio::time::sleep(MS(10)).await;
    // A racing TTS worker pushes one more chunk of the old reply.
    head.send(Frame::OutputAudio(tone(16_000, 20)))
        .await
        .unwrap();
    head.send(Frame::SpeechClause("new".into())).await.unwrap();
    head.send(Frame::OutputAudio(tone(16_000, 20)))
        .await
        .unwrap();
    head.send(Frame::LlmResponseEnd).await.unwrap();
    let got = collect(&mut c.got, MS(500)).await;
    assert_eq!(
        audio_times(&got).len(),
        2,
        "the old frame and the new one; not the stale one"
    );
}

#[tokio::test(start_paused = true)]
async fn clauses_are_reported_spoken_as_each_finishes_playing() {
    let mut c = call(OutputConfig::default());
    let t0 = Instant::now();
    feed(
        &c.io,
        reply(&[("First clause,", 10), ("second clause.", 10)], 16_000, 20),
    );
    // After the first clause's 200 ms but before the second's end.
    tokio::time::sleep(MS(250)).await;
    assert_eq!(
        drain(&mut c.io.upstream),
        [
            Frame::BotStartedSpeaking,
            Frame::Spoken("First clause,".into())
        ]
    );
    tokio::time::sleep(MS(300)).await;
    assert_eq!(
        drain(&mut c.io.upstream),
        [
            Frame::Spoken("second clause.".into()),
            Frame::BotStoppedSpeaking
        ]
    );
    let got = collect(&mut c.got, MS(100)).await;
    assert!(got.iter().all(|g| g.at() - t0 <= MS(420)));
}

/// The client stops reading: the writer channel is never drained.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_ended_as_slow_with_bounded_memory() {
    let (tx, rx) = writer_channel();
    let mut io = Pipeline::default()
        .stage(OutputStage::new(OutputConfig::default(), tx))
        .spawn(CancellationToken::new());
    let t0 = Instant::now();
    // Ten seconds of reply audio.
    let feeding = feed(&io, reply(&[("A very long answer.", 500)], 16_000, 20));
    let end = loop {
        let (f, _) = tokio::time::timeout(Duration::from_secs(5), io.downstream.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(f, Frame::End(_)) {
            break f;
        }
    };
    let ended = t0.elapsed();
    assert_eq!(end, Frame::End(EndReason::SlowClient));
    assert!(
        ended >= Duration::from_secs(2) && ended <= MS(2200),
        "after the 2 s timeout: {ended:?}"
    );
    assert_eq!(
        rx.len(),
        WRITER_CAPACITY,
        "the writer holds a few frames, never more"
    );
    // The stage keeps consuming (dropping) so the pipeline does not stall behind it.
    tokio::time::timeout(Duration::from_secs(1), feeding)
        .await
        .expect("the rest of the reply is dropped at once")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(rx.len(), WRITER_CAPACITY);
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bot_started_and_stopped_bracket_each_reply_in_order() {
    let mut c = call(OutputConfig::default());
    let head = c.io.head.clone();
    let t0 = Instant::now();
    tokio::spawn(async move {
        head.send(Frame::LlmResponseStart).await.unwrap();
        head.send(Frame::SpeechClause("Hi.".into())).await.unwrap();
        // The first audio comes 300 ms after the reply starts.
        tokio::time::sleep(MS(300)).await;
        for f in reply(&[("There.", 3)], 16_000, 20).into_iter().skip(1) {
            head.send(f).await.unwrap();
        }
        for f in reply(&[("Second.", 3)], 16_000, 20) {
            head.send(f).await.unwrap();
        }
        head.send(Frame::End(EndReason::AssistantEnded))
            .await
            .unwrap();
    });
    let got = collect(&mut c.got, MS(500)).await;
    let first_audio = audio_times(&got)[0];
    assert_eq!(
        first_audio - t0,
        MS(300),
        "speaking starts with the audio, not the reply"
    );
    let up = drain(&mut c.io.upstream);
    let names: Vec<_> = up.iter().map(Frame::name).collect();
    assert_eq!(
        names,
        [
            "bot-started-speaking",
            "spoken",
            "bot-stopped-speaking",
            "bot-started-speaking",
            "spoken",
            "bot-stopped-speaking"
        ]
    );
    // "Hi." had no audio of its own: only what played is reported.
    assert_eq!(up[1], Frame::Spoken("There.".into()));
    let down: Vec<_> = drain(&mut c.io.downstream)
        .iter()
        .map(Frame::name)
        .collect::<Vec<_>>();
    assert_eq!(
        down,
        [
            "llm-response-start",
            "bot-started-speaking",
            "bot-stopped-speaking",
            "llm-response-end",
            "llm-response-start",
            "bot-started-speaking",
            "bot-stopped-speaking",
            "llm-response-end",
            "end"
        ]
    );
    let ev: Vec<_> = events(&got)
        .into_iter()
        .filter(|e| !matches!(e, ServerEvent::Transcript { .. }))
        .cloned()
        .collect();
    assert_eq!(
        ev,
        [
            ServerEvent::BotSpeechStarted,
            ServerEvent::BotSpeechStopped,
            ServerEvent::BotSpeechStarted,
            ServerEvent::BotSpeechStopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn passing_frames_become_client_events_and_metrics_reach_the_end() {
    let mut c = call(OutputConfig::default());
    let metric = Frame::Metric {
        stage: voxgate_frames::Stage::TtsFirstAudio,
        value: MS(120),
    };
    let frames = vec![
        Frame::UserStartedSpeaking,
        Frame::UserStoppedSpeaking,
        Frame::Transcript(voxgate_frames::Transcript {
            text: "hello".into(),
            is_final: true,
        }),
        Frame::ToolCall(voxgate_frames::ToolCall {
            id: "t".into(),
            name: "f".into(),
            arguments: serde_json::json!({}),
        }),
        metric.clone(),
    ];
    feed(&c.io, frames);
    let got = collect(&mut c.got, MS(100)).await;
    let ev: Vec<_> = events(&got).into_iter().cloned().collect();
    assert_eq!(ev[0], ServerEvent::SpeechStarted);
    assert_eq!(ev[1], ServerEvent::SpeechStopped);
    assert_eq!(
        ev[2],
        ServerEvent::Transcript {
            role: Role::User,
            text: "hello".into(),
            is_final: true
        }
    );
    assert!(matches!(&ev[3], ServerEvent::ToolCall { name, .. } if name == "f"));
    let down = drain(&mut c.io.downstream);
    assert_eq!(down.len(), 5);
    assert!(down.contains(&metric));
}

#[tokio::test(start_paused = true)]
async fn the_response_time_runs_from_the_turn_decision_to_the_first_frame_written() {
    let mut c = call(OutputConfig::default());
    // The turn was decided 30 ms before the reply's audio comes; one reply, then a
    // second one with no decision of its own (a greeting or a prompt): one metric.
    let decided = Instant::now();
    c.io.head.send(Frame::TurnEnded(decided.into_std())).await.unwrap();
    tokio::time::sleep(MS(30)).await;
    let mut frames = reply(&[("one", 3)], 16_000, 20);
    frames.extend(reply(&[("two", 3)], 16_000, 20));
    feed(&c.io, frames);
    let got = collect(&mut c.got, MS(500)).await;
    let first = audio_times(&got)[0];
    let down = drain(&mut c.io.downstream);
    let responses: Vec<Duration> = down
        .iter()
        .filter_map(|f| match f {
            Frame::Metric { stage: Stage::Response, value } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(responses, vec![first - decided], "one response time, to the first frame written");
    assert!(responses[0] >= MS(30), "{responses:?}");
    assert!(down.iter().any(|f| matches!(f, Frame::TurnEnded(_))), "the decision travels on");
}

#[tokio::test(start_paused = true)]
async fn first_audio_instant_is_published() {
    let (tx, mut rx) = writer_channel();
    let stage = OutputStage::new(OutputConfig::default(), tx);
    let mut first = stage.first_audio();
    let io = Pipeline::default()
        .stage(stage)
        .spawn(CancellationToken::new());
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let t0 = Instant::now();
    let head = io.head.clone();
    tokio::spawn(async move {
        tokio::time::sleep(MS(70)).await;
        for f in reply(&[("x", 2)], 16_000, 20) {
            head.send(f).await.unwrap();
        }
    });
    first.changed().await.unwrap();
    assert_eq!(first.borrow().unwrap() - t0, MS(70));
}

#[tokio::test(start_paused = true)]
async fn the_writer_pumps_to_a_sink_and_stops_after_close() {
    use std::sync::{Arc, Mutex};
    let written = Arc::new(Mutex::new(Vec::new()));
    let w = written.clone();
    let sink = Box::pin(futures_util::sink::unfold((), move |(), m: WireOut| {
        let w = w.clone();
        async move {
            w.lock().unwrap().push(m);
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    let (tx, rx) = writer_channel();
    let pump = tokio::spawn(pump_output(rx, sink));
    tx.send(WireOut::Text("a".into())).await.unwrap();
    tx.send(WireOut::Binary(vec![1, 2])).await.unwrap();
    tx.send(WireOut::Close(voxgate_transport::Close::new(1000, "bye")))
        .await
        .unwrap();
    pump.await.unwrap().unwrap();
    assert!(
        tx.send(WireOut::Text("late".into())).await.is_err(),
        "the writer stopped after the close"
    );
    assert_eq!(written.lock().unwrap().len(), 3);
}
