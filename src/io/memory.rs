//! Host memory for what a file holds, reserved before it is read or converted, so that a
//! file larger than the machine can hold ends in an error naming it, not in an aborted
//! allocation or, on a kernel that over-commits, the out-of-memory killer minutes later.

use std::path::Path;

use crate::error::{Error, Result};

/// Reservations below this size are not compared with the system's free memory.
const CHECK_FROM_BYTES: u64 = 64 << 20;

/// An empty vector with room for `n` values of `T`, for reading `path`: an error naming
/// the file when that is more than the allocator gives or, on Linux, more than the memory
/// still available ([`shortfall`]).
pub(crate) fn reserve<T>(path: &Path, n: usize) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(size_of::<T>() as u64);
    check_available(path, bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refusal(path, bytes, "more than the system gives this process"))?;
    Ok(v)
}

/// Fails, naming `path`, when reading it needs `bytes` more than the memory still available
/// (see [`shortfall`]; checked from 64 MiB on).
pub(crate) fn check_available(path: &Path, bytes: u64) -> Result<()> {
    match shortfall(bytes) {
        Some(free) => Err(refusal(path, bytes, &format!("more than the {} this process can still get", gib(free)))),
        None => Ok(()),
    }
}

/// The memory still available, when `bytes` (from 64 MiB on) are more than that; `None`
/// when they fit or the system does not say. On Linux that is `MemAvailable` plus `SwapFree`
/// of `/proc/meminfo`, or less where the memory limit of a control group this process is in
/// (a container's, say) leaves less.
pub(crate) fn shortfall(bytes: u64) -> Option<u64> {
    available().filter(|&free| bytes >= CHECK_FROM_BYTES && bytes > free)
}

/// Host memory for allocations that add up (a new adapter's tensors, made one by one): their
/// running total is compared with the memory available when it first reached 64 MiB (read
/// once: what is left later excludes what was allocated since, which the total counts).
#[derive(Default)]
pub(crate) struct Budget {
    free: Option<Option<u64>>,
}

impl Budget {
    /// [`shortfall`] of a running total of `bytes`.
    pub(crate) fn shortfall(&mut self, bytes: u64) -> Option<u64> {
        if bytes < CHECK_FROM_BYTES {
            return None;
        }
        self.free.get_or_insert_with(available).filter(|&free| bytes > free)
    }
}

/// Fails, naming `path`, when reading `read` bytes of files (`what`: "it" or "its shards";
/// 0 bytes: already read) and holding their tensors as `converted` bytes of f32 need more
/// than the memory still available (see [`shortfall`]).
pub(crate) fn check_loadable(path: &Path, what: &str, read: u64, converted: u64) -> Result<()> {
    let bytes = read.saturating_add(converted);
    let Some(free) = shortfall(bytes) else { return Ok(()) };
    let need = match read {
        0 => format!("its tensors in f32 need {}", gib(converted)),
        _ => format!("reading {what} ({}) and its tensors in f32 ({}) need {}", gib(read), gib(converted), gib(bytes)),
    };
    let message = format!("{need} of memory, more than the {} this process can still get", gib(free));
    Err(Error::Format { path: path.to_path_buf(), message })
}

fn refusal(path: &Path, bytes: u64, why: &str) -> Error {
    Error::Format { path: path.to_path_buf(), message: format!("reading it needs {} of memory, {why}", gib(bytes)) }
}

/// `bytes` in GiB, for messages.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Memory the system could still give this process, in bytes; `None` where it does not say.
fn available() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let system = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| available_in(&m));
    let own = std::fs::read_to_string("/proc/self/cgroup").ok();
    let limited = own.and_then(|own| cgroup_headroom(Path::new("/sys/fs/cgroup"), &own));
    let mappable = address_space_headroom();
    [system, limited, mappable].into_iter().flatten().min()
}

/// What this process may still map under its address-space limit (`ulimit -v`,
/// `RLIMIT_AS`): the limit less what it maps now (`VmSize`); `None` without a limit.
fn address_space_headroom() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    address_space_headroom_in(&limits, &status)
}

/// [`address_space_headroom`] from the texts of `/proc/self/limits` and `/proc/self/status`.
fn address_space_headroom_in(limits: &str, status: &str) -> Option<u64> {
    const FIELD: &str = "Max address space";
    let line = limits.lines().find(|l| l.starts_with(FIELD))?;
    let limit: u64 = line[FIELD.len()..].split_whitespace().next()?.parse().ok()?;
    let mapped = status.lines().find_map(|l| l.strip_prefix("VmSize:"))?;
    let kib: u64 = mapped.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(limit.saturating_sub(kib.saturating_mul(1024)))
}

/// `MemAvailable` plus `SwapFree` of a `/proc/meminfo` text, in bytes.
fn available_in(meminfo: &str) -> Option<u64> {
    let kib = |name: &str| -> Option<u64> {
        let rest = meminfo.lines().find_map(|l| l.strip_prefix(name))?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1024))
    };
    Some(kib("MemAvailable:")?.saturating_add(kib("SwapFree:").unwrap_or(0)))
}

/// The files of a memory control group: its limit, its usage, and the `memory.stat` key of
/// its inactive file cache (which the kernel reclaims before it kills).
struct CgroupFiles {
    limit: &'static str,
    usage: &'static str,
    inactive: &'static str,
}

const CGROUP_V2: CgroupFiles = CgroupFiles { limit: "memory.max", usage: "memory.current", inactive: "inactive_file" };
const CGROUP_V1: CgroupFiles =
    CgroupFiles { limit: "memory.limit_in_bytes", usage: "memory.usage_in_bytes", inactive: "total_inactive_file" };

/// The least room any memory limit leaves, over the control groups this process is in and
/// their ancestors, under the cgroup mount `root` (`/sys/fs/cgroup`); `own` is the text of
/// `/proc/self/cgroup`. Version 2 groups are under `root` itself (or `root/unified` on hybrid
/// systems), version 1 memory groups under `root/memory`; a container that sees only its
/// own group finds it at the mount's top. `None` when no limit is set or none is visible.
fn cgroup_headroom(root: &Path, own: &str) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (mounts, files) = match controllers {
            "" => (vec![root.to_path_buf(), root.join("unified")], &CGROUP_V2),
            c if c.split(',').any(|c| c == "memory") => (vec![root.join("memory")], &CGROUP_V1),
            _ => continue,
        };
        for mount in mounts {
            // The group and its ancestors, up to the mount's top.
            let mut dir = Some(Path::new(path.trim_start_matches('/')));
            while let Some(rel) = dir {
                if let Some(room) = group_headroom(&mount.join(rel), files) {
                    least = Some(least.map_or(room, |l| l.min(room)));
                }
                dir = rel.parent();
            }
        }
    }
    least
}

/// Room under the memory limit of the group at `dir`: the limit less what the group uses,
/// not counting its inactive file cache; `None` without a limit or without the files.
fn group_headroom(dir: &Path, files: &CgroupFiles) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    // "max" (version 2) does not parse; version 1 writes "no limit" as about 2^63.
    let limit = read(files.limit)?.trim().parse::<u64>().ok().filter(|&l| l < 1 << 62)?;
    let usage = read(files.usage)?.trim().parse::<u64>().ok()?;
    let stat = read("memory.stat").unwrap_or_default();
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix(files.inactive)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(inactive)))
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
        // `ulimit -v`: the limit less what the process maps.
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         6144000000           unlimited            bytes\n";
        let status = "Name:\tpeft-wgpu\nVmPeak:\t  200000 kB\nVmSize:\t  100000 kB\n";
        assert_eq!(address_space_headroom_in(limits, status), Some(6_144_000_000 - 102_400_000));
        let unlimited = limits.replace("6144000000           unlimited", "unlimited            unlimited");
        assert_eq!(address_space_headroom_in(&unlimited, status), None);
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
            assert!(e.to_string().contains("this process can still get"), "{e}");
        }
    }

    /// Writes `files` (name, contents) into `dir`, making it first.
    fn group(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("group folder");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("group file");
        }
    }

    #[test]
    fn control_group_limits_are_read_for_both_versions_and_all_ancestors() {
        let root = std::env::temp_dir().join(format!("peft-wgpu-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        const MIB: u64 = 1 << 20;
        // Version 1: the process's group has no limit, its parent 1000 MiB with 300 MiB used,
        // 100 MiB of that inactive file cache; the mount's top has no limit either.
        let v1 = root.join("memory");
        let unlimited = [("memory.limit_in_bytes", "9223372036854771712\n"), ("memory.usage_in_bytes", "5\n")];
        group(&v1, &unlimited);
        group(
            &v1.join("jobs"),
            &[
                ("memory.limit_in_bytes", "1048576000\n"),
                ("memory.usage_in_bytes", "314572800\n"),
                ("memory.stat", "cache 1\ninactive_file 7\ntotal_inactive_file 104857600\n"),
            ],
        );
        group(&v1.join("jobs/one"), &unlimited);
        let own = "4:memory:/jobs/one\n3:cpu,cpuacct:/elsewhere\n";
        assert_eq!(cgroup_headroom(&root, own), Some(800 * MIB), "the parent's room, cache not counted");
        // Version 2 beside it, tighter: 64 MiB left.
        group(
            &root.join("svc"),
            &[("memory.max", "134217728\n"), ("memory.current", "67108864\n"), ("memory.stat", "anon 1\n")],
        );
        assert_eq!(cgroup_headroom(&root, &format!("{own}0::/svc\n")), Some(64 * MIB));
        // "max" is no limit; a group over its limit has no room; a group not mounted is skipped.
        group(&root.join("free"), &[("memory.max", "max\n"), ("memory.current", "1\n")]);
        assert_eq!(cgroup_headroom(&root, "0::/free\n"), None);
        group(&root.join("full"), &[("memory.max", "100\n"), ("memory.current", "200\n")]);
        assert_eq!(cgroup_headroom(&root, "0::/full\n"), Some(0));
        assert_eq!(cgroup_headroom(&root, "0::/not/mounted\n5:memory:/gone\n"), None);
        // On a hybrid system the version 2 tree is under `unified`.
        group(&root.join("unified/app"), &[("memory.max", "2048\n"), ("memory.current", "1024\n")]);
        assert_eq!(cgroup_headroom(&root, "0::/app\n"), Some(1024));
        std::fs::remove_dir_all(&root).ok();
    }
}
