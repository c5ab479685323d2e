//! Who is calling. Every `/api` route requires `Authorization: Bearer <token>`
//! except the few listed in [`PUBLIC_ROUTES`]; the middleware here runs before the
//! router matches, so a route added later is protected without anyone remembering to.
//!
//! A token is one of: an API key (`vg_sk_...` private, `vg_pk_...` public), a
//! Supabase Auth user token (a JWT, when `SUPABASE_JWT_SECRET` is set), or the
//! `METRICS_TOKEN` (good for `/api/metrics` only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use voxgate_domain::key::{ApiKey, KeyKind, hash_secret, looks_like_key};
use voxgate_store::Store;

use crate::error::ApiError;
use crate::state::{ApiConfig, ApiState};

/// Routes answered without a token: liveness, readiness, and the exchange of a
/// one-time login code (which is itself the credential).
pub const PUBLIC_ROUTES: &[&str] = &["/api/health", "/api/ready", "/api/auth/login"];

/// The metrics route, which also accepts `METRICS_TOKEN`.
pub const METRICS_ROUTE: &str = "/api/metrics";

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Key(ApiKey),
    /// A dashboard user signed in through Supabase Auth; `admin` when their id is
    /// listed in `SUPABASE_ADMIN_USER_IDS` or their email in `SUPABASE_ADMIN_EMAILS`
    /// (anyone may sign up to a Supabase project).
    User { sub: String, email: Option<String>, admin: bool },
    /// The bearer of `METRICS_TOKEN`.
    Metrics,
}

impl Principal {
    /// Private keys and signed-in users may do everything.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Key(k) => k.kind == KeyKind::Private,
            Principal::User { admin, .. } => *admin,
            Principal::Metrics => false,
        }
    }

    /// The rate-limit bucket of this caller.
    pub fn bucket(&self) -> String {
        match self {
            Principal::Key(k) => format!("key:{}", k.id),
            Principal::User { sub, .. } => format!("user:{sub}"),
            Principal::Metrics => "metrics".into(),
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Principal::Key(k) => Some(&k.id),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct SupabaseClaims {
    sub: String,
    email: Option<String>,
    /// An anonymous sign-in: never an administrator by its email. Missing is false;
    /// `null` (an issuer that does not say) counts as anonymous, so the email alone
    /// makes no administrator; anything but a boolean or null is a bad token.
    #[serde(default, deserialize_with = "null_is_anonymous")]
    is_anonymous: bool,
}

fn null_is_anonymous<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// Checks tokens, with a short cache so a hot key costs no database round trip.
pub struct Auth {
    store: Store,
    ttl: Duration,
    cache: Mutex<HashMap<String, (ApiKey, Instant)>>,
    supabase: Option<(DecodingKey, Validation)>,
    metrics_token: Option<String>,
    /// Lowercased emails of the users who may administer this server.
    admin_emails: Vec<String>,
    /// Ids of the users who may administer this server.
    admin_ids: Vec<String>,
}

const CACHE_MAX: usize = 10_000;

impl Auth {
    pub fn new(store: Store, config: &ApiConfig) -> Auth {
        let supabase = config.supabase_jwt_secret.as_ref().map(|secret| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_audience(&[config.supabase_jwt_audience.as_str()]);
            v.set_required_spec_claims(&["exp", "sub", "aud"]);
            v.leeway = 30;
            (DecodingKey::from_secret(secret.as_bytes()), v)
        });
        Auth {
            store,
            ttl: config.auth_cache_ttl,
            cache: Mutex::new(HashMap::new()),
            supabase,
            metrics_token: config.metrics_token.clone().filter(|t| !t.is_empty()),
            admin_emails: config.supabase_admin_emails.iter().map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty()).collect(),
            admin_ids: config.supabase_admin_user_ids.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect(),
        }
    }

    /// Who `token` belongs to, or a 401 that says why (without echoing the token).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if looks_like_key(token) {
            return self.key(token).await.map(Principal::Key);
        }
        if let Some(expected) = &self.metrics_token
            && constant_time_eq(token.as_bytes(), expected.as_bytes())
        {
            return Ok(Principal::Metrics);
        }
        if token.split('.').count() == 3 {
            let Some((key, validation)) = &self.supabase else {
                return Err(ApiError::unauthorized("user tokens are not accepted here (SUPABASE_JWT_SECRET is not set)"));
            };
            return match jsonwebtoken::decode::<SupabaseClaims>(token, key, validation) {
                Ok(data) => {
                    let c = data.claims;
                    let by_email = !c.is_anonymous && c.email.as_ref().is_some_and(|e| !e.trim().is_empty() && self.admin_emails.contains(&e.trim().to_lowercase()));
                    let admin = by_email || self.admin_ids.contains(&c.sub);
                    Ok(Principal::User { sub: c.sub, email: c.email, admin })
                }
                Err(e) => Err(ApiError::unauthorized(format!("the user token is not valid: {}", jwt_reason(&e)))),
            };
        }
        Err(ApiError::unauthorized("the bearer token is not a voxgate key"))
    }

    async fn key(&self, secret: &str) -> Result<ApiKey, ApiError> {
        let hash = hash_secret(secret);
        if let Some((key, at)) = self.cache.lock().expect("auth cache lock").get(&hash)
            && at.elapsed() < self.ttl
        {
            return Ok(key.clone());
        }
        let key = self.store.key_by_hash(&hash).await?.ok_or_else(|| ApiError::unauthorized("the key is unknown or revoked"))?;
        let mut cache = self.cache.lock().expect("auth cache lock");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// Drops a key from the cache (after it is revoked).
    pub fn forget(&self, key_id: &str) {
        self.cache.lock().expect("auth cache lock").retain(|_, (k, _)| k.id != key_id);
    }
}

fn jwt_reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "it has expired",
        InvalidAudience => "wrong audience",
        InvalidSignature => "bad signature",
        InvalidAlgorithm => "wrong algorithm",
        MissingRequiredClaim(_) => "a required claim is missing",
        _ => "malformed",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The middleware: authenticates every `/api` request but the public routes, and
/// puts the [`Principal`] in the request's extensions.
pub async fn require_auth(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if PUBLIC_ROUTES.contains(&path) {
        return next.run(req).await;
    }
    let is_metrics = path == METRICS_ROUTE;
    let Some(token) = bearer(req.headers()) else {
        return challenge(ApiError::unauthorized("send `Authorization: Bearer <key>`"));
    };
    let principal = match state.auth.authenticate(token).await {
        Ok(p) => p,
        Err(e) => return challenge(e),
    };
    if matches!(principal, Principal::Metrics) && !is_metrics {
        return challenge(ApiError::unauthorized("the metrics token only reads /api/metrics"));
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn challenge(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// Any authenticated caller.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <key>`"))
    }
}

/// A caller with full access (a private key or a signed-in user); others get 403.
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(p) = Caller::from_request_parts(parts, state).await?;
        if p.is_admin() {
            Ok(Admin(p))
        } else {
            Err(ApiError::forbidden("this needs a private key (or a user listed in SUPABASE_ADMIN_USER_IDS or SUPABASE_ADMIN_EMAILS)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer   abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
