//! Atomic file writes: write to a temporary name in the same directory, flush to disk, then
//! rename over the target. A failed or killed run leaves the previous file untouched.
//!
//! [`write_all`] commits several files that belong together (an adapter's weights and config)
//! in two phases: every temporary is written and flushed first, and only then are they
//! renamed, in the order given, with nothing in between that can fail for lack of space or a
//! bad value. A kill during the first phase leaves the previous files byte-identical (and a
//! stray `.NAME.tmp-PID` that the next write to the same folder removes). Before the renames,
//! the existing files that the later ones replace are moved aside (`.NAME.old-PID`), so that
//! no reader ever finds the first new file beside an old later one (PEFT would read new
//! weights with the old config): in the microseconds of the renames those files are missing,
//! which any reader reports, and the asides are removed once all are in place. The first
//! rename is the commit point: a kill before it leaves the old first file with the others
//! aside, a kill after it the later files under their temporary names, and readers put the
//! old files back or finish the renames (for adapters and merged models:
//! [`super::stamp::finish_interrupted_pair`], which matches them by fingerprint).
//! Writers into one folder hold a lock on it (on Windows, which cannot lock a folder, on a
//! lock file standing for it in the temporary folder), so two saves never interleave their
//! renames. Past the commit point a rename that fails leaves the remaining temporaries for
//! readers to finish; on Windows a rename refused for a moment (a virus scanner holding the
//! file just written) is tried again for up to two seconds.
//!
//! Test hook: when the environment variable `PEFT_WGPU_TEST_SLOW_WRITE_MS` holds a number
//! `N`, each temporary is written in two halves with a pause of `N` ms between them, and
//! there is a pause of `N` ms between consecutive renames, so a test can kill the process
//! mid-write deterministically. Nothing else reads it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod leftovers;
mod lock;

use leftovers::remove_stale_temps;
pub use leftovers::{finish_rename, stale_asides, stale_temps, writer_ended};
pub(crate) use leftovers::{process_ended, writer_of};
pub use lock::lock_shared;
use lock::{Lock, lock_dir};

/// The environment variable of the test hook described in the module docs.
pub const SLOW_WRITE_ENV: &str = "PEFT_WGPU_TEST_SLOW_WRITE_MS";

/// Marker between a file's name and the writer's process id in a temporary name.
const TEMP_MARKER: &str = ".tmp-";

/// Marker between a file's name and the writer's process id in the name a file that a save
/// replaces is kept under until the save is in place.
const ASIDE_MARKER: &str = ".old-";

/// The temporary name `path` is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}{}", prefix(path, TEMP_MARKER), std::process::id()))
}

/// The name the file at `path` is kept under while a save replaces it and the files saved
/// with it (see the module docs).
fn aside_path(path: &Path) -> PathBuf {
    path.with_file_name(format!("{}{}", prefix(path, ASIDE_MARKER), std::process::id()))
}

/// `.NAME` and `marker`, what `path`'s temporary (or aside) names start with. A name too long
/// to fit that within the 255 bytes file systems allow a name is cut, and a fingerprint of
/// the whole of it follows, so the temporaries of two such names in one folder stay apart.
fn prefix(path: &Path, marker: &str) -> String {
    const MAX_NAME: usize = 255;
    // The dot, the marker and a process id of up to 10 digits.
    let room = 1 + marker.len() + 10;
    let name = file_name(path);
    if name.len() + room <= MAX_NAME {
        return format!(".{name}{marker}");
    }
    // Room for `~` and 16 hex digits.
    let keep = (0..=MAX_NAME - room - 17).rev().find(|&i| name.is_char_boundary(i)).unwrap_or(0);
    format!(".{}~{}{marker}", &name[..keep], super::stamp::fingerprint(name.as_bytes()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Temporaries this process is writing, for [`remove_unfinished_temps`].
static UNFINISHED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Folders [`in_dir`] made for a save under way, deepest first, for [`remove_unfinished_temps`].
static MADE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn unfinished() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    UNFINISHED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// For a program about to end on a signal (Ctrl-C): removes the temporaries of the saves
/// under way that have not reached their renames, and keeps any save from starting or
/// going on. A save already renaming its files finishes first (this waits for it), so the
/// files are left as before it or as after it, with no hidden partial file beside them.
pub fn remove_unfinished_temps() {
    let guard = unfinished();
    for tmp in guard.iter() {
        let _ = std::fs::remove_file(tmp);
    }
    // The folders made for saves, deepest first, where they are empty (a folder not yet
    // made, or holding files, stays as it is).
    for dir in MADE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        let _ = std::fs::remove_dir(dir);
    }
    // Never released: the process ends, and no writer may start a file meanwhile.
    std::mem::forget(guard);
}

fn test_pause() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(SLOW_WRITE_ENV).ok()?.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all(&[(path.to_path_buf(), bytes)])
}

/// Writes `bytes` where a user's output path leads: to a regular file (new, or existing and
/// then replaced atomically; through a symbolic link, its target is replaced) with [`write()`],
/// and into a device or pipe (`/dev/null`, a FIFO), which a rename would destroy, directly.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    let into = |path: &Path| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(bytes).and_then(|()| file.flush())
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => into(path).map_err(io_err(path)),
        Ok(_) => write(&crate::io::paths::file_behind(path).map_err(io_err(path))?, bytes),
        // `NUL`, `CON`, …: devices that Windows may give no metadata for; a name that turns
        // out to be no device (an ordinary file since Windows 11) is written as a file.
        Err(_) if cfg!(windows) && names_windows_device(path) => match into(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write(path, bytes),
            other => other.map_err(io_err(path)),
        },
        Err(_) => write(path, bytes),
    }
}

/// Whether `path` names a Windows device: a `\\.\` path, or a last component that is `NUL`,
/// `CON`, `PRN`, `AUX`, `COM1`–`COM9` or `LPT1`–`LPT9` in any case, with or without an
/// extension (as Windows before 11 reads `nul.txt`). Only consulted on Windows.
pub(crate) fn names_windows_device(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    if text.starts_with(r"\\.\") {
        return true;
    }
    let name = text.rsplit(['/', '\\']).next().unwrap_or_default().to_ascii_uppercase();
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    let numbered = |prefix: &str| {
        stem.strip_prefix(prefix).is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit() && n != "0")
    };
    matches!(stem, "NUL" | "CON" | "PRN" | "AUX") || numbered("COM") || numbered("LPT")
}

/// Writes every `(path, bytes)` pair: all temporaries first (each flushed to disk), then the
/// renames in the order given, then a flush of the folders. On an error before the renames no
/// target has changed and the temporaries are removed. A target that exists but is not a
/// regular file (nor a link to one) is an error: renaming over it would destroy it.
pub fn write_all<B: AsRef<[u8]>>(files: &[(PathBuf, B)]) -> Result<()> {
    write_all_checked(files, || Ok(()))
}

/// [`write_all`], running `check` first while holding the folder's lock: its error leaves
/// every file as it was. What `check` finds in the folder (no adapter there yet, say) stays
/// true until the files are in place, since every other writer waits for the lock.
pub fn write_all_checked<B: AsRef<[u8]>>(files: &[(PathBuf, B)], check: impl FnOnce() -> Result<()>) -> Result<()> {
    write_all_replacing(files, &[], check)
}

/// [`write_all_checked`], removing the files `stale` once the new ones are in place (the
/// shards of a model that one file replaces), before a signal may end the process.
pub fn write_all_replacing<B: AsRef<[u8]>>(
    files: &[(PathBuf, B)],
    stale: &[PathBuf],
    check: impl FnOnce() -> Result<()>,
) -> Result<()> {
    // Two processes saving into one folder commit one after the other, never interleaved.
    let lock = files.first().and_then(|(p, _)| p.parent()).and_then(|dir| lock_dir(dir, Lock::Exclusive));
    check()?;
    let pause = test_pause();
    // The permissions of the files replaced, which their replacements keep.
    let mut kept = Vec::with_capacity(files.len());
    for (path, _) in files {
        let meta = std::fs::metadata(path).ok();
        // A pipe, device or folder where a file goes is never renamed over.
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            let message = "is a pipe, socket, device or folder, not a file; it is not replaced".into();
            return Err(Error::Format { path: path.clone(), message });
        }
        kept.push(meta.map(|m| m.permissions()));
        remove_stale_temps(path, lock.is_some());
    }
    if let Some(limit) = file_size_limit()
        && let Some((path, bytes)) = files.iter().find(|(_, b)| b.as_ref().len() as u64 > limit)
    {
        // Past the limit the kernel stops the process with SIGXFSZ, which no message follows.
        let message = format!(
            "{} bytes to write, more than this process's file size limit of {limit} bytes (`ulimit -f`)",
            bytes.as_ref().len()
        );
        return Err(io_err(path)(std::io::Error::new(std::io::ErrorKind::FileTooLarge, message)));
    }
    let mut written: Vec<PathBuf> = Vec::with_capacity(files.len());
    let forget = |temps: &[PathBuf], list: &mut Vec<PathBuf>| list.retain(|t| !temps.contains(t));
    for ((path, bytes), permissions) in files.iter().zip(kept) {
        let bytes = bytes.as_ref();
        let tmp = temp_path(path);
        written.push(tmp.clone());
        let result = (|| {
            // Made and known in one step, so that a signal never leaves it behind.
            let mut file = {
                let mut list = unfinished();
                list.push(tmp.clone());
                std::fs::File::create(&tmp)?
            };
            // A file replaced keeps its permissions (a private 0600 file stays private); on
            // Unix the open handle still writes. Windows has only the read-only flag, which
            // would keep a temporary left by a failed rename from being removed.
            if cfg!(unix)
                && let Some(permissions) = permissions
            {
                let _ = file.set_permissions(permissions);
            }
            let (first, rest) = bytes.split_at(bytes.len() / 2);
            file.write_all(first)?;
            if let Some(p) = pause {
                file.flush()?;
                std::thread::sleep(p);
            }
            file.write_all(rest)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let mut list = unfinished();
            for t in &written {
                let _ = std::fs::remove_file(t);
            }
            forget(&written, &mut list);
            return Err(io_err(path)(e));
        }
    }
    // Held through the renames: a signal now waits for them (see `remove_unfinished_temps`),
    // and whatever they leave is no longer this process's to remove.
    let mut list = unfinished();
    forget(&written, &mut list);
    let remove_temps = || {
        for t in &written {
            let _ = std::fs::remove_file(t);
        }
    };
    // The later files that exist go aside first (see the module docs).
    let mut aside: Vec<(&Path, PathBuf)> = Vec::new();
    let put_back = |aside: &[(&Path, PathBuf)]| {
        for (path, old) in aside {
            let _ = with_retries(|| std::fs::rename(old, path));
        }
    };
    for (path, _) in files.iter().skip(1).filter(|(p, _)| p.is_file()) {
        let old = aside_path(path);
        if let Err(e) = with_retries(|| std::fs::rename(path, &old)) {
            put_back(&aside);
            remove_temps();
            return Err(io_err(path)(e));
        }
        aside.push((path, old));
    }
    if let (Some(p), false) = (pause, aside.is_empty()) {
        std::thread::sleep(p);
    }
    for (i, ((path, bytes), tmp)) in files.iter().zip(&written).enumerate() {
        if i > 0
            && let Some(p) = pause
        {
            std::thread::sleep(p);
        }
        if let Err(e) = with_retries(|| std::fs::rename(tmp, path))
            && !finished_by_another(tmp, path, bytes.as_ref())
        {
            if i == 0 {
                // Nothing is committed: the previous files stay, and so does nothing of ours.
                put_back(&aside);
                remove_temps();
                return Err(io_err(path)(e));
            }
            // Past the commit point the remaining temporaries are the rest of this save: they
            // stay, for the next reader of the folder to finish the renames.
            let done = format!(
                "the save was committed but is incomplete: the next command that reads this folder \
                 finishes it from `{}`",
                tmp.display()
            );
            return Err(Error::After { done, source: Box::new(io_err(path)(e)) });
        }
    }
    for old in aside.iter().map(|(_, old)| old).chain(stale) {
        let _ = std::fs::remove_file(old);
    }
    // The renames are done: a signal need not wait for the folder's flush.
    drop(list);
    for dir in files.iter().filter_map(|(p, _)| p.parent()) {
        sync_dir(dir);
    }
    Ok(())
}

/// The largest file this process may write (the soft `RLIMIT_FSIZE`, `ulimit -f`), where the
/// system says (Linux's `/proc/self/limits`, in bytes); `None` for no limit or no way to tell.
fn file_size_limit() -> Option<u64> {
    const FIELD: &str = "Max file size";
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(FIELD))?;
    line[FIELD.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether a reader finished this rename for the writer: `tmp` is gone and `path` holds
/// `bytes` (a reader that found the weights committed and the config still under its
/// temporary name renamed it, see [`super::stamp::finish_interrupted_pair`]).
fn finished_by_another(tmp: &Path, path: &Path, bytes: &[u8]) -> bool {
    !tmp.exists() && std::fs::read(path).is_ok_and(|now| now == bytes)
}

/// Runs `op` (a rename) again for up to two seconds while Windows refuses it for
/// a moment (access denied, sharing violation: a virus scanner or indexer holding the file
/// just written); elsewhere, or on any other error, once.
fn with_retries(mut op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    let transient = |e: &std::io::Error| cfg!(windows) && matches!(e.raw_os_error(), Some(5 | 32));
    let mut waited = std::time::Duration::ZERO;
    loop {
        match op() {
            Err(e) if transient(&e) && waited < std::time::Duration::from_secs(2) => {
                let pause = std::time::Duration::from_millis(50);
                std::thread::sleep(pause);
                waited += pause;
            }
            result => return result,
        }
    }
}

/// Flushes a folder's entries (the renames) to disk where the platform allows opening a
/// folder; elsewhere the rename is as durable as the OS makes it.
pub(crate) fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates directory `dir` (and parents) with an error naming it.
pub fn create_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid("output folder", "is an empty path; name a folder (`.` for this one)"));
    }
    if dir.is_file() {
        return Err(Error::Format { path: dir.to_path_buf(), message: "is a file, expected a folder".into() });
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Creates `dir` (and missing parents) and runs `write` in it; if `write` fails, the folders
/// this call created are removed again (those left empty), so a failed save leaves nothing
/// behind.
pub fn in_dir<T>(dir: &Path, write: impl FnOnce() -> Result<T>) -> Result<T> {
    let made: Vec<PathBuf> =
        dir.ancestors().take_while(|p| !p.as_os_str().is_empty() && !p.exists()).map(Path::to_path_buf).collect();
    let made_lock = || MADE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Known before they exist: a signal that ends the process meanwhile removes them too.
    made_lock().extend(made.iter().cloned());
    let result = create_dir(dir).and_then(|()| write());
    {
        // One entry each: another save under way may have registered the same folders.
        let mut list = made_lock();
        for d in &made {
            if let Some(i) = list.iter().position(|m| m == d) {
                list.remove(i);
            }
        }
    }
    if result.is_err() {
        for folder in &made {
            if std::fs::remove_dir(folder).is_err() {
                break;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests;
