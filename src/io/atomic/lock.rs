//! Advisory locks on folders: a save holds its folder's exclusive lock, a read of files
//! that belong together a shared one (see the module docs of [`super`]).

use std::path::Path;

/// A shared advisory lock on folder `dir`, for reading files that belong together (an
/// adapter's config and weights): writers ([`write_all`](super::write_all)) wait until it is
/// dropped, so the files read under it come from one save. `None` where the folder cannot be opened or the
/// platform cannot lock one (the reads then go unlocked).
pub fn lock_shared(dir: &Path) -> Option<std::fs::File> {
    lock_dir(dir, Lock::Shared)
}

#[derive(Clone, Copy)]
pub(super) enum Lock {
    Shared,
    Exclusive,
}

/// An advisory lock on folder `dir`, held until the returned handle is dropped; `None` where
/// the folder (or, on Windows, its lock file) cannot be opened or locked.
pub(super) fn lock_dir(dir: &Path, kind: Lock) -> Option<std::fs::File> {
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
    let name = crate::io::stamp::fingerprint(full.to_string_lossy().to_lowercase().as_bytes());
    let locks = root.join("peft-wgpu-locks");
    std::fs::create_dir_all(&locks).ok()?;
    let file = locks.join(format!("{name}.lock"));
    std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::atomic::tests::temp_dir;

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
}
