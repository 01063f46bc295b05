//! Checks on the paths a user passes, made before anything is read or computed, so a wrong
//! folder, a file where a folder is expected (or the reverse) or an unwritable output is
//! reported with the path and what was expected instead.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod output;

pub use output::{Replaces, check_output_dir, check_output_file};

fn not_found(path: &Path, what: &str) -> Error {
    let source = std::io::Error::new(std::io::ErrorKind::NotFound, format!("not found (expected {what})"));
    Error::Io { path: path.to_path_buf(), source }
}

/// `path`'s metadata, or an error that says why it cannot be read: not found (a dangling
/// link included), or the system's reason (a loop of links, no permission).
fn metadata(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if std::fs::symlink_metadata(path).is_ok() => Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(e.kind(), format!("is a symbolic link to nothing (expected {what})")),
        },
        std::io::ErrorKind::NotFound => not_found(path, what),
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })
}

/// What kind of folder `dir` looks like, for hints when it is passed in the wrong place.
fn looks_like(dir: &Path) -> Option<&'static str> {
    if dir.join("adapter_config.json").is_file() {
        Some("an adapter folder")
    } else if dir.join("config.json").is_file() {
        Some("a model folder")
    } else {
        None
    }
}

/// The names of `dir`'s subfolders that hold `file` (sorted, at most 5).
fn subfolders_holding(dir: &Path, file: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(file).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names.truncate(5);
    names
}

/// Refuses each of `names` inside `dir` that is there but is neither a regular file nor a
/// folder (a pipe, socket or device, directly or through a link): a model or adapter folder
/// holds files, and opening a pipe that no one writes would wait forever. Missing names and
/// folders are left to the readers, whose messages say what was expected.
pub fn refuse_special_files(dir: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&path)
            && !meta.is_file()
            && !meta.is_dir()
        {
            return Err(Error::Format {
                path,
                message: "is a pipe, socket or device, not a file; files in a model or adapter folder must be \
                          regular files"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Fails unless `dir` is an existing folder holding `required` (the file that makes it
/// `what`, e.g. `config.json` for a model folder). Messages say what the path is instead.
pub fn expect_dir(dir: &Path, what: &str, required: &str) -> Result<()> {
    let meta = metadata(dir, what)?;
    if !meta.is_dir() {
        return Err(Error::Format { path: dir.to_path_buf(), message: format!("is a file, expected {what}") });
    }
    let file = dir.join(required);
    if let Err(e) = std::fs::symlink_metadata(&file)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        // Whether it holds the file cannot be told: say why, not that it is missing.
        let source = std::io::Error::new(e.kind(), format!("cannot look inside this folder for {required}: {e}"));
        return Err(Error::Io { path: dir.to_path_buf(), source });
    }
    if !file.exists() {
        if let (Ok(_), Err(source)) = (std::fs::symlink_metadata(&file), std::fs::metadata(&file)) {
            // A link that is there but leads nowhere (a dangling or looping link).
            return Err(Error::Format {
                path: file,
                message: format!("is a symbolic link that cannot be followed ({source})"),
            });
        }
        let inside = subfolders_holding(dir, required);
        let hint = match (looks_like(dir), inside.first()) {
            (Some(kind), _) => format!("; it looks like {kind}"),
            // PEFT saves an adapter not named "default" in a subfolder of its name.
            (None, Some(first)) => format!(
                "; {} inside {} one (pass {})",
                inside.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                if inside.len() == 1 { "holds" } else { "hold" },
                dir.join(first).display()
            ),
            (None, None) => String::new(),
        };
        return Err(Error::Format {
            path: dir.to_path_buf(),
            message: format!("holds no {required}, so it is not {what}{hint}"),
        });
    }
    Ok(())
}

/// Fails unless `path` is an existing file (`what` names it in messages).
pub fn expect_file(path: &Path, what: &str) -> Result<()> {
    let meta = metadata(path, what)?;
    if meta.is_dir() {
        return Err(Error::Format { path: path.to_path_buf(), message: format!("is a folder, expected {what}") });
    }
    Ok(())
}

/// Fails, naming `pickle`, when `dir` holds the PyTorch pickle `pickle` (`pytorch_model.bin`,
/// `adapter_model.bin`: what older transformers and PEFT wrote) in place of the safetensors
/// file `wanted` that is missing.
pub fn refuse_pickle(dir: &Path, pickle: &str, wanted: &str) -> Result<()> {
    if dir.join(pickle).is_file() && !dir.join(wanted).exists() {
        return Err(Error::Format {
            path: dir.join(pickle),
            message: match pickle.ends_with(".index.json") {
                true => format!(
                    "indexes PyTorch pickle shards, which this crate does not read; save the model as safetensors \
                     ({wanted} with its shards, or one file: `save_pretrained(dir, safe_serialization=True)`)"
                ),
                false => format!(
                    "is a PyTorch pickle, which this crate does not read; save it as {wanted} \
                     (`save_pretrained(dir, safe_serialization=True)`)"
                ),
            },
        });
    }
    Ok(())
}

/// Why `path`, a symbolic link, cannot be followed ("leads nowhere", or the system's reason:
/// a loop of links, no permission); `None` when it is no link or leads to something.
pub(super) fn broken_link(path: &Path) -> Option<String> {
    std::fs::symlink_metadata(path).ok()?;
    match std::fs::metadata(path) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("leads nowhere".into()),
        Err(e) => Some(format!("cannot be followed ({e})")),
    }
}

/// `path` for a message: a path of thousands of characters keeps its start and its end.
pub(super) fn shortened(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 160 {
        return path.to_path_buf();
    }
    let (head, tail): (String, String) = (chars[..60].iter().collect(), chars[chars.len() - 60..].iter().collect());
    PathBuf::from(format!("{head}…{tail}"))
}

/// Files any of which makes a folder an adapter folder (PEFT's, its older pickle included).
pub const ADAPTER_FILES: [&str; 3] = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"];

/// Files any of which makes a folder a model folder (transformers', pickles included).
pub const MODEL_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Whether `dir` holds one of `files`.
pub fn holds_any(dir: &Path, files: &[&str]) -> bool {
    files.iter().any(|f| dir.join(f).exists())
}

/// The file a rename replaces for an output at `path`: the target of a symbolic link (which
/// a rename would otherwise replace), else `path` as given (whose absolute form may be too
/// long to spell out, under a deep working folder).
pub(crate) fn file_behind(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize(),
        _ => Ok(path.to_path_buf()),
    }
}

/// Whether two files' metadata are of one file: the same device and inode.
#[cfg(unix)]
pub(crate) fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}
