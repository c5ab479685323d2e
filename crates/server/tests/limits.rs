//! Rate limits (per key and per address, 429 with `Retry-After`), the request
//! timeout (408) and the body limit (413), against the real server.

mod common;

use std::time::Duration;

use common::{TestServer, error_code};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voxgate_api::ratelimit::Rate;
use voxgate_domain::KeyKind;
use voxgate_server::config::Rate0;
use voxgate_testkit::TestDb;

fn rate(s: &str) -> Rate0 {
    Rate0(Rate::parse(s).unwrap())
}

/// `Retry-After` as whole seconds (the header must be present and an integer).
fn retry_after(res: &reqwest::Response) -> u64 {
    let v = res.headers().get("retry-after").expect("Retry-After on a 429").to_str().unwrap();
    v.parse().unwrap_or_else(|_| panic!("Retry-After {v:?} is not whole seconds"))
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// Parses the sample lines of a scrape (comments skipped; label values have no
/// escaped quotes in what we emit, which the parser checks).
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
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
                        (k.to_string(), v.trim_start_matches('"').trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

async fn scrape(http: &reqwest::Client, s: &TestServer, forwarded_for: Option<&str>) -> Vec<Sample> {
    let mut req = http.get(s.at("/api/metrics")).bearer_auth(&s.admin);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    parse_samples(&res.text().await.unwrap())
}

fn rate_limited_total(samples: &[Sample], scope: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "voxgate_rate_limited_total" && s.label("group") == Some("api") && s.label("scope") == Some(scope))
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn the_key_over_its_limit_gets_429_with_retry_after_and_other_keys_do_not() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.rate_limit_api = rate("3/min");
        a.rate_limit_api_ip = rate("off");
    })
    .await;
    let http = TestServer::http();
    let busy = s.key(KeyKind::Private, &[]).await;
    let other = s.key(KeyKind::Private, &[]).await;

    for i in 0..3 {
        let res = http.get(s.at("/api/assistants")).bearer_auth(&busy).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {} of 3 is within the limit", i + 1);
    }
    let res = http.get(s.at("/api/assistants")).bearer_auth(&busy).send().await.unwrap();
    let wait = retry_after(&res);
    let (status, code, body) = error_code(res).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{body}");
    // 3/min refills one request every 20 s.
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Any route of the group counts against the same bucket.
    let res = http.post(s.at("/api/assistants")).bearer_auth(&busy).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(res.status(), 429);

    let res = http.get(s.at("/api/assistants")).bearer_auth(&other).send().await.unwrap();
    assert_eq!(res.status(), 200, "another key has a bucket of its own");

    let m = scrape(&http, &s, None).await;
    assert!(rate_limited_total(&m, "caller") >= 2.0, "voxgate_rate_limited_total{{scope=caller}} counts the refusals");
}

#[tokio::test]
async fn the_address_limit_refuses_even_unauthenticated_requests() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.rate_limit_api = rate("off");
        a.rate_limit_api_ip = rate("3/min");
    })
    .await;
    let http = TestServer::http();
    for _ in 0..3 {
        let res = http.get(s.at("/api/assistants")).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    // Guessing keys past the limit is refused before authentication.
    let res = http.get(s.at("/api/assistants")).bearer_auth("sk_guess").send().await.unwrap();
    let wait = retry_after(&res);
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(wait >= 1);
    // So is a valid key from the same address.
    let res = http.get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_limit() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.rate_limit_api = rate("off");
        a.rate_limit_api_ip = rate("2/min");
        a.trust_proxy = true;
    })
    .await;
    let http = TestServer::http();
    let get = |ip: &'static str| http.get(s.at("/api/assistants")).header("x-forwarded-for", ip).send();
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 401);
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 401);
    let (status, code, _) = error_code(get("203.0.113.1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert_eq!(get("203.0.113.2").await.unwrap().status(), 401, "another address is not limited");

    let m = scrape(&http, &s, Some("203.0.113.3")).await;
    assert!(rate_limited_total(&m, "ip") >= 1.0, "voxgate_rate_limited_total{{scope=ip}} counts the refusal");
}

/// Reads one HTTP/1.1 response head and its Content-Length body off `s`.
async fn read_response(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "the connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("error answers carry a Content-Length");
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    (status, headers, body)
}

/// The head of a chunked `POST /api/assistants` by `admin`; the chunks follow.
fn chunked_post_head(admin: &str) -> String {
    format!(
        "POST /api/assistants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        admin
    )
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}

fn error_of(status: u16, headers: &[(String, String)], body: &[u8]) -> String {
    let ct = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()).unwrap_or("");
    assert!(ct.starts_with("application/json"), "status {status}: content-type {ct:?}");
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("status {status}: {e}: {}", String::from_utf8_lossy(body)));
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_string()
}

#[tokio::test]
async fn a_body_trickled_slower_than_the_request_timeout_gets_408() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.request_timeout = 1).await;

    // A request that is quick is unaffected.
    let res = TestServer::http().post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&json!({"name": "quick"})).send().await.unwrap();
    assert_eq!(res.status(), 201);

    let body = br#"{"name":"trickled","systemPrompt":"one byte at a time, slower than the timeout allows"}"#;
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /api/assistants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.admin,
        body.len()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // ~30 s to send the whole body, one byte each 300 ms; stops when the server hangs up.
    let trickle = tokio::spawn(async move {
        for b in body.iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        true
    });
    let (status, headers, resp) =
        tokio::time::timeout(Duration::from_secs(15), read_response(&mut rd)).await.expect("an answer before the body is complete");
    assert!(!trickle.is_finished() || !trickle.await.unwrap(), "the whole body was sent before the answer");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(error_of(status, &headers, &resp), "request_timeout");

    // Nothing was created by the timed-out request.
    let list: Value = TestServer::http().get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["quick"]);
}

/// A chunked body that stops coming gets its 408 too, and its connection is closed
/// soon after (what is left is waited for a few seconds at most), never held open by
/// the task that reads a chunked body.
#[tokio::test]
async fn a_chunked_body_that_stalls_gets_408_and_its_connection_closes() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.request_timeout = 1).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(chunked_post_head(&s.admin).as_bytes()).await.unwrap();
    c.write_all(&chunk(br#"{"nam"#)).await.unwrap();
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(status, &headers, &body), "request_timeout");
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match c.read(&mut rest).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection is still open 15 s after its 408");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.body_limit = 1024).await;
    let http = TestServer::http();

    let small = json!({"name": "small", "systemPrompt": "a".repeat(600)});
    let res = http.post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&small).send().await.unwrap();
    assert_eq!(res.status(), 201, "a body under the limit is accepted");

    let big = json!({"name": "big", "systemPrompt": "a".repeat(2048)});
    assert!(serde_json::to_vec(&big).unwrap().len() > 2048);
    let res = http.post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&big).send().await.unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    // Chunked, with no declared length: the limit applies as the body is read.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let payload = serde_json::to_vec(&big).unwrap();
    let mut req = chunked_post_head(&s.admin).into_bytes();
    for part in payload.chunks(512) {
        req.extend_from_slice(&chunk(part));
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.write_all(&req).await.unwrap();
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(status, &headers, &body), "payload_too_large");

    // The same through PATCH (another route with a body).
    let id = s.assistant("patched").await;
    let res = http.patch(s.at(&format!("/api/assistants/{id}"))).bearer_auth(&s.admin).json(&big).send().await.unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_without_waiting_for_the_body() {
    // The default request timeout (30 s) is longer than this test waits: a 413 must
    // come from the declared length, not from a timeout.
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.body_limit = 1024).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/assistants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{{\"name\":\"liar\"}}",
        s.admin
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, body) =
        tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer without the rest of the declared body");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_of(status, &headers, &body), "payload_too_large");

    let list: Value = TestServer::http().get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

/// A client that goes on sending a body the server has refused (as a browser
/// uploading a file that is too big does) still reads its 413: the refused body is
/// read and dropped behind the answer, not left unread under a closed connection
/// (which reset the client's writes: a broken pipe instead of the answer).
#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_its_413() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.body_limit = 1024).await;
    let body = vec![b'x'; 4 * 1024 * 1024];
    let head = format!(
        "POST /api/assistants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.admin,
        body.len()
    );
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // The answer is written by now; the body follows it, as from a slow uploader.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(&body).await.expect("the server reads the refused body instead of resetting the connection");
    let (status, headers, answer) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(error_of(status, &headers, &answer), "payload_too_large");

    // Chunked, with no declared length: refused once the limit is read, and the rest
    // still read and dropped behind the answer.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = chunked_post_head(&s.admin);
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&chunk(&body[..4096])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for part in body.chunks(64 * 1024) {
        c.write_all(&chunk(part)).await.expect("the server reads the refused chunked body instead of resetting the connection");
    }
    c.write_all(b"0\r\n\r\n").await.expect("the last chunk too");
    let (status, headers, answer) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(error_of(status, &headers, &answer), "payload_too_large");

    // A chunked body under the limit still gets through whole.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let small = br#"{"name":"chunked and small"}"#;
    c.write_all(head.as_bytes()).await.unwrap();
    for part in small.chunks(5) {
        c.write_all(&chunk(part)).await.unwrap();
    }
    c.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, _, answer) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c)).await.expect("an answer");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("chunked and small"));

    // The same through reqwest, a few times: never a broken pipe.
    let http = TestServer::http();
    for _ in 0..5 {
        let res = http
            .post(s.at("/api/assistants"))
            .bearer_auth(&s.admin)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("the 413, not a broken pipe");
        assert_eq!(res.status(), 413);
    }
}
