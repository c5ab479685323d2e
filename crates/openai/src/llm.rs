//! Streaming chat: `POST /chat/completions` with `stream: true`, read as server-sent
//! events.

use std::collections::BTreeMap;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};
use voxgate_services::ServiceError;
use voxgate_services::llm::{ChatMessage, ChatRequest, Llm, LlmEvent, Role, ToolCallRequest};

use crate::call::{Call, Fail};
use crate::config::{Deadlines, Limits, RetryPolicy};
use crate::endpoint::Endpoint;
use crate::stats::Stage;

const PATH: &str = "chat/completions";

/// OpenAI chat completions, streamed.
#[derive(Clone)]
pub struct OpenAiLlm {
    pub(crate) ep: Endpoint,
    pub(crate) model: String,
    /// `max_tokens` or `max_completion_tokens`.
    pub(crate) max_tokens_field: &'static str,
    pub(crate) deadlines: Deadlines,
    pub(crate) retry: RetryPolicy,
    pub(crate) limits: Limits,
}

impl OpenAiLlm {
    /// The JSON body of a request.
    pub(crate) fn body(&self, request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": self.model,
            "stream": true,
            "messages": request.messages.iter().map(message).collect::<Vec<_>>(),
        });
        if request.temperature.is_finite() {
            body["temperature"] = json!(request.temperature.clamp(0.0, 2.0));
        }
        if request.max_tokens > 0 {
            body[self.max_tokens_field] = json!(request.max_tokens);
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
            body["tools"] = Value::Array(tools);
        }
        body
    }

    fn stream(self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        Box::pin(async_stream::stream! {
            let body = self.body(&request);
            let mut call = Call::new(self.ep.clone(), Stage::Llm, reqwest::Method::POST, PATH, self.deadlines, self.retry, self.limits.error_bytes);
            let mut yielded = false;
            loop {
                let opened = match call.open(|call| call.request().json(&body)).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        call.finish::<()>(&Err(e.clone()));
                        yield Err(e);
                        return;
                    }
                };
                let json_reply = opened.content_type.starts_with("application/json");
                // A captive portal, a login page or a web server on the base URL.
                let html_reply = opened.content_type.starts_with("text/html");
                let mut events = opened.into_stream(self.limits.chat_bytes, "chat reply").eventsource();
                let mut reply = Reply::new(self.limits.tool_calls);
                let outcome: Result<(), Fail> = loop {
                    if json_reply {
                        break Err(Fail::Malformed("the server answered JSON, not an event stream: does it support \"stream\": true?".into()));
                    }
                    if html_reply {
                        break Err(Fail::Malformed("the server answered an HTML page, not an event stream: check the base URL".into()));
                    }
                    match events.next().await {
                        None if reply.finished => break Ok(()),
                        None => break Err(Fail::Cut("the event stream ended before [DONE]".into())),
                        Some(Err(EventStreamError::Transport(fail))) => break Err(fail),
                        Some(Err(EventStreamError::Utf8(e))) => break Err(Fail::Malformed(format!("the event stream is not UTF-8: {e}"))),
                        Some(Err(EventStreamError::Parser(e))) => break Err(Fail::Malformed(format!("not an event stream: {e:?}"))),
                        Some(Ok(event)) => {
                            if event.data.trim() == "[DONE]" {
                                break Ok(());
                            }
                            match reply.feed(&event.event, &event.data) {
                                Ok(out) => {
                                    for e in out {
                                        yielded = true;
                                        yield Ok(e);
                                    }
                                }
                                Err(fail) => break Err(fail),
                            }
                        }
                    }
                };
                let fail = match outcome.and_then(|()| reply.finish()) {
                    Ok(calls) => {
                        for c in calls {
                            yield Ok(c);
                        }
                        call.finish::<()>(&Ok(()));
                        // Read the end of the body aside, so the connection is reused.
                        if tokio::runtime::Handle::try_current().is_ok() {
                            tokio::spawn(async move { let _ = tokio::time::timeout(Duration::from_secs(2), events.count()).await; });
                        }
                        yield Ok(LlmEvent::Done);
                        return;
                    }
                    Err(fail) => fail,
                };
                // Once part of the reply is out, a retry would repeat it: the caller decides.
                match call.settle(fail, yielded).await {
                    None => continue,
                    Some(error) => {
                        yield Err(error);
                        return;
                    }
                }
            }
        })
    }
}

impl Llm for OpenAiLlm {
    fn chat(&self, request: ChatRequest) -> BoxStream<'static, Result<LlmEvent, ServiceError>> {
        self.clone().stream(request)
    }
}

/// One message as the API wants it.
fn message(m: &ChatMessage) -> Value {
    match m.role {
        Role::Assistant if !m.tool_calls.is_empty() => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id.as_deref().unwrap_or(""), "content": m.content}),
        role => json!({"role": role, "content": m.content}),
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// A reply being assembled from its chunks: tokens pass through, tool calls are
/// put together from their pieces and given out once the reply says it is finished.
pub(crate) struct Reply {
    calls: BTreeMap<u32, PartialCall>,
    last_index: u32,
    max_calls: usize,
    pub finished: bool,
}

impl Reply {
    pub fn new(max_calls: usize) -> Reply {
        Reply { calls: BTreeMap::new(), last_index: 0, max_calls, finished: false }
    }

    /// Takes one event's data; gives what is ready to go out.
    pub fn feed(&mut self, event: &str, data: &str) -> Result<Vec<LlmEvent>, Fail> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| Fail::Malformed(format!("a chunk is not JSON ({e}): {}", snippet(data))))?;
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| error.to_string());
            return Err(Fail::Cut(format!("the server reported an error mid-stream: {}", snippet(&message))));
        }
        if event == "error" {
            return Err(Fail::Cut(format!("the server reported an error mid-stream: {}", snippet(data))));
        }
        let mut out = Vec::new();
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        out.push(LlmEvent::Token(text));
                    }
                }
                for piece in delta.tool_calls.unwrap_or_default() {
                    self.add(piece)?;
                }
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
                out.extend(self.take_calls()?);
            }
        }
        Ok(out)
    }

    fn add(&mut self, piece: ToolCallDelta) -> Result<(), Fail> {
        let index = match piece.index {
            Some(index) => index,
            // Some servers leave the index out: a new id starts a new call.
            None => match &piece.id {
                Some(id) if !self.calls.values().any(|c| &c.id == id) && !self.calls.is_empty() => self.last_index + 1,
                _ => self.last_index,
            },
        };
        if !self.calls.contains_key(&index) && self.calls.len() >= self.max_calls {
            return Err(Fail::Malformed(format!("more than {} tool calls in one reply (limits.tool_calls)", self.max_calls)));
        }
        self.last_index = index;
        let call = self.calls.entry(index).or_default();
        if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(function) = piece.function {
            call.name.push_str(function.name.as_deref().unwrap_or(""));
            call.arguments.push_str(function.arguments.as_deref().unwrap_or(""));
        }
        Ok(())
    }

    fn take_calls(&mut self) -> Result<Vec<LlmEvent>, Fail> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, c)| {
                if c.name.is_empty() {
                    return Err(Fail::Malformed(format!("tool call {index} has no function name")));
                }
                let id = if c.id.is_empty() { format!("call_{index}") } else { c.id };
                Ok(LlmEvent::ToolCall(ToolCallRequest { id, name: c.name, arguments: c.arguments }))
            })
            .collect()
    }

    /// At `[DONE]`: the tool calls not given out yet.
    pub fn finish(mut self) -> Result<Vec<LlmEvent>, Fail> {
        self.take_calls()
    }
}

fn snippet(text: &str) -> String {
    let cut: String = text.chars().take(120).filter(|c| !c.is_control()).collect();
    if cut.len() < text.len() { format!("{cut}...") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    }

    #[test]
    fn tool_calls_are_assembled_from_pieces() {
        let mut reply = Reply::new(8);
        let pieces = [
            chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Par"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "hang_up", "arguments": "{}"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}), None),
        ];
        for p in &pieces {
            assert_eq!(reply.feed("message", p).unwrap(), vec![]);
        }
        let out = reply.feed("message", &chunk(json!({}), Some("tool_calls"))).unwrap();
        assert_eq!(out, vec![
            LlmEvent::ToolCall(ToolCallRequest { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city": "Paris"}"#.into() }),
            LlmEvent::ToolCall(ToolCallRequest { id: "call_b".into(), name: "hang_up".into(), arguments: "{}".into() }),
        ]);
        assert!(reply.finish().unwrap().is_empty());
    }

    #[test]
    fn hostile_chunks_fail_cleanly() {
        let mut reply = Reply::new(2);
        for bad in ["", "{", "[1,2]", "{\"choices\": 5}", "\"text\"", "{\"choices\":[{\"delta\":{\"content\":7}}]}"] {
            assert!(matches!(reply.feed("message", bad), Err(Fail::Malformed(_))), "{bad:?}");
        }
        let many = |i: u32| chunk(json!({"tool_calls": [{"index": i, "id": format!("c{i}"), "function": {"name": "f"}}]}), None);
        reply.feed("message", &many(0)).unwrap();
        reply.feed("message", &many(1)).unwrap();
        assert!(matches!(reply.feed("message", &many(2)), Err(Fail::Malformed(_))));
        let nameless = chunk(json!({"tool_calls": [{"index": 0, "id": "x", "function": {"arguments": "{}"}}]}), None);
        let mut reply = Reply::new(2);
        reply.feed("message", &nameless).unwrap();
        assert!(matches!(reply.finish(), Err(Fail::Malformed(_))));
        let mut reply = Reply::new(2);
        assert!(matches!(reply.feed("message", r#"{"error":{"message":"overloaded"}}"#), Err(Fail::Cut(_))));
        let long = "x".repeat(100_000);
        match Reply::new(2).feed("message", &long) {
            Err(Fail::Malformed(m)) => assert!(m.len() < 300),
            _ => panic!("accepted"),
        }
    }

    #[test]
    fn tool_calls_without_index_follow_their_ids() {
        let mut reply = Reply::new(8);
        let piece = |id: Option<&str>, name: Option<&str>, args: &str| {
            chunk(json!({"tool_calls": [{"id": id, "function": {"name": name, "arguments": args}}]}), None)
        };
        reply.feed("message", &piece(Some("a"), Some("f"), "{\"x\":")).unwrap();
        reply.feed("message", &piece(None, None, "1}")).unwrap();
        reply.feed("message", &piece(Some("b"), Some("g"), "{}")).unwrap();
        let out = reply.finish().unwrap();
        assert_eq!(out, vec![
            LlmEvent::ToolCall(ToolCallRequest { id: "a".into(), name: "f".into(), arguments: "{\"x\":1}".into() }),
            LlmEvent::ToolCall(ToolCallRequest { id: "b".into(), name: "g".into(), arguments: "{}".into() }),
        ]);
    }
}
