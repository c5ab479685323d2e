//! One call to the server: attempts under deadlines, the retries a provider makes by
//! itself, and how each failure becomes a [`ServiceError`].

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::time::{Instant, sleep, timeout_at};
use voxgate_services::ServiceError;

use crate::config::{Deadlines, RetryPolicy};
use crate::endpoint::Endpoint;
use crate::stats::{self, InFlight, Stage};

/// Why an attempt failed, before it is named for the caller.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The server answered with an error status.
    Status { status: u16, message: String, retry_after: Option<Duration>, quota: bool },
    /// No connection, or the request could not be sent.
    Connect(String),
    FirstByte(Duration),
    Idle(Duration),
    Total(Duration),
    /// The body broke off or ended early.
    Cut(String),
    /// The body is not what the API sends.
    Malformed(String),
    TooLarge { what: &'static str, limit: usize },
}

impl Fail {
    /// Worth one more attempt when nothing has reached the caller yet.
    fn retryable(&self) -> bool {
        match self {
            Fail::Status { status, .. } => is_transient_status(*status),
            Fail::Connect(_) | Fail::FirstByte(_) | Fail::Idle(_) | Fail::Cut(_) => true,
            Fail::Total(_) | Fail::Malformed(_) | Fail::TooLarge { .. } => false,
        }
    }
}

fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425) || status >= 500
}

/// One call (possibly several attempts) of one stage.
pub(crate) struct Call {
    ep: Endpoint,
    stage: Stage,
    method: reqwest::Method,
    path: &'static str,
    deadlines: Deadlines,
    retry: RetryPolicy,
    error_cap: usize,
    total_deadline: Instant,
    rate_retries: u32,
    rate_waited: Duration,
    transient_retries: u32,
    in_flight: InFlight,
}

impl Call {
    pub fn new(
        ep: Endpoint,
        stage: Stage,
        method: reqwest::Method,
        path: &'static str,
        deadlines: Deadlines,
        retry: RetryPolicy,
        error_cap: usize,
    ) -> Call {
        Call {
            ep,
            stage,
            method,
            path,
            deadlines,
            retry,
            error_cap,
            total_deadline: Instant::now() + deadlines.total,
            rate_retries: 0,
            rate_waited: Duration::ZERO,
            transient_retries: 0,
            in_flight: InFlight::start(stage),
        }
    }

    /// A request builder for this call's method and path, with the key.
    pub fn request(&self) -> reqwest::RequestBuilder {
        self.ep.request(self.method.clone(), self.path)
    }

    /// Sends until a success status arrives or the retries run out.
    pub async fn open<F>(&mut self, make: F) -> Result<Opened, ServiceError>
    where
        F: Fn(&Call) -> reqwest::RequestBuilder,
    {
        loop {
            match self.attempt(make(self)).await {
                Ok(opened) => return Ok(opened),
                Err(fail) => self.recover(fail).await?,
            }
        }
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Result<Opened, Fail> {
        let started = Instant::now();
        let first_deadline = (started + self.deadlines.first_byte).min(self.total_deadline);
        let response = match timeout_at(first_deadline, request.send()).await {
            Err(_) => return Err(self.deadline_passed(first_deadline, true)),
            Ok(Err(e)) => return Err(Fail::Connect(error_chain(&e.without_url()))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_fail(response).await);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(Opened {
            stream: response.bytes_stream().boxed(),
            content_type,
            started,
            first_deadline,
            got_first: false,
            idle: self.deadlines.idle,
            total_deadline: self.total_deadline,
            total: self.deadlines.total,
            first_byte: self.deadlines.first_byte,
            read: 0,
            stage: self.stage,
        })
    }

    fn deadline_passed(&self, deadline: Instant, first: bool) -> Fail {
        if deadline >= self.total_deadline {
            Fail::Total(self.deadlines.total)
        } else if first {
            Fail::FirstByte(self.deadlines.first_byte)
        } else {
            Fail::Idle(self.deadlines.idle)
        }
    }

    async fn status_fail(&self, response: reqwest::Response) -> Fail {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let deadline = (Instant::now() + self.deadlines.idle).min(self.total_deadline);
        let body = read_some(response, self.error_cap, deadline).await;
        let parsed = ErrorBody::parse(&body, status);
        Fail::Status { status, message: parsed.message, retry_after, quota: parsed.quota }
    }

    /// After a failure of a streamed reply: `None` once waited and worth another
    /// attempt (only while nothing has been `yielded`: a retry would repeat it),
    /// else the error to give the caller, recorded as the call's outcome.
    pub async fn settle(&mut self, fail: Fail, yielded: bool) -> Option<ServiceError> {
        let error = if yielded {
            self.error(fail)
        } else {
            match self.recover(fail).await {
                Ok(()) => return None,
                Err(e) => e,
            }
        };
        self.finish::<()>(&Err(error.clone()));
        Some(error)
    }

    /// After a failure that reached the caller with nothing yet: `Ok` once waited and
    /// worth another attempt, else the error to give the caller.
    pub async fn recover(&mut self, fail: Fail) -> Result<(), ServiceError> {
        let now = Instant::now();
        let wait = match &fail {
            Fail::Status { status: 429, retry_after, quota: false, .. } => {
                let wait = retry_after.unwrap_or(self.retry.rate_limit_default_wait * (1 << self.rate_retries.min(8)));
                let allowed = self.rate_retries < self.retry.rate_limit_retries
                    && self.rate_waited + wait <= self.retry.rate_limit_max_wait
                    && now + wait < self.total_deadline;
                if !allowed {
                    return Err(self.error(fail));
                }
                self.rate_retries += 1;
                self.rate_waited += wait;
                self.in_flight.retry("rate_limited");
                wait
            }
            f if f.retryable() && self.transient_retries < self.retry.transient_retries => {
                let wait = self.retry.transient_pause;
                if now + wait >= self.total_deadline {
                    return Err(self.error(fail));
                }
                self.transient_retries += 1;
                self.in_flight.retry("transient");
                tracing::debug!(provider = self.ep.name, stage = self.stage.label(), "retrying after: {}", self.describe(&fail));
                wait
            }
            _ => return Err(self.error(fail)),
        };
        sleep(wait).await;
        Ok(())
    }

    /// Records the call's outcome for the metrics.
    pub fn finish<T>(&mut self, result: &Result<T, ServiceError>) {
        self.in_flight.finish(result);
    }

    /// Names a failure for the caller, with the key blanked out.
    pub fn error(&self, fail: Fail) -> ServiceError {
        let provider = self.ep.name;
        let message = self.ep.redact(&self.describe(&fail));
        match fail {
            Fail::Status { status: 401 | 403, .. } => ServiceError::Unauthorized { provider, message },
            // A spent quota is a billing problem: waiting does not help.
            Fail::Status { status: 429, quota: true, .. } => ServiceError::Unauthorized { provider, message },
            Fail::Status { status: 429, retry_after, .. } => ServiceError::RateLimited { provider, retry_after },
            Fail::Status { status, .. } if is_transient_status(status) || status < 300 => {
                ServiceError::Transient { provider, message }
            }
            Fail::Status { .. } => ServiceError::Invalid { provider, message },
            _ => ServiceError::Transient { provider, message },
        }
    }

    fn describe(&self, fail: &Fail) -> String {
        let at = format!("{} {}", self.method, self.ep.shown(self.path));
        let stage = self.stage.label().to_uppercase();
        match fail {
            Fail::Status { status, message, quota, .. } => {
                let hint = match status {
                    401 | 403 => "; check the API key",
                    429 if *quota => "; the account's quota is spent: check its plan and billing",
                    404 => "; check the base URL and the model name",
                    _ => "",
                };
                format!("{at} answered {status}: {message}{hint}")
            }
            Fail::Connect(e) => format!("{at} failed: {e}"),
            Fail::FirstByte(d) => format!("{at}: no reply within the first-byte deadline of {d:?} (the first of OPENAI_{stage}_DEADLINES)"),
            Fail::Idle(d) => format!("{at}: the reply stalled for longer than {d:?} (the second of OPENAI_{stage}_DEADLINES)"),
            Fail::Total(d) => format!("{at}: not finished within the total deadline of {d:?} (the third of OPENAI_{stage}_DEADLINES)"),
            Fail::Cut(e) => format!("{at}: the reply broke off: {e}"),
            Fail::Malformed(e) => format!("{at}: malformed reply: {e}"),
            Fail::TooLarge { what, limit } => format!("{at}: the {what} exceeds the limit of {limit} bytes (limits)"),
        }
    }
}

/// A reply with a success status whose body is still to be read, each piece under
/// a deadline.
pub(crate) struct Opened {
    stream: BoxStream<'static, reqwest::Result<Bytes>>,
    pub content_type: String,
    started: Instant,
    first_deadline: Instant,
    got_first: bool,
    idle: Duration,
    total_deadline: Instant,
    total: Duration,
    first_byte: Duration,
    read: usize,
    stage: Stage,
}

impl Opened {
    /// The next piece of the body, `None` at its end; more than `cap` bytes in all fails.
    pub async fn next(&mut self, cap: usize, what: &'static str) -> Result<Option<Bytes>, Fail> {
        let deadline = if self.got_first { (Instant::now() + self.idle).min(self.total_deadline) } else { self.first_deadline };
        let piece = match timeout_at(deadline, self.stream.next()).await {
            Err(_) if deadline >= self.total_deadline => return Err(Fail::Total(self.total)),
            Err(_) if !self.got_first => return Err(Fail::FirstByte(self.first_byte)),
            Err(_) => return Err(Fail::Idle(self.idle)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(Fail::Cut(error_chain(&e.without_url()))),
            Ok(Some(Ok(piece))) => piece,
        };
        if !self.got_first {
            self.got_first = true;
            metrics::histogram!(stats::FIRST_BYTE, "stage" => self.stage.label()).record(self.started.elapsed().as_secs_f64());
        }
        self.read += piece.len();
        if self.read > cap {
            return Err(Fail::TooLarge { what, limit: cap });
        }
        Ok(Some(piece))
    }

    /// The whole body (at most `cap` bytes).
    pub async fn read_all(&mut self, cap: usize, what: &'static str) -> Result<Vec<u8>, Fail> {
        let mut body = Vec::new();
        while let Some(piece) = self.next(cap, what).await? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    /// The body as a stream that ends after its first error.
    pub fn into_stream(self, cap: usize, what: &'static str) -> BoxStream<'static, Result<Bytes, Fail>> {
        futures_util::stream::unfold(Some(self), move |state| async move {
            let mut opened = state?;
            match opened.next(cap, what).await {
                Ok(Some(piece)) => Some((Ok(piece), Some(opened))),
                Ok(None) => None,
                Err(fail) => Some((Err(fail), None)),
            }
        })
        .boxed()
    }
}

/// Reads up to `cap` bytes of a body before `deadline`; whatever arrived on failure.
async fn read_some(mut response: reqwest::Response, cap: usize, deadline: Instant) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(piece))) => body.extend_from_slice(&piece[..piece.len().min(cap - body.len())]),
            _ => break,
        }
    }
    body
}

/// What an error body says.
#[derive(Debug, PartialEq)]
pub(crate) struct ErrorBody {
    pub message: String,
    /// OpenAI's `insufficient_quota`: a 429 that waiting does not cure.
    pub quota: bool,
}

const MESSAGE_CHARS: usize = 400;

impl ErrorBody {
    /// Reads OpenAI's `{"error":{"message","type","code"}}`, the shapes other
    /// compatible servers use (`{"error":"..."}`, `{"message":..}`, `{"detail":..}`),
    /// or the start of a plain text body.
    pub fn parse(body: &[u8], status: u16) -> ErrorBody {
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
        let mut quota = false;
        let message = match &value {
            Some(v) => {
                let error = v.get("error").unwrap_or(v);
                let message = error
                    .get("message")
                    .or_else(|| error.get("detail"))
                    .and_then(text)
                    .or_else(|| error.as_str().map(str::to_string));
                let kind = error.get("type").and_then(text);
                let code = error.get("code").and_then(text);
                quota = [&kind, &code].iter().any(|s| s.as_deref() == Some("insufficient_quota"));
                let mut out = message.unwrap_or_else(|| v.to_string());
                let tags: Vec<String> = [("type", kind), ("code", code)]
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|value| format!("{name} {value}")))
                    .collect();
                if !tags.is_empty() {
                    out = format!("{out} ({})", tags.join(", "));
                }
                out
            }
            None => String::from_utf8_lossy(body).trim().to_string(),
        };
        let mut message: String = message.chars().filter(|c| !c.is_control() || *c == ' ').take(MESSAGE_CHARS).collect();
        if message.is_empty() {
            message = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_string();
        }
        ErrorBody { message, quota }
    }
}

/// The wait a 429 (or 503) asks for: `retry-after-ms` (milliseconds, what OpenAI
/// sends), else `Retry-After` as seconds or an HTTP date. Capped at an hour.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = |s: &str, scale: f64| {
        s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| Duration::from_secs_f64((v * scale).min(CAP.as_secs_f64())))
    };
    if let Some(wait) = header("retry-after-ms").and_then(|s| seconds(s, 0.001)) {
        return Some(wait);
    }
    let value = header("retry-after")?;
    if let Some(wait) = seconds(value, 1.0) {
        return Some(wait);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(CAP))
}

/// An error and its sources, one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(&headers(&[("retry-after", "3")]), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.5")]), now), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")]), now), Some(Duration::from_millis(250)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&[("retry-after", &later)]), now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&[("retry-after", &earlier)]), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "99999999999999")]), now), Some(Duration::from_secs(3600)));
        for junk in ["", "-1", "NaN", "inf", "soon", "Mon, 99 Foo 2024"] {
            assert_eq!(retry_after(&headers(&[("retry-after", junk)]), now), None, "{junk}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn error_bodies_in_every_shape() {
        let openai = br#"{"error":{"message":"Invalid model","type":"invalid_request_error","code":"model_not_found","param":null}}"#;
        let parsed = ErrorBody::parse(openai, 404);
        assert_eq!(parsed.message, "Invalid model (type invalid_request_error, code model_not_found)");
        assert!(!parsed.quota);
        let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(ErrorBody::parse(quota, 429).quota);
        assert_eq!(ErrorBody::parse(br#"{"error":"model not loaded"}"#, 503).message, "model not loaded");
        assert_eq!(ErrorBody::parse(br#"{"detail":"Not Found"}"#, 404).message, "Not Found");
        assert_eq!(ErrorBody::parse(br#"{"error":{"code":500}}"#, 500).message, r#"{"error":{"code":500}} (code 500)"#);
        assert_eq!(ErrorBody::parse(b"<html>Bad Gateway</html>\n", 502).message, "<html>Bad Gateway</html>");
        assert_eq!(ErrorBody::parse(b"", 503).message, "Service Unavailable");
        assert_eq!(ErrorBody::parse(br#"{"error":{"message":"trunc"#, 400).message, r#"{"error":{"message":"trunc"#);
        assert_eq!(ErrorBody::parse(&[0xff, 0xfe, b'x'], 400).message.chars().last(), Some('x'));
        let huge = format!(r#"{{"error":{{"message":"{}"}}}}"#, "a\n".repeat(100_000));
        assert!(ErrorBody::parse(huge.as_bytes(), 400).message.len() <= MESSAGE_CHARS);
    }
}
