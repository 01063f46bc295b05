//! Host memory for what a file holds, reserved before it is read or converted, so that a
//! file larger than the machine can hold ends in an error naming it, not in an aborted
//! allocation or, on a kernel that over-commits, the out-of-memory killer minutes later.

use std::path::Path;

use crate::error::{Error, Result};

/// Reservations below this size are not compared with the system's free memory.
const CHECK_FROM_BYTES: u64 = 64 << 20;

/// An empty vector with room for `n` values of `T`, for reading `path`: an error naming
/// the file when that is more than the allocator gives or, on Linux, more than the memory
/// still available (`MemAvailable` and `SwapFree`, within the cgroup's limit if any).
pub(crate) fn reserve<T>(path: &Path, n: usize) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(size_of::<T>() as u64);
    let refuse = |why: String| Error::Format {
        path: path.to_path_buf(),
        message: format!("reading it needs {bytes} bytes of memory, {why}"),
    };
    if bytes >= CHECK_FROM_BYTES
        && let Some(free) = available()
        && bytes > free
    {
        return Err(refuse(format!("more than the {free} bytes this machine has available")));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refuse("more than this machine can hold".into()))?;
    Ok(v)
}

/// Memory this process could still get, in bytes; `None` where the system does not say.
fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| -> Option<u64> {
        let rest = meminfo.lines().find_map(|l| l.strip_prefix(name))?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1024))
    };
    let system = kib("MemAvailable:")?.saturating_add(kib("SwapFree:").unwrap_or(0));
    // cgroup v2: the group's limit less what it uses ("max" where there is none).
    let read = |f: &str| std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(f)).ok();
    let group = read("memory.max")
        .and_then(|m| m.trim().parse::<u64>().ok())
        .map(|max| max.saturating_sub(read("memory.current").and_then(|c| c.trim().parse().ok()).unwrap_or(0)));
    Some(group.map_or(system, |g| g.min(system)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reservations_succeed_and_impossible_ones_name_the_file() {
        let path = Path::new("big.safetensors");
        assert!(reserve::<f32>(path, 1000).expect("small").capacity() >= 1000);
        let e = reserve::<f32>(path, usize::MAX / 4).expect_err("more than any machine");
        let text = e.to_string();
        assert!(text.contains("big.safetensors") && text.contains("bytes of memory"), "{text}");
    }
}
