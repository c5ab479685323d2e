//! The language-model stage. It owns the conversation: the caller's words come in
//! as transcripts (or typed text), the assistant's only as `Spoken` frames from the
//! output, so the history holds exactly what the caller heard. On `EndOfTurn` it
//! streams a reply in a task of its own, which an interruption cancels; tool calls
//! run between model rounds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use voxgate_frames::{Direction, EndReason, Frame, Stage, ToolCall, ToolResult};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

use super::TaskSlot;
use crate::context::Conversation;
use crate::llm::{ChatMessage, Llm, LlmEvent, Role, ToolCallRequest, ToolSpec};

/// Most model rounds in one reply (each tool result starts another).
const MAX_TOOL_ROUNDS: usize = 4;

/// Runs the tools the model calls (the customer's server, in production).
pub trait ToolRunner: Send + Sync + 'static {
    /// Calls `name` with the model's `arguments` (JSON text); the result or an error
    /// message, which the model sees either way.
    fn call(&self, name: &str, arguments: &str) -> BoxFuture<'static, Result<Value, String>>;
}

/// Finds what an assistant's knowledge base says about the caller's words.
pub trait Retriever: Send + Sync + 'static {
    /// The passages nearest to `query`, best first (an error message otherwise).
    fn retrieve(&self, query: &str) -> BoxFuture<'static, Result<Vec<String>, String>>;
}

/// The stage's settings.
#[derive(Clone)]
pub struct LlmConfig {
    pub system_prompt: String,
    pub tools: Vec<ToolSpec>,
    /// The name of the tool that ends the call (not sent to a server).
    pub end_call_tool: Option<String>,
    /// Tools that hand the call on: (name, destination).
    pub transfer_tools: Vec<(String, String)>,
    pub temperature: f64,
    pub max_tokens: u32,
    /// Phrases that end the call once the assistant has said them (case-insensitive).
    pub end_call_phrases: Vec<String>,
    pub tool_timeout: Duration,
    /// The knowledge base searched before each reply, if the assistant has one.
    pub retriever: Option<Arc<dyn Retriever>>,
    /// Longest a reply waits for the knowledge base before it goes on without it.
    pub retrieval_budget: Duration,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            system_prompt: String::new(),
            tools: Vec::new(),
            end_call_tool: None,
            transfer_tools: Vec::new(),
            temperature: 0.7,
            max_tokens: 250,
            end_call_phrases: Vec::new(),
            tool_timeout: Duration::from_secs(5),
            retriever: None,
            retrieval_budget: Duration::from_millis(300),
        }
    }
}

pub struct LlmStage {
    llm: Arc<dyn Llm>,
    tools: Option<Arc<dyn ToolRunner>>,
    config: Arc<LlmConfig>,
    conversation: Arc<Mutex<Conversation>>,
    reply: TaskSlot,
    /// A user message arrived since the last reply started.
    pending_user: bool,
}

impl LlmStage {
    pub fn new(llm: Arc<dyn Llm>, tools: Option<Arc<dyn ToolRunner>>, config: LlmConfig) -> LlmStage {
        let conversation = Arc::new(Mutex::new(Conversation::new(config.system_prompt.clone())));
        LlmStage { llm, tools, config: Arc::new(config), conversation, reply: TaskSlot::default(), pending_user: false }
    }

    /// The conversation, shared (for the call record and tests).
    pub fn conversation(&self) -> Arc<Mutex<Conversation>> {
        self.conversation.clone()
    }

    fn start_reply(&mut self, out: &Outlet) {
        self.pending_user = false;
        let task = reply(self.llm.clone(), self.tools.clone(), self.config.clone(), self.conversation.clone(), out.clone());
        self.reply.set(super::spawn_worker("language model", out.clone(), async move {
            if let Err(e) = task.await {
                tracing::debug!(error = %e, "reply ended early");
            }
        }));
    }
}

impl Processor for LlmStage {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        match (frame, dir) {
            (Frame::Transcript(t), Direction::Downstream) if t.is_final => {
                if !t.text.trim().is_empty() {
                    self.conversation.lock().expect("conversation lock").add_user(&t.text);
                    self.pending_user = true;
                }
                out.down(Frame::Transcript(t)).await
            }
            (Frame::UserText(text), Direction::Downstream) => {
                self.conversation.lock().expect("conversation lock").add_user(&text);
                out.down(Frame::UserText(text)).await?;
                self.start_reply(out);
                Ok(())
            }
            (Frame::EndOfTurn, Direction::Downstream) => {
                out.down(Frame::EndOfTurn).await?;
                if self.pending_user {
                    self.start_reply(out);
                }
                Ok(())
            }
            (Frame::Spoken(text), Direction::Upstream) => {
                self.conversation.lock().expect("conversation lock").add_assistant(&text);
                let lower = text.to_lowercase();
                let said_end = self.config.end_call_phrases.iter().any(|p| !p.is_empty() && lower.contains(&p.to_lowercase()));
                out.up(Frame::Spoken(text)).await?;
                if said_end {
                    out.down(Frame::End(EndReason::EndCallPhrase)).await?;
                }
                Ok(())
            }
            (Frame::Cancel(r), dir) => {
                self.reply.cancel();
                out.push(Frame::Cancel(r), dir).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }

    fn interrupted(&mut self) {
        self.reply.cancel();
    }
}

/// One reply: model rounds, tool calls between them.
async fn reply(
    llm: Arc<dyn Llm>,
    tools: Option<Arc<dyn ToolRunner>>,
    cfg: Arc<LlmConfig>,
    convo: Arc<Mutex<Conversation>>,
    out: Outlet,
) -> Result<(), PipelineError> {
    out.down(Frame::LlmResponseStart).await?;
    let knowledge = retrieve(&cfg, &convo, &out).await?;
    for _round in 0..MAX_TOOL_ROUNDS {
        let mut request = convo.lock().expect("conversation lock").request(&cfg.tools, cfg.temperature, cfg.max_tokens);
        if let Some(k) = &knowledge {
            // Just before the caller's last words, for this reply only: the history
            // (and the local model's cached prefix) stays as it was.
            let at = request.messages.iter().rposition(|m| m.role == Role::User).unwrap_or(request.messages.len());
            request.messages.insert(at, ChatMessage::new(Role::System, k.clone()));
        }
        let started = Instant::now();
        let mut first = true;
        let mut calls: Vec<ToolCallRequest> = Vec::new();
        let mut stream = llm.chat(request);
        while let Some(event) = stream.next().await {
            match event {
                Ok(LlmEvent::Token(t)) => {
                    if first {
                        first = false;
                        out.down(Frame::Metric { stage: Stage::LlmFirstToken, value: started.elapsed() }).await?;
                        if let Some(wait) = llm.take_queue_wait().filter(|w| !w.is_zero()) {
                            out.down(Frame::Metric { stage: Stage::QueueWait, value: wait }).await?;
                        }
                    }
                    out.down(Frame::LlmText(t)).await?;
                }
                Ok(LlmEvent::ToolCall(c)) => calls.push(c),
                Ok(LlmEvent::Done) => break,
                Err(e) => {
                    e.log("the reply");
                    out.up(Frame::Error { code: e.code(), message: e.to_string(), fatal: false }).await?;
                    break;
                }
            }
        }
        if calls.is_empty() {
            break;
        }
        convo.lock().expect("conversation lock").push(ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: calls.clone(),
            tool_call_id: None,
        });
        for c in calls {
            let arguments = serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
            out.down(Frame::ToolCall(ToolCall { id: c.id.clone(), name: c.name.clone(), arguments })).await?;
            if cfg.end_call_tool.as_deref() == Some(c.name.as_str()) {
                out.down(Frame::LlmResponseEnd).await?;
                return out.down(Frame::End(EndReason::EndCallTool)).await;
            }
            if let Some((_, destination)) = cfg.transfer_tools.iter().find(|(name, _)| *name == c.name) {
                out.down(Frame::LlmResponseEnd).await?;
                out.down(Frame::Transfer(destination.clone())).await?;
                return out.down(Frame::End(EndReason::Transferred)).await;
            }
            let result = match &tools {
                Some(runner) => match tokio::time::timeout(cfg.tool_timeout, runner.call(&c.name, &c.arguments)).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => serde_json::json!({ "error": e }),
                    Err(_) => serde_json::json!({ "error": "the tool did not answer in time" }),
                },
                None => serde_json::json!({ "error": "no tools are available" }),
            };
            let mut msg = ChatMessage::new(Role::Tool, result.to_string());
            msg.tool_call_id = Some(c.id.clone());
            convo.lock().expect("conversation lock").push(msg);
            out.down(Frame::ToolResult(ToolResult { id: c.id, name: c.name, content: result })).await?;
        }
    }
    out.down(Frame::LlmResponseEnd).await
}

/// Searches the knowledge base for the caller's last words, within the budget, and
/// returns the context message to add (none without a knowledge base, a match, or
/// time). The time taken is the turn's `Retrieval` metric.
async fn retrieve(cfg: &LlmConfig, convo: &Mutex<Conversation>, out: &Outlet) -> Result<Option<String>, PipelineError> {
    let Some(retriever) = &cfg.retriever else { return Ok(None) };
    let query = convo.lock().expect("conversation lock").last_user_text();
    let Some(query) = query.filter(|q| !q.trim().is_empty()) else { return Ok(None) };
    // Tokio's clock, so tests on paused time see the budget exactly.
    let started = tokio::time::Instant::now();
    let found = tokio::time::timeout(cfg.retrieval_budget, retriever.retrieve(&query)).await;
    out.down(Frame::Metric { stage: Stage::Retrieval, value: started.elapsed() }).await?;
    let passages = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "knowledge search failed; the reply goes on without it");
            return Ok(None);
        }
        Err(_) => {
            metrics::counter!("voxgate_retrieval_timeouts_total").increment(1);
            tracing::warn!(budget_ms = cfg.retrieval_budget.as_millis() as u64, "knowledge search passed its budget; the reply goes on without it");
            return Ok(None);
        }
    };
    if passages.is_empty() {
        return Ok(None);
    }
    let mut text = String::from("Facts from the knowledge base that may help answer the caller (use them if relevant):\n");
    for p in passages {
        text.push_str("- ");
        text.push_str(p.trim());
        text.push('\n');
    }
    Ok(Some(text))
}
