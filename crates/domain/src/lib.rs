//! Shared types of voxgate. Every other crate speaks these; this crate speaks no HTTP,
//! SQL or audio.
//!
//! # Layout
//! - [`error`]: the one table of error codes and the HTTP status each maps to.
//! - [`assistant`]: an assistant's configuration, its defaults and its validation.
//! - [`call`]: calls and their turns (transcript and per-turn latency).
//! - [`key`]: API keys (private and public) and how they are minted and hashed.
//! - [`file`]: uploaded files.
//! - [`clock`]: ids and timestamps.

pub mod assistant;
pub mod call;
pub mod clock;
pub mod error;
pub mod file;
pub mod key;

pub use assistant::{Assistant, AssistantSpec};
pub use call::{Call, CallStatus, CallTurn, TurnLatency, TurnRole};
pub use error::{ErrorCode, FieldError};
pub use file::{FileError, FileRecord, FileStatus};
pub use key::{ApiKey, KeyKind, MintedKey};
