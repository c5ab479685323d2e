//! The metrics this crate records (through the `metrics` facade; the binary's
//! recorder exports them).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `voxgate_openai_in_flight` | gauge | `stage` (stt, llm, tts) |
//! | `voxgate_openai_requests_total` | counter, one per call | `stage`, `outcome` (ok, cancelled, unauthorized, rate_limited, transient, invalid) |
//! | `voxgate_openai_retries_total` | counter | `stage`, `reason` (rate_limited, transient) |
//! | `voxgate_openai_first_byte_seconds` | histogram, per attempt | `stage` |
//! | `voxgate_openai_warmups_total` | counter | `outcome` (ok, http_error, failed) |
//! | `voxgate_openai_connections_opened_total` | counter | |
//! | `voxgate_openai_connect_errors_total` | counter | |

use voxgate_services::ServiceError;

pub const IN_FLIGHT: &str = "voxgate_openai_in_flight";
pub const REQUESTS: &str = "voxgate_openai_requests_total";
pub const RETRIES: &str = "voxgate_openai_retries_total";
pub const FIRST_BYTE: &str = "voxgate_openai_first_byte_seconds";
pub const WARMUPS: &str = "voxgate_openai_warmups_total";
pub const CONNECTIONS_OPENED: &str = "voxgate_openai_connections_opened_total";
pub const CONNECT_ERRORS: &str = "voxgate_openai_connect_errors_total";

/// A stage, as metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Stt,
    Llm,
    Tts,
}

impl Stage {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Stage::Stt => "stt",
            Stage::Llm => "llm",
            Stage::Tts => "tts",
        }
    }
}

/// Counts one call as in flight until dropped, then records its outcome
/// (`cancelled` unless one was set: the caller dropped the stream).
pub(crate) struct InFlight {
    stage: Stage,
    outcome: &'static str,
}

impl InFlight {
    pub(crate) fn start(stage: Stage) -> InFlight {
        metrics::gauge!(IN_FLIGHT, "stage" => stage.label()).increment(1.0);
        InFlight { stage, outcome: "cancelled" }
    }

    pub(crate) fn finish<T>(&mut self, result: &Result<T, ServiceError>) {
        self.outcome = match result {
            Ok(_) => "ok",
            Err(ServiceError::Unauthorized { .. }) => "unauthorized",
            Err(ServiceError::RateLimited { .. }) => "rate_limited",
            Err(ServiceError::Transient { .. }) => "transient",
            Err(ServiceError::Invalid { .. }) => "invalid",
        };
    }

    pub(crate) fn retry(&self, reason: &'static str) {
        metrics::counter!(RETRIES, "stage" => self.stage.label(), "reason" => reason).increment(1);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let stage = self.stage.label();
        metrics::gauge!(IN_FLIGHT, "stage" => stage).decrement(1.0);
        metrics::counter!(REQUESTS, "stage" => stage, "outcome" => self.outcome).increment(1);
    }
}
