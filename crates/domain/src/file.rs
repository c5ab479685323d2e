//! Uploaded files (knowledge-base documents, recordings). The bytes live on disk or
//! in object storage; the database keeps this record.

use serde::Serialize;
use utoipa::ToSchema;

/// A stored file's record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// What the file is for: `knowledge` or `recording`.
    pub purpose: String,
    /// The assistant it belongs to, if any.
    pub assistant_id: Option<String>,
    /// Where the bytes are, relative to the data folder; never shown to clients.
    #[serde(skip)]
    pub storage_path: String,
    #[serde(with = "crate::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}
