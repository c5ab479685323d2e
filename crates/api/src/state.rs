//! What every handler shares: the store, the auth checker, the rate limiters, the
//! settings, and the process's lifecycle (draining or not).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use voxgate_store::Store;

use crate::auth::Auth;
use crate::cors::Origins;
use crate::ratelimit::{Limits, RateLimiter};

/// The API's settings (a slice of the binary's configuration).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Origins allowed to call the API from a browser and to open `/agent`.
    pub allowed_origins: Origins,
    /// A bearer token that may read `/api/metrics` (besides private keys).
    pub metrics_token: Option<String>,
    /// Verifies Supabase Auth user tokens when set.
    pub supabase_jwt_secret: Option<String>,
    /// The audience a Supabase token must carry.
    pub supabase_jwt_audience: String,
    /// Emails of the Supabase users who administer this server (others get 403).
    /// Only as safe as the project's email confirmation: the token does not say
    /// whether its email was confirmed.
    pub supabase_admin_emails: Vec<String>,
    /// Ids (`sub`) of the Supabase users who administer this server.
    pub supabase_admin_user_ids: Vec<String>,
    /// How long a verified key stays cached (revocation through this instance is immediate).
    pub auth_cache_ttl: Duration,
    pub rate_limits: Limits,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy you run).
    pub trust_proxy: bool,
    /// Largest JSON body.
    pub body_limit: usize,
    /// Longest a request may take (WebSockets excepted).
    pub request_timeout: Duration,
    /// What `GET /api/providers` reports.
    pub providers: crate::providers::ProviderInfo,
    /// Largest upload to `POST /api/files`.
    pub upload_limit: usize,
    /// Where uploaded files' bytes are kept (each under its id).
    pub files_dir: std::path::PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            allowed_origins: Origins::default(),
            metrics_token: None,
            supabase_jwt_secret: None,
            supabase_jwt_audience: "authenticated".into(),
            supabase_admin_emails: Vec::new(),
            supabase_admin_user_ids: Vec::new(),
            auth_cache_ttl: Duration::from_secs(10),
            rate_limits: Limits::default(),
            trust_proxy: false,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            providers: crate::providers::ProviderInfo::default(),
            upload_limit: 10 * 1024 * 1024,
            files_dir: std::env::temp_dir().join("voxgate-files"),
        }
    }
}

/// Whether this process is draining. Shared by the API (readiness) and the agent
/// (no new calls).
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The state behind every route. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub config: Arc<ApiConfig>,
    pub auth: Arc<Auth>,
    pub limiter: Arc<RateLimiter>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: PrometheusHandle,
    /// Processes uploaded files; `None` where this instance has no processor.
    pub file_jobs: Option<crate::files::SharedFileJobs>,
    /// This instance's webhook sender, woken when an event is retried by hand.
    pub webhooks: Option<voxgate_webhooks::Webhooks>,
    /// Reaches live calls (`POST /api/calls/{id}/control`); `None` where nothing can.
    pub call_control: Option<crate::control::SharedCallControl>,
}

impl ApiState {
    pub fn new(store: Store, config: ApiConfig, lifecycle: Arc<Lifecycle>) -> ApiState {
        let auth = Auth::new(store.clone(), &config);
        let limiter = RateLimiter::new(&config.rate_limits);
        ApiState {
            store,
            auth: Arc::new(auth),
            limiter: Arc::new(limiter),
            config: Arc::new(config),
            lifecycle,
            metrics: crate::metrics::install(),
            file_jobs: None,
            webhooks: None,
            call_control: None,
        }
    }

    /// Wakes `webhooks` when an event is retried through the API.
    pub fn with_webhooks(mut self, webhooks: voxgate_webhooks::Webhooks) -> ApiState {
        self.webhooks = Some(webhooks);
        self
    }

    /// Reaches live calls through `control`.
    pub fn with_call_control(mut self, control: crate::control::SharedCallControl) -> ApiState {
        self.call_control = Some(control);
        self
    }

    /// Hands uploaded files to `jobs` for processing.
    pub fn with_file_jobs(mut self, jobs: crate::files::SharedFileJobs) -> ApiState {
        self.file_jobs = Some(jobs);
        self
    }
}
