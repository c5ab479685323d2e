//! The `voxgate` binary's commands, run for real against a SQLite file that a test
//! server shares: `keys create|list|revoke`, `migrate`, `--help`.

mod common;

use std::process::{Command, Output};

use common::TestServer;
use serde_json::{Value, json};
use voxgate_testkit::TestDb;

/// Runs `voxgate args...` on the database at `url`, with none of the caller's
/// voxgate settings leaking in.
fn voxgate(url: Option<&str>, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    cmd.args(args);
    for var in ["DATABASE_URL", "SUPABASE_DB_URL", "RUST_LOG", "LOG_FORMAT", "LOG_LEVEL", "BIND", "ALLOWED_ORIGINS", "ROLE"] {
        cmd.env_remove(var);
    }
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("the voxgate binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let o = voxgate(Some(url), args, &[]);
    assert!(o.status.success(), "voxgate {args:?} failed ({}): {}", o.status, stderr(&o));
    stdout(&o)
}

/// The key on the last line of `keys create`'s output, checked to be alone there.
fn key_of(out: &str) -> String {
    let last = out.trim_end_matches('\n').lines().last().expect("some output");
    assert!(voxgate_domain::key::looks_like_key(last), "the last line is not a key alone: {last:?}\n{out}");
    last.to_string()
}

async fn status(s: &TestServer, path: &str, key: &str) -> u16 {
    TestServer::http().get(s.at(path)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn keys_create_prints_a_working_key_on_the_last_line() {
    let db = TestDb::chosen().await;
    let url = db.url.clone();
    // Before any server ran: the command migrates the empty database itself.
    let out = ok(&url, &["keys", "create", "--name", "ci"]);
    let key = key_of(&out);
    assert!(key.starts_with("vg_sk_"), "{out}");
    assert_eq!(out.matches(&key).count(), 1, "{out}");

    let s = TestServer::start_with(db, |_| {}).await;
    assert_eq!(status(&s, "/api/assistants", &key).await, 200);
    let me: Value = TestServer::http().get(s.at("/api/me")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["kind"], "private");
    assert_eq!(me["name"], "ci");
    // A key made while the server runs works at once, too.
    let out = ok(&url, &["keys", "create", "--name", "second"]);
    let second = key_of(&out);
    assert_ne!(second, key);
    assert_eq!(status(&s, "/api/keys", &second).await, 200);
    // Even with JSON logs at the most verbose level, the key is the last line.
    let o = voxgate(Some(&url), &["keys", "create", "--name", "json-logs"], &[("LOG_FORMAT", "json"), ("RUST_LOG", "trace")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let third = key_of(&stdout(&o));
    assert_eq!(status(&s, "/api/me", &third).await, 200);
}

#[tokio::test]
async fn public_keys_need_assistants() {
    let db = TestDb::chosen().await;
    let url = db.url.clone();
    let s = TestServer::start_with(db, |_| {}).await;
    let a = s.assistant("web").await;
    let b = s.assistant("other").await;

    let out = ok(&url, &["keys", "create", "--name", "site", "--public", "--assistants", &a]);
    let key = key_of(&out);
    assert!(key.starts_with("vg_pk_"), "{out}");
    assert_eq!(status(&s, &format!("/api/assistants/{a}"), &key).await, 403, "public keys read nothing");
    assert_eq!(status(&s, "/api/assistants", &key).await, 403);
    let me: Value = TestServer::http().get(s.at("/api/me")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["assistantIds"], json!([a]));
    // Several, comma-separated.
    let out = ok(&url, &["keys", "create", "--name", "both", "--public", "--assistants", &format!("{a},{b}")]);
    let both = key_of(&out);
    let me: Value = TestServer::http().get(s.at("/api/me")).bearer_auth(&both).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["assistantIds"], json!([a, b]));

    let keys_before = s.store.list_keys().await.unwrap().len();
    let refused: [(&[&str], &str); 4] = [
        (&["keys", "create", "--name", "site", "--public"], "assistant"),
        (&["keys", "create", "--name", "site", "--public", "--assistants", "not-an-id"], "not an id"),
        (&["keys", "create", "--name", "site", "--public", "--assistants", "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"], "no assistant"),
        (&["keys", "create", "--name", "priv", "--assistants", &a], "only public keys"),
    ];
    for (args, says) in refused {
        let o = voxgate(Some(&url), args, &[]);
        assert!(!o.status.success(), "voxgate {args:?} succeeded: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains(says), "voxgate {args:?}: stderr does not say {says:?}: {err}");
        assert!(!stdout(&o).contains("vg_"), "voxgate {args:?} printed a key: {}", stdout(&o));
    }
    let o = voxgate(Some(&url), &["keys", "create", "--name", "   "], &[]);
    assert!(!o.status.success() && stderr(&o).contains("name"), "{}", stderr(&o));
    assert_eq!(s.store.list_keys().await.unwrap().len(), keys_before, "a refused command stored a key");
}

#[tokio::test]
async fn keys_list_shows_keys_but_never_secrets() {
    let db = TestDb::chosen().await;
    let url = db.url.clone();
    let s = TestServer::start_with(db, |_| {}).await;
    let key = key_of(&ok(&url, &["keys", "create", "--name", "listed-ci"]));
    let record = s.store.key_by_hash(&voxgate_domain::key::hash_secret(&key)).await.unwrap().expect("stored");

    let out = ok(&url, &["keys", "list"]);
    let line = out.lines().find(|l| l.contains(&record.id)).unwrap_or_else(|| panic!("{} not listed:\n{out}", record.id));
    assert!(line.contains("listed-ci") && line.contains("private") && line.contains("live"), "{line}");
    assert!(line.contains(&record.prefix), "{line}");
    assert!(out.contains("test admin"), "the server's key is listed too:\n{out}");
    for secret in [&key, &s.admin] {
        assert!(!out.contains(secret.as_str()), "a secret in `keys list`:\n{out}");
        assert!(!out.contains(&secret[12..]), "the secret part of a key in `keys list`:\n{out}");
        assert!(!out.contains(&voxgate_domain::key::hash_secret(secret)), "a hash in `keys list`:\n{out}");
    }
}

#[tokio::test]
async fn keys_revoke_makes_the_key_401() {
    let db = TestDb::chosen().await;
    let url = db.url.clone();
    // A short auth cache: the CLI is another process, so the server learns of the
    // revocation when its cached entry expires.
    let s = TestServer::start_with(db, |a| a.auth_cache_ttl = 1).await;
    let key = key_of(&ok(&url, &["keys", "create", "--name", "doomed"]));
    let id = s.store.key_by_hash(&voxgate_domain::key::hash_secret(&key)).await.unwrap().unwrap().id;
    assert_eq!(status(&s, "/api/me", &key).await, 200);

    let out = ok(&url, &["keys", "revoke", &id]);
    assert!(out.contains(&id), "{out}");
    let mut last = 0;
    for _ in 0..40 {
        last = status(&s, "/api/me", &key).await;
        if last == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last, 401, "the revoked key still works");
    let out = ok(&url, &["keys", "list"]);
    let line = out.lines().find(|l| l.contains(&id)).unwrap();
    assert!(line.contains("revoked"), "{line}");
    // The admin key is untouched, and revoking a key that does not exist fails.
    assert_eq!(status(&s, "/api/me", &s.admin).await, 200);
    let o = voxgate(Some(&url), &["keys", "revoke", "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"], &[]);
    assert!(!o.status.success() && stderr(&o).contains("no key"), "{}", stderr(&o));
    let o = voxgate(Some(&url), &["keys", "revoke", "' OR 1=1 --"], &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(status(&s, "/api/me", &s.admin).await, 200, "an injected id revoked other keys");
}

#[tokio::test]
async fn migrate_twice_exits_zero() {
    let db = TestDb::chosen().await;
    let first = ok(&db.url, &["migrate"]);
    let second = ok(&db.url, &["migrate"]);
    assert!(first.contains("migrations applied"), "{first}");
    assert_eq!(first, second, "a second migrate changes nothing");
    // And a server starts on the result.
    let s = TestServer::start_with(db, |_| {}).await;
    assert_eq!(status(&s, "/api/ready", "").await, 200);
}

#[test]
fn a_bad_database_url_fails_cleanly() {
    for url in ["nosuchdb://x", "sqlite:///nonexistent-dir-voxgate/deeper/v.db"] {
        let o = voxgate(Some(url), &["migrate"], &[]);
        assert!(!o.status.success(), "{url}: {}", stdout(&o));
        assert!(stderr(&o).contains("error"), "{url}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{url}: {}", stderr(&o));
    }
}

#[test]
fn help_mentions_the_main_settings() {
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let o = voxgate(None, args, &[]);
        assert!(o.status.success(), "voxgate {args:?}: {}", stderr(&o));
        let help = stdout(&o);
        for var in ["DATABASE_URL", "ALLOWED_ORIGINS", "BIND"] {
            assert!(help.contains(var), "`voxgate {}` does not mention {var}:\n{help}", args.join(" "));
        }
    }
    let o = voxgate(None, &["keys", "--help"], &[]);
    assert!(o.status.success() && stdout(&o).contains("DATABASE_URL"), "{}", stdout(&o));
    let o = voxgate(None, &["no-such-command"], &[]);
    assert!(!o.status.success());
}
