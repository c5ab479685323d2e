//! Text from an uploaded file: the type is sniffed from the content, never taken
//! from the declared name alone, and every step is bounded by [`Limits`].

mod csv;
mod html;
mod markdown;
mod pdf;

use crate::error::ExtractError;
use crate::filename::{extension, safe_file_name};

/// Bounds on what one upload may cost. The defaults suit a 2-core server taking
/// files of up to 10 MB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest upload, in bytes (default 10 MB).
    pub max_input_bytes: usize,
    /// Most characters of extracted text (default 5 million).
    pub max_output_chars: usize,
    /// Most pages of a PDF (default 1,000).
    pub max_pages: usize,
    /// Most data rows of a CSV file (default 100,000).
    pub max_rows: usize,
    /// Most fields in one CSV row (default 1,000).
    pub max_fields: usize,
    /// Most bytes a PDF's compressed streams may unpack to, all streams together,
    /// images included (default 128 MiB). This is what stops a PDF bomb.
    pub max_decompressed_bytes: u64,
    /// Most form XObjects a PDF's pages may draw, counting repeats (default 20,000).
    pub max_xobject_draws: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 10_000_000,
            max_output_chars: 5_000_000,
            max_pages: 1_000,
            max_rows: 100_000,
            max_fields: 1_000,
            max_decompressed_bytes: 128 << 20,
            max_xobject_draws: 20_000,
        }
    }
}

/// The kind of file, as sniffed from its content (and, among text formats that the
/// content cannot tell apart, from the declared extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Markdown,
    Csv,
    Html,
    Pdf,
}

/// The text of an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The declared name, cleaned by [`safe_file_name`].
    pub name: String,
    pub kind: Kind,
    /// Readable text: paragraphs separated by blank lines, `\n` line ends, no control
    /// characters but `\n` and `\t`. Never empty or only whitespace.
    pub text: String,
}

/// Extracts the text of an uploaded file.
///
/// The content decides the family: `%PDF-` in the first 1,024 bytes is a PDF;
/// anything else must be text (UTF-8, with or without a BOM, or UTF-16 with a
/// BOM); content that is not text and carries a known signature (zip, office
/// documents, images, executables...) is refused as [`ExtractError::Unsupported`]
/// naming the detected type, other non-text as [`ExtractError::Binary`], whatever
/// the name says. Among text formats
/// the extension picks Markdown (`.md`, `.markdown`), CSV (`.csv`, `.tsv`) or HTML
/// (`.html`, `.htm`, `.xhtml`); text of any other name that starts with
/// `<!doctype html` or `<html` is read as HTML too (so its scripts and markup stay
/// out of the knowledge base); the rest is plain text.
///
/// Errors: [`ExtractError::TooLarge`] past any of the `limits`; `Unsupported` or
/// `Binary` for non-text; `NotUtf8`, `Encrypted`, `Malformed` and `NoText` for
/// content that cannot be read. Third-party parsers (PDF) run behind
/// `catch_unwind`-style isolation, so a bug in them is a `Malformed` error, not a
/// crash.
pub fn extract(bytes: &[u8], declared_name: &str, limits: &Limits) -> Result<Document, ExtractError> {
    let name = safe_file_name(declared_name);
    if bytes.len() > limits.max_input_bytes {
        return Err(ExtractError::TooLarge {
            name,
            what: "the file size in bytes",
            actual: bytes.len().to_string(),
            limit: limits.max_input_bytes as u64,
        });
    }
    let ext = extension(&name);
    let (kind, text) = if is_pdf(bytes) {
        (Kind::Pdf, pdf::extract(bytes, &name, limits)?)
    } else {
        let text = decode_text(bytes, &name).map_err(|e| match infer::get(bytes) {
            Some(t) if t.matcher_type() != infer::MatcherType::Text => {
                ExtractError::Unsupported { name: name.clone(), detected: t.mime_type().to_string() }
            }
            _ => e,
        })?;
        match text_kind(&ext, &text) {
            Kind::Markdown => (Kind::Markdown, markdown::to_text(&text)),
            Kind::Csv => (Kind::Csv, csv::to_text(&text, ext == "tsv", &name, limits)?),
            Kind::Html => (Kind::Html, html::to_text(&text, &name)?),
            _ => (Kind::Text, text),
        }
    };
    let text = tidy(&text);
    if text.is_empty() {
        return Err(ExtractError::NoText { name });
    }
    let chars = text.chars().count();
    if chars > limits.max_output_chars {
        return Err(ExtractError::TooLarge {
            name,
            what: "the extracted text in characters",
            actual: chars.to_string(),
            limit: limits.max_output_chars as u64,
        });
    }
    Ok(Document { name, kind, text })
}

fn is_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-")
}

fn text_kind(ext: &str, text: &str) -> Kind {
    match ext {
        "md" | "markdown" | "mdown" | "mkd" => Kind::Markdown,
        "csv" | "tsv" => Kind::Csv,
        "html" | "htm" | "xhtml" => Kind::Html,
        _ => {
            let head: String = text.trim_start().chars().take(14).collect::<String>().to_ascii_lowercase();
            if head.starts_with("<!doctype html") || head.starts_with("<html") {
                Kind::Html
            } else {
                Kind::Text
            }
        }
    }
}

/// Decodes text bytes: UTF-8 (a BOM is dropped) or UTF-16 with a BOM. Refuses NUL
/// bytes and text that is mostly control characters as binary.
fn decode_text(bytes: &[u8], name: &str) -> Result<String, ExtractError> {
    let text = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        utf8(rest, name, 3)?
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        utf16(rest, name, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        utf16(rest, name, u16::from_be_bytes)?
    } else {
        utf8(bytes, name, 0)?
    };
    let binary = |reason: String| ExtractError::Binary { name: name.to_string(), reason };
    if text.contains('\0') {
        return Err(binary("it contains NUL characters".into()));
    }
    let total = text.chars().count();
    let control = text.chars().filter(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c')).count();
    if control > 0 && control * 20 > total {
        return Err(binary(format!("{control} of its {total} characters are control characters")));
    }
    Ok(text)
}

fn utf8(bytes: &[u8], name: &str, skipped: usize) -> Result<String, ExtractError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) if bytes.contains(&0) => {
            Err(ExtractError::Binary { name: name.to_string(), reason: "it contains NUL bytes".into() })
        }
        Err(e) => Err(ExtractError::NotUtf8 { name: name.to_string(), offset: skipped + e.valid_up_to() }),
    }
}

fn utf16(bytes: &[u8], name: &str, unit: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    let malformed = |detail: &str| ExtractError::Malformed { name: name.to_string(), kind: "UTF-16 text", detail: detail.into() };
    if !bytes.len().is_multiple_of(2) {
        return Err(malformed("an odd number of bytes"));
    }
    let units = bytes.chunks_exact(2).map(|b| unit([b[0], b[1]]));
    char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| malformed("an unpaired surrogate"))
}

/// Normalises extracted text: `\n` line ends, no control characters but `\n` and
/// `\t`, no trailing spaces, at most one blank line in a row, trimmed.
fn tidy(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split('\n') {
        let line: String = line.chars().filter(|&c| !c.is_control() || c == '\t').collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run == 1 && !out.is_empty() {
                out.push('\n');
            }
            continue;
        }
        blank_run = 0;
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}
