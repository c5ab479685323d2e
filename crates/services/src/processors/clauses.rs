//! The clause stage: model tokens in, clauses for speech out, so synthesis starts
//! on the first clause. `Say` (a first message, a prompt) becomes a reply of its own.

use voxgate_frames::{Direction, Frame};
use voxgate_pipeline::{Outlet, PipelineError, Processor};

use crate::clauses::ClauseAggregator;

#[derive(Default)]
pub struct ClauseStage {
    agg: ClauseAggregator,
}

impl Processor for ClauseStage {
    fn name(&self) -> &'static str {
        "clauses"
    }

    async fn process(&mut self, frame: Frame, dir: Direction, out: &Outlet) -> Result<(), PipelineError> {
        match (frame, dir) {
            (Frame::LlmText(t), Direction::Downstream) => {
                for clause in self.agg.push(&t) {
                    out.down(Frame::TtsText(clause)).await?;
                }
                Ok(())
            }
            (Frame::LlmResponseEnd, Direction::Downstream) => {
                if let Some(rest) = self.agg.flush() {
                    out.down(Frame::TtsText(rest)).await?;
                }
                out.down(Frame::LlmResponseEnd).await
            }
            (Frame::Say(text), Direction::Downstream) => {
                out.down(Frame::LlmResponseStart).await?;
                let mut agg = ClauseAggregator::default();
                for clause in agg.push(&text).into_iter().chain(agg.flush()) {
                    out.down(Frame::TtsText(clause)).await?;
                }
                out.down(Frame::LlmResponseEnd).await
            }
            (frame, dir) => out.push(frame, dir).await,
        }
    }

    fn interrupted(&mut self) {
        self.agg.reset();
    }
}
