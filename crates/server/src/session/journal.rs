//! Call records written behind the calls: each session hands its finished turns
//! and its end to one writer task per process, which applies them in order, many
//! to a transaction. A call never waits on the database to go on talking, and one
//! SQLite writer keeps up with a thousand calls (one commit per batch, not per
//! turn).
//!
//! When the database fails, the batch is retried with back-off (and kept, in
//! order) while the queue holds up to its capacity ([`CAPACITY`] unless
//! `CALL_WRITE_QUEUE` says otherwise) of more writes; what does not fit
//! is counted in `voxgate_call_writes_dropped_total` and logged, never silently
//! lost. The queue's length is `voxgate_call_write_queue`.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use voxgate_domain::call::{Call, CallTurn};
use voxgate_store::Store;
use voxgate_store::calls::CallWrite;

/// Writes waiting, at most, by default: about ten turns for each of a thousand calls.
pub const CAPACITY: usize = 10_000;
/// Writes in one transaction, at most.
const BATCH: usize = 256;
/// How long a session waits for room in a full queue before it counts the write lost.
const FULL_WAIT: Duration = Duration::from_millis(200);

struct Item {
    /// `None`: a barrier, told when everything before it is written.
    write: Option<CallWrite>,
    /// Told once the write is in the database (or given up).
    done: Option<oneshot::Sender<bool>>,
}

/// The sending side, cloned into every session.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Item>,
    capacity: usize,
}

impl Journal {
    /// Starts the writer task on `store`. It ends when every [`Journal`] is dropped
    /// and the queue is written out.
    pub fn start(store: Store) -> (Journal, tokio::task::JoinHandle<()>) {
        Journal::start_with(store, CAPACITY)
    }

    /// [`Journal::start`] with a queue of `capacity` writes (at least 1).
    pub fn start_with(store: Store, capacity: usize) -> (Journal, tokio::task::JoinHandle<()>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        (Journal { tx, capacity }, tokio::spawn(write_all(store, rx)))
    }

    /// Writes a new call's record (ahead of its turns), waiting up to `within`;
    /// false if it is not written by then (it may still be, later).
    pub async fn create(&self, call: Call, within: Duration) -> bool {
        let (done, written) = oneshot::channel();
        self.push(Some(CallWrite::Create(Box::new(call))), Some(done)).await;
        matches!(tokio::time::timeout(within, written).await, Ok(Ok(true)))
    }

    /// Queues a finished turn; the receiver hears `true` once it is in the database
    /// (`false`, or a closed channel, if it was given up or could not be queued).
    pub async fn turn(&self, call_id: &str, turn: CallTurn) -> oneshot::Receiver<bool> {
        let (done, written) = oneshot::channel();
        self.push(Some(CallWrite::Turn { call_id: call_id.to_string(), turn }), Some(done)).await;
        written
    }

    /// Queues the end of a call and waits (up to `within`) until it and everything
    /// queued before it is written; false if it was not.
    pub async fn end(&self, call_id: &str, reason: &str, within: Duration) -> bool {
        let (done, written) = oneshot::channel();
        self.push(Some(CallWrite::End { call_id: call_id.to_string(), reason: reason.to_string() }), Some(done)).await;
        matches!(tokio::time::timeout(within, written).await, Ok(Ok(true)))
    }

    /// Waits (up to `within`) until everything queued so far is written.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, written) = oneshot::channel();
        self.push(None, Some(done)).await;
        matches!(tokio::time::timeout(within, written).await, Ok(Ok(true)))
    }

    async fn push(&self, write: Option<CallWrite>, done: Option<oneshot::Sender<bool>>) {
        // A barrier (no write) that cannot be queued loses nothing: its waiter hears false.
        let counts = write.is_some();
        let lost = |why: &str| {
            if counts {
                lost(why);
            }
        };
        let item = Item { write, done };
        let res = match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                match tokio::time::timeout(FULL_WAIT, self.tx.send(item)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.0),
                    Err(_) => return lost("the call-record queue is full"),
                }
            }
            Err(mpsc::error::TrySendError::Closed(item)) => Err(item),
        };
        metrics::gauge!("voxgate_call_write_queue").set(self.capacity.saturating_sub(self.tx.capacity()) as f64);
        if res.is_err() {
            lost("the call-record writer has stopped");
        }
    }
}

fn lost(why: &str) {
    metrics::counter!("voxgate_call_writes_dropped_total").increment(1);
    tracing::error!("{why}: a call-record write was dropped");
}

async fn write_all(store: Store, mut rx: mpsc::Receiver<Item>) {
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let writes: Vec<CallWrite> = batch.iter().filter_map(|i| i.write.clone()).collect();
        let oks = match apply(&store, &writes, &rx).await {
            Applied::Ok => vec![true; writes.len()],
            // One write the database refuses must not take the others with it.
            Applied::Refused if writes.len() > 1 => {
                let mut oks = Vec::with_capacity(writes.len());
                for w in &writes {
                    oks.push(matches!(apply(&store, std::slice::from_ref(w), &rx).await, Applied::Ok));
                }
                oks
            }
            Applied::Refused | Applied::GaveUp => vec![false; writes.len()],
        };
        let dropped = oks.iter().filter(|ok| !**ok).count();
        if dropped > 0 {
            metrics::counter!("voxgate_call_writes_dropped_total").increment(dropped as u64);
        }
        metrics::gauge!("voxgate_call_write_queue").set(rx.len() as f64);
        let mut oks = oks.into_iter();
        for item in batch.drain(..) {
            // A barrier is written when what came before it was dealt with.
            let ok = if item.write.is_some() { oks.next().unwrap_or(false) } else { true };
            if let Some(done) = item.done {
                let _ = done.send(ok);
            }
        }
    }
}

enum Applied {
    Ok,
    /// The database refused the writes themselves (a constraint, a bad value).
    Refused,
    /// The database stayed away while the queue filled up.
    GaveUp,
}

/// Applies `writes`, retrying with back-off while the database is away and the
/// queue has room for what keeps coming.
async fn apply(store: &Store, writes: &[CallWrite], rx: &mpsc::Receiver<Item>) -> Applied {
    if writes.is_empty() {
        return Applied::Ok;
    }
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        match store.apply_call_writes(writes).await {
            Ok(()) => return Applied::Ok,
            Err(e) if e.is_permanent() => {
                tracing::error!(error = %e, writes = writes.len(), "the database refused call-record writes");
                return Applied::Refused;
            }
            Err(e) if rx.capacity() == 0 => {
                tracing::error!(error = %e, writes = writes.len(), attempt, "the database is away and the call-record queue is full; writes dropped");
                return Applied::GaveUp;
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, writes = writes.len(), attempt, "call-record writes failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
