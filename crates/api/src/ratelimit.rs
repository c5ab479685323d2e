//! Rate limits per group of routes, per caller (key or user) and per client address,
//! answered with 429 and `Retry-After`. Each limit is a GCRA bucket from `governor`:
//! `N/min` allows a burst of N, refilled evenly over the minute.
//!
//! The address limit runs before authentication (so guessing keys costs the guesser,
//! not the database); the caller limit runs after it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use voxgate_domain::ErrorCode;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::ApiState;

/// A group of routes sharing limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Every `/api` route but uploads.
    Api,
    /// File uploads: the strictest.
    Uploads,
    /// New calls at `/agent`.
    Calls,
}

impl Group {
    fn label(self) -> &'static str {
        match self {
            Group::Api => "api",
            Group::Uploads => "uploads",
            Group::Calls => "calls",
        }
    }

    fn of(method: &Method, path: &str) -> Group {
        if is_upload(method, path) {
            Group::Uploads
        } else {
            Group::Api
        }
    }
}

/// Whether a request is a file upload (its own rate limit and body limit).
pub fn is_upload(method: &Method, path: &str) -> bool {
    *method == Method::POST && (path == "/api/files" || path.starts_with("/api/files/"))
}

/// One limit: `burst` requests, refilled evenly over `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `off`, or `N/s`, `N/sec`, `N/min`, `N/h`.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(None);
        }
        let (n, unit) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected N/s, N/min, N/h or off"))?;
        let burst: u32 = n.trim().parse().map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            u => return Err(format!("{s:?}: unknown unit {u:?} (use s, min or h)")),
        };
        if burst == 0 {
            return Ok(None);
        }
        Ok(Some(Rate { burst, per }))
    }
}

/// The limits of every group, per caller and per address. `None` turns one off.
#[derive(Debug, Clone)]
pub struct Limits {
    pub api: Option<Rate>,
    pub api_ip: Option<Rate>,
    pub uploads: Option<Rate>,
    pub uploads_ip: Option<Rate>,
    pub calls: Option<Rate>,
    pub calls_ip: Option<Rate>,
}

impl Default for Limits {
    fn default() -> Self {
        let r = |burst, secs| Some(Rate { burst, per: Duration::from_secs(secs) });
        Limits {
            api: r(1200, 60),
            api_ip: r(2400, 60),
            uploads: r(20, 60),
            uploads_ip: r(30, 60),
            calls: r(120, 60),
            calls_ip: r(240, 60),
        }
    }
}

type Limiter = DefaultKeyedRateLimiter<String>;

fn limiter(rate: Option<Rate>) -> Option<Limiter> {
    let rate = rate?;
    let burst = NonZeroU32::new(rate.burst)?;
    let quota = Quota::with_period(rate.per / rate.burst)?.allow_burst(burst);
    Some(Limiter::keyed(quota))
}

/// Every limiter of the process.
pub struct RateLimiter {
    // [api, uploads, calls], per caller and per address.
    by_caller: [Option<Limiter>; 3],
    by_ip: [Option<Limiter>; 3],
    checks: AtomicU64,
}

impl RateLimiter {
    pub fn new(l: &Limits) -> RateLimiter {
        RateLimiter {
            by_caller: [limiter(l.api), limiter(l.uploads), limiter(l.calls)],
            by_ip: [limiter(l.api_ip), limiter(l.uploads_ip), limiter(l.calls_ip)],
            checks: AtomicU64::new(0),
        }
    }

    fn idx(g: Group) -> usize {
        match g {
            Group::Api => 0,
            Group::Uploads => 1,
            Group::Calls => 2,
        }
    }

    /// Counts one request by `who` (a caller bucket or an address) in `group`;
    /// `Err(seconds)` when it is over the limit.
    fn check(&self, group: Group, by_ip: bool, who: &str) -> Result<(), u64> {
        let set = if by_ip { &self.by_ip } else { &self.by_caller };
        let Some(l) = &set[Self::idx(group)] else { return Ok(()) };
        // Forget idle buckets now and then, so the maps do not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 8192 == 8191 {
            for l in self.by_ip.iter().chain(&self.by_caller).flatten() {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        l.check_key(&who.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("voxgate_rate_limited_total", "group" => group.label(), "scope" => if by_ip { "ip" } else { "caller" })
                .increment(1);
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// The address check for `group`, as an API error.
    pub fn check_ip(&self, group: Group, ip: &str) -> Result<(), ApiError> {
        self.check(group, true, ip).map_err(|s| limited(s, "this address"))
    }

    /// The caller check for `group`, as an API error.
    pub fn check_caller(&self, group: Group, principal: &Principal) -> Result<(), ApiError> {
        self.check(group, false, &principal.bucket()).map_err(|s| limited(s, "this key"))
    }
}

fn limited(secs: u64, whom: &str) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, format!("too many requests from {whom}; retry after {secs} s")).with_retry_after(secs)
}

/// The client's address: the socket peer, or with `trust_proxy` the last address
/// in `X-Forwarded-For` (the one our proxy appended; earlier ones are client-made).
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trust_proxy: bool) -> String {
    if trust_proxy
        // The last line: a proxy that adds its own header line rather than appending
        // to the client's must not let the client's value through.
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
    {
        return ip.to_string();
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// Middleware: the per-address limit, before authentication.
pub async fn limit_by_ip(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = client_ip(req.headers(), peer, state.config.trust_proxy);
    let group = Group::of(req.method(), req.uri().path());
    if let Err(e) = state.limiter.check_ip(group, &ip) {
        return e.into_response();
    }
    next.run(req).await
}

/// Middleware: the per-caller limit, after authentication.
pub async fn limit_by_caller(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(p) = req.extensions().get::<Principal>() {
        let group = Group::of(req.method(), req.uri().path());
        if let Err(e) = state.limiter.check_caller(group, p) {
            return e.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("10/min").unwrap(), Some(Rate { burst: 10, per: Duration::from_secs(60) }));
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert_eq!(Rate::parse("0").unwrap(), None);
        assert!(Rate::parse("ten/min").is_err());
        assert!(Rate::parse("10/fortnight").is_err());
        assert!(Rate::parse("10").is_err());
    }

    #[test]
    fn over_the_limit_is_refused_with_a_wait_and_others_are_not() {
        let l = RateLimiter::new(&Limits { api: Some(Rate { burst: 2, per: Duration::from_secs(60) }), ..Default::default() });
        assert!(l.check(Group::Api, false, "a").is_ok());
        assert!(l.check(Group::Api, false, "a").is_ok());
        let wait = l.check(Group::Api, false, "a").unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(l.check(Group::Api, false, "b").is_ok());
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.9".parse().unwrap());
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        assert_eq!(client_ip(&h, peer, false), "127.0.0.1");
        assert_eq!(client_ip(&h, peer, true), "10.0.0.9");
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&h, peer, true), "127.0.0.1");
    }
}
