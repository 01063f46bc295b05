//! Signals on Unix: a write past the file size limit fails instead of ending the process, and
//! a stopped run removes its unfinished temporaries before it ends.

use std::io::Write;

/// Writing past the file size limit (`ulimit -f`) raises SIGXFSZ, whose default action ends
/// the process without a word. This program's outputs are checked against the limit before
/// they are written (on Linux), but other writes in the process are not: a GPU driver's shader
/// cache, most likely, is what ended a run on an H200 under a 4 KiB limit. With the signal
/// caught, such a write fails with EFBIG instead, which a driver can treat as a cache it
/// cannot write, and a write of ours that the check missed is reported with its file.
pub(crate) fn catch_file_size_signal() {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Registration fails only for signals that cannot be caught, which SIGXFSZ is not.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, seen);
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP end the program as they would have, but first remove
/// the temporaries of a save or an output file that had not reached its renames (waiting for
/// a save that had; see `remove_unfinished_temps`), so a stopped run leaves no hidden
/// partial file behind; a second signal ends it at once. A signal the program was started
/// with ignored (`nohup`, a background job of a script) stays ignored: only signals Linux's
/// `/proc/self/status` shows as not ignored are caught, and none where it cannot be read.
pub(crate) fn clean_up_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let ignored = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| ignored_signals(&s));
    let Some(ignored) = ignored else { return };
    let caught: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| ignored & (1 << (s - 1)) == 0).collect();
    let Ok(mut signals) = signal_hook::iterator::Signals::new(&caught) else { return };
    std::thread::spawn(move || {
        let mut arriving = signals.forever();
        let Some(first) = arriving.next() else { return };
        std::thread::spawn(move || {
            peft_wgpu::io::atomic::remove_unfinished_temps();
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                // Past a progress bar, whose line has no end yet.
                let name = signal_hook::low_level::signal_name(first).unwrap_or("a signal");
                let _ = writeln!(std::io::stderr().lock(), "\npeft-wgpu: stopped by {name}");
            }
            end_by(first);
        });
        if let Some(second) = arriving.next() {
            end_by(second);
        }
    });
}

/// Ends the process by `signal`'s default action, as if it had not been caught (for the
/// first process of a container, which the kernel shields from that, by exit code 128 + it).
fn end_by(signal: i32) -> ! {
    if std::process::id() != 1 {
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    std::process::exit(128 + signal)
}

/// The mask of ignored signals (`SigIgn:`, hexadecimal, bit `n − 1` for signal `n`) of a
/// `/proc/PID/status` text.
fn ignored_signals(status: &str) -> Option<u64> {
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(mask.trim(), 16).ok()
}
