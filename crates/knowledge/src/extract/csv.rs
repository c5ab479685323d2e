//! CSV to one line per row, `header: value; header: value`, with the csv crate.
//! The delimiter is `,`, `;` or tab, whichever the header line holds most of
//! (always tab for `.tsv`).

use crate::error::ExtractError;
use crate::extract::Limits;

pub(crate) fn to_text(text: &str, tsv: bool, name: &str, limits: &Limits) -> Result<String, ExtractError> {
    let delimiter = if tsv { b'\t' } else { sniff_delimiter(text) };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let malformed = |e: csv::Error| ExtractError::Malformed { name: name.to_string(), kind: "CSV", detail: e.to_string() };
    let mut records = reader.records();
    let Some(header) = records.next().transpose().map_err(malformed)? else {
        return Ok(String::new());
    };
    check_fields(header.len(), name, limits)?;
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| if h.trim().is_empty() { format!("column {}", i + 1) } else { h.trim().to_string() })
        .collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut rows = 0usize;
    for record in records {
        let record = record.map_err(malformed)?;
        rows += 1;
        if rows > limits.max_rows {
            return Err(ExtractError::TooLarge {
                name: name.to_string(),
                what: "the number of CSV rows",
                actual: format!("more than {}", limits.max_rows),
                limit: limits.max_rows as u64,
            });
        }
        check_fields(record.len(), name, limits)?;
        let mut first = true;
        for (i, value) in record.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push_str("; ");
            }
            first = false;
            match header.get(i) {
                Some(h) => out.push_str(h),
                None => out.push_str(&format!("column {}", i + 1)),
            }
            out.push_str(": ");
            out.push_str(&value.replace(['\r', '\n'], " "));
        }
        if !first {
            out.push('\n');
        }
    }
    if rows == 0 {
        out = header.join("; ");
    }
    Ok(out)
}

fn check_fields(n: usize, name: &str, limits: &Limits) -> Result<(), ExtractError> {
    if n > limits.max_fields {
        return Err(ExtractError::TooLarge {
            name: name.to_string(),
            what: "the number of fields in a CSV row",
            actual: n.to_string(),
            limit: limits.max_fields as u64,
        });
    }
    Ok(())
}

fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or("");
    let count = |d: char| first.chars().filter(|&c| c == d).count();
    [(',', count(',')), (';', count(';')), ('\t', count('\t'))]
        .into_iter()
        .max_by_key(|&(d, n)| (n, d == ','))
        .map(|(d, _)| d as u8)
        .unwrap_or(b',')
}
