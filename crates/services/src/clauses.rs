//! Cuts a stream of model tokens into clauses for speech synthesis. Speech starts
//! on the first clause, not on the whole reply, so the caller hears an answer
//! after one clause's worth of tokens.
//!
//! A sentence ends at `.`, `!`, `?` or `…` (or their CJK forms) followed by white
//! space; a pending terminator at the very end of what has arrived waits for the
//! next token (`3.` may become `3.5`). Abbreviations (`Dr.`, `e.g.`) and initials
//! (`J.`) do not end sentences. A clause also ends at `,`, `;`, `:` or a dash
//! followed by white space, once it is long enough to be worth speaking alone; the
//! first clause of a reply gets a lower bar, since it sets the caller's wait.

/// Words that end with a period without ending a sentence (compared lowercased).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "no", "approx", "inc", "ltd", "co",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s",
];

/// Splits tokens into clauses.
#[derive(Debug, Clone)]
pub struct ClauseAggregator {
    buf: String,
    /// A comma-like break is taken once the clause has this many characters.
    pub min_clause_chars: usize,
    /// The same, for the first clause of a reply.
    pub min_first_clause_chars: usize,
    emitted: usize,
}

impl Default for ClauseAggregator {
    fn default() -> Self {
        ClauseAggregator { buf: String::new(), min_clause_chars: 40, min_first_clause_chars: 12, emitted: 0 }
    }
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

fn is_soft_break(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–' | '，' | '；')
}

/// CJK terminators end a sentence without a following space.
fn ends_without_space(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

impl ClauseAggregator {
    /// Adds a token; returns the clauses it completed, trimmed, in order.
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.buf.push_str(token);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let clause: String = self.buf.drain(..end).collect();
            let clause = clause.trim();
            if !clause.is_empty() {
                out.push(clause.to_string());
                self.emitted += 1;
            }
        }
        out
    }

    /// The end of the reply: whatever is left, as the last clause.
    pub fn flush(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        self.emitted = 0;
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Drops everything (on interruption).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.emitted = 0;
    }

    /// Byte index just past the first boundary in the buffer, if there is one.
    fn boundary(&self) -> Option<usize> {
        let min_soft = if self.emitted == 0 { self.min_first_clause_chars } else { self.min_clause_chars };
        let mut chars = self.buf.char_indices().peekable();
        let mut count = 0usize;
        while let Some((i, c)) = chars.next() {
            count += 1;
            let after = i + c.len_utf8();
            if c == '\n' && count > 1 {
                return Some(after);
            }
            if ends_without_space(c) {
                return Some(after);
            }
            let next = chars.peek().map(|&(_, n)| n);
            let Some(next) = next else { break };
            if is_terminator(c) && next.is_whitespace() && !self.abbreviation_before(i) {
                return Some(after);
            }
            if is_soft_break(c) && next.is_whitespace() && count >= min_soft {
                return Some(after);
            }
        }
        None
    }

    /// True when the period at byte `i` ends an abbreviation or an initial.
    fn abbreviation_before(&self, i: usize) -> bool {
        if !self.buf[i..].starts_with('.') {
            return false;
        }
        let word = self.buf[..i].rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"').next().unwrap_or("");
        let lower = word.to_lowercase();
        (word.chars().count() == 1 && word.chars().all(|c| c.is_alphabetic() && c.is_uppercase()))
            || ABBREVIATIONS.contains(&lower.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(tokens: &[&str]) -> Vec<String> {
        let mut a = ClauseAggregator::default();
        let mut out: Vec<String> = tokens.iter().flat_map(|t| a.push(t)).collect();
        out.extend(a.flush());
        out
    }

    #[test]
    fn sentences_split_at_terminators_followed_by_space() {
        assert_eq!(feed(&["Hello", " there", ".", " How", " are you", "?", " Fine!"]), vec!["Hello there.", "How are you?", "Fine!"]);
    }

    #[test]
    fn the_first_sentence_comes_out_before_the_reply_ends() {
        let mut a = ClauseAggregator::default();
        assert!(a.push("Sure").is_empty());
        assert!(a.push(".").is_empty(), "a terminator at the end waits for the next token");
        assert_eq!(a.push(" The"), vec!["Sure."]);
    }

    #[test]
    fn decimals_abbreviations_and_initials_do_not_split() {
        assert_eq!(feed(&["It costs 3.50 today. Dr. Smith and J. R. R. Tolkien agree, e.g. here."]), vec![
            "It costs 3.50 today.",
            "Dr. Smith and J. R. R. Tolkien agree, e.g. here."
        ]);
    }

    #[test]
    fn commas_split_long_clauses_and_the_first_one_early() {
        let out = feed(&["Well, let me check that for you, it will only take a moment, thanks for waiting."]);
        assert_eq!(out[0], "Well, let me check that for you,");
        assert!(out.len() >= 2, "{out:?}");
        assert_eq!(out.concat().replace(' ', ""), "Well,letmecheckthatforyou,itwillonlytakeamoment,thanksforwaiting.");
    }

    #[test]
    fn unicode_and_cjk() {
        assert_eq!(feed(&["你好。", "今天天气很好！", "Ça va? Très bien…"]), vec!["你好。", "今天天气很好！", "Ça va?", "Très bien…"]);
    }

    #[test]
    fn reset_drops_pending_text() {
        let mut a = ClauseAggregator::default();
        a.push("Half a sent");
        a.reset();
        assert_eq!(a.flush(), None);
    }
}
