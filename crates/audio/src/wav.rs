//! WAV files at the edges of a call: `voxgate call` streams a WAV file in as the caller's
//! voice and writes the reply to one; call recordings are written as WAV; tests load real
//! speech from WAV. Reading accepts what people actually have (PCM 8/16/24/32-bit, float32,
//! any channel count) and mixes down to mono `i16`; writing is always mono PCM16.

use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Read, Seek, Write};
use std::path::Path;

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};

use crate::error::{AudioError, Result};
use crate::pcm::f32_to_i16;

/// Samples reserved up front at most, whatever the header claims, so a lying header
/// cannot make us allocate gigabytes before the data runs out.
const MAX_RESERVE: usize = 1 << 20;

/// Mono PCM16 audio read from a WAV file, at the file's own rate (which may be any rate;
/// resample with [`crate::resample::resample_all`] to bring it to a pipeline rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavAudio {
    /// Mono samples.
    pub samples: Vec<i16>,
    /// Sample rate in Hz.
    pub rate: u32,
}

/// Read a WAV from any reader, mixing all channels down to mono `i16`.
pub fn read_wav<R: Read>(reader: R) -> Result<WavAudio> {
    let mut reader = WavReader::new(reader)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 {
        return Err(AudioError::UnsupportedWav("0 channels".into()));
    }
    if spec.sample_rate == 0 {
        return Err(AudioError::UnsupportedWav("sample rate 0".into()));
    }
    let frames = reader.duration() as usize;
    let mut samples = Vec::with_capacity(frames.min(MAX_RESERVE));
    match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Int, bits @ 1..=32) => {
            // Scale any width to 16 bits: shift right for wider samples, left for 8-bit.
            let to_i16 = move |s: i32| -> i16 {
                if bits > 16 {
                    (s >> (bits - 16)) as i16
                } else {
                    (s << (16 - bits)) as i16
                }
            };
            mix(reader.samples::<i32>(), channels, &mut samples, to_i16)?;
        }
        (SampleFormat::Float, 32) => {
            mix(reader.samples::<f32>(), channels, &mut samples, f32_to_i16)?;
        }
        (format, bits) => {
            return Err(AudioError::UnsupportedWav(format!(
                "{bits}-bit {format:?} samples"
            )));
        }
    }
    Ok(WavAudio {
        samples,
        rate: spec.sample_rate,
    })
}

/// Average interleaved channels into mono; a trailing partial frame is an error (truncated file).
fn mix<S>(
    mut it: impl Iterator<Item = hound::Result<S>>,
    channels: usize,
    out: &mut Vec<i16>,
    to_i16: impl Fn(S) -> i16,
) -> Result<()> {
    if channels == 1 {
        for s in it {
            out.push(to_i16(s?));
        }
        return Ok(());
    }
    loop {
        let mut sum = 0i64;
        for c in 0..channels {
            match it.next() {
                Some(s) => sum += i64::from(to_i16(s?)),
                None if c == 0 => return Ok(()),
                None => return Err(hound::Error::UnfinishedSample.into()),
            }
        }
        out.push((sum / channels as i64) as i16);
    }
}

/// Read a WAV held in memory.
pub fn read_wav_bytes(bytes: &[u8]) -> Result<WavAudio> {
    read_wav(Cursor::new(bytes))
}

/// Read a WAV file.
pub fn read_wav_file(path: impl AsRef<Path>) -> Result<WavAudio> {
    read_wav(BufReader::new(
        File::open(path).map_err(hound::Error::IoError)?,
    ))
}

fn mono16(rate: u32) -> WavSpec {
    WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: SampleFormat::Int,
    }
}

/// Write mono PCM16 samples as a WAV to any seekable writer.
pub fn write_wav<W: Write + Seek>(writer: W, samples: &[i16], rate: u32) -> Result<()> {
    if rate == 0 {
        return Err(AudioError::UnsupportedWav("sample rate 0".into()));
    }
    // The RIFF header counts bytes in a u32.
    if samples.len() > (u32::MAX as usize - 64) / 2 {
        return Err(AudioError::UnsupportedWav(format!(
            "{} samples is too long for WAV",
            samples.len()
        )));
    }
    let mut w = WavWriter::new(writer, mono16(rate))?;
    // Chunks keep hound's staging buffer small; each chunk's length is exact, which
    // `SampleWriter16` requires (it panics on overrun).
    for chunk in samples.chunks(4096) {
        let mut w16 = w.get_i16_writer(chunk.len() as u32);
        for &s in chunk {
            w16.write_sample(s);
        }
        w16.flush()?;
    }
    w.finalize()?;
    Ok(())
}

/// Mono PCM16 samples as the bytes of a WAV file.
pub fn wav_bytes(samples: &[i16], rate: u32) -> Result<Vec<u8>> {
    let mut cursor = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    write_wav(&mut cursor, samples, rate)?;
    Ok(cursor.into_inner())
}

/// Write mono PCM16 samples to a WAV file.
pub fn write_wav_file(path: impl AsRef<Path>, samples: &[i16], rate: u32) -> Result<()> {
    let file = File::create(path).map_err(hound::Error::IoError)?;
    write_wav(BufWriter::new(file), samples, rate)
}
