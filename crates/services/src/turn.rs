//! The turn-taking stage: the first stage of a call's pipeline, right after the
//! transport. Caller audio (16 kHz `InputAudio`) goes through the VAD state machine
//! and on down to speech to text unchanged; this stage adds what the audio means for
//! the conversation:
//! - `UserStartedSpeaking` / `UserStoppedSpeaking` from the VAD;
//! - `Metric(Endpointing)` then `EndOfTurn` once the caller has been quiet for
//!   `endpointing_ms` after the VAD's stop (a shorter pause is not the end of a turn);
//! - barge-in: while the bot speaks (`BotStartedSpeaking` / `BotStoppedSpeaking`
//!   arriving upstream from the output stage), caller speech that passes the
//!   interruption rule (voiced time, and words from the STT's partial transcripts,
//!   also arriving upstream) yields an `Interruption` both ways, once per bot utterance;
//! - timeouts: a silence prompt (`Say`), then `End(SilenceTimeout)`; `End(MaxDuration)`.
//!
//! # Two clocks
//! Endpointing runs on audio time (samples fed to the VAD), so a call fed from a file
//! at full speed decides exactly as a live one does, and tests are exact. A client may
//! stop sending audio altogether (muted, push-to-talk), so a timer task also watches
//! the wall clock: once no audio has arrived for [`STALL_GRACE`], the missing audio
//! is fed to the VAD as silence, and the turn ends as if the caller had gone quiet.
//! The silence timeout and the maximum duration are wall-clock timers in the same
//! task, since they must fire while no frames arrive.
//!
//! # Quiet audio travels in batches
//! While nothing is pending on the audio clock (the VAD is quiet and no end of turn
//! is due), the audio is silence for the transcriber's pre-roll (or the quiet tail of
//! speech that did not make a turn), so it goes on down in pieces of [`HOLD_MS`]
//! instead of 20 ms frames: a tenth of the hand-offs between
//! tasks for most of a call. Anything else this stage sends downstream (a speech
//! start, an end of turn, a typed message) first sends what is held, so the order
//! downstream is the caller's. Only the timer task's prompts and call ends, which
//! have no order with quiet audio, can overtake it.
//!
//! The decisions live in one synchronous state machine (`Core`) behind a mutex,
//! shared by [`TurnProcessor::process`] and the timer task; neither holds the lock
//! across an await. The timer task sleeps until the next deadline (there is no
//! polling) and is woken through a [`Notify`] when a frame brings a deadline closer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use voxgate_audio::{AudioError, EarshotDetector, VadEvent, VadMachine, VadParams, VadState, VoiceDetector};
use voxgate_frames::{AudioFrame, Direction, EndReason, Frame, Stage};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

/// How long input audio may stop arriving before the gap counts as silence. Longer
/// than the jitter of a client sending 20 ms frames, short enough that a client that
/// stops sending mid-turn still gets a timely answer.
pub const STALL_GRACE: Duration = Duration::from_millis(200);

/// Longest run of quiet input audio held before it is sent on as one frame (see the
/// module doc). Shorter than the transcriber's 300 ms pre-roll, which it fills.
pub const HOLD_MS: u32 = 200;

/// Silence fed to the VAD when audio stalls, a slice at a time.
static ZEROS: [i16; 1024] = [0; 1024];

/// Turn-taking settings for one call. The agent fills it from the assistant's
/// endpointing, interruption and timeout settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// The VAD state machine's tuning (confidence, start and stop times, volume floor).
    pub vad: VadParams,
    /// Silence after the VAD's stop before the caller's turn is over.
    pub endpointing_ms: u32,
    /// Whether caller speech may interrupt the bot. When off, speech that starts while
    /// the bot speaks does not make a turn.
    pub interruptions_enabled: bool,
    /// Voiced time the caller needs, in one utterance while the bot speaks, before the
    /// bot yields. Counted from the first voiced frame, so it may be below the VAD's
    /// `start_ms`; never less than one detector frame.
    pub min_voiced_ms: u32,
    /// Words the caller's latest transcript arriving upstream (the STT's partials)
    /// needs before the bot yields (0: no word rule).
    pub min_words: u32,
    /// After an interruption, no `EndOfTurn` until this much (audio) time has passed.
    pub backoff_ms: u32,
    /// Caller silence (while the bot is not speaking) before [`TurnConfig::silence_prompt`]
    /// is said, and as long again before the call ends. `None` or zero: never.
    pub silence_timeout: Option<Duration>,
    /// What the assistant says after the first silence timeout.
    pub silence_prompt: String,
    /// Longest the call may last, from `Start`. `None` or zero: no limit.
    pub max_duration: Option<Duration>,
}

impl Default for TurnConfig {
    /// The VAD's defaults; 500 ms endpointing; interruptions on after 300 ms of voice,
    /// no word rule, no back-off; a prompt after 30 s of silence; at most 10 minutes
    /// (the assistant defaults).
    fn default() -> Self {
        TurnConfig {
            vad: VadParams::default(),
            endpointing_ms: 500,
            interruptions_enabled: true,
            min_voiced_ms: 300,
            min_words: 0,
            backoff_ms: 0,
            silence_timeout: Some(Duration::from_secs(30)),
            silence_prompt: "Are you still there?".into(),
            max_duration: Some(Duration::from_secs(600)),
        }
    }
}

/// The turn-taking stage. Generic over the [`VoiceDetector`] so that tests can
/// choose which frames are voiced; [`TurnProcessor::new`] uses earshot.
pub struct TurnProcessor<D: VoiceDetector + 'static = EarshotDetector> {
    core: Arc<Mutex<Core<D>>>,
    /// Wakes the timer task when a frame brings a deadline closer than the one it sleeps to.
    wake: Arc<Notify>,
    /// The only input rate the detector accepts.
    rate: u32,
    /// Whether the timer task was started (on the first frame); never restarted.
    spawned: bool,
    /// Cancels the timer task on `Cancel`, or when the stage ends and drops this.
    timers: Option<DropGuard>,
    /// The rate of the current run of rejected audio frames: one error per run, not
    /// one per frame (50 a second).
    bad_rate: Option<u32>,
    /// Quiet input audio not yet sent on (see the module doc).
    held: Vec<i16>,
}

impl TurnProcessor<EarshotDetector> {
    /// The stage with the earshot VAD. Fails on out-of-range VAD parameters.
    pub fn new(config: TurnConfig) -> Result<Self, AudioError> {
        Self::with_detector(EarshotDetector::new(), config)
    }
}

impl<D: VoiceDetector + 'static> TurnProcessor<D> {
    /// The stage over any detector (which sets the input rate).
    pub fn with_detector(detector: D, config: TurnConfig) -> Result<Self, AudioError> {
        let rate = detector.sample_rate().hz();
        let vad = VadMachine::new(detector, config.vad)?;
        Ok(TurnProcessor {
            core: Arc::new(Mutex::new(Core::new(vad, config))),
            wake: Arc::new(Notify::new()),
            rate,
            spawned: false,
            timers: None,
            bad_rate: None,
            held: Vec::new(),
        })
    }

    /// Samples of quiet audio held before they are sent on.
    fn hold_len(&self) -> usize {
        (self.rate * HOLD_MS / 1000) as usize
    }

    /// Sends the held quiet audio on, as one frame.
    async fn release(&mut self, out: &Outlet) -> Result<(), PipelineError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let room = self.hold_len();
        let samples = std::mem::replace(&mut self.held, Vec::with_capacity(room));
        out.down(Frame::InputAudio(AudioFrame::new(samples, self.rate))).await
    }

    /// Runs `f` on the state machine; returns the frames it produced, and wakes the
    /// timer task if its next deadline moved closer.
    fn step(&self, f: impl FnOnce(&mut Core<D>, Instant)) -> Vec<Action> {
        let now = Instant::now();
        let mut core = lock(&self.core);
        f(&mut core, now);
        let next = core.next_deadline();
        if next.is_some_and(|n| core.armed.is_none_or(|a| n < a)) {
            self.wake.notify_one();
        }
        std::mem::take(&mut core.actions)
    }

    fn spawn_timers(&mut self, out: &Outlet) {
        self.spawned = true;
        let cancel = CancellationToken::new();
        tokio::spawn(run_timers(self.core.clone(), self.wake.clone(), out.clone(), cancel.clone()));
        self.timers = Some(cancel.drop_guard());
    }
}

impl<D: VoiceDetector + 'static> std::fmt::Debug for TurnProcessor<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnProcessor").field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl<D: VoiceDetector + 'static> Processor for TurnProcessor<D> {
    fn name(&self) -> &'static str {
        "turn"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if !self.spawned && !matches!(frame, Frame::Cancel(_)) {
            self.spawn_timers(out);
        }
        let down = dir == Direction::Downstream;
        let actions = match &frame {
            Frame::InputAudio(audio) if down => {
                if audio.rate != self.rate {
                    if self.bad_rate.replace(audio.rate) != Some(audio.rate) {
                        tracing::warn!(rate = audio.rate, "input audio at the wrong rate; skipped");
                        let message = format!("input audio at {} Hz; expected {} Hz", audio.rate, self.rate);
                        out.up(Frame::Error { code: "bad-audio-rate", message, fatal: false }).await?;
                    }
                    return Ok(());
                }
                self.bad_rate = None;
                let mut idle = false;
                let actions = self.step(|c, now| {
                    c.audio(&audio.samples, now);
                    idle = c.idle();
                });
                if idle && actions.is_empty() {
                    self.held.extend_from_slice(&audio.samples);
                    if self.held.len() >= self.hold_len() {
                        self.release(out).await?;
                    }
                    return Ok(());
                }
                actions
            }
            Frame::Start => self.step(|c, now| c.start(now)),
            Frame::BotStartedSpeaking => self.step(|c, _| c.bot_started()),
            Frame::BotStoppedSpeaking => self.step(|c, now| c.bot_stopped(now)),
            Frame::Transcript(t) if !down => self.step(|c, _| c.heard(t.text.split_whitespace().count())),
            Frame::UserText(_) if down => self.step(|c, now| c.typed(now)),
            Frame::End(_) if down => self.step(|c, _| c.ended()),
            Frame::Cancel(_) => {
                self.timers = None;
                Vec::new()
            }
            _ => Vec::new(),
        };
        if down {
            self.release(out).await?;
        }
        out.push(frame, dir).await?;
        apply(actions, out).await
    }
}

/// What the state machine asks the stage to push.
#[derive(Debug)]
enum Action {
    Down(Frame),
    /// `Interruption` both ways.
    Interrupt,
}

async fn apply(actions: Vec<Action>, out: &Outlet) -> Result<(), PipelineError> {
    for action in actions {
        match action {
            Action::Down(Frame::EndOfTurn) => {
                out.down(Frame::TurnEnded(tokio::time::Instant::now().into_std())).await?;
                out.down(Frame::EndOfTurn).await?
            }
            Action::Down(frame) => out.down(frame).await?,
            Action::Interrupt => out.interrupt_both_ways().await?,
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoned only if a previous holder panicked; the state is still consistent
    // enough to finish the call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The timer task: sleeps until the state machine's next wall-clock deadline (or a
/// wake), lets it act, pushes what it produced. Ends on cancel or a closed pipeline.
async fn run_timers<D: VoiceDetector + 'static>(
    core: Arc<Mutex<Core<D>>>,
    wake: Arc<Notify>,
    out: Outlet,
    cancel: CancellationToken,
) {
    loop {
        let (actions, next) = {
            let now = Instant::now();
            let mut c = lock(&core);
            c.on_timer(now);
            // A deadline already past would spin; the state machine clears what it
            // handles, so this guard only matters if that ever breaks.
            let next = c.next_deadline().map(|n| n.max(now + Duration::from_millis(1)));
            c.armed = next;
            (std::mem::take(&mut c.actions), next)
        };
        if apply(actions, &out).await.is_err() {
            return;
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// The turn-taking state machine. Audio times are in samples at the detector's rate.
struct Core<D: VoiceDetector> {
    vad: VadMachine<D>,
    events: Vec<VadEvent>,
    rate: u64,
    frame_len: u64,
    endpointing: u64,
    min_voiced: u64,
    backoff: u64,
    stop: u64,
    min_words: usize,
    interruptions: bool,
    silence_timeout: Option<Duration>,
    silence_prompt: String,
    max_duration: Option<Duration>,

    /// Audio clock: samples fed to the VAD, real and (after a stall) silence.
    clock: u64,
    /// The clock after the last real audio, and when it arrived.
    anchor: Option<(u64, Instant)>,
    /// End of the last voiced detector frame (audio time).
    last_voiced_end: u64,
    /// Where the last `SpeechStopped` fell (audio time).
    last_stop: Option<u64>,
    /// Whether the caller's current utterance is a turn (not ignored bot-time speech).
    counts: bool,
    /// Audio time at which the caller's turn ends, unless speech resumes.
    endpoint: Option<u64>,
    /// No `EndOfTurn` before this audio time (the interruption back-off).
    backoff_until: u64,

    bot_speaking: bool,
    /// The bot yielded to the caller during its current utterance.
    yielded: bool,
    /// Voiced samples in the caller's current utterance while the bot speaks, and the
    /// most in any utterance during this bot utterance.
    voiced_run: u64,
    longest_voiced: u64,
    /// Words in the latest partial transcript.
    words: usize,

    started: Option<Instant>,
    /// Since when the caller and the bot have both been silent.
    silence_since: Option<Instant>,
    prompted: bool,
    /// An `End` went by: no more turns, prompts or timeouts.
    done: bool,

    /// Frames for the stage to push, in order.
    actions: Vec<Action>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
}

impl<D: VoiceDetector> Core<D> {
    fn new(vad: VadMachine<D>, cfg: TurnConfig) -> Self {
        let rate = u64::from(vad.detector().sample_rate().hz());
        let frame_len = vad.detector().frame_len() as u64;
        let ms = |v: u32| u64::from(v) * rate / 1000;
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Core {
            events: Vec::with_capacity(2),
            rate,
            frame_len,
            endpointing: ms(cfg.endpointing_ms),
            min_voiced: ms(cfg.min_voiced_ms).max(frame_len),
            backoff: ms(cfg.backoff_ms),
            stop: ms(cfg.vad.stop_ms),
            min_words: cfg.min_words as usize,
            interruptions: cfg.interruptions_enabled,
            silence_timeout: nonzero(cfg.silence_timeout),
            silence_prompt: cfg.silence_prompt,
            max_duration: nonzero(cfg.max_duration),
            vad,
            clock: 0,
            anchor: None,
            last_voiced_end: 0,
            last_stop: None,
            counts: false,
            endpoint: None,
            backoff_until: 0,
            bot_speaking: false,
            yielded: false,
            voiced_run: 0,
            longest_voiced: 0,
            words: 0,
            started: None,
            silence_since: None,
            prompted: false,
            done: false,
            actions: Vec::new(),
            armed: None,
        }
    }

    fn samples(&self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64
    }

    /// Rounded up, so that `samples(duration(n)) >= n` and a timer set from it never
    /// wakes a hair too early.
    fn duration(&self, samples: u64) -> Duration {
        Duration::from_nanos((u128::from(samples) * 1_000_000_000).div_ceil(u128::from(self.rate)) as u64)
    }

    fn start(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.silence_since = Some(now);
        }
    }

    /// Real caller audio.
    fn audio(&mut self, samples: &[i16], now: Instant) {
        if samples.is_empty() {
            return;
        }
        self.feed(samples, now);
        self.anchor = Some((self.clock, now));
        self.check_endpoint(self.clock);
    }

    /// Feeds the VAD, stopping at each detector frame's end to act on it.
    fn feed(&mut self, mut samples: &[i16], now: Instant) {
        while !samples.is_empty() {
            let room = (self.frame_len - self.clock % self.frame_len) as usize;
            let (piece, rest) = samples.split_at(room.min(samples.len()));
            self.vad.push(piece, &mut self.events);
            self.clock += piece.len() as u64;
            samples = rest;
            if self.clock.is_multiple_of(self.frame_len) {
                self.frame_done(now);
            }
        }
    }

    fn frame_done(&mut self, now: Instant) {
        let t = self.clock;
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                VadEvent::SpeechStarted { .. } => self.speech_started(),
                VadEvent::SpeechStopped { .. } => self.speech_stopped(t, now),
                _ => {}
            }
        }
        self.events = events;
        match self.vad.state() {
            VadState::Starting | VadState::Speaking => {
                self.last_voiced_end = t;
                if self.bot_speaking {
                    self.voiced_run += self.frame_len;
                    self.longest_voiced = self.longest_voiced.max(self.voiced_run);
                }
            }
            VadState::Quiet => self.voiced_run = 0,
            VadState::Stopping => {}
        }
        self.check_interruption(t);
        self.check_endpoint(t);
    }

    fn speech_started(&mut self) {
        // Speech resuming cancels a pending end of turn, and continues that turn.
        let continuing = self.endpoint.take().is_some();
        self.counts = continuing || !self.bot_speaking || self.yielded;
        self.silence_since = None;
        self.prompted = false;
        self.actions.push(Action::Down(Frame::UserStartedSpeaking));
    }

    fn speech_stopped(&mut self, t: u64, now: Instant) {
        self.actions.push(Action::Down(Frame::UserStoppedSpeaking));
        self.last_stop = Some(t);
        if std::mem::take(&mut self.counts) {
            self.endpoint = Some(t + self.endpointing);
        }
        if !self.bot_speaking {
            self.silence_since = Some(now);
        }
    }

    fn check_interruption(&mut self, t: u64) {
        if !self.interruptions || !self.bot_speaking || self.yielded || self.done {
            return;
        }
        if self.longest_voiced < self.min_voiced || self.words < self.min_words {
            return;
        }
        self.yielded = true;
        self.backoff_until = t + self.backoff;
        metrics::counter!("voxgate_interruptions_total").increment(1);
        tracing::debug!(audio_ms = t * 1000 / self.rate, "caller barged in; the bot yields");
        self.actions.push(Action::Interrupt);
        if self.vad.state() == VadState::Quiet {
            // The words came after the caller stopped: the turn ends from that stop.
            if self.endpoint.is_none() {
                self.endpoint = Some(self.last_stop.unwrap_or(t) + self.endpointing);
            }
        } else {
            self.counts = true;
        }
    }

    /// Ends the turn if its deadline has passed at audio time `now`. While the VAD is
    /// deciding whether speech has resumed (starting), the decision waits for it.
    fn check_endpoint(&mut self, now: u64) {
        let Some(deadline) = self.endpoint else { return };
        if self.done {
            self.endpoint = None;
            return;
        }
        if now < deadline.max(self.backoff_until) || self.vad.state() == VadState::Starting {
            return;
        }
        self.endpoint = None;
        let value = self.duration(now.saturating_sub(self.last_voiced_end));
        tracing::debug!(?value, "end of turn");
        self.actions.push(Action::Down(Frame::Metric { stage: Stage::Endpointing, value }));
        self.actions.push(Action::Down(Frame::EndOfTurn));
    }

    fn bot_started(&mut self) {
        self.bot_speaking = true;
        self.yielded = false;
        self.voiced_run = 0;
        self.longest_voiced = 0;
        self.words = 0;
        self.silence_since = None;
    }

    fn bot_stopped(&mut self, now: Instant) {
        self.bot_speaking = false;
        if self.vad.state().is_speaking() {
            // The caller talks on after the bot finished: that is a turn.
            self.counts = true;
        } else {
            self.silence_since = Some(now);
        }
    }

    fn heard(&mut self, words: usize) {
        self.words = words;
        self.check_interruption(self.clock);
    }

    fn typed(&mut self, now: Instant) {
        self.prompted = false;
        if !self.bot_speaking {
            self.silence_since = Some(now);
        }
    }

    fn ended(&mut self) {
        self.done = true;
        self.endpoint = None;
    }

    /// Nothing is pending on the audio clock: the audio is quiet and decides nothing.
    fn idle(&self) -> bool {
        self.vad.state() == VadState::Quiet && self.endpoint.is_none()
    }

    /// How far the audio clock must run before nothing is pending on it: until the
    /// VAD is quiet and the end of turn is decided.
    fn audio_needed(&self) -> u64 {
        let mut need = self.clock;
        if self.vad.state() != VadState::Quiet {
            need = need.max(self.clock + self.stop + self.frame_len);
        }
        if let Some(deadline) = self.endpoint {
            need = need.max(deadline.max(self.backoff_until));
        }
        need
    }

    fn on_timer(&mut self, now: Instant) {
        if let Some((at_audio, at_wall)) = self.anchor {
            let stall = at_wall + STALL_GRACE;
            if now > stall && self.audio_needed() > self.clock {
                // Audio stopped arriving: what is missing counts as silence.
                let target = at_audio + self.samples(now - stall);
                loop {
                    let upto = target.min(self.audio_needed());
                    if self.clock >= upto {
                        break;
                    }
                    let n = (upto - self.clock).min(ZEROS.len() as u64) as usize;
                    self.feed(&ZEROS[..n], now);
                }
                self.check_endpoint(self.clock.max(target));
            }
        }
        if self.done {
            return;
        }
        if let (Some(timeout), Some(since)) = (self.silence_timeout, self.silence_since)
            && now >= since + timeout
        {
            if self.prompted {
                self.end(EndReason::SilenceTimeout);
                return;
            }
            self.prompted = true;
            self.silence_since = Some(now);
            self.actions.push(Action::Down(Frame::Say(self.silence_prompt.clone())));
        }
        if let (Some(max), Some(started)) = (self.max_duration, self.started)
            && now >= started + max
        {
            self.end(EndReason::MaxDuration);
        }
    }

    fn end(&mut self, reason: EndReason) {
        tracing::debug!(reason = reason.as_str(), "ending the call");
        self.ended();
        self.actions.push(Action::Down(Frame::End(reason)));
    }

    /// The next wall-clock instant at which [`Core::on_timer`] has something to do.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        if let Some((at_audio, at_wall)) = self.anchor {
            let need = self.audio_needed();
            if need > self.clock {
                consider(at_wall + STALL_GRACE + self.duration(need.saturating_sub(at_audio)));
            }
        }
        if !self.done {
            if let (Some(timeout), Some(since)) = (self.silence_timeout, self.silence_since) {
                consider(since + timeout);
            }
            if let (Some(max), Some(started)) = (self.max_duration, self.started) {
                consider(started + max);
            }
        }
        next
    }
}
