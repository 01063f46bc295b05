//! What killed writers leave beside a file: temporaries (`.NAME.tmp-PID`) and the files
//! they moved aside (`.NAME.old-PID`), found, told apart by whether their writer ended,
//! finished and removed.

use std::path::{Path, PathBuf};

use super::{ASIDE_MARKER, TEMP_MARKER, file_name, io_err, prefix, sync_dir, with_retries};
use crate::error::Result;

/// Temporaries of `path` left by killed writers (`.NAME.tmp-PID` beside it).
pub fn stale_temps(path: &Path) -> Vec<PathBuf> {
    marked(path, TEMP_MARKER)
}

/// Files that killed writers moved aside from `path` (`.NAME.old-PID` beside it): the file
/// the save was replacing.
pub fn stale_asides(path: &Path) -> Vec<PathBuf> {
    marked(path, ASIDE_MARKER)
}

/// The files beside `path` named `.NAME` + `marker` + a process id.
fn marked(path: &Path, marker: &str) -> Vec<PathBuf> {
    let prefix = prefix(path, marker);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix).is_some_and(|pid| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|entry| entry.path())
        .collect()
}

/// The process id in a temporary's (`.NAME.tmp-PID`) or an aside's (`.NAME.old-PID`) name.
pub(crate) fn writer_of(path: &Path) -> Option<String> {
    let name = file_name(path);
    let (_, pid) = name.rsplit_once(TEMP_MARKER).or_else(|| name.rsplit_once(ASIDE_MARKER))?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.to_string())
}

/// Whether the process that wrote temporary `tmp` (`.NAME.tmp-PID`, see [`stale_temps`]), or
/// moved a file aside (`.NAME.old-PID`, [`stale_asides`]), has ended, as far as this system
/// can tell: on Linux by `/proc` (a zombie with no thread left, killed but not yet collected
/// by its parent, has ended too), elsewhere never known (`false`).
pub fn writer_ended(tmp: &Path) -> bool {
    writer_of(tmp).is_some_and(|pid| process_ended(&pid))
}

/// Whether process `pid` (decimal digits) has ended, as far as this system can tell: on
/// Linux by `/proc` (a process killed but not yet collected by its parent, a zombie with no
/// thread left, has ended too), elsewhere never known (`false`).
pub(crate) fn process_ended(pid: &str) -> bool {
    let proc = Path::new("/proc");
    let zombie = || {
        let status = std::fs::read_to_string(proc.join(pid).join("status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        field("State:").is_some_and(|s| s.starts_with('Z')) && field("Threads:").is_some_and(|t| t == "1")
    };
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    cfg!(target_os = "linux") && digits && proc.join("self").exists() && (!proc.join(pid).exists() || zombie())
}

/// Renames the temporary `tmp` left by a killed [`write_all`](super::write_all) over `path`,
/// finishing the writer's second phase, and flushes the folder.
pub fn finish_rename(tmp: &Path, path: &Path) -> Result<()> {
    with_retries(|| std::fs::rename(tmp, path)).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Removes temporaries of `path` left by killed writers (`.NAME.tmp-PID` beside it), and the
/// files they moved aside (`.NAME.old-PID`) once `path` is there again (put back or
/// replaced by a reader that finished the save): all of them when `locked` (no other save
/// is under way), else those of writers known to have ended.
pub(super) fn remove_stale_temps(path: &Path, locked: bool) {
    let asides = if path.is_file() { stale_asides(path) } else { Vec::new() };
    for tmp in stale_temps(path).into_iter().chain(asides.into_iter().filter(|a| locked || writer_ended(a))) {
        let _ = std::fs::remove_file(tmp);
    }
}

/// Linux only: elsewhere no writer is known to have ended.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A writer that ended is known by its process id, also while it waits as a zombie for
    /// its parent (a killed run whose parent has not yet collected it); a live one is not.
    #[test]
    fn ended_writers_are_told_from_live_ones() {
        let name = |pid: u32| PathBuf::from(format!("/tmp/.a.bin.tmp-{pid}"));
        assert!(!writer_ended(&name(std::process::id())), "this process");
        let mut child = std::process::Command::new("true").spawn().expect("`true` runs");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !writer_ended(&name(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(writer_ended(&name(pid)), "an ended child not yet waited for");
        child.wait().expect("wait");
        assert!(writer_ended(&name(pid)), "an ended child");
        assert!(writer_ended(&PathBuf::from("/tmp/.b.json.old-4294967")), "a file moved aside by an ended writer");
    }
}
