//! The conversation: the system prompt and the turns so far, in the form the
//! language model takes. Assistant turns hold only what the caller heard.

use std::time::Duration;

use crate::llm::{ChatMessage, ChatRequest, Role, ToolSpec};

/// One call's conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub system_prompt: String,
    pub messages: Vec<ChatMessage>,
}

impl Conversation {
    pub fn new(system_prompt: impl Into<String>) -> Conversation {
        Conversation { system_prompt: system_prompt.into(), messages: Vec::new() }
    }

    /// Appends what the caller said (joined to the previous user message if the
    /// assistant has not answered in between).
    pub fn add_user(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some(m) if m.role == Role::User => {
                m.content.push(' ');
                m.content.push_str(text);
            }
            _ => self.messages.push(ChatMessage::new(Role::User, text)),
        }
    }

    /// Appends what the assistant said (as played).
    pub fn add_assistant(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some(m) if m.role == Role::Assistant && m.tool_calls.is_empty() => {
                m.content.push(' ');
                m.content.push_str(text);
            }
            _ => self.messages.push(ChatMessage::new(Role::Assistant, text)),
        }
    }

    /// What the caller said last, if the conversation ends with their words.
    pub fn last_user_text(&self) -> Option<String> {
        self.messages.last().filter(|m| m.role == Role::User).map(|m| m.content.clone())
    }

    pub fn push(&mut self, m: ChatMessage) {
        self.messages.push(m);
    }

    /// The request for the next reply.
    pub fn request(&self, tools: &[ToolSpec], temperature: f64, max_tokens: u32) -> ChatRequest {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        messages.push(ChatMessage::new(Role::System, self.system_prompt.clone()));
        messages.extend(self.messages.iter().cloned());
        ChatRequest { messages, tools: tools.to_vec(), temperature, max_tokens }
    }
}

/// The part of `text` that `played` of its `total` audio covers, cut at a word
/// boundary (a word counts as heard once its first half has played).
pub fn truncate_to_played(text: &str, played: Duration, total: Duration) -> &str {
    if total.is_zero() || played >= total {
        return text;
    }
    let fraction = played.as_secs_f64() / total.as_secs_f64();
    let target = (text.chars().count() as f64 * fraction).round() as usize;
    // Byte index of the `target`-th char.
    let cut = text.char_indices().nth(target).map(|(i, _)| i).unwrap_or(text.len());
    // Scripts written without spaces (Chinese, Japanese, Thai) are cut at the character.
    if !text.contains(char::is_whitespace) {
        return &text[..cut];
    }
    // Keep the word under the cut if at least half of it is before the cut.
    let word_start = text[..cut].rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
    let word_end = text[cut..].find(char::is_whitespace).map(|i| cut + i).unwrap_or(text.len());
    let end = if cut - word_start >= (word_end - word_start).div_ceil(2) { word_end } else { word_start };
    text[..end].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_words_heard() {
        let t = "one two three four";
        let ms = Duration::from_millis;
        assert_eq!(truncate_to_played(t, ms(0), ms(1800)), "");
        assert_eq!(truncate_to_played(t, ms(1800), ms(1800)), t);
        assert_eq!(truncate_to_played(t, ms(900), ms(1800)), "one two");
        assert_eq!(truncate_to_played(t, ms(1100), ms(1800)), "one two three");
        assert_eq!(truncate_to_played("日本語のテキスト", ms(500), ms(1000)), "日本語の");
    }

    #[test]
    fn messages_merge_by_role_and_requests_start_with_the_prompt() {
        let mut c = Conversation::new("Be brief.");
        c.add_user("hello");
        c.add_user("are you there");
        c.add_assistant("Yes.");
        c.add_assistant("");
        let r = c.request(&[], 0.7, 100);
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[1].content, "hello are you there");
    }
}
