//! The GPU layout of the MoPPA filter (`spectral_tile`) against its twin, on grids up to
//! 16 × 16, partial channel tiles, prefixes and batches; and its backward pieces.

mod common;

use common::{Rng, assert_close, f64s, gpu, tol};
use peft_wgpu::Tensor;
use peft_wgpu::ops::dct::GridPlan;
use peft_wgpu::ops::spectral::{self, FilterPath};
use peft_wgpu::ops::spectral_tile;
use peft_wgpu::reference::spectral as reference;

#[test]
fn spectral_tile_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for &(b, prefix, gh, gw, c) in &[
        (1, 0, 1, 1, 1),
        (2, 1, 4, 4, 16),
        (3, 2, 7, 9, 17),
        (2, 1, 14, 14, 40),
        (2, 1, 14, 14, 7),
        (1, 0, 16, 16, 33),
        (2, 3, 13, 2, 5),
    ] {
        let t = prefix + gh * gw;
        let dims = [b, t, c];
        let x = rng.normal_vec(b * t * c, 0.0, 1.0);
        let r = rng.normal_vec(gh * gw * c, 0.0, 1.0);
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let tx = Tensor::from_slice(&gpu, &x, &[b, t, c]).unwrap();
        let tr = Tensor::from_slice(&gpu, &r, &[gh, gw, c]).unwrap();
        let what = format!("B{b} prefix {prefix} {gh}×{gw} C{c}");
        let got = gpu.read(&spectral_tile::filter(&gpu, &plan, &tx, &tr).unwrap()).unwrap();
        let want = reference::spectral_tile(&f64s(&x), dims, gh, gw, &f64s(&r), 0);
        assert_close(&format!("filter {what}"), &got, &want, tol(8.0, gh * gw), 1e-7);
        let got = gpu.read(&spectral_tile::spectrum(&gpu, &plan, &tx).unwrap()).unwrap();
        let want = reference::spectral_tile(&f64s(&x), dims, gh, gw, &[], 1);
        assert_close(&format!("spectrum {what}"), &got, &want, tol(8.0, gh * gw), 1e-7);
    }
}

#[test]
fn spectral_tile_refuses_large_grids() {
    let gpu = gpu();
    let plan = GridPlan::new(&gpu, 17, 4).unwrap();
    let x = Tensor::zeros(&gpu, &[1, 68, 4]).unwrap();
    let r = Tensor::zeros(&gpu, &[17, 4, 4]).unwrap();
    assert!(spectral_tile::filter(&gpu, &plan, &x, &r).is_err());
}

#[test]
fn spectral_tile_backward_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &(b, prefix, gh, gw, c) in &[(1, 0, 3, 5, 4), (3, 1, 14, 14, 20), (2, 1, 14, 14, 9), (2, 2, 16, 9, 7)] {
        let t = prefix + gh * gw;
        let dims = [b, t, c];
        let x = rng.normal_vec(b * t * c, 0.0, 1.0);
        let dy = rng.normal_vec(b * t * c, 0.0, 1.0);
        let r = rng.normal_vec(gh * gw * c, 0.0, 1.0);
        let plan = GridPlan::new(&gpu, gh, gw).unwrap();
        let up = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
        let (dx, dr) =
            spectral_tile::filter_grads(&gpu, &plan, &up(&x, &[b, t, c]), &up(&r, &[gh, gw, c]), &up(&dy, &[b, t, c]))
                .unwrap();
        let (want_dx, want_dr) = reference::moppa_filter_grads(&f64s(&x), dims, gh, gw, &f64s(&r), &f64s(&dy));
        let what = format!("B{b} prefix {prefix} {gh}×{gw} C{c}");
        assert_close(&format!("∂x {what}"), &gpu.read(&dx).unwrap(), &want_dx, tol(8.0, gh * gw), 1e-7);
        assert_close(&format!("∂r {what}"), &gpu.read(&dr).unwrap(), &want_dr, tol(8.0, b * gh * gw), 1e-7);
    }
}

#[test]
fn tile_path_of_the_filter_agrees_with_the_unfused_path() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    for &(b, prefix, g, c) in &[(2, 1, 14, 24), (1, 0, 5, 3)] {
        let t = prefix + g * g;
        let plan = GridPlan::new(&gpu, g, g).unwrap();
        let up = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
        let x = up(&rng.normal_vec(b * t * c, 0.0, 1.0), &[b, t, c]);
        let dy = up(&rng.normal_vec(b * t * c, 0.0, 1.0), &[b, t, c]);
        let r = up(&rng.normal_vec(g * g * c, 0.0, 1.0), &[g, g, c]);
        let run = |path| {
            let y = spectral::moppa_filter_with(&gpu, &plan, &x, &r, path).unwrap();
            let (dx, dr) = spectral::moppa_filter_grads(&gpu, &plan, &x, Some(&r), &dy, path).unwrap();
            let (none, dr_alone) = spectral::moppa_filter_grads(&gpu, &plan, &x, None, &dy, path).unwrap();
            assert!(none.is_none(), "∂x computed without r");
            [y, dx.unwrap(), dr, dr_alone].map(|t| gpu.read(&t).unwrap())
        };
        let (tile, unfused) = (run(FilterPath::Tile), run(FilterPath::Unfused));
        for (name, (a, b)) in ["y", "∂x", "∂r", "∂r alone"].iter().zip(tile.iter().zip(&unfused)) {
            assert_close(
                &format!("tile vs unfused {name} prefix {prefix} {g}×{g} C{c}"),
                a,
                &f64s(b),
                tol(8.0, g * g),
                1e-6,
            );
        }
    }
}
