//! What extracting a file can fail with, and how the API maps each case to HTTP.

/// Why a file's text could not be extracted. Every message names the file (as
/// [`crate::safe_file_name`] cleaned it) and says what the user can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The file, or what it unpacks to, passes one of the [`crate::Limits`].
    #[error("{name}: too large: {what} is {actual}, the limit is {limit}; split the file or upload a smaller one")]
    TooLarge { name: String, what: &'static str, actual: String, limit: u64 },
    /// A format this crate does not read (a zip, an image, an office document...).
    #[error("{name}: unsupported file type ({detected}); upload plain text, Markdown, CSV, HTML or PDF")]
    Unsupported { name: String, detected: String },
    /// Binary content (NUL bytes or mostly control characters) where text was expected.
    #[error("{name}: binary content, not text ({reason}); upload plain text, Markdown, CSV, HTML or PDF")]
    Binary { name: String, reason: String },
    /// Text that is not valid UTF-8 (nor UTF-16 with a byte-order mark).
    #[error("{name}: the text is not valid UTF-8 (invalid byte at offset {offset}); save it as UTF-8 and upload it again")]
    NotUtf8 { name: String, offset: usize },
    /// A password-protected (encrypted) PDF.
    #[error("{name}: the PDF is encrypted; save or print it as a PDF without a password or restrictions and upload it again")]
    Encrypted { name: String },
    /// The content is damaged or not what its format requires.
    #[error("{name}: malformed {kind}: {detail}; check that the file opens in another program, or export it again")]
    Malformed { name: String, kind: &'static str, detail: String },
    /// The file was read but holds no text (an empty file, a scanned PDF of images).
    #[error("{name}: no text found; a scanned PDF needs OCR first, an empty file has nothing to search")]
    NoText { name: String },
}

impl ExtractError {
    /// A stable machine-readable code for this error, for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::TooLarge { .. } => "file_too_large",
            ExtractError::Unsupported { .. } => "unsupported_file_type",
            ExtractError::Binary { .. } => "binary_content",
            ExtractError::NotUtf8 { .. } => "not_utf8",
            ExtractError::Encrypted { .. } => "encrypted_pdf",
            ExtractError::Malformed { .. } => "malformed_file",
            ExtractError::NoText { .. } => "no_text",
        }
    }

    /// The HTTP status the API answers with: 413 too large, 415 unsupported type
    /// (binary included), 422 malformed content (encrypted, not UTF-8, no text).
    pub fn http_status(&self) -> u16 {
        match self {
            ExtractError::TooLarge { .. } => 413,
            ExtractError::Unsupported { .. } | ExtractError::Binary { .. } => 415,
            ExtractError::NotUtf8 { .. }
            | ExtractError::Encrypted { .. }
            | ExtractError::Malformed { .. }
            | ExtractError::NoText { .. } => 422,
        }
    }
}
