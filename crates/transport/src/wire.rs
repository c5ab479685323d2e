//! The socket as this crate sees it: a stream of [`WireIn`] (with [`WireError`]s)
//! and a sink of [`WireOut`]. The server adapts axum's WebSocket to these; tests use
//! channels. Everything the server writes goes through one small bounded channel
//! ([`writer_channel`]) into one writer task ([`pump_output`]), so the output stage
//! notices a client that stops reading within a few frames.

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;

use crate::close::{Close, ProtocolError};

/// A message from the client. WebSocket pings and pongs are the adapter's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireIn {
    Text(String),
    Binary(Vec<u8>),
    /// The client sent a close frame.
    Close,
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireOut {
    Text(String),
    Binary(Vec<u8>),
    /// The last message: the writer sends it and stops.
    Close(Close),
    /// A keepalive: the adapter sends a WebSocket ping, which every client's
    /// WebSocket answers by itself (see [`crate::relay::relay`]'s `ping`).
    Ping,
}

/// Why reading the socket failed, as the adapter classifies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The connection dropped (TCP closed or reset without a close handshake).
    #[error("the connection was lost")]
    Lost,
    /// A message over the server's WebSocket size limit.
    #[error("message too big (max {max} bytes)")]
    TooBig { max: usize },
    #[error("text messages must be UTF-8")]
    InvalidUtf8,
    #[error("malformed WebSocket frame: {0}")]
    Malformed(String),
}

impl WireError {
    /// The protocol error to close with, or `None` when the connection is gone.
    pub fn into_protocol(self) -> Option<ProtocolError> {
        match self {
            WireError::Lost => None,
            WireError::TooBig { max } => Some(ProtocolError::TooBig { len: max + 1, max }),
            WireError::InvalidUtf8 => Some(ProtocolError::InvalidUtf8),
            WireError::Malformed(m) => Some(ProtocolError::Frame(m)),
        }
    }
}

/// Messages the writer channel holds. Small on purpose: reply audio waits in the
/// pipeline (where an interruption flushes it), not here, so at most this many
/// frames (80 ms) are past recall when the caller barges in (PERFORMANCE.md).
pub const WRITER_CAPACITY: usize = 4;

/// The channel between a call's producers (the output stage, the input pump's
/// replies, the session) and [`pump_output`].
pub fn writer_channel() -> (mpsc::Sender<WireOut>, mpsc::Receiver<WireOut>) {
    mpsc::channel(WRITER_CAPACITY)
}

/// Writes every message from `rx` to `sink` until a [`WireOut::Close`] has been
/// written (then closes the sink), every sender is dropped, or the sink fails.
/// Flushes whenever the channel is empty, so a burst goes out in one write.
///
/// When a write fails, the sink is flushed and closed anyway: after a client's
/// close frame, the WebSocket refuses new messages but still holds its answer to
/// that close, which only goes out on a flush; dropping it unsent would end the
/// closing handshake with a reset (1006 in a browser).
pub async fn pump_output<S>(mut rx: mpsc::Receiver<WireOut>, mut sink: S) -> Result<(), S::Error>
where
    S: Sink<WireOut> + Unpin,
{
    let written = write_all(&mut rx, &mut sink).await;
    if written.is_err() {
        let _ = sink.flush().await;
        let _ = sink.close().await;
    }
    written
}

async fn write_all<S>(rx: &mut mpsc::Receiver<WireOut>, sink: &mut S) -> Result<(), S::Error>
where
    S: Sink<WireOut> + Unpin,
{
    while let Some(msg) = rx.recv().await {
        let last = matches!(msg, WireOut::Close(_));
        sink.feed(msg).await?;
        if last {
            sink.flush().await?;
            return sink.close().await;
        }
        if rx.is_empty() {
            sink.flush().await?;
        }
    }
    sink.flush().await
}

/// Writes `rx` to `sink` until every sender is dropped, then hands the sink back
/// for the next writer (a resumed call's socket is answered here until its
/// `start`, then joins the call's [`crate::relay::relay`]). `None` when a write
/// failed or a [`WireOut::Close`] was written: the socket is done.
pub async fn pump_then_release<S>(mut rx: mpsc::Receiver<WireOut>, mut sink: S) -> Option<S>
where
    S: Sink<WireOut> + Unpin,
{
    while let Some(msg) = rx.recv().await {
        let last = matches!(msg, WireOut::Close(_));
        if sink.feed(msg).await.is_err() {
            let _ = sink.flush().await;
            let _ = sink.close().await;
            return None;
        }
        if last {
            let _ = sink.flush().await;
            let _ = sink.close().await;
            return None;
        }
        if rx.is_empty() && sink.flush().await.is_err() {
            return None;
        }
    }
    sink.flush().await.ok().map(|()| sink)
}
