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
        Ok(_) => write(&path.canonicalize().map_err(io_err(path))?, bytes),
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
    for (path, _) in files {
        // A pipe, device or folder where a file goes is never renamed over.
        if let Ok(meta) = std::fs::metadata(path)
            && !meta.is_file()
        {
            let message = "is a pipe, socket, device or folder, not a file; it is not replaced".into();
            return Err(Error::Format { path: path.clone(), message });
        }
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
    for (path, bytes) in files {
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

/// A shared advisory lock on folder `dir`, for reading files that belong together (an
/// adapter's config and weights): writers ([`write_all`]) wait until it is dropped, so the
/// files read under it come from one save. `None` where the folder cannot be opened or the
/// platform cannot lock one (the reads then go unlocked).
pub fn lock_shared(dir: &Path) -> Option<std::fs::File> {
    lock_dir(dir, Lock::Shared)
}

#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

/// An advisory lock on folder `dir`, held until the returned handle is dropped; `None` where
/// the folder (or, on Windows, its lock file) cannot be opened or locked.
fn lock_dir(dir: &Path, kind: Lock) -> Option<std::fs::File> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let handle = lock_handle(dir)?;
    let free = match kind {
        Lock::Shared => handle.try_lock_shared(),
        Lock::Exclusive => handle.try_lock(),
    };
    match free {
        Ok(()) => return Some(handle),
        Err(std::fs::TryLockError::WouldBlock) => {
            // Another run holds the folder (a save, or reads during one): say why nothing
            // happens, since a run stopped while holding it keeps this one waiting.
            let doing = match kind {
                Lock::Shared => "saving into",
                Lock::Exclusive => "reading or saving",
            };
            note!("waiting for another peft-wgpu run {doing} {} to finish…", dir.display());
        }
        Err(std::fs::TryLockError::Error(_)) => return None,
    }
    match kind {
        Lock::Shared => handle.lock_shared().ok()?,
        Lock::Exclusive => handle.lock().ok()?,
    }
    Some(handle)
}

/// What locks folder `dir`: the folder itself where it opens as a file (Unix).
#[cfg(unix)]
fn lock_handle(dir: &Path) -> Option<std::fs::File> {
    std::fs::File::open(dir).ok()
}

/// What locks folder `dir`: Windows opens no folder as a file, so a lock file stands for it.
#[cfg(not(unix))]
fn lock_handle(dir: &Path) -> Option<std::fs::File> {
    lock_file_for(dir, &std::env::temp_dir())
}

/// The lock file standing for folder `dir` under `root`: `root/peft-wgpu-locks/<fingerprint
/// of the folder's full path, lowercased>.lock` (Windows paths ignore case), shared by every
/// process with the same `root`: on Windows the user's temporary folder, so processes of
/// one user exclude each other (two accounts saving into one shared folder do not).
#[cfg_attr(unix, allow(dead_code, reason = "the lock of platforms that cannot lock a folder; tested everywhere"))]
fn lock_file_for(dir: &Path, root: &Path) -> Option<std::fs::File> {
    let full = dir.canonicalize().ok()?;
    let name = super::stamp::fingerprint(full.to_string_lossy().to_lowercase().as_bytes());
    let locks = root.join("peft-wgpu-locks");
    std::fs::create_dir_all(&locks).ok()?;
    let file = locks.join(format!("{name}.lock"));
    std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(file).ok()
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
/// can tell: on Linux by `/proc` (a process killed but not yet collected by its parent, a
/// zombie with no thread left, has ended too), elsewhere never known (`false`).
pub fn writer_ended(tmp: &Path) -> bool {
    let Some(pid) = writer_of(tmp) else { return false };
    let proc = Path::new("/proc");
    let zombie = || {
        let status = std::fs::read_to_string(proc.join(&pid).join("status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        field("State:").is_some_and(|s| s.starts_with('Z')) && field("Threads:").is_some_and(|t| t == "1")
    };
    cfg!(target_os = "linux") && proc.join("self").exists() && (!proc.join(&pid).exists() || zombie())
}

/// Renames the temporary `tmp` left by a killed [`write_all`] over `path`, finishing the
/// writer's second phase, and flushes the folder.
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
fn remove_stale_temps(path: &Path, locked: bool) {
    let asides = if path.is_file() { stale_asides(path) } else { Vec::new() };
    for tmp in stale_temps(path).into_iter().chain(asides.into_iter().filter(|a| locked || writer_ended(a))) {
        let _ = std::fs::remove_file(tmp);
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
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("peft-wgpu-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn windows_device_names_are_recognised() {
        for name in ["NUL", "nul", "nul.txt", r"C:\out\con", "com1", "LPT9.log", r"\\.\pipe\x", "dir/Aux"] {
            assert!(names_windows_device(Path::new(name)), "{name}");
        }
        for name in ["null", "com0", "com10", "console", "nul_logits.safetensors", "my-nul", "logits.safetensors"] {
            assert!(!names_windows_device(Path::new(name)), "{name}");
        }
    }

    /// The lock file that stands for a folder where no folder can be locked (Windows): every
    /// spelling of one folder's path gets the same file, other folders another, and it
    /// excludes a second holder as a folder lock does.
    #[test]
    fn a_folders_lock_file_is_shared_by_its_spellings_and_excludes() {
        let dir = temp_dir("lockfile");
        let (root, other) = (dir.join("root"), dir.join("other"));
        std::fs::create_dir_all(&other).expect("folder");
        let held = lock_file_for(&dir, &root).expect("a lock file");
        held.lock().expect("exclusive lock");
        let again = lock_file_for(&dir.join("other").join(".."), &root).expect("the same folder's lock file");
        assert!(again.try_lock().is_err(), "a second holder of the same folder waits");
        let elsewhere = lock_file_for(&other, &root).expect("another folder's lock file");
        elsewhere.try_lock().expect("another folder's lock is free");
        drop(held);
        again.try_lock().expect("free once the first holder is gone");
        assert_eq!(std::fs::read_dir(root.join("peft-wgpu-locks")).expect("locks").count(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn write_all_never_renames_over_a_pipe_or_folder() {
        use std::os::unix::fs::FileTypeExt;
        let dir = temp_dir("special");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success(), "mkfifo failed");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).expect("folder");
        for target in [&fifo, &sub] {
            let e = write_all(&[(dir.join("a"), b"a".to_vec()), (target.clone(), b"x".to_vec())]).expect_err("refused");
            assert!(e.to_string().contains("not replaced"), "{e}");
            assert!(!dir.join("a").exists(), "nothing is written when one target is refused");
        }
        assert!(std::fs::symlink_metadata(&fifo).expect("fifo").file_type().is_fifo());
        assert!(sub.is_dir());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A writer that ended is known by its process id, also while it waits as a zombie for
    /// its parent (a killed run whose parent has not yet collected it); a live one is not.
    #[cfg(target_os = "linux")]
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

    #[test]
    fn write_all_replaces_every_file_and_leaves_no_temporaries() {
        let dir = temp_dir("all");
        let (a, b) = (dir.join("a.bin"), dir.join("b.json"));
        std::fs::write(&a, b"old a").expect("seed");
        std::fs::write(&b, b"old b").expect("seed");
        // A temporary left by a killed writer is cleaned up, and so is a file one moved aside
        // once the file is back in place.
        std::fs::write(dir.join(".a.bin.tmp-999999"), b"half").expect("stale");
        std::fs::write(dir.join(".b.json.old-4294967"), b"older b").expect("stale");
        write_all(&[(a.clone(), b"new a".to_vec()), (b.clone(), b"new b".to_vec())]).expect("write");
        assert_eq!(std::fs::read(&a).expect("a"), b"new a");
        assert_eq!(std::fs::read(&b).expect("b"), b"new b");
        let names: Vec<String> =
            std::fs::read_dir(&dir).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A name of up to 255 bytes (file systems' limit) is written through a temporary whose
    /// name fits too, one apart from that of a name that differs only past the cut, and a
    /// temporary such a writer left behind is found.
    #[test]
    fn the_longest_names_get_temporaries_that_fit() {
        let dir = temp_dir("long");
        let (a, b) = (dir.join(format!("{}a", "é".repeat(127))), dir.join(format!("{}b", "é".repeat(127))));
        assert_eq!(a.file_name().expect("name").len(), 255);
        let (ta, tb) = (temp_path(&a), temp_path(&b));
        assert!(ta.file_name().expect("name").len() <= 255, "{}", ta.display());
        assert_ne!(ta, tb);
        std::fs::write(&ta, b"half").expect("a temporary left by a killed writer");
        assert_eq!(stale_temps(&a), std::slice::from_ref(&ta));
        assert!(stale_temps(&b).is_empty());
        write(&a, b"new a").expect("write");
        assert_eq!(std::fs::read(&a).expect("a"), b"new a");
        assert!(!ta.exists(), "the stale temporary is removed");
        let short = dir.join("logits.safetensors");
        let name = temp_path(&short).file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(name, format!(".logits.safetensors.tmp-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_write_removes_only_the_folder_it_made() {
        let dir = temp_dir("in_dir");
        let fail = || -> Result<()> { Err(Error::invalid("--out", "no space")) };
        let new = dir.join("new");
        assert!(in_dir(&new.join("deeper"), fail).is_err());
        assert!(!new.exists(), "the folders made for a failed write are gone");
        assert!(in_dir(&dir, fail).is_err());
        assert!(in_dir(Path::new(""), || Ok(())).is_err(), "an empty path is not this folder by accident");
        assert!(dir.is_dir(), "a folder that was there stays");
        in_dir(&new, || write_all(&[(new.join("f"), b"x".to_vec())])).expect("write");
        assert_eq!(std::fs::read(new.join("f")).expect("f"), b"x");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = temp_dir("fail");
        let a = dir.join("a.bin");
        std::fs::write(&a, b"old a").expect("seed");
        // The second target's folder does not exist, so its temporary cannot be created.
        let bad = dir.join("missing").join("b.json");
        let e = write_all(&[(a.clone(), b"new a".to_vec()), (bad, b"x".to_vec())]).expect_err("must fail");
        assert!(e.to_string().contains("b.json"), "{e}");
        assert_eq!(std::fs::read(&a).expect("a"), b"old a");
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1, "temporaries left behind");
        std::fs::remove_dir_all(&dir).ok();
    }
}
