//! `/api/files`: knowledge-base uploads. `POST` takes one multipart field `file`
//! (plain text, Markdown, CSV, HTML or PDF, at most `UPLOAD_MAX_BYTES`), whose
//! type is sniffed from its bytes (the declared type and name are not trusted).
//! The text is extracted at once, so a file that cannot be read is refused with
//! 413, 415 or 422 before anything is kept; chunking and embedding then run in a
//! background job ([`FileJobs`]) and the file's `status` goes from `processing`
//! to `ready` (or `failed`, with the reason). Deleting a file removes its chunks
//! and its bytes.
//!
//! The bytes are kept under the files folder by the file's id, never by the name
//! the client gave, so no upload can write outside that folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use voxgate_domain::clock::{is_id, new_id, now_ms};
use voxgate_domain::{ErrorCode, FileRecord, FileStatus};
use voxgate_knowledge::{ExtractError, Kind, Limits};

use crate::assistants::{PageQuery, check_cursor, check_limit, not_found_as};
use crate::auth::Admin;
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::state::ApiState;

/// Runs the processing of uploaded files (chunks and embeddings) in the
/// background. The server implements it; the API only hands files over.
pub trait FileJobs: Send + Sync + 'static {
    /// Queues the file (already stored with status `processing`).
    fn submit(&self, file_id: &str);
}

/// A page of files.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilePage {
    pub items: Vec<FileRecord>,
    pub next_cursor: Option<String>,
}

/// The MIME type recorded for each kind of file.
pub fn content_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text/plain",
        Kind::Markdown => "text/markdown",
        Kind::Csv => "text/csv",
        Kind::Html => "text/html",
        Kind::Pdf => "application/pdf",
    }
}

fn extract_error(e: &ExtractError) -> ApiError {
    let code = match e.http_status() {
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::ValidationFailed,
    };
    ApiError::new(code, e.to_string())
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "the upload is larger than UPLOAD_MAX_BYTES allows")
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// The body of an upload: one multipart field, `file` (any other field is refused).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FileUpload {
    /// Plain text, Markdown, CSV, HTML or PDF; the type is sniffed from the bytes.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Where a file's bytes are kept. `storage_path` is the file's id (checked, so a
/// corrupt record cannot point elsewhere).
pub fn stored_at(dir: &Path, storage_path: &str) -> Option<PathBuf> {
    is_id(storage_path).then(|| dir.join(storage_path))
}

/// Uploads a knowledge-base file (multipart, one field named `file`). Answers 202
/// with the record, status `processing`; poll `GET /api/files/{id}` until `ready`.
#[utoipa::path(post, path = "/api/files", tag = "files",
    request_body(content = FileUpload, content_type = "multipart/form-data", description = "one field `file`: text, Markdown, CSV, HTML or PDF"),
    responses((status = 202, body = FileRecord), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(s): State<ApiState>,
    _: Admin,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<FileRecord>), ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(ErrorCode::UnsupportedMediaType, format!("send the file as multipart/form-data in a field named `file` ({})", e.body_text()))
    })?;
    let mut upload: Option<(String, Vec<u8>)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            return Err(ApiError::bad_request("unexpected multipart field; send exactly one field named `file`"));
        }
        if upload.is_some() {
            return Err(ApiError::bad_request("send one file per request"));
        }
        let name = field.file_name().unwrap_or("upload").to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() + chunk.len() > s.config.upload_limit {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge, "the upload is larger than UPLOAD_MAX_BYTES allows"));
            }
            bytes.extend_from_slice(&chunk);
        }
        upload = Some((name, bytes));
    }
    let Some((declared_name, bytes)) = upload else {
        return Err(ApiError::bad_request("no file: send it in a multipart field named `file`"));
    };

    // Extract now (bounded by the limits; a PDF can take a while, so off the
    // runtime's threads): a file that cannot be read is refused before it is kept.
    let limits = Limits { max_input_bytes: s.config.upload_limit, ..Limits::default() };
    let (document, bytes) = tokio::task::spawn_blocking(move || (voxgate_knowledge::extract(&bytes, &declared_name, &limits), bytes))
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "reading the file failed"))?;
    let document = document.map_err(|e| extract_error(&e))?;

    let id = new_id();
    let dir = s.config.files_dir.clone();
    let path = stored_at(&dir, &id).expect("a new id is an id");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as i64;
    write_atomically(&dir, &path, bytes).await.map_err(|e| {
        tracing::error!(error = %e, dir = %dir.display(), "cannot keep an uploaded file");
        ApiError::new(ErrorCode::Unavailable, "the server cannot store files right now").with_retry_after(5)
    })?;
    let record = FileRecord {
        id: id.clone(),
        name: document.name,
        content_type: content_type(document.kind).into(),
        size_bytes: size,
        sha256,
        purpose: "knowledge".into(),
        assistant_id: None,
        storage_path: id.clone(),
        created_at: now_ms(),
        status: FileStatus::Processing,
        error: None,
        chunk_count: 0,
        processed_at: None,
    };
    if let Err(e) = s.store.insert_file(&record).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e.into());
    }
    metrics::counter!("voxgate_files_uploaded_total").increment(1);
    match &s.file_jobs {
        Some(jobs) => jobs.submit(&id),
        None => tracing::warn!(file = %id, "no file processor on this instance; the file stays processing until one starts"),
    }
    Ok((StatusCode::ACCEPTED, Json(record)))
}

async fn write_atomically(dir: &Path, path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let part = path.with_extension("part");
    tokio::fs::write(&part, &bytes).await?;
    tokio::fs::rename(&part, path).await
}

/// Lists files, newest first.
#[utoipa::path(get, path = "/api/files", tag = "files", params(PageQuery),
    responses((status = 200, body = FilePage), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(s): State<ApiState>, _: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> Result<Json<FilePage>, ApiError> {
    let limit = check_limit(q.limit)?;
    check_cursor(q.cursor.as_deref())?;
    let page = s.store.list_files(limit, q.cursor.as_deref()).await?;
    Ok(Json(FilePage { items: page.items, next_cursor: page.next_cursor }))
}

/// Reads one file's record: its processing status, chunk count, or why it failed.
#[utoipa::path(get, path = "/api/files/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = FileRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<Json<FileRecord>, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("file"));
    }
    s.store.get_file(&id).await.map(Json).map_err(|e| not_found_as(e, "file"))
}

/// Deletes a file, its chunks and its bytes. Assistants that list it stop
/// retrieving from it at their next call.
#[utoipa::path(delete, path = "/api/files/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(State(s): State<ApiState>, _: Admin, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    if !is_id(&id) {
        return Err(ApiError::not_found("file"));
    }
    let record = s.store.delete_file(&id).await.map_err(|e| not_found_as(e, "file"))?;
    if let Some(path) = stored_at(&s.config.files_dir, &record.storage_path) {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, file = %id, "the file's record is gone but its bytes could not be removed"),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// For [`crate::ApiState`]: the processor, shared.
pub type SharedFileJobs = Arc<dyn FileJobs>;
