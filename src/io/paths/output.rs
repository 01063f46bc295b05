//! Checks that an output file or folder can be written, made before any work: a folder
//! where a file is expected (or the reverse), a name that belongs to an adapter or model
//! folder, a file of another kind, or a place where nothing can be created.

use std::path::{Path, PathBuf};

use super::{ADAPTER_FILES, MODEL_FILES, broken_link, file_behind, holds_any, shortened};
use crate::error::{Error, Result};

/// The deepest existing ancestor of `path` (itself if it exists; `.` for a relative path
/// none of whose parts exist). A symbolic link that leads nowhere (or in a loop) on the way,
/// or a root that does not exist (an unmapped drive), is an error for `flag`: nothing could
/// be created through it.
fn existing_ancestor(path: &Path, flag: &str) -> Result<PathBuf> {
    // Without a trailing `/` or `/.`, through which a file does not exist: `file/` is the
    // existing file `file` taken for a folder.
    let path: PathBuf = path.components().collect();
    let mut p = path.as_path();
    loop {
        if p.exists() {
            return Ok(p.to_path_buf());
        }
        if let Some(why) = broken_link(p) {
            return Err(Error::invalid(flag, format!("{} is a symbolic link that {why}", p.display())));
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            // Not even the root exists: a Windows drive or network share that is not there.
            _ if p.has_root() || matches!(p.components().next(), Some(std::path::Component::Prefix(_))) => {
                let why = format!("{} does not exist (a drive or network share that is not available?)", p.display());
                return Err(Error::invalid(flag, why));
            }
            _ => return Ok(PathBuf::from(".")),
        }
    }
}

/// The name of a probe file, before its `PID-N` ([`unique_suffix`]): as long as the longest
/// temporary name a save uses (`.model.safetensors.index.json.tmp-PID`).
const PROBE_FILE: &str = ".peft-wgpu-probe-of-a-long-name.tmp-";
/// The name of a probe's first new folder, before its `PID-N-` and padding `x`s.
const PROBE_FOLDER: &str = ".peft-wgpu-probe-";

/// Fails unless a file can be created in folder `dir` (made and removed at once) under a name
/// at least `name_len` bytes long, the length of the output file's own name (0 for a folder's
/// files): a name too long for the file system is found now, not when the run saves.
fn probe_writable(dir: &Path, target: &Path, name_len: usize, flag: &str) -> Result<()> {
    remove_stale_probes(dir);
    let mut name = format!("{PROBE_FILE}{}", unique_suffix());
    if name.len() < name_len {
        name.push('-');
        name.extend(std::iter::repeat_n('x', name_len.saturating_sub(name.len())));
    }
    let probe = dir.join(name);
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) if source.kind() == std::io::ErrorKind::InvalidFilename => {
            let what = match name_len {
                0 => "its path is".to_string(),
                n => format!("its name ({n} bytes) or path is"),
            };
            Err(Error::invalid(
                flag,
                format!(
                    "{}: {what} longer than the file system of {} allows",
                    shortened(target).display(),
                    shortened(dir).display()
                ),
            ))
        }
        Err(source) => Err(Error::Io {
            path: shortened(target),
            source: std::io::Error::new(
                source.kind(),
                format!("cannot write in {}: {source}", shortened(dir).display()),
            ),
        }),
    }
}

/// Checks, before any work, that output folder `dir` (flag `flag`) can be created or written:
/// it is a folder or does not exist yet, the nearest existing ancestor is a folder, and a file
/// can be created there.
pub fn check_output_dir(dir: &Path, flag: &str) -> Result<()> {
    let base = existing_ancestor(dir, flag)?;
    if !base.is_dir() {
        let message = if base == dir {
            format!("{} is a file, expected a folder", dir.display())
        } else {
            format!("{} is inside {}, which is a file", dir.display(), base.display())
        };
        return Err(Error::invalid(flag, message));
    }
    probe_writable(&base, dir, 0, flag)?;
    probe_new_folders(&base, dir, flag)
}

/// Makes the folders of `dir` below its existing ancestor `base`, and a file in the deepest,
/// then removes them: a name or path too long for the file system, or any other refusal,
/// ends the run now rather than at the save after the training. The first new folder is
/// made under a name of its own of at least the same length, so that no other run saving
/// to `dir` meanwhile sees it come and go.
fn probe_new_folders(base: &Path, dir: &Path, flag: &str) -> Result<()> {
    use std::path::Component;
    // `a/../b` would make `b` outside the private folder: such paths are left to the save.
    if dir.components().any(|c| c == Component::ParentDir) {
        return Ok(());
    }
    let mut first = None;
    let mut p = dir;
    while !p.as_os_str().is_empty() && p != base && std::fs::symlink_metadata(p).is_err() {
        first = Some(p);
        p = p.parent().unwrap_or(Path::new(""));
    }
    let Some(first) = first else { return Ok(()) };
    let (Some(name), Ok(rest)) = (first.file_name(), dir.strip_prefix(first)) else { return Ok(()) };
    let mut own = format!("{PROBE_FOLDER}{}-", unique_suffix());
    while own.len() < name.len() {
        own.push('x');
    }
    let root = first.with_file_name(own);
    let probe = root.join(rest);
    let outcome = match std::fs::create_dir_all(&probe) {
        Ok(()) => probe_writable(&probe, &shortened(dir), 0, flag),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => Err(Error::invalid(
            flag,
            format!("{}: a name in it is longer than the file system allows", shortened(dir).display()),
        )),
        Err(e) => Err(Error::Io {
            path: shortened(dir),
            source: std::io::Error::new(e.kind(), format!("cannot make this folder: {e}")),
        }),
    };
    let _ = std::fs::remove_dir_all(&root);
    outcome
}

/// Removes from folder `dir` the probes that runs killed in the instant between making and
/// removing them left behind: files `PROBE_FILE` + `PID-N` (and padding `-x…`), folders `PROBE_FOLDER` +
/// `PID-N-` + `x`s whose process has ended (where the system tells, see
/// [`crate::io::atomic::process_ended`]) and that are a minute old (a probe lives for
/// microseconds; on a folder shared between machines, another one's live probe stays).
fn remove_stale_probes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else { continue };
        let (rest, folder) = match name.strip_prefix(PROBE_FILE) {
            Some(rest) => (rest, false),
            None => match name.strip_prefix(PROBE_FOLDER) {
                Some(rest) => (rest, true),
                None => continue,
            },
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(count), padding) = (parts.next(), parts.next(), parts.next()) else { continue };
        let padded = |x: &str| x.bytes().all(|b| b == b'x');
        let shaped = match (folder, padding) {
            (false, None) => kind.is_file(),
            (false, Some(x)) => kind.is_file() && padded(x),
            (true, Some(x)) => kind.is_dir() && padded(x),
            _ => false,
        };
        let old = || {
            let modified = entry.metadata().and_then(|m| m.modified());
            modified.is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= std::time::Duration::from_secs(60)))
        };
        if shaped && number(pid) && number(count) && old() && crate::io::atomic::process_ended(pid) {
            let path = entry.path();
            let _ = if folder { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
}

/// This process's id and a count of its probes, so that no two probes share a name.
fn unique_suffix() -> String {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Whether `name` is one of [`ADAPTER_FILES`] or [`MODEL_FILES`], or a shard
/// (`model-00001-of-00002.safetensors`): an output file such as `--logits-out` never takes
/// such a name, which would make its folder look like an adapter or model folder (or, in one,
/// destroy a file of it).
///
/// Compared in lower case without trailing dots and spaces, as case-insensitive file systems
/// (macOS, Windows) and Windows' name rules would open the same file.
fn is_folder_file(name: &str) -> bool {
    let name = name.trim_end_matches(['.', ' ']).to_ascii_lowercase();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shard = name
        .strip_prefix("model-")
        .and_then(|rest| rest.strip_suffix(".safetensors"))
        .and_then(|numbers| numbers.split_once("-of-"))
        .is_some_and(|(i, n)| digits(i) && digits(n));
    ADAPTER_FILES.contains(&name.as_str()) || MODEL_FILES.contains(&name.as_str()) || shard
}

/// What an output file replaces when it exists: only a file of its own kind (an earlier
/// run's output), or an empty one, so that a mistyped name never destroys other data.
#[derive(Clone, Copy, Debug)]
pub enum Replaces {
    /// Logits: a safetensors file holding `logits` alone.
    Logits,
    /// A plot: an SVG document.
    Svg,
}

impl Replaces {
    /// Whether the existing regular file `path` is one this output may replace.
    fn allows(self, path: &Path) -> bool {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return true;
        }
        match self {
            Replaces::Logits => crate::io::safetensors::header_json(path)
                .and_then(|h| h.as_object().map(|o| o.keys().filter(|k| *k != "__metadata__").eq(["logits"].iter())))
                .unwrap_or(false),
            Replaces::Svg => {
                use std::io::Read;
                let mut head = Vec::new();
                let read = std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut head));
                let text = String::from_utf8_lossy(&head);
                read.is_ok() && text.contains("<svg")
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Replaces::Logits => "a logits file (a safetensors file holding `logits` alone)",
            Replaces::Svg => "an SVG plot",
        }
    }
}

/// Which standard stream of this process, if any, is written to the regular file `path`
/// leads to (`--logits-out /dev/stdout` with stdout redirected to a file): an output file
/// is replaced by a rename, after which the stream's lines would go to the replaced file.
fn own_output_stream(path: &Path) -> Option<&'static str> {
    #[cfg(unix)]
    {
        let target = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file)?;
        let streams = [("standard output", "/dev/stdout"), ("standard error", "/dev/stderr")];
        streams
            .into_iter()
            .find_map(|(name, dev)| super::same_inode(&std::fs::metadata(dev).ok()?, &target).then_some(name))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Whether `path`'s last part, as written, names a folder: empty (a trailing separator),
/// `.` or `..`; no file can be written there.
fn ends_as_folder(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    matches!(text.rsplit(std::path::is_separator).next(), Some("" | "." | "..") | None)
}

/// Checks, before any work, that output file `path` (flag `flag`) can be written: it is not
/// a folder, nor named as a file of an adapter or model folder (a config, weights or a
/// shard), nor, beside a shard index, any safetensors file, nor an
/// existing file of another kind than `replaces` allows, its folder exists, and a file can be
/// created there. A device or pipe (`/dev/null`, a FIFO) is
/// written into, not replaced (see [`crate::io::atomic::write_output`]), and a symbolic link
/// to a file leads to the folder of its target.
pub fn check_output_file(path: &Path, flag: &str, replaces: Replaces) -> Result<()> {
    if let Some(why) = broken_link(path) {
        return Err(Error::invalid(flag, format!("{} is a symbolic link that {why}", path.display())));
    }
    if path.is_dir() {
        return Err(Error::invalid(flag, format!("{} is a folder, expected a file name", path.display())));
    }
    if ends_as_folder(path) {
        return Err(Error::invalid(
            flag,
            format!("{} ends as a folder does (in `/`, `.` or `..`), expected a file name", path.display()),
        ));
    }
    if let Some(stream) = own_output_stream(path) {
        return Err(Error::invalid(
            flag,
            format!(
                "{} is the file this run's {stream} goes to; replaced by the output, it would lose the run's \
                 other lines: give the output a file of its own",
                path.display()
            ),
        ));
    }
    let resolved;
    let path = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Ok(()),
        Ok(_) => {
            resolved = file_behind(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
            resolved.as_path()
        }
        Err(_) => path,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        let why = match parent.exists() {
            true => format!("{} is inside {}, which is a file", path.display(), parent.display()),
            false => format!("folder {} does not exist", parent.display()),
        };
        return Err(Error::invalid(flag, why));
    }
    // Any safetensors file beside a shard index may be a shard it lists.
    let sharded = parent.join("model.safetensors.index.json").exists();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let named = is_folder_file(name);
    let in_folder = holds_any(parent, &ADAPTER_FILES) || holds_any(parent, &MODEL_FILES);
    if named && !in_folder {
        return Err(Error::invalid(
            flag,
            format!(
                "{} is named as an adapter's or model's file (a config, weights or a shard): written there, it \
                 would make {} look like an adapter or model folder; choose another name",
                shortened(path).display(),
                shortened(parent).display()
            ),
        ));
    }
    if (named || (sharded && name.ends_with(".safetensors"))) && in_folder {
        return Err(Error::invalid(
            flag,
            format!(
                "{} belongs to the adapter or model folder {}; writing there would destroy it, choose another file",
                shortened(path).display(),
                shortened(parent).display()
            ),
        ));
    }
    if path.is_file() && !replaces.allows(path) {
        return Err(Error::invalid(
            flag,
            format!(
                "{} exists and is not {}; remove it or choose another name",
                shortened(path).display(),
                replaces.describe()
            ),
        ));
    }
    let name_len = path.file_name().map_or(0, |n| n.len());
    probe_writable(parent, path, name_len, flag)
}
