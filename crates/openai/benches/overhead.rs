//! What the provider costs over a bare HTTP call, and what `warm()` saves, against
//! the fake OpenAI server on loopback (plain HTTP: no TLS, so the warm-up gain here
//! is only TCP set-up; against api.openai.com it also saves the TLS handshake).
//!
//! `cargo bench -p voxgate-openai --bench overhead` prints medians in microseconds.

use voxgate_fake_openai as fake;

use std::time::{Duration, Instant};

use fake::Fake;
use futures_util::StreamExt;
use voxgate_openai::{OpenAi, OpenAiConfig};
use voxgate_services::llm::{ChatMessage, ChatRequest, LlmEvent, Role};

const ROUNDS: usize = 300;
const COLD_ROUNDS: usize = 40;

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::System, "You are brief."), ChatMessage::new(Role::User, "Weather in Paris?")],
        tools: vec![],
        temperature: 0.3,
        max_tokens: 100,
    }
}

fn config(fake: &Fake) -> OpenAiConfig {
    OpenAiConfig { api_key: Some("sk-bench".into()), base_url: fake.base.clone(), ..OpenAiConfig::default() }
}

/// (first token, whole reply) through the provider.
async fn provider_call(ai: &OpenAi) -> (Duration, Duration) {
    let started = Instant::now();
    let mut stream = ai.llm().chat(request());
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event.expect("the fake answers") {
            LlmEvent::Token(_) if first.is_none() => first = Some(started.elapsed()),
            LlmEvent::Done => break,
            _ => {}
        }
    }
    (first.expect("a token"), started.elapsed())
}

/// The same request by hand: one reqwest call, the body read until the first
/// non-empty content and then to its end, no SSE parser, no deadlines, no metrics.
async fn bare_call(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> (Duration, Duration) {
    let started = Instant::now();
    let response = client.post(url).bearer_auth("sk-bench").json(body).send().await.expect("send");
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut seen = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("body");
        if first.is_none() {
            seen.extend_from_slice(&piece);
            if seen.windows(12).any(|w| w.starts_with(b"\"content\":\"") && w[11] != b'"') {
                first = Some(started.elapsed());
            }
        }
    }
    (first.expect("a token"), started.elapsed())
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // Steady state: warm pools on both sides, interleaved rounds.
        let fake = Fake::start().await;
        fake.set_normal(|n| n.chat_pause = Duration::ZERO);
        let ai = OpenAi::with_own_client(config(&fake)).unwrap();
        let client = reqwest::Client::builder().build().unwrap();
        let url = format!("{}/chat/completions", fake.base);
        let body = serde_json::json!({
            "model": "gpt-4o-mini", "stream": true, "temperature": 0.3, "max_tokens": 100,
            "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Weather in Paris?"}],
        });
        for _ in 0..20 {
            provider_call(&ai).await;
            bare_call(&client, &url, &body).await;
        }
        let (mut p_first, mut p_all, mut b_first, mut b_all) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let (f, a) = provider_call(&ai).await;
            p_first.push(f);
            p_all.push(a);
            let (f, a) = bare_call(&client, &url, &body).await;
            b_first.push(f);
            b_all.push(a);
        }
        let (pf, bf, pa, ba) = (median(p_first), median(b_first), median(p_all), median(b_all));
        println!("steady state, {ROUNDS} rounds, medians in microseconds");
        println!("first token  provider {pf:.0}  bare reqwest {bf:.0}  ratio {:.2}  overhead {:.0}", pf / bf, pf - bf);
        println!("whole reply  provider {pa:.0}  bare reqwest {ba:.0}  ratio {:.2}  overhead {:.0}", pa / ba, pa - ba);

        // The first request of a fresh pool, with and without a warm-up before it.
        let (mut cold, mut warm) = (vec![], vec![]);
        for round in 0..COLD_ROUNDS * 2 {
            let fake = Fake::start().await;
            fake.set_normal(|n| n.chat_pause = Duration::ZERO);
            let ai = OpenAi::with_own_client(config(&fake)).unwrap();
            if round % 2 == 1 {
                ai.warm().await.unwrap();
                warm.push(provider_call(&ai).await.0);
            } else {
                cold.push(provider_call(&ai).await.0);
            }
        }
        let (c, w) = (median(cold), median(warm));
        println!("first request of a fresh pool, {COLD_ROUNDS} rounds each, first token medians in microseconds");
        println!("without warm() {c:.0}  after warm() {w:.0}  ratio {:.2}  saved {:.0}", c / w, c - w);
    });
}
