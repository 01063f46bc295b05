//! Tests of the atomic writes.

use super::*;

/// A fresh scratch folder for test `name` (the lock tests use it too).
pub(super) fn temp_dir(name: &str) -> PathBuf {
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

/// A file replaced keeps its permissions: a private file stays private.
#[cfg(unix)]
#[test]
fn a_replaced_file_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("mode");
    let (private, new) = (dir.join("private.bin"), dir.join("new.bin"));
    std::fs::write(&private, b"old").expect("seed");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    write_all(&[(private.clone(), b"new".to_vec()), (new, b"x".to_vec())]).expect("write");
    assert_eq!(std::fs::read(&private).expect("read"), b"new");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    std::fs::remove_dir_all(&dir).ok();
}
