//! A call's tools, as the language-model stage runs them.
//!
//! - `function` tools are POSTed to their `url`:
//!   `{"type":"tool-call","call":{"id","assistantId"},"toolCall":{"name","arguments"}}`,
//!   signed like webhooks (`X-Voxgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256
//!   of "<t>.<body>">` with `WEBHOOK_SECRET`, when set), with the tool's own timeout,
//!   no redirects, and at most 64 KiB of answer read. A 2xx JSON answer's `result`
//!   field (or the whole answer) goes back to the model; anything else becomes an
//!   error the model sees.
//! - `knowledge-query` searches the assistant's knowledge base for the model's `query`.
//! - `end-call` and `transfer-call` never reach here: the stage acts on them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use voxgate_domain::Assistant;
use voxgate_domain::assistant::{Tool, ToolKind};
use voxgate_providers::pool::WaitMeter;
use voxgate_services::processors::llm::ToolRunner;

use crate::knowledge::Knowledge;

/// Largest tool answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The tools of one call.
pub struct CallTools {
    http: reqwest::Client,
    secret: Option<Arc<str>>,
    call_id: String,
    assistant_id: String,
    tools: HashMap<String, Tool>,
    knowledge: Option<(Knowledge, Vec<String>)>,
}

impl CallTools {
    pub fn new(http: reqwest::Client, secret: Option<Arc<str>>, call_id: &str, assistant: &Assistant, knowledge: Option<Knowledge>) -> CallTools {
        let kb = assistant.spec.knowledge_base.as_ref();
        CallTools {
            http,
            secret,
            call_id: call_id.to_string(),
            assistant_id: assistant.id.clone(),
            tools: assistant.spec.tools.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            knowledge: knowledge.zip(kb.map(|kb| kb.file_ids.clone())),
        }
    }
}

impl ToolRunner for CallTools {
    fn call(&self, name: &str, arguments: &str) -> BoxFuture<'static, Result<Value, String>> {
        let Some(tool) = self.tools.get(name).cloned() else {
            return futures_util::future::ready(Err(format!("there is no tool named `{name}`"))).boxed();
        };
        let args: Value = match serde_json::from_str(arguments) {
            Ok(v) => v,
            Err(_) => return futures_util::future::ready(Err("the arguments are not valid JSON".into())).boxed(),
        };
        match tool.kind {
            ToolKind::Function => {
                let (http, secret) = (self.http.clone(), self.secret.clone());
                let body = json!({
                    "type": "tool-call",
                    "call": { "id": self.call_id, "assistantId": self.assistant_id },
                    "toolCall": { "name": tool.name, "arguments": args },
                });
                async move { post(&http, secret.as_deref(), &tool, body).await }.boxed()
            }
            ToolKind::KnowledgeQuery => {
                let Some((knowledge, ids)) = self.knowledge.clone() else {
                    return futures_util::future::ready(Err("this assistant has no knowledge base".into())).boxed();
                };
                let query = args.get("query").and_then(Value::as_str).unwrap_or_default().to_string();
                async move {
                    if query.trim().is_empty() {
                        return Err("give a `query` to search for".into());
                    }
                    let hits = knowledge.search(&ids, &query, 5, &WaitMeter::default()).await?;
                    Ok(json!({ "results": hits.into_iter().map(|h| json!({ "text": h.text, "score": h.score })).collect::<Vec<_>>() }))
                }
                .boxed()
            }
            ToolKind::EndCall | ToolKind::TransferCall => {
                futures_util::future::ready(Err("this tool is handled by the call itself".into())).boxed()
            }
        }
    }
}

async fn post(http: &reqwest::Client, secret: Option<&str>, tool: &Tool, body: Value) -> Result<Value, String> {
    let url = tool.url.as_deref().ok_or("the tool has no url")?;
    let parsed = reqwest::Url::parse(url).map_err(|_| "the tool's url is not an absolute URL")?;
    if let Err(why) = voxgate_webhooks::outbound::check_host(&parsed) {
        metrics::counter!("voxgate_tool_calls_total", "outcome" => "unreachable").increment(1);
        return Err(format!("the tool's server is not called: {why}"));
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut req = http
        .post(parsed)
        .timeout(Duration::from_millis(tool.timeout_ms as u64))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        req = voxgate_webhooks::signed(req, secret.as_bytes(), &bytes);
    }
    let started = std::time::Instant::now();
    let res = req.body(bytes).send().await;
    let outcome = |o: &'static str| metrics::counter!("voxgate_tool_calls_total", "outcome" => o).increment(1);
    let mut res = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            outcome("timeout");
            return Err(format!("the tool did not answer within {} ms", tool.timeout_ms));
        }
        Err(_) => {
            outcome("unreachable");
            return Err("the tool's server could not be reached".into());
        }
    };
    let status = res.status();
    let mut answer = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(c)) if answer.len() + c.len() <= MAX_ANSWER => answer.extend_from_slice(&c),
            Ok(Some(_)) => {
                outcome("too-large");
                return Err(format!("the tool's answer is larger than {MAX_ANSWER} bytes"));
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                outcome("timeout");
                return Err(format!("the tool did not answer within {} ms", tool.timeout_ms));
            }
            Err(_) => {
                outcome("failed");
                return Err("the tool's answer was cut off".into());
            }
        }
    }
    metrics::histogram!("voxgate_tool_call_seconds").record(started.elapsed().as_secs_f64());
    if !status.is_success() {
        outcome("error-status");
        return Err(format!("the tool's server answered {}", status.as_u16()));
    }
    outcome("ok");
    match serde_json::from_slice::<Value>(&answer) {
        Ok(Value::Object(mut o)) if o.contains_key("result") => Ok(o.remove("result").unwrap_or(Value::Null)),
        Ok(v) => Ok(v),
        // A plain-text answer is still an answer.
        Err(_) => Ok(Value::String(String::from_utf8_lossy(&answer).into_owned())),
    }
}
