//! CTranslate2 Whisper variables to candle's (Hugging Face) Whisper layout.
//!
//! CTranslate2 fuses the self-attention q, k, v projections into one `linear_0` and the
//! cross-attention k, v into one `linear_1`; candle wants them apart, and its k
//! projections have no bias. Dropping a k bias is exact: it adds `q . b_k` to every
//! score of a query alike, which softmax cancels. Weights are widened to f32, the
//! fastest type for candle on a CPU.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper::Config;

use crate::ct2::Model;
use crate::Error;

/// The spec name CTranslate2 writes for Whisper models.
pub const SPEC: &str = "WhisperSpec";

struct Builder<'a> {
    model: &'a Model,
    path: &'a Path,
    out: HashMap<String, Tensor>,
}

impl Builder<'_> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Model { path: self.path.to_owned(), reason: reason.into() }
    }

    /// A float variable as f32 with the expected dims.
    fn get(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>, Error> {
        let var = self.model.get(name).ok_or_else(|| self.err(format!("variable `{name}` is missing")))?;
        if var.dims != dims {
            return Err(self.err(format!("variable `{name}` has dims {:?}, expected {dims:?}", var.dims)));
        }
        self.model.to_f32(var).ok_or_else(|| {
            self.err(format!(
                "variable `{name}` is {:?}; quantized (integer) weights are not supported, use a float16 or float32 conversion",
                var.dtype
            ))
        })
    }

    fn put(&mut self, name: String, data: Vec<f32>, dims: &[usize]) -> Result<(), Error> {
        let t = Tensor::from_vec(data, dims, &Device::Cpu)?;
        self.out.insert(name, t);
        Ok(())
    }

    fn copy(&mut self, from: &str, to: String, dims: &[usize]) -> Result<(), Error> {
        let data = self.get(from, dims)?;
        self.put(to, data, dims)
    }

    fn layer_norm(&mut self, from: &str, to: &str, d: usize) -> Result<(), Error> {
        self.copy(&format!("{from}/gamma"), format!("{to}.weight"), &[d])?;
        self.copy(&format!("{from}/beta"), format!("{to}.bias"), &[d])
    }

    fn linear(&mut self, from: &str, to: &str, rows: usize, cols: usize) -> Result<(), Error> {
        self.copy(&format!("{from}/weight"), format!("{to}.weight"), &[rows, cols])?;
        self.copy(&format!("{from}/bias"), format!("{to}.bias"), &[rows])
    }

    /// Splits a fused `[parts.len() * d, d]` projection row-wise into `parts`.
    fn split(&mut self, from: &str, to: &str, parts: &[&str], d: usize) -> Result<(), Error> {
        let n = parts.len();
        let w = self.get(&format!("{from}/weight"), &[n * d, d])?;
        let b = self.get(&format!("{from}/bias"), &[n * d])?;
        for (i, part) in parts.iter().enumerate() {
            let rows = w[i * d * d..(i + 1) * d * d].to_vec();
            self.put(format!("{to}.{part}.weight"), rows, &[d, d])?;
            if *part != "k_proj" {
                self.put(format!("{to}.{part}.bias"), b[i * d..(i + 1) * d].to_vec(), &[d])?;
            }
        }
        Ok(())
    }

    fn block(&mut self, from: &str, to: &str, d: usize, cross: bool) -> Result<(), Error> {
        self.layer_norm(&format!("{from}/self_attention/layer_norm"), &format!("{to}.self_attn_layer_norm"), d)?;
        self.split(
            &format!("{from}/self_attention/linear_0"),
            &format!("{to}.self_attn"),
            &["q_proj", "k_proj", "v_proj"],
            d,
        )?;
        self.linear(&format!("{from}/self_attention/linear_1"), &format!("{to}.self_attn.out_proj"), d, d)?;
        if cross {
            self.layer_norm(&format!("{from}/attention/layer_norm"), &format!("{to}.encoder_attn_layer_norm"), d)?;
            self.linear(&format!("{from}/attention/linear_0"), &format!("{to}.encoder_attn.q_proj"), d, d)?;
            self.split(
                &format!("{from}/attention/linear_1"),
                &format!("{to}.encoder_attn"),
                &["k_proj", "v_proj"],
                d,
            )?;
            self.linear(&format!("{from}/attention/linear_2"), &format!("{to}.encoder_attn.out_proj"), d, d)?;
        }
        self.layer_norm(&format!("{from}/ffn/layer_norm"), &format!("{to}.final_layer_norm"), d)?;
        self.linear(&format!("{from}/ffn/linear_0"), &format!("{to}.fc1"), 4 * d, d)?;
        self.linear(&format!("{from}/ffn/linear_1"), &format!("{to}.fc2"), d, 4 * d)
    }

    fn dims(&self, name: &str, rank: usize) -> Result<Vec<usize>, Error> {
        let var = self.model.get(name).ok_or_else(|| self.err(format!("variable `{name}` is missing")))?;
        if var.dims.len() != rank || var.dims.contains(&0) {
            return Err(self.err(format!("variable `{name}` has dims {:?}, expected rank {rank}", var.dims)));
        }
        Ok(var.dims.clone())
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..).take_while(|i| self.model.get(&format!("{prefix}/layer_{i}/ffn/linear_0/weight")).is_some()).count()
    }

    fn heads(&self, name: &str, d: usize) -> Result<usize, Error> {
        match self.model.scalar_int(name) {
            Some(h) if h > 0 && d.is_multiple_of(h as usize) => Ok(h as usize),
            other => Err(self.err(format!("`{name}` is {other:?}, expected a positive divisor of {d}"))),
        }
    }
}

/// The model's dimensions, read from the shapes in the file, and its tensors renamed
/// for candle. `path` is only used in error messages.
pub fn to_candle(model: &Model, path: &Path) -> Result<(Config, HashMap<String, Tensor>), Error> {
    let mut b = Builder { model, path, out: HashMap::new() };
    if model.spec != SPEC {
        return Err(b.err(format!("the spec is `{}`, expected `{SPEC}`", model.spec)));
    }
    let conv1 = b.dims("encoder/conv1/weight", 3)?;
    let (d, mels) = (conv1[0], conv1[1]);
    let embed = b.dims("decoder/embeddings/weight", 2)?;
    let vocab = embed[0];
    let text_ctx = b.dims("decoder/position_encodings/encodings", 2)?[0];
    let audio_ctx = b.dims("encoder/position_encodings/encodings", 2)?[0];
    let config = Config {
        num_mel_bins: mels,
        max_source_positions: audio_ctx,
        d_model: d,
        encoder_attention_heads: b.heads("encoder/num_heads", d)?,
        encoder_layers: b.count_layers("encoder"),
        vocab_size: vocab,
        max_target_positions: text_ctx,
        decoder_attention_heads: b.heads("decoder/num_heads", d)?,
        decoder_layers: b.count_layers("decoder"),
        suppress_tokens: Vec::new(),
    };
    if config.encoder_layers == 0 || config.decoder_layers == 0 {
        return Err(b.err("no encoder or decoder layers found"));
    }
    if b.model.scalar_int("decoder/scale_embeddings").is_some_and(|v| v != 0) {
        return Err(b.err("`decoder/scale_embeddings` is set, which Whisper never does"));
    }

    b.copy("encoder/conv1/weight", "model.encoder.conv1.weight".into(), &[d, mels, 3])?;
    b.copy("encoder/conv1/bias", "model.encoder.conv1.bias".into(), &[d])?;
    b.copy("encoder/conv2/weight", "model.encoder.conv2.weight".into(), &[d, d, 3])?;
    b.copy("encoder/conv2/bias", "model.encoder.conv2.bias".into(), &[d])?;
    for i in 0..config.encoder_layers {
        b.block(&format!("encoder/layer_{i}"), &format!("model.encoder.layers.{i}"), d, false)?;
    }
    b.layer_norm("encoder/layer_norm", "model.encoder.layer_norm", d)?;

    b.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight".into(), &[vocab, d])?;
    b.copy(
        "decoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight".into(),
        &[text_ctx, d],
    )?;
    for i in 0..config.decoder_layers {
        b.block(&format!("decoder/layer_{i}"), &format!("model.decoder.layers.{i}"), d, true)?;
    }
    b.layer_norm("decoder/layer_norm", "model.decoder.layer_norm", d)?;
    Ok((config, b.out))
}
