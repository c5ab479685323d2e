//! Uploaded files (knowledge-base documents, recordings). The bytes live on disk or
//! in object storage; the database keeps this record.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a knowledge file is in its processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Uploaded; its text is being chunked and embedded in the background.
    Processing,
    /// Searchable.
    Ready,
    /// Processing failed; `error` says why.
    Failed,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Processing => "processing",
            FileStatus::Ready => "ready",
            FileStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<FileStatus> {
        Some(match s {
            "processing" => FileStatus::Processing,
            "ready" => FileStatus::Ready,
            "failed" => FileStatus::Failed,
            _ => return None,
        })
    }
}

/// Why processing a file failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileError {
    pub code: String,
    pub message: String,
}

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
    pub status: FileStatus,
    /// Set when `status` is `failed`.
    pub error: Option<FileError>,
    /// Searchable pieces of the file's text (when `ready`).
    pub chunk_count: i64,
    /// When processing finished (either way), Unix milliseconds.
    pub processed_at: Option<i64>,
}
