//! Signing and verifying, the event body, the back-off schedule.

use std::time::Duration;

use serde_json::json;
use voxgate_webhooks::{Event, Options, VerifyError, sign, verify};

const SECRET: &[u8] = b"whsec_sign_test";
const NOW: i64 = 1_733_000_000;

#[test]
fn round_trip_and_tampering() {
    let body = br#"{"id":"e1","message":{"type":"status-update"}}"#;
    let h = sign(SECRET, NOW, body);
    assert!(h.starts_with(&format!("t={NOW},v1=")), "{h}");
    assert_eq!(h.len(), format!("t={NOW},v1=").len() + 64);
    assert_eq!(verify(SECRET, Some(&h), body, NOW, 300), Ok(()));
    assert_eq!(verify(SECRET, Some(&h), body, NOW + 300, 300), Ok(()));
    assert_eq!(verify(SECRET, Some(&h), body, NOW - 300, 300), Ok(()), "a clock a little behind");

    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert_eq!(verify(SECRET, Some(&h), &tampered, NOW, 300), Err(VerifyError::Mismatch));
    assert_eq!(verify(SECRET, Some(&h), &body[..body.len() - 1], NOW, 300), Err(VerifyError::Mismatch));
    assert_eq!(verify(b"another secret", Some(&h), body, NOW, 300), Err(VerifyError::Mismatch));
    // The timestamp is signed: moving it breaks the signature.
    let moved = h.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
    assert_eq!(verify(SECRET, Some(&moved), body, NOW, 300), Err(VerifyError::Mismatch));
    // Another time signs differently.
    assert_ne!(sign(SECRET, NOW + 1, body), h);
}

#[test]
fn old_and_future_timestamps_are_refused() {
    let body = b"{}";
    let old = sign(SECRET, NOW - 301, body);
    assert!(matches!(verify(SECRET, Some(&old), body, NOW, 300), Err(VerifyError::Expired { age_secs: 301, .. })));
    let future = sign(SECRET, NOW + 3600, body);
    assert!(matches!(verify(SECRET, Some(&future), body, NOW, 300), Err(VerifyError::Expired { .. })));
    let zero = sign(SECRET, 0, body);
    assert!(matches!(verify(SECRET, Some(&zero), body, NOW, 300), Err(VerifyError::Expired { .. })));
}

#[test]
fn rotation_and_unknown_keys() {
    let body = b"{\"a\":1}";
    let good = sign(SECRET, NOW, body);
    let v1 = good.split_once(",v1=").unwrap().1;
    let both = format!("t={NOW},v1={},v0=zzz, v1={v1}", "00".repeat(32));
    assert_eq!(verify(SECRET, Some(&both), body, NOW, 300), Ok(()));
}

#[test]
fn hostile_headers_never_panic_and_never_pass() {
    let body = b"{}";
    let good = sign(SECRET, NOW, body);
    let v1 = good.split_once(",v1=").unwrap().1.to_string();
    let long = format!("t={NOW},v1={}", "a".repeat(5000));
    let many = format!("t={NOW},{}", "x=1,".repeat(300));
    let cases: Vec<String> = vec![
        "".into(),
        ",".into(),
        "=".into(),
        "t=".into(),
        "v1=".into(),
        "t=,v1=".into(),
        format!("t={NOW}"),
        format!("v1={v1}"),
        format!("t={NOW},v1="),
        format!("t={NOW},v1={}", &v1[..63]),
        format!("t={NOW},v1={}", &v1[..62]),
        format!("t={NOW},v1={v1}00"),
        format!("t={NOW},v1={}", v1.to_uppercase().replace(char::is_numeric, "G")),
        format!("t=-{NOW},v1={v1}"),
        format!("t=+{NOW},v1={v1}"),
        format!("t={NOW}.5,v1={v1}"),
        format!("t=99999999999999999999999,v1={v1}"),
        format!("t=9223372036854775807,v1={v1}"),
        format!("t={NOW},t={NOW},v1={v1}"),
        format!("t = {NOW} , v1 = {v1}"),
        format!("t={NOW};v1={v1}"),
        format!("t={NOW},v1={v1}\0"),
        format!("t={NOW},v1=é{}", &v1[2..]),
        "t=\u{202E}1733000000,v1=00".into(),
        "\u{1F600}".repeat(100),
        long,
        many,
    ];
    for h in &cases {
        let r = verify(SECRET, Some(h), body, NOW, 300);
        assert!(r.is_err(), "{h:?} passed");
        // Every refusal says what to do in words.
        assert!(!r.unwrap_err().to_string().is_empty());
    }
    assert_eq!(verify(SECRET, None, body, NOW, 300), Err(VerifyError::Missing));
    // Whitespace around entries is tolerated (some proxies fold headers).
    assert_eq!(verify(SECRET, Some(&good.replace(',', ", ")), body, NOW, 300), Ok(()));
}

#[test]
fn event_body_is_vapi_style() {
    let payload = json!({
        "type": "overridden",
        "timestamp": "overridden",
        "status": "in-progress",
        "call": { "status": "in-progress" },
    });
    let e = Event::new("status-update", Some("call-1"), Some("asst-1"), "https://example.test/h", payload);
    let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
    assert_eq!(v["id"], e.id.as_str());
    assert_eq!(e.id.len(), 36);
    assert_eq!(v["createdAt"], voxgate_domain::clock::ms_to_rfc3339(e.created_at).as_str());
    assert_eq!(v["message"]["type"], "status-update");
    assert_eq!(v["message"]["timestamp"], e.created_at);
    assert_eq!(v["message"]["status"], "in-progress");
    assert_eq!(v["message"]["call"], json!({ "id": "call-1", "status": "in-progress" }));
    assert_eq!(v["message"]["assistant"], json!({ "id": "asst-1" }));
    assert_eq!((e.kind.as_str(), e.call_id.as_deref(), e.url.as_str()), ("status-update", Some("call-1"), "https://example.test/h"));

    let bare = Event::new("transcript", None, None, "http://h/", json!(["not", "an", "object"]));
    let v: serde_json::Value = serde_json::from_str(&bare.body).unwrap();
    assert_eq!(v["message"]["data"], json!(["not", "an", "object"]));
    assert!(v["message"].get("call").is_none());
    assert_ne!(bare.id, e.id);
    assert!(bare.id > e.id, "ids sort by creation time");
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let o = Options { backoff_base: Duration::from_millis(100), backoff_max: Duration::from_secs(1), ..Options::default() };
    for _ in 0..50 {
        for (failures, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000), (u32::MAX, 1000)] {
            let d = o.backoff(failures).as_millis() as u64;
            assert!((full / 2..=full).contains(&d), "after {failures} failures: {d} ms");
        }
    }
    let spread: std::collections::HashSet<_> = (0..50).map(|_| o.backoff(3)).collect();
    assert!(spread.len() > 10, "jittered");
}
