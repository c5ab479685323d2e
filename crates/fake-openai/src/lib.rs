//! A fake OpenAI server on loopback that speaks the real wire format, records every
//! request, and answers each from a script (or with the route's normal reply).
//! The Realtime WebSocket endpoint lives in [`realtime`] ([`Fake::realtime`]).

pub mod realtime;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

/// What the server saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body, for JSON requests.
    pub json: Option<Value>,
    /// Text fields, for multipart requests.
    pub fields: BTreeMap<String, String>,
    /// The `file` field of a multipart request: (file name, content type, bytes).
    pub file: Option<(String, String, Vec<u8>)>,
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The route's normal reply.
    Normal,
    /// An error status with OpenAI's JSON error body.
    Error { status: u16, kind: String, code: Option<String>, message: String, retry_after: Option<String> },
    /// 401 with the key echoed back in the message, as OpenAI does.
    EchoKey,
    /// A raw reply: a pause before the headers, the body in pieces with a pause
    /// between them, and optionally the connection dropped after the last piece.
    Raw { status: u16, content_type: String, before: Duration, between: Duration, pieces: Vec<Vec<u8>>, cut: bool },
}

impl Reply {
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Error { status, kind: kind.into(), code: None, message: message.into(), retry_after: None }
    }

    pub fn rate_limited(retry_after: &str) -> Reply {
        Reply::Error {
            status: 429,
            kind: "requests".into(),
            code: Some("rate_limit_exceeded".into()),
            message: "Rate limit reached for requests".into(),
            retry_after: Some(retry_after.into()),
        }
    }

    /// An SSE reply made of these events (`data: <event>\n\n` each, one piece each).
    pub fn sse(events: &[String], between: Duration, cut: bool) -> Reply {
        Reply::Raw {
            status: 200,
            content_type: "text/event-stream; charset=utf-8".into(),
            before: Duration::ZERO,
            between,
            pieces: events.iter().map(|e| format!("data: {e}\n\n").into_bytes()).collect(),
            cut,
        }
    }

    /// A reply that never comes: the headers wait an hour (the connection stays open).
    pub fn hang() -> Reply {
        Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            before: Duration::from_secs(3600),
            between: Duration::ZERO,
            pieces: vec![],
            cut: false,
        }
    }

    /// A 200 whose body is `body`, under `content_type`: what a broken proxy, a
    /// captive portal or another service on the port answers.
    pub fn garbage(content_type: &str, body: &[u8]) -> Reply {
        Reply::Raw { status: 200, content_type: content_type.into(), before: Duration::ZERO, between: Duration::ZERO, pieces: vec![body.to_vec()], cut: false }
    }

    /// The normal reply of a route, late by `before`.
    pub fn slow(route: Route, fake: &Fake, before: Duration) -> Reply {
        match fake.normal(route) {
            Reply::Raw { status, content_type, between, pieces, cut, .. } => Reply::Raw { status, content_type, before, between, pieces, cut },
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Chat,
    Transcriptions,
    Speech,
    Models,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Transcriptions => "/v1/audio/transcriptions",
            Route::Speech => "/v1/audio/speech",
            Route::Models => "/v1/models",
        }
    }
}

/// What the routes answer normally.
#[derive(Debug, Clone)]
pub struct Normal {
    pub transcript: String,
    pub reply: String,
    pub speech: Vec<i16>,
    /// Odd sizes, so pieces split samples.
    pub speech_pieces: Vec<usize>,
    pub speech_pause: Duration,
    /// The pause between two chat events.
    pub chat_pause: Duration,
}

impl Default for Normal {
    fn default() -> Self {
        Normal {
            transcript: "What is the weather in Paris?".into(),
            reply: "It is sunny in Paris today.".into(),
            speech: (0..12_000).map(|i: i32| ((i * 131) % 60_000 - 30_000) as i16).collect(),
            speech_pieces: vec![1, 7, 333, 4097, 2, 9],
            speech_pause: Duration::from_millis(2),
            chat_pause: Duration::from_millis(1),
        }
    }
}

struct Shared {
    scripts: Mutex<HashMap<Route, VecDeque<Reply>>>,
    seen: Mutex<Vec<Seen>>,
    normal: Mutex<Normal>,
    realtime: Arc<realtime::RealtimeState>,
}

/// A running fake server.
pub struct Fake {
    /// The API root, e.g. `http://127.0.0.1:PORT/v1`.
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start() -> Fake {
        Fake::start_inner(false).await
    }

    /// A fake whose connections close abortively (`SO_LINGER` 0): a reply that is
    /// cut (`cut: true`) ends with a TCP reset, as a crashing server or a proxy
    /// dropping the connection sends, not with an orderly close.
    pub async fn start_resetting() -> Fake {
        Fake::start_inner(true).await
    }

    async fn start_inner(reset: bool) -> Fake {
        let shared = Arc::new(Shared {
            scripts: Mutex::default(),
            seen: Mutex::default(),
            normal: Mutex::new(Normal::default()),
            realtime: Arc::default(),
        });
        let app = Router::new()
            .route(Route::Chat.path(), post(json_route))
            .route(Route::Speech.path(), post(json_route))
            .route(Route::Transcriptions.path(), post(transcriptions))
            .route(Route::Models.path(), get(models))
            .route(realtime::PATH, get(realtime::upgrade))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        // Real API servers answer with TCP_NODELAY; without it, Nagle's algorithm and
        // the client's delayed ACKs hold small SSE pieces back by 40 ms.
        let nodelay = std::env::var_os("FAKE_NAGLE").is_none();
        let task = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
                let _ = tcp.set_nodelay(nodelay);
                if reset {
                    let _ = tcp.set_zero_linger();
                }
            });
            let _ = axum::serve(listener, app).await;
        });
        Fake { base: format!("http://{addr}/v1"), shared, task }
    }

    /// Answers the next requests of `route` with these replies, in order.
    pub fn script(&self, route: Route, replies: impl IntoIterator<Item = Reply>) {
        self.shared.scripts.lock().unwrap().entry(route).or_default().extend(replies);
    }

    /// Drops the replies still scripted for `route` (its next requests get the normal reply).
    pub fn clear(&self, route: Route) {
        self.shared.scripts.lock().unwrap().remove(&route);
    }

    pub fn set_normal(&self, f: impl FnOnce(&mut Normal)) {
        f(&mut self.shared.normal.lock().unwrap());
    }

    pub fn normal_values(&self) -> Normal {
        self.shared.normal.lock().unwrap().clone()
    }

    /// The requests seen on `route`, in order.
    pub fn seen(&self, route: Route) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().iter().filter(|s| s.path == route.path()).cloned().collect()
    }

    /// The Realtime WebSocket endpoint (`ws://.../v1/realtime`): its script and what it saw.
    pub fn realtime(&self) -> realtime::FakeRealtime {
        realtime::FakeRealtime { state: self.shared.realtime.clone() }
    }

    fn normal(&self, route: Route) -> Reply {
        normal_reply(&self.shared.normal.lock().unwrap(), route)
    }
}

fn normal_reply(normal: &Normal, route: Route) -> Reply {
    match route {
        Route::Chat => Reply::sse(&chat_events(&normal.reply), normal.chat_pause, false),
        Route::Speech => {
            let bytes: Vec<u8> = normal.speech.iter().flat_map(|s| s.to_le_bytes()).collect();
            let mut pieces = Vec::new();
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = normal.speech_pieces[i % normal.speech_pieces.len()].min(rest.len());
                pieces.push(rest[..n].to_vec());
                rest = &rest[n..];
                i += 1;
            }
            Reply::Raw { status: 200, content_type: "audio/pcm".into(), before: Duration::ZERO, between: normal.speech_pause, pieces, cut: false }
        }
        Route::Transcriptions => Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            before: Duration::ZERO,
            between: Duration::ZERO,
            pieces: vec![json!({"text": normal.transcript, "usage": {"type": "tokens", "total_tokens": 10}}).to_string().into_bytes()],
            cut: false,
        },
        Route::Models => Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            before: Duration::ZERO,
            between: Duration::ZERO,
            pieces: vec![json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "system"}]}).to_string().into_bytes()],
            cut: false,
        },
    }
}

/// One `chat.completion.chunk` as OpenAI sends it.
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "service_tier": "default", "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    })
    .to_string()
}

/// The events of a text reply: the role, one chunk per word, the stop, `[DONE]`.
pub fn chat_events(text: &str) -> Vec<String> {
    let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)];
    events.extend(text.split_inclusive(' ').map(|w| chunk(json!({"content": w}), None)));
    events.push(chunk(json!({}), Some("stop")));
    events.push("[DONE]".into());
    events
}

/// The words of a text reply as the client should see them.
pub fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

async fn record(shared: &Shared, seen: Seen, route: Route) -> Reply {
    shared.seen.lock().unwrap().push(seen);
    let next = shared.scripts.lock().unwrap().get_mut(&route).and_then(VecDeque::pop_front);
    match next {
        Some(Reply::Normal) | None => normal_reply(&shared.normal.lock().unwrap(), route),
        Some(reply) => reply,
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn json_route(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: axum::http::Uri, body: Bytes) -> Response {
    let route = if uri.path() == Route::Chat.path() { Route::Chat } else { Route::Speech };
    let seen = Seen {
        path: uri.path().to_string(),
        authorization: header(&headers, "authorization"),
        content_type: header(&headers, "content-type"),
        json: serde_json::from_slice(&body).ok(),
        ..Seen::default()
    };
    if seen.json.is_none() {
        return respond(Reply::error(400, "invalid_request_error", "We could not parse the JSON body of your request."), &seen).await;
    }
    let reply = record(&shared, seen.clone(), route).await;
    respond(reply, &seen).await
}

async fn transcriptions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let mut seen = Seen {
        path: request.uri().path().to_string(),
        authorization: header(&headers, "authorization"),
        content_type: header(&headers, "content-type"),
        ..Seen::default()
    };
    let mut multipart = match Multipart::from_request(request, &()).await {
        Ok(m) => m,
        Err(e) => return respond(Reply::error(400, "invalid_request_error", &format!("not multipart: {e}")), &seen).await,
    };
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().unwrap_or("").to_string();
        let Ok(data) = field.bytes().await else { break };
        match file_name {
            Some(file_name) if name == "file" => seen.file = Some((file_name, content_type, data.to_vec())),
            _ => {
                seen.fields.insert(name, String::from_utf8_lossy(&data).into_owned());
            }
        }
    }
    let reply = record(&shared, seen.clone(), Route::Transcriptions).await;
    respond(reply, &seen).await
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let seen = Seen { path: Route::Models.path().into(), authorization: header(&headers, "authorization"), ..Seen::default() };
    let reply = record(&shared, seen.clone(), Route::Models).await;
    respond(reply, &seen).await
}

async fn respond(reply: Reply, seen: &Seen) -> Response {
    match reply {
        Reply::Normal => unreachable!("resolved in record"),
        Reply::Error { status, kind, code, message, retry_after } => {
            let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
            let mut response = Response::builder().status(status).header("content-type", "application/json");
            if let Some(wait) = retry_after {
                response = response.header("retry-after", wait);
            }
            response.body(Body::from(body.to_string())).unwrap()
        }
        Reply::EchoKey => {
            let key = seen.authorization.clone().unwrap_or_default().trim_start_matches("Bearer ").to_string();
            let body = json!({"error": {
                "message": format!("Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."),
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
            Response::builder().status(StatusCode::UNAUTHORIZED).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
        }
        Reply::Raw { status, content_type, before, between, pieces, cut } => {
            tokio::time::sleep(before).await;
            let count = pieces.len();
            let stream = futures_util::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| async move {
                if i > 0 {
                    tokio::time::sleep(between).await;
                }
                Ok::<_, std::io::Error>(Bytes::from(piece))
            });
            // Let the last piece reach the client before the connection drops.
            let tail = futures_util::stream::iter(cut.then_some(())).then(|()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("cut on purpose"))
            });
            let _ = count;
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Body::from_stream(futures_util::StreamExt::chain(stream, tail)))
                .unwrap()
        }
    }
}

use futures_util::StreamExt as _;
