//! Knowledge bases: how long an upload takes to become searchable, and what
//! retrieval costs a turn, on SQLite and PostgreSQL.
//!
//! - **upload to searchable**: a 1 MB text file (`VOXGATE_BENCH_UPLOAD_BYTES`)
//!   POSTed to a real server, polled until `ready`. Baseline, in the same run: the
//!   same text's chunks embedded in one call to the embedder, with no server, job,
//!   pool or database: what the platform adds to the model's own time.
//! - **retrieval per turn**: a file of 10,000 chunks (`VOXGATE_BENCH_CHUNKS`) in
//!   the database; each turn embeds a question and searches (the file's record
//!   read, its vectors from the cache, brute-force top 3). Cold: the first turn of
//!   a process (vectors loaded from the database). Baseline, in the same run: the
//!   naive turn, which reads and decodes every chunk from the database each time.
//!   PostgreSQL runs when `VOXGATE_TEST_POSTGRES_URL` is set (`scripts/pg.sh`).
//!
//! `cargo bench -p voxgate --bench knowledge` (release; about 6 minutes on 2 cores).

use std::time::{Duration, Instant};

use serde_json::Value;
use voxgate_domain::key::{KeyKind, mint};
use voxgate_domain::FileStatus;
use voxgate_knowledge::{ChunkOptions, Embedder};
use voxgate_providers::pool::{InferencePool, WaitMeter};
use voxgate_server::config::ServeArgs;
use voxgate_server::knowledge::Knowledge;
use voxgate_server::session::providers::Scripted;
use voxgate_store::Store;
use voxgate_testkit::TestDb;

const TURNS: usize = 100;
const QUESTIONS: [&str; 5] = [
    "What time does the library open on Saturday?",
    "How much does a parking pass cost?",
    "Where can I print in colour?",
    "When is the children's story hour?",
    "How do I replace a lost card?",
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Deterministic text of about `bytes` bytes: sentences from a small grammar, in
/// paragraphs, so chunking and tokenizing do real work.
fn document(bytes: usize) -> String {
    const SUBJECTS: [&str; 8] = ["The north branch", "Our archive", "The reading room", "The children's wing", "Parking", "The print centre", "Membership", "The cafe"];
    const VERBS: [&str; 6] = ["opens", "closes", "offers", "requires", "welcomes", "schedules"];
    const OBJECTS: [&str; 8] = ["at nine on weekdays", "a card for every visitor", "quiet study until late", "story hours on Wednesdays", "passes for twelve dollars", "colour copies at fifty cents", "renewals once a year", "soup and sandwiches until three"];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut out = String::with_capacity(bytes + 200);
    let mut sentence = 0;
    while out.len() < bytes {
        out.push_str(&format!("{} {} {} (note {}). ", SUBJECTS[next(8)], VERBS[next(6)], OBJECTS[next(8)], next(10_000)));
        sentence += 1;
        if sentence % 6 == 0 {
            out.push_str("\n\n");
        }
    }
    out
}

fn model_dir() -> std::path::PathBuf {
    let dir = voxgate_models::model_dir(voxgate_models::MINILM);
    assert!(dir.join("model.safetensors").is_file(), "all-MiniLM-L6-v2 is missing from {}: run `voxgate models fetch`", dir.display());
    dir
}

async fn upload_to_searchable(bytes: usize) -> (f64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_tests(&format!("sqlite://{}", dir.path().join("bench.db").display()));
    args.files_dir = dir.path().join("files");
    args.upload_max_bytes = bytes + 1024 * 1024;
    args.rate_limit_uploads = voxgate_server::config::Rate0(None);
    let running = voxgate_server::serve::start_with(args, std::sync::Arc::new(Scripted)).await.unwrap();
    let store = running.store.clone().unwrap();
    let m = mint("bench", KeyKind::Private, vec![]);
    store.insert_key(&m.key).await.unwrap();
    let http = reqwest::Client::new();
    let text = document(bytes);
    let boundary = "bench-boundary-x7";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"handbook.txt\"\r\nContent-Type: text/plain\r\n\r\n").into_bytes();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let started = Instant::now();
    let res = http
        .post(format!("{}/api/files", running.url()))
        .bearer_auth(&m.secret)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let file = loop {
        let f: Value = http.get(format!("{}/api/files/{id}", running.url())).bearer_auth(&m.secret).send().await.unwrap().json().await.unwrap();
        if f["status"] != "processing" {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed().as_secs_f64();
    assert_eq!(file["status"], "ready", "{file}");
    running.drain().await.unwrap();
    (took, file["chunkCount"].as_i64().unwrap())
}

/// The naive turn: every chunk read and decoded from the database, then searched.
async fn naive_turn(store: &Store, embedder: &Embedder, file_id: &str, question: &str) -> Duration {
    let started = Instant::now();
    let rows = store.file_chunks(file_id).await.unwrap();
    let vectors: Vec<Vec<f32>> = rows.iter().map(|r| voxgate_knowledge::decode_vector(&r.embedding).unwrap()).collect();
    let q = embedder.embed(&[question]).unwrap().pop().unwrap();
    let hits = voxgate_knowledge::top_k(&q, vectors.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 3);
    assert_eq!(hits.len(), 3);
    std::hint::black_box(&rows[hits[0].0].text);
    started.elapsed()
}

async fn retrieval(db: TestDb, chunks: usize, embedder: &Embedder) {
    let store = db.store().await;
    let file = voxgate_testkit::file_record(FileStatus::Processing);
    store.insert_file(&file).await.unwrap();
    // Real vectors for a few distinct texts, repeated: storage and search do not
    // care whether the 10,000 are distinct, and embedding them all takes minutes.
    let base_texts: Vec<String> = document(64 * 1024).split("\n\n").map(str::to_string).filter(|s| !s.trim().is_empty()).take(64).collect();
    let refs: Vec<&str> = base_texts.iter().map(String::as_str).collect();
    let base = embedder.embed(&refs).unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        (0..chunks).map(|i| (format!("{} [{i}]", base_texts[i % base.len()]), voxgate_knowledge::encode_vector(&base[i % base.len()]))).collect();
    let t = Instant::now();
    store.complete_file(&file.id, &rows).await.unwrap();
    let insert = t.elapsed();

    let ids = vec![file.id.clone()];
    let mut cold = Vec::new();
    for question in QUESTIONS.iter().take(3) {
        let k = Knowledge::start(store.clone(), "unused".into(), model_dir(), InferencePool::new(1), 1 << 20);
        let t = Instant::now();
        let hits = k.search(&ids, question, 3, &WaitMeter::default()).await.unwrap();
        cold.push(ms(t.elapsed()));
        assert_eq!(hits.len(), 3);
    }
    let k = Knowledge::start(store.clone(), "unused".into(), model_dir(), InferencePool::new(1), 1 << 20);
    k.search(&ids, QUESTIONS[0], 3, &WaitMeter::default()).await.unwrap();
    let mut warm = Vec::new();
    for turn in 0..TURNS {
        let t = Instant::now();
        k.search(&ids, QUESTIONS[turn % QUESTIONS.len()], 3, &WaitMeter::default()).await.unwrap();
        warm.push(ms(t.elapsed()));
    }
    let mut embed_only = Vec::new();
    for turn in 0..TURNS {
        let t = Instant::now();
        embedder.embed(&[QUESTIONS[turn % QUESTIONS.len()]]).unwrap();
        embed_only.push(ms(t.elapsed()));
    }
    let mut naive = Vec::new();
    for turn in 0..TURNS / 4 {
        naive.push(ms(naive_turn(&store, embedder, &file.id, QUESTIONS[turn % QUESTIONS.len()]).await));
    }
    let (w50, n50) = (quantile(&warm, 0.5), quantile(&naive, 0.5));
    println!(
        "retrieval {:<8} {chunks} chunks: stored in {:.0} ms; per turn p50 {w50:.1} ms, p99 {:.1} ms (of which embedding the question p50 {:.1} ms); \
         cold first turn p50 {:.0} ms; naive turn (all chunks read each time) p50 {n50:.1} ms: {:.1}x faster",
        db.name,
        ms(insert),
        quantile(&warm, 0.99),
        quantile(&embed_only, 0.5),
        quantile(&cold, 0.5),
        n50 / w50,
    );
}

#[tokio::main]
async fn main() {
    voxgate_server::init_crypto();
    let bytes: usize = std::env::var("VOXGATE_BENCH_UPLOAD_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let chunks: usize = std::env::var("VOXGATE_BENCH_CHUNKS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let embedder = Embedder::load(&model_dir()).unwrap();

    retrieval(TestDb::sqlite(), chunks, &embedder).await;
    match TestDb::postgres().await {
        Some(db) => retrieval(db, chunks, &embedder).await,
        None => println!("retrieval postgres: skipped (set VOXGATE_TEST_POSTGRES_URL; scripts/pg.sh starts one)"),
    }

    let (took, n) = upload_to_searchable(bytes).await;
    // Baseline: the same chunks through the embedder directly.
    let text = document(bytes);
    let pieces = voxgate_knowledge::chunk(&text, &ChunkOptions::default());
    let refs: Vec<&str> = pieces.iter().map(|c| c.text.as_str()).collect();
    let t = Instant::now();
    embedder.embed(&refs).unwrap();
    let raw = t.elapsed().as_secs_f64();
    println!(
        "upload to searchable: {bytes} bytes, {n} chunks in {took:.1} s ({:.0} chunks/s); the embedder alone on the same {} chunks: {raw:.1} s; platform overhead {:.2}x",
        n as f64 / took,
        pieces.len(),
        took / raw,
    );
}
