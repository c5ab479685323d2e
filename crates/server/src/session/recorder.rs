//! Turns a call's frames into its record: one row per turn, written as the turn
//! completes (so a crash loses at most the turn in progress), with the assistant's
//! words as played and the reply's latency breakdown.
//!
//! A user turn completes with its final transcript (or typed text), or with the
//! failure of its transcription (a turn without words, saying why). An assistant
//! turn starts when its first audio plays and completes when the bot stops
//! speaking, interrupted or not; its text is what the output reported as `Spoken`.
//! Its latency: endpointing, STT, LLM first token and TTS first audio from the
//! stages' `Metric` frames, and voice-to-voice from the end of the caller's speech
//! to `BotStartedSpeaking`: the endpointing time (measured by the turn stage from
//! the last voiced audio) plus the time from its decision to the first audio. (The
//! VAD reports `UserStoppedSpeaking` only after its own stop time, so counting from
//! that frame would leave the VAD's delay out.)

use std::time::{Duration, Instant};

use voxgate_domain::call::{CallTurn, TurnError, TurnLatency, TurnRole};
use voxgate_frames::{Frame, Stage};

/// Builds turn records from frames. Pure: no I/O, no clock of its own.
#[derive(Debug)]
pub struct TurnRecorder {
    start: Instant,
    next_idx: i64,
    latency: TurnLatency,
    user_stopped: Option<Instant>,
    /// When the end of the caller's turn was decided, with the endpointing time.
    turn_decided: Option<(Instant, Duration)>,
    reply: Option<Reply>,
}

#[derive(Debug)]
struct Reply {
    started_ms: i64,
    text: String,
    interrupted: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl TurnRecorder {
    pub fn new(start: Instant) -> TurnRecorder {
        TurnRecorder { start, next_idx: 0, latency: TurnLatency::default(), user_stopped: None, turn_decided: None, reply: None }
    }

    fn offset(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.start).as_millis() as i64
    }

    fn turn(&mut self, role: TurnRole, text: String, started_ms: i64, interrupted: bool, latency: TurnLatency) -> CallTurn {
        let idx = self.next_idx;
        self.next_idx += 1;
        CallTurn { idx, role, text, started_ms, interrupted, latency, error: None }
    }

    /// Where a spoken user turn starts: when the caller stopped speaking, else `now`.
    fn user_started(&self, now: Instant) -> i64 {
        self.user_stopped.map(|t| self.offset(t)).unwrap_or_else(|| self.offset(now))
    }

    /// Feeds one frame seen at `now`; returns the turns it completed.
    pub fn on_frame(&mut self, frame: &Frame, now: Instant) -> Option<CallTurn> {
        match frame {
            Frame::UserStoppedSpeaking => {
                self.user_stopped = Some(now);
                None
            }
            Frame::Metric { stage, value } => {
                let v = Some(ms(*value));
                match stage {
                    Stage::Endpointing => {
                        self.latency.endpointing_ms = v;
                        self.turn_decided = Some((now, *value));
                    }
                    Stage::Stt => self.latency.stt_ms = v,
                    Stage::LlmFirstToken => self.latency.llm_first_token_ms = v,
                    Stage::TtsFirstAudio => self.latency.tts_first_audio_ms = v,
                    Stage::QueueWait => self.latency.queue_wait_ms = Some(self.latency.queue_wait_ms.unwrap_or(0.0) + ms(*value)),
                    Stage::Retrieval => self.latency.retrieval_ms = v,
                    Stage::VoiceToVoice => self.latency.voice_to_voice_ms = v,
                    Stage::Response => {
                        self.latency.response_ms = v;
                        // Measured where it happens, so better than the times this
                        // recorder sees the frames at.
                        if let Some(endpointing) = self.latency.endpointing_ms {
                            self.latency.voice_to_voice_ms = Some(endpointing + ms(*value));
                        }
                    }
                }
                None
            }
            Frame::Transcript(t) if t.is_final && !t.text.trim().is_empty() => {
                let started = self.user_started(now);
                Some(self.turn(TurnRole::User, t.text.trim().to_string(), started, false, TurnLatency::default()))
            }
            Frame::TranscriptionFailed { code, message } => {
                let started = self.user_started(now);
                let mut turn = self.turn(TurnRole::User, String::new(), started, false, TurnLatency::default());
                turn.error = Some(TurnError { code: (*code).to_string(), message: message.clone() });
                Some(turn)
            }
            Frame::UserText(text) if !text.trim().is_empty() => {
                self.user_stopped = Some(now);
                let started = self.offset(now);
                Some(self.turn(TurnRole::User, text.trim().to_string(), started, false, TurnLatency::default()))
            }
            Frame::BotStartedSpeaking => {
                if self.reply.is_none() {
                    let stopped = self.user_stopped.take();
                    match self.turn_decided.take() {
                        // The output's own measure came first (it travels down, this
                        // frame up through every stage): it is the better one.
                        Some(_) if self.latency.response_ms.is_some() => {}
                        Some((at, endpointing)) => {
                            self.latency.voice_to_voice_ms = Some(ms(endpointing + now.saturating_duration_since(at)));
                        }
                        // Typed text: no speech to end, so from the moment it arrived.
                        None => {
                            if let Some(stopped) = stopped {
                                self.latency.voice_to_voice_ms = Some(ms(now.saturating_duration_since(stopped)));
                            }
                        }
                    }
                    self.reply = Some(Reply { started_ms: self.offset(now), text: String::new(), interrupted: false });
                }
                None
            }
            Frame::Spoken(text) => {
                if let Some(r) = &mut self.reply {
                    if !r.text.is_empty() && !text.is_empty() {
                        r.text.push(' ');
                    }
                    r.text.push_str(text.trim());
                }
                None
            }
            Frame::Interruption => {
                if let Some(r) = &mut self.reply {
                    r.interrupted = true;
                }
                None
            }
            Frame::BotStoppedSpeaking => self.finish_reply(),
            _ => None,
        }
    }

    /// Completes the reply in progress, if any (at a bot stop or the end of the call).
    pub fn finish_reply(&mut self) -> Option<CallTurn> {
        let r = self.reply.take()?;
        let latency = std::mem::take(&mut self.latency);
        Some(self.turn(TurnRole::Assistant, r.text, r.started_ms, r.interrupted, latency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_frames::Transcript;

    #[test]
    fn a_spoken_exchange_becomes_two_turns_with_latency() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = TurnRecorder::new(t0);
        assert!(r.on_frame(&Frame::UserStoppedSpeaking, at(1000)).is_none());
        // The VAD stop (300 ms) plus 500 ms of endpointing, since the last voiced audio.
        r.on_frame(&Frame::Metric { stage: Stage::Endpointing, value: Duration::from_millis(800) }, at(1500));
        r.on_frame(&Frame::Metric { stage: Stage::Stt, value: Duration::from_millis(80) }, at(1580));
        let user = r.on_frame(&Frame::Transcript(Transcript { text: " hi there ".into(), is_final: true }), at(1580)).unwrap();
        assert_eq!((user.idx, user.role, user.text.as_str(), user.started_ms), (0, TurnRole::User, "hi there", 1000));
        r.on_frame(&Frame::Metric { stage: Stage::LlmFirstToken, value: Duration::from_millis(120) }, at(1700));
        r.on_frame(&Frame::Metric { stage: Stage::TtsFirstAudio, value: Duration::from_millis(60) }, at(1760));
        r.on_frame(&Frame::BotStartedSpeaking, at(1770));
        r.on_frame(&Frame::Spoken("Hello!".into()), at(2200));
        r.on_frame(&Frame::Spoken("How can I help?".into()), at(2900));
        let bot = r.on_frame(&Frame::BotStoppedSpeaking, at(2900)).unwrap();
        assert_eq!((bot.idx, bot.role, bot.text.as_str(), bot.started_ms, bot.interrupted), (1, TurnRole::Assistant, "Hello! How can I help?", 1770, false));
        // 800 ms from the end of speech to the decision, then 270 ms to the first audio.
        assert_eq!(bot.latency.voice_to_voice_ms, Some(1070.0));
        assert_eq!(bot.latency.endpointing_ms, Some(800.0));
        assert_eq!(bot.latency.llm_first_token_ms, Some(120.0));
        // The next reply starts with a clean breakdown.
        r.on_frame(&Frame::BotStartedSpeaking, at(5000));
        let again = r.finish_reply().unwrap();
        assert_eq!(again.latency, TurnLatency::default());
    }

    #[test]
    fn the_response_time_makes_voice_to_voice_exact() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = TurnRecorder::new(t0);
        r.on_frame(&Frame::UserStoppedSpeaking, at(1000));
        r.on_frame(&Frame::Metric { stage: Stage::Endpointing, value: Duration::from_millis(800) }, at(1500));
        // The recorder sees the first audio late (at 1900 ms), but the output timed
        // it at 42.5 ms after the decision.
        r.on_frame(&Frame::Metric { stage: Stage::Response, value: Duration::from_micros(42_500) }, at(1900));
        r.on_frame(&Frame::BotStartedSpeaking, at(1950));
        let bot = r.on_frame(&Frame::BotStoppedSpeaking, at(2500)).unwrap();
        assert_eq!(bot.latency.response_ms, Some(42.5));
        assert_eq!(bot.latency.voice_to_voice_ms, Some(842.5));
    }

    /// A turn the provider could not transcribe is kept, from where the caller
    /// stopped, without words and saying why; the next turn is numbered after it.
    #[test]
    fn an_untranscribed_turn_is_kept_with_its_error() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = TurnRecorder::new(t0);
        r.on_frame(&Frame::UserStoppedSpeaking, at(1200));
        let failed = Frame::TranscriptionFailed { code: "provider-failed", message: "speech to text: HTTP 503".into() };
        let t = r.on_frame(&failed, at(1800)).expect("a turn");
        assert_eq!((t.idx, t.role, t.text.as_str(), t.started_ms), (0, TurnRole::User, "", 1200));
        let e = t.error.expect("the failure is on the turn");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("provider-failed", "speech to text: HTTP 503"));
        let next = r.on_frame(&Frame::UserText("hello".into()), at(3000)).expect("a turn");
        assert_eq!((next.idx, next.error), (1, None));
    }

    #[test]
    fn an_interrupted_reply_keeps_what_was_played() {
        let t0 = Instant::now();
        let mut r = TurnRecorder::new(t0);
        r.on_frame(&Frame::BotStartedSpeaking, t0);
        r.on_frame(&Frame::Spoken("Once upon a".into()), t0);
        r.on_frame(&Frame::Interruption, t0);
        let t = r.on_frame(&Frame::BotStoppedSpeaking, t0).unwrap();
        assert!(t.interrupted);
        assert_eq!(t.text, "Once upon a");
        assert!(r.on_frame(&Frame::BotStoppedSpeaking, t0).is_none(), "one stop, one turn");
        assert!(r.on_frame(&Frame::Transcript(Transcript { text: "  ".into(), is_final: true }), t0).is_none());
    }
}
