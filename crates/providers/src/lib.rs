//! The providers behind the service traits of `voxgate-services`.
//!
//! # Layout
//! - [`pool`]: the bounded, fair inference pool that local models run on.
//! - [`local`]: the offline models (Whisper, SmolLM2, Piper), loaded once per
//!   process and shared by every call.
//! - [`fallback`]: a second provider that takes over a turn the first one failed.

pub mod pool;
pub mod local;
pub mod fallback;
