//! A call's webhook events, Vapi style: `status-update` (in progress, ended),
//! `transcript` (each final turn), `tool-calls`, and `end-of-call-report`
//! (transcript, duration, end reason, latency summary). Each goes through the
//! persistent outbox of `voxgate-webhooks`, which signs and retries it until the
//! receiver takes it. They go to the assistant's `serverUrl`, else `WEBHOOK_URL`;
//! with neither (or without `WEBHOOK_SECRET`) a call sends none.

use serde_json::{Value, json};
use voxgate_domain::call::{Call, CallTurn, TurnRole};
use voxgate_webhooks::{Event, Webhooks, kinds};

/// Where one call's events go.
#[derive(Clone)]
pub struct Notifier {
    webhooks: Webhooks,
    url: String,
    call_id: String,
    assistant_id: String,
}

impl Notifier {
    /// The notifier of a call, if webhooks are on and a URL applies.
    pub fn for_call(webhooks: Option<&Webhooks>, default_url: Option<&str>, call: &Call, server_url: Option<&str>) -> Option<Notifier> {
        let url = server_url.or(default_url).filter(|u| !u.is_empty())?;
        Some(Notifier { webhooks: webhooks?.clone(), url: url.to_string(), call_id: call.id.clone(), assistant_id: call.assistant_id.clone() })
    }

    fn event(&self, kind: &str, payload: Value) -> Event {
        Event::new(kind, Some(&self.call_id), Some(&self.assistant_id), &self.url, payload)
    }

    /// Writes the event to the outbox (and so never blocks the call on the
    /// receiver). A database that refuses it is logged and counted.
    pub async fn send(&self, kind: &str, payload: Value) {
        if let Err(e) = self.webhooks.enqueue(self.event(kind, payload)).await {
            metrics::counter!("voxgate_webhook_events_lost_total", "type" => kind.to_string()).increment(1);
            tracing::error!(error = %e, kind, "a webhook event could not be queued");
        }
    }

    /// [`Notifier::send`] in a task of its own, for the call's hot path.
    pub fn spawn(&self, kind: &'static str, payload: Value) {
        let me = self.clone();
        tokio::spawn(async move { me.send(kind, payload).await });
    }

    pub fn in_progress(&self) {
        self.spawn(kinds::STATUS_UPDATE, json!({ "status": "in-progress" }));
    }

    pub fn transcript(&self, turn: &CallTurn) {
        let role = turn.role.as_str();
        self.spawn(kinds::TRANSCRIPT, json!({ "role": role, "transcriptType": "final", "transcript": turn.text, "turn": turn.idx }));
    }

    pub fn tool_call(&self, id: &str, name: &str, arguments: &Value) {
        self.spawn(kinds::TOOL_CALLS, json!({ "toolCallList": [{ "id": id, "name": name, "arguments": arguments }] }));
    }

    /// The call's end: a status update and the report, both awaited (the call's
    /// task is ending anyway), built from the stored record.
    pub async fn ended(&self, call: &Call, turns: &[CallTurn]) {
        let reason = call.ended_reason.clone().unwrap_or_default();
        self.send(kinds::STATUS_UPDATE, json!({ "status": "ended", "endedReason": reason })).await;
        self.send(kinds::END_OF_CALL_REPORT, report(call, turns)).await;
    }
}

/// The end-of-call report's payload.
pub fn report(call: &Call, turns: &[CallTurn]) -> Value {
    let transcript: String = turns
        .iter()
        .map(|t| match t.role {
            TurnRole::User => format!("User: {}\n", t.text),
            TurnRole::Assistant => format!("AI: {}\n", t.text),
            _ => String::new(),
        })
        .collect();
    let messages: Vec<Value> = turns
        .iter()
        .map(|t| json!({ "role": t.role.as_str(), "message": t.text, "secondsFromStart": t.started_ms as f64 / 1000.0, "interrupted": t.interrupted }))
        .collect();
    json!({
        "endedReason": call.ended_reason,
        "startedAt": voxgate_domain::clock::ms_to_rfc3339(call.started_at),
        "endedAt": call.ended_at.map(voxgate_domain::clock::ms_to_rfc3339),
        "durationMs": call.duration_ms,
        "durationSeconds": call.duration_ms.map(|ms| ms as f64 / 1000.0),
        "transcript": transcript,
        "messages": messages,
        "latency": latency_summary(turns),
    })
}

/// Per latency field over the assistant's turns: count, mean, p50, p95, max (ms).
fn latency_summary(turns: &[CallTurn]) -> Value {
    let replies: Vec<&CallTurn> = turns.iter().filter(|t| t.role == TurnRole::Assistant).collect();
    type Get = fn(&CallTurn) -> Option<f64>;
    let fields: [(&str, Get); 6] = [
        ("voiceToVoiceMs", |t| t.latency.voice_to_voice_ms),
        ("endpointingMs", |t| t.latency.endpointing_ms),
        ("sttMs", |t| t.latency.stt_ms),
        ("llmFirstTokenMs", |t| t.latency.llm_first_token_ms),
        ("ttsFirstAudioMs", |t| t.latency.tts_first_audio_ms),
        ("retrievalMs", |t| t.latency.retrieval_ms),
    ];
    let mut out = serde_json::Map::new();
    for (name, get) in fields {
        let mut v: Vec<f64> = replies.iter().filter_map(|t| get(t)).filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        let round = |x: f64| (x * 10.0).round() / 10.0;
        out.insert(
            name.into(),
            json!({ "count": v.len(), "mean": round(v.iter().sum::<f64>() / v.len() as f64), "p50": round(pick(0.5)), "p95": round(pick(0.95)), "max": round(v[v.len() - 1]) }),
        );
    }
    Value::Object(out)
}
