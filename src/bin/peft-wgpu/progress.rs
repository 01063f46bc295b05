//! Progress of long runs on stderr, through indicatif.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peft_wgpu::cli;
use peft_wgpu::train::StepReport;

/// Time between two plain progress lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Progress on stderr: a bar with loss, throughput and ETA when stderr is a terminal that can
/// draw one; otherwise (a pipe, a log file, `TERM=dumb`) the trainable-parameter line, then a
/// plain line with the same figures every [`LOG_EVERY`] (none in a shorter run), for logs of
/// long runs. Throughput and ETA count from
/// the end of the first step, which also builds the pipelines.
pub(crate) struct TerminalProgress {
    bar: Option<ProgressBar>,
    tty: bool,
    /// When the first step ended, and the images since.
    since_first: Option<(Instant, usize)>,
    /// When the last plain line was written (or the run started), off a terminal.
    last_line: Instant,
}

impl TerminalProgress {
    pub(crate) fn new() -> Self {
        TerminalProgress {
            bar: None,
            // A terminal indicatif cannot draw on (`TERM=dumb`) gets the plain lines.
            tty: std::io::stderr().is_terminal() && !ProgressDrawTarget::stderr().is_hidden(),
            since_first: None,
            last_line: Instant::now(),
        }
    }

    fn bar(&mut self, total: usize, template: &str) -> &ProgressBar {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        self.since_first = None;
        self.bar.insert(bar)
    }

    /// Whether a plain line is due (off a terminal only), restarting the interval if so.
    fn line_due(&mut self) -> bool {
        let due = !self.tty && self.last_line.elapsed() >= LOG_EVERY;
        if due {
            self.last_line = Instant::now();
        }
        due
    }
}

impl cli::Progress for TerminalProgress {
    fn started(&mut self, summary: &str, steps: usize) {
        crate::note!("{summary}");
        self.since_first = None;
        self.last_line = Instant::now();
        if self.tty {
            self.bar(steps, "{bar:20} {pos}/{len} steps  {msg}");
        }
    }

    fn step(&mut self, r: &StepReport) {
        let message = match &mut self.since_first {
            None => {
                self.since_first = Some((Instant::now(), 0));
                if let Some(bar) = &self.bar {
                    bar.reset_eta();
                }
                format!("loss {:.4}", r.loss)
            }
            Some((start, images)) => {
                *images += r.images;
                let seconds = start.elapsed().as_secs_f64().max(1e-9);
                let eta = seconds / (r.step as f64) * (r.steps - r.step - 1) as f64;
                format!(
                    "loss {:.4}  {:.1} img/s  ETA {:#}",
                    r.loss,
                    *images as f64 / seconds,
                    HumanDuration(Duration::try_from_secs_f64(eta).unwrap_or(Duration::MAX))
                )
            }
        };
        if let Some(bar) = &self.bar {
            bar.set_position(r.step as u64 + 1);
            bar.set_message(message);
            if r.step + 1 == r.steps {
                bar.finish_and_clear();
            }
        } else if r.step + 1 < r.steps && self.line_due() {
            crate::note!("step {}/{}  {message}", r.step + 1, r.steps);
        }
    }

    /// The run's result line on stdout, before any `--eval-data` evaluation, so a failure
    /// there still leaves it.
    fn saved(&mut self, steps: usize, final_loss: f32, out: &Path) -> peft_wgpu::Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let plural = if steps == 1 { "" } else { "s" };
        let line =
            format!("trained {steps} step{plural}, final loss {final_loss:.6}; adapter written to {}", out.display());
        writeln!(std::io::stdout().lock(), "{line}").map_err(crate::stdout_error)
    }

    fn evaluated(&mut self, images: usize, total: usize) {
        if !self.tty {
            if images < total && self.line_due() {
                crate::note!("evaluated {images}/{total} images");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_a_line_is_due_once_per_interval() {
        let mut p = TerminalProgress { tty: false, ..TerminalProgress::new() };
        assert!(!p.line_due(), "no line right after the start");
        let Some(earlier) = Instant::now().checked_sub(LOG_EVERY + Duration::from_millis(1)) else { return };
        p.last_line = earlier;
        assert!(p.line_due(), "a line once the interval has passed");
        assert!(!p.line_due(), "the interval starts again after a line");
        let mut on_tty = TerminalProgress { tty: true, ..TerminalProgress::new() };
        on_tty.last_line = earlier;
        assert!(!on_tty.line_due(), "a terminal gets the bar, not lines");
    }
}
