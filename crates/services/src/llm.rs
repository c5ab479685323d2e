//! Streaming chat with tool calls, in the shape every OpenAI-compatible server
//! speaks (and the local model imitates).

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ServiceError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// For assistant messages that called tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRequest>,
    /// For tool messages: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRequest {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON, possibly malformed).
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// One chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub temperature: f64,
    pub max_tokens: u32,
}

/// What a streaming reply yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// Text to say.
    Token(String),
    /// A complete tool call (its arguments assembled from the stream).
    ToolCall(ToolCallRequest),
    /// The reply is complete.
    Done,
}

/// A streaming chat model.
pub trait Llm: Send + Sync + 'static {
    /// Streams one reply. Dropping the stream cancels the request.
    fn chat(&self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>>;

    /// The time this provider's requests waited for an inference worker since
    /// the last call of this method (local models share a bounded worker pool);
    /// `None` for providers with no such queue. The stage reports it as the turn's
    /// queue wait.
    fn take_queue_wait(&self) -> Option<std::time::Duration> {
        None
    }
}
