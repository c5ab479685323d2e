//! The Piper voice config (`<voice>.onnx.json`): parsing, validation, and
//! turning phonemes into the model's ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::error::Error;

/// Configs are a few kilobytes; anything this large is not one.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
const MAX_SYMBOLS: usize = 100_000;
const MAX_IDS_PER_PHONEME: usize = 16;

const BOS: char = '^';
const EOS: char = '$';
const PAD: char = '_';

#[derive(Deserialize)]
struct Raw {
    audio: RawAudio,
    espeak: Option<RawEspeak>,
    inference: Option<RawInference>,
    phoneme_type: Option<String>,
    #[serde(default)]
    phoneme_map: HashMap<String, Vec<String>>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    num_symbols: Option<u64>,
    num_speakers: Option<u64>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}

/// A validated Piper voice config.
#[derive(Clone, Debug)]
pub struct VoiceConfig {
    /// Output sample rate in Hz.
    pub sample_rate: u32,
    /// The espeak-ng voice that phonemizes for this model.
    pub espeak_voice: String,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub num_speakers: u32,
    phoneme_map: HashMap<char, Vec<char>>,
    ids: HashMap<char, Vec<i64>>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

impl VoiceConfig {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<VoiceConfig, Error> {
        let meta = std::fs::metadata(path).map_err(|_| Error::Missing {
            what: "the Piper voice config",
            path: path.into(),
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(bad(
                path,
                format!("{} bytes is too large for a voice config", meta.len()),
            ));
        }
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            what: "the Piper voice config",
            path: path.into(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Validates config JSON; `path` is only used in error messages.
    pub fn parse(json: &[u8], path: &Path) -> Result<VoiceConfig, Error> {
        let raw: Raw = serde_json::from_slice(json).map_err(|e| bad(path, e.to_string()))?;
        if !(8_000..=96_000).contains(&raw.audio.sample_rate) {
            return Err(bad(
                path,
                format!("sample rate {} Hz is out of range", raw.audio.sample_rate),
            ));
        }
        if let Some(kind) = raw.phoneme_type.as_deref().filter(|k| *k != "espeak") {
            return Err(bad(
                path,
                format!("phoneme_type {kind:?} is not supported (only espeak)"),
            ));
        }
        let inference = raw.inference.unwrap_or(RawInference {
            noise_scale: None,
            length_scale: None,
            noise_w: None,
        });
        let scale =
            |name: &str, value: Option<f32>, default: f32, range: std::ops::RangeInclusive<f32>| {
                let v = value.unwrap_or(default);
                if range.contains(&v) {
                    Ok(v)
                } else {
                    Err(bad(
                        path,
                        format!("inference.{name} = {v} is out of range {range:?}"),
                    ))
                }
            };
        let noise_scale = scale("noise_scale", inference.noise_scale, 0.667, 0.0..=2.0)?;
        let length_scale = scale("length_scale", inference.length_scale, 1.0, 0.1..=5.0)?;
        let noise_w = scale("noise_w", inference.noise_w, 0.8, 0.0..=2.0)?;

        let num_symbols = raw
            .num_symbols
            .unwrap_or(MAX_SYMBOLS as u64)
            .min(MAX_SYMBOLS as u64) as i64;
        if raw.phoneme_id_map.len() > MAX_SYMBOLS {
            return Err(bad(path, "phoneme_id_map is too large".into()));
        }
        let mut ids = HashMap::with_capacity(raw.phoneme_id_map.len());
        for (key, value) in raw.phoneme_id_map {
            let phoneme = single_char(&key).ok_or_else(|| {
                bad(
                    path,
                    format!("phoneme_id_map key {key:?} is not one character"),
                )
            })?;
            if value.is_empty() || value.len() > MAX_IDS_PER_PHONEME {
                return Err(bad(
                    path,
                    format!("phoneme_id_map[{key:?}] must hold 1 to {MAX_IDS_PER_PHONEME} ids"),
                ));
            }
            if let Some(id) = value.iter().find(|&&id| !(0..num_symbols).contains(&id)) {
                return Err(bad(
                    path,
                    format!("phoneme_id_map[{key:?}] has id {id}, outside 0..{num_symbols}"),
                ));
            }
            ids.insert(phoneme, value);
        }
        let special = |c: char| {
            ids.get(&c)
                .cloned()
                .ok_or_else(|| bad(path, format!("phoneme_id_map has no {c:?}")))
        };
        let (bos, eos, pad) = (special(BOS)?, special(EOS)?, special(PAD)?);

        if raw.phoneme_map.len() > MAX_SYMBOLS {
            return Err(bad(path, "phoneme_map is too large".into()));
        }
        let mut phoneme_map = HashMap::with_capacity(raw.phoneme_map.len());
        for (key, value) in raw.phoneme_map {
            let from = single_char(&key).ok_or_else(|| {
                bad(
                    path,
                    format!("phoneme_map key {key:?} is not one character"),
                )
            })?;
            let to: Option<Vec<char>> = value.iter().map(|s| single_char(s)).collect();
            let to = to
                .filter(|t| t.len() <= MAX_IDS_PER_PHONEME)
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("phoneme_map[{key:?}] must list single characters"),
                    )
                })?;
            phoneme_map.insert(from, to);
        }

        let espeak_voice = raw
            .espeak
            .map(|e| e.voice)
            .unwrap_or_else(|| "en-us".into());
        let num_speakers = raw.num_speakers.unwrap_or(1);
        if !(1..=100_000).contains(&num_speakers) {
            return Err(bad(
                path,
                format!("num_speakers {num_speakers} is out of range"),
            ));
        }
        Ok(VoiceConfig {
            sample_rate: raw.audio.sample_rate,
            espeak_voice,
            noise_scale,
            length_scale,
            noise_w,
            num_speakers: num_speakers as u32,
            phoneme_map,
            ids,
            bos,
            eos,
            pad,
        })
    }

    /// The model ids for one utterance's phonemes, Piper's way: decompose
    /// (NFD), apply the phoneme map, then `^ _ p1 _ p2 _ … pn _ $`, skipping
    /// phonemes the voice does not know.
    pub fn ids(&self, phonemes: &str) -> Vec<i64> {
        let mut out = Vec::with_capacity(2 * phonemes.len() + 4);
        out.extend_from_slice(&self.bos);
        out.extend_from_slice(&self.pad);
        let mut push = |c: char| {
            if let Some(ids) = self.ids.get(&c) {
                out.extend_from_slice(ids);
                out.extend_from_slice(&self.pad);
            }
        };
        for c in phonemes.nfd() {
            match self.phoneme_map.get(&c) {
                Some(mapped) => mapped.iter().copied().for_each(&mut push),
                None => push(c),
            }
        }
        out.extend_from_slice(&self.eos);
        out
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

fn bad(path: &Path, reason: String) -> Error {
    Error::Config {
        path: PathBuf::from(path),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<VoiceConfig, Error> {
        VoiceConfig::parse(json.as_bytes(), Path::new("test.onnx.json"))
    }

    const MINIMAL: &str = r#"{"audio":{"sample_rate":22050},"phoneme_id_map":{"_":[0],"^":[1],"$":[2]," ":[3],"a":[4],"c":[5],"̧":[6]},"num_symbols":10}"#;

    #[test]
    fn ids_follow_pipers_layout() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.ids("a a"), vec![1, 0, 4, 0, 3, 0, 4, 0, 2]);
        // Unknown phonemes are skipped.
        assert_eq!(c.ids("aX"), vec![1, 0, 4, 0, 2]);
        assert_eq!(c.ids(""), vec![1, 0, 2]);
        // ç decomposes to c + combining cedilla.
        assert_eq!(c.ids("ç"), vec![1, 0, 5, 0, 6, 0, 2]);
    }

    #[test]
    fn phoneme_map_applies() {
        let json = MINIMAL.replace(
            r#""num_symbols""#,
            r#""phoneme_map":{"x":["a","c"]},"num_symbols""#,
        );
        assert_eq!(config(&json).unwrap().ids("x"), vec![1, 0, 4, 0, 5, 0, 2]);
    }

    #[test]
    fn hostile_configs_are_errors() {
        let cases = [
            "",
            "{",
            "[]",
            "null",
            r#"{"audio":{}}"#,
            &MINIMAL[..MINIMAL.len() / 2],
            &MINIMAL.replace("22050", "0"),
            &MINIMAL.replace("22050", "-5"),
            &MINIMAL.replace("22050", "99999999999"),
            &MINIMAL.replace(r#""_":[0],"#, ""),
            &MINIMAL.replace(r#""a":[4]"#, r#""ab":[4]"#),
            &MINIMAL.replace(r#""a":[4]"#, r#""a":[]"#),
            &MINIMAL.replace(r#""a":[4]"#, r#""a":[400]"#),
            &MINIMAL.replace(r#""a":[4]"#, r#""a":[-1]"#),
            &MINIMAL.replace(r#""a":[4]"#, r#""a":["x"]"#),
            &MINIMAL.replace(
                r#""num_symbols""#,
                r#""inference":{"noise_scale":1e30},"num_symbols""#,
            ),
            &MINIMAL.replace(
                r#""num_symbols""#,
                r#""inference":{"length_scale":0},"num_symbols""#,
            ),
            &MINIMAL.replace(r#""num_symbols""#, r#""phoneme_type":"text","num_symbols""#),
            &MINIMAL.replace(r#""num_symbols""#, r#""num_speakers":0,"num_symbols""#),
            &MINIMAL.replace(
                r#""num_symbols""#,
                r#""phoneme_map":{"x":["ab"]},"num_symbols""#,
            ),
        ];
        for case in cases {
            let err = config(case)
                .err()
                .unwrap_or_else(|| panic!("accepted {case:?}"));
            let msg = err.to_string();
            assert!(
                msg.contains("test.onnx.json") && msg.contains("voxgate models fetch"),
                "{msg}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(config(&deep).is_err());
    }
}
