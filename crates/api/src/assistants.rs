//! `/api/assistants`: create, read, list, change (JSON merge patch), delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use voxgate_domain::assistant::merge_patch;
use voxgate_domain::clock::is_id;
use voxgate_domain::{Assistant, AssistantSpec};

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::ApiState;

/// Paging through a list.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    #[param(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
}

/// A page of assistants.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssistantPage {
    pub items: Vec<Assistant>,
    pub next_cursor: Option<String>,
}

pub(crate) fn check_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(n),
        Some(_) => Err(ApiError::bad_request("limit must be between 1 and 100")),
    }
}

pub(crate) fn check_cursor(cursor: Option<&str>) -> Result<(), ApiError> {
    match cursor {
        Some(c) if !is_id(c) => Err(ApiError::bad_request("cursor is not one this API issued")),
        _ => Ok(()),
    }
}

fn validated(spec: AssistantSpec) -> Result<AssistantSpec, ApiError> {
    spec.validate().map_err(ApiError::validation)?;
    Ok(spec)
}

/// Every file of the knowledge base must exist (a file deleted later is skipped
/// at call time; one that never existed is a mistake to report now).
async fn files_exist(s: &ApiState, spec: &AssistantSpec) -> Result<(), ApiError> {
    let Some(kb) = &spec.knowledge_base else { return Ok(()) };
    let found: std::collections::HashSet<String> = s.store.files_by_ids(&kb.file_ids).await?.into_iter().map(|f| f.id).collect();
    let missing: Vec<voxgate_domain::FieldError> = kb
        .file_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !found.contains(*id))
        .map(|(n, _)| voxgate_domain::FieldError::new(format!("knowledgeBase.fileIds[{n}]"), "no such file"))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(ApiError::validation(missing)) }
}

/// Parses a whole body as a spec with field paths in errors.
fn spec_from(value: Value) -> Result<AssistantSpec, ApiError> {
    let mut track = serde_path_to_error::Track::new();
    let spec = AssistantSpec::deserialize(serde_path_to_error::Deserializer::new(&value, &mut track))
        .map_err(|e| ApiError::validation(vec![voxgate_domain::FieldError::new(track.path().to_string(), e.to_string())]))?;
    let parsed = serde_json::to_value(&spec).expect("a spec serializes");
    if let Some(field) = array_for_object(&value, &parsed, String::new()) {
        return Err(ApiError::validation(vec![voxgate_domain::FieldError::new(field, "must be an object")]));
    }
    Ok(spec)
}

/// serde also reads a struct from an array of its fields in order (so
/// `"realtime": [null, null]` was taken as a `realtime` object); the API takes
/// objects only. Returns the path of the first place where `input` has an array
/// and the parsed spec (`parsed`, serialized back) has an object.
fn array_for_object(input: &Value, parsed: &Value, path: String) -> Option<String> {
    match (input, parsed) {
        (Value::Array(_), Value::Object(_)) => Some(path),
        (Value::Object(i), Value::Object(p)) => i.iter().find_map(|(k, iv)| {
            let pv = p.get(k)?;
            array_for_object(iv, pv, if path.is_empty() { k.clone() } else { format!("{path}.{k}") })
        }),
        (Value::Array(i), Value::Array(p)) => i.iter().zip(p).enumerate().find_map(|(n, (iv, pv))| array_for_object(iv, pv, format!("{path}[{n}]"))),
        _ => None,
    }
}

/// Lists assistants, newest first.
#[utoipa::path(get, path = "/api/assistants", tag = "assistants", params(PageQuery),
    responses((status = 200, body = AssistantPage), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, _: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> Result<Json<AssistantPage>, ApiError> {
    let limit = check_limit(q.limit)?;
    check_cursor(q.cursor.as_deref())?;
    let page = s.store.list_assistants(limit, q.cursor.as_deref()).await?;
    Ok(Json(AssistantPage { items: page.items, next_cursor: page.next_cursor }))
}

/// Creates an assistant. Only `name` is required; every other field has a default.
#[utoipa::path(post, path = "/api/assistants", tag = "assistants", request_body = AssistantSpec,
    responses((status = 201, body = Assistant), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(State(s): State<ApiState>, _: Admin, ApiJson(body): ApiJson<Value>) -> Result<(StatusCode, Json<Assistant>), ApiError> {
    if !body.is_object() {
        return Err(ApiError::validation(vec![voxgate_domain::FieldError::new("", "the body must be a JSON object")]));
    }
    let spec = validated(spec_from(body)?)?;
    files_exist(&s, &spec).await?;
    Ok((StatusCode::CREATED, Json(s.store.create_assistant(spec).await?)))
}

/// Reads one assistant (private keys: public keys are embedded in web pages, and an
/// assistant's prompt and tools are the owner's business).
#[utoipa::path(get, path = "/api/assistants/{id}", tag = "assistants", params(("id" = String, Path)),
    responses((status = 200, body = Assistant), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<Json<Assistant>, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("assistant"));
    }
    s.store.get_assistant(&id).await.map(Json).map_err(|e| not_found_as(e, "assistant"))
}

/// Changes an assistant with a JSON merge patch (RFC 7396): objects merge, `null`
/// resets a field to its default.
#[utoipa::path(patch, path = "/api/assistants/{id}", tag = "assistants", params(("id" = String, Path)), request_body = Object,
    responses((status = 200, body = Assistant), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(s): State<ApiState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Json<Assistant>, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::validation(vec![voxgate_domain::FieldError::new("", "the body must be a JSON object")]));
    }
    if !is_id(&id) {
        return Err(ApiError::not_found("assistant"));
    }
    let current = s.store.get_assistant(&id).await.map_err(|e| not_found_as(e, "assistant"))?;
    let mut doc = serde_json::to_value(&current.spec).expect("a spec serializes");
    merge_patch(&mut doc, &patch);
    let spec = validated(spec_from(doc)?)?;
    files_exist(&s, &spec).await?;
    s.store.update_assistant(&id, spec).await.map(Json).map_err(|e| not_found_as(e, "assistant"))
}

/// Deletes an assistant. Its calls are kept.
#[utoipa::path(delete, path = "/api/assistants/{id}", tag = "assistants", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("assistant"));
    }
    s.store.delete_assistant(&id).await.map_err(|e| not_found_as(e, "assistant"))?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn not_found_as(e: voxgate_store::StoreError, what: &str) -> ApiError {
    match e {
        voxgate_store::StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}
