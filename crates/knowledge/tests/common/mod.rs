//! Shared by the tests: where the model is, and small PDFs written by hand.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// The all-MiniLM-L6-v2 folder; fails (never skips) when it is not installed.
pub fn minilm_dir() -> PathBuf {
    let dir = voxgate_models::model_dir(voxgate_models::catalog::MINILM);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{}: all-MiniLM-L6-v2 is missing; run `voxgate models fetch`",
        dir.display()
    );
    dir
}

/// A PDF from object bodies numbered from 1 (object 1 the catalogue), with a
/// correct cross-reference table. `trailer_extra` goes into the trailer dictionary.
pub fn pdf(objects: &[Vec<u8>], trailer_extra: &str) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        writeln!(out, "{} 0 obj", i + 1).unwrap();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).unwrap();
    for offset in offsets {
        writeln!(out, "{offset:010} 00000 n ").unwrap();
    }
    write!(out, "trailer\n<< /Size {} /Root 1 0 R {trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).unwrap();
    out
}

/// A stream object body: `<< /Length n dict >> stream ... endstream`.
pub fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< /Length {} {dict} >>\nstream\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

pub fn obj(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The catalogue, page tree and one page using Helvetica (object 4) whose
/// content is object 5, plus `more` objects from 6.
pub fn one_page(content: Vec<u8>, page_extra: &str, more: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut objects = vec![
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj(&format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> {page_extra} >> /Contents 5 0 R >>"
        )),
        obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"),
        content,
    ];
    objects.extend(more);
    objects
}

/// A one-page PDF showing `lines` (one `Tj` each) in an uncompressed stream.
pub fn text_pdf(lines: &[&str]) -> Vec<u8> {
    pdf(&one_page(stream("", &show(lines)), "", vec![]), "")
}

/// A content stream showing `lines` in Helvetica.
pub fn show(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for line in lines {
        content.push_str(&format!("({}) Tj T*\n", line.replace('(', "\\(").replace(')', "\\)")));
    }
    content.push_str("ET");
    content.into_bytes()
}

/// zlib of `total` zero bytes, compressed a megabyte at a time (the test never
/// holds the inflated data).
pub fn zlib_of_zeros(total: usize) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).unwrap();
        left -= n;
    }
    encoder.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Peak resident memory of this test process, in bytes (Linux).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}
