//! A call's session: the pipeline between the `/agent` WebSocket and the services,
//! and the call's record.
//!
//! - [`recorder`]: frames into turn records.

pub mod recorder;
