//! `ALLOWED_ORIGINS`: CORS on `/api` (preflight and plain requests, error answers
//! included) and the `Origin` check of the `/agent` upgrade, on the real server.

mod common;

use common::{TestServer, error_code};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use voxgate_testkit::TestDb;

const APP: &str = "https://app.example.com";
const DEV: &str = "http://localhost:5175";
const EVIL: &str = "https://evil.example.com";

async fn two_origins() -> TestServer {
    TestServer::start_with(TestDb::chosen().await, |args| args.allowed_origins = format!("{APP}, {DEV}")).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("ASCII header"))
}

/// Every `access-control-*` header of an answer.
fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_string()).filter(|k| k.starts_with("access-control-")).collect()
}

async fn preflight(s: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    TestServer::http()
        .request(reqwest::Method::OPTIONS, s.at(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_answered() {
    let mut s = two_origins().await;
    for origin in [APP, DEV] {
        let res = preflight(&s, "/api/assistants", origin).await;
        assert!(res.status().is_success(), "{origin}: preflight status {}", res.status());
        let h = res.headers();
        assert_eq!(header(h, "access-control-allow-origin"), Some(origin), "{h:?}");
        let methods = header(h, "access-control-allow-methods").expect("allow-methods").to_ascii_uppercase();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = header(h, "access-control-allow-headers").expect("allow-headers").to_ascii_lowercase();
        assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
        assert!(header(h, "access-control-max-age").is_some(), "preflights are cached");
        assert!(header(h, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")), "a per-origin answer varies on Origin");
    }
    s.stop().await;
}

#[tokio::test]
async fn origin_matching_ignores_case_and_a_trailing_slash_in_the_setting() {
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.allowed_origins = "https://App.Example.com/".into()).await;
    let res = preflight(&s, "/api/assistants", APP).await;
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(APP));
    s.stop().await;
}

#[tokio::test]
async fn plain_requests_from_an_allowed_origin_get_cors_headers_even_on_errors() {
    let mut s = two_origins().await;
    let http = TestServer::http();

    let res = http.get(s.at("/api/assistants")).header("origin", APP).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(APP));
    let exposed = header(res.headers(), "access-control-expose-headers").unwrap_or("").to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "the request id is readable from the browser: {exposed:?}");

    let res = http
        .post(s.at("/api/assistants"))
        .header("origin", DEV)
        .bearer_auth(&s.admin)
        .json(&json!({"name": "From the browser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(DEV));

    // A browser must be able to read a 401 to show "sign in again".
    let res = http.get(s.at("/api/assistants")).header("origin", APP).send().await.unwrap();
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(APP));
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    // And a 404 from an unknown route under /api.
    let res = http.get(s.at("/api/no-such-thing")).header("origin", APP).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(APP));
    assert_eq!(error_code(res).await.0, 404);

    // A bad JSON body from the browser: 4xx, readable.
    let res = http
        .post(s.at("/api/assistants"))
        .header("origin", APP)
        .bearer_auth(&s.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(header(res.headers(), "access-control-allow-origin"), Some(APP));
    let (status, _, _) = error_code(res).await;
    assert!((400..500).contains(&status), "{status}");
    s.stop().await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers() {
    let mut s = two_origins().await;
    let http = TestServer::http();
    for origin in [EVIL, "https://app.example.com.evil.io", "http://app.example.com", "https://app.example.com:8443", "null"] {
        let res = preflight(&s, "/api/assistants", origin).await;
        assert!(cors_headers(res.headers()).is_empty(), "{origin}: preflight answered with {:?}", res.headers());

        let res = http.get(s.at("/api/assistants")).header("origin", origin).bearer_auth(&s.admin).send().await.unwrap();
        assert!(cors_headers(res.headers()).is_empty(), "{origin}: GET answered with {:?}", res.headers());

        let res = http.get(s.at("/api/assistants")).header("origin", origin).send().await.unwrap();
        assert!(cors_headers(res.headers()).is_empty(), "{origin}: 401 answered with {:?}", res.headers());
        assert_eq!(error_code(res).await.0, 401);
    }
    s.stop().await;
}

#[tokio::test]
async fn no_allowed_origins_means_no_cors_at_all() {
    let mut s = TestServer::start().await;
    let res = preflight(&s, "/api/assistants", APP).await;
    assert!(cors_headers(res.headers()).is_empty(), "{:?}", res.headers());
    s.stop().await;
}

#[tokio::test]
async fn same_origin_requests_work_without_cors() {
    // No ALLOWED_ORIGINS at all: the server's own UI still works.
    let mut s = TestServer::start().await;
    let http = TestServer::http();
    let own = s.url.clone();
    let res = http.get(s.at("/api/assistants")).header("origin", &own).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .post(s.at("/api/assistants"))
        .header("origin", &own)
        .bearer_auth(&s.admin)
        .json(&json!({"name": "Same origin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let res = http.delete(s.at(&format!("/api/assistants/{id}"))).header("origin", &own).bearer_auth(&s.admin).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    s.stop().await;
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.allowed_origins = "*".into()).await;
    let http = TestServer::http();
    for origin in [EVIL, "http://localhost:1234"] {
        let res = preflight(&s, "/api/assistants", origin).await;
        assert!(res.status().is_success());
        let acao = header(res.headers(), "access-control-allow-origin");
        assert!(acao == Some("*") || acao == Some(origin), "{acao:?}");
        let res = http.get(s.at("/api/assistants")).header("origin", origin).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let acao = header(res.headers(), "access-control-allow-origin");
        assert!(acao == Some("*") || acao == Some(origin), "{acao:?}");
    }
    // And /agent takes calls from anywhere.
    let id = s.assistant("Anyone").await;
    let (status, _) = ws_connect(&s, &id, Some(EVIL), true).await;
    assert_eq!(status, 101);
    s.stop().await;
}

/// Opens `/agent` with an optional `Origin` and (optionally) the admin key; returns
/// the status (101 on success, after `start` and `call-started`) and the error body if refused.
async fn ws_connect(s: &TestServer, assistant: &str, origin: Option<&str>, with_key: bool) -> (u16, Value) {
    let mut req = s.ws_url(&format!("assistantId={assistant}")).into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", HeaderValue::from_str(o).unwrap());
    }
    if with_key {
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, res)) => {
            assert_eq!(res.status(), 101);
            let hello = common::start_call(&mut ws).await;
            assert_eq!(hello["type"], "call-started");
            assert_eq!(hello["assistantId"], assistant);
            ws.close(None).await.unwrap();
            (101, Value::Null)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            assert!(
                res.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
                "{res:?}"
            );
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).expect("a JSON error body");
            assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{body}");
            (status, body)
        }
        Err(e) => panic!("unexpected WebSocket error: {e}"),
    }
}

#[tokio::test]
async fn agent_upgrade_checks_the_origin() {
    let mut s = two_origins().await;
    let id = s.assistant("Front desk").await;

    for origin in [EVIL, "https://app.example.com.evil.io", "null", "http://127.0.0.1:1"] {
        let (status, body) = ws_connect(&s, &id, Some(origin), true).await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // Refused before any record: no call was created for them.
    let calls = s.store.list_calls(&Default::default()).await.unwrap();
    assert!(calls.items.is_empty(), "{} calls recorded for refused upgrades", calls.items.len());

    for origin in [APP, DEV] {
        assert_eq!(ws_connect(&s, &id, Some(origin), true).await.0, 101, "{origin}");
    }
    let own = s.url.clone();
    assert_eq!(ws_connect(&s, &id, Some(&own), true).await.0, 101, "same origin");
    // Not a browser (no Origin), but a key: accepted.
    assert_eq!(ws_connect(&s, &id, None, true).await.0, 101, "no Origin");
    // No Origin and no key: still refused, for the key.
    let (status, body) = ws_connect(&s, &id, None, false).await;
    assert_eq!(status, 401, "{body}");
    s.stop().await;
}
