//! Closes HTTP/2 connections that sit idle.
//!
//! An idle HTTP/1.1 keep-alive connection is closed by hyper's header timeout (the
//! next request's headers are timed from the end of the last answer). HTTP/2 (h2c,
//! or h2 over TLS) has no such timer in hyper: a client could open connections,
//! make one request on each, and hold them open for ever. So every connection is
//! wrapped here: one whose first bytes are the HTTP/2 client preface is closed once
//! no request of it is in flight and no byte has gone either way for the idle
//! limit (`HTTP_HEADER_TIMEOUT_SECS`, the same limit an idle HTTP/1.1 connection
//! gets). A request in flight (a slow answer) keeps it open however quiet it is.
//! Every other connection (HTTP/1.1, and the WebSocket calls it upgrades to) is
//! passed through untouched after its first bytes.
//!
//! Written here because neither hyper nor axum-server has an idle timeout for
//! HTTP/2 connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An acceptor that wraps `inner`'s connections so that idle HTTP/2 ones close.
#[derive(Clone)]
pub struct IdleH2<A> {
    inner: A,
    idle: Duration,
}

impl<A> IdleH2<A> {
    pub fn new(inner: A, idle: Duration) -> IdleH2<A> {
        IdleH2 { inner, idle }
    }
}

impl<A, I, S> Accept<I, S> for IdleH2<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = IdleStream<A::Stream>;
    type Service = Counted<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let idle = self.idle;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let busy = Arc::new(AtomicUsize::new(0));
            Ok((IdleStream::new(stream, idle, busy.clone()), Counted { inner: service, busy }))
        })
    }
}

/// A connection's service, counting the requests in flight on it.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
}

/// One request in flight, until its answer (or its cancellation).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, R> tower::Service<R> for Counted<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(self.busy.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let _in_flight = in_flight;
            answer.await
        })
    }
}

/// What a connection turned out to be.
enum Kind {
    /// Its first bytes so far match this much of the HTTP/2 preface.
    Sniffing(usize),
    /// HTTP/2: watched for idleness.
    H2 { last: Instant, timer: Option<Pin<Box<Sleep>>> },
    /// Anything else: passed through.
    Other,
}

/// A connection's stream; see the module doc.
pub struct IdleStream<S> {
    inner: S,
    idle: Duration,
    busy: Arc<AtomicUsize>,
    kind: Kind,
}

impl<S> IdleStream<S> {
    fn new(inner: S, idle: Duration, busy: Arc<AtomicUsize>) -> IdleStream<S> {
        IdleStream { inner, idle, busy, kind: Kind::Sniffing(0) }
    }

    /// Bytes went by (read or written).
    fn active(&mut self, read: &[u8]) {
        match &mut self.kind {
            Kind::Sniffing(seen) => {
                let take = read.len().min(PREFACE.len() - *seen);
                if read[..take] != PREFACE[*seen..*seen + take] {
                    self.kind = Kind::Other;
                } else if *seen + take == PREFACE.len() {
                    self.kind = Kind::H2 { last: Instant::now(), timer: None };
                } else {
                    *seen += take;
                }
            }
            Kind::H2 { last, .. } => *last = Instant::now(),
            Kind::Other => {}
        }
    }

    /// With nothing to read: `true` once an HTTP/2 connection with no request in
    /// flight has been quiet for the limit (else the timer is set to wake the
    /// reader when it would be).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Kind::H2 { last, timer } = &mut self.kind else { return false };
        if self.busy.load(Ordering::SeqCst) > 0 {
            return false;
        }
        loop {
            let due = *last + self.idle;
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if t.deadline() != due {
                t.as_mut().reset(due);
            }
            if t.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= *last + self.idle {
                return true;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !matches!(this.kind, Kind::Other) {
                    this.active(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => {
                metrics::counter!("voxgate_http2_idle_closed_total").increment(1);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the HTTP/2 connection was idle too long")))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let (Poll::Ready(Ok(n)), Kind::H2 { last, .. }) = (&r, &mut this.kind)
            && *n > 0
        {
            *last = Instant::now();
        }
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Kind::H2 { last, .. }) = (&r, &mut this.kind)
            && *n > 0
        {
            *last = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> IdleStream<tokio::io::Empty> {
        IdleStream::new(tokio::io::empty(), Duration::from_secs(1), Arc::default())
    }

    #[test]
    fn the_preface_is_recognised_in_pieces_and_anything_else_is_not() {
        let mut s = stream();
        s.active(b"PRI * HT");
        assert!(matches!(s.kind, Kind::Sniffing(8)));
        s.active(b"TP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        assert!(matches!(s.kind, Kind::H2 { .. }));
        for other in [&b"GET / HTTP/1.1\r\n"[..], b"PX", b"PRI * HTTP/1.1"] {
            let mut s = stream();
            s.active(other);
            s.active(b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            assert!(matches!(s.kind, Kind::Other), "{other:?}");
        }
    }
}
