//! The upload pipeline in one call: extract, chunk, embed.

use crate::chunk::{Chunk, ChunkOptions, chunk};
use crate::embed::{EmbedError, Embedder};
use crate::error::ExtractError;
use crate::extract::{Kind, Limits, extract};

/// Options of [`ingest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub limits: Limits,
    pub chunking: ChunkOptions,
}

/// What ingesting a file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file was refused or unreadable: the user's to fix (see
    /// [`ExtractError::http_status`]).
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The embedder failed: the server's to fix (HTTP 500).
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// An ingested file: its cleaned name, its kind, and its chunks with their vectors.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub name: String,
    pub kind: Kind,
    pub chunks: Vec<(Chunk, Vec<f32>)>,
}

/// Extracts the text of an uploaded file, chunks it and embeds every chunk. CPU
/// bound for seconds on a large file: call it from a blocking task or a job.
pub fn ingest(bytes: &[u8], declared_name: &str, embedder: &Embedder, options: &Options) -> Result<Ingested, IngestError> {
    let document = extract(bytes, declared_name, &options.limits)?;
    let chunks = chunk(&document.text, &options.chunking);
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let vectors = embedder.embed(&texts)?;
    Ok(Ingested { name: document.name, kind: document.kind, chunks: chunks.into_iter().zip(vectors).collect() })
}
