//! Authentication and authorization on the real server: every `/api` route needs a
//! credential (the routes come from the OpenAPI document, so a new route cannot
//! slip past this test), bad and revoked credentials are 401 with a challenge,
//! public keys only read their assistants, the metrics token only reads metrics,
//! and Supabase user tokens are checked properly.

mod common;

use common::{TestServer, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use voxgate_api::auth::{METRICS_ROUTE, PUBLIC_ROUTES};
use voxgate_domain::call::Call;
use voxgate_domain::clock::{new_id, now_ms};
use voxgate_domain::key::KeyKind;
use voxgate_testkit::TestDb;

/// One documented operation.
struct Route {
    method: Method,
    /// The template, e.g. `/api/assistants/{id}`.
    template: String,
    /// Whether the document asks for a credential.
    secured: bool,
}

/// Every operation of the OpenAPI document, plus the document itself (which is
/// served beside the routes, not described by them).
fn documented_routes() -> Vec<Route> {
    let doc = voxgate_api::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
            (Method::from_bytes(b"QUERY").unwrap(), &item.query),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                out.push(Route { method, template: path.clone(), secured });
            }
        }
    }
    out.push(Route { method: Method::GET, template: "/api/openapi.json".into(), secured: true });
    out
}

/// Real ids to put in path templates.
struct Ids {
    assistant: String,
    call: String,
    key: String,
    file: String,
    webhook: String,
}

impl Ids {
    async fn create(s: &TestServer) -> Ids {
        let assistant = s.assistant("Front desk").await;
        let call = Call::start(assistant.clone(), None, "elsewhere");
        s.store.create_call(&call).await.unwrap();
        let res = TestServer::http()
            .post(s.at("/api/keys"))
            .bearer_auth(&s.admin)
            .json(&json!({ "name": "victim", "kind": "private" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let key = res.json::<Value>().await.unwrap()["key"]["id"].as_str().unwrap().to_string();
        let file = voxgate_testkit::file_record(voxgate_domain::FileStatus::Ready);
        s.store.insert_file(&file).await.unwrap();
        let webhook = voxgate_domain::clock::new_id();
        s.store
            .enqueue_webhook(&voxgate_store::outbox::NewOutboxEvent {
                id: webhook.clone(),
                event_type: "status-update".into(),
                call_id: Some(call.id.clone()),
                assistant_id: Some(assistant.clone()),
                url: "http://127.0.0.1:9/hook".into(),
                body: "{}".into(),
                created_at: voxgate_domain::clock::now_ms(),
            })
            .await
            .unwrap();
        Ids { assistant, call: call.id, key, file: file.id, webhook }
    }

    /// The template with its parameters filled by real ids.
    fn fill(&self, template: &str) -> String {
        let id = if template.starts_with("/api/calls/") {
            &self.call
        } else if template.starts_with("/api/keys/") {
            &self.key
        } else if template.starts_with("/api/files/") {
            &self.file
        } else if template.starts_with("/api/webhooks/") {
            &self.webhook
        } else {
            &self.assistant
        };
        let path = template.replace("{id}", id);
        assert!(!path.contains('{'), "{template}: a path parameter this test does not know; teach Ids::fill about it");
        path
    }
}

/// A request for a route: JSON `{}` on methods that take a body.
fn request(http: &reqwest::Client, s: &TestServer, method: &Method, path: &str) -> RequestBuilder {
    let rb = http.request(method.clone(), s.at(path));
    if [Method::POST, Method::PATCH, Method::PUT].contains(method) { rb.json(&json!({})) } else { rb }
}

/// Asserts a 401 in the error shape with `WWW-Authenticate: Bearer`.
async fn assert_challenged(res: Response, what: &str) {
    assert!(!res.status().is_server_error(), "{what}: {}", res.status());
    let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let (status, code, body) = error_code(res).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"), "{what}: {body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}: WWW-Authenticate");
}

async fn assert_error(res: Response, status: u16, code: &str, what: &str) -> Value {
    let (got, got_code, body) = error_code(res).await;
    assert_eq!((got, got_code.as_str()), (status, code), "{what}: {body}");
    body
}

// ---------------------------------------------------------------------------
// (a) Every route needs a key.

#[tokio::test]
async fn every_api_route_needs_a_credential() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    let ids = Ids::create(&s).await;
    let routes = documented_routes();

    // The document agrees with the middleware about what is public.
    for public in PUBLIC_ROUTES {
        assert!(routes.iter().any(|r| r.template == *public), "{public} is public but not documented");
    }
    for r in &routes {
        let public = PUBLIC_ROUTES.contains(&r.template.as_str());
        assert_eq!(r.secured, !public, "{} {}: the document's security disagrees with PUBLIC_ROUTES", r.method, r.template);
    }
    let protected: Vec<&Route> = routes.iter().filter(|r| !PUBLIC_ROUTES.contains(&r.template.as_str())).collect();
    assert!(protected.len() >= 12, "only {} protected operations found: is the enumeration broken?", protected.len());

    for r in &protected {
        let path = ids.fill(&r.template);
        let what = format!("{} {path} without a key", r.method);
        assert_challenged(request(&http, &s, &r.method, &path).send().await.unwrap(), &what).await;
    }
    // Routes the document does not list are protected too (the middleware runs
    // before routing), and near-misses of the public routes are not public.
    for path in [
        "/api/nope",
        "/api/health/",
        "/api/health/x",
        "/api/ready/",
        "/api/auth/login/x",
        "/api/auth/login/",
        "/api//health",
        "/api/health%2F..%2Fassistants",
        "/api/health;/../assistants",
        "/api/metrics/",
        "/api/assistants/",
    ] {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let what = format!("{method} {path} without a key");
            assert_challenged(request(&http, &s, &method, path).send().await.unwrap(), &what).await;
        }
    }
    // HEAD and a method no route has: still 401 first.
    assert_eq!(http.head(s.at("/api/assistants")).send().await.unwrap().status(), 401);
    assert_challenged(http.put(s.at("/api/keys")).json(&json!({})).send().await.unwrap(), "PUT /api/keys").await;

    // Nothing changed without a key.
    let admin = |rb: RequestBuilder| rb.bearer_auth(&s.admin);
    let list: Value = admin(http.get(s.at("/api/assistants"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let keys: Value = admin(http.get(s.at("/api/keys"))).send().await.unwrap().json().await.unwrap();
    assert!(keys.as_array().unwrap().iter().all(|k| k["revokedAt"].is_null()), "{keys}");

    // With the admin key the same requests get past authentication: the routes are
    // real. Deletes go last, so they do not remove what the others read.
    let mut in_order: Vec<&&Route> = protected.iter().collect();
    in_order.sort_by_key(|r| r.method == Method::DELETE);
    for r in in_order {
        let path = ids.fill(&r.template);
        let res = admin(request(&http, &s, &r.method, &path)).send().await.unwrap();
        let status = res.status().as_u16();
        if r.template.ends_with("/recording") && status == 404 {
            // The call is real but was not recorded: the route says so itself.
            let body: Value = res.json().await.unwrap();
            assert!(body["error"]["message"].as_str().unwrap().contains("recording"), "{path}: {body}");
            continue;
        }
        if r.template.ends_with("/retry") && status == 404 {
            // The event is real but pending: only a failed one can be retried.
            let body: Value = res.json().await.unwrap();
            assert!(body["error"]["message"].as_str().unwrap().contains("failed webhook event"), "{path}: {body}");
            continue;
        }
        assert!(![401, 403, 404, 405].contains(&status) && status < 500, "{} {path} with the admin key: {status}", r.method);
    }
}

#[tokio::test]
async fn public_routes_answer_without_a_credential() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    assert_eq!(PUBLIC_ROUTES.len(), 3, "a new public route needs a test here: {PUBLIC_ROUTES:?}");

    let res = http.get(s.at("/api/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = http.get(s.at("/api/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");

    // Login: a bad code is 401, a good one is a new private key.
    let res = http.post(s.at("/api/auth/login")).json(&json!({ "code": "guess" })).send().await.unwrap();
    assert_error(res, 401, "unauthorized", "a bad login code").await;
    let res = http.post(s.at("/api/auth/login")).json(&json!({})).send().await.unwrap();
    assert_error(res, 422, "validation_failed", "a login without a code").await;
    let code = s.login_code.clone().expect("a login code");
    let res = http.post(s.at("/api/auth/login")).json(&json!({ "code": code })).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let secret = res.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
    assert_eq!(http.get(s.at("/api/assistants")).bearer_auth(&secret).send().await.unwrap().status(), 200);

    // Public routes ignore a bad credential rather than refuse it.
    let res = http.get(s.at("/api/health")).bearer_auth("vg_sk_nonsense").send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_challenge() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    let unknown_private = format!("vg_sk_{}", voxgate_domain::key::random_token());
    let unknown_public = format!("vg_pk_{}", voxgate_domain::key::random_token());
    let admin_hash = voxgate_domain::key::hash_secret(&s.admin);
    let long = format!("Bearer {}", "a".repeat(10_000));
    let admin_plus = format!("Bearer {}x", s.admin);
    let admin_minus = format!("Bearer {}", &s.admin[..s.admin.len() - 1]);
    let admin_upper = format!("Bearer {}", s.admin.to_uppercase());
    let admin_hash_h = format!("Bearer {admin_hash}");
    let basic = format!("Basic {}", s.admin);
    let token = format!("Token {}", s.admin);
    let no_space = format!("Bearer{}", s.admin);
    let unknown_priv_h = format!("Bearer {unknown_private}");
    let unknown_pub_h = format!("Bearer {unknown_public}");
    let headers: Vec<&[u8]> = vec![
        unknown_priv_h.as_bytes(),
        unknown_pub_h.as_bytes(),
        admin_plus.as_bytes(),
        admin_minus.as_bytes(),
        admin_upper.as_bytes(),
        admin_hash_h.as_bytes(),
        basic.as_bytes(),
        token.as_bytes(),
        no_space.as_bytes(),
        b"Bearer",
        b"Bearer ",
        b"Bearer    ",
        b"",
        b"vg_sk_",
        b"Bearer vg_sk_' OR 1=1 --aaaaaaaaaaaaaaaaaaaaaa",
        b"Bearer ' OR '1'='1",
        b"Bearer a.b.c",
        b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        b"Bearer \xff\xfe\xfd",
        b"Bearer vg_sk_\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
        long.as_bytes(),
    ];
    for (method, path) in [(Method::GET, "/api/assistants"), (Method::GET, "/api/me"), (Method::POST, "/api/assistants"), (Method::GET, "/api/metrics")] {
        for h in &headers {
            let value = reqwest::header::HeaderValue::from_bytes(h).unwrap();
            let res = request(&http, &s, &method, path).header("authorization", value).send().await.unwrap();
            assert_challenged(res, &format!("{method} {path} with Authorization {:?}", String::from_utf8_lossy(&h[..h.len().min(60)]))).await;
        }
    }
    // The key elsewhere than the Authorization header is not a credential for /api.
    let res = http.get(s.at(&format!("/api/assistants?key={}", s.admin))).send().await.unwrap();
    assert_challenged(res, "a key in the query string").await;
    let res = http.get(s.at("/api/assistants")).header("x-api-key", &s.admin).send().await.unwrap();
    assert_challenged(res, "a key in X-Api-Key").await;
    // The scheme is case-insensitive: the real key works.
    let res = http.get(s.at("/api/assistants")).header("authorization", format!("bEaReR {}", s.admin)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // Nothing was created by the refused POSTs.
    let list: Value = http.get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    let a = s.assistant("A").await;
    for kind in ["private", "public"] {
        let body = if kind == "public" {
            json!({ "name": "doomed", "kind": kind, "assistantIds": [a] })
        } else {
            json!({ "name": "doomed", "kind": kind })
        };
        let res = http.post(s.at("/api/keys")).bearer_auth(&s.admin).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.unwrap();
        let secret = created["secret"].as_str().unwrap().to_string();
        let id = created["key"]["id"].as_str().unwrap().to_string();
        // Used, so the auth cache holds it.
        for _ in 0..3 {
            assert_eq!(http.get(s.at("/api/me")).bearer_auth(&secret).send().await.unwrap().status(), 200, "{kind}");
        }
        let res = http.delete(s.at(&format!("/api/keys/{id}"))).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(res.status(), 200);
        for path in ["/api/me", &format!("/api/assistants/{a}")] {
            let res = http.get(s.at(path)).bearer_auth(&secret).send().await.unwrap();
            assert_challenged(res, &format!("GET {path} with a revoked {kind} key")).await;
        }
    }
    // A private key revoking itself loses access with that request.
    let res = http.post(s.at("/api/keys")).bearer_auth(&s.admin).json(&json!({ "name": "self", "kind": "private" })).send().await.unwrap();
    let created: Value = res.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["key"]["id"].as_str().unwrap().to_string();
    let res = http.delete(s.at(&format!("/api/keys/{id}"))).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_challenged(http.get(s.at("/api/keys")).bearer_auth(&secret).send().await.unwrap(), "a self-revoked key").await;
    // The admin key is untouched.
    assert_eq!(http.get(s.at("/api/keys")).bearer_auth(&s.admin).send().await.unwrap().status(), 200);
}

// ---------------------------------------------------------------------------
// (b) Public keys.

#[tokio::test]
async fn a_public_key_reads_and_changes_nothing() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    let mine = s.assistant("mine").await;
    let other = s.assistant("other").await;
    let pk = s.key(KeyKind::Public, &[&mine]).await;
    let ids = Ids::create(&s).await;
    let as_pk = |method: Method, path: &str| request(&http, &s, &method, path).bearer_auth(&pk);

    // Public keys ride in web pages: even the assistant they list is not theirs to
    // read (its prompt and tools are the owner's); they may only say who they are.
    let res = as_pk(Method::GET, &format!("/api/assistants/{mine}")).send().await.unwrap();
    assert_error(res, 403, "forbidden", "GET its own assistant with a public key").await;
    let me: Value = as_pk(Method::GET, "/api/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["kind"], "public");
    assert_eq!(me["assistantIds"], json!([mine]));

    // Not another assistant, listed or not, existing or not.
    for id in [other.clone(), ids.assistant.clone(), new_id(), "' OR 1=1".into(), "..%2f..%2fetc%2fpasswd".into()] {
        let res = as_pk(Method::GET, &format!("/api/assistants/{id}")).send().await.unwrap();
        assert_error(res, 403, "forbidden", &format!("GET /api/assistants/{id} with a public key")).await;
    }

    // Nothing that lists, creates, changes or deletes, with valid bodies.
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/assistants".into(), None),
        (Method::POST, "/api/assistants".into(), Some(json!({ "name": "evil" }))),
        (Method::PATCH, format!("/api/assistants/{mine}"), Some(json!({ "name": "evil" }))),
        (Method::PATCH, format!("/api/assistants/{other}"), Some(json!({ "name": "evil" }))),
        (Method::DELETE, format!("/api/assistants/{mine}"), None),
        (Method::DELETE, format!("/api/assistants/{other}"), None),
        (Method::GET, "/api/calls".into(), None),
        (Method::GET, format!("/api/calls?assistantId={mine}"), None),
        (Method::GET, format!("/api/calls/{}", ids.call), None),
        (Method::GET, "/api/keys".into(), None),
        (Method::POST, "/api/keys".into(), Some(json!({ "name": "escalate", "kind": "private" }))),
        (Method::POST, "/api/keys".into(), Some(json!({ "name": "widen", "kind": "public", "assistantIds": [other] }))),
        (Method::DELETE, format!("/api/keys/{}", ids.key), None),
        (Method::GET, METRICS_ROUTE.into(), None),
    ];
    for (method, path, body) in cases {
        let mut rb = http.request(method.clone(), s.at(&path)).bearer_auth(&pk);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let res = rb.send().await.unwrap();
        assert_error(res, 403, "forbidden", &format!("{method} {path} with a public key")).await;
    }

    // Everything is as it was.
    let admin = |path: &str| http.get(s.at(path)).bearer_auth(&s.admin);
    let list: Value = admin("/api/assistants").send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Front desk", "other", "mine"]);
    let keys: Value = admin("/api/keys").send().await.unwrap().json().await.unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 3, "{keys}");
    assert!(keys.as_array().unwrap().iter().all(|k| k["revokedAt"].is_null()), "{keys}");
}

// ---------------------------------------------------------------------------
// (c) The metrics token.

#[tokio::test]
async fn the_metrics_token_reads_metrics_and_nothing_else() {
    let token = "tok_metrics_0123456789abcdef";
    let s = TestServer::start_with(TestDb::chosen().await, |a| a.metrics_token = Some(token.into())).await;
    let http = TestServer::http();
    let ids = Ids::create(&s).await;

    let res = http.get(s.at(METRICS_ROUTE)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains("voxgate_db_pool_max_connections"), "{text}");
    // Private keys read metrics too; public keys do not.
    assert_eq!(http.get(s.at(METRICS_ROUTE)).bearer_auth(&s.admin).send().await.unwrap().status(), 200);
    let pk = s.key(KeyKind::Public, &[&ids.assistant]).await;
    let res = http.get(s.at(METRICS_ROUTE)).bearer_auth(&pk).send().await.unwrap();
    assert_error(res, 403, "forbidden", "metrics with a public key").await;
    // Near misses of the token are nothing.
    for bad in [format!("{token}x"), token[..token.len() - 1].to_string(), token.to_uppercase(), format!("x{token}")] {
        let res = http.get(s.at(METRICS_ROUTE)).header("authorization", format!("Bearer {bad}")).send().await.unwrap();
        assert_challenged(res, &format!("metrics with {bad:?}")).await;
    }

    // Every other route refuses it.
    let mut checked = 0;
    for r in documented_routes() {
        if r.template == METRICS_ROUTE || PUBLIC_ROUTES.contains(&r.template.as_str()) {
            continue;
        }
        let path = ids.fill(&r.template);
        let res = request(&http, &s, &r.method, &path).bearer_auth(token).send().await.unwrap();
        let what = format!("{} {path} with the metrics token", r.method);
        let (status, _, body) = error_code(res).await;
        assert!(status == 401 || status == 403, "{what}: {status} {body}");
        checked += 1;
    }
    assert!(checked >= 11, "{checked}");
    // ... including unknown routes, and nothing changed.
    assert_challenged(http.get(s.at("/api/nope")).bearer_auth(token).send().await.unwrap(), "an unknown route").await;
    let list: Value = http.get(s.at("/api/assistants")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let keys: Value = http.get(s.at("/api/keys")).bearer_auth(&s.admin).send().await.unwrap().json().await.unwrap();
    assert!(keys.as_array().unwrap().iter().all(|k| k["revokedAt"].is_null()), "{keys}");
}

#[tokio::test]
async fn without_a_metrics_token_configured_none_works() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    for t in ["tok_metrics_0123456789abcdef", "metrics", ""] {
        let res = http.get(s.at(METRICS_ROUTE)).header("authorization", format!("Bearer {t}")).send().await.unwrap();
        assert_challenged(res, &format!("metrics with {t:?}")).await;
    }
}

// ---------------------------------------------------------------------------
// (d) Supabase user tokens.

const JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

fn claims() -> Value {
    json!({ "sub": "5f0c1a9e-user", "aud": "authenticated", "role": "authenticated", "email": "ada@example.com", "exp": now_secs() + 3600, "iat": now_secs() })
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test]
async fn supabase_user_tokens_are_verified() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.supabase_jwt_secret = Some(JWT_SECRET.into());
        a.supabase_admin_emails = vec!["Ada@Example.com".into()];
    })
    .await;
    let http = TestServer::http();
    let get = |token: &str| http.get(s.at("/api/assistants")).bearer_auth(token);

    // Anyone can sign up to a Supabase project: a valid token of a user not listed
    // in SUPABASE_ADMIN_EMAILS is signed in, but may administer nothing.
    let mut stranger = claims();
    stranger["email"] = json!("mallory@example.com");
    let stranger = sign(&stranger, JWT_SECRET);
    assert_eq!(get(&stranger).send().await.unwrap().status(), 403);
    let res = http.post(s.at("/api/keys")).bearer_auth(&stranger).json(&json!({ "name": "mine", "kind": "private" })).send().await.unwrap();
    assert_eq!(res.status(), 403);

    // A valid token of a listed user (emails compare without case): full access.
    let good = sign(&claims(), JWT_SECRET);
    let res = get(&good).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = http.get(s.at("/api/me")).bearer_auth(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["kind"], "user");
    assert_eq!(me["name"], "ada@example.com");
    let res = http.post(s.at("/api/assistants")).bearer_auth(&good).json(&json!({ "name": "by a user" })).send().await.unwrap();
    assert_eq!(res.status(), 201);
    // Within the leeway of a just-expired token, still fine.
    let mut c = claims();
    c["exp"] = json!(now_secs() - 5);
    assert_eq!(get(&sign(&c, JWT_SECRET)).send().await.unwrap().status(), 200);

    let mut bad: Vec<(String, String)> = Vec::new();
    let mut with = |what: &str, f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        bad.push((what.to_string(), sign(&c, JWT_SECRET)));
    };
    with("expired", &|c| c["exp"] = json!(now_secs() - 3600));
    with("expired beyond the leeway", &|c| c["exp"] = json!(now_secs() - 120));
    with("the anon audience", &|c| c["aud"] = json!("anon"));
    with("another audience", &|c| c["aud"] = json!("service_role"));
    with("no audience", &|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    with("no exp", &|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    with("no sub", &|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    with("exp as a string", &|c| c["exp"] = json!("never"));
    bad.push(("the wrong secret".into(), sign(&claims(), "another-secret-of-sufficient-length-0123456789")));
    bad.push(("an empty secret".into(), sign(&claims(), "")));
    bad.push((
        "HS512".into(),
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims(), &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap(),
    ));
    // alg: none, unsigned.
    let payload = b64url(claims().to_string().as_bytes());
    bad.push(("alg none".into(), format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#))));
    bad.push(("alg None".into(), format!("{}.{payload}.", b64url(br#"{"alg":"None","typ":"JWT"}"#))));
    // A valid token with its payload swapped (for another user), or its signature dropped.
    let parts: Vec<&str> = good.split('.').collect();
    let mut other = claims();
    other["sub"] = json!("someone-else");
    other["role"] = json!("service_role");
    bad.push(("a tampered payload".into(), format!("{}.{}.{}", parts[0], b64url(other.to_string().as_bytes()), parts[2])));
    bad.push(("no signature".into(), format!("{}.{}.", parts[0], parts[1])));
    bad.push(("a truncated signature".into(), format!("{}.{}.{}", parts[0], parts[1], &parts[2][..10])));
    bad.push(("a fourth part".into(), format!("{good}.x")));
    bad.push(("garbage parts".into(), "a.b.c".into()));
    bad.push(("a header of garbage".into(), format!("%%%.{}.{}", parts[1], parts[2])));

    for (what, token) in &bad {
        let res = get(token).send().await.unwrap();
        assert_challenged(res, &format!("a user token with {what}")).await;
    }
    // Nothing was created by a bad token.
    let list: Value = get(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// A Supabase token does not say whether its email was confirmed: administrators
/// can be named by id, which cannot be claimed by signing up, and an anonymous
/// sign-in is never an administrator by its email.
#[tokio::test]
async fn supabase_administrators_are_named_by_id_or_by_email() {
    let s = TestServer::start_with(TestDb::chosen().await, |a| {
        a.supabase_jwt_secret = Some(JWT_SECRET.into());
        a.supabase_admin_emails = vec!["ada@example.com".into()];
        a.supabase_admin_user_ids = vec![" 7d1e-admin-id ".into()];
    })
    .await;
    let http = TestServer::http();
    let status = |c: Value| {
        let req = http.get(s.at("/api/assistants")).bearer_auth(sign(&c, JWT_SECRET));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };

    // By id, whatever the email (or none).
    assert_eq!(status(with(&|c| {
        c["sub"] = json!("7d1e-admin-id");
        c["email"] = json!("someone@example.com");
    }))
    .await, 200);
    assert_eq!(status(with(&|c| {
        c["sub"] = json!("7d1e-admin-id");
        c.as_object_mut().unwrap().remove("email");
    }))
    .await, 200);
    // Not by an id that only starts or ends like it, nor by one of another case.
    for sub in ["7d1e-admin-id-2", "x7d1e-admin-id", "7D1E-ADMIN-ID", ""] {
        assert_eq!(status(with(&|c| {
            c["sub"] = json!(sub);
            c["email"] = json!("mallory@example.com");
        }))
        .await, 403, "sub {sub:?}");
    }
    // By email, as before; but never for an anonymous sign-in, nor for an empty email.
    assert_eq!(status(claims()).await, 200);
    assert_eq!(status(with(&|c| c["is_anonymous"] = json!(false))).await, 200);
    assert_eq!(status(with(&|c| c["is_anonymous"] = json!(true))).await, 403);
    assert_eq!(status(with(&|c| c["email"] = json!(""))).await, 403);
    // A malformed is_anonymous is a bad token, not an administrator.
    assert_eq!(status(with(&|c| c["is_anonymous"] = json!("no"))).await, 401);
    // null (the issuer does not say): signed in, but not an administrator by email;
    // by id still.
    assert_eq!(status(with(&|c| c["is_anonymous"] = json!(null))).await, 403);
    assert_eq!(status(with(&|c| {
        c["is_anonymous"] = json!(null);
        c["sub"] = json!("7d1e-admin-id");
    }))
    .await, 200);
}

#[tokio::test]
async fn user_tokens_are_refused_without_a_secret_configured() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    for token in [sign(&claims(), JWT_SECRET), sign(&claims(), "")] {
        let res = http.get(s.at("/api/assistants")).bearer_auth(&token).send().await.unwrap();
        assert_challenged(res, "a user token with no SUPABASE_JWT_SECRET").await;
    }
}

/// Live calls' revocation checks share one answer per key for half `key_check`:
/// the database sees one read per key then, not one per call. The answer is
/// reused while fresh, read again after; an unknown key counts as revoked.
#[tokio::test]
async fn revocation_checks_share_one_answer_per_key_while_it_is_fresh() {
    use std::time::Duration;
    use voxgate_server::session::keys::KeyChecks;
    for db in TestDb::all().await {
        let store = db.store().await;
        let m = voxgate_domain::key::mint("shared by many calls", KeyKind::Public, vec![new_id()]);
        store.insert_key(&m.key).await.unwrap();
        let id = m.key.id.clone();

        let cached = KeyChecks::new(Duration::from_secs(3600));
        assert!(!cached.revoked(&store, &id).await);
        store.revoke_key(&id).await.unwrap();
        // Within the freshness: the earlier answer, without a read.
        assert!(!cached.revoked(&store, &id).await, "{}", db.url);
        // A check whose answers are never fresh reads the revocation.
        let reads = KeyChecks::new(Duration::ZERO);
        assert!(reads.revoked(&store, &id).await);
        assert!(reads.revoked(&store, &new_id()).await, "an unknown key");
    }
}
