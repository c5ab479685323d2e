//! axum's WebSocket as the transport crate sees a socket: a stream of `WireIn`
//! (read errors classified) and a sink of `WireOut`.
//!
//! Keepalive (`WS_PING_SECS`): a client that vanishes without closing its
//! connection (a phone that lost its network, a laptop put to sleep, a NAT that
//! forgot the flow) leaves a socket that reads nothing and, while little is written
//! to it, fails on nothing: without a check its call would last until the
//! assistant's own limits. With a ping interval, the call's writer (the transport's
//! relay) sends a WebSocket ping ([`WireOut::Ping`]) every interval between what the
//! call writes, and the stream here ends with [`WireError::Lost`] once nothing at
//! all (a message, a ping, a pong) has arrived for twice the interval. Every
//! WebSocket client (browsers included) answers pings by itself.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use voxgate_transport::wire::{WireError, WireIn, WireOut};

/// Splits a socket into the transport's stream and sink; with `ping`, the stream
/// ends as lost after `2 * ping` of silence (the writer sends the pings).
pub fn split(
    socket: WebSocket,
    max_message: usize,
    ping: Option<Duration>,
) -> (
    impl Sink<WireOut, Error = axum::Error> + Unpin + Send + 'static,
    impl Stream<Item = Result<WireIn, WireError>> + Unpin + Send + 'static,
) {
    let (sink, stream): (SplitSink<WebSocket, Message>, SplitStream<WebSocket>) = socket.split();
    let stream = Reader {
        inner: stream,
        max_message,
        idle: ping.filter(|p| !p.is_zero()).map(|p| Idle::new(p * 2)),
        ended: false,
    };
    // `ready` is `Unpin`: no box here (the session boxes the sink once, as its relay's).
    let sink = sink.with(|w: WireOut| futures_util::future::ready(Ok::<_, axum::Error>(to_message(w))));
    (sink, stream)
}

fn to_message(w: WireOut) -> Message {
    match w {
        WireOut::Text(t) => Message::Text(t.into()),
        WireOut::Binary(b) => Message::Binary(b.into()),
        WireOut::Close(c) => Message::Close(Some(CloseFrame {
            code: c.code,
            reason: c.reason.into(),
        })),
        WireOut::Ping => Message::Ping(Default::default()),
    }
}

/// The read half: messages become [`WireIn`] (pings and pongs are answered by the
/// WebSocket and dropped here), and with a keepalive, a silence past its limit
/// becomes [`WireError::Lost`].
struct Reader {
    inner: SplitStream<WebSocket>,
    max_message: usize,
    idle: Option<Idle>,
    ended: bool,
}

/// When the client was last heard from, and a timer that checks it lazily: the
/// timer is only moved when it fires, not on each of the 50 messages a second.
struct Idle {
    limit: Duration,
    last: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        let now = Instant::now();
        Idle {
            limit,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// `true` once nothing has arrived for the limit (registers the waker otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last + self.limit;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
    }
}

impl Stream for Reader {
    type Item = Result<WireIn, WireError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(r)) => {
                    if let Some(idle) = &mut this.idle {
                        idle.last = Instant::now();
                    }
                    match r {
                        Ok(Message::Text(t)) => {
                            return Poll::Ready(Some(Ok(WireIn::Text(t.to_string()))));
                        }
                        Ok(Message::Binary(b)) => {
                            return Poll::Ready(Some(Ok(WireIn::Binary(b.to_vec()))));
                        }
                        Ok(Message::Close(_)) => return Poll::Ready(Some(Ok(WireIn::Close))),
                        Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                        Err(e) => return Poll::Ready(Some(Err(classify(&e, this.max_message)))),
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if let Some(idle) = &mut this.idle
                        && idle.expired(cx)
                    {
                        tracing::info!(
                            secs = idle.limit.as_secs_f64(),
                            "nothing from the client, not even a pong: the connection is lost"
                        );
                        metrics::counter!("voxgate_ws_keepalive_timeouts_total").increment(1);
                        this.ended = true;
                        return Poll::Ready(Some(Err(WireError::Lost)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Sorts a read error: the peer vanished (an I/O error, a reset without the closing
/// handshake), or it sent something we refuse (too big, not UTF-8, a bad frame).
fn classify(e: &axum::Error, max_message: usize) -> WireError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some() {
            return WireError::Lost;
        }
        cause = c.source();
    }
    let text = e.to_string();
    if [
        "without closing handshake",
        "Connection closed normally",
        "closed connection",
    ]
    .iter()
    .any(|t| text.contains(t))
    {
        WireError::Lost
    } else if text.contains("Space limit exceeded") || text.contains("too long") {
        WireError::TooBig { max: max_message }
    } else if text.contains("UTF-8") {
        WireError::InvalidUtf8
    } else {
        WireError::Malformed(text)
    }
}
