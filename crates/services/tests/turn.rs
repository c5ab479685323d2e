//! The turn-taking stage, driven through the real pipeline runner in paused time:
//! endpointing, barge-in and its rules, back-off, the silence timeout, the maximum
//! duration, hostile audio, and one run of earshot on real speech from espeak-ng.
//!
//! Timing tests use [`Loud`], a detector whose verdict the test writes into the audio
//! itself (loud samples are voiced, zeros are not), so every decision falls on a
//! known audio time. Since `InputAudio` and the stage's own frames leave the pipeline
//! through one channel in order, the audio forwarded before a frame tells the audio
//! time at which the stage produced it.

use std::time::Duration;

use tokio::time::Instant;
use voxgate_audio::resample::resample_all;
use voxgate_audio::wav::read_wav_file;
use voxgate_audio::{SampleRate, VadParams, VoiceDetector};
use voxgate_frames::{AudioFrame, Direction, EndReason, Frame, Stage, Transcript};
use voxgate_pipeline::harness::{Collected, run};
use voxgate_pipeline::{CancellationToken, Pipeline, PipelineIo};
use voxgate_services::turn::{STALL_GRACE, TurnConfig, TurnProcessor};

const DOWN: Direction = Direction::Downstream;
const UP: Direction = Direction::Upstream;
const RATE: u32 = 16_000;

/// 10 ms frames, voiced exactly when loud.
struct Loud;

impl VoiceDetector for Loud {
    fn frame_len(&self) -> usize {
        160
    }
    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz16000
    }
    fn confidence(&mut self, frame: &[i16]) -> f32 {
        let loud = frame.iter().filter(|s| s.unsigned_abs() >= 1000).count();
        if loud * 2 > frame.len() { 0.9 } else { 0.0 }
    }
    fn reset(&mut self) {}
}

/// Start 50 ms, stop 100 ms, endpointing 300 ms: a turn ends 400 ms after the voice.
fn config() -> TurnConfig {
    TurnConfig {
        vad: VadParams { confidence: 0.5, start_ms: 50, stop_ms: 100, min_volume: 0.01 },
        endpointing_ms: 300,
        interruptions_enabled: true,
        min_voiced_ms: 200,
        min_words: 0,
        backoff_ms: 0,
        silence_timeout: None,
        silence_prompt: "Are you still there?".into(),
        max_duration: None,
    }
}

fn stage(cfg: TurnConfig) -> Pipeline {
    Pipeline::default().stage(TurnProcessor::with_detector(Loud, cfg).unwrap())
}

fn frames(ms: u32, value: i16) -> Vec<(Frame, Direction)> {
    (0..ms / 20).map(|_| (Frame::InputAudio(AudioFrame::new(vec![value; 320], RATE)), DOWN)).collect()
}

fn speech(ms: u32) -> Vec<(Frame, Direction)> {
    frames(ms, 3000)
}

fn silence(ms: u32) -> Vec<(Frame, Direction)> {
    frames(ms, 0)
}

fn script(parts: Vec<Vec<(Frame, Direction)>>) -> Vec<(Frame, Direction)> {
    let mut all = vec![(Frame::Start, DOWN)];
    all.extend(parts.into_iter().flatten());
    all
}

fn up(frame: Frame) -> Vec<(Frame, Direction)> {
    vec![(frame, UP)]
}

fn partial(text: &str) -> Vec<(Frame, Direction)> {
    up(Frame::Transcript(Transcript { text: text.into(), is_final: false }))
}

fn count(frames: &[Frame], name: &str) -> usize {
    frames.iter().filter(|f| f.name() == name).count()
}

/// Audio time (ms) forwarded downstream before each frame named `name`.
fn audio_ms_at(out: &Collected, name: &str) -> Vec<u64> {
    let mut ms = 0;
    let mut at = Vec::new();
    for f in &out.down {
        match f {
            Frame::InputAudio(a) => ms += a.duration().as_millis() as u64,
            f if f.name() == name => at.push(ms),
            _ => {}
        }
    }
    at
}

/// Like [`run`], but lets the stage handle each frame before sending the next. The
/// runner takes system frames (audio) before data frames (transcripts), so when a
/// test needs a transcript between two stretches of audio, it must wait for it.
async fn run_in_order(pipeline: Pipeline, frames: Vec<(Frame, Direction)>) -> Collected {
    let mut io = pipeline.spawn(CancellationToken::new());
    let mut out = Collected::default();
    for (f, dir) in frames {
        match dir {
            DOWN => io.head.send(f).await.unwrap(),
            UP => io.tail.send(f).await.unwrap(),
        }
        // In paused time a sleep ends only once every other task is idle.
        tokio::time::sleep(Duration::from_millis(1)).await;
        while let Ok((f, dir)) = io.downstream.try_recv().or_else(|_| io.upstream.try_recv()) {
            match dir {
                DOWN => out.down.push(f),
                UP => out.up.push(f),
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    io.shutdown().await.unwrap();
    while let Ok((f, _)) = io.downstream.try_recv() {
        out.down.push(f);
    }
    while let Ok((f, _)) = io.upstream.try_recv() {
        out.up.push(f);
    }
    out
}

/// Samples in each `InputAudio` frame forwarded downstream, in order.
fn audio_sizes(out: &Collected) -> Vec<usize> {
    out.down
        .iter()
        .filter_map(|f| match f {
            Frame::InputAudio(a) => Some(a.samples.len()),
            _ => None,
        })
        .collect()
}

fn endpointing_metrics(out: &Collected) -> Vec<Duration> {
    out.down
        .iter()
        .filter_map(|f| match f {
            Frame::Metric { stage: Stage::Endpointing, value } => Some(*value),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn endpointing_fires_after_the_configured_silence() {
    let out = run(stage(config()), script(vec![silence(200), speech(500), silence(1000)])).await;
    // Voice from 200 ms; the VAD starts at 250, inside the 20 ms frame that ends at 260.
    assert_eq!(audio_ms_at(&out, "user-started-speaking"), [260]);
    assert_eq!(audio_ms_at(&out, "user-stopped-speaking"), [800]);
    // Voice ends at 700; the VAD stops 100 ms later; endpointing adds 300.
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [1100]);
    assert_eq!(endpointing_metrics(&out), [Duration::from_millis(400)]);
    let names = out.down_names();
    let eot = names.iter().position(|n| *n == "end-of-turn").unwrap();
    assert_eq!(names[eot - 2..eot], ["metric", "turn-ended"], "the metric and the decision's instant come just before the end of turn");
    assert_eq!(audio_sizes(&out).iter().sum::<usize>(), 85 * 320, "every audio sample is forwarded");
    assert_eq!(out.down[0], Frame::Start);
    assert!(out.up.is_empty(), "{:?}", out.up_names());
}

#[tokio::test(start_paused = true)]
async fn quiet_audio_goes_on_in_batches_and_the_rest_at_once() {
    let out = run(stage(config()), script(vec![silence(200), speech(500), silence(1000)])).await;
    // 0-200 ms: quiet, held and sent as one 200 ms piece. 200-1100 ms: the VAD is
    // busy or the end of turn is due, so every 20 ms frame goes on at once. After the
    // end of turn at 1100 ms: quiet again, three 200 ms pieces.
    let mut want = vec![3200];
    want.extend([320; 45]);
    want.extend([3200; 3]);
    assert_eq!(audio_sizes(&out), want);
    // The decisions still fall where the audio says (nothing held passes a frame).
    assert_eq!(audio_ms_at(&out, "user-started-speaking"), [260]);
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [1100]);
}

#[tokio::test(start_paused = true)]
async fn held_quiet_audio_goes_on_before_any_other_frame() {
    let mut frames = script(vec![silence(100)]);
    frames.push((Frame::UserText("hello".into()), DOWN));
    frames.extend(silence(60));
    let out = run_in_order(stage(config()), frames).await;
    assert_eq!(out.down_names()[..3], ["start", "input-audio", "user-text"]);
    // The 100 ms before the typed message went on with it; the last 60 ms are still
    // held when the pipeline stops (quiet audio of a call that is over).
    assert_eq!(audio_sizes(&out), [1600]);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_pause_is_not_an_end_of_turn() {
    let mut cfg = config();
    cfg.endpointing_ms = 500;
    let out = run(stage(cfg), script(vec![speech(500), silence(400), speech(500), silence(1000)])).await;
    // The VAD does stop during the pause, but speech resumes before endpointing ends.
    assert_eq!(count(&out.down, "user-stopped-speaking"), 2);
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [1400 + 100 + 500]);
    assert_eq!(endpointing_metrics(&out), [Duration::from_millis(600)]);
}

#[tokio::test(start_paused = true)]
async fn speech_resuming_right_at_the_deadline_holds_the_turn() {
    // The pause (380 ms) is 20 ms shorter than stop + endpointing (400 ms), but the VAD
    // only confirms the new speech start_ms (50 ms) after it resumes, past the deadline:
    // the stage waits for that verdict instead of ending the turn.
    let out = run(stage(config()), script(vec![speech(500), silence(380), speech(500), silence(1000)])).await;
    assert_eq!(count(&out.down, "end-of-turn"), 1);
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [1380 + 400]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_still_gets_an_end_of_turn() {
    let mut io = stage(config()).spawn(CancellationToken::new());
    io.head.send(Frame::Start).await.unwrap();
    for (f, _) in speech(500) {
        io.head.send(f).await.unwrap();
    }
    let sent = Instant::now();
    let (stopped, _) = recv_until(&mut io, |f| *f == Frame::UserStoppedSpeaking).await;
    let (eot, seen) = recv_until(&mut io, |f| *f == Frame::EndOfTurn).await;
    // The missing audio counts as silence once STALL_GRACE has passed.
    assert_eq!(stopped - sent, STALL_GRACE + Duration::from_millis(100 + 10));
    assert_eq!(eot - sent, STALL_GRACE + Duration::from_millis(400));
    assert!(seen.contains(&Frame::Metric { stage: Stage::Endpointing, value: Duration::from_millis(400) }), "{seen:?}");
    io.shutdown().await.unwrap();
}

/// Receives downstream frames until one matches; returns when, and what came before it.
async fn recv_until(io: &mut PipelineIo, pred: impl Fn(&Frame) -> bool) -> (Instant, Vec<Frame>) {
    let mut seen = Vec::new();
    loop {
        let (f, _) = tokio::time::timeout(Duration::from_secs(3600), io.downstream.recv())
            .await
            .expect("the frame came within the hour")
            .expect("the pipeline is open");
        if pred(&f) {
            return (Instant::now(), seen);
        }
        seen.push(f);
    }
}

/// Every downstream frame (with its arrival time) until the pipeline has been quiet for `quiet`.
async fn drain(io: &mut PipelineIo, quiet: Duration) -> Vec<(Instant, Frame)> {
    let mut got = Vec::new();
    while let Ok(Some((f, _))) = tokio::time::timeout(quiet, io.downstream.recv()).await {
        got.push((Instant::now(), f));
    }
    got
}

#[tokio::test(start_paused = true)]
async fn caller_speech_shorter_than_min_voiced_does_not_interrupt() {
    let out = run(stage(config()), script(vec![up(Frame::BotStartedSpeaking), speech(160), silence(1000)])).await;
    assert_eq!(count(&out.down, "user-started-speaking"), 1, "the VAD still reports it");
    assert_eq!(count(&out.down, "interruption") + count(&out.up, "interruption"), 0);
    assert_eq!(count(&out.down, "end-of-turn"), 0, "a backchannel under the bot is not a turn");
    assert_eq!(out.up, [Frame::BotStartedSpeaking], "bot speech events are forwarded upstream");
}

#[tokio::test(start_paused = true)]
async fn caller_speech_longer_than_min_voiced_interrupts_both_ways_once() {
    let out =
        run(stage(config()), script(vec![up(Frame::BotStartedSpeaking), silence(100), speech(800), silence(1000)]))
            .await;
    // 200 ms of voice from its first frame, at 100 ms.
    assert_eq!(audio_ms_at(&out, "interruption"), [300]);
    assert_eq!(out.up, [Frame::BotStartedSpeaking, Frame::Interruption]);
    // After yielding, the caller has the floor: the speech is a turn.
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [900 + 400]);
}

#[tokio::test(start_paused = true)]
async fn one_interruption_per_bot_utterance() {
    let bot = |f: Frame| up(f);
    let out = run(
        stage(config()),
        script(vec![
            bot(Frame::BotStartedSpeaking),
            speech(400),
            silence(200),
            speech(400),
            silence(600),
            bot(Frame::BotStoppedSpeaking),
            bot(Frame::BotStartedSpeaking),
            speech(400),
            silence(600),
        ]),
    )
    .await;
    assert_eq!(count(&out.up, "interruption"), 2, "{:?}", out.up_names());
    assert_eq!(count(&out.down, "interruption"), 2);
}

#[tokio::test(start_paused = true)]
async fn the_word_rule_holds_the_interruption_until_enough_words() {
    let mut cfg = config();
    cfg.min_words = 3;
    let out = run_in_order(
        stage(cfg),
        script(vec![
            up(Frame::BotStartedSpeaking),
            speech(600),
            partial("wait a"),
            speech(200),
            partial("wait a second"),
            silence(1000),
        ]),
    )
    .await;
    let names = out.up_names();
    assert_eq!(names, ["bot-started-speaking", "transcript", "transcript", "interruption"], "{names:?}");
    assert_eq!(audio_ms_at(&out, "interruption"), [800]);
    assert_eq!(count(&out.down, "end-of-turn"), 1);
}

#[tokio::test(start_paused = true)]
async fn words_without_enough_voice_do_not_interrupt() {
    let mut cfg = config();
    cfg.min_words = 1;
    let out = run_in_order(
        stage(cfg),
        script(vec![up(Frame::BotStartedSpeaking), speech(100), partial("no no no no"), silence(1000)]),
    )
    .await;
    assert_eq!(count(&out.up, "interruption"), 0, "{:?}", out.up_names());
}

#[tokio::test(start_paused = true)]
async fn words_arriving_after_the_voice_interrupt_and_end_the_turn() {
    let mut cfg = config();
    cfg.min_words = 2;
    let out = run_in_order(
        stage(cfg),
        script(vec![up(Frame::BotStartedSpeaking), speech(400), silence(200), partial("hold on"), silence(1000)]),
    )
    .await;
    assert_eq!(count(&out.up, "interruption"), 1);
    // The STT was late, not the caller: the turn ends endpointing_ms after the VAD stop.
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [500 + 300]);
}

#[tokio::test(start_paused = true)]
async fn interruptions_disabled_ignore_speech_under_the_bot() {
    let mut cfg = config();
    cfg.interruptions_enabled = false;
    let out = run(stage(cfg), script(vec![up(Frame::BotStartedSpeaking), speech(1000), silence(1000)])).await;
    assert_eq!(count(&out.down, "interruption") + count(&out.up, "interruption"), 0);
    assert_eq!(count(&out.down, "end-of-turn"), 0);
    assert_eq!(count(&out.down, "user-started-speaking"), 1);
    assert_eq!(count(&out.down, "user-stopped-speaking"), 1);
}

#[tokio::test(start_paused = true)]
async fn speech_that_outlasts_the_bot_is_a_turn() {
    let mut cfg = config();
    cfg.interruptions_enabled = false;
    let out = run(
        stage(cfg),
        script(vec![
            up(Frame::BotStartedSpeaking),
            speech(500),
            up(Frame::BotStoppedSpeaking),
            speech(500),
            silence(1000),
        ]),
    )
    .await;
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [1000 + 400]);
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_the_next_end_of_turn() {
    let mut cfg = config();
    cfg.backoff_ms = 1500;
    let out = run(stage(cfg), script(vec![up(Frame::BotStartedSpeaking), speech(400), silence(2000)])).await;
    assert_eq!(audio_ms_at(&out, "interruption"), [200]);
    // Without the back-off it would come at 400 + 400.
    assert_eq!(audio_ms_at(&out, "end-of-turn"), [200 + 1500]);
    assert_eq!(endpointing_metrics(&out), [Duration::from_millis(1300)]);
}

fn timed(cfg: TurnConfig) -> PipelineIo {
    stage(cfg).spawn(CancellationToken::new())
}

#[tokio::test(start_paused = true)]
async fn silence_prompts_then_ends_the_call() {
    let mut cfg = config();
    cfg.silence_timeout = Some(Duration::from_secs(5));
    let mut io = timed(cfg);
    let t0 = Instant::now();
    io.head.send(Frame::Start).await.unwrap();
    let got = drain(&mut io, Duration::from_secs(60)).await;
    let got: Vec<_> = got.into_iter().map(|(at, f)| (at - t0, f)).collect();
    assert_eq!(
        got,
        [
            (Duration::ZERO, Frame::Start),
            (Duration::from_secs(5), Frame::Say("Are you still there?".into())),
            (Duration::from_secs(10), Frame::End(EndReason::SilenceTimeout)),
        ]
    );
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_caller_answering_the_prompt_resets_the_silence() {
    let mut cfg = config();
    cfg.silence_timeout = Some(Duration::from_secs(5));
    let mut io = timed(cfg);
    let t0 = Instant::now();
    io.head.send(Frame::Start).await.unwrap();
    recv_until(&mut io, |f| matches!(f, Frame::Say(_))).await;
    // The bot says the prompt for 2 s; 1 s later the caller answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    io.tail.send(Frame::BotStartedSpeaking).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    io.tail.send(Frame::BotStoppedSpeaking).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (f, _) in script(vec![speech(500), silence(500)]).into_iter().skip(1) {
        io.head.send(f).await.unwrap();
    }
    let answered = Instant::now();
    let (_, _) = recv_until(&mut io, |f| *f == Frame::EndOfTurn).await;
    // A fresh timeout from the caller's stop (wall clock, at about `answered`): first
    // the prompt again, not the end.
    let (said, _) = recv_until(&mut io, |f| matches!(f, Frame::Say(_))).await;
    let waited = said - answered;
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}");
    let (ended, _) = recv_until(&mut io, |f| matches!(f, Frame::End(_))).await;
    assert_eq!(ended - said, Duration::from_secs(5));
    assert!(said - t0 > Duration::from_secs(13));
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn silence_timeout_waits_while_the_bot_speaks() {
    let mut cfg = config();
    cfg.silence_timeout = Some(Duration::from_secs(5));
    let mut io = timed(cfg);
    io.head.send(Frame::Start).await.unwrap();
    io.tail.send(Frame::BotStartedSpeaking).await.unwrap();
    let got = drain(&mut io, Duration::from_secs(20)).await;
    assert_eq!(got.into_iter().map(|(_, f)| f).collect::<Vec<_>>(), [Frame::Start], "nothing while the bot speaks");
    io.tail.send(Frame::BotStoppedSpeaking).await.unwrap();
    let stopped = Instant::now();
    let (said, _) = recv_until(&mut io, |f| matches!(f, Frame::Say(_))).await;
    assert_eq!(said - stopped, Duration::from_secs(5));
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_duration_ends_the_call() {
    let mut cfg = config();
    cfg.max_duration = Some(Duration::from_secs(60));
    let mut io = timed(cfg);
    let t0 = Instant::now();
    io.head.send(Frame::Start).await.unwrap();
    // The caller talks all along; the limit holds anyway.
    let head = io.head.clone();
    let talker = tokio::spawn(async move {
        loop {
            for (f, _) in speech(1000) {
                if head.send(f).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (ended, _) = recv_until(&mut io, |f| matches!(f, Frame::End(_))).await;
    assert_eq!(ended - t0, Duration::from_secs(60));
    talker.abort();
    let after = drain(&mut io, Duration::from_secs(120)).await;
    assert!(
        !after.iter().any(|(_, f)| matches!(f, Frame::Say(_) | Frame::End(_) | Frame::EndOfTurn)),
        "no turns, prompts or ends after the end"
    );
    io.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_timer_task_ends_with_the_stage() {
    let mut cfg = config();
    cfg.silence_timeout = Some(Duration::from_secs(5));
    cfg.max_duration = Some(Duration::from_secs(60));
    for cancel_frame in [true, false] {
        let mut io = timed(cfg.clone());
        io.head.send(Frame::Start).await.unwrap();
        if cancel_frame {
            io.head.send(Frame::Cancel(EndReason::CustomerEnded)).await.unwrap();
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            io.cancel.cancel();
        }
        // The downstream end closes only once every outlet is gone, the timer task's too.
        let rest = tokio::time::timeout(Duration::from_secs(1), async {
            let mut rest = Vec::new();
            while let Some((f, _)) = io.downstream.recv().await {
                rest.push(f);
            }
            rest
        })
        .await
        .expect("the timer task ended");
        assert!(!rest.iter().any(|f| matches!(f, Frame::Say(_) | Frame::End(_))), "{rest:?}");
        io.join().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_audio_is_survived() {
    let wrong = |rate: u32, n: usize| (Frame::InputAudio(AudioFrame::new(vec![3000i16; n], rate)), DOWN);
    let odd: Vec<_> =
        (0..8000 / 7).map(|_| (Frame::InputAudio(AudioFrame::new(vec![3000i16; 7], RATE)), DOWN)).collect(); // ~500 ms of speech in 7-sample frames
    let out = run(
        stage(config()),
        script(vec![
            vec![(Frame::InputAudio(AudioFrame::new(Vec::<i16>::new(), RATE)), DOWN)],
            vec![wrong(48_000, 960), wrong(48_000, 960), wrong(48_000, 960)],
            vec![wrong(0, 320), wrong(16_000, 0)],
            odd,
            vec![wrong(8_000, 160)],
            silence(1000),
        ]),
    )
    .await;
    let errors: Vec<_> = out.up.iter().filter(|f| matches!(f, Frame::Error { fatal: false, .. })).collect();
    assert_eq!(errors.len(), 3, "one error per run of bad frames: {errors:?}");
    let Frame::Error { message, .. } = errors[0] else { unreachable!() };
    assert!(message.contains("48000") && message.contains("16000"), "{message}");
    assert!(
        out.down.iter().all(|f| !matches!(f, Frame::InputAudio(a) if a.rate != RATE)),
        "audio at a wrong rate is not passed on"
    );
    assert_eq!(count(&out.down, "end-of-turn"), 1, "{:?}", out.down_names());
    assert_eq!(endpointing_metrics(&out), [Duration::from_millis(400)]);
}

#[test]
fn bad_vad_parameters_are_an_error() {
    let mut cfg = config();
    cfg.vad.confidence = 1.5;
    assert!(TurnProcessor::with_detector(Loud, cfg.clone()).is_err());
    assert!(TurnProcessor::new(cfg).is_err());
    assert!(TurnProcessor::new(TurnConfig::default()).is_ok());
}

/// "hello there" from espeak-ng at 16 kHz, after 1 s and before 2 s of silence.
/// Returns the audio and where the speech ends (ms).
fn spoken() -> (Vec<i16>, u64) {
    let path = std::env::temp_dir().join(format!("voxgate-turn-{}.wav", std::process::id()));
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg("hello there")
        .status()
        .expect("espeak-ng is needed for this test (apt-get install espeak-ng)");
    assert!(status.success());
    let wav = read_wav_file(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let speech = resample_all(wav.rate, RATE, &wav.samples).unwrap();
    let last_loud = speech.iter().rposition(|s| s.unsigned_abs() > 300).unwrap_or(0);
    let mut audio = vec![0i16; RATE as usize];
    audio.extend_from_slice(&speech);
    audio.extend(std::iter::repeat_n(0, 2 * RATE as usize));
    (audio, 1000 + last_loud as u64 * 1000 / u64::from(RATE))
}

#[tokio::test(start_paused = true)]
async fn earshot_on_real_speech_ends_exactly_one_turn() {
    let (audio, speech_end_ms) = spoken();
    let cfg = TurnConfig { silence_timeout: None, max_duration: None, ..TurnConfig::default() };
    let mut frames = vec![(Frame::Start, DOWN)];
    frames.extend(audio.chunks(320).map(|c| (Frame::InputAudio(AudioFrame::new(c.to_vec(), RATE)), DOWN)));
    let out = run(Pipeline::default().stage(TurnProcessor::new(cfg.clone()).unwrap()), frames).await;
    println!("{:?}, speech ends at {speech_end_ms} ms", audio_ms_at(&out, "end-of-turn"));
    assert_eq!(count(&out.down, "user-started-speaking"), 1, "{:?}", audio_ms_at(&out, "user-started-speaking"));
    let [eot] = audio_ms_at(&out, "end-of-turn")[..] else { panic!("expected one end of turn") };
    let after = u64::from(cfg.vad.stop_ms + cfg.endpointing_ms);
    assert!(eot >= speech_end_ms + after - 100 && eot <= speech_end_ms + after + 300, "end of turn at {eot}");
}
