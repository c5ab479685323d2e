//! The `voxgate` binary's library: configuration, the assembled server, and the
//! command-line subcommands. `main.rs` only parses and dispatches.
//!
//! # Layout
//! - [`config`]: the CLI and environment (one clap struct per command).
//! - [`serve`]: assembles the roles into one router, listens (HTTP or HTTPS), drains.
//! - [`agent`]: the `/agent` WebSocket.
//! - [`session`]: a call's pipeline and record.
//! - [`ui`]: the embedded web app and `/config.json`.
//! - [`headers`]: security headers.
//! - [`idle`]: closes idle HTTP/2 connections.
//! - [`instances`]: this agent instance's heartbeat, and the sweep that ends the
//!   calls of an instance that died.
//! - [`telemetry`]: logs and Sentry.
//! - [`commands`]: `migrate` and `keys`.
//! - [`call`]: `voxgate call`, a WebSocket client that calls an assistant from a WAV file.
//! - [`bench`]: `voxgate bench`, a load generator: many such calls at once, measured.

pub mod agent;
pub mod bench;
pub mod call;
pub mod commands;
pub mod config;
pub mod headers;
pub mod idle;
pub mod instances;
pub mod knowledge;
pub mod models;
pub mod serve;
pub mod session;
pub mod telemetry;
pub mod ui;

/// Installs ring as rustls's process-wide crypto provider (once; later calls are no-ops).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
