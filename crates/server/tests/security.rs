//! The security matrix (issue 9, item 5), on the real server over real clients:
//!
//! 1. every route (every operation of the OpenAPI document, the document itself,
//!    the `/agent` upgrade, the UI) times every kind of credential, against an
//!    explicit table of expected statuses; every refusal in the error shape, with a
//!    challenge on 401, the security headers, and nothing of what it guards or of
//!    the credential in its body; nothing a refused request aimed at changed;
//! 2. CORS and the `/agent` `Origin` check for an allowed, a disallowed and the
//!    `null` origin, in the single-domain default and in a multi-domain setting;
//! 3. the security headers on every kind of answer under TLS (HSTS included);
//! 4. TLS: 1.3 and 1.2 with forward-secret AEAD suites only; 1.0, 1.1 and weak
//!    1.2 suites refused (by `openssl s_client`, a client that can speak them);
//! 5. secrets: a full run of the real binary that uses an API key, a provider key,
//!    a webhook secret, a Supabase secret and a metrics token: none of them in its
//!    logs, the call's events, error bodies, metrics or webhook deliveries;
//! 6. uploads: hostile file names not covered by `knowledge.rs`
//!    (`a_file_name_cannot_choose_where_the_bytes_go`) write nothing outside the
//!    files folder.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, start_call};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use voxgate_domain::call::Call;
use voxgate_domain::clock::now_ms;
use voxgate_domain::key::{KeyKind, hash_secret, mint, random_token};
use voxgate_testkit::TestDb;

// ---------------------------------------------------------------------------
// Credentials.

const JWT_SECRET: &str = "matrix-supabase-jwt-secret-0123456789abcdefghij";
const ADMIN_EMAIL: &str = "owner@example.com";
const METRICS_TOKEN: &str = "tok_matrix_metrics_0123456789abcdef";

/// Every kind of credential a request can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    /// No credential at all.
    None,
    /// A public key listing the fixture's assistant.
    Public,
    /// A private key.
    Private,
    /// A private key, revoked through the API (after it was used, so cached).
    RevokedPrivate,
    /// A public key, revoked likewise.
    RevokedPublic,
    /// A fresh call token from `POST /api/calls`.
    CallToken,
    /// A call token past its expiry.
    ExpiredCallToken,
    /// A valid call token with one character changed.
    TamperedCallToken,
    /// A call token already used to open a call.
    UsedCallToken,
    /// An unused call token minted by a private key that was revoked since.
    RevokedKeysCallToken,
    /// A Supabase user token signed with another secret.
    JwtWrongSecret,
    /// A valid Supabase user token of a user in `SUPABASE_ADMIN_EMAILS`.
    JwtAdmin,
    /// A valid Supabase user token of anyone else who signed up.
    JwtUser,
    /// `METRICS_TOKEN`.
    MetricsToken,
}

const COLS: usize = 14;
const CREDS: [Cred; COLS] = [
    Cred::None,
    Cred::Public,
    Cred::Private,
    Cred::RevokedPrivate,
    Cred::RevokedPublic,
    Cred::CallToken,
    Cred::ExpiredCallToken,
    Cred::TamperedCallToken,
    Cred::UsedCallToken,
    Cred::RevokedKeysCallToken,
    Cred::JwtWrongSecret,
    Cred::JwtAdmin,
    Cred::JwtUser,
    Cred::MetricsToken,
];

// ---------------------------------------------------------------------------
// The expectation table.

/// 401: refused, with `WWW-Authenticate: Bearer`.
const U: u16 = 401;
/// 403: authenticated, but not allowed.
const F: u16 = 403;

/// Where a route lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An operation of the OpenAPI document (plus the document itself).
    Api,
    /// Under `/api` but no route: the table's check of the middleware's order.
    ApiExtra,
    /// The `/agent` WebSocket upgrade (101 is a call that started).
    Agent,
    /// The web app.
    Ui,
}

/// The expected status of every route for every credential, in the order of
/// [`CREDS`]:
///
/// none, public, private, revoked private, revoked public, call token, expired
/// call token, tampered call token, used call token, call token of a revoked key,
/// JWT with the wrong secret, JWT of an admin, JWT of another user, metrics token.
#[rustfmt::skip]
const TABLE: &[(Kind, &str, &str, [u16; COLS])] = &[
    //                                                  none  pk   sk   rsk  rpk  ct   ctx  ctt  ctu  ctr  jwt- jwtA jwtU metr
    (Kind::Api, "GET",    "/api/health",                 [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    (Kind::Api, "GET",    "/api/ready",                  [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    (Kind::Api, "POST",   "/api/auth/login",             [201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201]),
    (Kind::Api, "GET",    "/api/metrics",                [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   200]),
    (Kind::Api, "GET",    "/api/me",                     [U,   200, 200, U,   U,   U,   U,   U,   U,   U,   U,   200, 200, U  ]),
    (Kind::Api, "GET",    "/api/openapi.json",           [U,   200, 200, U,   U,   U,   U,   U,   U,   U,   U,   200, 200, U  ]),
    (Kind::Api, "GET",    "/api/providers",              [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "GET",    "/api/assistants",             [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/assistants",             [U,   F,   201, U,   U,   U,   U,   U,   U,   U,   U,   201, F,   U  ]),
    (Kind::Api, "GET",    "/api/assistants/{id}",        [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "PATCH",  "/api/assistants/{id}",        [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "DELETE", "/api/assistants/{id}",        [U,   F,   204, U,   U,   U,   U,   U,   U,   U,   U,   204, F,   U  ]),
    (Kind::Api, "GET",    "/api/calls",                  [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/calls",                  [U,   F,   201, U,   U,   U,   U,   U,   U,   U,   U,   201, F,   U  ]),
    (Kind::Api, "GET",    "/api/calls/{id}",             [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "GET",    "/api/calls/{id}/recording",   [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/calls/{id}/control",     [U,   F,   202, U,   U,   U,   U,   U,   U,   U,   U,   202, F,   U  ]),
    (Kind::Api, "GET",    "/api/keys",                   [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/keys",                   [U,   F,   201, U,   U,   U,   U,   U,   U,   U,   U,   201, F,   U  ]),
    (Kind::Api, "DELETE", "/api/keys/{id}",              [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "GET",    "/api/files",                  [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/files",                  [U,   F,   202, U,   U,   U,   U,   U,   U,   U,   U,   202, F,   U  ]),
    (Kind::Api, "GET",    "/api/files/{id}",             [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "DELETE", "/api/files/{id}",             [U,   F,   204, U,   U,   U,   U,   U,   U,   U,   U,   204, F,   U  ]),
    (Kind::Api, "GET",    "/api/webhooks",               [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "GET",    "/api/webhooks/{id}",          [U,   F,   200, U,   U,   U,   U,   U,   U,   U,   U,   200, F,   U  ]),
    (Kind::Api, "POST",   "/api/webhooks/{id}/retry",    [U,   F,   202, U,   U,   U,   U,   U,   U,   U,   U,   202, F,   U  ]),
    // Not routes: authentication comes first, so only those who may see a 404 do.
    (Kind::ApiExtra, "GET",  "/api/no-such-route",      [U,   404, 404, U,   U,   U,   U,   U,   U,   U,   U,   404, 404, U  ]),
    // A call: keys and JWTs in `Authorization` (a public key as `?key=` from its
    // page's origin), call tokens as `?token=`.
    (Kind::Agent, "GET", "/agent",                        [U,   101, 101, U,   U,   101, U,   U,   U,   U,   U,   101, F,   F  ]),
    // The web app is public; credentials change nothing.
    (Kind::Ui, "GET", "/",                                [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    (Kind::Ui, "GET", "/calls",                           [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    (Kind::Ui, "GET", "/config.json",                     [200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
];

/// Every operation of the OpenAPI document (method, template), and the document.
fn documented_operations() -> BTreeSet<(String, String)> {
    let doc = voxgate_api::openapi();
    let mut out = BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", item.get.is_some()),
            ("PUT", item.put.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("OPTIONS", item.options.is_some()),
            ("HEAD", item.head.is_some()),
            ("PATCH", item.patch.is_some()),
            ("TRACE", item.trace.is_some()),
            ("QUERY", item.query.is_some()),
        ];
        for (method, present) in ops {
            if present {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out.insert(("GET".into(), "/api/openapi.json".into()));
    out
}

#[test]
fn the_table_lists_every_route_of_the_api_and_nothing_else() {
    let documented = documented_operations();
    let tabled: BTreeSet<(String, String)> = TABLE.iter().filter(|r| r.0 == Kind::Api).map(|r| (r.1.to_string(), r.2.to_string())).collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    assert!(missing.is_empty(), "routes missing from the security matrix (add a row to TABLE): {missing:?}");
    let stale: Vec<_> = tabled.difference(&documented).collect();
    assert!(stale.is_empty(), "rows of the security matrix for routes that do not exist: {stale:?}");
    assert_eq!(TABLE.iter().filter(|r| r.0 == Kind::Api).count(), tabled.len(), "a route is listed twice");
    // The public routes are exactly the rows where no credential is needed.
    for (kind, method, path, row) in TABLE {
        if *kind == Kind::Api {
            let public = voxgate_api::auth::PUBLIC_ROUTES.contains(path);
            assert_eq!(row[0] != U, public, "{method} {path}: the table and PUBLIC_ROUTES disagree");
        }
    }
}

// ---------------------------------------------------------------------------
// The server and its objects.

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn user_claims(email: &str) -> Value {
    let now = now_ms() / 1000;
    json!({ "sub": format!("user-{email}"), "aud": "authenticated", "role": "authenticated", "email": email, "exp": now + 3600, "iat": now })
}

/// A call token with one character changed.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

struct Matrix {
    s: TestServer,
    http: reqwest::Client,
    /// The shared objects refused requests aim at (checked untouched at the end).
    assistant: String,
    call: String,
    key_id: String,
    file: String,
    webhook: String,
    /// A live call, for the control route.
    live_call: String,
    public: String,
    revoked_private: String,
    revoked_public: String,
    /// A call token for the `/api` cells (never used there: not a key).
    call_token: String,
    expired_call_token: String,
    tampered_call_token: String,
    used_call_token: String,
    revoked_keys_call_token: String,
    jwt_wrong: String,
    jwt_admin: String,
    jwt_user: String,
    recordings: tempfile::TempDir,
    /// Every secret of the run: none may appear in a refusal's body.
    secrets: Vec<String>,
}

impl Matrix {
    async fn start() -> Matrix {
        let s = TestServer::start_with(TestDb::chosen().await, |a| {
            a.supabase_jwt_secret = Some(JWT_SECRET.into());
            a.supabase_admin_emails = vec![ADMIN_EMAIL.into()];
            a.metrics_token = Some(METRICS_TOKEN.into());
        })
        .await;
        let http = TestServer::http();
        let assistant = s.assistant("matrix shared assistant").await;
        let call = Call::start(assistant.clone(), None, "elsewhere");
        s.store.create_call(&call).await.unwrap();
        let victim = mint("matrix victim", KeyKind::Private, vec![]);
        s.store.insert_key(&victim.key).await.unwrap();
        let file = voxgate_testkit::file_record(voxgate_domain::FileStatus::Ready);
        s.store.insert_file(&file).await.unwrap();

        let public = s.key(KeyKind::Public, &[&assistant]).await;
        let (revoked_private, _) = Self::revoked(&s, &http, KeyKind::Private, &assistant).await;
        let (revoked_public, _) = Self::revoked(&s, &http, KeyKind::Public, &assistant).await;

        let call_token = Self::mint_call_token(&s, &http, &s.admin, &assistant).await;
        let expired_call_token = format!("vg_ct_{}", random_token());
        s.store.create_call_token(&hash_secret(&expired_call_token), &assistant, None, -1_000).await.unwrap();
        let tampered_call_token = tamper(&Self::mint_call_token(&s, &http, &s.admin, &assistant).await);
        let used_call_token = Self::mint_call_token(&s, &http, &s.admin, &assistant).await;
        assert!(s.store.consume_call_token(&hash_secret(&used_call_token)).await.unwrap().is_some());
        // A private key mints a token, then is revoked before the token is used.
        let res = http.post(s.at("/api/keys")).bearer_auth(&s.admin).json(&json!({"name": "minter", "kind": "private"})).send().await.unwrap();
        let minter: Value = res.json().await.unwrap();
        let minter_secret = minter["secret"].as_str().unwrap().to_string();
        let revoked_keys_call_token = Self::mint_call_token(&s, &http, &minter_secret, &assistant).await;
        let res = http.delete(s.at(&format!("/api/keys/{}", minter["key"]["id"].as_str().unwrap()))).bearer_auth(&s.admin).send().await.unwrap();
        assert_eq!(res.status(), 200);

        let jwt_wrong = sign(&user_claims(ADMIN_EMAIL), "another-secret-of-sufficient-length-0123456789");
        let jwt_admin = sign(&user_claims(ADMIN_EMAIL), JWT_SECRET);
        let jwt_user = sign(&user_claims("someone@example.org"), JWT_SECRET);

        let webhook = Self::failed_webhook(&s, &call.id, &assistant).await;
        let secrets = vec![
            s.admin.clone(),
            public.clone(),
            revoked_private.clone(),
            revoked_public.clone(),
            minter_secret,
            call_token.clone(),
            expired_call_token.clone(),
            tampered_call_token.clone(),
            used_call_token.clone(),
            revoked_keys_call_token.clone(),
            jwt_wrong.clone(),
            jwt_admin.clone(),
            jwt_user.clone(),
            JWT_SECRET.into(),
            METRICS_TOKEN.into(),
            victim.secret.clone(),
            victim.key.hash.clone(),
        ];
        Matrix {
            http,
            assistant,
            call: call.id,
            key_id: victim.key.id,
            file: file.id,
            webhook,
            live_call: String::new(),
            public,
            revoked_private,
            revoked_public,
            call_token,
            expired_call_token,
            tampered_call_token,
            used_call_token,
            revoked_keys_call_token,
            jwt_wrong,
            jwt_admin,
            jwt_user,
            recordings: tempfile::tempdir().unwrap(),
            secrets,
            s,
        }
    }

    /// A key created and used through the API (so the auth cache holds it), then revoked.
    async fn revoked(s: &TestServer, http: &reqwest::Client, kind: KeyKind, assistant: &str) -> (String, String) {
        let body = match kind {
            KeyKind::Public => {
                json!({"name": "doomed", "kind": "public", "assistantIds": [assistant]})
            }
            KeyKind::Private => json!({"name": "doomed", "kind": "private"}),
        };
        let created: Value = http.post(s.at("/api/keys")).bearer_auth(&s.admin).json(&body).send().await.unwrap().json().await.unwrap();
        let secret = created["secret"].as_str().unwrap().to_string();
        let id = created["key"]["id"].as_str().unwrap().to_string();
        assert_eq!(http.get(s.at("/api/me")).bearer_auth(&secret).send().await.unwrap().status(), 200);
        assert_eq!(http.delete(s.at(&format!("/api/keys/{id}"))).bearer_auth(&s.admin).send().await.unwrap().status(), 200);
        (secret, id)
    }

    async fn mint_call_token(s: &TestServer, http: &reqwest::Client, key: &str, assistant: &str) -> String {
        let res = http.post(s.at("/api/calls")).bearer_auth(key).json(&json!({"assistantId": assistant})).send().await.unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
    }

    /// A webhook event given up on (state `failed`), which `retry` accepts.
    async fn failed_webhook(s: &TestServer, call: &str, assistant: &str) -> String {
        let id = voxgate_domain::clock::new_id();
        s.store
            .enqueue_webhook(&voxgate_store::outbox::NewOutboxEvent {
                id: id.clone(),
                event_type: "status-update".into(),
                call_id: Some(call.into()),
                assistant_id: Some(assistant.into()),
                url: "http://127.0.0.1:9/matrix-hook".into(),
                body: "{}".into(),
                created_at: now_ms(),
            })
            .await
            .unwrap();
        // No worker runs without WEBHOOK_SECRET: the claim is ours alone.
        let lease = now_ms() + 60_000;
        let claimed = s.store.claim_webhooks(1000, now_ms() + 1, lease).await.unwrap();
        for e in claimed {
            assert!(s.store.record_webhook_failure(&e.id, lease, Some(500), "matrix", None).await.unwrap());
        }
        assert_eq!(s.store.get_webhook(&id).await.unwrap().state.as_str(), "failed");
        id
    }

    /// The secret a credential sends, if any.
    fn secret(&self, c: Cred) -> Option<String> {
        Some(match c {
            Cred::None => return None,
            Cred::Public => self.public.clone(),
            Cred::Private => self.s.admin.clone(),
            Cred::RevokedPrivate => self.revoked_private.clone(),
            Cred::RevokedPublic => self.revoked_public.clone(),
            Cred::CallToken => self.call_token.clone(),
            Cred::ExpiredCallToken => self.expired_call_token.clone(),
            Cred::TamperedCallToken => self.tampered_call_token.clone(),
            Cred::UsedCallToken => self.used_call_token.clone(),
            Cred::RevokedKeysCallToken => self.revoked_keys_call_token.clone(),
            Cred::JwtWrongSecret => self.jwt_wrong.clone(),
            Cred::JwtAdmin => self.jwt_admin.clone(),
            Cred::JwtUser => self.jwt_user.clone(),
            Cred::MetricsToken => METRICS_TOKEN.into(),
        })
    }

    /// The path and body of a request to `template`: fresh objects when it is
    /// expected to succeed (so deletes do not take what the next cell reads), the
    /// shared ones when it is expected to be refused.
    async fn target(&self, method: &str, template: &str, fresh: bool) -> (String, Option<Body>) {
        let id = if !template.contains("{id}") {
            String::new()
        } else if template.starts_with("/api/assistants/") {
            if fresh { self.s.assistant("matrix fresh assistant").await } else { self.assistant.clone() }
        } else if template == "/api/calls/{id}/control" {
            self.live_call.clone()
        } else if template == "/api/calls/{id}/recording" {
            let call = if fresh {
                let c = Call::start(self.assistant.clone(), None, "elsewhere");
                self.s.store.create_call(&c).await.unwrap();
                c.id
            } else {
                self.call.clone()
            };
            let wav = self.recordings.path().join(format!("{call}.wav"));
            if !wav.exists() {
                let spec = hound::WavSpec { channels: 2, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
                let mut w = hound::WavWriter::create(&wav, spec).unwrap();
                for _ in 0..320 {
                    w.write_sample(0i16).unwrap();
                }
                w.finalize().unwrap();
                self.s.store.set_recording(&call, &wav.to_string_lossy()).await.unwrap();
            }
            call
        } else if template.starts_with("/api/calls/") {
            if fresh {
                let c = Call::start(self.assistant.clone(), None, "elsewhere");
                self.s.store.create_call(&c).await.unwrap();
                c.id
            } else {
                self.call.clone()
            }
        } else if template.starts_with("/api/keys/") {
            if fresh {
                let m = mint("matrix fresh key", KeyKind::Private, vec![]);
                self.s.store.insert_key(&m.key).await.unwrap();
                m.key.id
            } else {
                self.key_id.clone()
            }
        } else if template.starts_with("/api/files/") {
            if fresh {
                let f = voxgate_testkit::file_record(voxgate_domain::FileStatus::Ready);
                self.s.store.insert_file(&f).await.unwrap();
                f.id
            } else {
                self.file.clone()
            }
        } else if template.starts_with("/api/webhooks/") {
            if fresh { Self::failed_webhook(&self.s, &self.call, &self.assistant).await } else { self.webhook.clone() }
        } else {
            panic!("{method} {template}: a path parameter the matrix does not know; teach Matrix::target about it");
        };
        let path = template.replace("{id}", &id);
        let body = match (method, template) {
            ("POST", "/api/assistants") => Some(Body::Json(json!({"name": "matrix created"}))),
            ("PATCH", "/api/assistants/{id}") => Some(Body::Json(json!({"name": "matrix patched"}))),
            ("POST", "/api/calls") => Some(Body::Json(json!({"assistantId": self.assistant}))),
            ("POST", "/api/calls/{id}/control") => Some(Body::Json(json!({"type": "add-message", "role": "system", "content": "Be brief."}))),
            ("POST", "/api/keys") => Some(Body::Json(json!({"name": "matrix created", "kind": "private"}))),
            ("POST", "/api/auth/login") => {
                // A fresh code each time: the route is public, the code is the credential.
                let code = random_token();
                self.s.store.create_login_code(&hash_secret(&code), 60_000).await.unwrap();
                Some(Body::Json(json!({"code": code})))
            }
            ("POST", "/api/files") => Some(Body::Upload),
            ("POST", "/api/webhooks/{id}/retry") => None,
            (m, t) if m == "POST" || m == "PATCH" || m == "PUT" => {
                panic!("{m} {t}: the matrix has no body for it; teach Matrix::target")
            }
            _ => None,
        };
        (path, body)
    }

    /// One `/api` or UI request with credential `c`.
    async fn send_http(&self, c: Cred, method: &str, path: &str, body: Option<Body>) -> reqwest::Response {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(method, self.s.at(path));
        if let Some(secret) = self.secret(c) {
            rb = rb.bearer_auth(secret);
        }
        rb = match body {
            Some(Body::Json(v)) => rb.json(&v),
            Some(Body::Upload) => {
                let part = reqwest::multipart::Part::bytes(b"The matrix upload: plain words about opening hours.".to_vec())
                    .file_name("matrix.txt")
                    .mime_str("text/plain")
                    .unwrap();
                rb.multipart(reqwest::multipart::Form::new().part("file", part))
            }
            None => rb,
        };
        rb.send().await.unwrap()
    }

    /// One `/agent` upgrade with credential `c`: 101 once `call-started` came, or
    /// the refusal's status, headers and body.
    async fn send_agent(&self, c: Cred) -> (u16, Vec<(String, String)>, Option<Value>) {
        let a = &self.assistant;
        let own_origin = self.s.url.clone();
        let (query, bearer, origin) = match c {
            Cred::None => (format!("assistantId={a}"), None, None),
            Cred::Public | Cred::RevokedPublic => (format!("assistantId={a}&key={}", self.secret(c).unwrap()), None, Some(own_origin)),
            Cred::CallToken => (format!("token={}", Self::mint_call_token(&self.s, &self.http, &self.s.admin, a).await), None, None),
            Cred::ExpiredCallToken | Cred::TamperedCallToken | Cred::UsedCallToken | Cred::RevokedKeysCallToken => {
                (format!("token={}", self.secret(c).unwrap()), None, None)
            }
            _ => (format!("assistantId={a}"), self.secret(c), None),
        };
        let mut req = self.s.ws_url(&query).into_client_request().unwrap();
        if let Some(b) = bearer {
            req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {b}")).unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("origin", HeaderValue::from_str(&o).unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, res)) => {
                let headers = pairs(res.headers());
                let hello = start_call(&mut ws).await;
                assert_eq!(hello["assistantId"], a.as_str(), "{c:?}: {hello}");
                let _ = ws.close(None).await;
                (101, headers, None)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let headers = pairs(res.headers());
                let body = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).ok();
                (res.status().as_u16(), headers, body)
            }
            Err(e) => panic!("{c:?}: the upgrade failed without an answer: {e}"),
        }
    }
}

enum Body {
    Json(Value),
    Upload,
}

fn pairs(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The headers `headers.rs` promises on every answer (HSTS only under TLS).
fn assert_security_headers(h: &[(String, String)], tls: bool, what: &str) {
    assert_eq!(header(h, "x-content-type-options"), Some("nosniff"), "{what}: {h:?}");
    assert_eq!(header(h, "x-frame-options"), Some("DENY"), "{what}: {h:?}");
    assert_eq!(header(h, "referrer-policy"), Some("no-referrer"), "{what}: {h:?}");
    assert_eq!(header(h, "cross-origin-opener-policy"), Some("same-origin"), "{what}: {h:?}");
    let pp = header(h, "permissions-policy").unwrap_or_else(|| panic!("{what}: no permissions-policy: {h:?}"));
    assert!(pp.contains("camera=()") && pp.contains("geolocation=()"), "{what}: {pp}");
    let csp = header(h, "content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP: {h:?}"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    let html = header(h, "content-type").is_some_and(|t| t.starts_with("text/html"));
    if html {
        assert!(csp.contains("script-src 'self'") && csp.contains("object-src 'none'"), "{what}: the UI's CSP: {csp}");
    } else {
        assert!(csp.starts_with("default-src 'none'"), "{what}: a non-HTML answer allows nothing: {csp}");
    }
    match header(h, "strict-transport-security") {
        Some(v) => {
            assert!(tls, "{what}: HSTS on plain HTTP");
            assert!(v.contains("max-age=63072000"), "{what}: {v}");
        }
        None => assert!(!tls, "{what}: no HSTS under TLS: {h:?}"),
    }
    assert!(header(h, "set-cookie").is_none(), "{what}: a cookie: {h:?}");
}

/// A refusal: the error shape, the right code, a challenge on 401, and nothing of
/// the credential or of the objects it aimed at in its body.
fn check_refusal(status: u16, h: &[(String, String)], body: Option<&Value>, raw: &str, forbidden_words: &[String]) -> Result<(), String> {
    let body = body.ok_or_else(|| format!("{status} without a JSON body: {raw:?}"))?;
    if !header(h, "content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(format!("not JSON: {h:?}"));
    }
    let expected_code = match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        other => return Err(format!("{other} is not a refusal")),
    };
    if body["error"]["code"] != expected_code || body["error"]["message"].as_str().is_none_or(|m| m.is_empty()) {
        return Err(format!("not the error shape with code {expected_code}: {body}"));
    }
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    let inner: BTreeSet<&str> = body["error"].as_object().unwrap().keys().map(String::as_str).collect();
    if keys != ["error"] || inner != BTreeSet::from(["code", "message"]) {
        return Err(format!("more than the error shape: {body}"));
    }
    if status == 401 && header(h, "www-authenticate") != Some("Bearer") {
        return Err(format!("a 401 without `WWW-Authenticate: Bearer`: {h:?}"));
    }
    for word in forbidden_words.iter().filter(|w| !w.is_empty()) {
        if raw.contains(word.as_str()) {
            return Err(format!("the body carries {word:?}: {raw}"));
        }
    }
    Ok(())
}

/// The security matrix: every row of [`TABLE`] times every credential of [`CREDS`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_times_every_credential() {
    let mut m = Matrix::start().await;
    let http = m.http.clone();

    // A live call for the control route, its events drained in the background.
    let mut req = m.s.ws_url(&format!("assistantId={}", m.assistant)).into_client_request().unwrap();
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", m.s.admin)).unwrap());
    let (mut live, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    m.live_call = start_call(&mut live).await["callId"].as_str().unwrap().to_string();
    let (mut live_tx, mut live_rx) = live.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = live_rx.next().await {} });

    let mut cells = 0;
    let mut refusals = 0;
    let mut outcomes: HashMap<(&str, &str), Vec<u16>> = HashMap::new();
    let mut failures = Vec::new();
    for (kind, method, template, row) in TABLE {
        for (col, cred) in CREDS.iter().enumerate() {
            let expected = row[col];
            let what = format!("{method} {template} with {cred:?}");
            let succeeds = !matches!(expected, U | F | 404);
            cells += 1;
            let (status, headers, body, raw, aimed_at) = match kind {
                Kind::Agent => {
                    let (status, headers, body) = m.send_agent(*cred).await;
                    let raw = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                    (status, headers, body, raw, vec![m.assistant.clone()])
                }
                _ => {
                    let (path, body) = if *kind == Kind::Api { m.target(method, template, succeeds).await } else { (template.to_string(), None) };
                    let res = m.send_http(*cred, method, &path, body).await;
                    let status = res.status().as_u16();
                    let headers = pairs(res.headers());
                    let raw = String::from_utf8_lossy(&res.bytes().await.unwrap()).into_owned();
                    let body = serde_json::from_str::<Value>(&raw).ok();
                    let ids: Vec<String> = path.split('/').filter(|s| voxgate_domain::clock::is_id(s)).map(str::to_string).collect();
                    (status, headers, body, raw, ids)
                }
            };
            outcomes.entry((method, template)).or_default().push(status);
            if status != expected {
                failures.push(format!("{what}: expected {expected}, got {status}: {}", &raw[..raw.len().min(300)]));
                continue;
            }
            assert_security_headers(&headers, false, &what);
            if !succeeds {
                refusals += 1;
                let mut words = m.secrets.clone();
                words.extend(aimed_at);
                words.extend(["matrix shared assistant".to_string(), "matrix victim".into(), "notes.txt".into(), "hash".into()]);
                if let Err(e) = check_refusal(status, &headers, body.as_ref(), &raw, &words) {
                    failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
    let _ = live_tx.send(Message::Text(r#"{"type":"end"}"#.into())).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    assert!(failures.is_empty(), "{} of {cells} cells of the security matrix failed:\n{}", failures.len(), failures.join("\n"));

    // Nothing a refused request aimed at changed.
    let get = |path: String| {
        let http = http.clone();
        let admin = m.s.admin.clone();
        let url = m.s.at(&path);
        async move {
            let res = http.get(url).bearer_auth(admin).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    let a = get(format!("/api/assistants/{}", m.assistant)).await;
    assert_eq!(a["name"], "matrix shared assistant", "{a}");
    assert!(m.s.store.get_key(&m.key_id).await.unwrap().revoked_at.is_none(), "a refused request revoked the victim key");
    get(format!("/api/files/{}", m.file)).await;
    let w = get(format!("/api/webhooks/{}", m.webhook)).await;
    assert_eq!(w["state"], "failed", "a refused retry queued the event again: {w}");
    // Only the cells that were allowed created anything.
    let created = |cells: &[u16]| cells.iter().filter(|s| (200..300).contains(*s)).count();
    let assistants = m.s.store.list_assistants(100, None).await.unwrap();
    let made = assistants.items.iter().filter(|a| a.spec.name == "matrix created").count();
    assert_eq!(made, created(&outcomes[&("POST", "/api/assistants")]), "assistants created");
    let keys = m.s.store.list_keys().await.unwrap();
    let made = keys.iter().filter(|k| k.name == "matrix created").count();
    assert_eq!(made, created(&outcomes[&("POST", "/api/keys")]), "keys created");
    eprintln!("security matrix: {} rows x {} credentials = {cells} cells, {refusals} refusals checked", TABLE.len(), CREDS.len());
    m.s.stop().await;
}

// ---------------------------------------------------------------------------
// 2. CORS and the `/agent` Origin check.

const APP: &str = "https://app.example.com";
const UI: &str = "https://ui.example.com";
const EVIL: &str = "https://evil.example.com";

/// What a browser on `origin` gets from `/api` and `/agent`.
#[derive(Debug, PartialEq, Eq)]
struct OriginOutcome {
    /// `access-control-allow-origin` on the preflight (none when refused).
    preflight: Option<String>,
    /// ... on a plain authenticated GET, which itself succeeds (200).
    simple: Option<String>,
    /// ... on a 401.
    refusal: Option<String>,
    /// The `/agent` upgrade: 101 or the refusal's status.
    agent: u16,
}

async fn origin_outcome(s: &TestServer, origin: &str) -> OriginOutcome {
    let http = TestServer::http();
    let cors = |h: &reqwest::header::HeaderMap, what: &str| -> Option<String> {
        let acao = h.get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
        let others: Vec<&str> = h.keys().map(|k| k.as_str()).filter(|k| k.starts_with("access-control-")).collect();
        if acao.is_none() {
            assert!(others.is_empty(), "{origin} {what}: CORS headers without an allowed origin: {others:?}");
        }
        assert!(h.get("access-control-allow-credentials").is_none(), "{origin} {what}: credentials are bearer tokens, never cookies");
        assert_ne!(acao.as_deref(), Some("*"), "{origin} {what}: a wildcard without ALLOWED_ORIGINS=*");
        acao
    };
    let res = http
        .request(Method::OPTIONS, s.at("/api/assistants"))
        .header("origin", origin)
        .header("access-control-request-method", "DELETE")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(!res.status().is_server_error(), "{origin}: preflight {}", res.status());
    let preflight = cors(res.headers(), "preflight");
    if preflight.is_some() {
        let methods = res.headers()["access-control-allow-methods"].to_str().unwrap().to_ascii_uppercase();
        assert!(methods.contains("DELETE"), "{methods}");
        let vary = res.headers().get("vary").map(|v| v.to_str().unwrap().to_ascii_lowercase()).unwrap_or_default();
        assert!(vary.contains("origin"), "{origin}: a per-origin answer varies on Origin: {vary:?}");
    }
    let res = http.get(s.at("/api/assistants")).header("origin", origin).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 200, "{origin}: CORS is the browser's check, the server still answers");
    let simple = cors(res.headers(), "GET");
    let res = http.get(s.at("/api/assistants")).header("origin", origin).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let refusal = cors(res.headers(), "401");

    let a = s.assistant("origin check").await;
    let mut req = s.ws_url(&format!("assistantId={a}")).into_client_request().unwrap();
    req.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    let agent = match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            start_call(&mut ws).await;
            let _ = ws.close(None).await;
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).expect("a JSON refusal");
            assert!(body["error"]["message"].as_str().unwrap().contains("ALLOWED_ORIGINS"), "{body}");
            res.status().as_u16()
        }
        Err(e) => panic!("{origin}: {e}"),
    };
    OriginOutcome { preflight, simple, refusal, agent }
}

fn allowed(origin: &str) -> OriginOutcome {
    OriginOutcome { preflight: Some(origin.into()), simple: Some(origin.into()), refusal: Some(origin.into()), agent: 101 }
}

fn refused() -> OriginOutcome {
    OriginOutcome { preflight: None, simple: None, refusal: None, agent: 403 }
}

/// Same origin: no CORS headers needed (none sent), and calls open.
fn same_origin() -> OriginOutcome {
    OriginOutcome { preflight: None, simple: None, refusal: None, agent: 101 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_agent_origin_in_the_single_and_multi_domain_settings() {
    for (setting, multi) in [("", false), ("https://app.example.com, https://UI.example.com/", true)] {
        let mut s = TestServer::start_with(TestDb::chosen().await, |a| a.allowed_origins = setting.into()).await;
        let own = s.url.clone();
        let cases: Vec<(&str, OriginOutcome)> = vec![
            (APP, if multi { allowed(APP) } else { refused() }),
            (UI, if multi { allowed(UI) } else { refused() }),
            (&own, same_origin()),
            (EVIL, refused()),
            ("https://app.example.com.evil.example.com", refused()),
            ("http://app.example.com", refused()),
            ("https://app.example.com:444", refused()),
            ("null", refused()),
            ("file://", refused()),
            // Another port of this host is another origin.
            ("http://127.0.0.1:1", refused()),
        ];
        for (origin, expected) in cases {
            let got = origin_outcome(&s, origin).await;
            assert_eq!(got, expected, "ALLOWED_ORIGINS={setting:?}, Origin: {origin}");
        }
        // No call was recorded for a refused upgrade: only the allowed ones.
        let calls = s.store.list_calls(&voxgate_store::calls::CallFilter { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(calls.items.len(), if multi { 3 } else { 1 }, "ALLOWED_ORIGINS={setting:?}");
        s.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 3. and 4. TLS: the headers on every kind of answer, and the versions and suites.

/// A self-signed certificate for `localhost` and `127.0.0.1`, as PEM files.
struct Cert {
    dir: tempfile::TempDir,
    pem: String,
    /// For rustls clients (the ECDSA certificate only).
    der: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl Cert {
    fn new() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Cert { pem: ck.cert.pem(), der: Some(ck.cert.der().clone()), dir }
    }

    /// An RSA certificate (rcgen makes ECDSA ones), so that RSA key exchange and
    /// ECDHE-RSA suites can be offered at all.
    async fn rsa() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let status = tokio::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .expect("openssl is installed (apt-get install openssl)");
        assert!(status.success());
        let pem = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
        Cert { pem, der: None, dir }
    }

    async fn server(&self, tweak: impl FnOnce(&mut voxgate_server::config::ServeArgs)) -> TestServer {
        let (c, k) = (self.dir.path().join("cert.pem"), self.dir.path().join("key.pem"));
        TestServer::start_with(TestDb::chosen().await, move |a| {
            a.tls_cert = Some(c);
            a.tls_key = Some(k);
            tweak(a);
        })
        .await
    }

    fn http(&self) -> reqwest::Client {
        voxgate_server::init_crypto();
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()]).build().unwrap()
    }

    fn rustls(&self) -> Arc<rustls::ClientConfig> {
        voxgate_server::init_crypto();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone().expect("an rcgen certificate")).unwrap();
        Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_kind_of_answer_under_tls() {
    let cert = Cert::new();
    let mut s = cert
        .server(|a| {
            a.body_limit = 1024;
            a.rate_limit_api_ip = voxgate_server::config::Rate0(voxgate_api::ratelimit::Rate::parse("40/min").unwrap());
        })
        .await;
    let http = cert.http();
    let a = {
        let res = http.post(s.at("/api/assistants")).bearer_auth(&s.admin).json(&json!({"name": "headers"})).send().await.unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    };
    let public = s.key(KeyKind::Public, &[&a]).await;
    let index = http.get(s.at("/")).send().await.unwrap().text().await.unwrap();
    let asset = index.split('"').find(|p| p.starts_with("/assets/")).expect("an asset in index.html").to_string();

    // (what, method, path, key, body, expected status)
    type Case<'a> = (&'a str, Method, String, Option<&'a str>, Option<String>, u16);
    let big = "x".repeat(4096);
    let cases: Vec<Case> = vec![
        ("the UI", Method::GET, "/".into(), None, None, 200),
        ("a UI route", Method::GET, "/calls".into(), None, None, 200),
        ("a hashed asset", Method::GET, asset, None, None, 200),
        ("config.json", Method::GET, "/config.json".into(), None, None, 200),
        ("a missing asset", Method::GET, "/assets/missing.js".into(), None, None, 404),
        ("a write to the UI", Method::POST, "/".into(), None, None, 405),
        ("health", Method::GET, "/api/health".into(), None, None, 200),
        ("a JSON read", Method::GET, format!("/api/assistants/{a}"), Some(&s.admin), None, 200),
        ("a 401", Method::GET, "/api/assistants".into(), None, None, 401),
        ("a 403", Method::GET, "/api/keys".into(), Some(&public), None, 403),
        ("a 404", Method::GET, "/api/nope".into(), Some(&s.admin), None, 404),
        ("a 405", Method::PUT, "/api/health".into(), Some(&s.admin), None, 405),
        ("a 400", Method::POST, "/api/assistants".into(), Some(&s.admin), Some("{nope".into()), 400),
        ("a 413", Method::POST, "/api/assistants".into(), Some(&s.admin), Some(format!("{{\"name\":\"{big}\"}}")), 413),
        ("a 415", Method::POST, "/api/files".into(), Some(&s.admin), Some("{}".into()), 415),
        ("a 422", Method::POST, "/api/assistants".into(), Some(&s.admin), Some("{\"nope\":1}".into()), 422),
        ("/agent without an upgrade", Method::GET, "/agent".into(), None, None, 400),
        ("metrics text", Method::GET, "/api/metrics".into(), Some(&s.admin), None, 200),
        ("a new key", Method::POST, "/api/keys".into(), Some(&s.admin), Some("{\"name\":\"fresh\",\"kind\":\"private\"}".into()), 201),
    ];
    for (what, method, path, key, body, status) in &cases {
        let mut rb = http.request(method.clone(), s.at(path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b.clone());
        }
        let res = rb.send().await.unwrap();
        assert_eq!(res.status().as_u16(), *status, "{what}: {path}");
        let h = pairs(res.headers());
        assert_security_headers(&h, true, what);
        if path.starts_with("/api/") {
            // Keys, transcripts, recordings: never kept by a cache.
            assert_eq!(header(&h, "cache-control"), Some("no-store"), "{what}: {h:?}");
        }
    }
    // A 429 (the per-address limit above), once the budget is spent.
    let mut limited = None;
    for _ in 0..60 {
        let res = http.get(s.at("/api/me")).bearer_auth(&s.admin).send().await.unwrap();
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
    }
    let res = limited.expect("a 429 within 60 requests at 40/min");
    assert!(res.headers().contains_key("retry-after"));
    assert_security_headers(&pairs(res.headers()), true, "a 429");

    // The WebSocket: the 101 and a refused upgrade.
    let connector = || Some(tokio_tungstenite::Connector::Rustls(cert.rustls()));
    let mut req = s.ws_url(&format!("assistantId={a}")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector()).await.unwrap();
    assert_security_headers(&pairs(res.headers()), true, "the 101 of /agent");
    start_call(&mut ws).await;
    let _ = ws.close(None).await;
    let mut req = s.ws_url(&format!("assistantId={a}")).into_client_request().unwrap();
    req.headers_mut().insert("origin", HeaderValue::from_static(EVIL));
    req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", s.admin)).unwrap());
    match tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403);
            assert_security_headers(&pairs(res.headers()), true, "a refused upgrade");
        }
        other => panic!("an upgrade from {EVIL}: {:?}", other.map(|(_, r)| r.status())),
    }
    s.stop().await;
}

/// `openssl s_client` against the server with `args`; (success, everything it printed).
async fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost", "-brief"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl is installed (apt-get install openssl)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("Protocol version"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_accepts_only_1_2_and_1_3_with_modern_suites() {
    // With an ECDSA and with an RSA certificate: each suite below can only be
    // negotiated with a key of its kind, so each weak suite is offered where a
    // permissive server would take it.
    let weak_ecdsa = ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384"];
    let weak_rsa = [
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA384",
        "DHE-RSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA256",
        "DES-CBC3-SHA",
    ];
    for (cert, weak) in [(Cert::new(), &weak_ecdsa[..]), (Cert::rsa().await, &weak_rsa[..])] {
        let mut s = cert.server(|_| {}).await;
        let port = s.addr.port();
        let key = if weak.len() == weak_rsa.len() { "RSA" } else { "ECDSA" };

        // TLS 1.3, with each of its suites.
        for suite in ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"] {
            let (ok, text) = s_client(port, &["-tls1_3", "-ciphersuites", suite]).await;
            assert!(ok && text.contains("Protocol version: TLSv1.3") && text.contains(suite), "{key}: TLS 1.3 with {suite}:\n{text}");
        }
        // TLS 1.2: a forward-secret AEAD suite, even when the client offers weak
        // ones too (at security level 0, every suite it has).
        for offer in ["DEFAULT", "ALL:@SECLEVEL=0"] {
            let (ok, text) = s_client(port, &["-tls1_2", "-cipher", offer]).await;
            assert!(ok && text.contains("Protocol version: TLSv1.2"), "{key}: TLS 1.2 offering {offer}:\n{text}");
            let suite = text.lines().find_map(|l| l.strip_prefix("Ciphersuite: ")).expect("the suite").trim().to_string();
            assert!(suite.starts_with("ECDHE-") && (suite.contains("GCM") || suite.contains("CHACHA20")), "{key}: TLS 1.2 negotiated {suite}");
        }
        // Weak TLS 1.2 suites alone: CBC, no forward secrecy, 3DES.
        for w in weak {
            let (ok, text) = s_client(port, &["-tls1_2", "-cipher", &format!("{w}:@SECLEVEL=0")]).await;
            assert!(!ok, "{key}: TLS 1.2 with {w} was accepted:\n{text}");
            assert!(!text.contains("no ciphers available"), "{key}: the client could not offer {w}, so this proves nothing:\n{text}");
        }
        // TLS 1.0 and 1.1: refused by the server ("no protocols available" would
        // mean the client refused, proving nothing).
        for (flag, name) in [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")] {
            let (ok, text) = s_client(port, &[flag, "-cipher", "ALL:@SECLEVEL=0"]).await;
            assert!(!ok && !text.contains(&format!("Protocol version: {name}\n")), "{key}: {name} was accepted:\n{text}");
            assert!(!text.contains("no protocols available"), "{key}: the client did not offer {name}:\n{text}");
            assert!(text.to_lowercase().contains("alert") || text.contains("wrong version"), "{key}: {name}: no refusal from the server?\n{text}");
        }
        // The server is fine after all that.
        assert!(s_client(port, &["-tls1_3"]).await.0, "{key}: the server stopped answering");
        s.stop().await;
    }
}

// ---------------------------------------------------------------------------
// 5. Secrets: a full run of the real binary.

const OPENAI_KEY: &str = "sk-proj-matrixSECRET-4f3e2d1c0b9a8f7e6d5c";
const WEBHOOK_SECRET: &str = "whsec-matrixSECRET-0a1b2c3d4e5f60718293";

/// What the webhook receiver got: each request's headers and body.
type Deliveries = Arc<Mutex<Vec<(String, String)>>>;

async fn hook_receiver() -> (String, Deliveries) {
    let got: Deliveries = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|axum::extract::State(got): axum::extract::State<Deliveries>, headers: axum::http::HeaderMap, body: String| async move {
                got.lock().unwrap().push((format!("{headers:?}"), body));
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// Waits for a line of the file that `find` recognises.
async fn line_in(path: &std::path::Path, find: impl Fn(&str) -> Option<String>) -> String {
    for _ in 0..600 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(v) = text.lines().find_map(&find) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not found in {}:\n{}", path.display(), std::fs::read_to_string(path).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_events_errors_metrics_or_webhooks() {
    use voxgate_fake_openai::{Fake, Reply, Route};
    let fake = Fake::start().await;
    fake.set_normal(|n| n.reply = "The capital of France is Paris.".into());
    let (hook_url, hooks) = hook_receiver().await;
    let db = TestDb::chosen().await;
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--providers", "cloud"]).kill_on_drop(true);
    for var in ["RUST_LOG", "ROLE", "BIND", "ALLOWED_ORIGINS", "VOXGATE_KEY", "SENTRY_DSN"] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", &db.url)
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("OPENAI_BASE_URL", &fake.base)
        .env("WEBHOOK_URL", &hook_url)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("WEBHOOK_RETRY_BASE_MS", "50")
        .env("SUPABASE_JWT_SECRET", JWT_SECRET)
        .env("SUPABASE_ADMIN_EMAILS", ADMIN_EMAIL)
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env("RECORDINGS_DIR", dir.path().join("rec"))
        .env("FILES_DIR", dir.path().join("files"))
        .env("LOG_FORMAT", "json")
        // Everything, from every crate, at the most verbose level there is.
        .env("LOG_LEVEL", "trace")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("the binary starts");
    let url = line_in(&out_path, |l| l.strip_prefix("voxgate is listening on ").and_then(|r| r.split_whitespace().next()).map(str::to_owned)).await;
    let code = line_in(&out_path, |l| l.split_once("/login#code=").map(|(_, c)| c.trim().to_string())).await;
    let http = TestServer::http();
    let at = |p: &str| format!("{url}{p}");
    // Every answer the run got, headers and body.
    let mut answers: Vec<String> = Vec::new();
    async fn keep(answers: &mut Vec<String>, res: reqwest::Response) -> (u16, Value) {
        let status = res.status().as_u16();
        let head = format!("{:?}", res.headers());
        let text = res.text().await.unwrap();
        answers.push(format!("{head}\n{text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    // Sign in with the login code; an assistant on the OpenAI-compatible server.
    let (status, created) = keep(&mut answers, http.post(at("/api/auth/login")).json(&json!({"code": code})).send().await.unwrap()).await;
    assert_eq!(status, 201, "{created}");
    let sk = created["secret"].as_str().unwrap().to_string();
    let spec = json!({
        "name": "Cloud secrets",
        "firstMessageMode": "user-speaks-first",
        "firstMessage": null,
        "transcriber": {"provider": "openai", "model": "gpt-4o-transcribe", "language": "en"},
        "model": {"provider": "openai", "model": "gpt-4.1-mini"},
        "voice": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "coral"},
    });
    let (status, a) = keep(&mut answers, http.post(at("/api/assistants")).bearer_auth(&sk).json(&spec).send().await.unwrap()).await;
    assert_eq!(status, 201, "{a}");
    let a = a["id"].as_str().unwrap().to_string();
    let (_, pk) = keep(
        &mut answers,
        http.post(at("/api/keys")).bearer_auth(&sk).json(&json!({"name": "web", "kind": "public", "assistantIds": [a]})).send().await.unwrap(),
    )
    .await;
    let pk = pk["secret"].as_str().unwrap().to_string();
    let jwt = sign(&user_claims(ADMIN_EMAIL), JWT_SECRET);
    let (status, _) = keep(&mut answers, http.get(at("/api/assistants")).bearer_auth(&jwt).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _) = keep(&mut answers, http.get(at("/api/me")).bearer_auth(&pk).send().await.unwrap()).await;
    assert_eq!(status, 200);

    // A call opened with a call token: a typed question answered by the provider,
    // then a turn the provider refuses (echoing the key, as OpenAI does).
    let (status, token) = keep(&mut answers, http.post(at("/api/calls")).bearer_auth(&sk).json(&json!({"assistantId": a})).send().await.unwrap()).await;
    assert_eq!(status, 201);
    let call_token = token["token"].as_str().unwrap().to_string();
    let ws_url = format!("{}{}", url.replacen("http", "ws", 1), token["agentPath"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut events = vec![start_call(&mut ws).await];
    let call_id = events[0]["callId"].as_str().unwrap().to_string();
    ws.send(Message::Text(json!({"type": "text", "text": "What is the capital of France?"}).to_string().into())).await.unwrap();
    loop {
        let e = common::next_event(&mut ws).await.expect("the reply");
        events.push(e.clone());
        if e["type"] == "bot-speech-stopped" {
            break;
        }
    }
    fake.script(Route::Chat, [Reply::EchoKey]);
    ws.send(Message::Text(json!({"type": "text", "text": "And Spain?"}).to_string().into())).await.unwrap();
    loop {
        let e = common::next_event(&mut ws).await.expect("the error");
        events.push(e.clone());
        if e["type"] == "error" {
            break;
        }
    }
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    while let Some(e) = common::next_event(&mut ws).await {
        events.push(e);
    }
    let seen = fake.seen(Route::Chat);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {OPENAI_KEY}").as_str()), "the run used the provider key");
    assert!(events.iter().any(|e| e["type"] == "transcript" && e["role"] == "assistant"), "{events:#?}");

    // The end-of-call report arrives, signed.
    for _ in 0..300 {
        if hooks.lock().unwrap().iter().any(|(_, b)| b.contains("end-of-call-report")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hooks.lock().unwrap().iter().any(|(_, b)| b.contains("end-of-call-report")), "no end-of-call report delivered");

    // What the API shows of it all, and refusals of every kind.
    let (_, list) = keep(&mut answers, http.get(at("/api/webhooks?limit=100")).bearer_auth(&sk).send().await.unwrap()).await;
    for item in list["items"].as_array().unwrap() {
        keep(&mut answers, http.get(at(&format!("/api/webhooks/{}", item["id"].as_str().unwrap()))).bearer_auth(&sk).send().await.unwrap()).await;
    }
    for path in [format!("/api/calls/{call_id}"), "/api/providers".into(), "/api/keys".into(), "/api/openapi.json".into()] {
        let (status, _) = keep(&mut answers, http.get(at(&path)).bearer_auth(&sk).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}");
    }
    let wrong_jwt = sign(&user_claims(ADMIN_EMAIL), "not-the-secret-but-long-enough-0123456789");
    let refusals: Vec<(&str, Option<String>, u16)> = vec![
        ("/api/keys", None, 401),
        ("/api/keys", Some(pk.clone()), 403),
        ("/api/keys", Some(format!("{sk}x")), 401),
        ("/api/keys", Some(wrong_jwt), 401),
        ("/api/keys", Some(call_token.clone()), 401),
        ("/api/keys", Some(METRICS_TOKEN.into()), 401),
        ("/api/keys", Some(JWT_SECRET.into()), 401),
        ("/api/keys", Some(OPENAI_KEY.into()), 401),
        ("/api/keys", Some(WEBHOOK_SECRET.into()), 401),
    ];
    for (path, key, expected) in refusals {
        let mut rb = http.get(at(path));
        if let Some(k) = &key {
            rb = rb.bearer_auth(k);
        }
        let (status, body) = keep(&mut answers, rb.send().await.unwrap()).await;
        assert_eq!(status, expected, "{key:?}: {body}");
    }
    // A used call token, a bad one, a bad query: refusals of the upgrade.
    for q in [format!("token={call_token}"), "token=vg_ct_guess".into(), format!("assistantId={a}&key={sk}x")] {
        match tokio_tungstenite::connect_async(format!("{}/agent?{q}", url.replacen("http", "ws", 1))).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                answers.push(format!("{:?}\n{}", res.headers(), String::from_utf8_lossy(res.body().as_deref().unwrap_or_default())));
            }
            other => panic!("{q}: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    let (status, _) = keep(&mut answers, http.get(at("/api/metrics")).bearer_auth(METRICS_TOKEN).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let metrics = answers.last().unwrap().clone();
    assert!(metrics.contains("voxgate_http_requests_total") && metrics.contains("voxgate_webhook"), "{metrics}");

    // Stop it, and read what it wrote.
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status();
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("it stops").unwrap();
    assert!(exit.success(), "{exit}");
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    // The login link is printed once, by design, for the person who starts the server.
    let login_line = format!("{url}/login#code={code}");
    assert_eq!(stdout.matches(&code).count(), 1, "the login code is printed once, in the link");
    let logs = format!("{}\n{stderr}", stdout.replace(&login_line, "<login link>"));
    assert!(logs.contains("call started") && logs.contains("request"), "the logs are not what this test expects:\n{logs}");
    assert!(logs.lines().count() > 50, "too few log lines to prove anything:\n{logs}");

    // (what, the value, whether the API shows it once by design: a key in the answer
    // that creates it, a call token in the answer that mints it)
    let mut secrets: Vec<(&str, String, bool)> = vec![
        ("OPENAI_API_KEY", OPENAI_KEY.into(), false),
        ("OPENAI_API_KEY's tail", OPENAI_KEY[12..].into(), false),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.into(), false),
        ("SUPABASE_JWT_SECRET", JWT_SECRET.into(), false),
        ("METRICS_TOKEN", METRICS_TOKEN.into(), false),
        ("the private key", sk.clone(), true),
        ("the private key's tail", sk[12..].into(), true),
        ("the public key's tail", pk[12..].into(), true),
        ("the call token's tail", call_token[12..].into(), true),
        ("the user token's signature", jwt.rsplit('.').next().unwrap().into(), false),
        ("the login code", code.clone(), false),
    ];
    if let Some(password) = reqwest::Url::parse(&db.url).ok().and_then(|u| u.password().map(str::to_owned)).filter(|p| p.len() >= 4) {
        secrets.push(("the database password", password, false));
    }
    let webhooks: Vec<String> = hooks.lock().unwrap().iter().map(|(h, b)| format!("{h}\n{b}")).collect();
    let event_text: Vec<String> = events.iter().map(Value::to_string).collect();
    let (showing, other_answers): (Vec<String>, Vec<String>) = answers.into_iter().partition(|a| a.contains("\"secret\":") || a.contains("\"agentPath\":"));
    assert_eq!(showing.len(), 4, "the login, the public key, the call token: {showing:#?}");
    let places: Vec<(&str, Vec<String>, bool)> = vec![
        ("the logs", vec![logs], false),
        ("the call's events", event_text, false),
        ("the API's answers (errors, metrics, webhook bodies)", other_answers, false),
        ("the answers that create a key or a call token", showing, true),
        ("the webhook deliveries", webhooks, false),
    ];
    for (place, texts, shows_by_design) in &places {
        assert!(!texts.is_empty(), "nothing captured from {place}");
        for (name, secret, shown_once) in &secrets {
            if *shows_by_design && *shown_once {
                continue;
            }
            for t in texts {
                if let Some(at) = t.find(secret.as_str()) {
                    panic!("{name} found in {place}:\n{}", &t[at.saturating_sub(300)..]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Uploads stay in their folder. `knowledge.rs`
// (`a_file_name_cannot_choose_where_the_bytes_go`) covers `../x`, `..\..\x`,
// `/etc/passwd`, `a/../../x` and a right-to-left override; these are the rest.

#[tokio::test]
async fn hostile_upload_names_write_nothing_outside_the_files_folder() {
    let root = tempfile::tempdir().unwrap();
    let files = root.path().join("files");
    let dir = files.clone();
    let s = TestServer::start_with(TestDb::chosen().await, move |a| a.files_dir = dir).await;
    let escape = format!("matrix-escaped-{}.txt", std::process::id());
    let deep = format!("{}{escape}", "../".repeat(1000));
    // (how the name goes: `filename="..."` raw bytes, or `filename*=` encoded)
    let names: Vec<(&str, Vec<u8>)> = vec![
        ("filename", format!("..%2F..%2F{escape}").into_bytes()),
        ("filename", format!("....//....//{escape}").into_bytes()),
        ("filename", format!("..\u{2215}..\u{2215}{escape}").into_bytes()),
        ("filename", format!("C:\\Windows\\..\\..\\{escape}").into_bytes()),
        ("filename", format!("{}/{escape}", root.path().display()).into_bytes()),
        ("filename", deep.clone().into_bytes()),
        ("filename", format!("../\0../{escape}").into_bytes()),
        ("filename", b"..".to_vec()),
        ("filename", b".".to_vec()),
        ("filename", b"".to_vec()),
        ("filename", b"\xff\xfe../..".to_vec()),
        ("filename*", format!("UTF-8''..%2F..%2F{escape}").into_bytes()),
        ("filename*", format!("UTF-8''%2E%2E%2F%2E%2E%2F{escape}").into_bytes()),
    ];
    let http = TestServer::http();
    let mut kept = 0;
    for (param, name) in &names {
        let mut body = Vec::new();
        body.extend_from_slice(b"--matrixboundary\r\nContent-Disposition: form-data; name=\"file\"; ");
        body.extend_from_slice(param.as_bytes());
        body.extend_from_slice(if *param == "filename" { b"=\"" } else { b"=" });
        body.extend_from_slice(name);
        body.extend_from_slice(if *param == "filename" { b"\"\r\n" } else { b"\r\n" });
        body.extend_from_slice(b"Content-Type: text/plain\r\n\r\nPlain words about the opening hours of the pool.\r\n--matrixboundary--\r\n");
        let res = http
            .post(s.at("/api/files"))
            .bearer_auth(&s.admin)
            .header("content-type", "multipart/form-data; boundary=matrixboundary")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let what = format!("{param} {:?}", String::from_utf8_lossy(&name[..name.len().min(40)]));
        let text = res.text().await.unwrap();
        assert!((200..500).contains(&status), "{what}: {status} {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        if status == 202 {
            kept += 1;
            let shown = v["name"].as_str().unwrap();
            // A display name only (the bytes go under the id): one harmless component.
            let harmless = !shown.is_empty() && !shown.starts_with('.') && !shown.contains(['/', '\\', '\0']);
            assert!(harmless, "{what}: kept as {shown:?}");
            assert!(files.join(v["id"].as_str().unwrap()).is_file(), "{what}: the bytes are kept under the id");
        } else {
            assert!(v["error"]["code"].is_string(), "{what}: {text}");
        }
    }
    assert!(kept > 0, "every upload was refused: this proves nothing");
    // Only the files folder, holding only files named by their id.
    let top: Vec<String> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(top, ["files"], "an upload wrote beside the files folder");
    for e in std::fs::read_dir(&files).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(voxgate_domain::clock::is_id(&name) && e.file_type().unwrap().is_file(), "{name:?} in the files folder");
    }
    assert!(!std::env::temp_dir().join(&escape).exists() && !std::path::Path::new("/").join(&escape).exists());
}
