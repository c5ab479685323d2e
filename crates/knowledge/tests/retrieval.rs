//! Vector blobs, top-k search against a naive full sort, and retrieval through
//! the whole pipeline with the real model.

mod common;

use voxgate_knowledge::{ChunkOptions, DIMENSIONS, Embedder, Options, VectorError, decode_vector, dot, encode_vector, ingest, top_k};

fn random_unit_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..DIMENSIONS).map(|_| next()).collect();
            let n = dot(&v, &v).sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect()
}

#[test]
fn vectors_round_trip_through_blobs_and_hostile_blobs_are_errors() {
    let v = &random_unit_vectors(1, 7)[0];
    let blob = encode_vector(v);
    assert_eq!(blob.len(), DIMENSIONS * 4);
    assert_eq!(&blob[..4], &v[0].to_le_bytes());
    assert_eq!(&decode_vector(&blob).unwrap(), v);

    for len in [0, 3, DIMENSIONS * 4 - 4, DIMENSIONS * 4 + 1, DIMENSIONS * 8] {
        let e = decode_vector(&vec![0u8; len]).unwrap_err();
        assert_eq!(e, VectorError::WrongLength { bytes: len, expected: DIMENSIONS * 4 });
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = v.clone();
        w[17] = bad;
        assert_eq!(decode_vector(&encode_vector(&w)).unwrap_err(), VectorError::NotFinite { index: 17 });
    }
}

#[test]
fn top_k_agrees_with_a_full_sort() {
    let vectors = random_unit_vectors(2_000, 42);
    let query = &random_unit_vectors(1, 99)[0];
    let mut naive: Vec<(usize, f32)> = vectors.iter().enumerate().map(|(i, v)| (i, dot(query, v))).collect();
    naive.sort_by(|a, b| b.1.total_cmp(&a.1));
    for k in [1, 5, 50, 2_000, 5_000] {
        let got = top_k(query, vectors.iter().enumerate().map(|(i, v)| (i, v.as_slice())), k);
        assert_eq!(got, naive[..k.min(naive.len())].to_vec(), "k = {k}");
    }
    assert!(top_k(query, vectors.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 0).is_empty());
}

#[test]
fn top_k_skips_wrong_lengths_and_non_finite_scores_and_keeps_ties_in_order() {
    let q = [1.0f32, 0.0];
    let cands: Vec<(&str, Vec<f32>)> = vec![
        ("short", vec![1.0]),
        ("nan", vec![f32::NAN, 0.0]),
        ("a", vec![0.5, 0.5]),
        ("b", vec![0.5, 0.1]),
        ("best", vec![0.9, 0.0]),
        ("c", vec![0.5, 0.9]),
    ];
    let got = top_k(&q, cands.iter().map(|(id, v)| (*id, v.as_slice())), 3);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ["best", "a", "b"]);
}

#[test]
fn the_opening_hours_chunk_answers_the_saturday_question() {
    let embedder = Embedder::load(&common::minilm_dir()).unwrap();
    let doc = "# Customer information\n\n\
        ## Opening hours\n\n\
        Our shop on Calle Mayor is open from Monday to Friday between 9:00 and 19:00. \
        On Saturdays we open at 10:00 and close at 14:00, and on Sundays and public holidays \
        the shop stays closed. During the summer months the afternoon hours may be shorter.\n\n\
        ## Refund policy\n\n\
        If you are not satisfied with a product, you can return it within thirty days of delivery. \
        The refund is paid to the original payment method within fourteen days after we receive \
        the returned item. Sale items and gift cards cannot be refunded.\n\n\
        ## Shipping\n\n\
        We ship to every country in the European Union. Standard delivery takes three to five \
        working days and costs five euros; express delivery arrives the next working day. \
        Orders above fifty euros ship for free.";
    let options = Options { chunking: ChunkOptions { target_words: 60, overlap_words: 10, max_chars: 1_000 }, ..Options::default() };
    let ingested = ingest(doc.as_bytes(), "info.md", &embedder, &options).unwrap();
    assert!(ingested.chunks.len() >= 3, "{} chunks", ingested.chunks.len());

    let ask = |question: &str| {
        let q = &embedder.embed(&[question]).unwrap()[0];
        let best = top_k(q, ingested.chunks.iter().map(|(c, v)| (c.index, v.as_slice())), 3);
        ingested.chunks[best[0].0].0.text.clone()
    };
    let hours = ask("What time do you open on Saturday?");
    assert!(hours.contains("Saturdays we open at 10:00"), "{hours:?}");
    let refund = ask("How long until I get my money back?");
    assert!(refund.contains("refund is paid"), "{refund:?}");
    let shipping = ask("Do you deliver to Portugal and how much does it cost?");
    assert!(shipping.contains("ship to every country"), "{shipping:?}");
}
