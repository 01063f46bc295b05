//! Progress of long runs on stderr, through indicatif.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanDuration, ProgressBar, ProgressStyle};
use peft_wgpu::cli;
use peft_wgpu::train::StepReport;

/// Progress on stderr: a bar with loss, throughput and ETA when stderr is a terminal;
/// otherwise only the trainable-parameter line. Throughput and ETA count from the end of the
/// first step, which also builds the pipelines.
pub(crate) struct TerminalProgress {
    bar: Option<ProgressBar>,
    tty: bool,
    /// When the first step ended, and the images since.
    since_first: Option<(Instant, usize)>,
}

impl TerminalProgress {
    pub(crate) fn new() -> Self {
        TerminalProgress { bar: None, tty: std::io::stderr().is_terminal(), since_first: None }
    }

    fn bar(&mut self, total: usize, template: &str) -> &ProgressBar {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        self.since_first = None;
        self.bar.insert(bar)
    }
}

impl cli::Progress for TerminalProgress {
    fn started(&mut self, summary: &str, steps: usize) {
        eprintln!("{summary}");
        if self.tty {
            self.bar(steps, "{bar:20} {pos}/{len} steps  {msg}");
        }
    }

    fn step(&mut self, r: &StepReport) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(r.step as u64 + 1);
        match &mut self.since_first {
            None => {
                self.since_first = Some((Instant::now(), 0));
                bar.reset_eta();
                bar.set_message(format!("loss {:.4}", r.loss));
            }
            Some((start, images)) => {
                *images += r.images;
                let seconds = start.elapsed().as_secs_f64().max(1e-9);
                let eta = seconds / (r.step as f64) * (r.steps - r.step - 1) as f64;
                bar.set_message(format!(
                    "loss {:.4}  {:.1} img/s  ETA {:#}",
                    r.loss,
                    *images as f64 / seconds,
                    HumanDuration(std::time::Duration::try_from_secs_f64(eta).unwrap_or(std::time::Duration::MAX))
                ));
            }
        }
        if r.step + 1 == r.steps {
            bar.finish_and_clear();
        }
    }

    fn evaluated(&mut self, images: usize, total: usize) {
        if !self.tty {
            return;
        }
        let bar = match &self.bar {
            Some(bar) if !bar.is_finished() && bar.length() == Some(total as u64) => bar.clone(),
            _ => self.bar(total, "{bar:20} {pos}/{len} images evaluated  ETA {eta}").clone(),
        };
        bar.set_position(images as u64);
        if images >= total {
            bar.finish_and_clear();
        }
    }
}
