//! Device buffers recycled by size class, with a count of live and peak bytes.
//!
//! A training step frees and asks for buffers of the same sizes every time, so after the
//! first step nothing is allocated. Buffers are rounded up to a size class (four classes per
//! power of two) so near sizes share buffers without wasting more than a quarter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{MemoryStats, lock};

/// Usage of every pooled buffer: bound as storage, copied to and from.
pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    live_bytes: u64,
    peak_bytes: u64,
    pooled_bytes: u64,
}

/// The size class holding `bytes`: at least 16 bytes, then four steps per power of two.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    if bytes <= 64 {
        return bytes.next_multiple_of(16);
    }
    let step = (1u64 << (63 - bytes.leading_zeros())) / 4;
    bytes.next_multiple_of(step)
}

impl Pool {
    /// Takes a free buffer of `class` bytes, if any, and counts it live.
    pub(crate) fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&class)?.pop()?;
        self.pooled_bytes -= class;
        self.count_live(class);
        Some(buffer)
    }

    /// Counts a freshly created buffer of `class` bytes live.
    pub(crate) fn count_live(&mut self, class: u64) {
        self.live_bytes += class;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
    }

    fn give_back(&mut self, class: u64, buffer: wgpu::Buffer) {
        self.live_bytes -= class;
        self.pooled_bytes += class;
        self.free.entry(class).or_default().push(buffer);
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats { live_bytes: self.live_bytes, peak_bytes: self.peak_bytes, pooled_bytes: self.pooled_bytes }
    }

    pub(crate) fn reset_peak(&mut self) {
        self.peak_bytes = self.live_bytes;
    }

    /// Drops the free buffers. Dropped, not destroyed: work recorded but not yet submitted
    /// may still use one (a tensor freed after its last use was recorded), and wgpu keeps it
    /// until that work is done.
    pub(crate) fn trim(&mut self) {
        self.free.clear();
        self.pooled_bytes = 0;
    }
}

/// A device buffer that returns to its pool when the last tensor using it drops.
pub(crate) struct PooledBuffer {
    raw: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Mutex<Pool>>,
    /// How many times the contents were changed in place (by an optimizer), so a tape that
    /// saved the buffer can tell its saved values are stale.
    version: std::sync::atomic::AtomicU64,
}

impl PooledBuffer {
    pub(crate) fn new(raw: wgpu::Buffer, class: u64, pool: Arc<Mutex<Pool>>) -> Self {
        PooledBuffer { raw: Some(raw), class, pool, version: 0.into() }
    }

    /// See the `version` field.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the contents as changed in place.
    pub(crate) fn bump_version(&self) {
        self.version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.raw.as_ref().expect("a pooled buffer is only emptied by its own drop")
    }

    /// Whether this buffer came from `pool` (and so lives on that pool's device).
    pub(crate) fn is_from(&self, pool: &Arc<Mutex<Pool>>) -> bool {
        Arc::ptr_eq(&self.pool, pool)
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            lock(&self.pool).give_back(self.class, raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_and_waste_at_most_a_quarter() {
        for bytes in (1..5000u64).chain([1 << 20, (1 << 20) + 1, 123_456_789]) {
            let class = size_class(bytes);
            assert!(class >= bytes, "class {class} below {bytes}");
            assert!(class <= (bytes.max(16) * 5).div_ceil(4) + 16, "class {class} wastes too much on {bytes}");
            assert_eq!(class % 4, 0);
        }
    }
}
