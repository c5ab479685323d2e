//! `voxgate bench`: a load generator for the voice pipeline. Opens N calls at
//! `/agent` through the real protocol (docs/agent-protocol.md), each a task that
//! streams a spoken phrase in real time in 20 ms messages, then silence until the
//! reply has played, for T turns, then hangs up with `end`. It measures, per turn
//! and on the client's clock:
//!
//! - **overhead**: the arrival of the reply's first audio frame minus (the send
//!   time of the frame holding the phrase's last voiced sample + the assistant's
//!   endpointing silence). With instant scripted providers (`voxgate serve
//!   --providers scripted`) that is the time the platform itself adds, as
//!   `../shared/PERFORMANCE.md` defines it for the peers;
//! - every numeric field of the server's `latency` events (`endpointingMs`,
//!   `voiceToVoiceMs`, `responseMs` when the server sends it, ...);
//! - **jitter**: how far the gaps between a reply's audio frames stray from 20 ms;
//! - **send lag**: how late the client sent its own frames (a saturated client
//!   shows here first, and then its other numbers are not the server's);
//! - errors: failed connects, `error` events, calls that did not end as asked,
//!   turns without a reply;
//! - with `--server-pid`, the server's CPU time and resident memory from `/proc`;
//! - with a `--key` that may read `/api/metrics`, the server's runtime lag and the
//!   frames it dropped over the run because it fell behind (a full pipeline or
//!   writer); such a dropped frame makes the run fail, as a failed turn does. The
//!   counters are the whole server's: run against a server no one else uses.
//!
//! [`run`] prints a table (or JSON) and returns the [`BenchReport`].

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use voxgate_audio::pcm;

pub use crate::config::BenchArgs;

/// Samples in one 20 ms message of 16 kHz audio (the rate sent, and asked back).
const FRAME_SAMPLES: usize = 320;
const FRAME: Duration = Duration::from_millis(20);
/// What the caller says when no `--wav` is given (spoken by espeak-ng).
pub const DEFAULT_PHRASE: &str = "what time does the library open tomorrow";
/// How long to wait for `call-started` after `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server to close after `end`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server's (and our own) CPU time and memory are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// A call this far behind its sending schedule starts the schedule over rather
/// than send a burst.
const MAX_LAG: Duration = Duration::from_millis(200);
/// `/proc/<pid>/stat` counts CPU time in clock ticks: USER_HZ, 100 on Linux.
const CLK_TCK: f64 = 100.0;
/// The name of `voiceToVoiceMs − endpointingMs` among the server's numbers.
pub const DERIVED_RESPONSE: &str = "voiceToVoiceMs-endpointingMs";
/// The `endedReason` of a call the caller ended with `end`.
const CUSTOMER_ENDED: &str = "customer-ended-call";

/// p50/p95/p99/max of a set of samples, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(values: &mut [f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |p| percentile(values, p).unwrap_or_default();
        Some(Stats {
            n: values.len(),
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

/// The `p`th percentile (0-100) of sorted values, by the nearest-rank method: the
/// smallest value with at least `p` % of the values at or below it. `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The server's CPU and memory over the run (`--server-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerUsage {
    pub pid: u32,
    /// CPU time over wall time from the first call's opening to the last call's end,
    /// in % of one core.
    pub cpu_percent: f64,
    /// The same while the most calls were live (all of them, unless some failed).
    pub cpu_percent_live: Option<f64>,
    /// The most calls live at once, and for how long, in seconds.
    pub max_live: usize,
    pub live_secs: f64,
    /// Resident memory before the first call, at its highest during the run (sampled
    /// every 250 ms), and after the last call ended, in KiB.
    pub rss_baseline_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    /// The process's own high-water mark (VmHWM) at the end: the peak over its whole
    /// life, so only comparable on a server started for this run.
    pub rss_hwm_kib: u64,
    /// (peak − baseline) / calls live at once.
    pub memory_per_call_kib: f64,
    /// cpu_percent_live (or cpu_percent) / max_live.
    pub cpu_percent_per_call: f64,
}

/// How late the server's runtime probe woke (`voxgate_runtime_lag_seconds`) between
/// a scrape before the first call and one after the last: the delay every paced
/// reply frame met on the server. With it, reply jitter splits into the server's
/// part and the network's and client's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeLag {
    /// Wakes of the probe over the run.
    pub wakes: u64,
    pub mean_ms: f64,
    /// The upper bound of the histogram bucket holding the percentile (`None`
    /// past the last bucket).
    pub p50_ms_at_most: Option<f64>,
    pub p99_ms_at_most: Option<f64>,
    /// Share of the wakes later than 20 ms, in % (`None` when the server's
    /// histogram has no 20 ms bucket).
    pub over_20ms_percent: Option<f64>,
}

/// One scrape of `/api/metrics`, what the bench reads of it: the cumulative buckets
/// of `voxgate_runtime_lag_seconds` (upper bound in seconds, count), its sum in
/// seconds and its count, and the frames dropped for falling behind.
#[derive(Debug, Clone, Default, PartialEq)]
struct MetricsScrape {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
    /// Frames dropped because the server fell behind: `voxgate_dropped_frames_total`
    /// for `pipeline-full` and `writer-full`, and `voxgate_pipeline_dropped_frames_total`.
    dropped: f64,
}

const LAG_METRIC: &str = "voxgate_runtime_lag_seconds";
const DROPPED_METRIC: &str = "voxgate_dropped_frames_total";
const STAGE_DROPPED_METRIC: &str = "voxgate_pipeline_dropped_frames_total";

impl MetricsScrape {
    /// From the Prometheus text; `None` when the histogram is not there.
    fn parse(text: &str) -> Option<MetricsScrape> {
        let mut s = MetricsScrape::default();
        let mut seen = false;
        // A counter never incremented is not exported: none is zero.
        for line in text.lines() {
            let (series, value) = match line.rsplit_once(' ') {
                Some((series, value)) if series.starts_with(DROPPED_METRIC) || series.starts_with(STAGE_DROPPED_METRIC) => (series, value),
                _ => continue,
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let behind = match name {
                // Only the server falling behind, not a client's doing (audio before
                // `start`, a socket lost while the call waits for a resume).
                DROPPED_METRIC => ["reason=\"pipeline-full\"", "reason=\"writer-full\""].iter().any(|r| labels.contains(r)),
                STAGE_DROPPED_METRIC => true,
                _ => false,
            };
            if behind {
                s.dropped += value.trim().parse::<f64>().ok()?;
            }
        }
        for line in text.lines().filter(|l| l.starts_with(LAG_METRIC)) {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let rest = &series[LAG_METRIC.len()..];
            if rest == "_sum" {
                s.sum = value;
            } else if rest == "_count" {
                s.count = value;
                seen = true;
            } else if let Some(le) = rest.strip_prefix("_bucket{le=\"").and_then(|r| r.strip_suffix("\"}")) {
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                s.buckets.push((le, value));
            }
        }
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        seen.then_some(s)
    }

    /// Frames the server dropped between `before` and `self`.
    fn dropped_since(&self, before: &MetricsScrape) -> u64 {
        (self.dropped - before.dropped).max(0.0) as u64
    }

    /// What happened between `before` and `self`.
    fn since(&self, before: &MetricsScrape) -> RuntimeLag {
        let wakes = (self.count - before.count).max(0.0);
        let earlier = |le: f64| before.buckets.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
        let buckets: Vec<(f64, f64)> = self.buckets.iter().map(|&(le, n)| (le, (n - earlier(le)).max(0.0))).collect();
        let at_most = |q: f64| -> Option<f64> {
            let rank = (q * wakes).ceil().max(1.0);
            buckets.iter().find(|b| b.1 >= rank).map(|b| b.0 * 1000.0).filter(|ms| ms.is_finite())
        };
        let within_20ms = buckets.iter().find(|b| (b.0 - 0.02).abs() < 1e-12).map(|b| b.1);
        RuntimeLag {
            wakes: wakes as u64,
            mean_ms: if wakes > 0.0 { (self.sum - before.sum) / wakes * 1000.0 } else { 0.0 },
            p50_ms_at_most: if wakes > 0.0 { at_most(0.50) } else { None },
            p99_ms_at_most: if wakes > 0.0 { at_most(0.99) } else { None },
            over_20ms_percent: within_20ms.map(|n| if wakes > 0.0 { (wakes - n).max(0.0) / wakes * 100.0 } else { 0.0 }),
        }
    }
}

/// `GET /api/metrics`, reduced to what the bench reads of it; `None` when the key may
/// not read it (a public key, or none) or the server does not report the runtime lag.
async fn scrape_metrics(base: &str, key: Option<&str>) -> Option<MetricsScrape> {
    let url = format!("{}/api/metrics", http_base(base).ok()?);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
    let mut req = client.get(&url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    MetricsScrape::parse(&res.text().await.ok()?)
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// Calls run (opened, or tried), in all.
    pub calls: usize,
    /// Calls live at once (`--calls`).
    pub concurrency: usize,
    pub turns_per_call: u32,
    pub ramp_secs: f64,
    /// The phrase after trimming its silences, and the endpointing silence used.
    pub phrase_ms: u64,
    pub silence_ms: u32,
    pub connected: usize,
    pub connect_failed: usize,
    /// Calls that ended with `customer-ended-call` after every turn.
    pub ended_normally: usize,
    pub turns_ok: usize,
    pub turns_failed: usize,
    /// First reply audio − (last voiced frame sent + endpointing silence), per turn.
    pub overhead_ms: Option<Stats>,
    /// Every numeric field of the `latency` events, by name (e.g. `responseMs`),
    /// and [`DERIVED_RESPONSE`]: decision to first reply frame, by the server's clock.
    pub server_latency_ms: BTreeMap<String, Stats>,
    /// |gap between consecutive reply audio frames − 20 ms|.
    pub jitter_ms: Option<Stats>,
    /// How late the client sent its frames against their schedule.
    pub send_lag_ms: Option<Stats>,
    /// Times a call fell more than 200 ms behind and restarted its schedule.
    pub send_restarts: u64,
    /// `error` events received, over all calls.
    pub error_events: usize,
    /// Problems, most frequent first: (message, count).
    pub errors: Vec<(String, usize)>,
    pub server: Option<ServerUsage>,
    /// The server's runtime lag over the run, when `--key` may read `/api/metrics`.
    pub server_runtime_lag: Option<RuntimeLag>,
    /// Frames the server dropped over the run because it fell behind
    /// (`voxgate_dropped_frames_total` for `pipeline-full` and `writer-full`, and
    /// `voxgate_pipeline_dropped_frames_total`), when `--key` may read `/api/metrics`.
    pub server_dropped_frames: Option<u64>,
    /// This process's CPU over the run, in % of one core.
    pub client_cpu_percent: f64,
    pub wall_secs: f64,
}

impl BenchReport {
    /// `None` when every call connected, every turn succeeded and every call ended
    /// as asked; otherwise what went wrong, in a sentence.
    pub fn problem(&self) -> Option<String> {
        let dropped = self.server_dropped_frames.unwrap_or(0);
        if self.connect_failed == 0 && self.turns_failed == 0 && self.ended_normally == self.calls && self.error_events == 0 && dropped == 0 {
            return None;
        }
        if self.connect_failed == 0 && self.turns_failed == 0 && self.ended_normally == self.calls && self.error_events == 0 {
            return Some(format!("the server dropped {dropped} audio frames"));
        }
        let first = self.errors.first().map(|(m, n)| format!("; most frequent: {m} (x{n})")).unwrap_or_default();
        Some(format!(
            "{} of {} calls failed to connect, {} of {} turns failed, {} of {} calls ended normally, {} error events{first}",
            self.connect_failed,
            self.calls,
            self.turns_failed,
            self.calls * self.turns_per_call as usize,
            self.ended_normally,
            self.calls,
            self.error_events
        ))
    }
}

/// Runs `voxgate bench`, printing the report to standard output.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let mut out = std::io::stdout();
    run_with(args, &mut out).await
}

/// [`run`], printing to `out`. `Err` when the run could not start (bad arguments,
/// no phrase, the assistant unreadable); failed calls and turns are in the report.
pub async fn run_with(args: BenchArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<BenchReport> {
    crate::init_crypto();
    if args.calls == 0 {
        bail!("--calls must be at least 1");
    }
    if args.turns == 0 {
        bail!("--turns must be at least 1");
    }
    if args.total == Some(0) {
        bail!("--total must be at least 1");
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && (0.0..=7.0 * 86400.0).contains(&d))
    {
        bail!("--duration must be a number of seconds from 0 to a week, not {d}");
    }
    if !args.ramp.is_finite() || !(0.0..=3600.0).contains(&args.ramp) {
        bail!("--ramp must be a number of seconds from 0 to 3600, not {}", args.ramp);
    }
    if !args.turn_timeout.is_finite() || !(0.1..=600.0).contains(&args.turn_timeout) {
        bail!("--turn-timeout must be a number of seconds from 0.1 to 600, not {}", args.turn_timeout);
    }
    if args.target.assistant.trim().is_empty() {
        bail!("--assistant is empty");
    }
    let key = args.target.key.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let phrase = Arc::new(match &args.wav {
        Some(path) => Phrase::new(&crate::call::load_wav(path)?).with_context(|| format!("the phrase in {}", path.display()))?,
        None => Phrase::new(&spoken(DEFAULT_PHRASE)?).context("the phrase espeak-ng spoke")?,
    });
    let (silence_ms, greeting) = match args.silence_ms {
        Some(ms) => (ms, None),
        None => {
            let a = read_assistant(&args.target.url, key, &args.target.assistant).await?;
            let ms =
                a["endpointing"]["silenceMs"].as_u64().ok_or_else(|| anyhow!("the assistant has no endpointing.silenceMs; pass --silence-ms"))?;
            let greets =
                a["firstMessageMode"].as_str() != Some("user-speaks-first") && a["firstMessage"].as_str().is_some_and(|m| !m.trim().is_empty());
            (u32::try_from(ms).unwrap_or(u32::MAX), Some(greets))
        }
    };
    let url = crate::call::agent_url(&args.target.url, &args.target.assistant)?;
    let plan = Arc::new(Plan {
        url,
        key: key.map(str::to_string),
        turns: args.turns,
        silence: Duration::from_millis(u64::from(silence_ms)),
        gap: Duration::from_millis(args.gap_ms),
        turn_timeout: Duration::from_secs_f64(args.turn_timeout),
        greeting,
        phrase: phrase.clone(),
        silence_frame: Bytes::from(vec![0u8; FRAME_SAMPLES * 2]),
    });

    let before = scrape_metrics(&args.target.url, key).await;
    let live = Arc::new(AtomicUsize::new(0));
    let sampler = Sampler::start(args.server_pid, live.clone())?;
    let started = Instant::now();
    let step = Duration::from_secs_f64(args.ramp / args.calls as f64);
    // Each place runs calls one after another until the total is opened or the
    // duration is over; by default, one call.
    let total = match (args.total, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
        (None, None) => args.calls,
    };
    let until = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let opened = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.calls)
        .map(|i| {
            let plan = plan.clone();
            let live = live.clone();
            let opened = opened.clone();
            let at = started + step * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let mut results = Vec::new();
                while until.is_none_or(|u| Instant::now() < u) && opened.fetch_add(1, Ordering::Relaxed) < total {
                    results.push(run_call(&plan, &live).await);
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => results.extend(r),
            Err(e) => results.push(CallResult::failed_to_connect(format!("the call's task failed: {e}"), args.turns)),
        }
    }
    let wall = started.elapsed();
    let usage = sampler.finish(args.calls).await;
    let scrapes = match before {
        Some(before) => scrape_metrics(&args.target.url, key).await.map(|after| (before, after)),
        None => None,
    };

    let mut report = summarize(&args, &phrase, silence_ms, results, usage, wall);
    report.server_runtime_lag = scrapes.as_ref().map(|(before, after)| after.since(before));
    report.server_dropped_frames = scrapes.as_ref().map(|(before, after)| after.dropped_since(before));
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(out, "{}", table(&report))?;
    }
    let _ = out.flush();
    Ok(report)
}

/// The caller's phrase in 20 ms messages, silences at either end trimmed, so the
/// last message holds the last voiced sample.
struct Phrase {
    frames: Vec<Bytes>,
    ms: u64,
}

impl Phrase {
    fn new(samples: &[i16]) -> anyhow::Result<Phrase> {
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        if peak < 1000 {
            bail!("it is silent (peak {peak} of 32768)");
        }
        // Voiced: above 5 % of the peak. The tails of espeak-ng's speech are far below.
        let floor = (peak / 20).max(100);
        let voiced = |s: &i16| s.unsigned_abs() >= floor;
        let first = samples.iter().position(voiced).unwrap_or(0);
        let last = samples.iter().rposition(voiced).unwrap_or(samples.len() - 1);
        let frames: Vec<Bytes> = samples[first..=last]
            .chunks(FRAME_SAMPLES)
            .map(|c| {
                let mut f = c.to_vec();
                f.resize(FRAME_SAMPLES, 0);
                Bytes::from(pcm::encode_pcm16le(&f))
            })
            .collect();
        let ms = frames.len() as u64 * 20;
        Ok(Phrase { frames, ms })
    }
}

/// `text` spoken by espeak-ng, at 16 kHz.
fn spoken(text: &str) -> anyhow::Result<Vec<i16>> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("voxgate-bench-{}.wav", std::process::id()));
    let status = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg(text)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow!("cannot run espeak-ng to make the caller's phrase ({e}); install it (scripts/setup.sh) or pass --wav"))?;
    if !status.success() {
        bail!("espeak-ng failed ({status}) making the caller's phrase; pass --wav");
    }
    let samples = crate::call::load_wav(&path);
    let _ = std::fs::remove_file(&path);
    samples
}

/// `GET /api/assistants/{id}`, with errors that say what to fix.
async fn read_assistant(base: &str, key: Option<&str>, id: &str) -> anyhow::Result<Value> {
    let base = http_base(base)?;
    let url = format!("{base}/api/assistants/{}", crate::call::encode_query(id));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let mut req = client.get(&url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let what = format!("cannot read the assistant's endpointing silence (GET {url})");
    let res = req.send().await.with_context(|| what.clone())?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("");
        let hint = match status.as_u16() {
            401 => "; check --key (or VOXGATE_KEY): it must be a live private key of this server",
            403 => "; a private key is needed",
            404 => "; check --assistant",
            _ => "",
        };
        bail!("{what}: HTTP {}: {message}{hint}", status.as_u16());
    }
    Ok(body)
}

/// `http(s)://host[:port][/base]` from what `--url` takes.
fn http_base(base: &str) -> anyhow::Result<String> {
    let (secure, rest) = crate::call::split_url(base)?;
    let scheme = if secure { "https" } else { "http" };
    let rest = rest.strip_suffix("/agent").unwrap_or(rest);
    Ok(format!("{scheme}://{rest}"))
}

/// What every call does.
struct Plan {
    url: String,
    key: Option<String>,
    turns: u32,
    silence: Duration,
    gap: Duration,
    turn_timeout: Duration,
    /// Whether the assistant greets first: `None` when unknown (then a reply that
    /// starts before the first phrase is taken for a greeting).
    greeting: Option<bool>,
    phrase: Arc<Phrase>,
    silence_frame: Bytes,
}

/// What one call measured.
#[derive(Debug, Default)]
struct CallResult {
    connect_error: Option<String>,
    started: bool,
    ended_normally: bool,
    turns_ok: u32,
    turns_failed: u32,
    overhead_ms: Vec<f64>,
    jitter_ms: Vec<f64>,
    lag_ms: Vec<f64>,
    restarts: u64,
    server: BTreeMap<String, Vec<f64>>,
    error_events: usize,
    errors: Vec<String>,
}

impl CallResult {
    /// A call that never connected: every one of its turns failed.
    fn failed_to_connect(why: String, turns: u32) -> CallResult {
        CallResult { connect_error: Some(why), turns_failed: turns, ..CallResult::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `start` sent; waiting for `call-started` until the instant.
    Starting(Instant),
    /// The assistant's greeting is playing; it must end by the instant.
    Greeting(Instant),
    /// Silence until the instant; then the next phrase, or `end`.
    Gap(Instant),
    /// Sending the phrase; the next message is this one.
    Phrase(usize),
    /// The phrase is sent: the reply's first audio is expected at `expected`
    /// (the last voiced frame's send time + the endpointing silence) and must come
    /// by `deadline`.
    Awaiting { expected: Instant, deadline: Instant },
    /// The reply is playing; it must go on (or end) by the instant.
    Replying(Instant),
    /// `end` sent: waiting for the close until the instant.
    Closing(Instant),
}

/// One call, start to end.
async fn run_call(plan: &Plan, live: &AtomicUsize) -> CallResult {
    let ws = match crate::call::connect(&plan.url, plan.key.as_deref()).await {
        Ok(ws) => ws,
        Err(e) => return CallResult::failed_to_connect(format!("connect: {e:#}"), plan.turns),
    };
    let mut call = CallState {
        plan,
        r: CallResult::default(),
        phase: Phase::Starting(Instant::now() + START_TIMEOUT),
        turns_begun: 0,
        turn_spoiled: false,
        bot_speaking: false,
        last_frame: None,
        ended_reason: None,
        close: None,
        ending: false,
    };
    call.run(ws, live).await;
    if call.r.started {
        live.fetch_sub(1, Ordering::Relaxed);
    }
    call.finish()
}

struct CallState<'a> {
    plan: &'a Plan,
    r: CallResult,
    phase: Phase,
    turns_begun: u32,
    /// The current turn already failed (its reply came too early).
    turn_spoiled: bool,
    /// Between bot-speech-started and bot-speech-stopped.
    bot_speaking: bool,
    /// When the last reply frame arrived, within the current reply.
    last_frame: Option<Instant>,
    ended_reason: Option<String>,
    close: Option<String>,
    /// `end` was sent.
    ending: bool,
}

impl CallState<'_> {
    async fn run(&mut self, ws: crate::call::Ws, live: &AtomicUsize) {
        let (mut tx, mut rx) = ws.split();
        let start = r#"{"type":"start","audio":{"encoding":"pcm16","sampleRate":16000,"outputSampleRate":16000}}"#;
        if let Err(e) = tx.send(Message::Text(start.into())).await {
            self.error(format!("sending start: {e}"));
            return;
        }
        let mut next_send = Instant::now();
        let tick = tokio::time::sleep_until(next_send);
        tokio::pin!(tick);
        loop {
            let wake = match self.phase {
                Phase::Starting(until) | Phase::Closing(until) => until,
                _ => next_send,
            };
            if tick.deadline() != wake {
                tick.as_mut().reset(wake);
            }
            tokio::select! {
                msg = rx.next() => match msg {
                    Some(Ok(msg)) => {
                        if self.on_message(msg) {
                            live.fetch_add(1, Ordering::Relaxed);
                            next_send = Instant::now();
                        }
                    }
                    Some(Err(e)) => {
                        if self.close.is_none() && self.ended_reason.is_none() {
                            self.error(format!("connection failed: {e}"));
                        }
                        break;
                    }
                    None => break,
                },
                () = &mut tick => match self.phase {
                    Phase::Starting(_) => {
                        self.error(format!("no call-started within {} s", START_TIMEOUT.as_secs()));
                        break;
                    }
                    Phase::Closing(_) => {
                        self.error(format!("the server did not close within {} s of end", CLOSE_TIMEOUT.as_secs()));
                        break;
                    }
                    _ => {
                        let now = Instant::now();
                        let lag = now.saturating_duration_since(next_send);
                        self.r.lag_ms.push(ms(lag));
                        if lag > MAX_LAG {
                            self.r.restarts += 1;
                            next_send = now;
                        }
                        next_send += FRAME;
                        match self.on_tick(now) {
                            Some(frame) => {
                                if tx.send(Message::Binary(frame)).await.is_err() {
                                    // The reader sees why.
                                    self.phase = Phase::Closing(Instant::now() + CLOSE_TIMEOUT);
                                    continue;
                                }
                                if let Phase::Phrase(pos) = self.phase {
                                    self.sent_phrase_frame(pos);
                                }
                            }
                            None => {
                                self.ending = true;
                                let _ = tx.send(Message::Text(r#"{"type":"end"}"#.into())).await;
                                self.phase = Phase::Closing(Instant::now() + CLOSE_TIMEOUT);
                            }
                        }
                    }
                },
            }
        }
        let _ = tx.close().await;
    }

    /// Time-driven moves; the frame to send now, or `None` to hang up.
    fn on_tick(&mut self, now: Instant) -> Option<Bytes> {
        match self.phase {
            Phase::Gap(until) if now >= until => {
                if self.turns_begun >= self.plan.turns {
                    return None;
                }
                self.turns_begun += 1;
                self.turn_spoiled = false;
                self.phase = Phase::Phrase(0);
            }
            Phase::Greeting(until) if now >= until => {
                self.error("the greeting did not finish in time".into());
                self.phase = Phase::Gap(now + self.plan.gap);
            }
            Phase::Awaiting { deadline, .. } if now >= deadline => {
                self.turn_failed("no reply audio in time".into());
            }
            Phase::Replying(deadline) if now >= deadline => {
                self.turn_failed("the reply did not finish (no bot-speech-stopped)".into());
            }
            _ => {}
        }
        Some(match self.phase {
            Phase::Phrase(pos) => self.plan.phrase.frames[pos].clone(),
            _ => self.plan.silence_frame.clone(),
        })
    }

    /// The phrase's frame `pos` has just been sent.
    fn sent_phrase_frame(&mut self, pos: usize) {
        if pos + 1 < self.plan.phrase.frames.len() {
            self.phase = Phase::Phrase(pos + 1);
            return;
        }
        let sent = Instant::now();
        self.phase = Phase::Awaiting { expected: sent + self.plan.silence, deadline: sent + self.plan.silence + self.plan.turn_timeout };
        if self.turn_spoiled {
            // The turn is lost: let a reply that is playing end, then go on.
            self.phase = if self.bot_speaking { Phase::Replying(sent + self.plan.turn_timeout) } else { Phase::Gap(sent + self.plan.gap) };
        }
    }

    fn turn_failed(&mut self, why: String) {
        if !self.turn_spoiled {
            self.r.turns_failed += 1;
            self.error(why);
        }
        self.last_frame = None;
        self.phase = Phase::Gap(Instant::now() + self.plan.gap);
    }

    fn error(&mut self, why: String) {
        self.r.errors.push(why);
    }

    /// Handles one message; `true` when the call just started.
    fn on_message(&mut self, msg: Message) -> bool {
        let now = Instant::now();
        match msg {
            Message::Binary(_) => match self.phase {
                Phase::Awaiting { expected, .. } => {
                    self.r.overhead_ms.push(signed_ms(now, expected));
                    self.last_frame = Some(now);
                    self.phase = Phase::Replying(now + self.plan.turn_timeout);
                }
                Phase::Replying(_) => {
                    if let Some(prev) = self.last_frame.replace(now) {
                        self.r.jitter_ms.push((ms(now.saturating_duration_since(prev)) - ms(FRAME)).abs());
                    }
                    self.phase = Phase::Replying(now + self.plan.turn_timeout);
                }
                Phase::Phrase(_) => self.spoil(),
                _ => {}
            },
            Message::Text(text) => {
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    self.error("the server sent a text message that is not JSON".into());
                    return false;
                };
                return self.on_event(&v, now);
            }
            Message::Close(frame) => {
                self.close = Some(match frame {
                    Some(f) => format!("close code {}", u16::from(f.code)),
                    None => "close without a code".into(),
                });
            }
            _ => {}
        }
        false
    }

    /// A reply started while the phrase was still being sent: the server ended the
    /// turn early (or this is an unannounced greeting). The turn cannot be measured.
    fn spoil(&mut self) {
        if !self.turn_spoiled {
            self.turn_spoiled = true;
            self.r.turns_failed += 1;
            self.error("reply audio before the phrase ended (the turn ended early)".into());
        }
    }

    fn on_event(&mut self, v: &Value, now: Instant) -> bool {
        match v["type"].as_str().unwrap_or_default() {
            "call-started" => {
                if let Phase::Starting(_) = self.phase {
                    self.r.started = true;
                    self.phase = match self.plan.greeting {
                        Some(true) => Phase::Greeting(now + self.plan.turn_timeout * 3),
                        _ => Phase::Gap(now + self.plan.gap),
                    };
                    return true;
                }
            }
            "bot-speech-started" => {
                self.bot_speaking = true;
                match self.phase {
                    Phase::Gap(_) if self.turns_begun == 0 && self.plan.greeting.is_none() => {
                        self.phase = Phase::Greeting(now + self.plan.turn_timeout * 3);
                    }
                    Phase::Phrase(_) => self.spoil(),
                    _ => {}
                }
            }
            "bot-speech-stopped" => {
                self.bot_speaking = false;
                match self.phase {
                    Phase::Greeting(_) => self.phase = Phase::Gap(now + self.plan.gap),
                    Phase::Replying(_) => {
                        if !self.turn_spoiled {
                            self.r.turns_ok += 1;
                        }
                        self.last_frame = None;
                        self.phase = Phase::Gap(now + self.plan.gap);
                    }
                    Phase::Awaiting { .. } => self.turn_failed("the reply ended without audio".into()),
                    _ => {}
                }
            }
            "latency" => {
                if let Some(fields) = v.as_object() {
                    for (name, value) in fields {
                        if let (true, Some(x)) = (name != "turn", value.as_f64()) {
                            self.r.server.entry(name.clone()).or_default().push(x);
                        }
                    }
                }
                // The server's voice-to-voice time is its endpointing time plus the time
                // from the turn's decision to the reply's first frame: the latter is the
                // platform's response time, whether or not `responseMs` is sent.
                if let (Some(v2v), Some(endpointing)) = (v["voiceToVoiceMs"].as_f64(), v["endpointingMs"].as_f64()) {
                    self.r.server.entry(DERIVED_RESPONSE.to_string()).or_default().push(v2v - endpointing);
                }
            }
            "error" => {
                self.r.error_events += 1;
                let code = v["code"].as_str().unwrap_or("?");
                let message = v["message"].as_str().unwrap_or("");
                self.error(format!("error event `{code}`: {message}"));
            }
            "call-ended" => {
                self.ended_reason = Some(v["reason"].as_str().unwrap_or("?").to_string());
                if !matches!(self.phase, Phase::Closing(_)) {
                    self.phase = Phase::Closing(now + CLOSE_TIMEOUT);
                }
            }
            _ => {}
        }
        false
    }

    fn finish(mut self) -> CallResult {
        let counted = self.r.turns_ok + self.r.turns_failed;
        if counted < self.plan.turns {
            self.r.turns_failed += self.plan.turns - counted;
            if self.r.started {
                self.error(format!("{} turn(s) not done when the call ended", self.plan.turns - counted));
            }
        }
        if !self.r.started {
            self.error(format!("the call never started ({})", self.close.as_deref().unwrap_or("no close frame")));
        }
        self.r.ended_normally = self.ending && self.ended_reason.as_deref() == Some(CUSTOMER_ENDED) && self.r.turns_failed == 0;
        if self.r.started && !(self.ending && self.ended_reason.as_deref() == Some(CUSTOMER_ENDED)) {
            let why = match (&self.ended_reason, &self.close) {
                (Some(reason), Some(close)) => format!("the call ended abnormally: {reason} ({close})"),
                (Some(reason), None) => format!("the call ended abnormally: {reason}"),
                (None, Some(close)) => format!("the server closed the call: {close}"),
                (None, None) => "the connection closed before the call ended".to_string(),
            };
            self.error(why);
        }
        self.r
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `a − b` in ms, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b { ms(a - b) } else { -ms(b - a) }
}

/// CPU ticks (user + system) and resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ticks: u64,
    rss_kib: u64,
    live: usize,
}

fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

fn sample(pid: &str, live: usize) -> Option<Sample> {
    Some(Sample { at: Instant::now(), ticks: proc_ticks(pid)?, rss_kib: proc_status_kib(pid, "VmRSS")?, live })
}

/// Reads the server's and our own CPU and memory every [`SAMPLE_EVERY`].
struct Sampler {
    server: Option<(u32, Sample)>,
    client: Option<Sample>,
    task: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<Sample>>)>,
}

impl Sampler {
    fn start(server_pid: Option<u32>, live: Arc<AtomicUsize>) -> anyhow::Result<Sampler> {
        let client = sample("self", 0);
        let Some(pid) = server_pid else {
            return Ok(Sampler { server: None, client, task: None });
        };
        let id = pid.to_string();
        let baseline = sample(&id, 0)
            .ok_or_else(|| anyhow!("--server-pid {pid}: cannot read /proc/{pid}/stat and /proc/{pid}/status (no such process here?)"))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = every.tick() => {
                        if let Some(s) = sample(&id, live.load(Ordering::Relaxed)) {
                            samples.push(s);
                        }
                    }
                }
            }
            samples
        });
        Ok(Sampler { server: Some((pid, baseline)), client, task: Some((stop, task)) })
    }

    /// Stops sampling; the server's usage (if watched) and our own CPU %.
    async fn finish(self, calls: usize) -> (Option<ServerUsage>, f64) {
        let client = match (self.client, sample("self", 0)) {
            (Some(a), Some(b)) => cpu_percent(&a, &b),
            _ => 0.0,
        };
        let (Some((pid, base)), Some((stop, task))) = (self.server, self.task) else {
            return (None, client);
        };
        let id = pid.to_string();
        let end = sample(&id, 0);
        let _ = stop.send(());
        let samples = task.await.unwrap_or_default();
        let end = end.or_else(|| samples.last().copied()).unwrap_or(base);
        let max_live = samples.iter().map(|s| s.live).max().unwrap_or(0);
        let at_max: Vec<&Sample> = samples.iter().filter(|s| max_live > 0 && s.live == max_live).collect();
        let (cpu_live, live_secs) = match (at_max.first(), at_max.last()) {
            (Some(a), Some(b)) if b.at.saturating_duration_since(a.at) >= Duration::from_millis(500) => {
                (Some(cpu_percent(a, b)), b.at.saturating_duration_since(a.at).as_secs_f64())
            }
            _ => (None, 0.0),
        };
        let peak = samples.iter().map(|s| s.rss_kib).chain([base.rss_kib, end.rss_kib]).max().unwrap_or(0);
        let cpu = cpu_percent(&base, &end);
        let usage = ServerUsage {
            pid,
            cpu_percent: cpu,
            cpu_percent_live: cpu_live,
            max_live,
            live_secs,
            rss_baseline_kib: base.rss_kib,
            rss_peak_kib: peak,
            rss_after_kib: end.rss_kib,
            rss_hwm_kib: proc_status_kib(&id, "VmHWM").unwrap_or(0),
            memory_per_call_kib: peak.saturating_sub(base.rss_kib) as f64 / calls.max(1) as f64,
            cpu_percent_per_call: cpu_live.unwrap_or(cpu) / max_live.max(1) as f64,
        };
        (Some(usage), client)
    }
}

/// CPU time between two samples over the wall time between them, in % of one core.
fn cpu_percent(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.saturating_duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    b.ticks.saturating_sub(a.ticks) as f64 / CLK_TCK / wall * 100.0
}

fn summarize(
    args: &BenchArgs,
    phrase: &Phrase,
    silence_ms: u32,
    results: Vec<CallResult>,
    usage: (Option<ServerUsage>, f64),
    wall: Duration,
) -> BenchReport {
    let mut overhead = Vec::new();
    let mut jitter = Vec::new();
    let mut lag = Vec::new();
    let mut server: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut r = BenchReport {
        calls: results.len(),
        concurrency: args.calls,
        turns_per_call: args.turns,
        ramp_secs: args.ramp,
        phrase_ms: phrase.ms,
        silence_ms,
        wall_secs: wall.as_secs_f64(),
        ..BenchReport::default()
    };
    for c in results {
        if c.connect_error.is_some() {
            r.connect_failed += 1;
        } else {
            r.connected += 1;
        }
        r.ended_normally += usize::from(c.ended_normally);
        r.turns_ok += c.turns_ok as usize;
        r.turns_failed += c.turns_failed as usize;
        r.send_restarts += c.restarts;
        r.error_events += c.error_events;
        overhead.extend(c.overhead_ms);
        jitter.extend(c.jitter_ms);
        lag.extend(c.lag_ms);
        for (k, v) in c.server {
            server.entry(k).or_default().extend(v);
        }
        for e in c.connect_error.into_iter().chain(c.errors) {
            *errors.entry(e).or_default() += 1;
        }
    }
    r.overhead_ms = Stats::of(&mut overhead);
    r.jitter_ms = Stats::of(&mut jitter);
    r.send_lag_ms = Stats::of(&mut lag);
    r.server_latency_ms = server.into_iter().filter_map(|(k, mut v)| Some((k, Stats::of(&mut v)?))).collect();
    let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    r.errors = errors;
    (r.server, r.client_cpu_percent) = usage;
    r
}

/// The report as a readable table.
fn table(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "voxgate bench: {} call(s){} x {} turn(s), opened over {:.1} s; phrase {:.2} s, endpointing silence {} ms; {:.1} s in all",
        r.calls,
        if r.concurrency != r.calls { format!(", {} at a time", r.concurrency) } else { String::new() },
        r.turns_per_call,
        r.ramp_secs,
        r.phrase_ms as f64 / 1000.0,
        r.silence_ms,
        r.wall_secs
    );
    let _ = writeln!(s, "calls    {} connected, {} failed to connect, {} ended normally", r.connected, r.connect_failed, r.ended_normally);
    let _ = writeln!(s, "turns    {} ok, {} failed", r.turns_ok, r.turns_failed);
    let _ = writeln!(s, "{:<38} {:>7} {:>8} {:>8} {:>8} {:>8}", "ms", "n", "p50", "p95", "p99", "max");
    let mut row = |name: &str, st: Option<&Stats>| {
        match st {
            Some(st) => writeln!(s, "{name:<38} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}", st.n, st.p50, st.p95, st.p99, st.max),
            None => writeln!(s, "{name:<38} {:>7} {:>8} {:>8} {:>8} {:>8}", 0, "-", "-", "-", "-"),
        }
        .ok();
    };
    row("overhead (client)", r.overhead_ms.as_ref());
    for (name, st) in &r.server_latency_ms {
        row(&format!("{name} (server)"), Some(st));
    }
    row("reply frame jitter", r.jitter_ms.as_ref());
    row("client send lag", r.send_lag_ms.as_ref());
    if r.send_restarts > 0 {
        let _ = writeln!(s, "client   fell >200 ms behind its schedule {} time(s): it is saturated; numbers are suspect", r.send_restarts);
    }
    match &r.server {
        Some(u) => {
            let live = match u.cpu_percent_live {
                Some(c) => format!(", {c:.1} % with {} call(s) live ({:.1} s)", u.max_live, u.live_secs),
                None => String::new(),
            };
            let _ = writeln!(s, "server   CPU {:.1} % of a core over the run{live}; {:.3} % per call", u.cpu_percent, u.cpu_percent_per_call);
            let _ = writeln!(
                s,
                "server   RSS {:.1} MiB idle, {:.1} MiB peak, {:.1} MiB after; {:.1} KiB per call",
                u.rss_baseline_kib as f64 / 1024.0,
                u.rss_peak_kib as f64 / 1024.0,
                u.rss_after_kib as f64 / 1024.0,
                u.memory_per_call_kib
            );
        }
        None => {
            let _ = writeln!(s, "server   (pass --server-pid for its CPU and memory)");
        }
    }
    if let Some(l) = &r.server_runtime_lag {
        let bound = |v: Option<f64>| v.map_or_else(|| "> the last bucket".to_string(), |ms| format!("<= {ms} ms"));
        let _ = writeln!(
            s,
            "server   runtime lag over {} wakes: p50 {}, p99 {}, mean {:.2} ms{}",
            l.wakes,
            bound(l.p50_ms_at_most),
            bound(l.p99_ms_at_most),
            l.mean_ms,
            l.over_20ms_percent.map(|p| format!(", {p:.2} % over 20 ms")).unwrap_or_default()
        );
    }
    if let Some(n) = r.server_dropped_frames {
        let _ = writeln!(s, "server   dropped frames {n}");
    }
    let _ = writeln!(s, "client   CPU {:.1} % of a core", r.client_cpu_percent);
    if r.errors.is_empty() {
        let _ = writeln!(s, "errors   none");
    } else {
        let _ = writeln!(s, "errors   ({} error event(s))", r.error_events);
        for (m, n) in r.errors.iter().take(10) {
            let _ = writeln!(s, "  {n:>6} x {m}");
        }
        if r.errors.len() > 10 {
            let _ = writeln!(s, "  ... and {} other kind(s)", r.errors.len() - 10);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_lag_is_the_difference_of_two_scrapes() {
        let text = |b: [u64; 4], sum: f64| {
            format!(
                "# TYPE voxgate_runtime_lag_seconds histogram\n\
                 voxgate_runtime_lag_seconds_bucket{{le=\"0.001\"}} {}\n\
                 voxgate_runtime_lag_seconds_bucket{{le=\"0.005\"}} {}\n\
                 voxgate_runtime_lag_seconds_bucket{{le=\"0.02\"}} {}\n\
                 voxgate_runtime_lag_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 voxgate_runtime_lag_seconds_sum {sum}\n\
                 voxgate_runtime_lag_seconds_count {}\n\
                 voxgate_runtime_lag_secondsx_count 99\n",
                b[0], b[1], b[2], b[3], b[3]
            )
        };
        let before = MetricsScrape::parse(&text([10, 10, 10, 10], 0.005)).unwrap();
        // 100 more wakes: 60 within 1 ms, 30 more within 5 ms, 8 more within 20 ms, 2 later.
        let after = MetricsScrape::parse(&text([70, 100, 108, 110], 1.005)).unwrap();
        let lag = after.since(&before);
        assert_eq!(lag.wakes, 100);
        assert!((lag.mean_ms - 10.0).abs() < 1e-9, "{}", lag.mean_ms);
        assert_eq!(lag.p50_ms_at_most, Some(1.0));
        assert_eq!(lag.p99_ms_at_most, None, "the 99th wake is past the last finite bucket");
        assert!((lag.over_20ms_percent.unwrap() - 2.0).abs() < 1e-9, "{:?}", lag.over_20ms_percent);
        // No wakes in between: nothing to say, and no division by zero.
        let idle = before.since(&before);
        assert_eq!((idle.wakes, idle.p50_ms_at_most, idle.mean_ms, idle.over_20ms_percent), (0, None, 0.0, Some(0.0)));
        // Not there, or garbled: None, never a panic.
        assert_eq!(MetricsScrape::parse("voxgate_other_seconds_count 3\n"), None);
        assert_eq!(MetricsScrape::parse("voxgate_runtime_lag_seconds_count three\n"), None);
        assert_eq!(MetricsScrape::parse("voxgate_runtime_lag_seconds_count\n"), None);
        assert_eq!(after.dropped_since(&before), 0, "no counter exported: nothing dropped");
    }

    #[test]
    fn dropped_frames_are_counted_over_every_reason_between_two_scrapes() {
        let lag = "voxgate_runtime_lag_seconds_count 5\n";
        let before = MetricsScrape::parse(&format!("{lag}voxgate_dropped_frames_total{{reason=\"pipeline-full\"}} 1\n")).unwrap();
        let after = MetricsScrape::parse(&format!(
            "{lag}# TYPE voxgate_dropped_frames_total counter\n\
             voxgate_dropped_frames_total{{reason=\"detached\"}} 40\n\
             voxgate_dropped_frames_total{{reason=\"audio-before-start\"}} 7\n\
             voxgate_dropped_frames_total{{reason=\"pipeline-full\"}} 4\n\
             voxgate_dropped_frames_total{{reason=\"writer-full\"}} 2\n\
             voxgate_pipeline_dropped_frames_total{{stage=\"tts\",frame=\"metric\"}} 1\n\
             voxgate_dropped_frames_totalx 99\n"
        ))
        .unwrap();
        assert_eq!(after.dropped_since(&before), 6, "the server falling behind; not the clients' doing");
        assert_eq!(MetricsScrape::parse(&format!("{lag}voxgate_dropped_frames_total{{reason=\"writer-full\"}} many\n")), None, "garbled");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 0.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 51.0), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(4.0));
        let mut unsorted = vec![5.0, -1.0, 3.0, 10.0, 2.0];
        let st = Stats::of(&mut unsorted).unwrap();
        assert_eq!((st.n, st.p50, st.p99, st.max, st.mean), (5, 3.0, 10.0, 10.0, 3.8));
        assert_eq!(Stats::of(&mut []), None);
    }

    #[test]
    fn the_phrase_is_trimmed_to_its_voice_in_whole_frames() {
        let mut samples = vec![0i16; 1000];
        samples.extend((0..650).map(|n| if n % 2 == 0 { 8000 } else { -8000 }));
        samples.extend(vec![3i16; 2000]);
        let p = Phrase::new(&samples).unwrap();
        assert_eq!(p.frames.len(), 3, "650 voiced samples: 3 frames, the last padded");
        assert!(p.frames.iter().all(|f| f.len() == FRAME_SAMPLES * 2));
        assert_eq!(&p.frames[0][..2], &8000i16.to_le_bytes());
        assert_eq!(&p.frames[2][18..20], &(-8000i16).to_le_bytes(), "the last voiced sample");
        assert!(p.frames[2][20..].iter().all(|&b| b == 0), "then zeros");
        assert_eq!(p.ms, 60);
        assert!(Phrase::new(&[0i16; 16000]).is_err());
    }

    #[test]
    fn proc_readers_read_this_process() {
        assert!(proc_ticks("self").is_some());
        assert!(proc_status_kib("self", "VmRSS").unwrap() > 0);
        assert_eq!(proc_status_kib("self", "VmRS"), None);
    }

    #[test]
    fn urls_become_http_bases() {
        assert_eq!(http_base("ws://h:1/agent/").unwrap(), "http://h:1");
        assert_eq!(http_base("https://x.example/").unwrap(), "https://x.example");
        assert!(http_base("h:1").is_err());
    }

    #[test]
    fn a_clean_report_has_no_problem_and_a_failed_one_says_why() {
        let ok = BenchReport { calls: 2, turns_per_call: 1, connected: 2, ended_normally: 2, turns_ok: 2, ..Default::default() };
        assert_eq!(ok.problem(), None);
        let bad = BenchReport {
            calls: 2,
            turns_per_call: 1,
            connect_failed: 2,
            turns_failed: 2,
            errors: vec![("connect: HTTP 401".into(), 2)],
            ..Default::default()
        };
        let p = bad.problem().unwrap();
        assert!(p.contains("2 of 2 calls failed to connect") && p.contains("HTTP 401"), "{p}");
    }
}
