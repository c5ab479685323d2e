//! Cleaning an uploaded file's declared name for display and storage.

/// The longest name [`safe_file_name`] returns, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 120;

/// A readable, harmless version of a declared file name: only the last path
/// component (`../../etc/passwd` -> `passwd`, `C:\x\y.pdf` -> `y.pdf`), without
/// control characters, NULs, invisible bidirectional or zero-width marks, leading
/// dots or characters Windows refuses (`<>:"|?*`, replaced by `_`); whitespace runs
/// become one space; at most [`MAX_FILE_NAME_CHARS`] characters, keeping the
/// extension when it is short. Never empty: `file` when nothing usable is left.
///
/// It is for display and for the stored name column; never use it, or any
/// user-supplied name, as a path on disk.
pub fn safe_file_name(declared: &str) -> String {
    let last = declared.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name = String::with_capacity(last.len().min(4 * MAX_FILE_NAME_CHARS));
    let mut pending_space = false;
    for c in last.chars() {
        if c.is_whitespace() {
            pending_space = !name.is_empty();
            continue;
        }
        if c.is_control() || is_invisible(c) {
            continue;
        }
        if pending_space {
            name.push(' ');
            pending_space = false;
        }
        name.push(if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c });
    }
    let name = name.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let name = if is_windows_device(name) { format!("_{name}") } else { name.to_string() };
    let name = shorten(&name);
    if name.is_empty() { "file".to_string() } else { name }
}

/// Format characters that hide or reorder what a name looks like.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
}

fn is_windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
}

/// Cuts a name to [`MAX_FILE_NAME_CHARS`] characters, keeping an extension of up
/// to 10 characters.
fn shorten(name: &str) -> String {
    let count = name.chars().count();
    if count <= MAX_FILE_NAME_CHARS {
        return name.to_string();
    }
    let ext = name.rfind('.').map(|i| &name[i..]).filter(|e| e.chars().count() <= 10).unwrap_or("");
    let keep = MAX_FILE_NAME_CHARS - ext.chars().count();
    let stem: String = name[..name.len() - ext.len()].chars().take(keep).collect();
    format!("{}{ext}", stem.trim_end())
}

/// The lower-case extension of a (cleaned) name, without the dot.
pub(crate) fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}
