//! axum's WebSocket as the transport crate sees a socket: a stream of `WireIn`
//! (read errors classified) and a sink of `WireOut`.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use voxgate_transport::wire::{WireError, WireIn, WireOut};

/// Splits a socket into the transport's stream and sink.
pub fn split(
    socket: WebSocket,
    max_message: usize,
) -> (
    impl Sink<WireOut, Error = axum::Error> + Unpin + Send + 'static,
    impl Stream<Item = Result<WireIn, WireError>> + Unpin + Send + 'static,
) {
    let (sink, stream): (SplitSink<WebSocket, Message>, SplitStream<WebSocket>) = socket.split();
    let sink = sink.with(|w: WireOut| async move { Ok::<_, axum::Error>(to_message(w)) });
    let stream = stream.filter_map(move |r| async move {
        match r {
            Ok(Message::Text(t)) => Some(Ok(WireIn::Text(t.to_string()))),
            Ok(Message::Binary(b)) => Some(Ok(WireIn::Binary(b.to_vec()))),
            Ok(Message::Close(_)) => Some(Ok(WireIn::Close)),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Err(e) => Some(Err(classify(&e, max_message))),
        }
    });
    (Box::pin(sink), Box::pin(stream))
}

fn to_message(w: WireOut) -> Message {
    match w {
        WireOut::Text(t) => Message::Text(t.into()),
        WireOut::Binary(b) => Message::Binary(b.into()),
        WireOut::Close(c) => Message::Close(Some(CloseFrame { code: c.code, reason: c.reason.into() })),
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
    if ["without closing handshake", "Connection closed normally", "closed connection"].iter().any(|t| text.contains(t)) {
        WireError::Lost
    } else if text.contains("Space limit exceeded") || text.contains("too long") {
        WireError::TooBig { max: max_message }
    } else if text.contains("UTF-8") {
        WireError::InvalidUtf8
    } else {
        WireError::Malformed(text)
    }
}
