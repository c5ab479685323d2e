//! Which browser origins may use the API and open calls: `ALLOWED_ORIGINS`, applied
//! to CORS on `/api` and to the `Origin` check of the `/agent` upgrade alike.

use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use tower::layer::util::Stack;
use tower::util::MapResponseLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer, then the step that strips CORS headers from unallowed answers.
pub type OriginsLayer = Stack<CorsLayer, MapResponseLayer<fn(Response) -> Response>>;

/// A parsed `ALLOWED_ORIGINS`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origins {
    /// Exact origins (`scheme://host[:port]`), lowercased.
    pub list: Vec<String>,
    /// `*`: every origin.
    pub any: bool,
}

impl Origins {
    /// Parses a comma-separated list. Each entry must be an origin, with no path.
    pub fn parse(s: &str) -> Result<Origins, String> {
        let mut o = Origins::default();
        for raw in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            if raw == "*" {
                o.any = true;
                continue;
            }
            let lower = raw.trim_end_matches('/').to_ascii_lowercase();
            let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
                && lower.split("://").nth(1).is_some_and(|h| !h.is_empty() && !h.contains('/') && !h.contains('@'));
            if !ok {
                return Err(format!("{raw:?} is not an origin such as https://app.example.com"));
            }
            o.list.push(lower);
        }
        Ok(o)
    }

    /// True when `origin` is listed (or `*` is).
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.list.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The CORS layer for `/api`: headers only for listed origins, preflight included.
    /// tower-http sends the allowed methods, headers and max-age on every preflight,
    /// whatever the origin; the outer step strips them when the origin is not allowed,
    /// so a stranger learns nothing.
    pub fn layer(&self) -> OriginsLayer {
        Stack::new(self.cors_layer(), MapResponseLayer::new(strip_unless_allowed as fn(Response) -> Response))
    }

    fn cors_layer(&self) -> CorsLayer {
        let allow = if self.any {
            AllowOrigin::any()
        } else {
            let list: Vec<HeaderValue> = self.list.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
            AllowOrigin::list(list)
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("x-request-id")])
            .expose_headers([header::RETRY_AFTER, header::HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(600))
    }
}

/// Drops every `access-control-*` header from an answer without
/// `access-control-allow-origin` (a disallowed origin, or no CORS at all).
fn strip_unless_allowed(mut res: Response) -> Response {
    let h = res.headers_mut();
    if !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let names: Vec<_> = h.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
        for name in names {
            h.remove(name);
        }
    }
    res
}

/// True when the `Origin` header names the same site as the request's `Host`.
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .split_once("://")
        .is_some_and(|(scheme, h)| (scheme == "http" || scheme == "https") && h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let o = Origins::parse("https://App.example.com/, http://localhost:5175").unwrap();
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("http://localhost:5175"));
        assert!(!o.allows("https://evil.example.com"));
        assert!(!o.allows("https://app.example.com.evil.io"));
        assert!(Origins::parse("https://a.com/path").is_err());
        assert!(Origins::parse("javascript:alert(1)").is_err());
        assert!(Origins::parse("*").unwrap().allows("https://x.y"));
        assert!(same_origin("http://127.0.0.1:3010", Some("127.0.0.1:3010")));
        assert!(!same_origin("http://127.0.0.1:3011", Some("127.0.0.1:3010")));
        assert!(!same_origin("null", Some("127.0.0.1:3010")));
    }
}
