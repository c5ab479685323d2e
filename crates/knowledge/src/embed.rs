//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers) on the CPU: candle
//! runs the model, the `tokenizers` crate reads its tokenizer.json. As
//! sentence-transformers does it: mean of the last hidden states over the real
//! (unpadded) tokens, then L2 normalisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Dimensions of an embedding.
pub const DIMENSIONS: usize = 384;
/// Tokens the model reads of each text (its sentence-transformers setting); the
/// rest of a longer text is ignored.
pub const MAX_TOKENS: usize = 256;
/// Texts run through the model together.
const BATCH: usize = 16;

/// What loading or running the embedder can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{}: missing; run `voxgate models fetch` (the all-MiniLM-L6-v2 files: config.json, tokenizer.json, model.safetensors)", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {message}; run `voxgate models fetch` to replace it", path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    #[error("the embedding model failed: {0}")]
    Model(#[from] candle_core::Error),
}

/// The all-MiniLM-L6-v2 sentence embedder.
///
/// `Send + Sync`; [`Embedder::embed`] takes `&self`, so one loaded model serves
/// every thread; `clone` is an `Arc` increment. Loading reads about 90 MB.
#[derive(Clone)]
pub struct Embedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("dimensions", &DIMENSIONS).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model from a folder holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` (as `voxgate models fetch` installs them, in
    /// `<models>/all-minilm-l6-v2/`).
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let file = |name: &str| {
            let path = dir.join(name);
            if path.is_file() { Ok(path) } else { Err(EmbedError::Missing { path }) }
        };
        let (config_path, tokenizer_path, weights_path) = (file("config.json")?, file("tokenizer.json")?, file("model.safetensors")?);
        let bad = |path: &Path, message: String| EmbedError::BadFile { path: path.to_path_buf(), message };

        let config = std::fs::read_to_string(&config_path).map_err(|e| bad(&config_path, e.to_string()))?;
        let config: Config = serde_json::from_str(&config).map_err(|e| bad(&config_path, e.to_string()))?;
        if config.hidden_size != DIMENSIONS {
            return Err(bad(&config_path, format!("hidden size {} where {DIMENSIONS} was expected", config.hidden_size)));
        }

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| bad(&tokenizer_path, e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| bad(&tokenizer_path, e.to_string()))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));

        let device = Device::Cpu;
        let weights = std::fs::read(&weights_path).map_err(|e| bad(&weights_path, e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| bad(&weights_path, e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad(&weights_path, e.to_string()))?;
        Ok(Embedder { inner: Arc::new(Inner { model, tokenizer, device }) })
    }

    /// One unit vector of [`DIMENSIONS`] per text, in order. Texts are batched by
    /// length (so padding stays small); each reads at most [`MAX_TOKENS`] tokens.
    /// An empty text still gets a vector (that of the bare `[CLS] [SEP]`).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            for (&i, vector) in batch.iter().zip(self.embed_batch(&inputs)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inner = &*self.inner;
        let encodings = inner.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let len = encodings.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let ids: Vec<u32> = encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let mask: Vec<u32> = encodings.iter().flat_map(|e| e.get_attention_mask().iter().copied()).collect();
        let shape = (texts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &inner.device)?;
        let mask = Tensor::from_vec(mask, shape, &inner.device)?;
        let hidden = inner.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?.clamp(1e-9, f32::MAX)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Embedder>();
}
