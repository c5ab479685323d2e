//! What this server's calls can run on: the local models, and the
//! OpenAI-compatible server from the environment. Whether its key is set, never
//! the key.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::ApiState;

/// The providers, as `voxgate serve` set them up.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    /// `auto` (each assistant's choice, local models as the fallback), `local`,
    /// `cloud` or `scripted`.
    pub mode: String,
    /// Whether the local offline models serve calls on this server.
    pub local: bool,
    pub openai: OpenAiInfo,
}

/// The OpenAI-compatible server assistants with an `openai` stage use.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiInfo {
    /// `OPENAI_BASE_URL` (credentials and query removed), or OpenAI's API.
    pub base_url: String,
    /// Whether `OPENAI_API_KEY` is set. The key itself is never shown.
    pub key_set: bool,
    /// Why the provider cannot be used, when it cannot (e.g. a malformed base URL).
    pub error: Option<String>,
}

/// Describes the providers calls run on (private keys and administrators).
#[utoipa::path(get, path = "/api/providers", tag = "operations", responses((status = 200, body = ProviderInfo)), security(("bearer" = [])))]
pub async fn providers(_: Admin, State(state): State<ApiState>) -> Result<Json<ProviderInfo>, ApiError> {
    Ok(Json(state.config.providers.clone()))
}
