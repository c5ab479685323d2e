//! Knowledge-base benchmarks (release): upload to searchable for 1 MB of text,
//! embedding one user turn, and top-k search over 10,000 chunks against a naive
//! full sort. Prints plain numbers.
//!
//! `CARGO_TARGET_DIR=/work/targets/knowledge cargo bench -p voxgate-knowledge`

use std::time::{Duration, Instant};

use voxgate_knowledge::{ChunkOptions, DIMENSIONS, Embedder, Limits, chunk, decode_vector, dot, encode_vector, extract, top_k};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// About 1 MB of varied English prose in paragraphs (deterministic).
fn megabyte_of_text() -> String {
    let subjects = ["The shop", "Our support team", "The warehouse", "Each customer", "The manager", "A courier", "The website", "Every invoice"];
    let verbs = ["opens", "answers", "ships", "checks", "records", "delivers", "updates", "lists"];
    let objects = ["orders before noon", "questions about refunds", "parcels to Portugal", "the opening hours", "returns within thirty days", "express deliveries", "prices in euros", "gift cards and vouchers"];
    let tails = ["on weekdays.", "every Saturday morning.", "without extra cost.", "as soon as possible.", "after the holidays.", "in the summer months."];
    let mut text = String::with_capacity(1 << 20);
    let mut i = 0usize;
    while text.len() < 1_000_000 {
        text.push_str(&format!("{} {} {} {} ", subjects[i % 8], verbs[(i / 8) % 8], objects[(i / 3) % 8], tails[(i / 5) % 6]));
        i += 1;
        if i.is_multiple_of(9) {
            text.push_str("\n\n");
        }
    }
    text
}

fn main() {
    let dir = voxgate_models::model_dir(voxgate_models::catalog::MINILM);
    let started = Instant::now();
    let embedder = Embedder::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    println!("model load: {:.0} ms", ms(started.elapsed()));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("threads available: {threads}");

    // 1. Upload to searchable: 1 MB of text.
    let text = megabyte_of_text();
    let started = Instant::now();
    let doc = extract(text.as_bytes(), "bench.txt", &Limits::default()).unwrap();
    let t_extract = started.elapsed();
    let started = Instant::now();
    let chunks = chunk(&doc.text, &ChunkOptions::default());
    let t_chunk = started.elapsed();
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let started = Instant::now();
    let vectors = embedder.embed(&texts).unwrap();
    let t_embed = started.elapsed();
    let total = t_extract + t_chunk + t_embed;
    println!(
        "upload 1 MB text ({} bytes, {} chunks): extract {:.1} ms, chunk {:.1} ms, embed {:.2} s, total {:.2} s, {:.1} chunks/s, {:.1} KB/s",
        text.len(),
        chunks.len(),
        ms(t_extract),
        ms(t_chunk),
        t_embed.as_secs_f64(),
        total.as_secs_f64(),
        chunks.len() as f64 / total.as_secs_f64(),
        text.len() as f64 / 1e3 / total.as_secs_f64()
    );
    assert_eq!(vectors.len(), chunks.len());

    // 2. One user turn.
    let turn = "What time do you open on Saturday?";
    for _ in 0..3 {
        embedder.embed(&[turn]).unwrap();
    }
    let mut samples: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            embedder.embed(&[turn]).unwrap();
            t.elapsed()
        })
        .collect();
    println!("embed one turn (50 runs): p50 {:.2} ms, p99 {:.2} ms", ms(percentile(&mut samples, 0.5)), ms(percentile(&mut samples, 0.99)));

    // 3. top_k over 10,000 x 384, against collecting every score and sorting.
    let n = 10_000;
    let base = &vectors;
    let corpus: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let v = &base[i % base.len()];
            let mut w: Vec<f32> = v.iter().enumerate().map(|(j, x)| x + ((i * 31 + j * 17) % 97) as f32 * 1e-4).collect();
            let norm = dot(&w, &w).sqrt();
            w.iter_mut().for_each(|x| *x /= norm);
            w
        })
        .collect();
    let query = &embedder.embed(&[turn]).unwrap()[0];
    let k = 5;
    let runs = 200;
    let mut heap_samples = Vec::with_capacity(runs);
    let mut naive_samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let best = top_k(query, corpus.iter().enumerate().map(|(i, v)| (i, v.as_slice())), k);
        heap_samples.push(t.elapsed());
        let t = Instant::now();
        let mut all: Vec<(usize, f32)> = corpus.iter().enumerate().map(|(i, v)| (i, dot(query, v))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        naive_samples.push(t.elapsed());
        assert_eq!(best.iter().map(|b| b.0).collect::<Vec<_>>(), all.iter().map(|a| a.0).collect::<Vec<_>>());
    }
    let (h50, h99) = (percentile(&mut heap_samples, 0.5), percentile(&mut heap_samples, 0.99));
    let (n50, n99) = (percentile(&mut naive_samples, 0.5), percentile(&mut naive_samples, 0.99));
    println!("top_k k={k} over {n} x {DIMENSIONS} ({runs} runs): p50 {:.3} ms, p99 {:.3} ms", ms(h50), ms(h99));
    println!("naive collect + full sort: p50 {:.3} ms, p99 {:.3} ms; naive/top_k at p50 {:.2}x", ms(n50), ms(n99), n50.as_secs_f64() / h50.as_secs_f64());

    // What loading the candidates from blobs adds per query.
    let blobs: Vec<Vec<u8>> = corpus.iter().map(|v| encode_vector(v)).collect();
    let mut decode_samples: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let decoded: Vec<Vec<f32>> = blobs.iter().map(|b| decode_vector(b).unwrap()).collect();
            std::hint::black_box(&decoded);
            t.elapsed()
        })
        .collect();
    println!("decode {n} blobs: p50 {:.3} ms", ms(percentile(&mut decode_samples, 0.5)));
}
