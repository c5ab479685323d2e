//! PDF to text: lopdf reads the file, pdf-extract lays out the text. Neither bounds
//! what it inflates or how deep it recurses, so this module does, before handing
//! them the file:
//!
//! 1. Encrypted files are refused before parsing (any `/Encrypt` name, `#`
//!    escapes decoded).
//! 2. Every `stream` in the raw bytes is inflated in a counting loop, whatever
//!    filter it names (zlib, raw deflate, LZW both ways, ASCII85 then those, and
//!    again on what they yield, four layers deep) against
//!    [`Limits::max_decompressed_bytes`] for the whole file, so the object and
//!    cross-reference streams that lopdf inflates while loading are bounded before
//!    it sees them.
//! 3. After loading: images, embedded files and metadata are emptied (text needs
//!    none of them); the other streams are decoded once, in place, along their
//!    declared filters with the same counting decoders, against the limit again;
//!    filter chains longer than four are refused.
//! 4. The page tree's `/Parent` chains and the form XObjects each page draws are
//!    walked without recursion into the parser: loops, nesting deeper than 32,
//!    more than [`Limits::max_xobject_draws`] draws or more content than the limit
//!    are refused (pdf-extract would recurse forever or for hours).
//! 5. Loading and extraction run on their own thread with a 64 MiB stack; a panic
//!    there (pdf-extract panics on much unusual input) is caught at the join and
//!    becomes [`ExtractError::Malformed`]. This is a last line of defence: the
//!    panic message still reaches the process's panic hook (standard error).
//!
//! Not bounded: CPU time inside the parsers on a file that passes these checks
//! (embedded font programs, for one); run the extraction in a background job.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use lopdf::{Dictionary, Document, Object, ObjectId};

use crate::error::ExtractError;
use crate::extract::Limits;

const STACK_BYTES: usize = 64 << 20;
const MAX_FILTER_LAYERS: usize = 4;
const MAX_XOBJECT_DEPTH: usize = 32;
const MAX_PARENT_DEPTH: usize = 64;

pub(crate) fn extract(bytes: &[u8], name: &str, limits: &Limits) -> Result<String, ExtractError> {
    if mentions_encrypt(bytes) {
        return Err(ExtractError::Encrypted { name: name.to_string() });
    }
    let mut budget = limits.max_decompressed_bytes;
    prescan(bytes, &mut budget).map_err(|()| too_much_inflated(name, limits))?;
    let joined = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("pdf-extract".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(s, || load_and_extract(bytes, name, limits))
            .map(|handle| handle.join())
    });
    match joined {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(malformed(name, format!("the PDF reader failed on it ({})", panic_message(&*panic)))),
        Err(e) => Err(malformed(name, format!("could not start the PDF reader: {e}"))),
    }
}

fn malformed(name: &str, detail: String) -> ExtractError {
    ExtractError::Malformed { name: name.to_string(), kind: "PDF", detail }
}

fn too_much_inflated(name: &str, limits: &Limits) -> ExtractError {
    ExtractError::TooLarge {
        name: name.to_string(),
        what: "the PDF's decompressed stream data in bytes",
        actual: format!("more than {}", limits.max_decompressed_bytes),
        limit: limits.max_decompressed_bytes,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    message.chars().take(200).collect()
}

fn load_and_extract(bytes: &[u8], name: &str, limits: &Limits) -> Result<String, ExtractError> {
    let mut doc = Document::load_mem(bytes).map_err(|e| malformed(name, e.to_string()))?;
    if doc.is_encrypted() || doc.trailer.get(b"Encrypt").is_ok() {
        return Err(ExtractError::Encrypted { name: name.to_string() });
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(malformed(name, "it has no pages".into()));
    }
    if pages.len() > limits.max_pages {
        return Err(ExtractError::TooLarge {
            name: name.to_string(),
            what: "the number of PDF pages",
            actual: pages.len().to_string(),
            limit: limits.max_pages as u64,
        });
    }
    inflate_in_place(&mut doc, name, limits)?;
    let mut walk = Walk { doc: &doc, name, limits, draws: 0, bytes: 0, names: HashMap::new() };
    for &page in pages.values() {
        walk.page(page)?;
    }
    let mut out = BoundedText { bytes: Vec::new(), chars: 0, max_chars: limits.max_output_chars, overflow: false };
    let result = {
        let sink: &mut dyn std::io::Write = &mut out;
        let mut output = pdf_extract::PlainTextOutput::new(sink);
        pdf_extract::output_doc(&doc, &mut output)
    };
    if let Err(e) = result
        && !out.overflow
    {
        return Err(malformed(name, e.to_string()));
    }
    if out.overflow {
        return Err(ExtractError::TooLarge {
            name: name.to_string(),
            what: "the extracted text in characters",
            actual: format!("more than {}", limits.max_output_chars),
            limit: limits.max_output_chars as u64,
        });
    }
    String::from_utf8(out.bytes).map_err(|_| malformed(name, "the extracted text is not UTF-8".into()))
}

/// Whether any PDF name in the bytes is `/Encrypt` (with `#xx` escapes decoded).
fn mentions_encrypt(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = bytes[i..].iter().position(|&b| b == b'/') {
        let start = i + p + 1;
        let mut end = start;
        while end < bytes.len() && end - start < 64 && is_name_byte(bytes[end]) {
            end += 1;
        }
        if decode_name(&bytes[start..end]) == b"Encrypt" {
            return true;
        }
        i = start;
    }
    false
}

fn is_name_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && b != 0 && !b"()<>[]{}/%".contains(&b)
}

fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Inflates every stream of the raw file in a counting loop, whatever filter it
/// declares, against `budget` bytes for the whole file. `Err` when past it, or
/// when ASCII85 guesses read more than twice the file (overlapping fake streams).
fn prescan(bytes: &[u8], budget: &mut u64) -> Result<(), ()> {
    let mut a85_work = 2 * bytes.len() as u64 + (1 << 20);
    let mut i = 0;
    while let Some(p) = find(&bytes[i..], b"stream") {
        let at = i + p;
        i = at + 6;
        if at >= 3 && &bytes[at - 3..at] == b"end" {
            continue;
        }
        let mut q = i;
        while q < bytes.len() && matches!(bytes[q], b' ' | b'\t') {
            q += 1;
        }
        let start = if bytes[q..].starts_with(b"\r\n") {
            q + 2
        } else if q < bytes.len() && matches!(bytes[q], b'\n' | b'\r') {
            q + 1
        } else {
            continue;
        };
        let data = &bytes[start..];
        scan_layer(data, 0, budget)?;
        if looks_ascii85(data) {
            let decoded = ascii85(data, &mut a85_work)?;
            scan_layer(&decoded, 1, budget)?;
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Tries the inflating decoders lopdf applies (zlib, raw deflate after a bad zlib
/// header, LZW both ways); what one yields is counted and scanned again, since a
/// stream may be compressed more than once.
fn scan_layer(data: &[u8], depth: usize, budget: &mut u64) -> Result<(), ()> {
    let keep = depth + 1 < MAX_FILTER_LAYERS;
    let mut out = inflate(data, budget, keep)?;
    if out.is_empty() {
        for early_change in [true, false] {
            out = lzw(data, early_change, budget, keep)?;
            if !out.is_empty() {
                break;
            }
        }
    }
    if keep && !out.is_empty() {
        scan_layer(&out, depth + 1, budget)?;
    }
    Ok(())
}

/// zlib, or raw deflate past the two header bytes when zlib yields nothing (as
/// lopdf falls back), counted against `budget`.
fn inflate(data: &[u8], budget: &mut u64, keep: bool) -> Result<Vec<u8>, ()> {
    let out = drain(flate2::read::ZlibDecoder::new(data), budget, keep)?;
    if out.is_empty() && data.len() > 2 {
        return drain(flate2::read::DeflateDecoder::new(&data[2..]), budget, keep);
    }
    Ok(out)
}

/// Reads a decoder to its end or first error, counting against `budget`; keeps
/// the output when asked (and always returns something non-empty if there was any).
fn drain(mut reader: impl Read, budget: &mut u64, keep: bool) -> Result<Vec<u8>, ()> {
    let mut buf = vec![0u8; 1 << 15];
    let mut out = Vec::new();
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(out),
            Ok(n) => {
                *budget = budget.checked_sub(n as u64).ok_or(())?;
                out.extend_from_slice(&buf[..if keep { n } else { 1.min(n) }]);
            }
        }
    }
}

fn lzw(data: &[u8], early_change: bool, budget: &mut u64, keep: bool) -> Result<Vec<u8>, ()> {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let mut decoder = if early_change {
        Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
    } else {
        Decoder::new(BitOrder::Msb, 8)
    };
    let mut buf = vec![0u8; 1 << 15];
    let mut out = Vec::new();
    let mut input = data;
    loop {
        let r = decoder.decode_bytes(input, &mut buf);
        input = &input[r.consumed_in..];
        *budget = budget.checked_sub(r.consumed_out as u64).ok_or(())?;
        out.extend_from_slice(&buf[..if keep { r.consumed_out } else { 1.min(r.consumed_out) }]);
        match r.status {
            Ok(LzwStatus::Ok) if r.consumed_in > 0 || r.consumed_out > 0 => {}
            _ => return Ok(out),
        }
    }
}

fn looks_ascii85(data: &[u8]) -> bool {
    let head: Vec<u8> = data.iter().copied().filter(|b| !b.is_ascii_whitespace()).take(16).collect();
    head.len() >= 5 && head.iter().all(|&b| (b'!'..=b'u').contains(&b) || b == b'z' || b == b'~' || b == b'<')
}

/// ASCII85 as lopdf decodes it (whitespace skipped, `z` is four zeros, any other
/// character ends the data); the bytes read are counted against `work`.
fn ascii85(data: &[u8], work: &mut u64) -> Result<Vec<u8>, ()> {
    let data = data.strip_prefix(b"<~").unwrap_or(data);
    let mut out = Vec::new();
    let (mut group, mut count) = (0u64, 0);
    let mut read = 0u64;
    for &b in data {
        read += 1;
        match b {
            b'z' if count == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group = group * 85 + u64::from(b - b'!');
                count += 1;
                if count == 5 {
                    out.extend_from_slice(&(group as u32).to_be_bytes());
                    (group, count) = (0, 0);
                }
            }
            b if b.is_ascii_whitespace() => {}
            _ => break,
        }
    }
    *work = work.checked_sub(read).ok_or(())?;
    Ok(out)
}

/// Empties the streams text extraction never reads, and decodes the rest once, in
/// place, following their declared filters with counting decoders, against the
/// limit. Filters it does not inflate (images' DCT and the like) are left as they
/// are: lopdf does not decode them either.
fn inflate_in_place(doc: &mut Document, name: &str, limits: &Limits) -> Result<(), ExtractError> {
    let mut budget = limits.max_decompressed_bytes;
    for object in doc.objects.values_mut() {
        let Object::Stream(stream) = object else { continue };
        let get_name = |key: &[u8]| stream.dict.get(key).and_then(Object::as_name).map(<[u8]>::to_vec).ok();
        let kind = get_name(b"Type");
        let subtype = get_name(b"Subtype");
        let unread = matches!(subtype.as_deref(), Some(b"Image" | b"XML"))
            || matches!(kind.as_deref(), Some(b"EmbeddedFile" | b"Metadata" | b"XRef" | b"ObjStm"));
        if unread {
            stream.set_plain_content(Vec::new());
            continue;
        }
        let filters: Vec<Vec<u8>> = stream.filters().map(|f| f.into_iter().map(<[u8]>::to_vec).collect()).unwrap_or_default();
        if filters.len() > MAX_FILTER_LAYERS {
            return Err(malformed(name, format!("a stream has {} filters", filters.len())));
        }
        let params = stream.dict.get(b"DecodeParms").and_then(Object::as_dict).ok();
        let early_change = params.and_then(|p| p.get(b"EarlyChange").and_then(Object::as_i64).ok()).is_none_or(|v| v != 0);
        let predictor = params.and_then(|p| p.get(b"Predictor").and_then(Object::as_i64).ok()).is_some_and(|v| v > 1);
        let mut decoded: Option<Vec<u8>> = None;
        let mut decodable = !filters.is_empty();
        for filter in &filters {
            let input = decoded.as_deref().unwrap_or(&stream.content);
            let step = match filter.as_slice() {
                b"FlateDecode" => inflate(input, &mut budget, true),
                b"LZWDecode" => lzw(input, early_change, &mut budget, true),
                b"ASCII85Decode" => {
                    let mut work = input.len() as u64;
                    ascii85(input, &mut work).and_then(|out| {
                        budget = budget.checked_sub(out.len() as u64).ok_or(())?;
                        Ok(out)
                    })
                }
                _ => {
                    decodable = false;
                    break;
                }
            };
            decoded = Some(step.map_err(|()| too_much_inflated(name, limits))?);
        }
        match decoded {
            // Predictors: lopdf undoes them; the size is now known to be bounded.
            Some(_) if decodable && predictor => {
                let _ = stream.decompress();
            }
            Some(data) if decodable => stream.set_plain_content(data),
            _ => {}
        }
    }
    Ok(())
}

/// Walks what each page draws, the way pdf-extract will, and refuses what would
/// make it recurse forever or work for hours.
struct Walk<'a> {
    doc: &'a Document,
    name: &'a str,
    limits: &'a Limits,
    draws: usize,
    bytes: u64,
    /// The XObject names each content stream draws (`Do`), parsed once.
    names: HashMap<ObjectId, Vec<Vec<u8>>>,
}

impl<'a> Walk<'a> {
    fn page(&mut self, page: ObjectId) -> Result<(), ExtractError> {
        let dict = self.doc.get_dictionary(page).map_err(|e| malformed(self.name, format!("page {page:?}: {e}")))?;
        let resources = self.inherited_resources(dict)?;
        for id in self.doc.get_page_contents(page) {
            let len = self.doc.get_object(id).and_then(Object::as_stream).map(|s| s.content.len()).unwrap_or(0);
            self.add_bytes(len)?;
        }
        let content = self.doc.get_page_content(page).unwrap_or_default();
        let drawn = do_names(&content);
        let mut stack = Vec::new();
        self.draw(&drawn, resources, &mut stack)
    }

    /// The page's resources, looking up `/Parent` chains as pdf-extract does, but
    /// refusing loops and chains deeper than [`MAX_PARENT_DEPTH`].
    fn inherited_resources(&self, mut dict: &'a Dictionary) -> Result<Option<&'a Dictionary>, ExtractError> {
        let mut seen = HashSet::new();
        loop {
            if let Ok(resources) = dict.get(b"Resources").and_then(|o| self.doc.dereference(o)).and_then(|(_, o)| o.as_dict()) {
                return Ok(Some(resources));
            }
            let Ok(parent) = dict.get(b"Parent").and_then(Object::as_reference) else { return Ok(None) };
            if !seen.insert(parent) || seen.len() > MAX_PARENT_DEPTH {
                return Err(malformed(self.name, "its page tree loops (a page is its own ancestor)".into()));
            }
            let Ok(next) = self.doc.get_dictionary(parent) else { return Ok(None) };
            dict = next;
        }
    }

    fn draw(&mut self, drawn: &[Vec<u8>], resources: Option<&'a Dictionary>, stack: &mut Vec<ObjectId>) -> Result<(), ExtractError> {
        let Some(resources) = resources else { return Ok(()) };
        let Ok(xobjects) = resources.get(b"XObject").and_then(|o| self.doc.dereference(o)).and_then(|(_, o)| o.as_dict()) else {
            return Ok(());
        };
        for name in drawn {
            let Ok(id) = xobjects.get(name).and_then(Object::as_reference) else { continue };
            let Ok(stream) = self.doc.get_object(id).and_then(Object::as_stream) else { continue };
            self.draws += 1;
            if self.draws > self.limits.max_xobject_draws {
                return Err(ExtractError::TooLarge {
                    name: self.name.to_string(),
                    what: "the number of form XObjects the PDF's pages draw",
                    actual: format!("more than {}", self.limits.max_xobject_draws),
                    limit: self.limits.max_xobject_draws as u64,
                });
            }
            if stack.contains(&id) {
                return Err(malformed(self.name, "a form XObject draws itself".into()));
            }
            if stack.len() >= MAX_XOBJECT_DEPTH {
                return Err(malformed(self.name, format!("form XObjects are nested more than {MAX_XOBJECT_DEPTH} deep")));
            }
            self.add_bytes(stream.content.len())?;
            let inner = stream
                .dict
                .get(b"Resources")
                .and_then(|o| self.doc.dereference(o))
                .and_then(|(_, o)| o.as_dict())
                .ok()
                .or(Some(resources));
            let names = self.names.entry(id).or_insert_with(|| do_names(&stream.content)).clone();
            stack.push(id);
            self.draw(&names, inner, stack)?;
            stack.pop();
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: usize) -> Result<(), ExtractError> {
        self.bytes += n as u64;
        if self.bytes > self.limits.max_decompressed_bytes {
            return Err(ExtractError::TooLarge {
                name: self.name.to_string(),
                what: "the PDF's page content in bytes, counting each form XObject every time it is drawn",
                actual: format!("more than {}", self.limits.max_decompressed_bytes),
                limit: self.limits.max_decompressed_bytes,
            });
        }
        Ok(())
    }
}

/// The names a content stream draws with `Do`.
fn do_names(content: &[u8]) -> Vec<Vec<u8>> {
    let Ok(content) = lopdf::content::Content::decode(content) else { return Vec::new() };
    content
        .operations
        .iter()
        .filter(|op| op.operator == "Do")
        .filter_map(|op| op.operands.first().and_then(|o| o.as_name().ok()).map(<[u8]>::to_vec))
        .collect()
}

/// Collects pdf-extract's output, stopping it (with an error it passes up) past
/// the character limit.
struct BoundedText {
    bytes: Vec<u8>,
    chars: usize,
    max_chars: usize,
    overflow: bool,
}

impl std::io::Write for BoundedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chars += buf.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        if self.chars > self.max_chars {
            self.overflow = true;
            return Err(std::io::Error::other("text limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
