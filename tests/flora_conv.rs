//! FLoRA on any convolution (`adapters::flora::FloraConv2d`): grouped and depthwise convs
//! against PyTorch (`scripts/fixtures_flora_conv.py`), its initialisation, merge and errors.

mod common;

use common::{Rng, assert_close, fixture, gpu, tol};
use peft_wgpu::adapters::FloraRank;
use peft_wgpu::adapters::flora::FloraConv2d;
use peft_wgpu::ops::conv::{Conv2dSpec, conv2d};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::{Gpu, Tape, Tensor};

fn spec_of(f: &common::Fixture, case: &str) -> Conv2dSpec {
    let s = f.ints(&format!("{case}.spec"));
    Conv2dSpec {
        stride: (s[0] as usize, s[1] as usize),
        padding: (s[2] as usize, s[3] as usize),
        groups: s[4] as usize,
    }
}

fn adapter(gpu: &Gpu, f: &common::Fixture, case: &str) -> FloraConv2d {
    let up = |k: &str| Tensor::from_slice(gpu, &f.f32(k), &f.shape(k)).unwrap();
    let factors = (0..4).map(|i| up(&format!("{case}.factor.{i}"))).collect();
    let scale = f.f64(&format!("{case}.scale"))[0] as f32;
    let weight = up(&format!("{case}.weight"));
    let bias = Some(up(&format!("{case}.bias")));
    FloraConv2d::from_parts(weight, bias, spec_of(f, case), up(&format!("{case}.core")), factors, scale).unwrap()
}

fn check(case: &str) {
    let gpu = gpu();
    let f = fixture("flora_conv_torch.safetensors");
    let flora = adapter(&gpu, &f, case);
    let w = f.shape(&format!("{case}.weight"));
    let groups = spec_of(&f, case).groups;
    let cin = f.shape(&format!("{case}.x"))[1];
    assert_eq!(flora.modes(), [w[0], cin / groups, w[2], w[3]], "{case}: modes are (out, in/groups, kh, kw)");
    let mut tape = Tape::new(&gpu);
    let bound = flora.bind(&mut tape);
    let x =
        tape.param(&Tensor::from_slice(&gpu, &f.f32(&format!("{case}.x")), &f.shape(&format!("{case}.x"))).unwrap());
    let y = flora.forward(&mut tape, &bound, &x).unwrap();
    let k = w[1] * w[2] * w[3];
    assert_close(&format!("{case} y"), &gpu.read(y.value()).unwrap(), &f.f64(&format!("{case}.y")), tol(8.0, k), 1e-6);
    let g_out = f.f32(&format!("{case}.grad_out"));
    let g = tape.constant(&Tensor::from_slice(&gpu, &g_out, y.shape()).unwrap());
    let prod = mul_var(&mut tape, &y, &g).unwrap();
    let loss = sum_var(&mut tape, &prod).unwrap();
    let (core, factors) = (bound.core().clone(), bound.factors().to_vec());
    let grads = tape.backward(&loss).unwrap();
    assert_eq!(grads.len(), 6, "{case}: core, four factors and the input get gradients; the base none");
    let read = |v| gpu.read(grads.get(v).expect("a gradient")).unwrap();
    let n = y.value().len();
    assert_close(&format!("{case} ∂x"), &read(&x), &f.f64(&format!("{case}.grad.x")), tol(8.0, k), 1e-6);
    assert_close(&format!("{case} ∂core"), &read(&core), &f.f64(&format!("{case}.grad.core")), tol(16.0, n), 1e-6);
    for (i, u) in factors.iter().enumerate() {
        let key = format!("{case}.grad.factor.{i}");
        assert_close(&format!("{case} ∂U{}", i + 1), &read(u), &f.f64(&key), tol(16.0, n), 1e-6);
    }
}

#[test]
fn flora_on_a_grouped_strided_padded_conv_matches_pytorch() {
    check("grouped");
}

#[test]
fn flora_on_a_depthwise_conv_matches_pytorch() {
    check("depthwise");
}

#[test]
fn merged_weight_gives_the_adapted_output() {
    let gpu = gpu();
    let f = fixture("flora_conv_torch.safetensors");
    for case in ["grouped", "depthwise"] {
        let flora = adapter(&gpu, &f, case);
        let merged = flora.merged_weight(&gpu).unwrap();
        let w = Tensor::from_slice(&gpu, &merged.data, &merged.shape).unwrap();
        let x = Tensor::from_slice(&gpu, &f.f32(&format!("{case}.x")), &f.shape(&format!("{case}.x"))).unwrap();
        let y = conv2d(&gpu, &x, &w, flora.bias(), flora.spec()).unwrap();
        let k: usize = merged.shape[1..].iter().product();
        assert_close(
            &format!("{case} merged"),
            &gpu.read(&y).unwrap(),
            &f.f64(&format!("{case}.y")),
            tol(8.0, k),
            1e-6,
        );
    }
}

#[test]
fn fresh_adapter_is_the_base_conv_and_draws_its_factors() {
    let gpu = gpu();
    let mut rng = Rng::new(81);
    // Depthwise with two outputs per channel: modes (6, 1, 3, 3).
    let (w_data, x_data) = (rng.normal_vec(6 * 9, 0.0, 0.5), rng.normal_vec(2 * 3 * 5 * 5, 0.0, 1.0));
    let weight = Tensor::from_slice(&gpu, &w_data, &[6, 1, 3, 3]).unwrap();
    let spec = Conv2dSpec::new().padding(1).groups(3);
    let mut init = Rng::new(5);
    let flora = FloraConv2d::new(&gpu, weight.clone(), None, spec, &FloraRank::Uniform(2), 0.5, &mut init).unwrap();
    assert_eq!(flora.modes(), [6, 1, 3, 3]);
    assert_eq!(flora.ranks(), [2, 1, 2, 2], "r_i = min(r, d_i)");
    let trainable = flora.trainable();
    assert_eq!(trainable.len(), 5);
    assert!(gpu.read(&trainable[0]).unwrap().iter().all(|&v| v == 0.0), "the core starts at zero");
    // The factors come from the generator in mode order with std √(1/(2 r_i)).
    let mut again = Rng::new(5);
    for (u, (&d, &r)) in trainable[1..].iter().zip(flora.modes().iter().zip(flora.ranks())) {
        let want = again.normal_vec(d * r, 0.0, (0.5 / r as f64).sqrt());
        assert_eq!(gpu.read(u).unwrap(), want, "factor [{d}, {r}]");
    }
    // With G = 0 the output is exactly the base conv's.
    let x = Tensor::from_slice(&gpu, &x_data, &[2, 3, 5, 5]).unwrap();
    let mut tape = Tape::new(&gpu);
    let bound = flora.bind(&mut tape);
    let vx = tape.constant(&x);
    let y = flora.forward(&mut tape, &bound, &vx).unwrap();
    let base = conv2d(&gpu, &x, &weight, None, spec).unwrap();
    assert_eq!(gpu.read(y.value()).unwrap(), gpu.read(&base).unwrap());
}

#[test]
fn bad_parts_are_errors() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let w = || t(&[4, 2, 3, 3]);
    let factors = |r: usize| vec![t(&[4, r]), t(&[2, r]), t(&[3, r]), t(&[3, r])];
    let spec = Conv2dSpec::new().groups(2);
    assert!(FloraConv2d::from_parts(w(), None, spec, t(&[2, 2, 2, 2]), factors(2), 1.0).is_ok());
    let wrong_factor = vec![t(&[4, 2]), t(&[4, 2]), t(&[3, 2]), t(&[3, 2])];
    assert!(
        FloraConv2d::from_parts(w(), None, spec, t(&[2, 2, 2, 2]), wrong_factor, 1.0).is_err(),
        "mode 2 is in/groups"
    );
    assert!(FloraConv2d::from_parts(w(), None, spec, t(&[2, 2, 2]), factors(2), 1.0).is_err(), "3-mode core");
    assert!(FloraConv2d::from_parts(t(&[4, 6]), None, spec, t(&[2, 2]), factors(2), 1.0).is_err(), "2-D weight");
    assert!(FloraConv2d::from_parts(w(), Some(t(&[3])), spec, t(&[2, 2, 2, 2]), factors(2), 1.0).is_err(), "bias");
    assert!(FloraConv2d::from_parts(w(), None, spec.groups(3), t(&[2, 2, 2, 2]), factors(2), 1.0).is_err());
    let mut rng = Rng::new(1);
    let ranks = FloraRank::PerMode(vec![2, 2, 2]);
    assert!(FloraConv2d::new(&gpu, w(), None, spec, &ranks, 1.0, &mut rng).is_err(), "three ranks for four modes");
    // The input must have groups · (in/groups) channels: 4 here, not 2.
    let flora = FloraConv2d::from_parts(w(), None, spec, t(&[2, 2, 2, 2]), factors(2), 1.0).unwrap();
    let mut tape = Tape::new(&gpu);
    let bound = flora.bind(&mut tape);
    let x = tape.constant(&t(&[1, 2, 5, 5]));
    assert!(flora.forward(&mut tape, &bound, &x).is_err());
    // Another layer's tensors of the same shapes are refused, not computed with.
    let other = FloraConv2d::from_parts(w(), None, spec, t(&[2, 2, 2, 2]), factors(2), 1.0).unwrap();
    let theirs = other.bind(&mut tape);
    let x = tape.constant(&t(&[1, 4, 5, 5]));
    assert!(flora.forward(&mut tape, &bound, &x).is_ok());
    let e = flora.forward(&mut tape, &theirs, &x).expect_err("another layer's tensors");
    assert!(e.to_string().contains("bound from another layer"), "{e}");
    // Every tensor is f32; the base weight and bias are the device's own.
    let ints = Tensor::from_u32(&gpu, &[0; 4 * 2 * 3 * 3], &[4, 2, 3, 3]).unwrap();
    let e = FloraConv2d::from_parts(ints, None, spec, t(&[2, 2, 2, 2]), factors(2), 1.0).expect_err("a u32 weight");
    assert!(e.to_string().contains("f32"), "{e}");
    let elsewhere = Gpu::new().unwrap();
    let foreign = Tensor::zeros(&elsewhere, &[4, 2, 3, 3]).unwrap();
    assert!(
        FloraConv2d::new(&gpu, foreign, None, spec, &FloraRank::Uniform(2), 1.0, &mut rng).is_err(),
        "another device"
    );
}

/// Per-mode ranks may exceed their modes' sizes (a list in the config is taken as given).
/// `ΔW` then comes out the same, on the tape and merged on the host, as the SPEC's sum over
/// the core, and neither builds an intermediate larger than the core or `ΔW` (the modes
/// whose rank exceeds their size are multiplied first).
#[test]
fn ranks_above_the_modes_sizes_give_the_specs_delta() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    let (modes, ranks) = ([4usize, 2, 3, 3], [5usize, 3, 2, 4]);
    let w_data = rng.normal_vec(modes.iter().product(), 0.0, 0.5);
    let g_data = rng.normal_vec(ranks.iter().product(), 0.0, 1.0);
    let u_data: Vec<Vec<f32>> = modes.iter().zip(&ranks).map(|(&d, &r)| rng.normal_vec(d * r, 0.0, 1.0)).collect();
    let scale = 0.75f32;
    let mut want = vec![0.0f64; modes.iter().product()];
    for (i, slot) in want.iter_mut().enumerate() {
        let (o, c, p, q) = (i / 18, i / 9 % 2, i / 3 % 3, i % 3);
        let mut sum = 0.0;
        for (j, &g) in g_data.iter().enumerate() {
            let (a, b, cc, e) = (j / 24, j / 8 % 3, j / 4 % 2, j % 4);
            let u = |m: usize, row: usize, col: usize| f64::from(u_data[m][row * ranks[m] + col]);
            sum += f64::from(g) * u(0, o, a) * u(1, c, b) * u(2, p, cc) * u(3, q, e);
        }
        *slot = f64::from(w_data[i]) + f64::from(scale) * sum;
    }
    let up = |v: &[f32], shape: &[usize]| Tensor::from_slice(&gpu, v, shape).unwrap();
    let factors: Vec<Tensor> = (0..4).map(|m| up(&u_data[m], &[modes[m], ranks[m]])).collect();
    let weight = up(&w_data, &modes);
    let spec = Conv2dSpec::new().padding(1);
    let flora = FloraConv2d::from_parts(weight.clone(), None, spec, up(&g_data, &ranks), factors, scale).unwrap();
    assert_eq!(flora.ranks(), ranks);
    let merged = flora.merged_weight(&gpu).unwrap();
    assert_close("merged with ranks above sizes", &merged.data, &want, tol(16.0, g_data.len()), 1e-6);
    let mut tape = Tape::new(&gpu);
    let bound = flora.bind(&mut tape);
    let delta = peft_wgpu::adapters::flora::flora_delta_var(&mut tape, bound.core(), bound.factors(), scale).unwrap();
    let base = gpu.read(&weight).unwrap();
    let on_tape: Vec<f32> = gpu.read(delta.value()).unwrap().iter().zip(&base).map(|(d, w)| d + w).collect();
    assert_close("ΔW on the tape with ranks above sizes", &on_tape, &want, tol(16.0, g_data.len()), 1e-6);
}

/// The modes whose rank exceeds their size are multiplied first: with modes (64, 64, 1, 1)
/// and ranks (1, 1, 64, 64), the modes' order would pass through a 64⁴ tensor (64 MiB), this
/// order through nothing larger than the core or `ΔW` (4,096 values each).
#[test]
fn ranks_above_sizes_never_build_an_intermediate_larger_than_the_core_or_the_delta() {
    let gpu = Gpu::new().expect("a device of this test's own, for its peak memory");
    let mut rng = Rng::new(29);
    let (modes, ranks) = ([64usize, 64, 1, 1], [1usize, 1, 64, 64]);
    let g_data = rng.normal_vec(4096, 0.0, 1.0);
    let u_data: Vec<Vec<f32>> = modes.iter().zip(&ranks).map(|(&d, &r)| rng.normal_vec(d * r, 0.0, 1.0)).collect();
    let up = |v: &[f32], shape: &[usize]| Tensor::from_slice(&gpu, v, shape).unwrap();
    let factors: Vec<Tensor> = (0..4).map(|m| up(&u_data[m], &[modes[m], ranks[m]])).collect();
    let spec = Conv2dSpec::new();
    let flora =
        FloraConv2d::from_parts(Tensor::zeros(&gpu, &modes).unwrap(), None, spec, up(&g_data, &ranks), factors, 1.0)
            .unwrap();
    gpu.sync().unwrap();
    gpu.reset_peak_memory();
    let before = gpu.memory().live_bytes;
    let mut tape = Tape::new(&gpu);
    let bound = flora.bind(&mut tape);
    let delta = peft_wgpu::adapters::flora::flora_delta_var(&mut tape, bound.core(), bound.factors(), 1.0).unwrap();
    let got = gpu.read(delta.value()).unwrap();
    let grew = gpu.memory().peak_bytes - before;
    assert!(grew < 1 << 20, "ΔW of 16 KiB took {grew} bytes more on the device");
    // ΔW[o, i] = Σ_{c,e} G[0, 0, c, e] U₁[o, 0] U₂[i, 0] U₃[0, c] U₄[0, e].
    let inner: f64 =
        (0..4096).map(|j| f64::from(g_data[j]) * f64::from(u_data[2][j / 64]) * f64::from(u_data[3][j % 64])).sum();
    let want: Vec<f64> =
        (0..4096).map(|i| f64::from(u_data[0][i / 64]) * f64::from(u_data[1][i % 64]) * inner).collect();
    assert_close("ΔW with ranks above sizes", &got, &want, tol(16.0, 4096), 1e-6);
    let merged = flora.merged_weight(&gpu).unwrap();
    assert_close("merged with ranks above sizes", &merged.data, &want, tol(16.0, 4096), 1e-6);
}
