//! Host memory for what a file holds, reserved before it is read or converted, so that a
//! file larger than the machine can hold ends in an error naming it, not in an aborted
//! allocation or, on a kernel that over-commits, the out-of-memory killer minutes later.

use std::path::Path;

use crate::error::{Error, Result};

/// Reservations below this size are not compared with the system's free memory.
const CHECK_FROM_BYTES: u64 = 64 << 20;

/// An empty vector with room for `n` values of `T`, for reading `path`: an error naming
/// the file when that is more than the allocator gives or, on Linux, more than the memory
/// the system still has available (`MemAvailable` and `SwapFree` of `/proc/meminfo`; a
/// container's own limit is not seen there).
pub(crate) fn reserve<T>(path: &Path, n: usize) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(size_of::<T>() as u64);
    check_available(path, bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refusal(path, bytes, "more than this machine can hold"))?;
    Ok(v)
}

/// Fails, naming `path`, when reading it needs `bytes` more than the memory the system has
/// available (see [`reserve`]; checked from 64 MiB on).
pub(crate) fn check_available(path: &Path, bytes: u64) -> Result<()> {
    match shortfall(bytes) {
        Some(free) => Err(refusal(path, bytes, &format!("more than the {} this machine has available", gib(free)))),
        None => Ok(()),
    }
}

/// The memory the system has available, when `bytes` (from 64 MiB on) are more than that;
/// `None` when they fit or the system does not say.
pub(crate) fn shortfall(bytes: u64) -> Option<u64> {
    available().filter(|&free| bytes >= CHECK_FROM_BYTES && bytes > free)
}

fn refusal(path: &Path, bytes: u64, why: &str) -> Error {
    Error::Format { path: path.to_path_buf(), message: format!("reading it needs {} of memory, {why}", gib(bytes)) }
}

/// `bytes` in GiB, for messages.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Memory the system could still give this process, in bytes; `None` where it does not say.
fn available() -> Option<u64> {
    if cfg!(target_os = "linux") { available_in(&std::fs::read_to_string("/proc/meminfo").ok()?) } else { None }
}

/// `MemAvailable` plus `SwapFree` of a `/proc/meminfo` text, in bytes.
fn available_in(meminfo: &str) -> Option<u64> {
    let kib = |name: &str| -> Option<u64> {
        let rest = meminfo.lines().find_map(|l| l.strip_prefix(name))?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1024))
    };
    Some(kib("MemAvailable:")?.saturating_add(kib("SwapFree:").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_as_available_memory_and_swap() {
        let text = "MemTotal:       24580328 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n\
                    SwapTotal: 8 kB\nSwapFree:            4 kB\n";
        assert_eq!(available_in(text), Some((20_000_000 + 4) * 1024));
        assert_eq!(available_in("MemAvailable: 3 kB\n"), Some(3072), "no swap line");
        assert_eq!(available_in("MemFree: 3 kB\n"), None, "an old kernel without MemAvailable");
        assert_eq!(available_in("MemAvailable: lots\n"), None);
    }

    #[test]
    fn small_reservations_succeed_and_impossible_ones_name_the_file() {
        let path = Path::new("big.safetensors");
        assert!(reserve::<f32>(path, 1000).expect("small").capacity() >= 1000);
        let e = reserve::<f32>(path, usize::MAX / 4).expect_err("more than any machine");
        let text = e.to_string();
        assert!(text.contains("big.safetensors") && text.contains("GiB of memory"), "{text}");
        assert!(check_available(path, 1 << 20).is_ok(), "small amounts are not compared");
        if cfg!(target_os = "linux") {
            let e = check_available(path, u64::MAX / 2).expect_err("more than any machine has");
            assert!(e.to_string().contains("available"), "{e}");
        }
    }
}
