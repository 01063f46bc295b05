//! Tests of the recorder's dispatch grids: refused past the device's limits, folded within them.

use super::*;
use crate::ops::elementwise::EwParams;

#[test]
fn grids_beyond_the_device_are_refused_before_recording() {
    let gpu = Gpu::new().expect("GPU tests need a wgpu adapter; on headless Linux install mesa-vulkan-drivers");
    let t = Tensor::zeros(&gpu, &[4]).expect("tensor");
    let params = EwParams { n: 4, alpha: 7.0, ..Default::default() };
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    let before = gpu.dispatch_count();
    for grid in [[max + 1, 1, 1], [1, max + 1, 1], [1, 1, max + 1], [u32::MAX, u32::MAX, u32::MAX]] {
        let e = gpu.dispatch(Kernel::Fill, &[], &[&t], &params, grid).expect_err("too many workgroups");
        assert!(matches!(e, Error::TooManyWorkgroups { max: m, .. } if m == max), "{e}");
        assert!(e.to_string().contains("max_compute_workgroups_per_dimension"), "{e}");
        assert!(e.to_string().contains("fill"), "{e}");
    }
    assert_eq!(gpu.dispatch_count(), before, "a refused dispatch was recorded");
    // An empty grid records nothing; the tensor keeps its zeros.
    gpu.dispatch(Kernel::Fill, &[], &[&t], &params, [0, 1, 1]).expect("empty grid");
    assert_eq!(gpu.read(&t).expect("read"), vec![0.0; 4]);
}

#[test]
fn one_dimensional_grids_fold_within_the_limit() {
    let gpu = Gpu::new().expect("GPU tests need a wgpu adapter; on headless Linux install mesa-vulkan-drivers");
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    // Every count a tensor can hold folds into a legal grid whose last invocation's index
    // (gid.x + gid.y·nwg.x·256) is below 2³², so none wraps onto the first elements.
    let most = (crate::gpu::MAX_TENSOR_BYTES / 4) as usize;
    let wide = (max as usize) * 256;
    for threads in [1, 255, 256, 257, wide, wide + 1, 3 * wide - 1, most - wide + 1, most - 1, most] {
        let [x, y, z] = gpu.grid_1d(threads, WG_1D);
        assert!(x <= max && y <= max && z == 1, "{threads} threads: grid {x}×{y}×{z}");
        let covered = u64::from(x) * u64::from(y) * 256;
        assert!(covered >= threads as u64, "{threads} threads: grid too small");
        assert!(covered <= 1 << 32, "{threads} threads: grid {x}×{y} indexes past 2³²");
        assert!(covered - (threads as u64) < u64::from(x) * 256, "{threads} threads: a whole row is idle");
    }
}
