//! A call's recording: the caller's audio as it arrives and the assistant's as it
//! is played, on one clock, into a stereo WAV (caller left, assistant right) at
//! 16 kHz. Each side is spilled to a raw file of its own as the call goes, so a
//! long call costs disk, not memory; [`CallRecording::finish`] interleaves them.
//!
//! Both sides are placed by wall-clock time since the call started: a side that
//! falls behind its clock by more than [`SLACK`] (the caller muted, the assistant
//! silent between replies) is padded with silence up to it, so the two stay in
//! step; jitter within the slack is not padded, so it adds no clicks.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voxgate_audio::Resampler;
use voxgate_frames::{Direction, Frame};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

/// The recording's rate.
pub const RATE: u32 = 16_000;
/// How far a side may lag its clock before silence fills the gap.
pub const SLACK: Duration = Duration::from_millis(60);

/// The two sides of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Assistant,
}

struct Track {
    path: PathBuf,
    out: BufWriter<File>,
    /// Samples written so far.
    len: u64,
    /// From the side's own rate, when it is not [`RATE`].
    resampler: Option<Resampler>,
    scratch: Vec<i16>,
    /// The little-endian bytes of one write, kept between writes (no allocation a frame).
    bytes: Vec<u8>,
}

impl Track {
    fn create(path: PathBuf) -> std::io::Result<Track> {
        let out = BufWriter::with_capacity(32 * 1024, File::create(&path)?);
        Ok(Track { path, out, len: 0, resampler: None, scratch: Vec::new(), bytes: Vec::new() })
    }

    fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        self.bytes.clear();
        for s in samples {
            self.bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.out.write_all(&self.bytes)?;
        self.len += samples.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, pos: u64) -> std::io::Result<()> {
        const ZEROS: [i16; 1024] = [0; 1024];
        while self.len < pos {
            let n = (pos - self.len).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }
}

struct Inner {
    start: Instant,
    caller: Track,
    assistant: Track,
    /// The first write error; the recording is abandoned after it.
    failed: Option<String>,
}

/// A recording in progress, shared by the input and the output of one call.
#[derive(Clone)]
pub struct CallRecording {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for CallRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallRecording")
    }
}

impl CallRecording {
    /// Starts a recording whose side files go in `dir` (named after `name`).
    pub fn start(dir: &Path, name: &str) -> std::io::Result<CallRecording> {
        std::fs::create_dir_all(dir)?;
        let caller = Track::create(dir.join(format!(".{name}.caller.raw")))?;
        let assistant = Track::create(dir.join(format!(".{name}.assistant.raw")))?;
        Ok(CallRecording { inner: Arc::new(Mutex::new(Inner { start: Instant::now(), caller, assistant, failed: None })) })
    }

    /// Adds `samples` at `rate` to one side, as heard now.
    pub fn add(&self, side: Side, samples: &[i16], rate: u32) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.failed.is_some() || samples.is_empty() {
            return;
        }
        let elapsed = g.start.elapsed();
        let track = match side {
            Side::Caller => &mut g.caller,
            Side::Assistant => &mut g.assistant,
        };
        let res = (|| {
            // Place the audio where it started, not where it ends.
            let dur = Duration::from_nanos(samples.len() as u64 * 1_000_000_000 / u64::from(rate.max(1)));
            let at = elapsed.saturating_sub(dur);
            let pos = at.as_nanos() as u64 * u64::from(RATE) / 1_000_000_000;
            let slack = SLACK.as_millis() as u64 * u64::from(RATE) / 1000;
            if track.len + slack < pos {
                track.pad_to(pos)?;
            }
            if rate == RATE {
                return track.write(samples);
            }
            if track.resampler.as_ref().is_none_or(|r| r.from_hz() != rate) {
                track.resampler = Some(Resampler::with_rates(rate, RATE).map_err(|e| std::io::Error::other(e.to_string()))?);
            }
            let mut scratch = std::mem::take(&mut track.scratch);
            scratch.clear();
            if let Some(r) = &mut track.resampler {
                r.process(samples, &mut scratch);
            }
            let res = track.write(&scratch);
            track.scratch = scratch;
            res
        })();
        if let Err(e) = res {
            tracing::warn!(error = %e, "the call's recording failed; it is abandoned");
            g.failed = Some(e.to_string());
        }
    }

    /// Ends the recording: writes the stereo WAV at `path` and removes the side
    /// files. Blocking file work: call it from a blocking thread.
    pub fn finish(self, path: &Path) -> std::io::Result<u64> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let res = finish(&mut g, path);
        let _ = std::fs::remove_file(&g.caller.path);
        let _ = std::fs::remove_file(&g.assistant.path);
        res
    }

    /// Removes the side files without writing a recording.
    pub fn discard(self) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::remove_file(&g.caller.path);
        let _ = std::fs::remove_file(&g.assistant.path);
    }
}

fn finish(g: &mut Inner, path: &Path) -> std::io::Result<u64> {
    if let Some(e) = &g.failed {
        return Err(std::io::Error::other(e.clone()));
    }
    let len = g.caller.len.max(g.assistant.len);
    g.caller.pad_to(len)?;
    g.assistant.pad_to(len)?;
    g.caller.out.flush()?;
    g.assistant.out.flush()?;
    let spec = hound::WavSpec { channels: 2, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let tmp = path.with_extension("wav.part");
    let mut w = hound::WavWriter::create(&tmp, spec).map_err(std::io::Error::other)?;
    let mut left = BufReader::new(File::open(&g.caller.path)?);
    let mut right = BufReader::new(File::open(&g.assistant.path)?);
    let (mut l, mut r) = ([0u8; 2], [0u8; 2]);
    for _ in 0..len {
        left.read_exact(&mut l)?;
        right.read_exact(&mut r)?;
        w.write_sample(i16::from_le_bytes(l)).map_err(std::io::Error::other)?;
        w.write_sample(i16::from_le_bytes(r)).map_err(std::io::Error::other)?;
    }
    w.finalize().map_err(std::io::Error::other)?;
    std::fs::rename(&tmp, path)?;
    Ok(len)
}

/// The first stage of a recorded call: copies the caller's audio (16 kHz, as the
/// transport decoded it) into the recording and passes every frame on.
pub struct RecordTap {
    recording: CallRecording,
}

impl RecordTap {
    pub fn new(recording: CallRecording) -> RecordTap {
        RecordTap { recording }
    }
}

impl Processor for RecordTap {
    fn name(&self) -> &'static str {
        "record"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        if let (Frame::InputAudio(a), Direction::Downstream) = (&frame, dir) {
            self.recording.add(Side::Caller, &a.samples, a.rate);
        }
        out.push(frame, dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_land_on_one_clock_in_a_stereo_wav() {
        let dir = tempfile::tempdir().unwrap();
        let rec = CallRecording::start(dir.path(), "c1").unwrap();
        // The caller speaks 100 ms at 16 kHz; 200 ms later the assistant answers
        // 100 ms at 24 kHz.
        rec.add(Side::Caller, &[1000; 1600], 16_000);
        std::thread::sleep(Duration::from_millis(300));
        rec.add(Side::Assistant, &[-2000; 2400], 24_000);
        let out = dir.path().join("c1.wav");
        let frames = rec.finish(&out).unwrap();
        let mut r = hound::WavReader::open(&out).unwrap();
        let spec = r.spec();
        assert_eq!((spec.channels, spec.sample_rate), (2, RATE));
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s.len() as u64, frames * 2);
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
        // The caller at the start; the assistant only after ~200 ms of silence.
        assert!(left[..1500].iter().all(|&v| v == 1000));
        let first_voice = right.iter().position(|&v| v.abs() > 500).unwrap();
        assert!((3000..=4400).contains(&first_voice), "assistant starts at sample {first_voice}");
        assert!(right[first_voice..].iter().filter(|&&v| v.abs() > 500).count() >= 1400, "100 ms of the answer");
        // The side files are gone.
        let left_over: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left_over, vec![std::ffi::OsString::from("c1.wav")]);
    }

    #[test]
    fn a_discarded_recording_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rec = CallRecording::start(dir.path(), "c2").unwrap();
        rec.add(Side::Caller, &[1; 320], 16_000);
        rec.discard();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
