//! Knowledge bases through the real server: uploads of every supported type and of
//! hostile files over real HTTP, the background processing with the real
//! all-MiniLM-L6-v2 model, retrieval into a call's context, deletion, the upload
//! rate limit; and tools: a signed round trip to a real HTTP server in the test,
//! its timeout, the knowledge-query and transfer-call tools.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use common::*;
use serde_json::{Value, json};
use voxgate_api::ratelimit::Rate;
use voxgate_server::config::Rate0;
use voxgate_server::session::providers::Providers;
use voxgate_services::llm::Role;
use voxgate_services::scripted::{ScriptedLlm, ScriptedStt, Step, ToneTts};
use voxgate_testkit::TestDb;

const BOUNDARY: &str = "voxgate-test-boundary-7MA4YWxkTrZu0gW";

/// A multipart body with one field.
fn multipart(field: &str, file_name: Option<&str>, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    write!(body, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"").unwrap();
    if let Some(name) = file_name {
        write!(body, "; filename=\"{name}\"").unwrap();
    }
    write!(body, "\r\nContent-Type: {content_type}\r\n\r\n").unwrap();
    body.extend_from_slice(bytes);
    write!(body, "\r\n--{BOUNDARY}--\r\n").unwrap();
    body
}

async fn post_raw(s: &TestServer, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    TestServer::http().post(s.at("/api/files")).bearer_auth(&s.admin).header("content-type", content_type).body(body).send().await.unwrap()
}

async fn upload(s: &TestServer, name: &str, declared_type: &str, bytes: &[u8]) -> reqwest::Response {
    post_raw(s, &format!("multipart/form-data; boundary={BOUNDARY}"), multipart("file", Some(name), declared_type, bytes)).await
}

/// Uploads and waits until the file is processed; returns its final record.
async fn upload_ready(s: &TestServer, name: &str, bytes: &[u8]) -> Value {
    let res = upload(s, name, "application/octet-stream", bytes).await;
    assert_eq!(res.status(), 202, "{name}: {}", res.text().await.unwrap());
    let record: Value = res.json().await.unwrap();
    assert_eq!(record["status"], "processing");
    wait_processed(s, record["id"].as_str().unwrap()).await
}

async fn wait_processed(s: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let f: Value = TestServer::http().get(s.at(&format!("/api/files/{id}"))).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
        if f["status"] != "processing" {
            return f;
        }
        assert!(tokio::time::Instant::now() < deadline, "file {id} still processing after 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A one-page PDF whose content stream is `content` (written by hand, with a
/// correct cross-reference table).
fn pdf(content: &[u8], filter: &str) -> Vec<u8> {
    let objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        [format!("<< /Length {} {filter} >>\nstream\n", content.len()).into_bytes(), content.to_vec(), b"\nendstream".to_vec()].concat(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (n, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", n + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
    out
}

fn text_pdf(line: &str) -> Vec<u8> {
    pdf(format!("BT /F1 12 Tf 72 720 Td ({line}) Tj ET").as_bytes(), "")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A stored zip archive with one entry (no compression: the bytes are the point).
fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    out.extend_from_slice(&[0; 4]); // crc (unchecked here)
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);
    out
}

async fn chunk_texts(s: &TestServer, id: &str) -> Vec<String> {
    s.store.file_chunks(id).await.unwrap().into_iter().map(|c| c.text).collect()
}

#[tokio::test]
async fn every_supported_type_becomes_searchable_with_its_text() {
    let s = TestServer::start().await;
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        ("notes.txt", b"The loading dock closes at four thirty.".to_vec(), "text/plain", "loading dock closes at four thirty"),
        ("guide.md", b"# Parking\n\nVisitors park in **lot C** behind the gym.".to_vec(), "text/markdown", "Visitors park in lot C behind the gym"),
        ("prices.csv", b"item,price\ncoffee,2.50\nbagel,1.75\n".to_vec(), "text/csv", "bagel"),
        (
            "page.html",
            b"<html><head><script>alert('no')</script><style>p{}</style></head><body><p>Lockers are on the second floor.</p></body></html>".to_vec(),
            "text/html",
            "Lockers are on the second floor.",
        ),
        ("hours.pdf", text_pdf("The archive room opens at nine."), "application/pdf", "The archive room opens at nine."),
    ];
    for (name, bytes, content_type, expected) in cases {
        let f = upload_ready(&s, name, &bytes).await;
        assert_eq!(f["status"], "ready", "{name}: {f}");
        assert_eq!(f["contentType"], content_type, "{name}");
        assert_eq!(f["name"], name);
        assert_eq!(f["sizeBytes"], bytes.len());
        assert!(f["chunkCount"].as_i64().unwrap() >= 1, "{name}: {f}");
        let texts = chunk_texts(&s, f["id"].as_str().unwrap()).await.join("\n");
        assert!(texts.contains(expected), "{name}: {expected:?} not in {texts:?}");
        assert!(!texts.contains("alert"), "{name}: script text leaked into the chunks");
    }
    // The list shows them, newest first.
    let list: Value = TestServer::http().get(s.at("/api/files?limit=10")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    assert_eq!(list["items"][0]["name"], "hours.pdf");
}

#[tokio::test]
async fn hostile_files_get_clear_errors_and_nothing_is_kept() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.upload_max_bytes = 256 * 1024).await;
    let files_dir = voxgate_server::config::ServeArgs::for_tests(&s.db.url).files_dir;
    let before = std::fs::read_dir(&files_dir).map(|d| d.count()).unwrap_or(0);

    // A PDF bomb: 150 MiB of zeros in about 150 KiB, under the upload limit and
    // over the decompression limit.
    let bomb = pdf(&zlib(&vec![0u8; 150 << 20]), "/Filter /FlateDecode");
    assert!(bomb.len() < 256 * 1024, "the bomb is {} bytes", bomb.len());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bomb.pdf", bomb, 413, "payload_too_large"),
        ("report.pdf", zip_of("word/document.xml", b"<w:document/>"), 415, "unsupported_media_type"),
        ("data.txt", (0..4096u32).map(|i| (i * 7 % 256) as u8).collect(), 415, "unsupported_media_type"),
        ("latin1.txt", b"caf\xe9 cr\xe8me".to_vec(), 422, "validation_failed"),
        ("empty.txt", Vec::new(), 422, "validation_failed"),
        ("huge.csv", "a,b,c\n".repeat(60_000).into_bytes(), 413, "payload_too_large"),
        ("image.pdf", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(), 415, "unsupported_media_type"),
    ];
    for (name, bytes, status, code) in cases {
        let res = upload(&s, name, "text/plain", &bytes).await;
        let (got_status, got_code, body) = error_code(res).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{name}: {body}");
    }
    // Refused files leave no record and no bytes.
    let list: Value = TestServer::http().get(s.at("/api/files")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(std::fs::read_dir(&files_dir).map(|d| d.count()).unwrap_or(0), before);
}

#[tokio::test]
async fn a_file_name_cannot_choose_where_the_bytes_go() {
    let s = TestServer::start().await;
    let files_dir = voxgate_server::config::ServeArgs::for_tests(&s.db.url).files_dir;
    let escape = files_dir.parent().unwrap().join("escaped.txt");
    let _ = std::fs::remove_file(&escape);
    for name in ["../escaped.txt", "..\\..\\escaped.txt", "/etc/passwd", "a/../../escaped.txt", "\u{202e}txt.exe"] {
        let res = upload(&s, name, "text/plain", b"Nothing to see but plain words here.").await;
        assert_eq!(res.status(), 202, "{name:?}");
        let f: Value = res.json().await.unwrap();
        let shown = f["name"].as_str().unwrap();
        assert!(!shown.contains('/') && !shown.contains('\\') && !shown.contains('\0') && !shown.contains(".."), "{name:?} kept as {shown:?}");
        assert!(files_dir.join(f["id"].as_str().unwrap()).is_file(), "the bytes are kept under the id");
        assert!(f.get("storagePath").is_none(), "the storage path is never shown");
    }
    assert!(!escape.exists(), "an upload wrote outside the files folder");
}

#[tokio::test]
async fn malformed_upload_requests_are_clear_errors() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.upload_max_bytes = 64 * 1024).await;
    let mp = format!("multipart/form-data; boundary={BOUNDARY}");
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("json instead of multipart", "application/json".into(), b"{\"file\":\"x\"}".to_vec(), 415),
        ("no boundary", "multipart/form-data".into(), multipart("file", Some("a.txt"), "text/plain", b"hi there"), 415),
        ("wrong field", mp.clone(), multipart("document", Some("a.txt"), "text/plain", b"hi there"), 400),
        ("no parts", mp.clone(), format!("--{BOUNDARY}--\r\n").into_bytes(), 400),
        ("truncated", mp.clone(), multipart("file", Some("a.txt"), "text/plain", b"hi there")[..60].to_vec(), 400),
        ("garbage", mp.clone(), b"\x00\x01\x02 not multipart at all".to_vec(), 400),
        (
            "two files",
            mp.clone(),
            [
                multipart("file", Some("a.txt"), "text/plain", b"one file here")[..].strip_suffix(format!("--{BOUNDARY}--\r\n").as_bytes()).unwrap().to_vec(),
                multipart("file", Some("b.txt"), "text/plain", b"another file here"),
            ]
            .concat(),
            400,
        ),
        ("over the limit", mp.clone(), multipart("file", Some("big.txt"), "text/plain", &vec![b'a'; 70 * 1024]), 413),
    ];
    for (what, content_type, body, status) in cases {
        let res = post_raw(&s, &content_type, body).await;
        let (got, _code, body) = error_code(res).await;
        assert_eq!(got, status, "{what}: {body}");
    }
    // A lying Content-Length over the limit is refused at once.
    let res = TestServer::http()
        .post(s.at("/api/files"))
        .bearer_auth(&s.admin)
        .header("content-type", mp)
        .header("content-length", (1u64 << 40).to_string())
        .body("x")
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
    }
    // No key, or a public key: not allowed.
    let res = TestServer::http().post(s.at("/api/files")).body("x").send().await.unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn uploads_are_rate_limited_per_key() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.rate_limit_uploads = Rate0(Some(Rate { burst: 2, per: Duration::from_secs(3600) }));
    })
    .await;
    for n in 0..2 {
        let res = upload(&s, "a.txt", "text/plain", b"Short words for a small file.").await;
        assert_eq!(res.status(), 202, "upload {n}");
    }
    let res = upload(&s, "a.txt", "text/plain", b"Short words for a small file.").await;
    assert!(res.headers().get("retry-after").is_some(), "429 says when to come back");
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // Other routes are not in the uploads group.
    let res = TestServer::http().get(s.at("/api/files")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// Providers whose model records its requests, for assertions on the context.
fn recording(llm: ScriptedLlm) -> Providers {
    Providers { stt: Arc::new(ScriptedStt::new(Vec::<String>::new(), Duration::ZERO)), llm: Arc::new(llm), tts: Arc::new(ToneTts::default()), tools: None }
}

fn system_context(llm: &ScriptedLlm, request: usize) -> String {
    let requests = llm.requests.lock().unwrap();
    requests[request].messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.clone()).collect::<Vec<_>>().join("\n")
}

/// A handbook of five topics, each a paragraph long enough to be a chunk of its own.
fn handbook() -> String {
    [
        "The Riverside branch opens at 7:45 on Saturdays and closes at noon.",
        "Parking passes cost twelve dollars a month at the front desk.",
        "Printing is ten cents per black and white page and fifty cents in colour.",
        "The children's story hour is every Wednesday at four in the afternoon.",
        "Lost library cards are replaced for a fee of two dollars.",
    ]
    .iter()
    .map(|fact| [*fact; 9].join(" "))
    .collect::<Vec<_>>()
    .join("\n\n")
}

#[tokio::test]
async fn the_nearest_chunk_joins_the_context_and_deleting_the_file_removes_it() {
    let llm = ScriptedLlm::new([ScriptedLlm::words("It opens at a quarter to eight.", Duration::ZERO), ScriptedLlm::words("I am not sure.", Duration::ZERO)]);
    let s = TestServer::start_with_providers(TestDb::chosen().await, recording(llm.clone()), |_| {}).await;
    let f = upload_ready(&s, "handbook.md", handbook().as_bytes()).await;
    assert_eq!(f["status"], "ready", "{f}");
    let file_id = f["id"].as_str().unwrap().to_string();
    // Another file with unrelated text, also searched.
    let other = upload_ready(&s, "menu.txt", b"The cafe sells soup, sandwiches and coffee until three.").await;

    let assistant = s
        .create_assistant(json!({
            "name": "librarian",
            "firstMessageMode": "user-speaks-first",
            // A budget for a loaded machine (tests run in parallel): this test is
            // about what is retrieved; the budget has its own test (services, stages.rs).
            "knowledgeBase": { "fileIds": [file_id, other["id"]], "topK": 1, "budgetMs": 5000 },
        }))
        .await;
    let events = typed_call(&s, &assistant, "What time does the Riverside branch open on Saturday?", 1).await;
    let context = system_context(&llm, 0);
    assert!(context.contains("7:45"), "the opening-hours chunk is not in the context: {context}");
    assert!(!context.contains("soup") && !context.contains("twelve dollars"), "topK 1 gave more than the nearest chunk: {context}");
    // The caller's words stay last, the history unchanged by the context.
    let req = llm.requests.lock().unwrap()[0].clone();
    assert_eq!(req.messages.last().unwrap().role, Role::User);
    let latency = events.iter().find(|e| e["type"] == "latency").expect("a latency event");
    assert!(latency["retrievalMs"].is_u64(), "{latency}");

    // The turn record keeps the retrieval time.
    let calls = s.store.list_calls(&voxgate_store::calls::CallFilter { limit: 10, ..Default::default() }).await.unwrap();
    let call = s.store.get_call(&calls.items[0].id).await.unwrap();
    let reply = call.turns.unwrap().into_iter().find(|t| t.role == voxgate_domain::call::TurnRole::Assistant).unwrap();
    assert!(reply.latency.retrieval_ms.is_some(), "{reply:?}");

    // Deleting the file removes its chunks and bytes; the next call has no such context.
    let res = TestServer::http().delete(s.at(&format!("/api/files/{file_id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert!(chunk_texts(&s, &file_id).await.is_empty());
    let files_dir = voxgate_server::config::ServeArgs::for_tests(&s.db.url).files_dir;
    assert!(!files_dir.join(&file_id).exists(), "the bytes outlived the file");
    let res = TestServer::http().get(s.at(&format!("/api/files/{file_id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = TestServer::http().delete(s.at(&format!("/api/files/{file_id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 404);
    typed_call(&s, &assistant, "What time does the Riverside branch open on Saturday?", 1).await;
    let context = system_context(&llm, 1);
    assert!(!context.contains("7:45"), "a deleted file was still searched: {context}");
}

#[tokio::test]
async fn an_assistant_cannot_name_a_file_that_does_not_exist() {
    let s = TestServer::start().await;
    let res = TestServer::http()
        .post(s.at("/api/assistants"))
        .bearer_auth(&s.admin)
        .json(&json!({ "name": "x", "knowledgeBase": { "fileIds": ["0190d5f4-0000-7000-8000-000000000000", "../../etc"] } }))
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "validation_failed"), "{body}");
    let fields: Vec<&str> = body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"knowledgeBase.fileIds[1]"), "{body}");
    let res = TestServer::http()
        .post(s.at("/api/assistants"))
        .bearer_auth(&s.admin)
        .json(&json!({ "name": "x", "knowledgeBase": { "fileIds": ["0190d5f4-0000-7000-8000-000000000000"] } }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = error_code(res).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["fields"][0]["field"], "knowledgeBase.fileIds[0]");
}

/// What the tool server in a test saw.
#[derive(Default)]
struct ToolServer {
    requests: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

async fn tool_server() -> (String, Arc<ToolServer>) {
    let seen = Arc::new(ToolServer::default());
    let app = axum::Router::new()
        .route(
            "/orders",
            axum::routing::post(|State(s): State<Arc<ToolServer>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                s.requests.lock().unwrap().push((headers, body.to_vec()));
                axum::Json(json!({ "result": { "order": "A17", "status": "ships tomorrow" } }))
            }),
        )
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "too late"
            }),
        )
        .route("/broken", axum::routing::post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream down") }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn tool_results(llm: &ScriptedLlm, request: usize) -> Vec<String> {
    let requests = llm.requests.lock().unwrap();
    requests[request].messages.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.clone()).collect()
}

#[tokio::test]
async fn a_tool_call_goes_to_its_server_signed_and_its_answer_back_to_the_model() {
    let (url, seen) = tool_server().await;
    let tool = |name: &str, args: &str| Step::Tool { name: name.into(), arguments: args.into(), delay: Duration::ZERO };
    let llm = ScriptedLlm::new([
        vec![tool("lookup_order", r#"{"order":"A17"}"#)],
        ScriptedLlm::words("Your order ships tomorrow.", Duration::ZERO),
        vec![tool("slow_lookup", "{}"), tool("broken_lookup", "{}"), tool("no_such_tool", "{}"), tool("lookup_order", "not json"), tool("metadata", "{}")],
        ScriptedLlm::words("Sorry, that did not work.", Duration::ZERO),
    ]);
    let secret = "whsec-test-tools-0123456789";
    let s = TestServer::start_with_providers(TestDb::chosen().await, recording(llm.clone()), |a| a.webhook_secret = Some(secret.into())).await;
    let assistant = s
        .create_assistant(json!({
            "name": "orders",
            "firstMessageMode": "user-speaks-first",
            "tools": [
                { "name": "lookup_order", "url": format!("{url}/orders"), "parameters": { "type": "object", "properties": { "order": { "type": "string" } } } },
                { "name": "slow_lookup", "url": format!("{url}/slow"), "timeoutMs": 300 },
                { "name": "broken_lookup", "url": format!("{url}/broken") },
                { "name": "metadata", "url": "http://169.254.169.254/latest/meta-data/" },
            ],
        }))
        .await;
    let events = typed_call(&s, &assistant, "Where is my order A17?", 1).await;
    assert!(events.iter().any(|e| e["type"] == "tool-call" && e["name"] == "lookup_order" && e["arguments"]["order"] == "A17"), "{events:?}");

    // The server got one signed request naming the call and the arguments.
    let (headers, body) = seen.requests.lock().unwrap().first().cloned().expect("the tool server was called");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let signature = headers.get(voxgate_webhooks::headers::SIGNATURE).and_then(|v| v.to_str().ok());
    voxgate_webhooks::verify(secret.as_bytes(), signature, &body, now, 300).expect("a valid signature");
    assert!(voxgate_webhooks::verify(b"another secret", signature, &body, now, 300).is_err());
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["toolCall"]["name"], "lookup_order");
    assert_eq!(sent["toolCall"]["arguments"]["order"], "A17");
    assert!(sent["call"]["id"].is_string());
    // The answer's `result` went back to the model, which answered with it.
    let results = tool_results(&llm, 1);
    assert_eq!(results.len(), 1);
    let result: Value = serde_json::from_str(&results[0]).unwrap();
    assert_eq!(result["status"], "ships tomorrow");
    assert!(events.iter().any(|e| e["type"] == "bot-speech-started"), "no reply after the tool: {events:?}");

    // A slow tool times out, a failing one and an unknown one are errors the model
    // sees, bad arguments and a cloud metadata address too; the call goes on and the
    // reply comes.
    let started = std::time::Instant::now();
    let events = typed_call(&s, &assistant, "And order B2?", 1).await;
    // The slow tool would answer after 10 s; its 300 ms timeout lets the reply
    // (about 1.5 s of audio, played in real time) come long before.
    assert!(started.elapsed() < Duration::from_secs(7), "the slow tool held the reply for {:?}", started.elapsed());
    let results = tool_results(&llm, 3).join("\n");
    assert!(results.contains("did not answer within 300 ms"), "{results}");
    assert!(results.contains("is not called: the host is a link-local, metadata"), "{results}");
    assert!(results.contains("answered 502"), "{results}");
    assert!(results.contains("no tool named"), "{results}");
    assert!(results.contains("not valid JSON"), "{results}");
    assert!(events.iter().any(|e| e["type"] == "bot-speech-started"), "no reply after the failed tools: {events:?}");
    assert_eq!(seen.requests.lock().unwrap().len(), 1, "bad arguments must not reach the server");
}

#[tokio::test]
async fn knowledge_query_and_transfer_tools() {
    let tool = |name: &str, args: &str| Step::Tool { name: name.into(), arguments: args.into(), delay: Duration::ZERO };
    let llm = ScriptedLlm::new([
        vec![tool("search_docs", r#"{"query":"how much is a parking pass"}"#)],
        ScriptedLlm::words("Twelve dollars a month.", Duration::ZERO),
        vec![tool("to_billing", "{}")],
    ]);
    let s = TestServer::start_with_providers(TestDb::chosen().await, recording(llm.clone()), |_| {}).await;
    let f = upload_ready(&s, "handbook.md", handbook().as_bytes()).await;
    let assistant = s
        .create_assistant(json!({
            "name": "desk",
            "firstMessageMode": "user-speaks-first",
            "knowledgeBase": { "fileIds": [f["id"]], "topK": 1, "budgetMs": 5000 },
            "tools": [
                { "type": "knowledge-query", "name": "search_docs", "parameters": { "type": "object", "properties": { "query": { "type": "string" } } } },
                { "type": "transfer-call", "name": "to_billing", "destination": "+15550100" },
            ],
        }))
        .await;
    typed_call(&s, &assistant, "Tell me about parking.", 1).await;
    let results = tool_results(&llm, 1).join("\n");
    assert!(results.contains("twelve dollars"), "{results}");

    let events = typed_call(&s, &assistant, "I have a billing question.", 0).await;
    let transfer = events.iter().find(|e| e["type"] == "transfer").unwrap_or_else(|| panic!("no transfer event: {events:?}"));
    assert_eq!(transfer["destination"], "+15550100");
    let ended = events.iter().find(|e| e["type"] == "call-ended").unwrap();
    assert_eq!(ended["reason"], "assistant-forwarded-call");
}

#[tokio::test]
async fn a_file_left_processing_by_a_stopped_server_is_finished_at_the_next_start() {
    let mut first = TestServer::start().await;
    let files_dir = voxgate_server::config::ServeArgs::for_tests(&first.db.url).files_dir;
    // As a crash would leave it: the bytes kept, the record still processing.
    let id = voxgate_domain::clock::new_id();
    std::fs::create_dir_all(&files_dir).unwrap();
    std::fs::write(files_dir.join(&id), handbook()).unwrap();
    let record = voxgate_domain::FileRecord {
        id: id.clone(),
        name: "handbook.md".into(),
        size_bytes: handbook().len() as i64,
        storage_path: id.clone(),
        ..voxgate_testkit::file_record(voxgate_domain::FileStatus::Processing)
    };
    first.store.insert_file(&record).await.unwrap();
    // And one whose bytes are gone: it fails with a reason instead of hanging.
    let lost = voxgate_domain::FileRecord { id: voxgate_domain::clock::new_id(), ..record.clone() };
    let lost = voxgate_domain::FileRecord { storage_path: lost.id.clone(), ..lost };
    first.store.insert_file(&lost).await.unwrap();
    first.stop().await;

    let s = TestServer::start_with(first.db, |_| {}).await;
    let done = wait_processed(&s, &id).await;
    assert_eq!(done["status"], "ready", "{done}");
    assert!(done["chunkCount"].as_i64().unwrap() >= 5, "{done}");
    let failed = wait_processed(&s, &lost.id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "file-missing");
}

#[tokio::test]
async fn uploads_are_rate_limited_per_address_whatever_the_key() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.rate_limit_uploads = Rate0(None);
        a.rate_limit_uploads_ip = Rate0(Some(Rate { burst: 2, per: Duration::from_secs(3600) }));
    })
    .await;
    let keys = [s.admin.clone(), s.key(voxgate_domain::key::KeyKind::Private, &[]).await, s.key(voxgate_domain::key::KeyKind::Private, &[]).await];
    let mut statuses = Vec::new();
    for key in &keys {
        let res = TestServer::http()
            .post(s.at("/api/files"))
            .bearer_auth(key)
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(multipart("file", Some("a.txt"), "text/plain", b"Short words for a small file."))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().get("retry-after").is_some());
            let (_, code, _) = error_code(res).await;
            assert_eq!(code, "rate_limited");
        }
    }
    assert_eq!(statuses, [202, 202, 429], "a new key does not reset the address's upload limit");
}
