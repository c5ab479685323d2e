//! First-token time and tokens/s for a typical voice turn, with the conversation
//! prefix cached versus evaluated from scratch, for 1 and 2 threads; and model load time.
//!
//! `CARGO_TARGET_DIR=/work/targets/llama cargo bench -p voxgate-llama --bench llama`
//! Environment: `LLAMA_BENCH_REPS` (default 7), `LLAMA_BENCH_THREADS` (default "1,2").

use std::path::Path;
use std::time::{Duration, Instant};

use voxgate_llama::{GenParams, GenStats, Llama, LlamaOptions, Message};

const SYSTEM: &str = "You are Ava, the friendly phone assistant of Green Leaf Dental. Answer callers in one or two \
short spoken sentences without lists or symbols. You can tell opening hours, book appointments, and explain \
prices. If you do not know, offer to take a message.";

const TURNS: [(&str, &str); 3] = [
    ("Hi, are you open on Saturdays?", "Yes, we are open on Saturdays from nine to one."),
    ("Great. How much is a cleaning?", "A regular cleaning costs eighty dollars."),
    ("Do you take new patients?", "Yes, we are happy to welcome new patients."),
];

const QUESTIONS: [&str; 4] = [
    "Can I book a cleaning for next Saturday morning?",
    "What should I bring to my first visit?",
    "Is there parking near the office?",
    "Can you remind me of your phone number?",
];

fn history() -> Vec<Message> {
    let mut m = vec![Message::system(SYSTEM)];
    for (q, a) in TURNS {
        m.push(Message::user(q));
        m.push(Message::assistant(a));
    }
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn turn(llama: &Llama, messages: &[Message]) -> (String, GenStats) {
    let mut text = String::new();
    let params = GenParams { max_tokens: 40, ..GenParams::default() };
    let stats = llama
        .generate(messages, &params, |p| {
            text.push_str(p);
            true
        })
        .expect("generation");
    (text, stats)
}

struct Row {
    ttft: Vec<f64>,
    tps: Vec<f64>,
    prompt: Vec<f64>,
    evaluated: Vec<f64>,
}

impl Row {
    fn new() -> Self {
        Row { ttft: vec![], tps: vec![], prompt: vec![], evaluated: vec![] }
    }
    fn add(&mut self, s: &GenStats) {
        self.ttft.push(ms(s.time_to_first_token));
        self.tps.push(s.tokens_per_second());
        self.prompt.push(s.prompt_tokens as f64);
        self.evaluated.push(s.evaluated_tokens as f64);
    }
    fn print(&self, name: &str) {
        println!(
            "  {name:<7} first token median {:7.1} ms (min {:6.1}, max {:6.1})  generation {:6.1} tok/s  prompt {:4.0} tokens, evaluated {:4.0}",
            median(self.ttft.clone()),
            self.ttft.iter().copied().fold(f64::INFINITY, f64::min),
            self.ttft.iter().copied().fold(0.0, f64::max),
            median(self.tps.clone()),
            median(self.prompt.clone()),
            median(self.evaluated.clone()),
        );
    }
}

fn bench(path: &Path, threads: u32, reps: usize) {
    let options = LlamaOptions { threads, ..LlamaOptions::default() };
    let llama = Llama::load(path, options.clone()).expect("load");
    // Naive baseline: the whole prompt evaluated every turn.
    let naive = Llama::load(path, LlamaOptions { reuse_prefix: false, ..options }).expect("load");
    let (mut cached, mut uncached) = (Row::new(), Row::new());
    let mut prompt_tps = Vec::new();
    for rep in 0..reps {
        let question = QUESTIONS[rep % QUESTIONS.len()];
        // The previous turn was generated in the same session: prefix cached.
        let mut messages = history();
        messages.truncate(messages.len() - 1);
        let (previous, _) = turn(&llama, &messages);
        messages.push(Message::assistant(previous.trim()));
        messages.push(Message::user(question));
        let (_, s) = turn(&llama, &messages);
        cached.add(&s);

        let (_, s) = turn(&naive, &messages);
        assert_eq!(s.reused_tokens, 0);
        prompt_tps.push(s.prompt_tokens_per_second());
        uncached.add(&s);
    }
    println!("threads {threads}: {reps} repetitions, 40 tokens at most per reply");
    cached.print("cached");
    uncached.print("naive");
    println!(
        "  ratio naive/cached first token: {:.2}x   prompt evaluation {:.0} tok/s",
        median(uncached.ttft.clone()) / median(cached.ttft.clone()),
        median(prompt_tps)
    );
}

fn main() {
    let path = voxgate_models::model_dir(voxgate_models::SMOLLM2).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run `voxgate models fetch`", path.display());
    let reps: usize = std::env::var("LLAMA_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let threads: Vec<u32> = std::env::var("LLAMA_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();

    let mut loads = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let llama = Llama::load(&path, LlamaOptions::default()).expect("load");
        // The first session is created on first use: count it in the load.
        turn(&llama, &[Message::user("Hi")]);
        loads.push((ms(llama.load_time()), ms(start.elapsed())));
    }
    println!(
        "load: Llama::load median {:.1} ms; load + first session + a short first reply {:.1} ms",
        median(loads.iter().map(|l| l.0).collect()),
        median(loads.iter().map(|l| l.1).collect())
    );
    for t in threads {
        bench(&path, t, reps);
    }
}
