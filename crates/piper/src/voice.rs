//! Piper inference through ONNX Runtime, loaded at run time.
//!
//! ONNX Runtime allows one environment per process; it lives in a process-wide
//! slot, created on first use from one library file. `Session::run` needs
//! `&mut`, so a voice keeps a small pool of sessions: a call borrows one and
//! waits while all are busy.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::config::VoiceConfig;
use crate::error::{Error, describe};

/// Piper models are tens of megabytes; refuse to read anything absurd.
const MAX_MODEL_BYTES: u64 = 2 * 1024 * 1024 * 1024;

static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process-wide ONNX Runtime environment, loading `library` the first time.
fn runtime(library: &Path) -> Result<Environment, Error> {
    let library = std::fs::canonicalize(library)
        .ok()
        .filter(|p| p.is_file())
        .ok_or_else(|| Error::Missing {
            what: "the ONNX Runtime library",
            path: library.to_path_buf(),
        })?;
    let mut slot = lock(&RUNTIME);
    if let Some((current, env)) = slot.as_ref() {
        if *current != library {
            return Err(Error::OnnxRuntimeAlreadyLoaded {
                current: current.clone(),
                requested: library,
            });
        }
        return Ok(env.clone());
    }
    let fail = |reason: String| Error::OnnxRuntime {
        path: library.clone(),
        reason,
    };
    let built = catch_unwind(|| -> Result<Environment, String> {
        let builder = ort::init_from(&library).map_err(|e| match e {
            ort::LoadDynamicError::Dlopen { error, .. } => describe(&error),
            other => other.to_string(),
        })?;
        builder
            .with_name("voxgate-piper")
            .build()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| fail("ONNX Runtime failed while starting".into()))?;
    let env = built.map_err(fail)?;
    *slot = Some((library, env.clone()));
    Ok(env)
}

/// One loaded Piper model: a pool of ONNX Runtime sessions and the inference settings.
pub(crate) struct Model {
    idle: Mutex<Vec<Session>>,
    freed: Condvar,
    has_sid: bool,
    scales: [f32; 3],
}

impl Model {
    pub(crate) fn load(
        model: &Path,
        library: &Path,
        config: &VoiceConfig,
        sessions: usize,
        intra_threads: usize,
    ) -> Result<Model, Error> {
        let meta = std::fs::metadata(model).map_err(|_| Error::Missing {
            what: "the Piper voice model",
            path: model.into(),
        })?;
        let bad = |reason: String| Error::Model {
            path: model.to_path_buf(),
            reason,
        };
        if !meta.is_file() || meta.len() > MAX_MODEL_BYTES {
            return Err(bad(format!("not a model file ({} bytes)", meta.len())));
        }
        let env = runtime(library)?;
        let bytes = std::fs::read(model).map_err(|source| Error::Read {
            what: "the Piper voice model",
            path: model.into(),
            source,
        })?;
        let mut pool = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let session = catch_unwind(AssertUnwindSafe(|| {
                new_session(&env, &bytes, intra_threads)
            }))
            .map_err(|_| bad("ONNX Runtime failed while loading it".into()))?
            .map_err(&bad)?;
            pool.push(session);
        }
        let first = &pool[0];
        let names: Vec<&str> = first.inputs().iter().map(|i| i.name()).collect();
        for required in ["input", "input_lengths", "scales"] {
            if !names.contains(&required) {
                return Err(bad(format!(
                    "it has no `{required}` input (inputs: {names:?}); is it a Piper voice?"
                )));
            }
        }
        if let Some(other) = names
            .iter()
            .find(|n| !["input", "input_lengths", "scales", "sid"].contains(n))
        {
            return Err(bad(format!(
                "unexpected input `{other}`; is it a Piper voice?"
            )));
        }
        if first.outputs().is_empty() {
            return Err(bad("it has no outputs".into()));
        }
        let has_sid = names.contains(&"sid");
        Ok(Model {
            idle: Mutex::new(pool),
            freed: Condvar::new(),
            has_sid,
            scales: [config.noise_scale, config.length_scale, config.noise_w],
        })
    }

    /// Runs the model on one utterance's ids; returns float audio.
    pub(crate) fn infer(&self, ids: Vec<i64>) -> Result<Vec<f32>, Error> {
        let mut session = self.checkout();
        let result = catch_unwind(AssertUnwindSafe(|| self.run(&mut session, ids)))
            .unwrap_or_else(|_| Err(Error::Inference("ONNX Runtime failed".into())));
        lock(&self.idle).push(session);
        self.freed.notify_one();
        result
    }

    fn checkout(&self) -> Session {
        let mut idle = lock(&self.idle);
        loop {
            if let Some(session) = idle.pop() {
                return session;
            }
            idle = self
                .freed
                .wait(idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn run(&self, session: &mut Session, ids: Vec<i64>) -> Result<Vec<f32>, Error> {
        let err = |e: ort::Error| Error::Inference(e.to_string());
        let n = ids.len();
        let mut inputs = ort::inputs! {
            "input" => Tensor::from_array(([1usize, n], ids)).map_err(err)?,
            "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?,
            "scales" => Tensor::from_array(([3usize], self.scales.to_vec())).map_err(err)?,
        };
        if self.has_sid {
            inputs.push((
                "sid".into(),
                Tensor::from_array(([1usize], vec![0i64]))
                    .map_err(err)?
                    .into(),
            ));
        }
        let outputs = session.run(inputs).map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(audio.to_vec())
    }
}

fn new_session(env: &Environment, model: &[u8], intra_threads: usize) -> Result<Session, String> {
    let text = |e: ort::Error<_>| e.to_string();
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(text)?
        .with_intra_threads(intra_threads)
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        // Other stages share the two cores: waiting threads sleep instead of spinning.
        .with_intra_op_spinning(false)
        .map_err(text)?
        .commit_from_memory(model)
        .map_err(|e| e.to_string())
}

/// Float audio in [-1, 1] to PCM16, clamped.
pub(crate) fn to_pcm16(audio: &[f32]) -> Vec<i16> {
    audio
        .iter()
        .map(|&s| {
            if s.is_finite() {
                (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_conversion_clamps() {
        assert_eq!(
            to_pcm16(&[0.0, 1.0, -1.0, 2.0, -2.0, 0.5, f32::NAN, f32::INFINITY]),
            vec![0, 32767, -32767, 32767, -32768, 16384, 0, 0]
        );
    }
}
