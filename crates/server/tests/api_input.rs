//! The HTTP API against valid and hostile input, on the real server (port 0, real
//! SQLite, real HTTP). Every request in this file goes through [`Api::send`], which
//! fails the test on any 5xx: bad input gets a 4xx in the one error shape, never a
//! server error.

mod common;

use common::{TestServer, error_code};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use voxgate_domain::call::{Call, CallTurn, TurnLatency, TurnRole};
use voxgate_domain::clock::{ms_to_rfc3339, new_id, now_ms};

/// The server, an HTTP client, and helpers that check every answer.
struct Api {
    s: TestServer,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        Api { s: TestServer::start().await, http: TestServer::http() }
    }

    /// A request with the admin key.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.s.at(path)).bearer_auth(&self.s.admin)
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    /// Sends; fails the test on a 5xx (or no answer at all).
    async fn send(&self, rb: RequestBuilder) -> Response {
        let (client, req) = rb.build_split();
        let req = req.expect("a well-formed request");
        let mut what = format!("{} {}", req.method(), req.url());
        if what.len() > 200 {
            what.truncate(200);
            what.push('…');
        }
        let res = client.execute(req).await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert!(!res.status().is_server_error(), "{what}: the server answered {}", res.status());
        res
    }

    /// Sends and expects success with `status` and a JSON body.
    async fn ok(&self, rb: RequestBuilder, status: u16) -> Value {
        let res = self.send(rb).await;
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "body: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Sends and expects an error with `status` and `code`, in the error shape.
    async fn err(&self, rb: RequestBuilder, status: u16, code: &str) -> Value {
        let res = self.send(rb).await;
        let (got, got_code, body) = error_code(res).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{body}");
        body
    }

    /// Sends and expects some 4xx in the error shape; returns the status and body.
    async fn client_err(&self, rb: RequestBuilder) -> (u16, String, Value) {
        let res = self.send(rb).await;
        let (got, code, body) = error_code(res).await;
        assert!((400..500).contains(&got), "{got}: {body}");
        (got, code, body)
    }

    /// Creates an assistant from `spec` and returns it.
    async fn create(&self, spec: Value) -> Value {
        self.ok(self.req(Method::POST, "/api/assistants").json(&spec), 201).await
    }

    async fn count_assistants(&self) -> usize {
        let page = self.ok(self.get("/api/assistants?limit=100"), 200).await;
        page["items"].as_array().unwrap().len()
    }
}

/// The first invalid field of a `validation_failed` answer.
fn first_field(body: &Value) -> &str {
    body["error"]["fields"][0]["field"].as_str().unwrap_or_else(|| panic!("no fields[0].field in {body}"))
}

/// `path?k=v&...`, each value percent-encoded.
fn with_query(path: &str, q: &[(&str, String)]) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    let parts: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    if parts.is_empty() { path.to_string() } else { format!("{path}?{}", parts.join("&")) }
}

fn raw_json(rb: RequestBuilder, body: impl Into<reqwest::Body>) -> RequestBuilder {
    rb.header("content-type", "application/json").body(body)
}

// ---------------------------------------------------------------------------
// Assistants: valid input.

#[tokio::test]
async fn assistants_create_read_list_delete() {
    let api = Api::start().await;

    // Only a name: every other field takes its default.
    let a = api.create(json!({ "name": "Front desk" })).await;
    let id = a["id"].as_str().unwrap().to_string();
    assert!(voxgate_domain::clock::is_id(&id), "{a}");
    assert_eq!(a["name"], "Front desk");
    assert_eq!(a["model"]["temperature"], 0.7);
    assert_eq!(a["model"]["maxTokens"], 250);
    assert_eq!(a["model"]["provider"], "local");
    assert_eq!(a["endpointing"]["silenceMs"], 500);
    assert_eq!(a["firstMessageMode"], "assistant-speaks-first");
    assert!(a["firstMessage"].as_str().is_some_and(|m| !m.is_empty()), "{a}");
    assert_eq!(a["tools"], json!([]));
    assert!(a["createdAt"].as_str().unwrap().ends_with('Z'), "{a}");

    // A full spec is stored and returned as given.
    let full = json!({
        "name": "Sales",
        "systemPrompt": "Sell things.",
        "firstMessage": null,
        "firstMessageMode": "user-speaks-first",
        "transcriber": { "provider": "openai", "model": "whisper-1", "language": "en-US", "baseUrl": "https://stt.example.com/v1" },
        "model": { "provider": "openai", "model": "gpt-4o-mini", "temperature": 1.5, "maxTokens": 400, "baseUrl": "http://127.0.0.1:8080/v1" },
        "voice": { "provider": "local", "voice": "alloy", "speed": 1.25 },
        "endpointing": { "silenceMs": 800, "vadConfidence": 0.5, "vadStartMs": 100, "minVolume": 0.1 },
        "interruption": { "enabled": false, "minVoicedMs": 100, "minWords": 2, "backoffMs": 500 },
        "silenceTimeoutSecs": 20,
        "maxDurationSecs": 300,
        "endCallPhrases": ["goodbye", "bye now"],
        "tools": [
            { "type": "function", "name": "lookup_order", "description": "Finds an order", "parameters": { "type": "object" }, "url": "https://hooks.example.com/order", "timeoutMs": 2000 },
            { "type": "end-call", "name": "hang_up" }
        ],
        "metadata": { "team": "emea", "n": 3, "nested": { "ok": true } }
    });
    let b = api.create(full.clone()).await;
    let b_id = b["id"].as_str().unwrap().to_string();
    for (k, v) in full.as_object().unwrap() {
        if k == "tools" {
            continue;
        }
        if let Some(obj) = v.as_object() {
            for (k2, v2) in obj {
                assert_eq!(&b[k][k2], v2, "{k}.{k2} in {b}");
            }
        } else {
            assert_eq!(&b[k], v, "{k} in {b}");
        }
    }
    assert_eq!(b["tools"][0]["url"], "https://hooks.example.com/order");
    assert_eq!(b["tools"][1]["type"], "end-call");
    assert_eq!(b["tools"][1]["timeoutMs"], 5000, "the default tool timeout");

    // Read back: the same document.
    let got = api.ok(api.get(&format!("/api/assistants/{b_id}")), 200).await;
    assert_eq!(got, b);

    // Listed, newest first.
    let page = api.ok(api.get("/api/assistants"), 200).await;
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![b_id.as_str(), id.as_str()]);
    assert_eq!(page["nextCursor"], Value::Null);

    // Deleted: gone, and a second delete is a 404.
    let res = api.send(api.req(Method::DELETE, &format!("/api/assistants/{id}"))).await;
    assert_eq!(res.status(), 204);
    api.err(api.get(&format!("/api/assistants/{id}")), 404, "not_found").await;
    api.err(api.req(Method::DELETE, &format!("/api/assistants/{id}")), 404, "not_found").await;
    api.err(api.req(Method::PATCH, &format!("/api/assistants/{id}")).json(&json!({"name": "x"})), 404, "not_found").await;
    assert_eq!(api.count_assistants().await, 1);
}

#[tokio::test]
async fn assistants_patch_is_a_merge_patch_and_null_resets_to_the_default() {
    let api = Api::start().await;
    let a = api
        .create(json!({
            "name": "Desk",
            "systemPrompt": "Be terse.",
            "model": { "temperature": 1.2, "maxTokens": 100, "model": "llama" },
            "endCallPhrases": ["bye"],
            "metadata": { "a": 1, "b": { "c": 2, "d": 3 } }
        }))
        .await;
    let id = a["id"].as_str().unwrap().to_string();
    let path = format!("/api/assistants/{id}");
    let patch = |body: Value| api.req(Method::PATCH, &path).json(&body);

    // An empty patch changes nothing but the update time.
    let same = api.ok(patch(json!({})), 200).await;
    for k in ["name", "systemPrompt", "model", "metadata", "endCallPhrases", "createdAt", "id"] {
        assert_eq!(same[k], a[k], "{k}");
    }

    // Objects merge: other fields of `model` stay.
    let b = api.ok(patch(json!({ "model": { "maxTokens": 300 } })), 200).await;
    assert_eq!(b["model"]["maxTokens"], 300);
    assert_eq!(b["model"]["temperature"], 1.2);
    assert_eq!(b["model"]["model"], "llama");
    assert_eq!(b["systemPrompt"], "Be terse.");
    assert_eq!(b["id"], a["id"]);
    assert_eq!(b["createdAt"], a["createdAt"]);
    assert!(b["updatedAt"].as_str().unwrap() >= a["updatedAt"].as_str().unwrap());

    // null resets one field to its default.
    let c = api.ok(patch(json!({ "model": { "temperature": null } })), 200).await;
    assert_eq!(c["model"]["temperature"], 0.7);
    assert_eq!(c["model"]["maxTokens"], 300);
    let c = api.ok(patch(json!({ "systemPrompt": null, "endCallPhrases": null })), 200).await;
    assert_eq!(c["systemPrompt"], "You are a helpful voice assistant. Keep answers short and spoken.");
    assert_eq!(c["endCallPhrases"], json!([]));
    // ... or a whole object.
    let c = api.ok(patch(json!({ "model": null })), 200).await;
    assert_eq!(c["model"], json!({ "provider": "local", "model": null, "temperature": 0.7, "maxTokens": 250, "baseUrl": null }));

    // Arrays replace; nested nulls remove keys of free-form metadata.
    let d = api.ok(patch(json!({ "endCallPhrases": ["later", "ciao"], "metadata": { "b": { "c": null }, "e": [1, 2] } })), 200).await;
    assert_eq!(d["endCallPhrases"], json!(["later", "ciao"]));
    assert_eq!(d["metadata"], json!({ "a": 1, "b": { "d": 3 }, "e": [1, 2] }));

    // The stored document is what PATCH answered.
    let stored = api.ok(api.get(&path), 200).await;
    assert_eq!(stored, d);

    // A patch that makes the spec invalid is refused with the field, and changes nothing.
    let body = api.err(patch(json!({ "model": { "temperature": 5 } })), 422, "validation_failed").await;
    assert_eq!(first_field(&body), "model.temperature");
    let body = api.err(patch(json!({ "name": null })), 422, "validation_failed").await;
    assert_eq!(first_field(&body), "name");
    let body = api.err(patch(json!({ "firstMessage": "", "name": "ok" })), 422, "validation_failed").await;
    assert_eq!(first_field(&body), "firstMessage");
    assert_eq!(api.ok(api.get(&path), 200).await, stored);
}

#[tokio::test]
async fn assistants_paginate_with_a_cursor() {
    let api = Api::start().await;
    let mut created = Vec::new();
    for n in 0..7 {
        let a = api.create(json!({ "name": format!("a{n}") })).await;
        created.push(a["id"].as_str().unwrap().to_string());
    }
    let mut newest_first = created.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(newest_first, created.iter().rev().cloned().collect::<Vec<_>>(), "ids sort by creation");

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "3".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = api.ok(api.get(&with_query("/api/assistants", &q)), 200).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|a| a["id"].as_str().unwrap().to_string()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(sizes.len() < 10, "the cursor never ends");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen, newest_first);

    // Exactly one page's worth: no empty page after it.
    let page = api.ok(api.get("/api/assistants?limit=7"), 200).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    assert_eq!(page["nextCursor"], Value::Null);
    let page = api.ok(api.get("/api/assistants?limit=100"), 200).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    let page = api.ok(api.get("/api/assistants?limit=1"), 200).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["nextCursor"], json!(newest_first[0]));
    // A cursor past the oldest: an empty last page.
    let oldest = newest_first.last().unwrap();
    let page = api.ok(api.get(&format!("/api/assistants?cursor={oldest}")), 200).await;
    assert_eq!(page, json!({ "items": [], "nextCursor": null }));
}

// ---------------------------------------------------------------------------
// JSON bodies: hostile input.

/// Every endpoint that reads a JSON body, with a valid body for it.
fn json_endpoints(id: &str) -> Vec<(Method, String, Value)> {
    vec![
        (Method::POST, "/api/assistants".into(), json!({ "name": "x" })),
        (Method::PATCH, format!("/api/assistants/{id}"), json!({ "name": "x" })),
        (Method::POST, "/api/keys".into(), json!({ "name": "x", "kind": "private" })),
        (Method::POST, "/api/auth/login".into(), json!({ "code": "nope" })),
        (Method::POST, "/api/calls".into(), json!({ "assistantId": id })),
    ]
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"{\"name\":}".to_vec(),
        b"{\"name\":\"a\",}".to_vec(),
        b"{'name':'a'}".to_vec(),
        b"{\"name\":\"a\"} trailing".to_vec(),
        b"{\"name\":\"a\"}{\"name\":\"b\"}".to_vec(),
        b"nul".to_vec(),
        b"{\"name\": NaN}".to_vec(),
        b"{\"name\":\"unterminated}".to_vec(),
        b"{\"name\":\"\\x41\"}".to_vec(),
        b"{\"name\":\"\xff\xfe\"}".to_vec(),
        b"\xef\xbb\xbf{\"name\":\"bom\"}".to_vec(),
    ];
    for (method, path, _) in json_endpoints(&id) {
        for body in &bodies {
            let res = api.err(raw_json(api.req(method.clone(), &path), body.clone()), 400, "invalid_json").await;
            assert!(res["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{res}");
        }
    }
    assert_eq!(api.count_assistants().await, 1);
}

#[tokio::test]
async fn wrong_types_are_422_with_the_field_path() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let cases = [
        (json!({ "name": 5 }), "name"),
        (json!({ "name": null }), "name"),
        (json!({ "name": ["a"] }), "name"),
        (json!({ "name": "a", "model": { "temperature": "hot" } }), "model.temperature"),
        (json!({ "name": "a", "model": { "maxTokens": -1 } }), "model.maxTokens"),
        (json!({ "name": "a", "model": { "maxTokens": 1.5 } }), "model.maxTokens"),
        (json!({ "name": "a", "model": { "maxTokens": 1e10 } }), "model.maxTokens"),
        (json!({ "name": "a", "model": "gpt" }), "model"),
        (json!({ "name": "a", "model": { "provider": "skynet" } }), "model.provider"),
        (json!({ "name": "a", "endpointing": { "silenceMs": 4294967296u64 } }), "endpointing.silenceMs"),
        (json!({ "name": "a", "interruption": { "enabled": "yes" } }), "interruption.enabled"),
        (json!({ "name": "a", "firstMessageMode": "shout" }), "firstMessageMode"),
        (json!({ "name": "a", "endCallPhrases": "bye" }), "endCallPhrases"),
        (json!({ "name": "a", "endCallPhrases": ["bye", 7] }), "endCallPhrases[1]"),
        (json!({ "name": "a", "tools": [{ "type": "end-call", "name": "x", "timeoutMs": "slow" }] }), "tools[0].timeoutMs"),
        (json!({ "name": "a", "metadata": [1, 2] }), "metadata"),
    ];
    for (body, field) in &cases {
        let res = api.err(api.req(Method::POST, "/api/assistants").json(body), 422, "validation_failed").await;
        assert_eq!(first_field(&res), *field, "POST {body}: {res}");
        let res = api.err(api.req(Method::PATCH, &format!("/api/assistants/{id}")).json(body), 422, "validation_failed").await;
        assert_eq!(first_field(&res), *field, "PATCH {body}: {res}");
    }
    // Well-typed but out of range: the same shape, every field named at once.
    let res = api
        .err(
            api.req(Method::POST, "/api/assistants").json(&json!({
                "name": " ",
                "model": { "temperature": 2.5, "baseUrl": "file:///etc/passwd" },
                "voice": { "speed": 0 },
                "endpointing": { "silenceMs": 5 },
                "tools": [{ "name": "no spaces allowed", "url": "javascript:alert(1)" }],
                "maxDurationSecs": 0
            })),
            422,
            "validation_failed",
        )
        .await;
    let fields: Vec<&str> = res["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    for f in ["name", "model.temperature", "model.baseUrl", "voice.speed", "endpointing.silenceMs", "tools[0].name", "tools[0].url", "maxDurationSecs"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }

    // Keys and login name their fields too.
    let keys = [
        (json!({ "name": 5, "kind": "private" }), "name"),
        (json!({ "name": "k", "kind": "secret" }), "kind"),
        (json!({ "name": "k", "kind": "public", "assistantIds": "x" }), "assistantIds"),
        (json!({ "name": "k", "kind": "public", "assistantIds": [1] }), "assistantIds[0]"),
        (json!({ "name": "", "kind": "private" }), "name"),
        (json!({ "name": "x".repeat(101), "kind": "private" }), "name"),
        (json!({ "name": "bell\u{7}", "kind": "private" }), "name"),
    ];
    for (body, field) in &keys {
        let res = api.err(api.req(Method::POST, "/api/keys").json(body), 422, "validation_failed").await;
        assert_eq!(first_field(&res), *field, "POST /api/keys {body}: {res}");
    }
    let res = api.err(api.req(Method::POST, "/api/keys").json(&json!({ "name": "k" })), 422, "validation_failed").await;
    assert!(res["error"]["message"].as_str().unwrap().contains("kind"), "{res}");
    let res = api.err(api.req(Method::POST, "/api/auth/login").json(&json!({ "code": 42 })), 422, "validation_failed").await;
    assert_eq!(first_field(&res), "code");
    api.err(api.req(Method::POST, "/api/auth/login").json(&json!({})), 422, "validation_failed").await;
}

#[tokio::test]
async fn unknown_fields_are_422() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let cases = [
        (json!({ "name": "a", "nmae": "b" }), "nmae"),
        (json!({ "name": "a", "model": { "temp": 1 } }), "temp"),
        (json!({ "name": "a", "id": "00000000-0000-7000-8000-000000000000" }), "id"),
        (json!({ "name": "a", "createdAt": "2020-01-01T00:00:00Z" }), "createdAt"),
        (json!({ "name": "a", "tools": [{ "type": "end-call", "name": "x", "secret": true }] }), "secret"),
        (json!({ "name": "a", "__proto__": { "admin": true } }), "__proto__"),
    ];
    for (body, name) in &cases {
        for (method, path) in [(Method::POST, "/api/assistants".to_string()), (Method::PATCH, format!("/api/assistants/{id}"))] {
            let res = api.err(api.req(method.clone(), &path).json(body), 422, "validation_failed").await;
            assert!(res["error"]["message"].as_str().unwrap().contains(name), "{method} {body}: {res}");
        }
    }
    api.err(api.req(Method::POST, "/api/keys").json(&json!({ "name": "k", "kind": "private", "admin": true })), 422, "validation_failed").await;
    api.err(api.req(Method::POST, "/api/auth/login").json(&json!({ "code": "x", "then": "y" })), 422, "validation_failed").await;
    // Nothing was created or changed.
    assert_eq!(api.count_assistants().await, 1);
    let keys = api.ok(api.get("/api/keys"), 200).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
}

#[tokio::test]
async fn bodies_that_are_not_objects_are_422() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let bodies = [
        json!([]),
        json!([{ "name": "a" }]),
        json!(["a"]),
        json!(["ci", "private"]),
        json!(["ci", "private", []]),
        json!(["code"]),
        json!("name"),
        json!(42),
        json!(true),
        json!(null),
    ];
    for (method, path, _) in json_endpoints(&id) {
        for body in &bodies {
            let res = api.err(api.req(method.clone(), &path).json(body), 422, "validation_failed").await;
            assert!(res["error"]["message"].is_string(), "{method} {path} {body}: {res}");
        }
    }
    assert_eq!(api.count_assistants().await, 1);
    let keys = api.ok(api.get("/api/keys"), 200).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "an array body created a key: {keys}");
}

#[tokio::test]
async fn bodies_need_a_json_content_type() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    for (method, path, body) in json_endpoints(&id) {
        let text = body.to_string();
        // No content type at all.
        api.err(api.req(method.clone(), &path).body(text.clone()), 415, "unsupported_media_type").await;
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "json", "application/jsonx"] {
            api.err(api.req(method.clone(), &path).header("content-type", ct).body(text.clone()), 415, "unsupported_media_type").await;
        }
    }
    // A JSON type with parameters is fine.
    let a = api
        .ok(api.req(Method::POST, "/api/assistants").header("content-type", "application/json; charset=utf-8").body(r#"{"name":"typed"}"#), 201)
        .await;
    assert_eq!(a["name"], "typed");
    assert_eq!(api.count_assistants().await, 2);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let big = "x".repeat(1024 * 1024 + 1);
    let bodies = [
        json!({ "name": "big", "systemPrompt": big }).to_string(),
        json!({ "name": "big", "kind": "private", "code": big }).to_string(),
        // Big but not JSON at all: the size is refused before the syntax.
        format!("{{{big}"),
    ];
    for (method, path, _) in json_endpoints(&id) {
        for body in &bodies {
            api.err(raw_json(api.req(method.clone(), &path), body.clone()), 413, "payload_too_large").await;
        }
    }
    // 5 MiB, too.
    let huge = json!({ "name": "huge", "metadata": { "blob": "y".repeat(5 * 1024 * 1024) } }).to_string();
    api.err(raw_json(api.req(Method::POST, "/api/assistants"), huge), 413, "payload_too_large").await;
    // Under the limit but over a field's: a 422 that names the field.
    let res = api
        .err(api.req(Method::POST, "/api/assistants").json(&json!({ "name": "n", "systemPrompt": "p".repeat(512 * 1024) })), 422, "validation_failed")
        .await;
    assert_eq!(first_field(&res), "systemPrompt");
    let res = api
        .err(api.req(Method::POST, "/api/assistants").json(&json!({ "name": "n", "metadata": { "m": "m".repeat(20 * 1024) } })), 422, "validation_failed")
        .await;
    assert_eq!(first_field(&res), "metadata");
    assert_eq!(api.count_assistants().await, 1);
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_a_crash() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let in_metadata = format!("{{\"name\":\"deep\",\"metadata\":{{\"m\":{}}}}}", arrays);
    let unclosed = "[".repeat(100_000);
    for (method, path, _) in json_endpoints(&id) {
        for body in [&arrays, &objects, &in_metadata, &unclosed] {
            let (status, _, res) = api.client_err(raw_json(api.req(method.clone(), &path), body.clone())).await;
            assert!(status == 400 || status == 422, "{method} {path}: {status} {res}");
        }
    }
    // Moderate nesting within the parser's limit is stored intact.
    let nested = (0..50).fold(json!("leaf"), |acc, _| json!({ "n": acc }));
    let a = api.create(json!({ "name": "nested", "metadata": { "deep": nested } })).await;
    assert_eq!(a["metadata"]["deep"], nested);
    let got = api.ok(api.get(&format!("/api/assistants/{}", a["id"].as_str().unwrap())), 200).await;
    assert_eq!(got["metadata"]["deep"], nested);
    // Still alive.
    let health = api.ok(api.get("/api/health"), 200).await;
    assert_eq!(health["status"], "ok");
}

// ---------------------------------------------------------------------------
// Strings: SQL metacharacters and unicode.

#[tokio::test]
async fn hostile_strings_are_stored_intact_or_refused() {
    let api = Api::start().await;
    let keeper = api.s.assistant("keeper").await;
    let strings = [
        "Robert'); DROP TABLE assistants;--",
        "' OR '1'='1' --",
        "\" OR \"\"=\"",
        "%' OR 1=1; --",
        "$1 $2 ?1 :name @p",
        "\\'; SELECT * FROM api_keys; --",
        "🎙️ voice 👩🏽‍💻 ✓",
        "\u{202E}gnp.exe",
        "مرحبا بك",
        "日本語のアシスタント",
        "e\u{301}\u{301}\u{301} zalgo",
        "zero\u{200B}width\u{FEFF}",
        "<script>alert(1)</script>",
        "{{ template }} ${env}",
        "line\nbreak\ttab",
        "\u{1b}[31mred\u{1b}[0m",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}next-line",
        "nul\u{0}inside",
        "\u{10FFFF}\u{E000}",
    ];
    let mut stored = 0;
    for s in strings {
        let spec = json!({
            "name": s,
            "systemPrompt": s,
            "firstMessage": s,
            "endCallPhrases": [s],
            "transcriber": { "language": "en" },
            "metadata": { s: s, "k": [s] },
        });
        let res = api.send(api.req(Method::POST, "/api/assistants").json(&spec)).await;
        if res.status() == 201 {
            let a: Value = res.json().await.unwrap();
            let got = api.ok(api.get(&format!("/api/assistants/{}", a["id"].as_str().unwrap())), 200).await;
            for doc in [&a, &got] {
                assert_eq!(doc["name"], s);
                assert_eq!(doc["systemPrompt"], s);
                assert_eq!(doc["firstMessage"], s);
                assert_eq!(doc["endCallPhrases"], json!([s]));
                assert_eq!(doc["metadata"], json!({ s: s, "k": [s] }));
            }
            stored += 1;
        } else {
            let (status, code, body) = error_code(res).await;
            assert_eq!((status, code.as_str()), (422, "validation_failed"), "{s:?}: {body}");
            // Whatever is refused is refused for a named reason, never by the database.
            let fields: Vec<&str> = body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
            assert!(!fields.is_empty(), "{s:?}: {body}");
            // The prompt is free text: the name or the phrases refused it.
            assert!(fields.iter().all(|f| ["name", "endCallPhrases[0]"].contains(f)), "{s:?}: {fields:?}");
        }
    }
    // Control characters never get into a name.
    for s in ["\u{1b}[31mred\u{1b}[0m", "bell\u{7}", "del\u{7f}", "nul\u{0}inside", "line\nbreak"] {
        let body = api.err(api.req(Method::POST, "/api/assistants").json(&json!({ "name": s })), 422, "validation_failed").await;
        assert_eq!(first_field(&body), "name", "{s:?}");
    }
    // Printable text of every script is accepted.
    assert!(stored >= 12, "only {stored} stored");
    // The free-text prompt keeps control characters intact (no NUL-stripping, no escaping).
    let a = api.create(json!({ "name": "ctl", "systemPrompt": "a\u{1}b\u{1b}c\u{0}d" })).await;
    let got = api.ok(api.get(&format!("/api/assistants/{}", a["id"].as_str().unwrap())), 200).await;
    assert_eq!(got["systemPrompt"], "a\u{1}b\u{1b}c\u{0}d");

    // No injection ran: every assistant is still there, and reads still work.
    assert_eq!(api.count_assistants().await, stored + 2);
    api.ok(api.get(&format!("/api/assistants/{keeper}")), 200).await;

    // PATCH takes the same strings.
    let patched = api.ok(api.req(Method::PATCH, &format!("/api/assistants/{keeper}")).json(&json!({ "name": strings[0], "systemPrompt": strings[6] })), 200).await;
    assert_eq!(patched["name"], strings[0]);
    assert_eq!(patched["systemPrompt"], strings[6]);

    // Key names too.
    for s in ["Robert'); DROP TABLE api_keys;--", "🎙️ ci key", "\u{202E}yek"] {
        let created = api.ok(api.req(Method::POST, "/api/keys").json(&json!({ "name": s, "kind": "private" })), 201).await;
        assert_eq!(created["key"]["name"], s);
    }
    let keys = api.ok(api.get("/api/keys"), 200).await;
    let names: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"Robert'); DROP TABLE api_keys;--") && names.contains(&"🎙️ ci key"), "{names:?}");
    assert_eq!(names.len(), 4);
}

// ---------------------------------------------------------------------------
// Paths: ids, routes, methods.

#[tokio::test]
async fn garbage_path_ids_are_404_or_400() {
    let api = Api::start().await;
    let real = api.s.assistant("real").await;
    let key = api.ok(api.req(Method::POST, "/api/keys").json(&json!({ "name": "k", "kind": "private" })), 201).await;
    let key_secret = key["secret"].as_str().unwrap().to_string();
    let long = "a".repeat(10 * 1024);
    let long_dots = "%2e".repeat(3 * 1024);
    let long_uuidish = format!("{real}{}", "0".repeat(10 * 1024));
    let ids = [
        "..%2f..%2fetc%2fpasswd",
        "..%2F..%2F..%2Fetc%2Fshadow",
        "' OR 1=1",
        "' OR '1'='1' --",
        "1; DROP TABLE assistants; --",
        "\" OR \"\"=\"",
        "%00",
        "%FF%FE%FD",
        "%C0%AE%C0%AE",
        "%E2%80%AE",
        "🎙️",
        "%25",
        "*",
        "null",
        "00000000-0000-0000-0000-000000000000",
        "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "{id}",
        &long,
        &long_dots,
        &long_uuidish,
    ];
    let routes: [(Method, &str); 5] = [
        (Method::GET, "/api/assistants/"),
        (Method::PATCH, "/api/assistants/"),
        (Method::DELETE, "/api/assistants/"),
        (Method::GET, "/api/calls/"),
        (Method::DELETE, "/api/keys/"),
    ];
    for (method, base) in &routes {
        for id in ids {
            let mut rb = api.req(method.clone(), &format!("{base}{id}"));
            if *method == Method::PATCH {
                rb = rb.json(&json!({ "name": "pwned" }));
            }
            let (status, code, body) = api.client_err(rb).await;
            assert!(
                (status, code.as_str()) == (404, "not_found") || (status, code.as_str()) == (400, "bad_request"),
                "{method} {base}{}: {status} {body}",
                &id[..id.len().min(40)]
            );
        }
    }
    // Nothing was deleted or changed, and the key still works.
    let a = api.ok(api.get(&format!("/api/assistants/{real}")), 200).await;
    assert_eq!(a["name"], "real");
    assert_eq!(api.count_assistants().await, 1);
    let res = api.send(api.http.get(api.s.at("/api/me")).bearer_auth(&key_secret)).await;
    assert_eq!(res.status(), 200);
    let keys = api.ok(api.get("/api/keys"), 200).await;
    assert!(keys.as_array().unwrap().iter().all(|k| k["revokedAt"].is_null()), "{keys}");
}

#[tokio::test]
async fn unknown_routes_under_api_are_404_json() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    for path in [
        "/api/nope",
        "/api/assistants/",
        &format!("/api/assistants/{id}/"),
        &format!("/api/assistants/{id}/calls"),
        "/api/assistants/x/y/z",
        "/api/calls/x/turns",
        "/api/keys/x/y",
        "/api/auth",
        "/api/auth/logout",
        "/api/v2/assistants",
        "/api/..%2f..%2fetc%2fpasswd",
        "/api/%00",
        "/api/.env",
        "/api/openapi.yaml",
    ] {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let res = api.err(api.req(method.clone(), path).json(&json!({})), 404, "not_found").await;
            assert!(res["error"]["message"].is_string(), "{method} {path}");
        }
    }
}

/// `/api` itself and `/api/` are under `/api` too: JSON, not the UI's text 404.
#[tokio::test]
async fn the_api_root_is_404_json() {
    let api = Api::start().await;
    for path in ["/api", "/api/"] {
        for method in [Method::GET, Method::POST] {
            api.err(api.req(method.clone(), path).json(&json!({})), 404, "not_found").await;
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405_json_with_allow() {
    let api = Api::start().await;
    let id = api.s.assistant("A").await;
    let key = api.ok(api.req(Method::POST, "/api/keys").json(&json!({ "name": "k", "kind": "private" })), 201).await;
    let key_id = key["key"]["id"].as_str().unwrap().to_string();
    let cases: Vec<(Method, String, &[&str])> = vec![
        (Method::PUT, "/api/assistants".into(), &["GET", "POST"]),
        (Method::DELETE, "/api/assistants".into(), &["GET", "POST"]),
        (Method::PATCH, "/api/assistants".into(), &["GET", "POST"]),
        (Method::PUT, format!("/api/assistants/{id}"), &["GET", "PATCH", "DELETE"]),
        (Method::POST, format!("/api/assistants/{id}"), &["GET", "PATCH", "DELETE"]),
        (Method::PUT, "/api/calls".into(), &["GET", "POST"]),
        (Method::DELETE, format!("/api/calls/{id}"), &["GET"]),
        (Method::PUT, "/api/keys".into(), &["GET", "POST"]),
        (Method::GET, format!("/api/keys/{key_id}"), &["DELETE"]),
        (Method::PATCH, format!("/api/keys/{key_id}"), &["DELETE"]),
        (Method::GET, "/api/auth/login".into(), &["POST"]),
        (Method::DELETE, "/api/me".into(), &["GET"]),
        (Method::POST, "/api/openapi.json".into(), &["GET"]),
        (Method::POST, "/api/health".into(), &["GET"]),
        (Method::DELETE, "/api/ready".into(), &["GET"]),
        (Method::POST, "/api/metrics".into(), &["GET"]),
    ];
    for (method, path, allowed) in cases {
        let res = api.send(api.req(method.clone(), &path).json(&json!({}))).await;
        let allow = res.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (status, code, body) = error_code(res).await;
        assert_eq!((status, code.as_str()), (405, "method_not_allowed"), "{method} {path}: {body}");
        let allow: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(allow.contains(m), "{method} {path}: Allow {allow:?} lacks {m}");
        }
        assert!(!allow.contains(&method.as_str()), "{method} {path}: Allow {allow:?}");
    }
    // The wrong method changed nothing.
    api.ok(api.get(&format!("/api/assistants/{id}")), 200).await;
    let keys = api.ok(api.get("/api/keys"), 200).await;
    assert!(keys.as_array().unwrap().iter().all(|k| k["revokedAt"].is_null()));
}

// ---------------------------------------------------------------------------
// Query parameters.

#[tokio::test]
async fn list_parameters_are_checked() {
    let api = Api::start().await;
    for base in ["/api/assistants", "/api/calls"] {
        for q in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=1.5",
            "limit=99999999999999999999",
            "limit=1&limit=2",
            "cursor=garbage",
            "cursor=%27%20OR%201%3D1",
            "cursor=..%2f..%2fetc",
            "cursor=0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b%27--",
            "bogus=1",
            "LIMIT=5",
            "limit=%00",
        ] {
            api.err(api.get(&format!("{base}?{q}")), 400, "bad_request").await;
        }
        for q in ["limit=1", "limit=100", "limit=20&cursor=0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"] {
            let page = api.ok(api.get(&format!("{base}?{q}")), 200).await;
            assert!(page["items"].is_array(), "{base}?{q}: {page}");
        }
    }
    for q in [
        "status=bogus",
        "status=ENDED",
        "status=ended%27%20OR%201%3D1",
        "status=",
        "startedAfter=yesterday",
        "startedAfter=2025-13-01T00:00:00Z",
        "startedAfter=2025-01-01",
        "startedAfter=1700000000",
        "startedAfter=",
        "startedBefore=2025-01-01T25:00:00Z",
        "startedBefore=%27%20OR%201%3D1",
        "startedBefore=tomorrow",
        "assistantId=%27%20OR%201%3D1",
        "assistantId=..%2f..%2f",
        "assistantId=",
    ] {
        api.err(api.get(&format!("/api/calls?{q}")), 400, "bad_request").await;
    }
    // A NUL byte in any filter (PostgreSQL refuses it in text: it was a 500 there).
    for path in [
        "/api/webhooks?type=%00",
        "/api/webhooks?state=failed%00",
        "/api/webhooks?callId=%00",
        "/api/calls?assistantId=a%00b",
        "/api/calls?status=ended%00",
        "/api/files?cursor=%00",
    ] {
        api.err(api.get(path), 400, "bad_request").await;
    }
}

async fn insert_call(api: &Api, assistant: &str, started_at: i64, ended: bool) -> String {
    let call = Call { started_at, ..Call::start(assistant, None, "elsewhere") };
    api.s.store.create_call(&call).await.unwrap();
    if ended {
        api.s.store.end_call(&call.id, "customer-ended-call").await.unwrap();
    }
    // Ids order by time: keep them apart.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    call.id
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn calls_list_filters_and_pages() {
    let api = Api::start().await;
    let a = api.s.assistant("A").await;
    let b = api.s.assistant("B").await;
    let t0 = now_ms() - 3_600_000;
    let a1 = insert_call(&api, &a, t0, true).await;
    let a2 = insert_call(&api, &a, t0 + 1000, true).await;
    let a3 = insert_call(&api, &a, t0 + 2000, true).await;
    let a4 = insert_call(&api, &a, t0 + 3000, false).await;
    let b1 = insert_call(&api, &b, t0 + 500, true).await;
    let b2 = insert_call(&api, &b, t0 + 4000, false).await;
    api.s
        .store
        .add_turn(
            &a1,
            &CallTurn { idx: 0, role: TurnRole::User, text: "hi' OR 1=1 🎙️".into(), started_ms: 10, interrupted: false, latency: TurnLatency::default(), error: None },
        )
        .await
        .unwrap();

    let list = |q: Vec<(&'static str, String)>| api.get(&with_query("/api/calls", &q));
    let all = api.ok(list(vec![]), 200).await;
    assert_eq!(ids_of(&all), vec![b2.clone(), b1.clone(), a4.clone(), a3.clone(), a2.clone(), a1.clone()], "newest first");
    assert_eq!(all["nextCursor"], Value::Null);
    assert!(all["items"][0].get("turns").is_none(), "lists carry no transcripts");

    let only_a = api.ok(list(vec![("assistantId", a.clone())]), 200).await;
    assert_eq!(ids_of(&only_a), vec![a4.clone(), a3.clone(), a2.clone(), a1.clone()]);
    assert!(only_a["items"].as_array().unwrap().iter().all(|c| c["assistantId"] == a.as_str()));

    let ended = api.ok(list(vec![("status", "ended".into())]), 200).await;
    assert_eq!(ids_of(&ended), vec![b1.clone(), a3.clone(), a2.clone(), a1.clone()]);
    assert!(ended["items"].as_array().unwrap().iter().all(|c| c["status"] == "ended" && c["endedReason"] == "customer-ended-call"));
    let live = api.ok(list(vec![("status", "in-progress".into())]), 200).await;
    assert_eq!(ids_of(&live), vec![b2.clone(), a4.clone()]);

    // startedAfter is inclusive, startedBefore exclusive.
    let after = api.ok(list(vec![("startedAfter", ms_to_rfc3339(t0 + 1000))]), 200).await;
    assert_eq!(ids_of(&after), vec![b2.clone(), a4.clone(), a3.clone(), a2.clone()]);
    let before = api.ok(list(vec![("startedBefore", ms_to_rfc3339(t0 + 1000))]), 200).await;
    assert_eq!(ids_of(&before), vec![b1.clone(), a1.clone()]);
    let window = api
        .ok(list(vec![("assistantId", a.clone()), ("status", "ended".into()), ("startedAfter", ms_to_rfc3339(t0 + 500)), ("startedBefore", ms_to_rfc3339(t0 + 2000))]), 200)
        .await;
    assert_eq!(ids_of(&window), vec![a2.clone()]);
    // An offset other than Z means the same instant ('+' travels encoded).
    let shifted = ms_to_rfc3339(t0 + 1000 + 2 * 3_600_000).replace('Z', "+02:00");
    assert!(shifted.contains("+02:00"), "{shifted}");
    let after2 = api.ok(list(vec![("startedAfter", shifted)]), 200).await;
    assert_eq!(ids_of(&after2), ids_of(&after));
    // An empty window, and an assistant with no calls.
    let none = api.ok(list(vec![("startedAfter", ms_to_rfc3339(t0 + 10_000))]), 200).await;
    assert_eq!(none, json!({ "items": [], "nextCursor": null }));
    let none = api.ok(list(vec![("assistantId", new_id())]), 200).await;
    assert_eq!(none["items"], json!([]));

    // Pages with a filter: the cursor keeps the filter's rows only.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let mut q = vec![("assistantId", a.clone()), ("limit", "3".to_string())];
        if let Some(c) = cursor.take() {
            q.push(("cursor", c));
        }
        let page = api.ok(list(q), 200).await;
        pages += 1;
        seen.extend(ids_of(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 5);
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, vec![a4.clone(), a3.clone(), a2.clone(), a1.clone()]);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..6 {
        let mut q = vec![("limit", "1".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = api.ok(list(q), 200).await;
        seen.extend(ids_of(&page));
        cursor = page["nextCursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, ids_of(&all));
    assert_eq!(cursor, None, "the last page has no cursor");

    // One call, with its transcript intact.
    let one = api.ok(api.get(&format!("/api/calls/{a1}")), 200).await;
    assert_eq!(one["id"], a1.as_str());
    assert_eq!(one["assistantId"], a.as_str());
    assert_eq!(one["status"], "ended");
    assert_eq!(one["startedAt"], ms_to_rfc3339(t0));
    assert!(one["durationMs"].is_i64(), "{one}");
    assert_eq!(one["turns"][0]["text"], "hi' OR 1=1 🎙️");
    assert_eq!(one["turns"][0]["role"], "user");
    let one = api.ok(api.get(&format!("/api/calls/{a4}")), 200).await;
    assert_eq!(one["status"], "in-progress");
    assert_eq!(one["endedAt"], Value::Null);
    assert_eq!(one["turns"], json!([]));
    api.err(api.get(&format!("/api/calls/{}", new_id())), 404, "not_found").await;
}

// ---------------------------------------------------------------------------
// Keys, login, me, the OpenAPI document.

#[tokio::test]
async fn keys_are_created_listed_without_secrets_and_revoked() {
    let api = Api::start().await;
    let a = api.s.assistant("A").await;

    let private = api.ok(api.req(Method::POST, "/api/keys").json(&json!({ "name": "  ci  ", "kind": "private" })), 201).await;
    let secret = private["secret"].as_str().unwrap().to_string();
    let key_id = private["key"]["id"].as_str().unwrap().to_string();
    assert!(voxgate_domain::key::looks_like_key(&secret) && secret.starts_with("vg_sk_"), "{private}");
    assert_eq!(private["key"]["name"], "ci", "names are trimmed");
    assert_eq!(private["key"]["kind"], "private");
    assert_eq!(private["key"]["revokedAt"], Value::Null);
    assert!(secret.starts_with(private["key"]["prefix"].as_str().unwrap()));
    assert!(private["key"].get("hash").is_none() && private["key"].get("secret").is_none(), "{private}");

    let me = api.ok(api.http.get(api.s.at("/api/me")).bearer_auth(&secret), 200).await;
    assert_eq!(me, json!({ "kind": "private", "keyId": key_id, "name": "ci", "assistantIds": [] }));

    let public = api.ok(api.req(Method::POST, "/api/keys").json(&json!({ "name": "web", "kind": "public", "assistantIds": [a] })), 201).await;
    let public_secret = public["secret"].as_str().unwrap().to_string();
    assert!(public_secret.starts_with("vg_pk_"));
    assert_eq!(public["key"]["assistantIds"], json!([a]));

    // The list shows every key and never a secret or a hash.
    let res = api.send(api.get("/api/keys")).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for s in [&secret, &public_secret] {
        assert!(!text.contains(s.as_str()) && !text.contains(&s[12..]), "a secret in the list: {text}");
        assert!(!text.contains(&voxgate_domain::key::hash_secret(s)), "a hash in the list");
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|k| k.get("secret").is_none() && k.get("hash").is_none()));
    assert!(list.iter().any(|k| k["id"] == key_id.as_str()));

    // Refused keys.
    let refused = [
        (json!({ "name": "p", "kind": "public" }), "assistantIds"),
        (json!({ "name": "p", "kind": "public", "assistantIds": [] }), "assistantIds"),
        (json!({ "name": "p", "kind": "private", "assistantIds": [a] }), "assistantIds"),
        (json!({ "name": "p", "kind": "public", "assistantIds": [new_id()] }), "assistantIds"),
        (json!({ "name": "p", "kind": "public", "assistantIds": ["' OR 1=1 --"] }), "assistantIds[0]"),
        (json!({ "name": "p", "kind": "public", "assistantIds": vec![a.clone(); 101] }), "assistantIds"),
        (json!({ "name": "   ", "kind": "private" }), "name"),
    ];
    for (body, field) in &refused {
        let res = api.err(api.req(Method::POST, "/api/keys").json(body), 422, "validation_failed").await;
        assert_eq!(first_field(&res), *field, "{body}: {res}");
    }
    assert_eq!(api.ok(api.get("/api/keys"), 200).await.as_array().unwrap().len(), 3);

    // Revoked: the answer says so, the list says so, a second revoke changes nothing.
    let revoked = api.ok(api.req(Method::DELETE, &format!("/api/keys/{key_id}")), 200).await;
    assert_eq!(revoked["id"], key_id.as_str());
    let at = revoked["revokedAt"].as_str().expect("revokedAt is set").to_string();
    let again = api.ok(api.req(Method::DELETE, &format!("/api/keys/{key_id}")), 200).await;
    assert_eq!(again["revokedAt"], at.as_str());
    let list = api.ok(api.get("/api/keys"), 200).await;
    let k = list.as_array().unwrap().iter().find(|k| k["id"] == key_id.as_str()).unwrap().clone();
    assert_eq!(k["revokedAt"], at.as_str());
    api.err(api.http.get(api.s.at("/api/me")).bearer_auth(&secret), 401, "unauthorized").await;
    api.err(api.req(Method::DELETE, &format!("/api/keys/{}", new_id())), 404, "not_found").await;
}

#[tokio::test]
async fn login_code_and_me() {
    let api = Api::start().await;
    let code = api.s.login_code.clone().expect("a login code on an empty database");
    let login = |body: Value| api.http.post(api.s.at("/api/auth/login")).json(&body);

    for bad in [json!({ "code": "nope" }), json!({ "code": "" }), json!({ "code": "x".repeat(10_000) }), json!({ "code": format!("{code}' OR 1=1 --") })] {
        let res = api.err(login(bad), 401, "unauthorized").await;
        assert!(!res.to_string().contains(&code), "the answer echoes the code");
    }
    let created = api.ok(login(json!({ "code": code })), 201).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("vg_sk_"));
    assert_eq!(created["key"]["kind"], "private");
    api.err(login(json!({ "code": code })), 401, "unauthorized").await;

    let me = api.ok(api.http.get(api.s.at("/api/me")).bearer_auth(&secret), 200).await;
    assert_eq!(me["kind"], "private");
    assert_eq!(me["keyId"], created["key"]["id"]);
    let me = api.ok(api.get("/api/me"), 200).await;
    assert_eq!(me["kind"], "private");
    assert_eq!(me["name"], "test admin");
    assert_eq!(me["assistantIds"], json!([]));
    // Query strings do not confuse it.
    let me2 = api.ok(api.get("/api/me?kind=user&keyId=x"), 200).await;
    assert_eq!(me2, me);
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let api = Api::start().await;
    let res = api.send(api.get("/api/openapi.json")).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/api/assistants", "/api/assistants/{id}", "/api/calls", "/api/calls/{id}", "/api/keys", "/api/keys/{id}", "/api/auth/login", "/api/me", "/api/health", "/api/ready", "/api/metrics"] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    for (p, m) in [("/api/assistants", "post"), ("/api/assistants/{id}", "patch"), ("/api/assistants/{id}", "delete"), ("/api/keys/{id}", "delete")] {
        assert!(paths[p].get(m).is_some(), "{m} {p}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // What the server answers is what the library documents.
    assert_eq!(doc, serde_json::to_value(voxgate_api::openapi()).unwrap());
}

#[tokio::test]
async fn a_recording_of_a_bad_unknown_or_unrecorded_call_is_404() {
    let api = Api::start().await;
    let assistant = api.s.assistant("A").await;
    let unrecorded = insert_call(&api, &assistant, 1, true).await;
    let long = "x".repeat(5000);
    for path in [
        format!("/api/calls/{unrecorded}/recording"),
        format!("/api/calls/{}/recording", voxgate_domain::clock::new_id()),
        "/api/calls/not-an-id/recording".to_string(),
        "/api/calls/..%2F..%2Fetc%2Fpasswd/recording".to_string(),
        "/api/calls/%27%20OR%201%3D1--/recording".to_string(),
        format!("/api/calls/{long}/recording"),
    ] {
        api.err(api.get(&path), 404, "not_found").await;
    }
}
