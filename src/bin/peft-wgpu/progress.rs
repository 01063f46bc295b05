//! Progress of long runs on stderr, through indicatif.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peft_wgpu::cli;
use peft_wgpu::train::StepReport;

/// Time between two plain progress lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Progress on stderr: a bar with loss, throughput and ETA when stderr is a terminal that can
/// draw one (its elapsed time ticking while a long step runs); otherwise (a pipe, a log file,
/// `TERM=dumb`) the trainable-parameter line, then a plain line with the same figures every
/// [`LOG_EVERY`] (none in a shorter run), for logs of long runs, and where a single step or
/// batch takes longer than that, a line saying it is still at work. Throughput and ETA count
/// from the end of the first step (or batch), which also builds the pipelines.
pub(crate) struct TerminalProgress {
    bar: Option<ProgressBar>,
    tty: bool,
    /// When the first step (or batch) ended, and the images since.
    since_first: Option<(Instant, usize)>,
    /// Images evaluated so far in the evaluation under way.
    evaluated: usize,
    /// Off a terminal: what is under way and when the last line was written, shared with the
    /// thread that writes the still-at-work lines.
    log: Arc<Mutex<Log>>,
}

struct Log {
    /// When the last plain line was written (or the run started).
    last_line: Instant,
    /// What the run is doing now (`step 3/10`), and since when; `None` between runs.
    doing: Option<(String, Instant)>,
    /// Whether a still-at-work line was written for what the run is doing now: its end then
    /// gets a line with the figures, which the interval would otherwise hold back.
    noted: bool,
    watched: bool,
    /// Time between two lines ([`LOG_EVERY`]; shorter in tests).
    every: Duration,
    /// Still-at-work lines written so far.
    still: usize,
}

impl TerminalProgress {
    pub(crate) fn new() -> Self {
        TerminalProgress {
            bar: None,
            // A terminal indicatif cannot draw on (`TERM=dumb`) gets the plain lines.
            tty: std::io::stderr().is_terminal() && !ProgressDrawTarget::stderr().is_hidden(),
            since_first: None,
            evaluated: 0,
            log: Arc::new(Mutex::new(Log {
                last_line: Instant::now(),
                doing: None,
                noted: false,
                watched: false,
                every: LOG_EVERY,
                still: 0,
            })),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bar(&mut self, total: usize, template: &str) -> &ProgressBar {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        // Redrawn every second, so the elapsed time shows a long step at work.
        bar.enable_steady_tick(Duration::from_secs(1));
        self.since_first = None;
        self.bar.insert(bar)
    }

    /// Whether a plain line is due (off a terminal only), restarting the interval if so.
    fn line_due(&mut self) -> bool {
        let mut log = self.log();
        let due = !self.tty && log.last_line.elapsed() >= log.every;
        if due {
            log.last_line = Instant::now();
        }
        due
    }

    /// Off a terminal, says what the run is doing now (`None`: nothing), for a line when it
    /// takes longer than [`LOG_EVERY`] without one; starts the thread that watches for that.
    /// Returns whether what it did before got such a line.
    fn doing(&mut self, what: Option<String>) -> bool {
        if self.tty {
            return false;
        }
        let mut log = self.log();
        log.doing = what.map(|w| (w, Instant::now()));
        let noted = std::mem::replace(&mut log.noted, false);
        if !log.watched {
            log.watched = true;
            let weak = Arc::downgrade(&self.log);
            std::thread::spawn(move || watch(&weak));
        }
        noted
    }

    /// Off a terminal, whether a line with the figures is due: the interval has passed, or
    /// what just ended took so long it had still-at-work lines (`long`), which restart the
    /// interval; restarts it if so.
    fn figures_due(&mut self, long: bool) -> bool {
        if long && !self.tty {
            self.log().last_line = Instant::now();
            return true;
        }
        self.line_due()
    }

    /// Seconds since the end of the first step (or batch) and the images since, counting
    /// `images` more; `None` at the first, whose end starts the count.
    fn since_first(&mut self, images: usize) -> Option<(f64, usize)> {
        match &mut self.since_first {
            None => {
                self.since_first = Some((Instant::now(), 0));
                None
            }
            Some((start, since)) => {
                *since += images;
                Some((start.elapsed().as_secs_f64().max(1e-9), *since))
            }
        }
    }
}

/// `seconds` as indicatif writes a duration (`2 minutes`; `{:#}`: `2m`).
fn duration(seconds: f64) -> HumanDuration {
    HumanDuration(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// Writes a line when what the run is doing has gone on for [`LOG_EVERY`] with no line;
/// ends with the progress it watches.
fn watch(log: &Weak<Mutex<Log>>) {
    loop {
        let Some(log) = log.upgrade() else { return };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        // Only a step (or batch) that itself has run that long: shorter ones get their
        // periodic lines as they end.
        if let Some((what, since)) = &log.doing
            && log.last_line.elapsed() >= log.every
            && since.elapsed() >= log.every
        {
            let seconds = since.elapsed().as_secs();
            crate::note!("{what}: still at work ({seconds} s so far)");
            log.last_line = Instant::now();
            log.still += 1;
            log.noted = true;
        }
        let pause = (log.every / 30).min(Duration::from_secs(1));
        drop(log);
        std::thread::sleep(pause);
    }
}

impl cli::Progress for TerminalProgress {
    fn started(&mut self, summary: &str, steps: usize) {
        crate::note!("{summary}");
        self.since_first = None;
        self.log().last_line = Instant::now();
        self.doing(Some(format!("step 1/{steps} (the first also builds the GPU kernels)")));
        if self.tty {
            self.bar(steps, "{bar:20} {pos}/{len} steps  {msg}  [{elapsed}]");
        }
    }

    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| crate::note!("{line}")),
            None => crate::note!("{line}"),
        }
    }

    fn step(&mut self, r: &StepReport) {
        let (done, total) = (r.step + 1, r.steps);
        let message = match self.since_first(r.images) {
            None => format!("loss {:.4}", r.loss),
            Some((seconds, images)) => {
                let eta = seconds / (r.step as f64) * (total - done) as f64;
                format!("loss {:.4}  {:.1} img/s  ETA {:#}", r.loss, images as f64 / seconds, duration(eta))
            }
        };
        // After the last step, its update is checked on its batch (a forward pass) before the
        // adapter is saved.
        let next = match done < total {
            true => format!("step {}/{total}", done + 1),
            false => format!("step {total}/{total} done; checking its update and saving the adapter"),
        };
        let long = self.doing(Some(next));
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(message);
            if done == total {
                bar.finish_and_clear();
            }
        } else if (done < total || long) && self.figures_due(long) {
            crate::note!("step {done}/{total}  {message}");
        }
    }

    /// The run's result line on stdout, before any `--eval-data` evaluation, so a failure
    /// there still leaves it.
    fn saved(&mut self, steps: usize, final_loss: f32, out: &Path) -> peft_wgpu::Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.doing(None);
        let plural = if steps == 1 { "" } else { "s" };
        let line =
            format!("trained {steps} step{plural}, final loss {final_loss:.6}; adapter written to {}", out.display());
        writeln!(std::io::stdout().lock(), "{line}").map_err(crate::stdout_error)
    }

    fn evaluated(&mut self, images: usize, total: usize) {
        if images == 0 {
            // A new evaluation: its first batch also builds the kernels.
            self.since_first = None;
            self.evaluated = 0;
        }
        let batch = images.saturating_sub(self.evaluated);
        self.evaluated = images;
        let rate = match images {
            0 => None,
            _ => self.since_first(batch).map(|(seconds, since)| {
                let per_second = since as f64 / seconds;
                format!("{per_second:.1} img/s  ETA {:#}", duration((total - images) as f64 / per_second))
            }),
        };
        let long = self.doing((images < total).then(|| format!("evaluating from image {} of {total}", images + 1)));
        if !self.tty {
            if images > 0 && (images < total || long) && self.figures_due(long) {
                let rate = rate.map(|r| format!("  {r}")).unwrap_or_default();
                crate::note!("evaluated {images}/{total} images{rate}");
            }
            return;
        }
        let bar = match &self.bar {
            Some(bar) if !bar.is_finished() && bar.length() == Some(total as u64) => bar.clone(),
            _ => self.bar(total, "{bar:20} {pos}/{len} images evaluated  {msg}  [{elapsed}]").clone(),
        };
        bar.set_position(images as u64);
        if let Some(rate) = rate {
            bar.set_message(rate);
        }
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
        p.log().last_line = earlier;
        assert!(p.line_due(), "a line once the interval has passed");
        assert!(!p.line_due(), "the interval starts again after a line");
        let mut on_tty = TerminalProgress { tty: true, ..TerminalProgress::new() };
        on_tty.log().last_line = earlier;
        assert!(!on_tty.line_due(), "a terminal gets the bar, not lines");
    }

    /// Off a terminal, a step (or batch) longer than the interval gets a line saying it is
    /// at work, once per interval; between runs, and once the progress is dropped, none.
    #[test]
    fn a_long_step_off_a_terminal_gets_still_at_work_lines() {
        let mut p = TerminalProgress { tty: false, ..TerminalProgress::new() };
        p.log().every = Duration::from_millis(60);
        p.doing(Some("step 1/2".into()));
        std::thread::sleep(Duration::from_millis(400));
        let lines = p.log().still;
        assert!((2..=8).contains(&lines), "{lines} lines in about 6 intervals");
        assert!(p.doing(None), "what ended had still-at-work lines");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.log().still, lines, "no line while nothing is under way");
        assert!(!p.doing(Some("step 2/2".into())), "nothing was noted meanwhile");
        let watched = Arc::downgrade(&p.log);
        drop(p);
        std::thread::sleep(Duration::from_millis(100));
        assert!(watched.upgrade().is_none(), "the watching thread let go");
    }
}
