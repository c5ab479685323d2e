//! Connection floods (issue 9): thousands of `/agent` sockets that never send
//! `start`, slowloris HTTP clients and silent TCP connections, ten times `MAX_CALLS`
//! in call attempts at once, and clients that vanish without closing. Limits and
//! timeouts hold, the server's memory stays bounded, nothing crashes, and a
//! legitimate caller gets through meanwhile.

mod common;
#[path = "common/load.rs"]
mod load;
#[path = "common/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use procs::{Caller, Served, store_with_key};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use voxgate_server::config::Rate0;
use voxgate_testkit::TestDb;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, key: &str, assistant: &str) -> Result<Ws, WsError> {
    let url = format!(
        "{}/agent?assistantId={assistant}",
        base.replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Rate limits off: a flood from one address and one key is the point here.
const NO_RATE_LIMITS: [(&str, &str); 6] = [
    ("RATE_LIMIT_API", "off"),
    ("RATE_LIMIT_API_IP", "off"),
    ("RATE_LIMIT_CALLS", "off"),
    ("RATE_LIMIT_CALLS_IP", "off"),
    ("RATE_LIMIT_UPLOADS", "off"),
    ("RATE_LIMIT_UPLOADS_IP", "off"),
];

/// Sockets in the WebSocket flood.
const FLOOD: usize = 2000;
/// What one upgraded socket that has not sent `start` may cost the server, at most:
/// hyper's connection and the upgrade, the WebSocket's 8 KiB read buffer and its
/// write buffer, the call's task (its session future) and its writer task, the call
/// record queued for the database. Measured at about 20-40 KiB (debug build); the
/// test allows a generous multiple of that.
const IDLE_SOCKET_KIB: u64 = 256;

/// 2,000 sockets upgrade and never send `start`: the server holds them all (each is
/// a live call under `MAX_CALLS`), a caller's call goes through meanwhile, each
/// flood socket gets `start-timeout` and close 4002 when AGENT_START_TIMEOUT_SECS
/// passes, the server's memory grows by less than IDLE_SOCKET_KIB a socket, and its
/// file descriptors go back to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sockets_that_never_start_are_closed_and_a_caller_gets_through() {
    load::raise_fd_limit(FLOOD as u64 * 2 + 1000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("voxgate.db").display());
    let (_store, key) = store_with_key(&url).await;
    let start_timeout = 20;
    let mut env: Vec<(&str, String)> = NO_RATE_LIMITS
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    env.extend([
        ("AGENT_START_TIMEOUT_SECS", start_timeout.to_string()),
        ("MAX_CALLS", (FLOOD + 100).to_string()),
        ("LOG_LEVEL", "warn".into()),
    ]);
    let srv = Served::start(&url, dir.path(), &env).await;
    let pid = srv.pid();
    let assistant = srv.assistant(&key).await;

    // Warm up (the database pool, the first call's lazy set-up), then the baseline.
    let mut warm = Caller::open(&srv.url, &key, &assistant).await;
    assert_eq!(warm.say("hello").await["type"], "latency");
    warm.end().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, fds_before) = (load::rss_kib(pid), load::open_fds(pid));

    let opened_at = Instant::now();
    let results: Vec<Result<Ws, WsError>> = futures_util::stream::iter(0..FLOOD)
        .map(|_| connect(&srv.url, &key, &assistant))
        .buffer_unordered(64)
        .collect()
        .await;
    let opening = opened_at.elapsed();
    let mut flood: Vec<Ws> = Vec::new();
    for r in results {
        flood.push(r.unwrap_or_else(|e| panic!("a flood socket was refused: {e}")));
    }
    assert!(
        opening < Duration::from_secs(start_timeout - 5),
        "opening {FLOOD} sockets took {opening:?}, too close to the start timeout to hold them all at once"
    );
    // Every one is held by the server as an upgraded socket.
    let held = load::gauge(&srv.url, &key, "voxgate_websocket_connections").await;
    assert_eq!(held, FLOOD as f64, "sockets the server holds");
    let rss_flood = load::rss_kib(pid);
    let fds_flood = load::open_fds(pid);
    assert!(
        fds_flood >= fds_before + FLOOD,
        "{fds_flood} fds with {FLOOD} sockets open, {fds_before} before"
    );

    // A caller gets through, and the API answers, while the flood is held.
    let mut caller = Caller::open(&srv.url, &key, &assistant).await;
    assert_eq!(
        caller.say("hello").await["type"],
        "latency",
        "{:?}",
        caller.events
    );
    let events = caller.end().await;
    let ended = events
        .iter()
        .find(|e| e["type"] == "call-ended")
        .expect("call-ended");
    assert_eq!(ended["reason"], "customer-ended-call");
    let health = TestServer::http()
        .get(format!("{}/api/health", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Each flood socket is told why, and closed with 4002.
    let closes = futures_util::stream::iter(flood)
        .map(|ws| async move { close_of(ws, Duration::from_secs(start_timeout + 60)).await })
        .buffer_unordered(FLOOD)
        .collect::<Vec<_>>()
        .await;
    for (error, close) in &closes {
        assert_eq!(error.as_deref(), Some("start-timeout"));
        let (code, reason) = close.as_ref().expect("a close frame");
        assert_eq!(*code, 4002);
        assert!(reason.contains("no start message"), "{reason}");
    }

    // The server let go of them: descriptors back (the database pool may have grown
    // by a few connections of three files each), memory bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let slack = 3 * 16 + 8;
    let fds_after = loop {
        let n = load::open_fds(pid);
        if n <= fds_before + slack || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        fds_after <= fds_before + slack,
        "{fds_after} fds after the flood, {fds_before} before"
    );
    assert_eq!(
        load::gauge(&srv.url, &key, "voxgate_websocket_connections").await,
        0.0
    );
    let rss_peak = load::status_kib(pid, "VmHWM").max(rss_flood);
    let per_socket = rss_peak.saturating_sub(rss_before) / FLOOD as u64;
    println!(
        "flood: {FLOOD} sockets opened in {opening:?}; server RSS {rss_before} KiB before, {rss_flood} KiB held, peak {rss_peak} KiB \
         ({per_socket} KiB a socket), {} KiB after; fds {fds_before} before, {fds_flood} held, {fds_after} after",
        load::rss_kib(pid)
    );
    assert!(
        per_socket <= IDLE_SOCKET_KIB,
        "{per_socket} KiB a socket (bound {IDLE_SOCKET_KIB} KiB)"
    );
    srv.stop().await;
}

/// Reads a socket to its end: the last `error` event's code, and the close frame.
async fn close_of(mut ws: Ws, within: Duration) -> (Option<String>, Option<(u16, String)>) {
    let mut error = None;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closes the socket in time")
        {
            Some(Ok(Message::Text(t))) => {
                let e: Value = serde_json::from_str(&t).unwrap();
                if e["type"] == "error" {
                    error = e["code"].as_str().map(str::to_string);
                }
            }
            Some(Ok(Message::Close(f))) => {
                return (error, f.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (error, None),
        }
    }
}

/// Waits until the server closes `tcp` (EOF or reset); returns what it had sent.
async fn until_closed(tcp: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("the server closes the connection in time")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slowloris: 200 clients send a request's headers a byte every second, 200 open a
/// connection and send nothing, and 50 send one request and then keep the
/// connection idle. The server closes every one of them once HTTP_HEADER_TIMEOUT_SECS
/// has passed without whole headers (none is answered but the idle ones' first
/// request), and answers a legitimate client all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_are_closed_while_the_api_answers() {
    load::raise_fd_limit(4000);
    let header_timeout = 3u64;
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.http_header_timeout_secs = header_timeout;
        a.rate_limit_api = Rate0(None);
        a.rate_limit_api_ip = Rate0(None);
    })
    .await;
    let addr = s.addr;
    let request = format!(
        "GET /api/assistants HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nUser-Agent: slow\r\n\r\n",
        s.admin
    );

    let opened = Instant::now();
    let mut clients = Vec::new();
    for i in 0..450 {
        let request = request.clone();
        // Connected one after another, not 450 handshakes at once: a burst past the
        // listener's accept queue on a loaded machine can leave a client that believes
        // it is connected to a socket the server never accepted, and a silent one then
        // waits for a close that cannot come.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        clients.push(tokio::spawn(async move {
            let kind = match i % 9 {
                0..4 => "slow",
                4..8 => "silent",
                _ => "idle",
            };
            let answer = match kind {
                "slow" => {
                    // A byte a second until the server hangs up (far fewer bytes than
                    // the request's headers come before the timeout).
                    let (mut rd, mut wr) = tcp.split();
                    let writer = async {
                        for b in request.as_bytes() {
                            if wr.write_all(&[*b]).await.is_err() {
                                // The server hung up: the reader sees it too.
                                std::future::pending::<()>().await;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    };
                    let mut buf = [0u8; 256];
                    tokio::select! {
                        _ = writer => panic!("the whole request went out a byte a second: no header timeout"),
                        r = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)) => {
                            let n = r.expect("closed within 60 s").unwrap_or(0);
                            buf[..n].to_vec()
                        }
                    }
                }
                "silent" => until_closed(&mut tcp, Duration::from_secs(60)).await,
                _ => {
                    tcp.write_all(request.as_bytes()).await.unwrap();
                    until_closed(&mut tcp, Duration::from_secs(60)).await
                }
            };
            (kind, answer)
        }));
    }

    // A legitimate client is answered all along, each time on a new connection.
    let mut answered = 0;
    let mut failed = Vec::new();
    let until = Instant::now() + Duration::from_secs(header_timeout + 3);
    while Instant::now() < until {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        match client
            .get(s.at("/api/assistants"))
            .bearer_auth(&s.admin)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => answered += 1,
            Ok(r) => failed.push(r.status().to_string()),
            Err(e) => failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for c in clients {
        let (kind, answer) = c.await.unwrap();
        *kinds.entry(kind).or_default() += 1;
        let text = String::from_utf8_lossy(&answer);
        match kind {
            // Closed without an answer, or with hyper's 408.
            "slow" | "silent" => assert!(
                answer.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{kind}: {text}"
            ),
            _ => assert!(text.starts_with("HTTP/1.1 200"), "idle: {text}"),
        }
    }
    let took = opened.elapsed();
    println!(
        "slowloris: {kinds:?} all closed after {took:?}; the API answered {answered} requests meanwhile, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "the API failed a legitimate client during the flood: {failed:?}"
    );
    assert!(answered >= 10, "only {answered} answers");
    assert_eq!(kinds.values().sum::<usize>(), 450);
}

/// Ten times MAX_CALLS in call attempts at once, three times over: exactly MAX_CALLS
/// are admitted each time, the rest get 503 with `Retry-After` and a JSON error
/// before the upgrade, the admitted calls run to their end, and then their places
/// are given to new calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_call_limit_at_once_admits_exactly_the_limit() {
    load::raise_fd_limit(1000);
    const LIMIT: usize = 5;
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.max_calls = LIMIT;
        a.rate_limit_calls = Rate0(None);
        a.rate_limit_calls_ip = Rate0(None);
        a.rate_limit_api = Rate0(None);
        a.rate_limit_api_ip = Rate0(None);
    })
    .await;
    let assistant = s.assistant("limit").await;
    for round in 0..3 {
        let attempts: Vec<Result<Ws, WsError>> = futures_util::future::join_all(
            (0..LIMIT * 10).map(|_| connect(&s.url, &s.admin, &assistant)),
        )
        .await;
        let mut admitted = Vec::new();
        let mut refused = 0;
        for a in attempts {
            match a {
                Ok(ws) => admitted.push(ws),
                Err(WsError::Http(res)) => {
                    assert_eq!(res.status(), 503, "round {round}");
                    assert_eq!(
                        res.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()),
                        Some("1")
                    );
                    let body: Value =
                        serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
                    assert_eq!(body["error"]["code"], "unavailable", "{body}");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("MAX_CALLS"),
                        "{body}"
                    );
                    refused += 1;
                }
                Err(e) => panic!("round {round}: an attempt failed otherwise: {e}"),
            }
        }
        assert_eq!(
            (admitted.len(), refused),
            (LIMIT, LIMIT * 9),
            "round {round}: admitted and refused"
        );
        // The admitted calls run: a turn each, then the caller hangs up.
        let ends = futures_util::future::join_all(admitted.into_iter().map(|mut ws| async move {
            start_call(&mut ws).await;
            ws.send(Message::Text(r#"{"type":"text","text":"hello"}"#.into()))
                .await
                .unwrap();
            let mut reason = None;
            while let Some(e) = next_event(&mut ws).await {
                if e["type"] == "bot-speech-stopped" {
                    ws.send(Message::Text(r#"{"type":"end"}"#.into()))
                        .await
                        .unwrap();
                }
                if e["type"] == "call-ended" {
                    reason = e["reason"].as_str().map(str::to_string);
                }
            }
            reason
        }))
        .await;
        assert!(
            ends.iter()
                .all(|r| r.as_deref() == Some("customer-ended-call")),
            "round {round}: {ends:?}"
        );
        // The places free up as the calls' tasks end (just after their sockets).
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_gauge(&s).await > 0.0 {
            assert!(
                Instant::now() < deadline,
                "calls still live after their end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client that vanishes without closing (it stops reading, so it answers no
/// ping, and sends nothing) is found out by the pings: with WS_PING_SECS=1 its call
/// ends as `connection-lost` after about two seconds of silence. A client that says
/// nothing but reads its socket (so its WebSocket answers the pings) keeps its call
/// for many times that, and is answered when it speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_without_closing_is_found_by_pings_and_a_quiet_one_is_not() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.ws_ping_secs = 1;
        a.reconnect_window_secs = 0;
    })
    .await;
    let assistant = s.create_assistant(serde_json::json!({"name": "pings", "firstMessageMode": "user-speaks-first", "firstMessage": null})).await;

    // Gone: the call starts, then the client neither reads nor writes (its socket
    // stays open: no FIN, no reset).
    let mut gone = connect(&s.url, &s.admin, &assistant).await.unwrap();
    let started = start_call(&mut gone).await;
    let gone_id = started["callId"].as_str().unwrap().to_string();

    // Quiet: reads (answering pings) but sends nothing for 8 s, four times the limit.
    let mut quiet = connect(&s.url, &s.admin, &assistant).await.unwrap();
    let quiet_id = start_call(&mut quiet).await["callId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(m) = tokio::time::timeout_at(until, quiet.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(f))) => panic!("the quiet call was closed: {f:?}"),
            None | Some(Err(_)) => panic!("the quiet call's socket dropped"),
            Some(Ok(_)) => {}
        }
    }
    assert!(pings >= 3, "{pings} pings in 8 s at WS_PING_SECS=1");

    let record = ended_call(&s, &gone_id, Duration::from_secs(30)).await;
    assert_eq!(record["endedReason"], "connection-lost", "{record}");
    // The quiet caller is still in its call, and is answered.
    quiet
        .send(Message::Text(r#"{"type":"text","text":"hello"}"#.into()))
        .await
        .unwrap();
    let mut answered = false;
    while let Some(e) = next_event(&mut quiet).await {
        if e["type"] == "bot-speech-stopped" {
            answered = true;
            quiet
                .send(Message::Text(r#"{"type":"end"}"#.into()))
                .await
                .unwrap();
        }
    }
    assert!(answered, "the quiet call was not answered");
    let record = ended_call(&s, &quiet_id, Duration::from_secs(10)).await;
    assert_eq!(record["endedReason"], "customer-ended-call", "{record}");

    // The server let go of the gone client's connection: past the pings it had
    // queued, the client reads the end of the connection.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match gone.next().await {
                Some(Ok(Message::Ping(_) | Message::Text(_))) => {}
                // A close frame, when the client's buffers still had room for it.
                Some(Ok(Message::Close(_))) => return None,
                other => return other.map(|m| m.map(|m| m.to_string())),
            }
        }
    })
    .await
    .expect("the server closed the gone client's connection");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

/// Opens an HTTP/2 connection with prior knowledge (h2c) to `addr`; the handle to
/// send on it, and its connection task (it ends when the connection does).
async fn h2c(addr: std::net::SocketAddr) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("an h2c handshake");
    (send, tokio::spawn(conn))
}

/// `GET /api/health` on an HTTP/2 connection; its status.
async fn h2_health(send: &h2::client::SendRequest<bytes::Bytes>, addr: std::net::SocketAddr) -> u16 {
    let req = axum::http::Request::get(format!("http://{addr}/api/health")).body(()).unwrap();
    let mut ready = send.clone().ready().await.expect("the connection is open");
    let (answer, _) = ready.send_request(req, true).unwrap();
    let answer = answer.await.expect("an answer");
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    status
}

/// HTTP/2 without TLS (h2c, prior knowledge): a connection that has had no request
/// in flight and written nothing for HTTP_HEADER_TIMEOUT_SECS is closed, as an idle
/// HTTP/1.1 keep-alive connection is; one in use stays open however long it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_busy_ones_are_not() {
    let header_timeout = 1u64;
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.http_header_timeout_secs = header_timeout;
        a.rate_limit_api = Rate0(None);
        a.rate_limit_api_ip = Rate0(None);
    })
    .await;

    // In use: a request every 400 ms for three idle limits, all on one connection.
    let (busy, busy_conn) = h2c(s.addr).await;
    let until = Instant::now() + Duration::from_secs(3 * header_timeout);
    while Instant::now() < until {
        assert_eq!(h2_health(&busy, s.addr).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(!busy_conn.is_finished(), "a connection in use stays open");

    // Idle: one request, then nothing.
    let (idle, idle_conn) = h2c(s.addr).await;
    assert_eq!(h2_health(&idle, s.addr).await, 200);
    let quiet = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(header_timeout + 5), idle_conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
    let after = quiet.elapsed();
    assert!(after >= Duration::from_millis(header_timeout * 1000 - 200), "closed after {after:?}, before the limit");
    drop(busy);
}
