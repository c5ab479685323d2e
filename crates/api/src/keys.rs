//! `/api/keys` (private and public API keys) and `/api/auth/*` (the one-time login
//! code, and who am I).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use voxgate_domain::ErrorCode;
use voxgate_domain::clock::is_id;
use voxgate_domain::key::{ApiKey, KeyKind, hash_secret, mint};

use crate::assistants::not_found_as;
use crate::auth::{Admin, Caller, Principal};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::ApiState;

/// A new key's settings.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    /// 1 to 100 printable characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub kind: KeyKind,
    /// For public keys: the assistants it may open calls to (1 to 100 ids of
    /// existing assistants). Private keys list none.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub assistant_ids: Vec<String>,
}

/// A key just created: its record, and its secret, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Checks a new key's fields; shared with `voxgate keys create`.
pub fn check_new_key(k: &NewKey) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    if k.name.trim().is_empty() || k.name.chars().count() > 100 || k.name.chars().any(char::is_control) {
        errs.push(voxgate_domain::FieldError::new("name", "must be 1 to 100 printable characters"));
    }
    match k.kind {
        KeyKind::Public if k.assistant_ids.is_empty() => {
            errs.push(voxgate_domain::FieldError::new("assistantIds", "a public key must list at least one assistant"))
        }
        KeyKind::Private if !k.assistant_ids.is_empty() => {
            errs.push(voxgate_domain::FieldError::new("assistantIds", "only public keys list assistants"))
        }
        _ => {}
    }
    if k.assistant_ids.len() > 100 {
        errs.push(voxgate_domain::FieldError::new("assistantIds", "at most 100 assistants"));
    }
    for (n, id) in k.assistant_ids.iter().enumerate() {
        if !is_id(id) {
            errs.push(voxgate_domain::FieldError::new(format!("assistantIds[{n}]"), "is not an id"));
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::validation(errs)) }
}

/// Lists keys (never their secrets).
#[utoipa::path(get, path = "/api/keys", tag = "keys", responses((status = 200, body = Vec<ApiKey>)), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, _: Admin) -> Result<Json<Vec<ApiKey>>, ApiError> {
    Ok(Json(s.store.list_keys().await?))
}

/// Creates a key and shows its secret once.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(State(s): State<ApiState>, _: Admin, ApiJson(k): ApiJson<NewKey>) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    check_new_key(&k)?;
    for id in &k.assistant_ids {
        s.store.get_assistant(id).await.map_err(|e| match e {
            voxgate_store::StoreError::NotFound => ApiError::validation(vec![voxgate_domain::FieldError::new("assistantIds", format!("no assistant {id}"))]),
            other => other.into(),
        })?;
    }
    let m = mint(k.name.trim(), k.kind, k.assistant_ids);
    s.store.insert_key(&m.key).await?;
    tracing::info!(key_id = %m.key.id, kind = m.key.kind.as_str(), "key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { key: m.key, secret: m.secret })))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<Json<ApiKey>, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("key"));
    }
    let key = s.store.revoke_key(&id).await.map_err(|e| not_found_as(e, "key"))?;
    s.auth.forget(&id);
    tracing::info!(key_id = %id, "key revoked");
    Ok(Json(key))
}

/// A one-time login code, from the URL printed at first start.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginCode {
    #[schema(max_length = 200)]
    pub code: String,
}

/// Exchanges the one-time login code for a new private key (shown once). The code
/// works once, and only until it expires.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginCode,
    responses((status = 201, body = CreatedKey), (status = 401, body = ErrorBody)))]
pub async fn login(State(s): State<ApiState>, ApiJson(body): ApiJson<LoginCode>) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    if body.code.len() > 200 || !s.store.consume_login_code(&hash_secret(&body.code)).await? {
        return Err(ApiError::new(ErrorCode::Unauthorized, "the login code is unknown, used or expired; run `voxgate keys create --name admin` for a key"));
    }
    let m = mint("admin (login link)", KeyKind::Private, Vec::new());
    s.store.insert_key(&m.key).await?;
    tracing::info!(key_id = %m.key.id, "login code exchanged for a private key");
    Ok((StatusCode::CREATED, Json(CreatedKey { key: m.key, secret: m.secret })))
}

/// Who the caller is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// `private`, `public` or `user`.
    pub kind: String,
    pub key_id: Option<String>,
    pub name: Option<String>,
    pub assistant_ids: Vec<String>,
}

/// Describes the caller's credentials.
#[utoipa::path(get, path = "/api/me", tag = "auth", responses((status = 200, body = Me)), security(("bearer" = [])))]
pub async fn me(Caller(p): Caller) -> Result<Json<Me>, ApiError> {
    Ok(Json(match p {
        Principal::Key(k) => Me { kind: k.kind.as_str().into(), key_id: Some(k.id), name: Some(k.name), assistant_ids: k.assistant_ids },
        Principal::User { sub, email, .. } => Me { kind: "user".into(), key_id: None, name: email.or(Some(sub)), assistant_ids: vec![] },
        Principal::Metrics => return Err(ApiError::forbidden("the metrics token only reads metrics")),
    }))
}
