//! The local LLM engine: a small chat model in GGUF form (SmolLM2-135M-Instruct)
//! run on the CPU with llama.cpp through the `llama-cpp-2` crate.
//!
//! - [`gguf::inspect`] checks the file before llama.cpp sees it (llama.cpp can
//!   abort the process on some malformed files).
//! - [`Llama::load`] loads the model once; the [`Llama`] is `Send + Sync` and
//!   cheap to clone, and every call shares it.
//! - [`Llama::generate`] renders the chat with the model's own chat template,
//!   streams UTF-8 text pieces to a callback, and reuses the KV cache of the
//!   conversation so far: it keeps up to [`LlamaOptions::sessions`] llama.cpp
//!   contexts, each with the tokens it has evaluated, and evaluates only the part
//!   of a new prompt after the longest shared token prefix.
//!
//! llama.cpp contexts borrow the model; [`Llama`] keeps the model boxed next to
//! the pool of contexts in one reference-counted value, with the pool declared
//! (and so dropped) first. Nothing is leaked: dropping the last clone of a
//! [`Llama`] frees its contexts, then the model. The GGUF header walk is written
//! by hand (about 300 lines): candle-core's reader would bring in candle's whole
//! tensor library for one header walk, and the checks wanted here (every length
//! against the bytes left in the file, ggml's own dtype table) are specific.
//!
//! Tool calling is not offered: a 135M-parameter model cannot follow a tool
//! schema reliably, so the engine only produces text.

mod engine;
pub mod gguf;
mod prompt;
mod session;
mod utf8;

use std::path::PathBuf;

pub use engine::{FinishReason, GenParams, GenStats, Llama, LlamaOptions, MAX_INPUT_BYTES};
pub use prompt::{Message, Role};

/// Errors of the engine. Messages name the file or the limit, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("{path} has no tokenizer.chat_template: it is probably a base model, not a chat model; use an instruction-tuned GGUF")]
    NoChatTemplate { path: PathBuf },
    #[error("llama.cpp could not load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("invalid options: {0}")]
    Options(String),
    #[error("llama.cpp could not create a context of {n_ctx} tokens: {reason}; lower LlamaOptions::context_size or sessions")]
    Context { n_ctx: u32, reason: String },
    #[error("no messages to answer: pass at least one message")]
    NoMessages,
    #[error("the messages total {bytes} bytes, more than the limit of {limit}; shorten them")]
    InputTooLarge { bytes: usize, limit: usize },
    #[error("the prompt needs {tokens} tokens even with older turns dropped, but at most {limit} fit in the context; shorten the system prompt or the last message, or raise LlamaOptions::context_size")]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error("llama.cpp failed to evaluate tokens: {0}")]
    Decode(String),
}
