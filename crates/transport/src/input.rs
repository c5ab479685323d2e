//! The client's side of a call, into the pipeline's head: binary messages become
//! 16 kHz [`AudioFrame`]s of exactly 20 ms (decoded from PCM16 or mu-law and
//! resampled from the declared rate), text messages become frames (`UserText`,
//! `End`) or replies (`pong`, `error`). Reading the socket never waits on the
//! pipeline: audio that finds the head's inbox full is dropped and counted.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use voxgate_audio::pcm::decode_pcm16le_into;
use voxgate_audio::{Resampler, SampleRate, mulaw};
use voxgate_frames::{AudioFrame, EndReason, Frame};
use voxgate_pipeline::runner::{Feeder, Refused};

use crate::close::{Close, ProtocolError, code};
use crate::protocol::{
    AudioFormat, ClientMessage, Encoding, Incoming, Limits, Negotiated, ServerEvent, parse,
};
use crate::wire::{WireError, WireIn, WireOut};

/// The rate of the audio the pipeline carries (the VAD's and STT's).
pub const PIPELINE_RATE: SampleRate = SampleRate::Hz16000;

/// How long a client has to send `start` after the upgrade (the documented default).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns client messages into frames, keeping the call's input state: the declared
/// format, mute, the resampler's history and a partial frame.
#[derive(Debug)]
pub struct InputDecoder {
    limits: Limits,
    format: Option<AudioFormat>,
    muted: bool,
    /// Warn once about audio before `start`, not fifty times a second.
    warned_early_audio: bool,
    resampler: Option<Resampler>,
    /// This message's samples at the input rate; reused.
    decoded: Vec<i16>,
    /// 16 kHz samples not yet making a whole frame; reused.
    pending: Vec<i16>,
}

/// What a client message asks for.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// `start` was accepted.
    Started(Negotiated),
    /// Feed this frame to the pipeline.
    Feed(Frame),
    /// Answer the client.
    Reply(ServerEvent),
    /// The caller hangs up.
    End,
    Nothing,
}

impl InputDecoder {
    pub fn new(limits: Limits) -> InputDecoder {
        InputDecoder {
            limits,
            format: None,
            muted: false,
            warned_early_audio: false,
            resampler: None,
            decoded: Vec::new(),
            pending: Vec::with_capacity(PIPELINE_RATE.frame_samples() * 2),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The declared input format, once started.
    pub fn format(&self) -> Option<AudioFormat> {
        self.format
    }

    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Handles a text message.
    pub fn message(&mut self, msg: ClientMessage) -> Result<Step, ProtocolError> {
        Ok(match msg {
            ClientMessage::Start { audio } => {
                if self.format.is_some() {
                    return Err(ProtocolError::AlreadyStarted);
                }
                let n = audio.negotiate()?;
                self.format = Some(n.input);
                self.resampler = (n.input.rate != PIPELINE_RATE)
                    .then(|| Resampler::new(n.input.rate, PIPELINE_RATE));
                Step::Started(n)
            }
            ClientMessage::Text { .. } if self.format.is_none() => {
                return Err(ProtocolError::NotStarted("text"));
            }
            ClientMessage::Text { text } if text.trim().is_empty() => Step::Nothing,
            ClientMessage::Text { text } => Step::Feed(Frame::UserText(text)),
            ClientMessage::Mute {} | ClientMessage::Unmute {} if self.format.is_none() => {
                return Err(ProtocolError::NotStarted("mute"));
            }
            ClientMessage::Mute {} => {
                self.muted = true;
                // What was said before the mute is not continued after it.
                self.pending.clear();
                if let Some(r) = &mut self.resampler {
                    r.reset();
                }
                Step::Nothing
            }
            ClientMessage::Unmute {} => {
                self.muted = false;
                Step::Nothing
            }
            ClientMessage::End {} => Step::End,
            ClientMessage::Ping { id } => Step::Reply(ServerEvent::Pong { id }),
        })
    }

    /// Decodes one binary message, appending every whole 20 ms, 16 kHz frame to
    /// `out`; a partial frame waits for the next message. Allocates only the frames.
    pub fn audio(&mut self, bytes: &[u8], out: &mut Vec<AudioFrame>) -> Result<(), ProtocolError> {
        let Some(format) = self.format else {
            return Err(ProtocolError::AudioBeforeStart);
        };
        if bytes.len() > self.limits.max_audio_bytes {
            return Err(ProtocolError::TooBig {
                len: bytes.len(),
                max: self.limits.max_audio_bytes,
            });
        }
        if format.encoding == Encoding::Pcm16 && !bytes.len().is_multiple_of(2) {
            return Err(ProtocolError::OddByteCount(bytes.len()));
        }
        if self.muted {
            return Ok(());
        }
        self.decoded.clear();
        match format.encoding {
            Encoding::Pcm16 => decode_pcm16le_into(bytes, &mut self.decoded)
                .map_err(|_| ProtocolError::OddByteCount(bytes.len()))?,
            Encoding::Mulaw => {
                self.decoded.resize(bytes.len(), 0);
                mulaw::decode_into(bytes, &mut self.decoded);
            }
        }
        match &mut self.resampler {
            Some(r) => r.process(&self.decoded, &mut self.pending),
            None => self.pending.extend_from_slice(&self.decoded),
        }
        let n = PIPELINE_RATE.frame_samples();
        let whole = self.pending.len() / n * n;
        out.extend(
            self.pending[..whole]
                .chunks_exact(n)
                .map(|c| AudioFrame::new(c, PIPELINE_RATE.hz())),
        );
        self.pending.drain(..whole);
        Ok(())
    }
}

/// Why the input side of a call stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEnd {
    /// `end`, or a close frame from the client.
    CustomerEnded,
    /// The connection dropped.
    ConnectionLost,
    /// The client broke the protocol; close with the error's code.
    Protocol(ProtocolError),
    /// The pipeline's head is gone (the call is ending for another reason).
    PipelineClosed,
}

impl InputEnd {
    /// The call's end reason, as recorded.
    pub fn reason(&self) -> EndReason {
        match self {
            InputEnd::CustomerEnded => EndReason::CustomerEnded,
            InputEnd::ConnectionLost => EndReason::ConnectionLost,
            InputEnd::Protocol(_) => EndReason::ProtocolError,
            InputEnd::PipelineClosed => EndReason::PipelineError("the pipeline stopped".into()),
        }
    }

    /// How to close the socket; `None` when it is gone or the session decides.
    pub fn close(&self) -> Option<Close> {
        match self {
            InputEnd::CustomerEnded => {
                Some(Close::new(code::NORMAL, EndReason::CustomerEnded.as_str()))
            }
            InputEnd::Protocol(e) => e.close(),
            InputEnd::ConnectionLost | InputEnd::PipelineClosed => None,
        }
    }
}

/// What one message came to.
enum Action {
    Continue,
    Started(Negotiated),
    Feed(Frame),
    /// Frames are in the caller's buffer.
    Audio,
}

/// Handles one item read from the socket. Non-fatal errors are answered here.
fn handle(
    item: Option<Result<WireIn, WireError>>,
    decoder: &mut InputDecoder,
    frames: &mut Vec<AudioFrame>,
    events: &mpsc::Sender<WireOut>,
) -> Result<Action, InputEnd> {
    let msg = match item {
        None => return Err(InputEnd::ConnectionLost),
        Some(Err(e)) => {
            let end = e
                .into_protocol()
                .map_or(InputEnd::ConnectionLost, InputEnd::Protocol);
            if let InputEnd::Protocol(p) = &end {
                reply(events, &ServerEvent::error(p));
            }
            return Err(end);
        }
        Some(Ok(m)) => m,
    };
    let res = match parse(&msg, &decoder.limits) {
        Ok(Incoming::Close) => return Err(InputEnd::CustomerEnded),
        Ok(Incoming::Audio(bytes)) => decoder.audio(bytes, frames).map(|()| Action::Audio),
        Ok(Incoming::Message(m)) => decoder.message(m).map(|step| match step {
            Step::Started(n) => Action::Started(n),
            Step::Feed(f) => Action::Feed(f),
            Step::Reply(ev) => {
                reply(events, &ev);
                Action::Continue
            }
            Step::End => Action::Feed(Frame::End(EndReason::CustomerEnded)),
            Step::Nothing => Action::Continue,
        }),
        Err(e) => Err(e),
    };
    match res {
        Ok(a) => Ok(a),
        Err(e) if e.is_fatal() => {
            tracing::info!(error = %e, "protocol error; closing");
            reply(events, &ServerEvent::error(&e));
            Err(InputEnd::Protocol(e))
        }
        Err(ProtocolError::AudioBeforeStart) => {
            metrics::counter!("voxgate_dropped_frames_total", "reason" => "audio-before-start")
                .increment(1);
            if !decoder.warned_early_audio {
                decoder.warned_early_audio = true;
                reply(
                    events,
                    &ServerEvent::error(&ProtocolError::AudioBeforeStart),
                );
            }
            Ok(Action::Continue)
        }
        Err(e) => {
            reply(events, &ServerEvent::error(&e));
            Ok(Action::Continue)
        }
    }
}

/// Answers the client without waiting: if the writer is full the client is not
/// reading, and the output stage will end the call for it.
fn reply(events: &mpsc::Sender<WireOut>, ev: &ServerEvent) {
    if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(ev.to_wire()) {
        metrics::counter!("voxgate_dropped_frames_total", "reason" => "writer-full").increment(1);
    }
}

/// Reads the socket until the client's `start` (answering `ping`, refusing audio
/// and text with an `error` event) and returns the call's formats. The server
/// builds the pipeline with them, then hands the stream to [`pump_input`].
pub async fn await_start<S>(
    stream: &mut S,
    decoder: &mut InputDecoder,
    events: &mpsc::Sender<WireOut>,
    timeout: Duration,
) -> Result<Negotiated, InputEnd>
where
    S: Stream<Item = Result<WireIn, WireError>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let Ok(item) = tokio::time::timeout_at(deadline, stream.next()).await else {
            let e = ProtocolError::StartTimeout(timeout);
            reply(events, &ServerEvent::error(&e));
            return Err(InputEnd::Protocol(e));
        };
        match handle(item, decoder, &mut frames, events)? {
            Action::Started(n) => return Ok(n),
            Action::Feed(Frame::End(_)) => return Err(InputEnd::CustomerEnded),
            // Nothing else gets through an unstarted decoder.
            Action::Feed(_) | Action::Audio | Action::Continue => frames.clear(),
        }
    }
}

/// Feeds the pipeline's head from the socket until the call ends on this side, and
/// says why. Audio goes in with `try_send` (a full inbox drops the frame, counted as
/// `voxgate_dropped_frames_total{reason="pipeline-full"}`); so does text, which is
/// answered with an `error` event (`busy`) when refused. `end` feeds
/// `End(CustomerEnded)` and returns. A decoder not yet started accepts `start` here
/// too (silently); [`await_start`] is the way to learn the formats first.
pub async fn pump_input<S>(
    mut stream: S,
    mut decoder: InputDecoder,
    feeder: Feeder,
    events: mpsc::Sender<WireOut>,
) -> InputEnd
where
    S: Stream<Item = Result<WireIn, WireError>> + Unpin,
{
    let mut frames = Vec::with_capacity(8);
    loop {
        let item = stream.next().await;
        match handle(item, &mut decoder, &mut frames, &events) {
            Err(end) => return end,
            Ok(Action::Continue | Action::Started(_)) => {}
            Ok(Action::Audio) => {
                for f in frames.drain(..) {
                    match feeder.try_send(Frame::InputAudio(f)) {
                        Ok(()) => {}
                        Err(Refused::Full) => {
                            metrics::counter!("voxgate_dropped_frames_total", "reason" => "pipeline-full").increment(1);
                        }
                        Err(Refused::Closed) => return InputEnd::PipelineClosed,
                    }
                }
            }
            Ok(Action::Feed(frame)) => {
                let end = matches!(frame, Frame::End(_));
                match feeder.try_send(frame) {
                    Ok(()) => {}
                    Err(Refused::Full) => {
                        metrics::counter!("voxgate_dropped_frames_total", "reason" => "pipeline-full").increment(1);
                        if !end {
                            let busy = ServerEvent::Error {
                                code: "busy".into(),
                                message: "the assistant is busy; text dropped".into(),
                            };
                            reply(&events, &busy);
                        }
                    }
                    Err(Refused::Closed) if !end => return InputEnd::PipelineClosed,
                    Err(Refused::Closed) => {}
                }
                if end {
                    return InputEnd::CustomerEnded;
                }
            }
        }
    }
}
