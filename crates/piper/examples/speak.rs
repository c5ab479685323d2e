//! Speaks a text into a WAV file with the voice from the models folder:
//! `cargo run --release -p voxgate-piper --example speak -- "Hello there." out.wav`

use voxgate_piper::{Piper, PiperOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(text), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: speak TEXT OUT.wav".into());
    };
    let piper = Piper::load(
        &voxgate_models::model_dir(voxgate_models::PIPER_VOICE).join("en_US-joe-medium.onnx"),
        &voxgate_models::model_dir(voxgate_models::ONNXRUNTIME).join("libonnxruntime.so"),
        &voxgate_models::model_dir(voxgate_models::ESPEAK_NG),
        PiperOptions::default(),
    )?;
    let pcm = piper.synthesize(&text)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: piper.sample_rate(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(out, spec)?;
    pcm.iter().try_for_each(|&s| wav.write_sample(s))?;
    wav.finalize()?;
    Ok(())
}
