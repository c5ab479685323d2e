//! The one HTTP client of the process, and its connection count.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::Error;
use crate::stats;

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long opening a TCP (and TLS) connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static SHARED: OnceLock<reqwest::Client> = OnceLock::new();

/// The process-wide client (built on first use).
pub(crate) fn shared() -> Result<reqwest::Client, Error> {
    if let Some(client) = SHARED.get() {
        return Ok(client.clone());
    }
    let built = build()?;
    Ok(SHARED.get_or_init(|| built).clone())
}

/// A new client with its own connection pool.
pub(crate) fn build() -> Result<reqwest::Client, Error> {
    // reqwest is built without a crypto provider of its own and panics without one;
    // the binary installs ring, and so does this when nobody has yet.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .user_agent(concat!("voxgate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(32)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        // An API call is never redirected; following one could carry the key elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .connector_layer(CountConnections)
        .build()
        .map_err(|e| Error::Client(crate::call::error_chain(&e.without_url())))
}

/// Counts the connections the pool opens (reqwest cannot tell how many are open,
/// and its connection type cannot be wrapped to see them close).
#[derive(Clone, Copy)]
struct CountConnections;

impl<S> tower_layer::Layer<S> for CountConnections {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner)
    }
}

#[derive(Clone)]
struct Counted<S>(S);

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let connecting = self.0.call(request);
        Box::pin(async move {
            let result = connecting.await;
            let name = if result.is_ok() { stats::CONNECTIONS_OPENED } else { stats::CONNECT_ERRORS };
            metrics::counter!(name).increment(1);
            result
        })
    }
}
