//! The one error shape, `{"error":{"code","message"}}`, and the edges that produce it:
//! our handlers ([`ApiError`]), the JSON body extractor ([`ApiJson`]), and a
//! middleware that rewrites the bare statuses answered by layers below us (a body
//! limit, a timeout, an unknown route or method) into the same shape.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use voxgate_domain::{ErrorCode, FieldError};
use voxgate_store::StoreError;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub fields: Vec<FieldError>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `validation_failed`.
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// For `validation_failed`: each invalid field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), fields: Vec::new(), retry_after: None }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn validation(fields: Vec<FieldError>) -> ApiError {
        let message = match fields.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError { code: ErrorCode::ValidationFailed, message, fields, retry_after: None }
    }

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs.max(1));
        self
    }

    fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal error; the request id in the x-request-id header identifies it in the logs")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(_) => ApiError::new(ErrorCode::Conflict, "the resource already exists"),
            StoreError::Unavailable(msg) => {
                tracing::error!(error = %msg, "database unavailable");
                ApiError::new(ErrorCode::Unavailable, "the database is unavailable; try again").with_retry_after(1)
            }
            other => {
                // Logged here, with the request's span (and so its id); never echoed.
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error: ErrorDetail { code: self.code.as_str(), message: self.message, fields: self.fields } };
        let mut res = (status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res.extensions_mut().insert(Normalized);
        res
    }
}

/// Marks a response whose body already has our error shape.
#[derive(Clone, Copy)]
struct Normalized;

/// JSON body extractor whose every rejection is an [`ApiError`]: 415 without a JSON
/// content type, 413 past the body limit, 400 for bad syntax, 422 (with the field's
/// path) for wrong types and unknown fields, and for a body that is not a JSON
/// object (every endpoint takes one; serde would otherwise accept a struct written
/// as an array of its fields, such as `["ci","private"]`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rej) => return Err(json_rejection(rej)),
        };
        if !value.is_object() {
            return Err(ApiError::validation(vec![FieldError::new("", "the body must be a JSON object")]));
        }
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        match T::deserialize(de) {
            Ok(v) => Ok(ApiJson(v)),
            Err(e) => {
                let path = track.path().to_string();
                let field = if path == "." { String::new() } else { path };
                let message = e.to_string();
                Err(ApiError::validation(vec![FieldError::new(field, message)]))
            }
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "expected a body with `Content-Type: application/json`")
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {}", source_text(&e))),
        JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::ValidationFailed, source_text(&e)),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is larger than this endpoint accepts")
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s = inner.to_string();
        src = inner.source();
    }
    s
}

/// Path parameters, with a JSON 400 instead of a plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters, with a JSON 400 that names the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No parameter of this API holds a NUL byte, and PostgreSQL refuses one in
        // text (it would come back as a 500 from the filter it reached).
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError::bad_request("a query parameter holds a NUL byte (%00)"));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiQuery(p.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Rewrites any error answer that is not yet in our shape (from axum's router or a
/// tower layer: 404, 405, 408, 413, 500 from a caught panic) into it, keeping its
/// status and headers such as `Allow` and `Retry-After`.
pub async fn normalize_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || res.extensions().get::<Normalized>().is_some() {
        return res;
    }
    let code = ErrorCode::from_status(status.as_u16());
    let message = match code {
        ErrorCode::NotFound => "no such route".to_string(),
        ErrorCode::MethodNotAllowed => "this route does not accept that method".to_string(),
        ErrorCode::RequestTimeout => "the request took too long".to_string(),
        ErrorCode::PayloadTooLarge => "the body is larger than this endpoint accepts".to_string(),
        ErrorCode::Internal => ApiError::internal().message,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let (mut parts, _) = res.into_parts();
    let fresh = ApiError { code, message, fields: Vec::new(), retry_after: None }.into_response();
    let (fresh_parts, body): (_, Body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, fresh_parts.headers[header::CONTENT_TYPE].clone());
    parts.extensions.insert(Normalized);
    Response::from_parts(parts, body)
}
