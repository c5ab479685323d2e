//! A call's writer that outlives its socket, for calls a client may resume.
//!
//! Everything for the client goes into one small bounded channel (see
//! [`crate::wire::writer_channel`]); [`relay`] writes it to the socket the call is
//! attached to. While no socket is attached (the connection dropped and the call
//! waits for a resume), the relay drains the channel and drops what it reads, so
//! reply audio is neither buffered without bound nor mistaken for a slow client.
//! A resumed socket is attached with [`Link::Attach`]: what was queued for the lost
//! one is dropped, the resumed socket's first messages go out, then the call's
//! stream goes on. If the resumed client asked for another output format, its
//! audio frames are converted ([`Reframe`]) so the pipeline never changes format.
//!
//! With no resume possible, a failed write ends the relay and drops the channel,
//! exactly as [`crate::wire::pump_output`] does: the output stage then ends the
//! call as `connection-lost`.

use std::pin::Pin;

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use voxgate_audio::mulaw;
use voxgate_audio::pcm::decode_pcm16le_into;
use voxgate_frames::AudioFrame;

use crate::framer::Framer;
use crate::protocol::{AudioFormat, Encoding};
use crate::wire::WireOut;

/// A socket's sink, boxed so sockets opened at different places share one type.
pub type BoxSink<E> = Pin<Box<dyn Sink<WireOut, Error = E> + Send>>;

/// What the session tells the relay about its socket.
pub enum Link<E> {
    /// Write to this socket from now on. `id` names it in loss reports; `first`
    /// goes out before anything else; `convert` reshapes audio for its format.
    Attach {
        id: u64,
        sink: BoxSink<E>,
        first: Vec<WireOut>,
        convert: Option<Box<Reframe>>,
    },
    /// The socket is gone (its reader saw it drop): let go of it, and drop what is
    /// written until the next `Attach`.
    Detach,
}

/// Reply audio in the call's output format, converted to a resumed client's.
#[derive(Debug)]
pub struct Reframe {
    from: AudioFormat,
    framer: Framer,
    samples: Vec<i16>,
}

impl Reframe {
    /// A converter from `from` to `to`; `None` when they are the same.
    pub fn new(from: AudioFormat, to: AudioFormat) -> Option<Reframe> {
        (from != to).then(|| Reframe {
            from,
            framer: Framer::new(to),
            samples: Vec::new(),
        })
    }

    /// One 20 ms frame in `from` into the frames of `to` it completes (usually
    /// one; a resampler's delay can make it none or two at times).
    pub fn convert(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.samples.clear();
        match self.from.encoding {
            Encoding::Pcm16 => {
                if decode_pcm16le_into(bytes, &mut self.samples).is_err() {
                    return Vec::new();
                }
            }
            Encoding::Mulaw => {
                self.samples.resize(bytes.len(), 0);
                mulaw::decode_into(bytes, &mut self.samples);
            }
        }
        self.framer
            .push(&AudioFrame::new(&self.samples[..], self.from.rate.hz()));
        std::iter::from_fn(|| self.framer.next_frame()).collect()
    }
}

struct Current<E> {
    id: u64,
    sink: BoxSink<E>,
    convert: Option<Box<Reframe>>,
}

impl<E> Current<E> {
    /// Feeds one message (converted if need be), flushing when nothing else waits.
    async fn write(&mut self, msg: WireOut, flush: bool) -> Result<(), E> {
        let last = matches!(msg, WireOut::Close(_));
        match (msg, &mut self.convert) {
            (WireOut::Binary(b), Some(c)) => {
                for frame in c.convert(&b) {
                    self.sink.feed(WireOut::Binary(frame)).await?;
                }
            }
            (msg, _) => self.sink.feed(msg).await?,
        }
        if last {
            self.sink.flush().await?;
            return self.sink.close().await;
        }
        if flush {
            self.sink.flush().await?;
        }
        Ok(())
    }

    /// After a failed write: the closing handshake may still be in the sink (see
    /// [`crate::wire::pump_output`]).
    async fn abandon(mut self) {
        let _ = self.sink.flush().await;
        let _ = self.sink.close().await;
    }
}

/// What the relay does next.
enum Next<E> {
    Link(Option<Link<E>>),
    Write(WireOut),
}

/// Ticks of the keepalive, or never.
async fn ping_due(pings: &mut Option<tokio::time::Interval>) {
    match pings {
        Some(p) => {
            p.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Writes `rx` to the attached socket (first `initial`, then whatever
/// [`Link::Attach`] names) until a [`WireOut::Close`] is written or every sender is
/// dropped. A failed write of socket `id` is reported on `lost` when `resumable`
/// (then the relay goes on, detached); otherwise it ends the relay with the error.
///
/// With `ping`, a [`WireOut::Ping`] goes to the attached socket every `ping`,
/// between what the call writes: the client's answers keep its socket's reader
/// from judging it gone while the caller is silent. The pings are the relay's (not
/// a task per socket), so each frame for the client is one hop from the output
/// stage to the socket.
pub async fn relay<E>(
    mut rx: mpsc::Receiver<WireOut>,
    mut links: mpsc::Receiver<Link<E>>,
    initial: Option<(u64, BoxSink<E>)>,
    lost: mpsc::UnboundedSender<u64>,
    resumable: bool,
    ping: Option<std::time::Duration>,
) -> Result<(), E> {
    let mut current = initial.map(|(id, sink)| Current {
        id,
        sink,
        convert: None,
    });
    let mut pings = ping.filter(|p| !p.is_zero()).map(|every| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut links_open = true;
    loop {
        let next = tokio::select! {
            biased;
            link = links.recv(), if links_open => Next::Link(link),
            msg = rx.recv() => match msg {
                Some(msg) => Next::Write(msg),
                None => {
                    return match &mut current {
                        Some(c) => c.sink.flush().await,
                        None => Ok(()),
                    };
                }
            },
            () = ping_due(&mut pings), if current.is_some() => Next::Write(WireOut::Ping),
        };
        let link = match next {
            Next::Link(link) => link,
            Next::Write(msg) => {
                let last = matches!(msg, WireOut::Close(_));
                let Some(c) = &mut current else {
                    if last {
                        return Ok(());
                    }
                    metrics::counter!("voxgate_dropped_frames_total", "reason" => "detached").increment(1);
                    continue;
                };
                let flush = rx.is_empty();
                // A write stuck on a dead socket gives way to a detach or a resume.
                let written = tokio::select! {
                    biased;
                    link = links.recv(), if links_open => Err(link),
                    r = c.write(msg, flush) => Ok(r),
                };
                match written {
                    Err(link) => link,
                    Ok(Ok(())) if last => return Ok(()),
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => {
                        let c = current.take().expect("attached");
                        let id = c.id;
                        c.abandon().await;
                        if !resumable || last {
                            return Err(e);
                        }
                        let _ = lost.send(id);
                        continue;
                    }
                }
            }
        };
        match link {
            None => links_open = false,
            Some(Link::Detach) => current = None,
            Some(Link::Attach { id, sink, first, convert }) => {
                // What was queued for the lost socket (or for no one) is stale.
                let mut closing = None;
                while let Ok(m) = rx.try_recv() {
                    if let WireOut::Close(c) = m {
                        closing = Some(c);
                    }
                }
                let mut c = Current { id, sink, convert };
                let mut res = Ok(());
                for m in first.into_iter().chain(closing.clone().map(WireOut::Close)) {
                    res = c.write(m, false).await;
                    if res.is_err() {
                        break;
                    }
                }
                if closing.is_some() {
                    return res;
                }
                match res.and(c.sink.flush().await) {
                    Ok(()) => current = Some(c),
                    Err(_) => {
                        let _ = lost.send(id);
                        c.abandon().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxgate_audio::SampleRate;

    #[test]
    fn frames_convert_between_rates() {
        let from = AudioFormat::pcm16(SampleRate::Hz24000);
        let to = AudioFormat::pcm16(SampleRate::Hz16000);
        assert!(Reframe::new(from, from).is_none());
        let mut r = Reframe::new(from, to).unwrap();
        let frame = vec![0u8; from.frame_bytes()];
        let out: Vec<Vec<u8>> = (0..50).flat_map(|_| r.convert(&frame)).collect();
        assert!(out.iter().all(|f| f.len() == to.frame_bytes()));
        // One second in, about one second out (the resampler holds a few ms).
        assert!((48..=50).contains(&out.len()), "{} frames", out.len());
        // Odd PCM16 bytes are not audio: nothing out, no panic.
        assert!(r.convert(&[1, 2, 3]).is_empty());
    }

    #[tokio::test]
    async fn a_detached_relay_drops_what_it_reads() {
        let (tx, rx) = mpsc::channel(4);
        let (_links_tx, links) = mpsc::channel::<Link<std::convert::Infallible>>(1);
        let (lost, _) = mpsc::unbounded_channel();
        let task = tokio::spawn(relay(rx, links, None, lost, true, None));
        // Far more than the channel holds: nothing blocks.
        for _ in 0..100 {
            tx.send(WireOut::Binary(vec![0; 640])).await.unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_attached_socket_gets_its_first_messages_then_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        let (links_tx, links) = mpsc::channel::<Link<std::convert::Infallible>>(1);
        let (lost, _) = mpsc::unbounded_channel();
        let (sink_tx, mut sink_rx) = futures_channel_like();
        let task = tokio::spawn(relay(rx, links, None, lost, true, None));
        tx.send(WireOut::Text("stale".into())).await.unwrap();
        links_tx
            .send(Link::Attach {
                id: 1,
                sink: Box::pin(sink_tx),
                first: vec![WireOut::Text("hello".into())],
                convert: None,
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        tx.send(WireOut::Text("next".into())).await.unwrap();
        tx.send(WireOut::Close(crate::close::Close::new(1000, "bye"))).await.unwrap();
        task.await.unwrap().unwrap();
        let mut got = Vec::new();
        while let Ok(m) = sink_rx.try_recv() {
            got.push(m);
        }
        assert_eq!(got.first(), Some(&WireOut::Text("hello".into())));
        assert!(!got.contains(&WireOut::Text("stale".into())), "{got:?}");
        assert_eq!(got.get(1), Some(&WireOut::Text("next".into())));
        assert!(matches!(got.last(), Some(WireOut::Close(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attached_socket_is_pinged_between_what_the_call_writes() {
        let (tx, rx) = mpsc::channel(4);
        let (links_tx, links) = mpsc::channel::<Link<std::convert::Infallible>>(1);
        let (lost, _) = mpsc::unbounded_channel();
        let (sink_tx, mut sink_rx) = futures_channel_like();
        let every = std::time::Duration::from_secs(15);
        let task = tokio::spawn(relay(rx, links, Some((1, Box::pin(sink_tx) as BoxSink<_>)), lost, false, Some(every)));
        tx.send(WireOut::Text("hello".into())).await.unwrap();
        tokio::time::sleep(every * 2 + std::time::Duration::from_millis(10)).await;
        // Detached: no socket, no pings.
        links_tx.send(Link::Detach).await.unwrap();
        tokio::time::sleep(every * 3).await;
        drop(tx);
        task.await.unwrap().unwrap();
        let mut got = Vec::new();
        while let Ok(m) = sink_rx.try_recv() {
            got.push(m);
        }
        assert_eq!(got, [WireOut::Text("hello".into()), WireOut::Ping, WireOut::Ping]);
    }

    /// A sink that never fails, into an unbounded channel.
    fn futures_channel_like() -> (
        impl Sink<WireOut, Error = std::convert::Infallible> + Send,
        mpsc::UnboundedReceiver<WireOut>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = futures_util::sink::unfold(tx, |tx, m: WireOut| async move {
            let _ = tx.send(m);
            Ok::<_, std::convert::Infallible>(tx)
        });
        (sink, rx)
    }
}
