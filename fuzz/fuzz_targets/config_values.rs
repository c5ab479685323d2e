//! The server's settings that voxgate parses itself (`crates/server/src/config.rs`
//! hands these strings to `voxgate_api`): the `RATE_LIMIT_*` values (`Rate::parse`,
//! then the limiter built from them and used), `ALLOWED_ORIGINS` (`Origins::parse`,
//! the CORS layer built from it, origin checks), and the per-request values read
//! with them: `X-Forwarded-For` under `TRUST_PROXY` (`client_ip`) and the `Origin`
//! of an `/agent` upgrade (`same_origin`). Numbers, durations, paths and booleans
//! are parsed by clap's own typed parsers.
//!
//! Input: lines; the first is a rate, the second an origin list, the third a
//! forwarded-for header, the fourth an origin, the fifth a host.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use voxgate_api::cors::{Origins, same_origin};
use voxgate_api::ratelimit::{Group, Limits, Rate, RateLimiter, client_ip};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("");
    let (rate, origins, forwarded, origin, host) = (next(), next(), next(), next(), next());

    if let Ok(rate) = Rate::parse(rate) {
        if let Some(r) = rate {
            assert!(r.burst > 0 && !r.per.is_zero());
        }
        let limiter = RateLimiter::new(&Limits { api: rate, api_ip: rate, uploads: rate, uploads_ip: rate, calls: rate, calls_ip: rate });
        for _ in 0..3 {
            let _ = limiter.check_ip(Group::Uploads, "127.0.0.1");
        }
    }

    if let Ok(o) = Origins::parse(origins) {
        let _ = o.layer();
        let _ = (o.allows(origin), o.allows(""));
        for listed in &o.list {
            assert!(o.allows(listed));
        }
    }

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(forwarded) {
        headers.append("x-forwarded-for", v);
    }
    let peer = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 5000)));
    for trust in [false, true] {
        let ip = client_ip(&headers, peer, trust);
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip:?}");
    }
    let _ = same_origin(origin, Some(host));
});
