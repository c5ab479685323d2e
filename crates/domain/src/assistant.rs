//! An assistant: everything a call needs to know before it starts. The API stores
//! it, the agent reads it at the start of a call. The configuration (`AssistantSpec`)
//! is one JSON document, so a new setting is a new field with a default, not a
//! migration.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::FieldError;

/// A stored assistant: its id, timestamps, and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assistant {
    pub id: String,
    #[serde(flatten)]
    pub spec: AssistantSpec,
    #[serde(with = "crate::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "crate::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// Whether the assistant greets the caller or waits to be spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FirstMessageMode {
    #[default]
    AssistantSpeaksFirst,
    UserSpeaksFirst,
}

/// Where a stage's model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Offline models on this machine; needs no key.
    #[default]
    Local,
    /// OpenAI, or any OpenAI-compatible server through `baseUrl`.
    Openai,
}

/// Speech-to-text settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TranscriberSettings {
    pub provider: Provider,
    /// Model name; the provider's default when absent.
    pub model: Option<String>,
    /// BCP 47 language tag, e.g. `en`.
    #[schema(pattern = "^[A-Za-z0-9-]{2,35}$")]
    pub language: Option<String>,
    /// OpenAI-compatible base URL overriding `OPENAI_BASE_URL` for this assistant.
    pub base_url: Option<String>,
}

/// Language-model settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ModelSettings {
    pub provider: Provider,
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: f64,
    /// Most tokens in one reply, 1 to 16384.
    #[schema(minimum = 1, maximum = 16384)]
    pub max_tokens: u32,
    pub base_url: Option<String>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings { provider: Provider::Local, model: None, temperature: 0.7, max_tokens: 250, base_url: None }
    }
}

/// Text-to-speech settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VoiceSettings {
    pub provider: Provider,
    /// Voice name; the provider's default when absent.
    pub voice: Option<String>,
    pub model: Option<String>,
    /// Speaking rate, 0.25 to 4.
    #[schema(minimum = 0.25, maximum = 4.0)]
    pub speed: f64,
    pub base_url: Option<String>,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings { provider: Provider::Local, voice: None, model: None, speed: 1.0, base_url: None }
    }
}

/// A speech-to-speech model (OpenAI Realtime).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RealtimeSettings {
    /// The model; `gpt-realtime` when absent.
    pub model: Option<String>,
    /// The voice; `alloy` when absent.
    pub voice: Option<String>,
}

/// When the caller's turn is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EndpointingSettings {
    /// Silence after speech that ends the caller's turn, in milliseconds (100 to 10000).
    #[schema(minimum = 100, maximum = 10000)]
    pub silence_ms: u32,
    /// Voice activity confidence threshold, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub vad_confidence: f64,
    /// Voiced time before speech counts as started, in milliseconds (at most 2000).
    #[schema(maximum = 2000)]
    pub vad_start_ms: u32,
    /// Minimum volume (0 to 1) for a frame to count as speech.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_volume: f64,
}

impl Default for EndpointingSettings {
    fn default() -> Self {
        EndpointingSettings { silence_ms: 500, vad_confidence: 0.7, vad_start_ms: 200, min_volume: 0.0 }
    }
}

/// When the caller may interrupt the assistant (barge-in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InterruptionSettings {
    pub enabled: bool,
    /// Voiced time the caller needs before the assistant yields, in milliseconds (at most 5000).
    #[schema(maximum = 5000)]
    pub min_voiced_ms: u32,
    /// Words the caller needs before the assistant yields (0: no word rule; at most 20).
    #[schema(maximum = 20)]
    pub min_words: u32,
    /// After yielding, how long before the assistant may speak again, in milliseconds (at most 10000).
    #[schema(maximum = 10000)]
    pub backoff_ms: u32,
}

impl Default for InterruptionSettings {
    fn default() -> Self {
        InterruptionSettings { enabled: true, min_voiced_ms: 300, min_words: 0, backoff_ms: 0 }
    }
}

/// What a tool does when the model calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ToolKind {
    /// Calls the customer's server with the arguments.
    #[default]
    Function,
    /// Ends the call.
    EndCall,
    /// Hands the call to `destination`: a `transfer` event the client or the
    /// telephony layer acts on, then the call ends.
    TransferCall,
    /// Searches the assistant's knowledge base for the model's `query`.
    KnowledgeQuery,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tool {
    #[serde(rename = "type", default)]
    pub kind: ToolKind,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Where a `function` tool's calls are sent (https, or http on loopback).
    #[serde(default)]
    pub url: Option<String>,
    /// How long to wait for the tool's answer, in milliseconds (100 to 60000).
    #[serde(default = "default_tool_timeout")]
    #[schema(minimum = 100, maximum = 60000)]
    pub timeout_ms: u32,
    /// Where a `transfer-call` tool hands the call (a phone number, a SIP URI, a
    /// name the client understands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// The files an assistant answers from: the caller's words are embedded each
/// turn and the nearest pieces of these files join the model's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KnowledgeBase {
    /// Ids of uploaded files (`POST /api/files`), at most 100.
    #[schema(max_items = 100)]
    pub file_ids: Vec<String>,
    /// How many pieces to add to the context each turn (1 to 10).
    #[serde(default = "default_top_k")]
    #[schema(minimum = 1, maximum = 10)]
    pub top_k: u32,
    /// Longest time a turn waits for retrieval before the reply goes on without
    /// it, in milliseconds (10 to 5000).
    #[serde(default = "default_retrieval_budget")]
    #[schema(minimum = 10, maximum = 5000)]
    pub budget_ms: u32,
}

fn default_top_k() -> u32 {
    3
}

fn default_retrieval_budget() -> u32 {
    300
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_tool_timeout() -> u32 {
    5000
}

/// An assistant's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AssistantSpec {
    /// 1 to 120 characters, not blank, without control characters.
    #[schema(required = true, min_length = 1, max_length = 120)]
    pub name: String,
    /// At most 32 KiB (UTF-8).
    #[schema(max_length = 32768)]
    pub system_prompt: String,
    /// What the assistant says first (when it speaks first: then it must not be
    /// blank); at most 2000 characters.
    #[schema(max_length = 2000)]
    pub first_message: Option<String>,
    pub first_message_mode: FirstMessageMode,
    pub transcriber: TranscriberSettings,
    pub model: ModelSettings,
    pub voice: VoiceSettings,
    pub endpointing: EndpointingSettings,
    pub interruption: InterruptionSettings,
    /// Seconds of silence from the caller before a prompt, then the end of the
    /// call (0 to 3600).
    #[schema(maximum = 3600)]
    pub silence_timeout_secs: u32,
    /// Longest a call may last, in seconds (10 to 14400).
    #[schema(minimum = 10, maximum = 14400)]
    pub max_duration_secs: u32,
    /// Phrases that end the call when the assistant says them (at most 32, each
    /// 1 to 200 characters).
    #[schema(max_items = 32)]
    pub end_call_phrases: Vec<String>,
    /// At most 64, with distinct names.
    #[schema(max_items = 64)]
    pub tools: Vec<Tool>,
    /// Keeps a recording of each call (a stereo WAV: the caller left, the assistant
    /// right, 16 kHz), fetched at `/api/calls/{id}/recording`.
    pub recording_enabled: bool,
    /// Speech to speech: when set, calls run on an OpenAI Realtime model (the
    /// caller's audio in, the assistant's audio out) in place of the transcriber,
    /// model and voice stages. The server is `model.baseUrl` or `OPENAI_BASE_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeSettings>,
    /// The assistant's knowledge base, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_base: Option<KnowledgeBase>,
    /// Where this assistant's webhook events go (otherwise the server's
    /// `WEBHOOK_URL`, if set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Free-form data kept with the assistant (at most 16 KiB as JSON).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl Default for AssistantSpec {
    fn default() -> Self {
        AssistantSpec {
            name: String::new(),
            system_prompt: "You are a helpful voice assistant. Keep answers short and spoken.".into(),
            first_message: Some("Hello! How can I help you today?".into()),
            first_message_mode: FirstMessageMode::default(),
            transcriber: TranscriberSettings::default(),
            model: ModelSettings::default(),
            voice: VoiceSettings::default(),
            endpointing: EndpointingSettings::default(),
            interruption: InterruptionSettings::default(),
            silence_timeout_secs: 30,
            max_duration_secs: 600,
            end_call_phrases: Vec::new(),
            tools: Vec::new(),
            recording_enabled: false,
            realtime: None,
            knowledge_base: None,
            server_url: None,
            metadata: Map::new(),
        }
    }
}

/// Limits on an assistant's fields.
pub mod limits {
    pub const NAME_MAX: usize = 120;
    pub const PROMPT_MAX: usize = 32 * 1024;
    pub const FIRST_MESSAGE_MAX: usize = 2000;
    pub const MODEL_NAME_MAX: usize = 200;
    pub const URL_MAX: usize = 2048;
    pub const PHRASES_MAX: usize = 32;
    pub const PHRASE_MAX: usize = 200;
    pub const TOOLS_MAX: usize = 64;
    pub const KNOWLEDGE_FILES_MAX: usize = 100;
    pub const METADATA_MAX_BYTES: usize = 16 * 1024;
    pub const SILENCE_MS_RANGE: (u32, u32) = (100, 10_000);
    pub const MAX_DURATION_RANGE: (u32, u32) = (10, 4 * 3600);
    pub const SILENCE_TIMEOUT_RANGE: (u32, u32) = (0, 3600);
}

impl AssistantSpec {
    /// Checks every field and returns all problems at once, each with its path.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        use limits::*;
        let mut errs = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                errs.push(FieldError::new(field, message));
            }
        };

        check(!self.name.trim().is_empty(), "name", "must not be empty".into());
        check(self.name.chars().count() <= NAME_MAX, "name", format!("must be at most {NAME_MAX} characters"));
        // A name is one line: unlike free text, no newline or tab either.
        check(!self.name.chars().any(char::is_control), "name", "must not contain control characters".into());
        if let Some(r) = &self.realtime {
            for (field, value) in [("realtime.model", &r.model), ("realtime.voice", &r.voice)] {
                if let Some(v) = value {
                    let ok = !v.trim().is_empty() && v.chars().count() <= 100 && !v.chars().any(char::is_control);
                    check(ok, field, "must be 1 to 100 characters, without control characters".into());
                }
            }
        }
        // Characters, as the document's maxLength counts them.
        check(self.system_prompt.chars().count() <= PROMPT_MAX, "systemPrompt", format!("must be at most {PROMPT_MAX} characters"));
        if let Some(m) = &self.first_message {
            check(m.chars().count() <= FIRST_MESSAGE_MAX, "firstMessage", format!("must be at most {FIRST_MESSAGE_MAX} characters"));
        }
        check(
            self.first_message_mode == FirstMessageMode::UserSpeaksFirst
                || self.first_message.as_deref().is_some_and(|m| !m.trim().is_empty()),
            "firstMessage",
            "is required when the assistant speaks first".into(),
        );

        for (prefix, model, base_url) in [
            ("transcriber", &self.transcriber.model, &self.transcriber.base_url),
            ("model", &self.model.model, &self.model.base_url),
            ("voice", &self.voice.model, &self.voice.base_url),
        ] {
            if let Some(m) = model {
                check(
                    !m.trim().is_empty() && m.len() <= MODEL_NAME_MAX && !has_control(m),
                    &format!("{prefix}.model"),
                    format!("must be 1 to {MODEL_NAME_MAX} printable characters"),
                );
            }
            if let Some(u) = base_url {
                check(is_http_url(u), &format!("{prefix}.baseUrl"), "must be an http or https URL".into());
            }
        }
        if let Some(lang) = &self.transcriber.language {
            check(
                (2..=35).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "transcriber.language",
                "must be a language tag such as `en` or `en-US`".into(),
            );
        }
        if let Some(v) = &self.voice.voice {
            check(!v.trim().is_empty() && v.len() <= MODEL_NAME_MAX && !has_control(v), "voice.voice", "must be a voice name".into());
        }
        check((0.0..=2.0).contains(&self.model.temperature), "model.temperature", "must be between 0 and 2".into());
        check((1..=16_384).contains(&self.model.max_tokens), "model.maxTokens", "must be between 1 and 16384".into());
        check((0.25..=4.0).contains(&self.voice.speed), "voice.speed", "must be between 0.25 and 4".into());

        let e = &self.endpointing;
        check(
            (SILENCE_MS_RANGE.0..=SILENCE_MS_RANGE.1).contains(&e.silence_ms),
            "endpointing.silenceMs",
            format!("must be between {} and {}", SILENCE_MS_RANGE.0, SILENCE_MS_RANGE.1),
        );
        check((0.0..=1.0).contains(&e.vad_confidence), "endpointing.vadConfidence", "must be between 0 and 1".into());
        check(e.vad_start_ms <= 2000, "endpointing.vadStartMs", "must be at most 2000".into());
        check((0.0..=1.0).contains(&e.min_volume), "endpointing.minVolume", "must be between 0 and 1".into());

        let i = &self.interruption;
        check(i.min_voiced_ms <= 5000, "interruption.minVoicedMs", "must be at most 5000".into());
        check(i.min_words <= 20, "interruption.minWords", "must be at most 20".into());
        check(i.backoff_ms <= 10_000, "interruption.backoffMs", "must be at most 10000".into());

        check(
            (SILENCE_TIMEOUT_RANGE.0..=SILENCE_TIMEOUT_RANGE.1).contains(&self.silence_timeout_secs),
            "silenceTimeoutSecs",
            format!("must be between {} and {}", SILENCE_TIMEOUT_RANGE.0, SILENCE_TIMEOUT_RANGE.1),
        );
        check(
            (MAX_DURATION_RANGE.0..=MAX_DURATION_RANGE.1).contains(&self.max_duration_secs),
            "maxDurationSecs",
            format!("must be between {} and {}", MAX_DURATION_RANGE.0, MAX_DURATION_RANGE.1),
        );

        check(self.end_call_phrases.len() <= PHRASES_MAX, "endCallPhrases", format!("must have at most {PHRASES_MAX} phrases"));
        for (n, p) in self.end_call_phrases.iter().enumerate() {
            check(
                !p.trim().is_empty() && p.chars().count() <= PHRASE_MAX && !has_control(p),
                &format!("endCallPhrases[{n}]"),
                format!("must be 1 to {PHRASE_MAX} printable characters"),
            );
        }

        check(self.tools.len() <= TOOLS_MAX, "tools", format!("must have at most {TOOLS_MAX} tools"));
        let mut seen = std::collections::HashSet::new();
        for (n, t) in self.tools.iter().enumerate() {
            let at = |f: &str| format!("tools[{n}].{f}");
            check(
                !t.name.is_empty() && t.name.len() <= 64 && t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                &at("name"),
                "must be 1 to 64 letters, digits, `_` or `-`".into(),
            );
            check(seen.insert(t.name.as_str()), &at("name"), "is used by another tool".into());
            check(t.description.len() <= 2000, &at("description"), "must be at most 2000 bytes".into());
            check(t.parameters.is_object(), &at("parameters"), "must be a JSON Schema object".into());
            check((100..=60_000).contains(&t.timeout_ms), &at("timeoutMs"), "must be between 100 and 60000".into());
            match (t.kind, &t.url) {
                (ToolKind::Function, None) => check(false, &at("url"), "is required for a function tool".into()),
                (_, Some(u)) => check(is_http_url(u), &at("url"), "must be an http or https URL".into()),
                _ => {}
            }
            match (t.kind, &t.destination) {
                (ToolKind::TransferCall, None) => check(false, &at("destination"), "is required for a transfer-call tool".into()),
                (_, Some(d)) => check(
                    !d.trim().is_empty() && d.chars().count() <= 200 && !has_control(d),
                    &at("destination"),
                    "must be 1 to 200 printable characters".into(),
                ),
                _ => {}
            }
        }

        if let Some(kb) = &self.knowledge_base {
            check(kb.file_ids.len() <= KNOWLEDGE_FILES_MAX, "knowledgeBase.fileIds", format!("must have at most {KNOWLEDGE_FILES_MAX} files"));
            for (n, id) in kb.file_ids.iter().enumerate() {
                check(
                    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                    &format!("knowledgeBase.fileIds[{n}]"),
                    "must be a file id".into(),
                );
            }
            check((1..=10).contains(&kb.top_k), "knowledgeBase.topK", "must be between 1 and 10".into());
            check((10..=5000).contains(&kb.budget_ms), "knowledgeBase.budgetMs", "must be between 10 and 5000".into());
        }
        if let Some(u) = &self.server_url {
            check(is_http_url(u), "serverUrl", "must be an http or https URL".into());
        }

        let meta_len = serde_json::to_vec(&self.metadata).map(|v| v.len()).unwrap_or(usize::MAX);
        check(meta_len <= METADATA_MAX_BYTES, "metadata", format!("must be at most {METADATA_MAX_BYTES} bytes as JSON"));

        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn is_http_url(u: &str) -> bool {
    u.len() <= limits::URL_MAX
        && (u.starts_with("https://") || u.starts_with("http://"))
        && u.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes a key (so the
/// field returns to its default), anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> AssistantSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_need_only_a_name() {
        let s = spec(json!({"name": "Front desk"}));
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.endpointing.silence_ms, 500);
        assert_eq!(s.model.provider, Provider::Local);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<AssistantSpec>(json!({"name": "a", "nmae": "b"})).is_err());
        assert!(serde_json::from_value::<AssistantSpec>(json!({"name": "a", "model": {"temp": 1}})).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let s = spec(json!({
            "name": " ",
            "model": {"temperature": 3.5, "baseUrl": "file:///etc/passwd"},
            "endpointing": {"silenceMs": 5},
            "tools": [{"name": "lookup"}, {"name": "lookup", "type": "end-call"}],
            "endCallPhrases": [""],
        }));
        let errs = s.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in ["name", "model.temperature", "model.baseUrl", "endpointing.silenceMs", "tools[0].url", "tools[1].name", "endCallPhrases[0]"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn user_speaks_first_needs_no_greeting() {
        let s = spec(json!({"name": "a", "firstMessage": null, "firstMessageMode": "user-speaks-first"}));
        assert_eq!(s.validate(), Ok(()));
        let s = spec(json!({"name": "a", "firstMessage": null}));
        assert!(s.validate().is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
