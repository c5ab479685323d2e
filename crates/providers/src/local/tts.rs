//! The Piper voice behind [`Tts`]: a clause's audio, sentence by sentence, from the
//! pool.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use voxgate_piper::{Chunking, Piper};
use voxgate_services::ServiceError;
use voxgate_services::tts::Tts;

use crate::pool::{InferencePool, WaitMeter};

const PROVIDER: &str = "local-piper";

/// One call's voice.
pub struct LocalTts {
    pub(super) piper: Arc<Piper>,
    pub(super) pool: InferencePool,
    pub(super) waits: WaitMeter,
    pub(super) baseline: bool,
}

impl Tts for LocalTts {
    fn sample_rate(&self) -> u32 {
        self.piper.sample_rate()
    }

    fn synthesize(&self, text: String) -> BoxStream<'static, Result<Vec<i16>, ServiceError>> {
        let (tx, rx) = mpsc::channel::<Result<Vec<i16>, ServiceError>>(8);
        let (piper, pool, waits, baseline) = (self.piper.clone(), self.pool.clone(), self.waits.clone(), self.baseline);
        tokio::spawn(async move {
            let job_tx = tx.clone();
            let result = pool
                .run("tts", &waits, move |turn| {
                    if baseline {
                        let audio = piper.synthesize(&text).map_err(|e| ServiceError::Invalid { provider: PROVIDER, message: e.to_string() });
                        let _ = job_tx.blocking_send(audio);
                        return;
                    }
                    for piece in piper.stream(&text, Chunking::Sentence) {
                        let item = piece.map_err(|e| ServiceError::Invalid { provider: PROVIDER, message: e.to_string() });
                        let failed = item.is_err();
                        if job_tx.blocking_send(item).is_err() || failed || !turn.yield_if_contended() {
                            return;
                        }
                    }
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(super::pool_error(PROVIDER, e))).await;
            }
        });
        super::receiver_stream(rx)
    }

    fn take_queue_wait(&self) -> Option<Duration> {
        Some(self.waits.take())
    }
}
