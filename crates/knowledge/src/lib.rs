//! An assistant's knowledge base, the engine half: text from uploaded files,
//! chunks, local embeddings and vector search.
//!
//! - [`extract`]: text from untrusted bytes (plain text, Markdown, CSV, HTML,
//!   PDF), the type sniffed from the content, every step bounded by [`Limits`],
//!   errors with a stable [`ExtractError::code`] and HTTP status.
//! - [`chunk`]: overlapping pieces cut at paragraph, sentence, word boundaries.
//! - [`Embedder`]: all-MiniLM-L6-v2 on the CPU (384 dimensions, unit vectors).
//! - [`encode_vector`] / [`decode_vector`]: little-endian f32 blobs, the same on
//!   SQLite and PostgreSQL; [`top_k`]: brute-force cosine search with a bounded heap.
//! - [`ingest`]: all of it for one upload.
//!
//! Nothing here looks up the models folder: callers pass the model's folder
//! (`voxgate_models::model_dir(voxgate_models::catalog::MINILM)`).

mod chunk;
mod embed;
mod error;
mod extract;
mod filename;
mod ingest;
mod vector;

pub use chunk::{Chunk, ChunkOptions, chunk};
pub use embed::{DIMENSIONS, EmbedError, Embedder, MAX_TOKENS};
pub use error::ExtractError;
pub use extract::{Document, Kind, Limits, extract};
pub use filename::{MAX_FILE_NAME_CHARS, safe_file_name};
pub use ingest::{IngestError, Ingested, Options, ingest};
pub use vector::{VectorError, decode_vector, dot, encode_vector, top_k};
