//! Whisper's text decoder, one token per step with a key/value cache.
//!
//! candle's `TextDecoder` has no self-attention cache: every step re-runs the whole
//! token sequence, and its vocabulary projection multiplies by the transposed
//! embedding, which the matrix library repacks on every call. Here each step costs
//! the same whatever the position, and GELU is the exact (erf) form Whisper was
//! trained with.
//!
//! A step is a chain of matrix-vector products, so its time is the time to read the
//! weights: 8.3 million f32 parameters in the layers and 20 million in the vocabulary
//! projection, per token. Those products read 8-bit copies of the weights
//! (ggml's Q8_0: blocks of 32 with one f16 scale, candle's AVX2 kernels), a quarter
//! of f32's bytes. On this 2-core machine that took a step from 4.6 to 1.8 ms and
//! the vocabulary projection from 8.5 ms (f16 through the f32 matrix library) to 3.6;
//! the transcripts of the test sentences are unchanged. Quantizing costs about 200 ms
//! once, at load. The encoder and the cross-attention projections of the audio,
//! which multiply whole matrices, stay f32.

use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use candle_nn::ops::{layer_norm, softmax_last_dim};

const LN_EPS: f32 = 1e-5;

/// A linear layer with weight `[out, in]`, used one vector at a time.
#[derive(Clone)]
struct Linear {
    w: QMatMul,
    b: Option<Tensor>,
}

impl Linear {
    fn new(w: &Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Self { w: quantize(w)?, b })
    }

    /// `x` is `[1, in]`; returns `[1, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// An 8-bit copy of `w` (`[out, in]`, `in` a multiple of 32) for matrix-vector products.
fn quantize(w: &Tensor) -> Result<QMatMul> {
    QMatMul::from_qtensor(QTensor::quantize(w, GgmlDType::Q8_0)?)
}

/// A linear layer applied to many rows at once (the audio frames): f32 weights.
#[derive(Clone)]
struct Dense {
    w: Tensor,
    b: Option<Tensor>,
}

impl Dense {
    /// `x` is `[n, in]`; returns `[n, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Clone)]
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.gamma, &self.beta, LN_EPS)
    }
}

#[derive(Clone)]
struct Layer {
    attn_ln: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    cross_ln: Norm,
    cross_q: Linear,
    cross_k: Dense,
    cross_v: Dense,
    cross_out: Linear,
    mlp_ln: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The decoder's weights; shared, cheap to clone.
#[derive(Clone)]
pub(crate) struct Decoder {
    embed: Tensor,
    /// The embedding again, 8-bit, for the vocabulary projection (tied weights): the
    /// largest matrix by far, read once per token.
    vocab: QMatMul,
    positions: Tensor,
    layers: Vec<Layer>,
    ln: Norm,
    heads: usize,
}

/// Per-utterance state: the encoder output projected for cross-attention, and the
/// self-attention keys and values of the tokens so far.
pub(crate) struct State {
    cross: Vec<(Tensor, Tensor)>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Decoder {
    /// Takes the decoder tensors from `t` (candle's names, as `convert` writes them).
    pub(crate) fn new(t: &HashMap<String, Tensor>, layers: usize, heads: usize) -> Result<Self> {
        let get = |name: String| {
            t.get(&name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing")))
        };
        let lin = |p: String| -> Result<Linear> { Linear::new(&get(format!("{p}.weight"))?, t.get(&format!("{p}.bias")).cloned()) };
        let dense =
            |p: String| -> Result<Dense> { Ok(Dense { w: get(format!("{p}.weight"))?, b: t.get(&format!("{p}.bias")).cloned() }) };
        let norm =
            |p: String| -> Result<Norm> { Ok(Norm { gamma: get(format!("{p}.weight"))?, beta: get(format!("{p}.bias"))? }) };
        let layers = (0..layers)
            .map(|i| {
                let p = format!("model.decoder.layers.{i}");
                Ok(Layer {
                    attn_ln: norm(format!("{p}.self_attn_layer_norm"))?,
                    q: lin(format!("{p}.self_attn.q_proj"))?,
                    k: lin(format!("{p}.self_attn.k_proj"))?,
                    v: lin(format!("{p}.self_attn.v_proj"))?,
                    out: lin(format!("{p}.self_attn.out_proj"))?,
                    cross_ln: norm(format!("{p}.encoder_attn_layer_norm"))?,
                    cross_q: lin(format!("{p}.encoder_attn.q_proj"))?,
                    cross_k: dense(format!("{p}.encoder_attn.k_proj"))?,
                    cross_v: dense(format!("{p}.encoder_attn.v_proj"))?,
                    cross_out: lin(format!("{p}.encoder_attn.out_proj"))?,
                    mlp_ln: norm(format!("{p}.final_layer_norm"))?,
                    fc1: lin(format!("{p}.fc1"))?,
                    fc2: lin(format!("{p}.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = get("model.decoder.embed_tokens.weight".into())?;
        Ok(Self {
            vocab: quantize(&embed)?,
            embed,
            positions: get("model.decoder.embed_positions.weight".into())?,
            layers,
            ln: norm("model.decoder.layer_norm".into())?,
            heads,
        })
    }

    /// Most tokens the position table allows.
    pub(crate) fn max_len(&self) -> Result<usize> {
        self.positions.dim(0)
    }

    /// `[n, d]` to `[heads, n, d / heads]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        x.reshape((n, self.heads, d / self.heads))?.transpose(0, 1)?.contiguous()
    }

    /// Starts an utterance: projects the encoder output `[1, frames, d]` for
    /// cross-attention in every layer.
    pub(crate) fn start(&self, audio: &Tensor) -> Result<State> {
        let audio = audio.squeeze(0)?;
        let cross = self
            .layers
            .iter()
            .map(|l| Ok((self.split_heads(&l.cross_k.forward(&audio)?)?, self.split_heads(&l.cross_v.forward(&audio)?)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(State { cross, cache: vec![None; self.layers.len()], len: 0 })
    }

    /// Attention of one query `[1, d]` over keys and values `[heads, n, d / heads]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (_, d) = q.dims2()?;
        let scale = 1.0 / ((d / self.heads) as f64).sqrt();
        let q = (q.reshape((self.heads, 1, d / self.heads))? * scale)?;
        let w = softmax_last_dim(&q.matmul(&k.transpose(1, 2)?)?)?;
        w.matmul(v)?.reshape((1, d))
    }

    /// Feeds one token; returns the final hidden state `[1, d]` at its position.
    pub(crate) fn step(&self, state: &mut State, token: u32) -> Result<Tensor> {
        let pos = state.len;
        let mut x = (self.embed.narrow(0, token as usize, 1)? + self.positions.narrow(0, pos, 1)?)?;
        for (i, l) in self.layers.iter().enumerate() {
            let h = l.attn_ln.forward(&x)?;
            let (k, v) = (self.split_heads(&l.k.forward(&h)?)?, self.split_heads(&l.v.forward(&h)?)?);
            let (k, v) = match state.cache[i].take() {
                Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 1)?, Tensor::cat(&[&cv, &v], 1)?),
                None => (k, v),
            };
            let a = self.attend(&l.q.forward(&h)?, &k, &v)?;
            state.cache[i] = Some((k, v));
            x = (x + l.out.forward(&a)?)?;

            let h = l.cross_ln.forward(&x)?;
            let (ck, cv) = &state.cross[i];
            let a = self.attend(&l.cross_q.forward(&h)?, ck, cv)?;
            x = (x + l.cross_out.forward(&a)?)?;

            let h = l.mlp_ln.forward(&x)?;
            x = (x + l.fc2.forward(&l.fc1.forward(&h)?.gelu_erf()?)?)?;
        }
        state.len += 1;
        self.ln.forward(&x)
    }

    /// Vocabulary logits of a hidden state `[1, d]`, through the tied embedding.
    pub(crate) fn logits(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        self.vocab.forward(hidden)?.squeeze(0)?.to_vec1()
    }
}
