//! Closes HTTP/2 connections that sit idle.
//!
//! An idle HTTP/1.1 keep-alive connection is closed by hyper's header timeout (the
//! next request's headers are timed from the end of the last answer). HTTP/2 (h2c,
//! or h2 over TLS) has no such timer in hyper: a client could open connections,
//! make one request on each, and hold them open for ever. So every connection is
//! wrapped here: one whose first bytes are the HTTP/2 client preface is closed once
//! it has had no request in flight and written nothing for the idle limit
//! (`HTTP_HEADER_TIMEOUT_SECS`, the limit an idle HTTP/1.1 connection gets). A
//! request is in flight from the call of the service until its answer's body has
//! been handed over whole (or dropped); what is written after that (the end of a
//! long answer, still in HTTP/2's buffers for a slow client) counts too, so a slow
//! answer or a slow download is never cut. What the client sends while nothing is
//! in flight does not count: a client that only sends window updates is idle. (One
//! that pings keeps its connection, as an HTTP/1.1 client that sends a small
//! request now and then keeps its own.) Every other connection (HTTP/1.1, and the
//! WebSocket calls it upgrades to) is passed through untouched after its first
//! bytes.
//!
//! The close is an I/O error on the connection (no GOAWAY): a client that sends a
//! request at that very moment sees a reset, as with an HTTP/1.1 keep-alive close.
//!
//! Written here because neither hyper nor axum-server has an idle timeout for
//! HTTP/2 connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
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
            let conn = Conn::new();
            Ok((IdleStream { inner: stream, idle, conn: conn.clone(), kind: Kind::Sniffing(0) }, Counted { inner: service, conn }))
        })
    }
}

/// What a connection's stream and its service share.
struct Conn {
    /// Requests in flight.
    busy: AtomicUsize,
    /// When the last request in flight ended, or the last byte was written (or
    /// the connection opened).
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when the last request in flight ends.
    waker: AtomicWaker,
}

impl Conn {
    fn new() -> Arc<Conn> {
        Arc::new(Conn { busy: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()), waker: AtomicWaker::new() })
    }

    fn idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's service, counting the requests in flight on it.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    conn: Arc<Conn>,
}

/// One request in flight, until its answer's body is done (or dropped).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> InFlight {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        // Set before the count falls, so a reader that sees it fall sees the time.
        *conn.idle_since() = Instant::now();
        if conn.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            conn.waker.wake();
        }
    }
}

impl<S, R, B> tower::Service<R> for Counted<S>
where
    S: tower::Service<R, Response = axum::http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<Counting<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let in_flight = InFlight::start(&self.conn);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await?;
            Ok(answer.map(|body| Counting { body, _in_flight: in_flight }))
        })
    }
}

/// An answer's body, keeping its request in flight until it is done.
pub struct Counting<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Counting<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a connection turned out to be.
enum Kind {
    /// Its first bytes so far match this much of the HTTP/2 preface.
    Sniffing(usize),
    /// HTTP/2: watched for idleness.
    H2 { timer: Option<Pin<Box<Sleep>>> },
    /// Anything else: passed through.
    Other,
}

/// A connection's stream; see the module doc.
pub struct IdleStream<S> {
    inner: S,
    idle: Duration,
    conn: Arc<Conn>,
    kind: Kind,
}

impl<S> IdleStream<S> {
    /// Bytes were read: while sniffing, they tell what the connection is.
    fn sniff(&mut self, read: &[u8]) {
        if let Kind::Sniffing(seen) = &mut self.kind {
            let take = read.len().min(PREFACE.len() - *seen);
            if read[..take] != PREFACE[*seen..*seen + take] {
                self.kind = Kind::Other;
            } else if *seen + take == PREFACE.len() {
                self.kind = Kind::H2 { timer: None };
            } else {
                *seen += take;
            }
        }
    }

    /// With nothing to read: `true` once an HTTP/2 connection has had no request
    /// in flight for the limit. Otherwise the reader is woken when that may have
    /// changed: by the timer, or by the end of the last request in flight.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Kind::H2 { timer } = &mut self.kind else { return false };
        self.conn.waker.register(cx.waker());
        if self.conn.busy.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let due = *self.conn.idle_since() + self.idle;
        let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if t.deadline() != due {
            t.as_mut().reset(due);
        }
        // Ready only once `due` has passed (tokio never fires early).
        t.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if matches!(this.kind, Kind::Sniffing(_)) && buf.filled().len() > before {
                    this.sniff(&buf.filled()[before..]);
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

impl<S> IdleStream<S> {
    /// After a write: bytes written keep an HTTP/2 connection from being idle.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if let (Poll::Ready(Ok(1..)), Kind::H2 { .. }) = (r, &self.kind) {
            *self.conn.idle_since() = Instant::now();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&r);
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
        IdleStream { inner: tokio::io::empty(), idle: Duration::from_secs(1), conn: Conn::new(), kind: Kind::Sniffing(0) }
    }

    #[tokio::test]
    async fn the_preface_is_recognised_in_pieces_and_anything_else_is_not() {
        let mut s = stream();
        s.sniff(b"PRI * HT");
        assert!(matches!(s.kind, Kind::Sniffing(8)));
        s.sniff(b"TP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        assert!(matches!(s.kind, Kind::H2 { .. }));
        for other in [&b"GET / HTTP/1.1\r\n"[..], b"PX", b"PRI * HTTP/1.1"] {
            let mut s = stream();
            s.sniff(other);
            s.sniff(b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            assert!(matches!(s.kind, Kind::Other), "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_answer_is_sent_whole_or_dropped() {
        use tower::Service;
        let stream = stream();
        let conn = stream.conn.clone();
        let busy = || conn.busy.load(Ordering::SeqCst);
        let mut service = Counted {
            inner: tower::service_fn(|slow: bool| async move {
                if slow {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::from("a long answer")))
            }),
            conn: conn.clone(),
        };
        let answer = service.call(false).await.unwrap();
        assert_eq!(busy(), 1, "the answer's body is still to send");
        let body = axum::body::to_bytes(axum::body::Body::new(answer.into_body()), 100).await.unwrap();
        assert_eq!(&body[..], b"a long answer");
        assert_eq!(busy(), 0, "sent whole");
        // A request given up on (the client reset its stream) counts no more.
        let cancelled = service.call(true);
        assert_eq!(busy(), 1);
        drop(cancelled);
        assert_eq!(busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_runs_from_the_end_of_the_last_request_or_write() {
        let mut s = stream();
        s.sniff(PREFACE);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let request = InFlight::start(&s.conn);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!s.expired(&mut cx), "a request in flight keeps it open");
        drop(request);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!s.expired(&mut cx), "counted from the request's end");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(s.expired(&mut cx));
        // Written since (the end of a long answer): counted from the write.
        s.wrote(&Poll::Ready(Ok(16_384)));
        assert!(!s.expired(&mut cx));
        s.wrote(&Poll::Ready(Ok(0)));
        s.wrote(&Poll::Pending);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(s.expired(&mut cx), "nothing written since");
    }
}
