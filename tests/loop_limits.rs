//! lavapipe ends a shader invocation's loops after 65,535 iterations in all, without a word
//! (`Gpu::loop_limit`): ops whose loops grow with a shape refuse a shape past it there with
//! `Error::TooLong`, instead of returning a partial sum (each of these came back wrong), and
//! compute it on adapters without the limit. Shapes are the smallest past it.

mod common;

use common::gpu;
use peft_wgpu::ops::attention::attention;
use peft_wgpu::ops::conv::{Conv2dSpec, conv2d};
use peft_wgpu::ops::dct::GridPlan;
use peft_wgpu::ops::loss::cross_entropy;
use peft_wgpu::ops::priors::prior_response_grads;
use peft_wgpu::ops::softmax::softmax;
use peft_wgpu::ops::spectral::{FilterPath, moppa_filter, moppa_filter_grads};
use peft_wgpu::{Error, Gpu, Result, Tensor};

/// On an adapter with a loop limit: `result` is `Error::TooLong` naming `what`; without one,
/// it is a result.
fn refused_where_loops_stop<T>(gpu: &Gpu, what: &str, result: Result<T>) {
    match (gpu.loop_limit(), result) {
        (Some(max), Err(e @ Error::TooLong { .. })) => {
            let text = e.to_string();
            assert!(text.contains(what) && text.contains(&max.to_string()), "{text}");
        }
        (Some(_), Err(e)) => panic!("{what}: expected a loop-limit error, got {e}"),
        (Some(_), Ok(_)) => panic!("{what}: computed past the adapter's loop limit"),
        (None, Err(e)) => panic!("{what}: {e}"),
        (None, Ok(_)) => {}
    }
}

#[test]
fn long_rows_are_refused_where_loops_stop() {
    let gpu = gpu();
    // Softmax over one row of 6,000,000 summed to 0.795; cross-entropy over 9,000,000 equal
    // classes gave 11.01 for ln 9e6 = 16.01.
    let row = Tensor::zeros(&gpu, &[1, 6_000_000]).unwrap();
    refused_where_loops_stop(&gpu, "softmax over rows of 6000000", softmax(&gpu, &row, 1.0));
    let logits = Tensor::zeros(&gpu, &[1, 9_000_000]).unwrap();
    let labels = Tensor::from_u32(&gpu, &[3], &[1]).unwrap();
    refused_where_loops_stop(&gpu, "cross_entropy over 9000000 classes", cross_entropy(&gpu, &logits, &labels));
    // A 300×300 kernel summed 65,101 of its 90,000 terms.
    let x = Tensor::full(&gpu, &[1, 1, 300, 300], 1.0).unwrap();
    let w = Tensor::full(&gpu, &[1, 1, 300, 300], 1.0).unwrap();
    let what = "conv2d over 1 channels of a 300×300 kernel";
    refused_where_loops_stop(&gpu, what, conv2d(&gpu, &x, &w, None, Conv2dSpec::default()));
}

#[test]
fn long_token_and_batch_loops_are_refused_where_loops_stop() {
    let gpu = gpu();
    // The fused attention kernels loop over every token: 65,536 dropped the last key.
    if peft_wgpu::ops::attention::fused_kernels_run_on(&gpu) {
        let q = Tensor::zeros(&gpu, &[1, 65_536, 4]).unwrap();
        refused_where_loops_stop(&gpu, "attention over 65536 tokens", attention(&gpu, &q, &q, &q, 1));
    }
    // The unfused filter's ∂r sums each cell over the batch: 65,536 images gave 65,535.
    let plan = GridPlan::new(&gpu, 1, 1).unwrap();
    let x = Tensor::full(&gpu, &[65_536, 1, 1], 1.0).unwrap();
    let what = "the MoPPA filter's ∂r over a batch of 65536";
    refused_where_loops_stop(&gpu, what, moppa_filter_grads(&gpu, &plan, &x, None, &x, FilterPath::Unfused));
    // The rows kernel (lavapipe's default) copies every prefix token in one invocation:
    // 70,000 of them came back wrong from token 65,535 on.
    let x = Tensor::zeros(&gpu, &[1, 70_001, 4]).unwrap();
    let r = Tensor::full(&gpu, &[1, 1, 4], 1.0).unwrap();
    let path = if gpu.loop_limit().is_some() { FilterPath::Rows } else { FilterPath::Auto };
    let what = "the MoPPA filter over 70000 prefix tokens";
    refused_where_loops_stop(&gpu, what, peft_wgpu::ops::spectral::moppa_filter_with(&gpu, &plan, &x, &r, path));
    // The fused kernels take a chunk of images an invocation, at least one: 20,000 prefix
    // tokens of 127 channels (a tile of 128 on 1×1) are past the limit for one image.
    let x = Tensor::zeros(&gpu, &[1, 20_001, 127]).unwrap();
    let r = Tensor::full(&gpu, &[1, 1, 127], 1.0).unwrap();
    let what = "the fused MoPPA filter of 20000 prefix tokens";
    refused_where_loops_stop(&gpu, what, moppa_filter_grads(&gpu, &plan, &x, Some(&r), &x, FilterPath::Fused));
    // The default path computes it: on GPUs the fused kernel, on CPU adapters the rows kernel
    // (20,011 iterations; the GPUs' fused kernel, `PEFT_WGPU_KERNELS=gpu`, would not).
    if gpu.cpu_kernels() || gpu.loop_limit().is_none() {
        moppa_filter(&gpu, &plan, &x, &r).expect("the default path takes 20,000 prefix tokens");
    }
}

/// A strided convolution's input gradient reaches one kernel row in `stride` per position:
/// ViT-B/16's patch embedding (768 outputs of 3 × 16 × 16, stride 16) is well inside the
/// limit and is computed, not refused.
#[test]
fn strided_convolutions_are_not_refused_for_rows_they_skip() {
    use peft_wgpu::ops::conv::conv2d_grad_input;
    use peft_wgpu::reference::conv as reference;
    let gpu = gpu();
    let mut rng = common::Rng::new(5);
    let (cout, cin, k, size) = (768, 3, 16, 32);
    let w = rng.normal_vec(cout * cin * k * k, 0.0, 0.1);
    let dy = rng.normal_vec(cout * 4, 0.0, 1.0);
    let spec = Conv2dSpec { stride: (k, k), ..Conv2dSpec::default() };
    let tw = Tensor::from_slice(&gpu, &w, &[cout, cin, k, k]).unwrap();
    let tdy = Tensor::from_slice(&gpu, &dy, &[1, cout, 2, 2]).unwrap();
    let dx = conv2d_grad_input(&gpu, &tdy, &tw, &[1, cin, size, size], spec).expect("ViT-B/16's patch embedding");
    let geo = reference::Geometry {
        b: 1,
        cin,
        h: size,
        w: size,
        cout,
        kh: k,
        kw: k,
        stride: (k, k),
        padding: (0, 0),
        groups: 1,
    };
    let want = reference::conv2d_grad_input(&common::f64s(&dy), &common::f64s(&w), &geo);
    common::assert_close("∂x", &gpu.read(&dx).unwrap(), &want, 1e-5, 1e-6);
}

/// The router's gradient sums a head's grid cells and channels in one workgroup: a 128×128
/// grid of 1,024 channels gave ∂logits of 0.
#[test]
fn long_prior_reductions_are_refused_where_loops_stop() {
    let gpu = gpu();
    let (gh, gw, d) = (128, 128, 1024);
    let k = Tensor::full(&gpu, &[gh, gw, 1], 1.0).unwrap();
    let t = Tensor::full(&gpu, &[d], 0.05).unwrap();
    let logits = Tensor::zeros(&gpu, &[3, 1]).unwrap();
    let tau = Tensor::full(&gpu, &[1], 5.0).unwrap();
    let dr = Tensor::full(&gpu, &[gh, gw, d], 1.0).unwrap();
    let grads = prior_response_grads(&gpu, [&k; 3], [&t; 3], &logits, &tau, &dr);
    refused_where_loops_stop(&gpu, "the MoPPA prior's router gradient (128×128 grid, 1 heads of 1024)", grads);
}
