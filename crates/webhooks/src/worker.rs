//! [`Webhooks`]: the outbox writer and the delivery loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use voxgate_domain::clock::now_ms;
use voxgate_store::Store;
use voxgate_store::outbox::{NewOutboxEvent, OutboxEvent};

use crate::{Event, WebhookError, headers, sign};

/// Most bytes of a failed answer's body kept for `last_error`.
const ERROR_BODY_BYTES: usize = 512;

/// How deliveries are paced and retried.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest one attempt may take (connect, send, answer). Default 10 s.
    pub timeout: Duration,
    /// Attempts before an event is given up on (state `failed`). Default 12.
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one. Default 1 s.
    pub backoff_base: Duration,
    /// Longest wait between attempts. Default 10 minutes. With the defaults an event
    /// is tried for about 27 minutes before it is given up on.
    pub backoff_max: Duration,
    /// How often the outbox is checked when nothing wakes the loop (events enqueued
    /// by other instances, leases that ran out). Default 5 s.
    pub poll_interval: Duration,
    /// Most events claimed at once. Default 32.
    pub batch_size: u32,
    /// Most attempts in flight at once. Default 8.
    pub concurrency: usize,
    /// How long a claimed event is held by this worker before another may take it
    /// (after a crash). Raised to at least `timeout` + 1 s. Default 30 s.
    pub lease: Duration,
    /// How long `run` lets attempts in flight finish at shutdown before it abandons
    /// them and gives their leases back. Default 5 s.
    pub shutdown_grace: Duration,
    /// Largest event body accepted by `enqueue`. Default 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(10),
            max_attempts: 12,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            batch_size: 32,
            concurrency: 8,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// The wait before attempt `failures + 1`, after `failures` (>= 1) failures:
    /// `backoff_base * 2^(failures-1)`, capped at `backoff_max`, with "equal jitter"
    /// (a uniformly random point in its upper half) so receivers that come back
    /// are not hit by every sender at once.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.backoff_base.saturating_mul(1 << exp).min(self.backoff_max);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    fn lease(&self) -> Duration {
        self.lease.max(self.timeout + Duration::from_secs(1))
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered(u16),
    /// Not delivered; try again later (or give up when attempts run out).
    Retry { status: Option<u16>, error: String, retry_after: Option<Duration> },
    /// 410 Gone: the receiver says the endpoint no longer exists; give up now.
    Gone(u16, String),
}

struct Inner {
    store: Store,
    client: reqwest::Client,
    secret: Vec<u8>,
    opts: Options,
    wake: Notify,
}

/// The webhook sender: writes events to the outbox ([`Webhooks::enqueue`]) and
/// delivers them ([`Webhooks::run`]). `Send + Sync`; a clone is an `Arc` clone and
/// shares the wake-up signal, so enqueue on one clone and run another.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("secret", &"***").field("opts", &self.inner.opts).finish()
    }
}

/// The HTTP client webhooks and tool calls need: no redirects followed (a receiver's
/// redirect could send the signed body to another host), no connection to
/// link-local or metadata addresses ([`crate::outbound`]), connect timeout 5 s, a
/// voxgate user agent.
pub fn default_client() -> Result<reqwest::Client, WebhookError> {
    // reqwest is built without a crypto provider of its own; the binary installs
    // ring, and so does this when nobody has yet.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .user_agent(concat!("voxgate-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(crate::outbound::GuardedResolver)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| WebhookError::Client(error_chain(&e.without_url())))
}

impl Webhooks {
    /// Webhooks over `store` with their own HTTP client ([`default_client`]).
    /// `secret` signs every event; an empty one is refused ([`WebhookError::NoSecret`]).
    pub fn new(store: Store, secret: &str, opts: Options) -> Result<Webhooks, WebhookError> {
        Webhooks::with_client(store, default_client()?, secret, opts)
    }

    /// The same with a client of the caller's. It should not follow redirects (see
    /// [`default_client`]); the per-attempt timeout is applied here.
    pub fn with_client(store: Store, client: reqwest::Client, secret: &str, opts: Options) -> Result<Webhooks, WebhookError> {
        if secret.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        let inner = Inner { store, client, secret: secret.as_bytes().to_vec(), opts, wake: Notify::new() };
        Ok(Webhooks { inner: Arc::new(inner) })
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Writes the event to the outbox (durable when this returns) and wakes the
    /// delivery loop. Returns the event id. Refuses a URL that is not absolute
    /// http(s) and a body over `max_body_bytes`.
    pub async fn enqueue(&self, event: Event) -> Result<String, WebhookError> {
        check_url(&event.url)?;
        if event.body.len() > self.inner.opts.max_body_bytes {
            return Err(WebhookError::TooLarge { bytes: event.body.len(), max: self.inner.opts.max_body_bytes });
        }
        let row = NewOutboxEvent {
            id: event.id,
            event_type: event.kind,
            call_id: event.call_id,
            assistant_id: event.assistant_id,
            url: event.url,
            body: event.body,
            created_at: event.created_at,
        };
        self.inner.store.enqueue_webhook(&row).await?;
        metrics::gauge!("voxgate_webhook_outbox_pending").increment(1.0);
        self.inner.wake.notify_one();
        Ok(row.id)
    }

    /// Wakes the delivery loop (after a manual retry, for instance).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// One round: claims the events due now (up to `batch_size`), attempts them
    /// (at most `concurrency` at once) and records the results. Returns how many
    /// were attempted. [`Webhooks::run`] does this in a loop; this is for tests and
    /// one-shot tools.
    pub async fn deliver_due(&self) -> Result<usize, WebhookError> {
        let opts = &self.inner.opts;
        let now = now_ms();
        let lease_until = now + opts.lease().as_millis() as i64;
        let events = self.inner.store.claim_webhooks(opts.batch_size, now, lease_until).await?;
        let n = events.len();
        let mut tasks = JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
        for ev in events {
            let this = self.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                this.deliver(ev).await
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    /// The delivery loop, until `shutdown` is cancelled. Picks up whatever is
    /// pending in the outbox on start (that is how a restart loses nothing), then
    /// claims due events whenever woken by [`Webhooks::enqueue`], by a retry falling
    /// due, or every `poll_interval`. At shutdown, attempts in flight get
    /// `shutdown_grace` to finish; the rest are abandoned and their leases given
    /// back uncounted (the receiver may then see the event again: delivery is
    /// at least once, deduplicate by event id).
    pub async fn run(self, shutdown: CancellationToken) {
        let opts = self.inner.opts.clone();
        let concurrency = opts.concurrency.max(1);
        let mut inflight: JoinSet<Option<i64>> = JoinSet::new();
        let mut leases: HashMap<tokio::task::Id, (String, i64)> = HashMap::new();
        let mut next_due: Option<i64> = None;
        let mut gauge_at: Option<Instant> = None;
        tracing::info!(concurrency, max_attempts = opts.max_attempts, "webhook delivery started");

        while !shutdown.is_cancelled() {
            let now = now_ms();
            let free = concurrency - inflight.len().min(concurrency);
            let mut full = false;
            if free > 0 {
                let want = (free as u32).min(opts.batch_size.max(1));
                let lease_until = now + opts.lease().as_millis() as i64;
                match self.inner.store.claim_webhooks(want, now, lease_until).await {
                    Ok(events) => {
                        full = events.len() as u32 == want;
                        for ev in events {
                            let key = (ev.id.clone(), lease_until);
                            let this = self.clone();
                            let handle = inflight.spawn(async move { this.deliver(ev).await });
                            leases.insert(handle.id(), key);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhooks: cannot claim events from the outbox"),
                }
            }
            if gauge_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                if let Ok(n) = self.inner.store.count_pending_webhooks().await {
                    metrics::gauge!("voxgate_webhook_outbox_pending").set(n as f64);
                }
                gauge_at = Some(Instant::now());
            }
            if full && inflight.len() < concurrency {
                continue; // more may be due
            }

            let poll_at = now_ms() + opts.poll_interval.as_millis() as i64;
            let wait_ms = next_due.map_or(poll_at, |d| d.min(poll_at)) - now_ms();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait_ms.max(0) as u64)) => {
                    if next_due.is_some_and(|d| d <= now_ms()) {
                        next_due = None;
                    }
                }
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    if let Ok((id, retry_at)) = done {
                        leases.remove(&id);
                        if let Some(t) = retry_at {
                            next_due = Some(next_due.map_or(t, |d| d.min(t)));
                        }
                    }
                }
            }
        }

        // Shutdown: let attempts in flight finish for a while, then abandon the rest.
        let grace = tokio::time::sleep(opts.shutdown_grace);
        tokio::pin!(grace);
        while !inflight.is_empty() {
            tokio::select! {
                _ = &mut grace => break,
                done = inflight.join_next_with_id() => {
                    if let Some(Ok((id, _))) = done {
                        leases.remove(&id);
                    }
                }
            }
        }
        inflight.abort_all();
        while let Some(done) = inflight.join_next_with_id().await {
            if let Ok((id, _)) = done {
                leases.remove(&id);
            }
        }
        let abandoned: Vec<(String, i64)> = leases.into_values().collect();
        if !abandoned.is_empty() {
            match self.inner.store.release_webhook_leases(&abandoned).await {
                Ok(n) => tracing::info!(released = n, "webhooks: gave back the leases of attempts cut by shutdown"),
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot give back leases; they run out by themselves"),
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Attempts one claimed event and records the result. Returns the next attempt's
    /// time if it is to be retried.
    async fn deliver(&self, ev: OutboxEvent) -> Option<i64> {
        let inner = &*self.inner;
        let lease = ev.lease_until.unwrap_or_default();
        let started = Instant::now();
        let outcome = self.attempt(&ev).await;
        metrics::histogram!("voxgate_webhook_delivery_seconds").record(started.elapsed().as_secs_f64());
        let failures = u32::try_from(ev.attempts).unwrap_or(u32::MAX).saturating_add(1);
        let (status, error, next) = match outcome {
            Outcome::Delivered(status) => {
                metrics::counter!("voxgate_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                metrics::gauge!("voxgate_webhook_outbox_pending").decrement(1.0);
                if let Err(e) = inner.store.mark_webhook_delivered(&ev.id, status, now_ms()).await {
                    // The lease runs out and the event is sent again: at least once.
                    tracing::warn!(event = %ev.id, error = %e, "webhooks: delivered but cannot record it");
                }
                tracing::debug!(event = %ev.id, kind = %ev.event_type, status, "webhook delivered");
                return None;
            }
            Outcome::Gone(status, error) => (Some(status), error, None),
            Outcome::Retry { status, error, retry_after } => {
                if failures >= inner.opts.max_attempts {
                    (status, error, None)
                } else {
                    let wait = inner.opts.backoff(failures).max(retry_after.unwrap_or_default().min(inner.opts.backoff_max));
                    (status, error, Some(now_ms() + wait.as_millis() as i64))
                }
            }
        };
        let outcome = if next.is_some() { "retry" } else { "failed" };
        metrics::counter!("voxgate_webhook_deliveries_total", "outcome" => outcome).increment(1);
        if next.is_none() {
            metrics::gauge!("voxgate_webhook_outbox_pending").decrement(1.0);
            tracing::warn!(event = %ev.id, kind = %ev.event_type, attempts = failures, status, error = %error, "webhook given up");
        } else {
            tracing::debug!(event = %ev.id, attempts = failures, status, error = %error, "webhook attempt failed");
        }
        if let Err(e) = inner.store.record_webhook_failure(&ev.id, lease, status, &error, next).await {
            tracing::warn!(event = %ev.id, error = %e, "webhooks: cannot record a failed attempt");
        }
        next
    }

    /// One signed POST under the per-attempt timeout.
    async fn attempt(&self, ev: &OutboxEvent) -> Outcome {
        let inner = &*self.inner;
        let request = inner
            .client
            .post(&ev.url)
            .timeout(inner.opts.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(headers::EVENT_ID, &ev.id)
            .header(headers::EVENT_TYPE, &ev.event_type);
        let request = sign::signed(request, &inner.secret, ev.body.as_bytes()).body(ev.body.clone());
        let exchange = async {
            let mut resp = request.send().await.map_err(describe)?;
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Ok(Outcome::Delivered(status));
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_BYTES {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            body.truncate(ERROR_BODY_BYTES);
            let text: String = String::from_utf8_lossy(&body).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let error = format!("HTTP {status}: {}", text.trim());
            if status == 410 {
                return Ok(Outcome::Gone(status, error));
            }
            Ok(Outcome::Retry { status: Some(status), error, retry_after })
        };
        match tokio::time::timeout(inner.opts.timeout, exchange).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Outcome::Retry { status: None, error, retry_after: None },
            Err(_) => Outcome::Retry {
                status: None,
                error: format!("no answer within {} ms", inner.opts.timeout.as_millis()),
                retry_after: None,
            },
        }
    }
}

/// A transport error's text, without the URL (it may carry a token of the customer's).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error_chain(&e))
}

/// An error and its sources, joined, with any URL left out.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        let s = match s.find(" for url (") {
            Some(i) => s[..i].to_string(),
            None => s,
        };
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn check_url(url: &str) -> Result<(), WebhookError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| WebhookError::BadUrl("not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::BadUrl("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::BadUrl("no host"));
    }
    crate::outbound::check_host(&parsed).map_err(WebhookError::BadUrl)
}
