//! The multipart body of `POST /api/files`: axum's `Multipart` extractor (multer)
//! behind a `DefaultBodyLimit`, read by the same loop as the upload handler
//! (`crates/api/src/files.rs`: one field named `file`, its chunks counted against
//! the upload limit), then the text extraction the handler runs. The handler itself
//! needs a store and auth; this is its body-reading half, kept in step by hand.
//!
//! Input: one byte N, then N bytes of boundary (N = 255: the next 64 bytes are the
//! whole Content-Type header), then the body.
#![no_main]

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use voxgate_knowledge::{Limits, extract};

/// Small, so the fuzzer reaches "too large" from both the body limit and the loop.
const UPLOAD_LIMIT: usize = 4096;
const BODY_LIMIT: usize = 8192;

async fn upload(multipart: Result<Multipart, MultipartRejection>) -> StatusCode {
    let Ok(mut multipart) = multipart else { return StatusCode::UNSUPPORTED_MEDIA_TYPE };
    let mut upload: Option<(String, Vec<u8>)> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return status_of(&e),
        };
        if field.name() != Some("file") || upload.is_some() {
            return StatusCode::BAD_REQUEST;
        }
        let name = field.file_name().unwrap_or("upload").to_string();
        let mut bytes = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > UPLOAD_LIMIT {
                        return StatusCode::PAYLOAD_TOO_LARGE;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return status_of(&e),
            }
        }
        upload = Some((name, bytes));
    }
    let Some((name, bytes)) = upload else { return StatusCode::BAD_REQUEST };
    let limits = Limits { max_input_bytes: UPLOAD_LIMIT, ..Limits::default() };
    match extract(&bytes, &name, &limits) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(e) => StatusCode::from_u16(e.http_status()).expect("a status"),
    }
}

/// The handler's `multipart_error`: 413 stays 413, anything else is a 400.
fn status_of(e: &axum::extract::multipart::MultipartError) -> StatusCode {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
}

fuzz_target!(|data: &[u8]| {
    voxgate_fuzz::contain_third_party_panics();
    let Some((&n, rest)) = data.split_first() else { return };
    let (content_type, body) = if n == 255 {
        let (h, b) = rest.split_at(rest.len().min(64));
        (h.to_vec(), b)
    } else {
        let (b, body) = rest.split_at(usize::from(n).min(rest.len()));
        ([b"multipart/form-data; boundary=".as_slice(), b].concat(), body)
    };
    let Ok(request) = Request::post("/api/files").header(header::CONTENT_TYPE, content_type).body(Body::from(body.to_vec())) else {
        return;
    };
    let app = Router::new().route("/api/files", post(upload)).layer(DefaultBodyLimit::max(BODY_LIMIT));
    let status = RUNTIME.with(|rt| rt.block_on(app.oneshot(request))).expect("infallible").status();
    assert!(!status.is_server_error(), "{status}");
});
