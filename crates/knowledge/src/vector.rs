//! Vectors as database blobs, and brute-force nearest-neighbour search.
//!
//! Brute force: 10,000 chunks x 384 dimensions is about 4 million multiply-adds
//! per query. Past a few hundred thousand chunks per assistant the next step is
//! an in-memory matrix per assistant (no blob decoding per query), then int8
//! quantisation or an HNSW index (or pgvector where PostgreSQL is the store).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::embed::DIMENSIONS;

/// Why a stored blob is not a vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VectorError {
    #[error("a vector blob of {bytes} bytes, where {expected} (384 little-endian f32) were expected; re-embed the document")]
    WrongLength { bytes: usize, expected: usize },
    #[error("a vector blob with a non-finite value at index {index}; re-embed the document")]
    NotFinite { index: usize },
}

/// A vector as a blob: each f32 in little-endian order, no header (4 bytes a
/// dimension: 1,536 bytes for [`DIMENSIONS`]). The same bytes on SQLite and
/// PostgreSQL.
pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads a blob written by [`encode_vector`]: exactly [`DIMENSIONS`] finite f32.
pub fn decode_vector(bytes: &[u8]) -> Result<Vec<f32>, VectorError> {
    let expected = DIMENSIONS * 4;
    if bytes.len() != expected {
        return Err(VectorError::WrongLength { bytes: bytes.len(), expected });
    }
    let vector: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(index) = vector.iter().position(|v| !v.is_finite()) {
        return Err(VectorError::NotFinite { index });
    }
    Ok(vector)
}

/// The dot product; for the unit vectors [`crate::Embedder`] makes, the cosine
/// similarity. Eight running sums so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            sums[k] += x[k] * y[k];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// A score ordered by `total_cmp`, then by arrival (earlier wins ties).
struct Scored<Id> {
    score: f32,
    seq: usize,
    id: Id,
}

impl<Id> PartialEq for Scored<Id> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<Id> Eq for Scored<Id> {}
impl<Id> PartialOrd for Scored<Id> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<Id> Ord for Scored<Id> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The `k` candidates most similar to `query` (dot product of unit vectors =
/// cosine), best first, ties in arrival order. A heap of `k` entries: memory O(k)
/// whatever the number of candidates. Candidates whose length differs from the
/// query's, or whose score is not finite, are skipped.
pub fn top_k<'a, Id>(query: &[f32], candidates: impl IntoIterator<Item = (Id, &'a [f32])>, k: usize) -> Vec<(Id, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Scored<Id>>> = BinaryHeap::with_capacity(k + 1);
    for (seq, (id, vector)) in candidates.into_iter().enumerate() {
        if vector.len() != query.len() {
            continue;
        }
        let score = dot(query, vector);
        if !score.is_finite() {
            continue;
        }
        if heap.len() == k {
            let worst = &heap.peek().expect("k > 0").0;
            if score <= worst.score {
                continue;
            }
            heap.pop();
        }
        heap.push(Reverse(Scored { score, seq, id }));
    }
    let mut best: Vec<Scored<Id>> = heap.into_iter().map(|r| r.0).collect();
    best.sort_by(|a, b| b.cmp(a));
    best.into_iter().map(|s| (s.id, s.score)).collect()
}
