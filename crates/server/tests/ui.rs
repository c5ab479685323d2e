//! The embedded web UI: index.html and its CSP, client-side routes, hashed assets
//! and their cache lifetime, `/config.json`, path traversal, and the headers every
//! answer carries.

mod common;

use common::{TestServer, error_code};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voxgate_testkit::TestDb;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn h(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

async fn index_html(s: &TestServer) -> String {
    let res = TestServer::http().get(s.at("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The `/assets/...` files index.html references.
fn referenced_assets(index: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in index.split(['"', '\'']) {
        if part.starts_with("/assets/") && !out.contains(&part.to_string()) {
            out.push(part.to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_root_serves_index_html_with_a_csp() {
    let mut s = TestServer::start().await;
    let http = TestServer::http();
    for path in ["/", "/index.html"] {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(h(&res, "content-type").starts_with("text/html"), "{path}: {}", h(&res, "content-type"));
        assert_eq!(h(&res, "cache-control"), "no-cache", "{path}");
        let csp = h(&res, "content-security-policy");
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{path}: the UI's CSP, got {csp:?}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
        let body = res.text().await.unwrap();
        assert!(body.to_ascii_lowercase().contains("<html"), "{path}: {body}");
    }
    // HEAD works too, without a body.
    let res = http.head(s.at("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn client_side_routes_fall_back_to_index_html() {
    let mut s = TestServer::start().await;
    let index = index_html(&s).await;
    let http = TestServer::http();
    for path in ["/login", "/calls/123", "/assistants/abc/edit", "/calls/123/", "/settings?tab=keys", "/login#code=abc"] {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(h(&res, "content-type").starts_with("text/html"), "{path}");
        assert_eq!(h(&res, "cache-control"), "no-cache", "{path}");
        assert!(h(&res, "content-security-policy").contains("default-src 'self'"), "{path}");
        assert_eq!(res.text().await.unwrap(), index, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn missing_files_are_404_not_index_html() {
    let mut s = TestServer::start().await;
    let http = TestServer::http();
    for path in ["/assets/x.js", "/assets/missing-123abc.css", "/favicon-nope.ico", "/robots-nope.txt", "/calls/123.json", "/assets/deep/x.png"] {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_ne!(h(&res, "cache-control"), IMMUTABLE, "{path}: a 404 must not be cached forever");
        let body = res.text().await.unwrap();
        assert!(!body.to_ascii_lowercase().contains("<html"), "{path}: got index.html");
    }
    // Unknown API routes are the API's 404 (JSON), never the app.
    for path in ["/api/nope", "/api/calls/123/nope"] {
        let res = http.get(s.at(path)).bearer_auth(&s.admin).send().await.unwrap();
        let (status, code, _) = error_code(res).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    // Other methods on the app: a JSON 405, not an empty body.
    for path in ["/login", "/", "/config.json", "/assets/x.js"] {
        let res = http.post(s.at(path)).body("x").send().await.unwrap();
        let (status, code, _) = error_code(res).await;
        assert_eq!((status, code.as_str()), (405, "method_not_allowed"), "POST {path}");
    }
    let res = http.get(s.at("/api")).send().await.unwrap();
    assert!(res.status().is_client_error(), "GET /api: {}", res.status());
    assert!(!res.text().await.unwrap().to_ascii_lowercase().contains("<html"));
    s.stop().await;
}

#[tokio::test]
async fn hashed_assets_are_cached_forever() {
    let mut s = TestServer::start().await;
    let index = index_html(&s).await;
    let assets = referenced_assets(&index);
    assert!(!assets.is_empty(), "index.html references no /assets/ file: {index}");
    let http = TestServer::http();
    for path in &assets {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(h(&res, "cache-control"), IMMUTABLE, "{path}");
        let ct = h(&res, "content-type");
        if path.ends_with(".css") {
            assert!(ct.starts_with("text/css"), "{path}: {ct}");
        } else if path.ends_with(".js") {
            assert!(ct.contains("javascript"), "{path}: {ct}");
        }
        assert!(!res.bytes().await.unwrap().is_empty(), "{path}");
    }
    // The fallback UI (this build has no ui/dist) embeds this one.
    if index.contains("fallback-7f3a1c") {
        let res = http.get(s.at("/assets/fallback-7f3a1c.css")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(h(&res, "cache-control"), IMMUTABLE);
    }
    s.stop().await;
}

/// Sends `path` exactly as written (no client-side normalization), returns status and body.
async fn raw_get(s: &TestServer, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", s.addr);
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_end(&mut buf)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{path}: no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn path_traversal_never_reaches_the_disk() {
    let mut s = TestServer::start().await;
    let index = index_html(&s).await;
    let paths = [
        "/../../etc/passwd",
        "/../../../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/..%2F..%2F..%2F..%2FCargo.toml",
        "/assets/../../Cargo.toml",
        "/assets/../../../Cargo.toml",
        "/..\\..\\Cargo.toml",
        "/assets\\..\\..\\Cargo.toml",
        "/assets/..\\..\\Cargo.toml",
        "/%5c..%5c..%5cCargo.toml",
        "/assets/%5c..%5c..%5cCargo.toml",
        "/%252e%252e/%252e%252e/Cargo.toml",
        "/..%c0%af..%c0%afetc/passwd",
        "/assets/..;/..;/Cargo.toml",
        "/....//....//etc/passwd",
        "//etc/passwd",
        "/assets//etc/passwd",
        "/./../Cargo.toml",
        "/Cargo.toml",
        "/build.rs",
        "/src/main.rs",
        "/../build.rs",
        "/fallback-ui/index.html",
        "/etc/passwd",
    ];
    for path in paths {
        let (status, text) = raw_get(&s, path).await;
        assert!(!text.contains("root:"), "{path}: {status} leaked /etc/passwd");
        assert!(!text.contains("[package]") && !text.contains("fn main"), "{path}: {status} leaked a source file");
        // Either refused, or the app's own index.html.
        assert!((400..500).contains(&status) || text.ends_with(&index), "{path}: {status}\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn config_json_tells_the_app_where_things_are() {
    let mut s = TestServer::start().await;
    let res = TestServer::http().get(s.at("/config.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(h(&res, "content-type").starts_with("application/json"), "{}", h(&res, "content-type"));
    assert_eq!(h(&res, "cache-control"), "no-cache");
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(cfg["apiBase"], "/api", "{cfg}");
    assert!(cfg["agentUrl"].is_string(), "{cfg}");
    s.stop().await;

    let mut s = TestServer::start_with(TestDb::chosen().await, |args| {
        args.public_api_base = Some("https://api.example.com/api".into());
        args.public_agent_url = Some("wss://agent.example.com/agent".into());
    })
    .await;
    let cfg: Value = TestServer::http().get(s.at("/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cfg["apiBase"], "https://api.example.com/api");
    assert_eq!(cfg["agentUrl"], "wss://agent.example.com/agent");
    s.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_a_request_id() {
    let mut s = TestServer::start().await;
    let index = index_html(&s).await;
    let asset = referenced_assets(&index).into_iter().next().expect("an asset");
    let http = TestServer::http();
    let paths = [
        "/".to_string(),
        "/login".into(),
        asset,
        "/assets/x.js".into(),
        "/config.json".into(),
        "/api/health".into(),
        "/api/assistants".into(), // 401
        "/api/nope".into(),
        "/agent".into(), // 400: not an upgrade
        "/../../etc/passwd".into(),
    ];
    let mut seen_ids = std::collections::HashSet::new();
    for path in &paths {
        for sent in [None, Some("req-abc-123")] {
            let mut req = http.get(s.at(path));
            if let Some(id) = sent {
                req = req.header("x-request-id", id);
            }
            let res = req.send().await.unwrap();
            let status = res.status();
            assert_eq!(h(&res, "x-content-type-options"), "nosniff", "{path} ({status})");
            assert!(matches!(h(&res, "x-frame-options").as_str(), "DENY" | "SAMEORIGIN"), "{path} ({status})");
            assert!(!h(&res, "content-security-policy").is_empty(), "{path} ({status})");
            assert!(!h(&res, "referrer-policy").is_empty(), "{path} ({status})");
            let id = h(&res, "x-request-id");
            match sent {
                Some(sent) => assert_eq!(id, sent, "{path}: the client's request id is echoed"),
                None => {
                    assert!(!id.is_empty(), "{path} ({status}): no x-request-id");
                    assert!(seen_ids.insert(id.clone()), "{path}: request id {id} reused");
                }
            }
        }
    }
    // JSON and text answers get the CSP that allows nothing; HTML gets the UI's.
    let res = http.get(s.at("/api/health")).send().await.unwrap();
    assert!(h(&res, "content-security-policy").starts_with("default-src 'none'"));
    let res = http.get(s.at("/config.json")).send().await.unwrap();
    assert!(h(&res, "content-security-policy").starts_with("default-src 'none'"));
    s.stop().await;
}

#[tokio::test]
async fn a_ui_folder_on_disk_replaces_the_embedded_app_and_stays_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("dist");
    std::fs::create_dir_all(app.join("assets")).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html><html><body>from disk</body></html>").unwrap();
    std::fs::write(app.join("assets/app-1234.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside the folder").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), app.join("assets/escape.js")).unwrap();
    let mut s = TestServer::start_with(TestDb::chosen().await, |args| args.ui_dir = Some(app.clone())).await;

    let http = TestServer::http();
    for path in ["/", "/calls/some-call-id"] {
        let res = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(h(&res, "content-security-policy").contains("default-src 'self'"), "{path}");
        assert!(res.text().await.unwrap().contains("from disk"), "{path}");
    }
    let res = http.get(s.at("/assets/app-1234.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(h(&res, "cache-control"), IMMUTABLE);
    assert_eq!(res.text().await.unwrap(), "console.log(1)");
    for path in ["/assets/escape.js", "/../secret.txt", "/assets/../../secret.txt", "/secret.txt", "/assets/missing.js"] {
        let (status, text) = raw_get(&s, path).await;
        assert!(!text.contains("outside the folder"), "{path}: {status} leaked a file outside the UI folder");
        assert_eq!(status, 404, "{path}: {text}");
    }
    s.stop().await;
}
