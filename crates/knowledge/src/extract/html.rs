//! HTML to readable text with html2text (html5ever underneath): scripts, styles
//! and the head are dropped; links keep their text; tables keep their cells.
//!
//! html2text's time grows with the square of the nesting depth (100,000 nested
//! `<div>` take minutes), so a lexical pre-pass refuses HTML nested more than
//! [`MAX_DEPTH`] elements deep before it is parsed. Written by hand: no crate
//! bounds this.

use crate::error::ExtractError;

/// Wide enough that paragraphs are not wrapped; overflow allowed for deep nesting.
const WIDTH: usize = 10_000;
/// Deepest element nesting accepted (real pages stay well under 100).
pub(crate) const MAX_DEPTH: usize = 512;

pub(crate) fn to_text(html: &str, name: &str) -> Result<String, ExtractError> {
    let malformed = |detail: String| ExtractError::Malformed { name: name.to_string(), kind: "HTML", detail };
    let depth = max_depth(html);
    if depth > MAX_DEPTH {
        return Err(malformed(format!("elements are nested {depth} deep, more than {MAX_DEPTH}")));
    }
    html2text::config::plain_no_decorate()
        .allow_width_overflow()
        .no_table_borders()
        .no_link_wrapping()
        .string_from_read(html.as_bytes(), WIDTH)
        .map_err(|e| malformed(e.to_string()))
}

/// Elements that never nest: void elements, and those whose end tag is optional
/// (a parser closes them implicitly, so counting them would overestimate).
fn never_nests(tag: &str) -> bool {
    matches!(
        tag,
        "area" | "base" | "br" | "col" | "embed" | "hr" | "img" | "input" | "link" | "meta" | "source" | "track" | "wbr"
            | "p" | "li" | "dt" | "dd" | "tr" | "td" | "th" | "option" | "optgroup" | "thead" | "tbody" | "tfoot"
            | "colgroup" | "caption" | "rb" | "rt" | "rtc" | "rp" | "html" | "head" | "body"
    )
}

/// Elements whose content is raw text up to their end tag.
fn raw_text(tag: &str) -> bool {
    matches!(tag, "script" | "style" | "textarea" | "title" | "xmp" | "iframe" | "noembed" | "noframes")
}

/// An upper estimate of how deep the elements of `html` nest, from its tags alone.
/// `<x/>` counts as an open tag outside SVG and MathML, as HTML parsers treat it.
fn max_depth(html: &str) -> usize {
    let b = html.as_bytes();
    let lower = html.to_ascii_lowercase();
    let (mut i, mut depth, mut max, mut foreign) = (0usize, 0usize, 0usize, 0usize);
    while let Some(p) = b[i..].iter().position(|&c| c == b'<') {
        let mut j = i + p + 1;
        if lower[j..].starts_with("!--") {
            i = lower[j..].find("-->").map_or(b.len(), |e| j + e + 3);
            continue;
        }
        let closing = b.get(j) == Some(&b'/');
        if closing {
            j += 1;
        }
        let name_len = b[j..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b':').count();
        if name_len == 0 {
            i = j;
            continue;
        }
        let tag = &lower[j..j + name_len];
        let end = b[j..].iter().position(|&c| c == b'>').map_or(b.len(), |e| j + e);
        let self_closing = end > 0 && b.get(end - 1) == Some(&b'/');
        i = (end + 1).min(b.len());
        if closing {
            if !never_nests(tag) {
                depth = depth.saturating_sub(1);
                if matches!(tag, "svg" | "math") {
                    foreign = foreign.saturating_sub(1);
                }
            }
            continue;
        }
        if raw_text(tag) {
            i = lower[i..].find(&format!("</{tag}")).map_or(b.len(), |e| i + e);
            continue;
        }
        if never_nests(tag) || (self_closing && foreign > 0) {
            continue;
        }
        if matches!(tag, "svg" | "math") {
            foreign += 1;
        }
        depth += 1;
        max = max.max(depth);
    }
    max
}
