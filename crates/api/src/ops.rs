//! Operations routes: liveness, readiness, the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use voxgate_domain::ErrorCode;

use crate::error::{ApiError, ErrorBody};
use crate::state::ApiState;

/// The answer of health and readiness.
#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/api/health", tag = "operations", responses((status = 200, body = Status)))]
pub async fn health() -> Json<Status> {
    Json(Status { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// Readiness: the database answers and the process is not draining.
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "operations",
    responses((status = 200, body = Status), (status = 503, body = ErrorBody, description = "draining or database unreachable"))
)]
pub async fn ready(State(state): State<ApiState>) -> Result<Json<Status>, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::new(ErrorCode::Unavailable, "this instance is draining").with_retry_after(5));
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Status { status: "ready", version: env!("CARGO_PKG_VERSION") })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            Err(ApiError::new(ErrorCode::Unavailable, "the database is unreachable").with_retry_after(5))
        }
        Err(_) => Err(ApiError::new(ErrorCode::Unavailable, "the database did not answer in time").with_retry_after(5)),
    }
}
