//! espeak-ng, loaded at run time, turning text into IPA phonemes the way Piper does.
//!
//! espeak-ng keeps global state and is not thread-safe, so the library lives in
//! one process-wide slot behind a mutex: it is loaded and started once, from one
//! folder, and every call takes the lock. An [`Espeak`] value is proof that the
//! start succeeded; copies are free.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use libloading::Library;

use crate::error::{Error, describe};

/// The library file inside the espeak-ng folder.
pub const LIBRARY_FILE: &str = "libespeak-ng.so";
/// The data folder inside the espeak-ng folder.
pub const DATA_DIR: &str = "espeak-ng-data";

// espeak-ng copies "<path>/espeak-ng-data" into a fixed 160-byte buffer and
// builds file names from it; keep well inside that.
const MAX_DIR_BYTES: usize = 100;
const MAX_VOICE_BYTES: usize = 40;

const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;
const ENOUTPUT_MODE_SYNCHRONOUS: c_int = 0x0001;

type InitializePathFn = unsafe extern "C" fn(path: *const c_char);
type InitializeFn = unsafe extern "C" fn(context: *mut *mut c_void) -> c_int;
type InitializeOutputFn =
    unsafe extern "C" fn(mode: c_int, buffer_length: c_int, device: *const c_char) -> c_int;
type StatusMessageFn = unsafe extern "C" fn(status: c_int, buffer: *mut c_char, length: usize);
type ClearContextFn = unsafe extern "C" fn(context: *mut *mut c_void);
type SetVoiceByNameFn = unsafe extern "C" fn(name: *const c_char) -> c_int;
type TextToPhonemesFn = unsafe extern "C" fn(
    textptr: *mut *const c_void,
    textmode: c_int,
    phonememode: c_int,
) -> *const c_char;

/// The functions used, copied out of the library, which stays loaded for the
/// life of the process.
#[derive(Clone, Copy)]
struct Api {
    set_voice_by_name: SetVoiceByNameFn,
    text_to_phonemes: TextToPhonemesFn,
}

struct Engine {
    _library: Library,
    api: Api,
    voice: Option<String>,
}

struct Slot {
    dir: PathBuf,
    /// A failed start inside espeak-ng leaves its globals half set: remember it
    /// and refuse further use rather than start again.
    engine: Result<Engine, String>,
}

static SLOT: Mutex<Option<Slot>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Slot>> {
    // espeak-ng calls never unwind, so a poisoned lock holds consistent state.
    SLOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handle on the process-wide espeak-ng. Cheap to copy, `Send + Sync`.
#[derive(Clone, Copy, Debug)]
pub struct Espeak {
    _started: (),
}

/// How a clause ended, as far as Piper cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminator {
    Period,
    Question,
    Exclamation,
    Comma,
    Colon,
    Semicolon,
}

impl Terminator {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'.' => Self::Period,
            b'?' => Self::Question,
            b'!' => Self::Exclamation,
            b',' => Self::Comma,
            b':' => Self::Colon,
            b';' => Self::Semicolon,
            _ => return None,
        })
    }

    /// Whether the clause ends a sentence.
    pub fn ends_sentence(self) -> bool {
        matches!(self, Self::Period | Self::Question | Self::Exclamation)
    }

    /// The phonemes Piper appends for this terminator.
    pub fn phonemes(self) -> &'static str {
        match self {
            Self::Period => ".",
            Self::Question => "?",
            Self::Exclamation => "!",
            Self::Comma => ", ",
            Self::Colon => ": ",
            Self::Semicolon => "; ",
        }
    }
}

/// The IPA phonemes of one clause, and the punctuation that ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// IPA, words separated by spaces, language-switch flags such as `(fr)` removed.
    pub phonemes: String,
    pub terminator: Option<Terminator>,
}

impl Espeak {
    /// Loads `<dir>/libespeak-ng.so` and starts it with the data in
    /// `<dir>/espeak-ng-data`, once per process. Later calls with the same folder
    /// return the running instance; a different folder is an error.
    pub fn load(dir: &Path) -> Result<Espeak, Error> {
        let dir = std::fs::canonicalize(dir).map_err(|_| Error::Missing {
            what: "the espeak-ng folder",
            path: dir.to_path_buf(),
        })?;
        let library_path = dir.join(LIBRARY_FILE);
        if !library_path.is_file() {
            return Err(Error::Missing {
                what: "libespeak-ng",
                path: library_path,
            });
        }
        let data = dir.join(DATA_DIR);
        if !data.join("phontab").is_file() {
            return Err(Error::Missing {
                what: "the espeak-ng data folder",
                path: data,
            });
        }
        let mut slot = lock();
        if let Some(existing) = slot.as_ref() {
            if existing.dir != dir {
                return Err(Error::EspeakAlreadyInitialized {
                    current: existing.dir.clone(),
                    requested: dir,
                });
            }
            return match &existing.engine {
                Ok(_) => Ok(Espeak { _started: () }),
                Err(reason) => Err(Error::EspeakInit {
                    path: dir,
                    reason: reason.clone(),
                }),
            };
        }
        let dir_c = path_to_cstring(&dir)?;
        let (library, init) = open(&library_path)?;

        // SAFETY: the function pointers come from the library just loaded, which
        // `library` keeps loaded; `dir_c` is NUL-terminated and short enough for
        // espeak-ng's path buffer; `context` is an out-pointer that espeak-ng
        // fills and that we hand back to its clear function. We hold the lock,
        // so no other thread is inside espeak-ng.
        let started = unsafe {
            (init.initialize_path)(dir_c.as_ptr());
            let mut context: *mut c_void = std::ptr::null_mut();
            let status = (init.initialize)(&mut context);
            if status != 0 {
                let mut buffer = [0 as c_char; 512];
                (init.status_message)(status, buffer.as_mut_ptr(), buffer.len());
                if !context.is_null() {
                    (init.clear_context)(&mut context);
                }
                buffer[buffer.len() - 1] = 0;
                Err(CStr::from_ptr(buffer.as_ptr())
                    .to_string_lossy()
                    .trim()
                    .to_string())
            } else {
                match (init.initialize_output)(ENOUTPUT_MODE_SYNCHRONOUS, 0, std::ptr::null()) {
                    0 => Ok(()),
                    code => Err(format!("could not set up output (status {code})")),
                }
            }
        };
        let engine = match started {
            Ok(()) => Ok(Engine {
                _library: library,
                api: init.api,
                voice: None,
            }),
            Err(reason) => {
                // A half-started espeak-ng may have threads or callbacks inside
                // the library: never unload it.
                std::mem::forget(library);
                Err(reason)
            }
        };
        let result = match &engine {
            Ok(_) => Ok(Espeak { _started: () }),
            Err(reason) => Err(Error::EspeakInit {
                path: data,
                reason: reason.clone(),
            }),
        };
        *slot = Some(Slot { dir, engine });
        result
    }

    /// The phonemes of every clause of `text` spoken with espeak-ng voice `voice`.
    pub fn phonemize(&self, text: &str, voice: &str) -> Result<Vec<Clause>, Error> {
        self.clauses(text, voice)?.collect()
    }

    /// The clauses of `text`, phonemized piece by piece (a piece is a few
    /// sentences) as the iterator is advanced, so the first clause comes back
    /// without reading the whole text.
    pub fn clauses(&self, text: &str, voice: &str) -> Result<Clauses, Error> {
        check_voice(voice)?;
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Ok(Clauses {
            rest: text,
            start: 0,
            ready: VecDeque::new(),
            voice: voice.to_string(),
            failed: false,
        })
    }
}

/// Iterator over the clauses of a text; see [`Espeak::clauses`].
pub struct Clauses {
    /// The text, control characters blanked; `rest[start..]` is still to read.
    rest: String,
    start: usize,
    ready: VecDeque<Clause>,
    voice: String,
    failed: bool,
}

impl Iterator for Clauses {
    type Item = Result<Clause, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.is_empty() && !self.failed && self.start < self.rest.len() {
            let end = self.start + piece_len(&self.rest[self.start..], PIECE_BYTES);
            let piece = &self.rest[self.start..end];
            self.start = end;
            match phonemize_piece(piece, &self.voice) {
                Ok(clauses) => self.ready.extend(clauses),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// espeak-ng keeps the character it read past a clause for its next call, so
/// the clauses of one piece of text are read under one hold of the lock, to
/// the piece's end: another text never starts with this one's leftovers.
const PIECE_BYTES: usize = 1000;

/// The length of the first piece of `text`: all of it if short, else up to the
/// last sentence end (or else blank) within `max` bytes.
fn piece_len(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &text.as_bytes()[..cut];
    let after_sentence = head
        .windows(2)
        .rposition(|w| matches!(w[0], b'.' | b'!' | b'?') && w[1] == b' ');
    match after_sentence
        .map(|i| i + 2)
        .or_else(|| head.iter().rposition(|b| *b == b' ').map(|i| i + 1))
    {
        Some(n) if n > 0 => n,
        _ if cut > 0 => cut,
        // `max` is smaller than the first character: take that character.
        _ => text.chars().next().map_or(0, char::len_utf8),
    }
}

fn phonemize_piece(piece: &str, voice: &str) -> Result<Vec<Clause>, Error> {
    let mut text = Vec::with_capacity(piece.len() + 1);
    text.extend_from_slice(piece.as_bytes());
    text.push(0);
    let len = piece.len();

    let mut slot = lock();
    let engine = match slot.as_mut().map(|s| &mut s.engine) {
        Some(Ok(engine)) => engine,
        _ => return Err(Error::Phonemize("espeak-ng is not running".into())),
    };
    if engine.voice.as_deref() != Some(voice) {
        let name = CString::new(voice).map_err(|_| Error::Phonemize("bad voice name".into()))?;
        // SAFETY: `name` is NUL-terminated and short; the lock is held.
        let code = unsafe { (engine.api.set_voice_by_name)(name.as_ptr()) };
        if code != 0 {
            engine.voice = None;
            return Err(Error::EspeakVoice {
                voice: voice.to_string(),
                code,
            });
        }
        engine.voice = Some(voice.to_string());
    }
    let base = text.as_ptr();
    let mut offset = 0;
    let mut clauses = Vec::new();
    // espeak-ng may stop with the pointer at the NUL and one character still
    // held: call again until it reports the end (NULL). Bounded regardless.
    for call in 0..=len + 1 {
        // SAFETY: `offset <= len`, so the pointer is inside the NUL-terminated
        // buffer; espeak-ng reads up to the NUL and moves the pointer forward
        // (or sets it to NULL at the end). The returned string lives in
        // espeak-ng's static buffer and is copied before the lock is released.
        let (phonemes, next) = unsafe {
            let mut cursor = base.add(offset) as *const c_void;
            let out =
                (engine.api.text_to_phonemes)(&mut cursor, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA);
            if out.is_null() {
                return Err(Error::Phonemize(
                    "espeak-ng could not decode the text".into(),
                ));
            }
            let phonemes = CStr::from_ptr(out).to_string_lossy().into_owned();
            let next = (!cursor.is_null()).then(|| (cursor as usize).wrapping_sub(base as usize));
            (phonemes, next)
        };
        let next = next
            .filter(|&n| n >= offset && n <= len && !(n == len && offset == len) && call <= len);
        // espeak-ng reads one character past the clause; the terminator is the
        // last non-blank byte before that (Piper's rule). At the end the clause
        // runs to the end of the text.
        let scan_end = next.unwrap_or(len + 1).max(offset + 1);
        let terminator = text[offset..scan_end - 1]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .and_then(|&b| Terminator::from_byte(b));
        clauses.push(Clause {
            phonemes: strip_language_flags(&phonemes),
            terminator,
        });
        match next {
            Some(n) => offset = n,
            None => break,
        }
    }
    Ok(clauses)
}

/// Removes espeak-ng's language-switch flags, e.g. `(fr)`, as Piper does.
fn strip_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut in_flag = false;
    for c in phonemes.chars() {
        match (in_flag, c) {
            (true, ')') => in_flag = false,
            (true, _) => {}
            (false, '(') => in_flag = true,
            (false, c) => out.push(c),
        }
    }
    out
}

fn check_voice(voice: &str) -> Result<(), Error> {
    let ok = !voice.is_empty()
        && voice.len() <= MAX_VOICE_BYTES
        && voice
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(Error::EspeakVoice {
            voice: voice.chars().take(64).collect(),
            code: -1,
        })
    }
}

fn path_to_cstring(dir: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    if bytes.len() > MAX_DIR_BYTES {
        return Err(Error::EspeakInit {
            path: dir.to_path_buf(),
            reason: format!(
                "the folder path is longer than espeak-ng accepts ({MAX_DIR_BYTES} bytes); move it"
            ),
        });
    }
    CString::new(bytes).map_err(|_| Error::EspeakInit {
        path: dir.to_path_buf(),
        reason: "NUL in path".into(),
    })
}

struct InitApi {
    initialize_path: InitializePathFn,
    initialize: InitializeFn,
    initialize_output: InitializeOutputFn,
    status_message: StatusMessageFn,
    clear_context: ClearContextFn,
    api: Api,
}

fn open(path: &Path) -> Result<(Library, InitApi), Error> {
    let bad = |reason: String| Error::EspeakLibrary {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading runs the library's initialisers; the file is the one the
    // caller named as libespeak-ng, whose initialisers are benign.
    let library = unsafe { Library::new(path) }.map_err(|e| bad(describe(&e)))?;
    macro_rules! symbol {
        ($name:literal) => {
            // SAFETY: the type given matches the C declaration in espeak-ng's
            // headers (speak_lib.h / espeak_ng.h); the pointer is copied out and
            // used only while `library` stays loaded (for the process's life).
            *unsafe { library.get($name.as_bytes()) }
                .map_err(|_| bad(format!("it has no `{}` function", $name)))?
        };
    }
    let init = InitApi {
        initialize_path: symbol!("espeak_ng_InitializePath"),
        initialize: symbol!("espeak_ng_Initialize"),
        initialize_output: symbol!("espeak_ng_InitializeOutput"),
        status_message: symbol!("espeak_ng_GetStatusCodeMessage"),
        clear_context: symbol!("espeak_ng_ClearErrorContext"),
        api: Api {
            set_voice_by_name: symbol!("espeak_SetVoiceByName"),
            text_to_phonemes: symbol!("espeak_TextToPhonemes"),
        },
    };
    Ok((library, init))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_after_sentences_or_blanks() {
        assert_eq!(piece_len("short", 10), 5);
        assert_eq!(piece_len("One. Two three four", 12), 5);
        assert_eq!(piece_len("one two three", 10), 8);
        assert_eq!(piece_len("abcdefghijkl", 5), 5);
        assert_eq!(piece_len("ééééé", 3), 2);
        assert_eq!(piece_len("😀😀", 2), 4);
    }

    #[test]
    fn language_flags_are_removed() {
        assert_eq!(strip_language_flags("bɔ̃(fr)ʒuʁ(en) hə"), "bɔ̃ʒuʁ hə");
        assert_eq!(strip_language_flags("(unterminated"), "");
    }

    #[test]
    fn voices_are_checked() {
        assert!(check_voice("en-us").is_ok());
        assert!(check_voice("en-us+f3").is_ok());
        assert!(check_voice("").is_err());
        assert!(check_voice("en us").is_err());
        assert!(check_voice("../../etc/passwd").is_err());
        assert!(check_voice(&"a".repeat(41)).is_err());
    }
}
