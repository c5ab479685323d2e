//! [`Llama`]: the loaded model, its sessions, and generation.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::gguf::{self, GgufInfo};
use crate::prompt::{self, Message, Role};
use crate::session::{Pool, Session, common_prefix};
use crate::utf8::Utf8Stream;
use crate::Error;

/// Largest total size of the messages of one request, in bytes.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// How [`Llama::load`] sets up the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaOptions {
    /// CPU threads per generation (prompt and tokens). Default: 2, or 1 on a
    /// one-core machine. With the `openmp` feature (default) 2 threads were 1.8x
    /// faster than 1 on this 2-core machine; without it, ggml's own thread pool
    /// made 2 threads 10x slower than 1, so use 1 there.
    pub threads: u32,
    /// Context size of each session, in tokens: the prompt plus the reply must fit.
    /// Default 2048 (the model was trained with 8192). Each session's KV cache
    /// costs about 23 KB per token for SmolLM2-135M (47 MB at 2048).
    pub context_size: u32,
    /// Number of cached sessions (llama.cpp contexts). Also the number of
    /// generations that can run at once; further callers wait. Default 4.
    pub sessions: usize,
    /// Tokens evaluated per llama.cpp batch while reading a prompt. Default 512.
    pub batch_size: u32,
    /// Reuse the KV cache of a shared token prefix (default). `false` evaluates
    /// every prompt from scratch: only useful as a baseline.
    pub reuse_prefix: bool,
}

impl Default for LlamaOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LlamaOptions { threads: cores.min(2) as u32, context_size: 2048, sessions: 4, batch_size: 512, reuse_prefix: true }
    }
}

/// How one reply is generated.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// Most tokens to generate. Also reserved in the context when the prompt
    /// is fitted (at most half the context).
    pub max_tokens: u32,
    /// 0 = greedy (deterministic); otherwise top-p sampling at this temperature.
    pub temperature: f32,
    /// Nucleus sampling threshold when `temperature > 0`.
    pub top_p: f32,
    /// Seed of the sampler when `temperature > 0`.
    pub seed: u32,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams { max_tokens: 256, temperature: 0.0, top_p: 0.95, seed: 0 }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn (`<|im_end|>` or another end-of-generation token).
    EndOfTurn,
    /// [`GenParams::max_tokens`] were generated.
    MaxTokens,
    /// The callback returned `false`.
    Cancelled,
    /// The session's context is full.
    ContextFull,
}

/// Counts and timings of one [`Llama::generate`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenStats {
    /// Tokens in the rendered prompt (after dropping old turns, if any).
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache was reused from an earlier call.
    pub reused_tokens: usize,
    /// Prompt tokens evaluated by this call (`prompt_tokens - reused_tokens`).
    pub evaluated_tokens: usize,
    /// Tokens generated (the end-of-turn token not counted).
    pub generated_tokens: usize,
    /// Oldest non-system messages dropped to fit the context.
    pub dropped_messages: usize,
    /// From the call to the first sampled token (includes waiting for a session).
    pub time_to_first_token: Duration,
    /// Time spent evaluating the prompt.
    pub prompt_time: Duration,
    /// From the call to its return.
    pub total_time: Duration,
    pub finish: FinishReason,
}

impl GenStats {
    /// Generation speed after the first token, in tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        let secs = self.total_time.saturating_sub(self.time_to_first_token).as_secs_f64();
        if self.generated_tokens <= 1 || secs <= 0.0 { 0.0 } else { (self.generated_tokens - 1) as f64 / secs }
    }

    /// Prompt evaluation speed, in tokens per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        let secs = self.prompt_time.as_secs_f64();
        if secs <= 0.0 { 0.0 } else { self.evaluated_tokens as f64 / secs }
    }
}

/// A loaded chat model with its cached sessions.
///
/// `Send + Sync`; `clone` is an `Arc` clone. Load it once per process and share it:
/// [`Llama::generate`] takes `&self` and runs on the calling thread.
#[derive(Clone)]
pub struct Llama {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("path", &self.inner.info.path).field("options", &self.inner.options).finish()
    }
}

/// Field order matters: `pool` holds contexts that point into `model`, and Rust
/// drops fields in declaration order, so the contexts go first.
struct Inner {
    pool: Pool,
    /// Boxed so that its address never changes while contexts refer to it.
    model: Box<LlamaModel>,
    template: LlamaChatTemplate,
    /// Text of the control tokens, removed from message text.
    control: Vec<String>,
    options: LlamaOptions,
    info: GgufInfo,
    load_time: Duration,
}

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Llama {
    /// Checks the GGUF file with [`gguf::inspect`], then loads it with llama.cpp.
    /// Sessions are created on first use.
    pub fn load(path: &Path, options: LlamaOptions) -> Result<Llama, Error> {
        let start = Instant::now();
        if !(1..=256).contains(&options.threads) {
            return Err(Error::Options(format!("threads is {}, use 1 to 256", options.threads)));
        }
        if options.sessions == 0 || options.sessions > 64 {
            return Err(Error::Options(format!("sessions is {}, use 1 to 64", options.sessions)));
        }
        if options.batch_size < 1 {
            return Err(Error::Options("batch_size is 0".into()));
        }
        let info = gguf::inspect(path)?;
        let trained = info.context_length().unwrap_or(u64::from(u32::MAX));
        if options.context_size < 64 || u64::from(options.context_size) > trained {
            return Err(Error::Options(format!(
                "context_size is {}, use 64 to {trained} (the model's training context)",
                options.context_size
            )));
        }
        if info.chat_template().is_none() {
            return Err(Error::NoChatTemplate { path: path.into() });
        }
        let load_err = |reason: String| Error::Load { path: path.into(), reason };
        let backend = backend().map_err(load_err)?;
        let model =
            LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| load_err(e.to_string()))?;
        let template = model.chat_template(None).map_err(|_| Error::NoChatTemplate { path: path.into() })?;
        let vocab = model.vocab();
        let control = vocab
            .tokens()
            .filter(|&t| vocab.is_control(t))
            .filter_map(|t| vocab.text(t).map(|s| s.to_string_lossy().into_owned()))
            .filter(|s| !s.is_empty())
            .collect();
        let inner = Inner {
            pool: Pool::new(options.sessions),
            model: Box::new(model),
            template,
            control,
            options,
            info,
            load_time: start.elapsed(),
        };
        Ok(Llama { inner: Arc::new(inner) })
    }

    /// The checked header of the loaded file.
    pub fn info(&self) -> &GgufInfo {
        &self.inner.info
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &LlamaOptions {
        &self.inner.options
    }

    /// How long [`Llama::load`] took.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// Sessions created so far (at most [`LlamaOptions::sessions`]).
    pub fn session_count(&self) -> usize {
        self.inner.pool.len()
    }

    /// The text of the model's control tokens (`<|im_start|>`, ...), which are
    /// removed from message text before rendering.
    pub fn control_tokens(&self) -> &[String] {
        &self.inner.control
    }

    /// Renders `messages` as the model sees them (with an open assistant turn).
    pub fn render(&self, messages: &[Message]) -> Result<String, Error> {
        check_input(messages)?;
        prompt::render(&self.inner.model, &self.inner.template, messages, &self.inner.control)
    }

    /// Number of tokens of the rendered prompt, without dropping any turn.
    pub fn count_prompt_tokens(&self, messages: &[Message]) -> Result<usize, Error> {
        Ok(self.inner.tokenize(&self.render(messages)?).len())
    }

    /// Generates the assistant's reply to `messages`, calling `on_token` with each
    /// new piece of text (always whole UTF-8 characters; control tokens are not
    /// shown). Return `false` from `on_token` to stop at once.
    ///
    /// Stops at the end of the model's turn, after `params.max_tokens`, or when the
    /// context is full. If the prompt does not leave room for the reply, the
    /// oldest non-system messages are dropped (the count is in
    /// [`GenStats::dropped_messages`]); if the system messages and the last
    /// message alone are too long, returns [`Error::PromptTooLong`].
    ///
    /// Blocks the calling thread (run it on a worker thread); waits for a free
    /// session when all are busy.
    pub fn generate(
        &self,
        messages: &[Message],
        params: &GenParams,
        mut on_token: impl FnMut(&str) -> bool,
    ) -> Result<GenStats, Error> {
        let start = Instant::now();
        check_input(messages)?;
        if !params.temperature.is_finite() || params.temperature < 0.0 {
            return Err(Error::Options(format!("temperature is {}, use 0 or more", params.temperature)));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(Error::Options(format!("top_p is {}, use a value in (0, 1]", params.top_p)));
        }
        let inner = &*self.inner;
        let (prompt, dropped_messages) = inner.fit(messages, params.max_tokens)?;
        if prompt.is_empty() {
            return Err(Error::NoMessages);
        }
        let mut lease = inner.pool.lease(&prompt, || inner.new_session())?;
        let session = lease.session();
        let n_ctx = inner.options.context_size as usize;

        let reused_tokens = inner.keep_prefix(session, &prompt);
        session.prompt_len = prompt.len();
        let prompt_start = Instant::now();
        inner.evaluate(session, &prompt[reused_tokens..])?;
        let prompt_time = prompt_start.elapsed();

        let mut sampler = if params.temperature == 0.0 {
            LlamaSampler::greedy()
        } else {
            LlamaSampler::chain_simple([
                LlamaSampler::top_p(params.top_p, 1),
                LlamaSampler::temp(params.temperature),
                LlamaSampler::dist(params.seed),
            ])
        };
        let vocab = inner.model.vocab();
        let mut text = Utf8Stream::default();
        let mut piece = Vec::with_capacity(32);
        let mut time_to_first_token = None;
        let mut generated_tokens = 0;
        let finish = loop {
            let token = sampler.sample(&session.ctx, -1);
            time_to_first_token.get_or_insert_with(|| start.elapsed());
            if vocab.is_eog(token) {
                break FinishReason::EndOfTurn;
            }
            generated_tokens += 1;
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let out = text.push(&piece);
            if !out.is_empty() && !on_token(&out) {
                break FinishReason::Cancelled;
            }
            if generated_tokens >= params.max_tokens as usize {
                break FinishReason::MaxTokens;
            }
            if session.tokens.len() >= n_ctx {
                break FinishReason::ContextFull;
            }
            inner.evaluate(session, &[token])?;
        };
        if finish != FinishReason::Cancelled {
            let rest = text.finish();
            if !rest.is_empty() {
                on_token(&rest);
            }
        }
        Ok(GenStats {
            prompt_tokens: prompt.len(),
            reused_tokens,
            evaluated_tokens: prompt.len() - reused_tokens,
            generated_tokens,
            dropped_messages,
            time_to_first_token: time_to_first_token.unwrap_or_default(),
            prompt_time,
            total_time: start.elapsed(),
            finish,
        })
    }
}

fn check_input(messages: &[Message]) -> Result<(), Error> {
    if messages.is_empty() {
        return Err(Error::NoMessages);
    }
    let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
    if bytes > MAX_INPUT_BYTES {
        return Err(Error::InputTooLarge { bytes, limit: MAX_INPUT_BYTES });
    }
    Ok(())
}

impl Inner {
    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, true)
    }

    fn new_session(&self) -> Result<Session, Error> {
        let o = &self.options;
        let threads = o.threads as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(o.context_size))
            .with_n_batch(o.batch_size)
            .with_n_ubatch(o.batch_size)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let backend = backend().map_err(|reason| Error::Context { n_ctx: o.context_size, reason })?;
        // SAFETY: the context may outlive this borrow only inside `self.pool`,
        // which is dropped before `self.model` (field order of `Inner`), and the
        // boxed model never moves. A leased context is returned to the pool
        // before `generate`, which borrows `self`, returns.
        let model: &'static LlamaModel = unsafe { &*std::ptr::from_ref::<LlamaModel>(&self.model) };
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| Error::Context { n_ctx: o.context_size, reason: e.to_string() })?;
        Ok(Session { ctx, tokens: Vec::new(), prompt_len: 0 })
    }

    /// Renders and tokenizes the messages; while the prompt leaves less than
    /// `min(max_tokens, n_ctx / 2)` tokens for the reply, drops the oldest
    /// non-system messages (binary search on how many), always keeping the last.
    fn fit(&self, messages: &[Message], max_tokens: u32) -> Result<(Vec<LlamaToken>, usize), Error> {
        let n_ctx = self.options.context_size as usize;
        let limit = n_ctx - (max_tokens as usize).clamp(1, n_ctx / 2);
        let systems = messages.iter().take_while(|m| m.role == Role::System).count().min(messages.len() - 1);
        let tokens_without = |drop: usize| -> Result<Vec<LlamaToken>, Error> {
            let kept: Vec<Message> =
                messages[..systems].iter().chain(&messages[systems + drop..]).cloned().collect();
            Ok(self.tokenize(&prompt::render(&self.model, &self.template, &kept, &self.control)?))
        };
        let all = tokens_without(0)?;
        if all.len() <= limit {
            return Ok((all, 0));
        }
        let droppable = messages.len() - systems - 1;
        let most = tokens_without(droppable)?;
        if most.len() > limit {
            return Err(Error::PromptTooLong { tokens: most.len(), limit });
        }
        // The fewest drops that fit: lo does not fit, hi fits.
        let (mut lo, mut hi, mut best) = (0, droppable, most);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let t = tokens_without(mid)?;
            if t.len() <= limit {
                (hi, best) = (mid, t);
            } else {
                lo = mid;
            }
        }
        Ok((best, hi))
    }

    /// Keeps the session's KV entries shared with `prompt` (at least one prompt
    /// token is always left to evaluate, for its logits) and drops the rest.
    /// Returns the number of tokens kept.
    fn keep_prefix(&self, session: &mut Session, prompt: &[LlamaToken]) -> usize {
        let shared = if self.options.reuse_prefix { common_prefix(&session.tokens, prompt) } else { 0 };
        let keep = shared.min(prompt.len().saturating_sub(1));
        if keep < session.tokens.len() {
            let removed = session.ctx.clear_kv_cache_seq(Some(0), Some(keep as u32), None).unwrap_or(false);
            if !removed {
                session.ctx.clear_kv_cache();
                session.tokens.clear();
                return 0;
            }
            session.tokens.truncate(keep);
        }
        keep
    }

    /// Evaluates `tokens` after the session's tokens, asking for logits of the last.
    /// On failure the session is reset, so its token list always matches its KV cache.
    fn evaluate(&self, session: &mut Session, tokens: &[LlamaToken]) -> Result<(), Error> {
        let batch_size = self.options.batch_size as usize;
        let mut batch = LlamaBatch::new(batch_size.min(tokens.len().max(1)), 1);
        let chunks = tokens.len().div_ceil(batch_size);
        for (c, chunk) in tokens.chunks(batch_size).enumerate() {
            batch.clear();
            let base = session.tokens.len();
            for (i, &t) in chunk.iter().enumerate() {
                let last = c + 1 == chunks && i + 1 == chunk.len();
                batch.add(t, (base + i) as i32, &[0], last).map_err(|e| Error::Decode(e.to_string()))?;
            }
            if let Err(e) = session.ctx.decode(&mut batch) {
                session.ctx.clear_kv_cache();
                session.tokens.clear();
                return Err(Error::Decode(e.to_string()));
            }
            session.tokens.extend_from_slice(chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn llama_is_send_and_sync() {
        assert_send_sync::<Llama>();
    }

    /// Characters split across the model's real tokens come out whole.
    #[test]
    fn pieces_of_split_characters_are_joined() {
        let path = voxgate_models::model_dir(voxgate_models::SMOLLM2).join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(path.is_file(), "{} is missing: run `voxgate models fetch`", path.display());
        let llama = Llama::load(&path, LlamaOptions::default()).unwrap();
        let text = "Café, 東京, naïve 😀🎉 ünïcödé";
        let vocab = llama.inner.model.vocab();
        let tokens = vocab.tokenize(text.as_bytes(), false, false);
        let pieces: Vec<Vec<u8>> = tokens.iter().map(|&t| vocab.token_to_piece(t, false, None)).collect();
        assert!(pieces.iter().any(|p| std::str::from_utf8(p).is_err()), "no token splits a character");
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        for p in &pieces {
            let piece = stream.push(p);
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "{piece:?}");
            out += &piece;
        }
        out += &stream.finish();
        assert_eq!(out, text);
    }
}
