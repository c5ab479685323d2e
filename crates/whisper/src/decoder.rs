//! Whisper's text decoder, one token per step with a key/value cache.
//!
//! candle's `TextDecoder` has no self-attention cache: every step re-runs the whole
//! token sequence, and its vocabulary projection multiplies by the transposed
//! embedding, which the matrix library repacks on every call. Here each step costs
//! the same whatever the position, the weights are used in their stored
//! `[out, in]` layout as matrix-vector products, the vocabulary projection reads f16
//! weights, and GELU is the exact (erf) form Whisper was trained with.

use std::collections::HashMap;

use candle_core::{D, DType, Result, Tensor};
use candle_nn::ops::{layer_norm, softmax_last_dim};

const LN_EPS: f32 = 1e-5;

/// A linear layer with weight `[out, in]`.
#[derive(Clone)]
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    /// `x` is `[n, in]`; returns `[n, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if x.dim(0)? == 1 {
            // A matrix-vector product on the stored layout: no repacking of `w`.
            self.w.matmul(&x.t()?)?.t()?
        } else {
            x.matmul(&self.w.t()?)?
        };
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => y.contiguous(),
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
    cross_k: Linear,
    cross_v: Linear,
    cross_out: Linear,
    mlp_ln: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// The decoder's weights; shared, cheap to clone.
#[derive(Clone)]
pub(crate) struct Decoder {
    embed: Tensor,
    /// The embedding again in f16 (the file's own precision) for the vocabulary
    /// projection: the largest matrix by far, read once per token, and half the bytes
    /// make that product about twice as fast.
    embed_f16: Tensor,
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
        let lin = |p: String| -> Result<Linear> {
            Ok(Linear { w: get(format!("{p}.weight"))?, b: t.get(&format!("{p}.bias")).cloned() })
        };
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
                    cross_k: lin(format!("{p}.encoder_attn.k_proj"))?,
                    cross_v: lin(format!("{p}.encoder_attn.v_proj"))?,
                    cross_out: lin(format!("{p}.encoder_attn.out_proj"))?,
                    mlp_ln: norm(format!("{p}.final_layer_norm"))?,
                    fc1: lin(format!("{p}.fc1"))?,
                    fc2: lin(format!("{p}.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = get("model.decoder.embed_tokens.weight".into())?;
        Ok(Self {
            embed_f16: embed.to_dtype(DType::F16)?,
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
        let h = hidden.to_dtype(DType::F16)?;
        self.embed_f16.matmul(&h.t()?)?.squeeze(D::Minus1)?.to_dtype(DType::F32)?.to_vec1()
    }
}
