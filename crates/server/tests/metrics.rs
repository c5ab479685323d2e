//! `/api/metrics`: who may read it, its format, and the series the platform
//! promises (HTTP by route template, database pools, memory, live calls).
//!
//! The recorder is process-wide, so values accumulate across the tests of this
//! binary: assertions are on presence, consistency and increases. Scrapes are
//! serialized (gauges read at scrape time are shared by every server here).

mod common;

use std::time::Duration;

use common::{TestServer, error_code};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use voxgate_domain::KeyKind;
use voxgate_domain::clock::new_id;
use voxgate_testkit::TestDb;

static SCRAPES: Mutex<()> = Mutex::const_new(());

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A parsed scrape: samples and `# TYPE` lines.
struct Scrape {
    samples: Vec<Sample>,
    types: Vec<(String, String)>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = Vec::new();
        let mut types = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                types.push((name.to_string(), kind.to_string()));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Vec::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    assert!(!inner.contains("\\\""), "escaped quotes in {line:?}");
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                            let v = v.strip_prefix('"').unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
                            (k.to_string(), v.strip_suffix('"').unwrap_or(v).to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            samples.push(Sample { name, labels, value });
        }
        Scrape { samples, types, text }
    }

    fn all(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name && s.has(want)).collect()
    }

    /// The value of the one sample matching, if any.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let v = self.all(name, want);
        assert!(v.len() <= 1, "{name} {want:?} matches {} samples: {v:?}", v.len());
        v.first().map(|s| s.value)
    }

    fn kind(&self, name: &str) -> Option<&str> {
        self.types.iter().find(|(n, _)| n == name).map(|(_, k)| k.as_str())
    }
}

async fn scrape(s: &TestServer) -> Scrape {
    let _one_at_a_time = SCRAPES.lock().await;
    let res = TestServer::http().get(s.at("/api/metrics")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers().get("content-type").expect("a content type").to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content-type {ct:?}");
    Scrape::parse(res.text().await.unwrap())
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template_and_status() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    let id = s.assistant("Counted").await;
    let missing = new_id();
    let route = [("route", "/api/assistants/{id}"), ("method", "GET")];

    let before = scrape(&s).await;
    let ok_before = before.value("voxgate_http_requests_total", &[route[0], route[1], ("status", "200")]).unwrap_or(0.0);
    let nf_before = before.value("voxgate_http_requests_total", &[route[0], route[1], ("status", "404")]).unwrap_or(0.0);
    let count_before = before.value("voxgate_http_request_duration_seconds_count", &[route[0], route[1], ("status", "200")]).unwrap_or(0.0);

    for _ in 0..3 {
        let res = http.get(s.at(&format!("/api/assistants/{id}"))).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let (status, _, _) = error_code(http.get(s.at(&format!("/api/assistants/{missing}"))).bearer_auth(&s.admin).send().await.unwrap()).await;
    assert_eq!(status, 404);

    let m = scrape(&s).await;
    assert_eq!(m.kind("voxgate_http_requests_total"), Some("counter"));
    let ok = m.value("voxgate_http_requests_total", &[route[0], route[1], ("status", "200")]).expect("a 200 series for the template");
    let nf = m.value("voxgate_http_requests_total", &[route[0], route[1], ("status", "404")]).expect("a 404 series for the template");
    assert!(ok >= ok_before + 3.0, "200s went from {ok_before} to {ok}");
    assert!(nf > nf_before, "404s went from {nf_before} to {nf}");
    // Ids never become labels (unbounded cardinality, and they identify data).
    for raw in [&id, &missing] {
        assert!(!m.text.contains(raw.as_str()), "the raw id {raw} is in the scrape");
    }
    assert!(m.samples.iter().filter_map(|s| s.label("route")).all(|r| !r.contains("/api/assistants/0")), "a raw path as a route label");
    // The creation through the collection route is counted under its own template.
    assert!(m.value("voxgate_http_requests_total", &[("route", "/api/assistants"), ("method", "POST"), ("status", "201")]).is_some_and(|v| v >= 1.0));

    // The latency histogram: buckets by the same labels, cumulative, +Inf = count.
    assert_eq!(m.kind("voxgate_http_request_duration_seconds"), Some("histogram"));
    let labels = [route[0], route[1], ("status", "200")];
    let buckets = m.all("voxgate_http_request_duration_seconds_bucket", &labels);
    assert!(buckets.len() >= 2, "buckets: {buckets:?}");
    let mut les: Vec<(f64, f64)> = buckets
        .iter()
        .map(|b| {
            let le = b.label("le").expect("an le label");
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, b.value)
        })
        .collect();
    les.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(les.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are not cumulative: {les:?}");
    let inf = les.last().unwrap();
    assert!(inf.0.is_infinite());
    let count = m.value("voxgate_http_request_duration_seconds_count", &labels).expect("a _count");
    assert_eq!(inf.1, count);
    assert!(count >= count_before + 3.0);
    assert!(m.value("voxgate_http_request_duration_seconds_sum", &labels).is_some_and(|v| v > 0.0));
}

#[tokio::test]
async fn database_pools_memory_and_acquire_waits_are_reported() {
    let s = TestServer::start().await;
    // Some reads and a write, so the pools have been used.
    s.assistant("Pooled").await;
    let res = TestServer::http().get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let m = scrape(&s).await;
    // SQLite: a read pool and a one-connection write pool; PostgreSQL: one pool.
    let pools: &[&str] = match s.store.backend() {
        voxgate_store::Backend::Sqlite => &["read", "write"],
        voxgate_store::Backend::Postgres => &["main"],
    };
    for &pool in pools {
        let open = m.value("voxgate_db_pool_connections", &[("pool", pool), ("state", "open")]).unwrap_or_else(|| panic!("{pool} open"));
        let idle = m.value("voxgate_db_pool_connections", &[("pool", pool), ("state", "idle")]).unwrap_or_else(|| panic!("{pool} idle"));
        let in_use = m.value("voxgate_db_pool_connections", &[("pool", pool), ("state", "in_use")]).unwrap_or_else(|| panic!("{pool} in_use"));
        assert!(open >= 1.0, "{pool}: open {open}");
        assert_eq!(idle + in_use, open, "{pool}: idle {idle} + in use {in_use} != open {open}");
        let max = m.value("voxgate_db_pool_max_connections", &[("pool", pool)]).unwrap_or_else(|| panic!("{pool} max"));
        assert!(open <= max, "{pool}: open {open} > max {max}");
    }
    if s.store.backend() == voxgate_store::Backend::Sqlite {
        assert_eq!(m.value("voxgate_db_pool_max_connections", &[("pool", "write")]), Some(1.0));
    }

    assert_eq!(m.kind("voxgate_db_acquire_seconds"), Some("histogram"));
    // Acquire waits are labelled by purpose (read or write) on both backends.
    for pool in ["read", "write"] {
        let n = m.value("voxgate_db_acquire_seconds_count", &[("pool", pool)]).unwrap_or_else(|| panic!("acquire count of {pool}"));
        assert!(n >= 1.0, "{pool}: {n}");
        assert!(!m.all("voxgate_db_acquire_seconds_bucket", &[("pool", pool)]).is_empty());
    }

    let rss = m.value("process_resident_memory_bytes", &[]).expect("process_resident_memory_bytes");
    assert!(rss > 0.0, "{rss}");
    assert_eq!(m.value("voxgate_draining", &[]), Some(0.0));
}

/// The runtime's scheduling delay is measured all the time, calls or not.
#[tokio::test]
async fn the_runtime_lag_is_measured_continuously() {
    let s = TestServer::start().await;
    // The probe's first wake comes one period after the start: a scrape right
    // after it may find no histogram yet (seen in CI on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let m = scrape(&s).await;
        if m.kind("voxgate_runtime_lag_seconds").is_some() || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(voxgate_server::telemetry::LAG_PROBE_EVERY).await;
    };
    assert_eq!(first.kind("voxgate_runtime_lag_seconds"), Some("histogram"));
    let count = |m: &Scrape| m.value("voxgate_runtime_lag_seconds_count", &[]).expect("the lag count");
    let before = count(&first);
    tokio::time::sleep(voxgate_server::telemetry::LAG_PROBE_EVERY * 10).await;
    let after = scrape(&s).await;
    assert!(count(&after) >= before + 3.0, "{before} -> {}", count(&after));
    // Buckets in seconds, and a mean well under a second on an idle server.
    assert!(after.all("voxgate_runtime_lag_seconds_bucket", &[]).iter().any(|b| b.label("le") == Some("0.02")));
    let mean = after.value("voxgate_runtime_lag_seconds_sum", &[]).unwrap() / count(&after);
    assert!((0.0..1.0).contains(&mean), "{mean}");
}

#[tokio::test]
async fn live_calls_are_counted_while_open() {
    let s = TestServer::start_with(TestDb::chosen().await, |_| {}).await;
    let assistant = s.assistant("Gauge").await;
    let open = || async {
        let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_with_key(&format!("assistantId={assistant}"), &s.admin)).await.unwrap();
        let hello = common::start_call(&mut ws).await;
        assert_eq!(hello["type"], "call-started");
        ws
    };
    let gauge = |m: &Scrape| m.value("voxgate_websocket_connections", &[]).unwrap_or(0.0);

    // Only this test opens calls in this binary, so the gauge is exact here.
    let base = gauge(&scrape(&s).await);
    let mut a = open().await;
    let m = scrape(&s).await;
    assert_eq!(m.kind("voxgate_websocket_connections"), Some("gauge"));
    assert_eq!(gauge(&m), base + 1.0);
    let mut b = open().await;
    assert_eq!(gauge(&scrape(&s).await), base + 2.0);

    for ws in [&mut a, &mut b] {
        ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
        // Skips the greeting's audio and events up to the close.
        let mut close = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(f) = m {
                close = f.map(|f| u16::from(f.code));
                break;
            }
        }
        assert_eq!(close, Some(1000), "end closes the call normally");
    }
    let mut now = f64::NAN;
    for _ in 0..100 {
        now = gauge(&scrape(&s).await);
        if now == base {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(now, base, "the gauge returns to its level once the calls end");
}

#[tokio::test]
async fn metrics_need_a_private_key_or_the_metrics_token() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.metrics_token = Some("scrape-me-token".into())).await;
    let http = TestServer::http();

    let (status, code, _) = error_code(http.get(s.at("/api/metrics")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let public = s.key(KeyKind::Public, &[]).await;
    let (status, code, _) = error_code(http.get(s.at("/api/metrics")).bearer_auth(&public).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, _, _) = error_code(http.get(s.at("/api/metrics")).bearer_auth("wrong-token").send().await.unwrap()).await;
    assert_eq!(status, 401);

    let res = http.get(s.at("/api/metrics")).bearer_auth("scrape-me-token").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(Scrape::parse(text).samples.iter().any(|s| s.name == "voxgate_http_requests_total"));
    // The token reads metrics and nothing else (it is not a credential elsewhere).
    let (status, code, _) = error_code(http.get(s.at("/api/assistants")).bearer_auth("scrape-me-token").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
}
