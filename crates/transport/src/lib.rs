//! The edge of a call: the `/agent` WebSocket protocol (`voxgate.v1`). Wire messages
//! are parsed here into typed enums, caller audio is decoded into 16 kHz frames for
//! the pipeline's head, and the pipeline's last stage paces reply audio back to the
//! client in real time. Everything after this crate sees only frames.
//!
//! No HTTP here: the socket is a [`futures_util::Stream`] of [`WireIn`] and a
//! [`futures_util::Sink`] of [`WireOut`], so the server adapts axum's WebSocket to
//! it and the tests use channels. The protocol is written down in
//! `docs/agent-protocol.md`.
//!
//! A call, as the server wires it:
//! 1. [`input::await_start`] reads the `start` message (the audio formats);
//! 2. the server builds the pipeline with [`OutputStage`] last, sends `call-started`;
//! 3. [`input::pump_input`] feeds the pipeline's head until the caller leaves;
//! 4. [`wire::pump_output`] writes what the output stage (and the session) send.
//!
//! # Layout
//! - [`protocol`]: the messages both ways, audio formats, limits, [`protocol::parse`].
//! - [`close`]: close codes, [`Close`] (reasons cut to 123 bytes), [`ProtocolError`].
//! - [`wire`]: [`WireIn`], [`WireOut`], [`WireError`], the writer channel and task.
//! - [`input`]: [`InputDecoder`], [`input::await_start`], [`input::pump_input`].
//! - [`framer`]: reply audio into exact 20 ms frames in the client's format.
//! - [`output`]: [`OutputStage`], the real-time paced last stage.
//! - [`recording`]: both sides of a call into a stereo WAV, and [`recording::RecordTap`].
//! - [`relay`]: the writer of a call that outlives its socket (resumable calls).

pub mod close;
pub mod framer;
pub mod input;
pub mod output;
pub mod protocol;
pub mod recording;
pub mod relay;
pub mod wire;

pub use close::{Close, ProtocolError, close_for};
pub use input::{InputDecoder, InputEnd, await_start, pump_input};
pub use output::{OutputConfig, OutputStage};
pub use protocol::{
    AudioFormat, AudioSpec, ClientMessage, Encoding, Limits, PROTOCOL, ServerEvent,
};
pub use wire::{WireError, WireIn, WireOut, pump_output, writer_channel};
