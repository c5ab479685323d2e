//! A bounded, fair pool for model inference. Two cores cannot run ten models at
//! once: with more jobs than workers, jobs wait in arrival order (tokio's semaphore
//! is first-in, first-out) instead of thrashing the caches, and a long job (a reply
//! generated token by token) hands its worker to a waiting one after each time slice.
//! The time a call waits is a metric and part of its turn's latency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a job may keep its worker while others wait, between two steps.
pub const DEFAULT_SLICE: Duration = Duration::from_millis(40);

/// The time one call's requests waited for a worker, summed until taken.
#[derive(Debug, Clone, Default)]
pub struct WaitMeter(Arc<Mutex<Duration>>);

impl WaitMeter {
    pub fn add(&self, d: Duration) {
        *self.0.lock().expect("wait meter lock") += d;
    }

    /// The waits since the last take.
    pub fn take(&self) -> Duration {
        std::mem::take(&mut *self.0.lock().expect("wait meter lock"))
    }
}

/// The pool was shut down (the runtime is going away).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the inference pool is closed")]
    Closed,
    #[error("an inference job panicked: {0}")]
    Panicked(String),
}

struct Inner {
    permits: Arc<Semaphore>,
    workers: usize,
    waiting: AtomicUsize,
    slice: Duration,
}

/// The pool; cheap to clone (all clones share the workers).
#[derive(Clone)]
pub struct InferencePool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool").field("workers", &self.inner.workers).finish()
    }
}

impl InferencePool {
    /// A pool that runs at most `workers` jobs at once (at least one).
    pub fn new(workers: usize) -> InferencePool {
        InferencePool::with_slice(workers, DEFAULT_SLICE)
    }

    pub fn with_slice(workers: usize, slice: Duration) -> InferencePool {
        let workers = workers.max(1);
        InferencePool {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(workers)),
                workers,
                waiting: AtomicUsize::new(0),
                slice,
            }),
        }
    }

    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Jobs waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Runs `job` on a blocking thread once a worker is free. The wait is added to
    /// `meter` and recorded as `voxgate_inference_queue_wait_seconds{stage}`. A job
    /// that runs long calls [`Turn::yield_if_contended`] between its steps.
    pub async fn run<T, F>(&self, stage: &'static str, meter: &WaitMeter, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Turn) -> T + Send + 'static,
    {
        let permit = acquire(&self.inner, stage, meter).await?;
        let mut turn = Turn {
            inner: self.inner.clone(),
            permit: Some(permit),
            since: Instant::now(),
            stage,
            meter: meter.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        metrics::gauge!("voxgate_inference_busy_workers").increment(1.0);
        let result = tokio::task::spawn_blocking(move || {
            let out = job(&mut turn);
            drop(turn);
            out
        })
        .await;
        metrics::gauge!("voxgate_inference_busy_workers").decrement(1.0);
        result.map_err(|e| match e.try_into_panic() {
            Ok(payload) => PoolError::Panicked(panic_message(payload.as_ref())),
            Err(_) => PoolError::Closed,
        })
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

async fn acquire(inner: &Arc<Inner>, stage: &'static str, meter: &WaitMeter) -> Result<OwnedSemaphorePermit, PoolError> {
    let started = Instant::now();
    inner.waiting.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("voxgate_inference_queue_depth").increment(1.0);
    let permit = inner.permits.clone().acquire_owned().await;
    inner.waiting.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("voxgate_inference_queue_depth").decrement(1.0);
    let waited = started.elapsed();
    meter.add(waited);
    metrics::histogram!("voxgate_inference_queue_wait_seconds", "stage" => stage).record(waited.as_secs_f64());
    permit.map_err(|_| PoolError::Closed)
}

/// A job's hold on a worker.
pub struct Turn {
    inner: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
    since: Instant,
    stage: &'static str,
    meter: WaitMeter,
    runtime: tokio::runtime::Handle,
}

impl Turn {
    /// Between two steps of a long job: once this job has held its worker for a
    /// time slice and another job is waiting, hands the worker over and waits for
    /// its turn again (at the back of the queue). Returns false if the pool closed.
    pub fn yield_if_contended(&mut self) -> bool {
        if self.since.elapsed() < self.inner.slice || self.inner.waiting.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.permit = None;
        metrics::counter!("voxgate_inference_yields_total", "stage" => self.stage).increment(1);
        match self.runtime.block_on(acquire(&self.inner, self.stage, &self.meter)) {
            Ok(permit) => {
                self.permit = Some(permit);
                self.since = Instant::now();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_pool_size_runs_at_once_and_waits_are_metered() {
        let pool = InferencePool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let meter = WaitMeter::default();
        let mut jobs = Vec::new();
        for _ in 0..6 {
            let (pool, running, peak, meter) = (pool.clone(), running.clone(), peak.clone(), meter.clone());
            jobs.push(tokio::spawn(async move {
                pool.run("test", &meter, move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // Six 30 ms jobs on two workers: the later ones waited at least 30 ms each.
        assert!(meter.take() >= Duration::from_millis(60));
        assert_eq!(meter.take(), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_job_hands_its_worker_to_a_waiting_one() {
        let pool = InferencePool::with_slice(1, Duration::from_millis(10));
        let long_done = Arc::new(AtomicBool::new(false));
        let meter = WaitMeter::default();
        let long = {
            let (pool, meter, long_done) = (pool.clone(), meter.clone(), long_done.clone());
            tokio::spawn(async move {
                pool.run("long", &meter, move |turn| {
                    for _ in 0..50 {
                        std::thread::sleep(Duration::from_millis(5));
                        assert!(turn.yield_if_contended());
                    }
                    long_done.store(true, Ordering::SeqCst);
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let short_meter = WaitMeter::default();
        let finished_first = pool.run("short", &short_meter, {
            let long_done = long_done.clone();
            move |_| !long_done.load(Ordering::SeqCst)
        });
        assert!(finished_first.await.unwrap(), "the short job had to wait for the whole long one");
        assert!(short_meter.take() < Duration::from_millis(100));
        long.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_frees_its_worker() {
        let pool = InferencePool::new(1);
        let meter = WaitMeter::default();
        let err = pool.run("test", &meter, |_| -> () { panic!("model exploded") }).await.unwrap_err();
        assert_eq!(err, PoolError::Panicked("model exploded".into()));
        assert_eq!(pool.run("test", &meter, |_| 7).await.unwrap(), 7);
    }
}
