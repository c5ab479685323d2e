//! Signing and verifying: HMAC-SHA256 over `"{t}.{body}"`, sent as
//! `X-Voxgate-Signature: t=<unix seconds>,v1=<lowercase hex>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest signature header [`verify`] reads; longer ones are refused unparsed.
pub const MAX_HEADER_LEN: usize = 1024;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no X-Voxgate-Signature header: the request was not signed by voxgate")]
    Missing,
    #[error("the X-Voxgate-Signature header is malformed ({0}); expected t=<unix seconds>,v1=<hex>")]
    Malformed(&'static str),
    #[error("the signature's timestamp is {age_secs} s away from now (more than the {tolerance_secs} s allowed): a replay, or a clock off")]
    Expired { age_secs: i64, tolerance_secs: i64 },
    #[error("the signature does not match the body: wrong secret, or the body was changed")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(timestamp_secs.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Voxgate-Signature` value for `body` sent at `timestamp_secs`:
/// `t=<timestamp_secs>,v1=<hex of HMAC-SHA256(secret, "{t}.{body}")>`.
pub fn sign(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp_secs, body).finalize().into_bytes();
    format!("t={timestamp_secs},v1={}", hex::encode(tag))
}

/// `request` with `body` signed now: the `X-Voxgate-Timestamp` and
/// `X-Voxgate-Signature` headers (webhook events and tool calls alike).
pub fn signed(request: reqwest::RequestBuilder, secret: &[u8], body: &[u8]) -> reqwest::RequestBuilder {
    let t = voxgate_domain::clock::now_ms().div_euclid(1000);
    request.header(crate::headers::TIMESTAMP, t.to_string()).header(crate::headers::SIGNATURE, sign(secret, t, body))
}

/// Checks a signature header (`None` when the request had none) against the raw
/// body, with the timestamp at most `tolerance_secs` away from `now_secs`.
/// Several `v1=` entries are accepted (any one matching passes, for secret
/// rotation); unknown keys are ignored. The comparison is constant-time.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let header = header.ok_or(VerifyError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(VerifyError::Malformed("too long"));
    }
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(VerifyError::Malformed("an entry without '='"))?;
        match k {
            "t" => {
                if t.is_some() {
                    return Err(VerifyError::Malformed("more than one t="));
                }
                let ts = if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() && v.len() <= 12 {
                    v.parse::<i64>().ok()
                } else {
                    None
                };
                t = Some(ts.ok_or(VerifyError::Malformed("t= is not a Unix time in seconds"))?);
            }
            "v1" => tags.push(hex::decode(v).map_err(|_| VerifyError::Malformed("v1= is not hex"))?),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed("no t="))?;
    if tags.is_empty() {
        return Err(VerifyError::Malformed("no v1="));
    }
    let age = now_secs.saturating_sub(t);
    if age.unsigned_abs() > tolerance_secs.max(0) as u64 {
        return Err(VerifyError::Expired { age_secs: age, tolerance_secs });
    }
    let expected = mac(secret, t, body);
    // `verify_slice` compares in constant time; a tag of the wrong length fails.
    if tags.iter().any(|tag| expected.clone().verify_slice(tag).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}
