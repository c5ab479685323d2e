//! Speech to text: `POST /audio/transcriptions` with the utterance as a WAV file.

use std::io::Cursor;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use voxgate_services::ServiceError;
use voxgate_services::stt::Stt;

use crate::call::{Call, Fail};
use crate::config::{Deadlines, Limits, RetryPolicy};
use crate::endpoint::Endpoint;
use crate::stats::Stage;

const PATH: &str = "audio/transcriptions";

/// OpenAI transcription (batch: one request per finished utterance).
#[derive(Clone)]
pub struct OpenAiStt {
    pub(crate) ep: Endpoint,
    pub(crate) model: String,
    pub(crate) language: Option<String>,
    pub(crate) deadlines: Deadlines,
    pub(crate) retry: RetryPolicy,
    pub(crate) limits: Limits,
}

#[derive(Deserialize)]
struct Transcription {
    text: String,
}

impl OpenAiStt {
    async fn run(self, audio: Vec<i16>, rate: u32) -> Result<String, ServiceError> {
        let invalid = |message: String| ServiceError::Invalid { provider: self.ep.name, message };
        if audio.is_empty() {
            return Ok(String::new());
        }
        if !(1_000..=384_000).contains(&rate) {
            return Err(invalid(format!("transcription: a sample rate of {rate} Hz is not audio; give the rate the PCM was captured at")));
        }
        let size = 44 + audio.len().saturating_mul(2);
        if size > self.limits.upload_bytes {
            return Err(invalid(format!(
                "transcription: {size} bytes of audio exceed the upload limit of {} bytes; split the utterance",
                self.limits.upload_bytes
            )));
        }
        let wav = Bytes::from(wav(&audio, rate).map_err(|e| invalid(format!("transcription: could not write the WAV: {e}")))?);
        let mut call = Call::new(self.ep.clone(), Stage::Stt, reqwest::Method::POST, PATH, self.deadlines, self.retry, self.limits.error_bytes);
        let result = self.attempts(&mut call, wav).await;
        call.finish(&result);
        result
    }

    async fn attempts(&self, call: &mut Call, wav: Bytes) -> Result<String, ServiceError> {
        loop {
            let mut opened = call.open(|call| call.request().multipart(self.form(wav.clone()))).await?;
            if opened.content_type.starts_with("text/html") {
                // A captive portal, a login page or a web server on the base URL.
                return Err(call.error(Fail::Malformed("the server answered an HTML page, not a transcription: check the base URL".into())));
            }
            let fail = match opened.read_all(self.limits.json_bytes, "transcription reply").await {
                Ok(body) => match serde_json::from_slice::<Transcription>(&body) {
                    Ok(t) => return Ok(t.text.trim().to_string()),
                    Err(e) => return Err(call.error(Fail::Malformed(format!("expected {{\"text\": ...}}: {e}")))),
                },
                Err(fail) => fail,
            };
            call.recover(fail).await?;
        }
    }

    fn form(&self, wav: Bytes) -> reqwest::multipart::Form {
        let len = wav.len() as u64;
        let file = reqwest::multipart::Part::stream_with_length(wav, len).file_name("audio.wav");
        // "audio/wav" is a valid MIME type; this cannot fail.
        let file = file.mime_str("audio/wav").unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.model.clone())
            .text("response_format", "json");
        match &self.language {
            Some(language) => form.text("language", language.clone()),
            None => form,
        }
    }
}

/// Mono 16-bit PCM as a WAV file.
fn wav(audio: &[i16], rate: u32) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut out = Cursor::new(Vec::with_capacity(44 + audio.len() * 2));
    let mut writer = hound::WavWriter::new(&mut out, spec)?;
    let mut samples = writer.get_i16_writer(audio.len() as u32);
    for &s in audio {
        samples.write_sample(s);
    }
    samples.flush()?;
    writer.finalize()?;
    Ok(out.into_inner())
}

impl Stt for OpenAiStt {
    fn transcribe(&self, audio: Vec<i16>, rate: u32) -> BoxFuture<'static, Result<String, ServiceError>> {
        Box::pin(self.clone().run(audio, rate))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wav_round_trips() {
        let audio: Vec<i16> = (0..1000).map(|i| ((i * 37) % 65536 - 32768) as i16).collect();
        let bytes = super::wav(&audio, 16_000).unwrap();
        let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, 16_000);
        let back: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, audio);
    }
}
