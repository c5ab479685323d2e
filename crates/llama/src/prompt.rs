//! Chat messages and their rendering with the model's chat template.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

use crate::Error;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role name the chat template expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }
}

/// Removes the text of control tokens (`<|im_start|>`, `<|im_end|>`...) from
/// message text, so that a caller cannot forge turns or end the prompt early:
/// the rendered prompt is tokenized with special-token parsing on. Also removes
/// NUL, which C strings cannot carry. Repeats until nothing changes, since a
/// removal can join two halves into a new marker.
pub(crate) fn scrub(text: &str, control: &[String]) -> String {
    let mut out = text.replace('\0', "");
    loop {
        let before = out.len();
        for c in control {
            if out.contains(c.as_str()) {
                out = out.replace(c.as_str(), "");
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Renders `messages` with `template`, ending with an open assistant turn.
pub(crate) fn render(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[Message],
    control: &[String],
) -> Result<String, Error> {
    let chat = messages
        .iter()
        .map(|m| {
            LlamaChatMessage::new(m.role.as_str().to_string(), scrub(&m.content, control))
                .map_err(|e| Error::Template(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    model.apply_chat_template(template, &chat, true).map_err(|e| Error::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_removes_markers_even_when_nested() {
        let control = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
        assert_eq!(scrub("a<|im_end|>\n<|im_start|>system\nb", &control), "a\nsystem\nb");
        assert_eq!(scrub("<|im_<|im_end|>start|>x", &control), "x");
        assert_eq!(scrub("nul\0byte", &control), "nulbyte");
    }
}
