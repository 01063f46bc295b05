//! The fused SGD and AdamW steps against their f64 twins (odd sizes, skipped parameters, a
//! changing learning rate) and against torch.optim; one dispatch per step, nothing allocated
//! per step, updates in place, errors.

mod common;

use common::{EPS, Rng, assert_close, f64s, gpu};
use peft_wgpu::optim::{OptimParams, Segment};
use peft_wgpu::reference::optim::{self as reference, AdamW};
use peft_wgpu::{Error, Gpu, Optimizer, OptimizerKind, Tape, Tensor};
use safetensors::SafeTensors;

const SIZES: &[usize] = &[1, 2, 7, 255, 256, 257, 1000];
/// Parameters without elements among others: the segment table holds records that share a start.
const WITH_EMPTY: &[usize] = &[3, 0, 0, 5, 2, 0];

/// The f64 twin of an [`Optimizer`]: every parameter with its moments and step count.
struct Twin {
    kind: OptimizerKind,
    params: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: Vec<u64>,
}

impl Twin {
    fn new(kind: OptimizerKind, params: &[Vec<f32>]) -> Twin {
        let zeros: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        Twin {
            kind,
            params: params.iter().map(|p| f64s(p)).collect(),
            m: zeros.clone(),
            v: zeros,
            t: vec![0; params.len()],
        }
    }

    fn step(&mut self, lr: f64, grads: &[Option<Vec<f64>>]) {
        for (j, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            self.t[j] += 1;
            match self.kind {
                OptimizerKind::Sgd { weight_decay } => reference::sgd_step(&mut self.params[j], g, lr, weight_decay),
                OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                    let h = AdamW { lr, beta1, beta2, eps, weight_decay };
                    reference::adamw_step(&h, self.t[j], &mut self.params[j], &mut self.m[j], &mut self.v[j], g);
                }
            }
        }
    }
}

/// A run of [`check_against_twin`].
struct Run {
    kind: OptimizerKind,
    lr: f64,
    sizes: &'static [usize],
    steps: usize,
    /// Parameter 3 has no gradient at step 0 and parameter 0 none at step 2, so the kernel
    /// reads the segment table; without skips every parameter shares one step count and the
    /// kernel does not read it.
    skips: bool,
}

/// Runs `run` on the GPU and on the twin from seeded data, with the learning rate halved at
/// step 3, comparing every parameter after every step and the moments at the end.
fn check_against_twin(gpu: &Gpu, run: &Run, seed: u64) {
    let Run { kind, lr, sizes, steps, skips } = *run;
    let mut rng = Rng::new(seed);
    let init: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.normal_vec(n, 0.0, 1.0)).collect();
    let params: Vec<Tensor> = init.iter().map(|p| Tensor::from_slice(gpu, p, &[p.len()]).unwrap()).collect();
    let mut opt = Optimizer::new(gpu, kind, lr, &params).unwrap();
    let mut twin = Twin::new(kind, &init);
    let mut gmax = vec![0.0f64; sizes.len()];
    for step in 0..steps {
        if step == 3 {
            opt.set_lr(lr / 2.0).unwrap();
        }
        let skip = |j: usize| skips && ((step == 0 && j == 3) || (step == 2 && j == 0));
        let grads: Vec<Option<Vec<f32>>> =
            sizes.iter().enumerate().map(|(j, &n)| (!skip(j)).then(|| rng.normal_vec(n, 0.0, 1.0))).collect();
        for (j, g) in grads.iter().enumerate() {
            gmax[j] = g.iter().flatten().fold(gmax[j], |a, &x| a.max(f64::from(x.abs())));
        }
        let tensors: Vec<Option<Tensor>> =
            grads.iter().map(|g| g.as_ref().map(|g| Tensor::from_slice(gpu, g, &[g.len()]).unwrap())).collect();
        opt.step(&tensors.iter().map(Option::as_ref).collect::<Vec<_>>()).unwrap();
        // The rate the test set, not the one the optimizer reports.
        let step_lr = if step >= 3 { lr / 2.0 } else { lr };
        assert_eq!(opt.lr(), step_lr, "step {step}");
        twin.step(step_lr, &grads.iter().map(|g| g.as_ref().map(|g| f64s(g))).collect::<Vec<_>>());
        for (j, p) in params.iter().enumerate() {
            let what = format!("{kind:?} step {step} parameter {j} (n = {})", p.len());
            let got = gpu.read(p).unwrap();
            let tol = 4.0 * (step + 1) as f64 * EPS; // parameters and gradients are O(1)
            assert_close(&what, &got, &twin.params[j], tol, tol);
        }
    }
    assert_eq!(opt.steps(), steps as u64);
    assert_eq!(opt.updates(), &twin.t[..], "per-parameter step counts");
    for (j, &gmax) in gmax.iter().enumerate() {
        match opt.moments(j).unwrap() {
            None => assert!(matches!(kind, OptimizerKind::Sgd { .. }), "AdamW without moments"),
            Some((m, v)) => {
                let what = format!("parameter {j}");
                assert_moments_close(&what, (&m, &v), (&twin.m[j], &twin.v[j]), gmax);
            }
        }
    }
}

/// AdamW's moments after a few steps: `m` sums terms of up to `(1 − β1)·max|g|` that may
/// cancel, so its absolute floor scales with the largest gradient; `v` sums positive terms.
fn assert_moments_close(what: &str, got: (&[f32], &[f32]), want: (&[f64], &[f64]), gmax: f64) {
    assert_close(&format!("{what} exp_avg"), got.0, want.0, 16.0 * EPS, 4.0 * EPS * gmax);
    assert_close(&format!("{what} exp_avg_sq"), got.1, want.1, 16.0 * EPS, 0.0);
}

#[test]
fn sgd_step_matches_reference() {
    let gpu = gpu();
    let decay = OptimizerKind::Sgd { weight_decay: Some(0.01) };
    check_against_twin(&gpu, &Run { kind: OptimizerKind::sgd(), lr: 0.1, sizes: SIZES, steps: 5, skips: true }, 1);
    check_against_twin(&gpu, &Run { kind: decay, lr: 0.05, sizes: SIZES, steps: 5, skips: true }, 2);
    check_against_twin(&gpu, &Run { kind: decay, lr: 0.05, sizes: SIZES, steps: 4, skips: false }, 3);
    check_against_twin(&gpu, &Run { kind: decay, lr: 0.05, sizes: WITH_EMPTY, steps: 4, skips: true }, 4);
}

#[test]
fn adamw_step_matches_reference() {
    let gpu = gpu();
    let adamw = OptimizerKind::adamw();
    check_against_twin(&gpu, &Run { kind: adamw, lr: 1e-2, sizes: SIZES, steps: 5, skips: true }, 5);
    check_against_twin(&gpu, &Run { kind: adamw, lr: 1e-2, sizes: SIZES, steps: 4, skips: false }, 6);
    check_against_twin(&gpu, &Run { kind: adamw, lr: 1e-2, sizes: WITH_EMPTY, steps: 4, skips: true }, 7);
    let kind = OptimizerKind::AdamW { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.0 };
    check_against_twin(&gpu, &Run { kind, lr: 1e-3, sizes: SIZES, steps: 5, skips: true }, 8);
}

/// `tests/fixtures/adamw_torch.safetensors`, made by `scripts/fixtures_optim.py`.
fn torch_fixture() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw_torch.safetensors");
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/make_fixtures.sh)"))
}

fn values<const N: usize, T>(
    st: &SafeTensors<'_>,
    key: &str,
    dtype: safetensors::Dtype,
    f: fn([u8; N]) -> T,
) -> Vec<T> {
    let t = st.tensor(key).unwrap_or_else(|e| panic!("fixture tensor {key}: {e}"));
    assert_eq!(t.dtype(), dtype, "fixture tensor {key}");
    t.data().chunks_exact(N).map(|c| f(c.try_into().expect("chunks of N bytes"))).collect()
}

const TORCH_CASES: &[&str] = &[
    "adamw_lr1e-2_wd1e-2",
    "adamw_lr1e-3_wd0",
    "adamw_lr1e-2_wd0_skip",
    "adamw_schedule_wd1e-2_skip",
    "sgd_lr1e-1",
    "sgd_lr5e-2_wd1e-2_skip",
];

/// One torch case: its optimizer kind, learning rate per step, and skip mask per step.
struct TorchCase {
    kind: OptimizerKind,
    lrs: Vec<f64>,
    skip: Vec<Vec<bool>>,
}

fn torch_case(st: &SafeTensors<'_>, case: &str, n_params: usize) -> TorchCase {
    let lrs = values(st, &format!("{case}.lr"), safetensors::Dtype::F64, f64::from_le_bytes);
    let wd = values(st, &format!("{case}.weight_decay"), safetensors::Dtype::F64, f64::from_le_bytes)[0];
    let skip = values(st, &format!("{case}.skip"), safetensors::Dtype::U8, u8::from_le_bytes);
    let kind = if case.starts_with("adamw") {
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd }
    } else {
        OptimizerKind::Sgd { weight_decay: (wd > 0.0).then_some(wd) }
    };
    let skip = skip.chunks(n_params).map(|row| row.iter().map(|&s| s != 0).collect()).collect();
    TorchCase { kind, lrs, skip }
}

fn torch_inputs(st: &SafeTensors<'_>) -> (Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>) {
    let n_params = (0..).take_while(|j| st.tensor(&format!("param.{j}")).is_ok()).count();
    let params: Vec<Vec<f32>> =
        (0..n_params).map(|j| values(st, &format!("param.{j}"), safetensors::Dtype::F32, f32::from_le_bytes)).collect();
    let steps = (0..).take_while(|t| st.tensor(&format!("grad.{t}.0")).is_ok()).count();
    let grads = (0..steps)
        .map(|t| {
            (0..n_params)
                .map(|j| values(st, &format!("grad.{t}.{j}"), safetensors::Dtype::F32, f32::from_le_bytes))
                .collect()
        })
        .collect();
    (params, grads)
}

#[test]
fn reference_matches_torch() {
    let bytes = torch_fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (params, grads) = torch_inputs(&st);
    for case in TORCH_CASES {
        let c = torch_case(&st, case, params.len());
        let mut twin = Twin::new(c.kind, &params);
        for (t, step_grads) in grads.iter().enumerate() {
            let g: Vec<Option<Vec<f64>>> =
                step_grads.iter().zip(&c.skip[t]).map(|(g, &skip)| (!skip).then(|| f64s(g))).collect();
            twin.step(c.lrs[t], &g);
        }
        for (j, p) in twin.params.iter().enumerate() {
            let want = values(&st, &format!("{case}.param.{j}"), safetensors::Dtype::F64, f64::from_le_bytes);
            let last = &want[want.len() - p.len()..];
            for (i, (a, b)) in p.iter().zip(last).enumerate() {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{case} parameter {j}[{i}]: twin {a}, torch {b}");
            }
        }
    }
}

#[test]
fn optimizer_matches_torch() {
    let gpu = gpu();
    let bytes = torch_fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (init, grads) = torch_inputs(&st);
    assert!(
        grads.len() >= 5 && init.len() >= 3,
        "the fixture holds {} steps of {} parameters",
        grads.len(),
        init.len()
    );
    let grad_tensors: Vec<Vec<Tensor>> = grads
        .iter()
        .map(|step| step.iter().map(|g| Tensor::from_slice(&gpu, g, &[g.len()]).unwrap()).collect())
        .collect();
    for case in TORCH_CASES {
        let c = torch_case(&st, case, init.len());
        let params: Vec<Tensor> = init.iter().map(|p| Tensor::from_slice(&gpu, p, &[p.len()]).unwrap()).collect();
        let mut opt = Optimizer::new(&gpu, c.kind, c.lrs[0], &params).unwrap();
        let want: Vec<Vec<f64>> = (0..init.len())
            .map(|j| values(&st, &format!("{case}.param.{j}"), safetensors::Dtype::F64, f64::from_le_bytes))
            .collect();
        for (t, step_grads) in grad_tensors.iter().enumerate() {
            opt.set_lr(c.lrs[t]).unwrap();
            let g: Vec<Option<&Tensor>> =
                step_grads.iter().zip(&c.skip[t]).map(|(g, &skip)| (!skip).then_some(g)).collect();
            opt.step(&g).unwrap();
            for (j, p) in params.iter().enumerate() {
                let n = p.len();
                let got = gpu.read(p).unwrap();
                let what = format!("{case} step {t} parameter {j}");
                let tol = 4.0 * (t + 1) as f64 * EPS;
                assert_close(&what, &got, &want[j][t * n..(t + 1) * n], tol, tol);
            }
        }
        if matches!(c.kind, OptimizerKind::AdamW { .. }) {
            for j in 0..init.len() {
                let (m, v) = opt.moments(j).unwrap().expect("AdamW has moments");
                let key = |name: &str| format!("{case}.{name}.{j}");
                let m_want = values(&st, &key("exp_avg"), safetensors::Dtype::F64, f64::from_le_bytes);
                let v_want = values(&st, &key("exp_avg_sq"), safetensors::Dtype::F64, f64::from_le_bytes);
                let gmax = grads.iter().flat_map(|step| &step[j]).fold(0.0f64, |a, &x| a.max(f64::from(x.abs())));
                assert_moments_close(&format!("{case} parameter {j}"), (&m, &v), (&m_want, &v_want), gmax);
            }
        }
    }
}

#[test]
fn step_is_one_dispatch_and_allocates_nothing() {
    let gpu = gpu();
    for kind in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        for count in [1, SIZES.len()] {
            let params: Vec<Tensor> = SIZES[..count].iter().map(|&n| Tensor::zeros(&gpu, &[n]).unwrap()).collect();
            let grads: Vec<Tensor> = SIZES[..count].iter().map(|&n| Tensor::full(&gpu, &[n], 0.5).unwrap()).collect();
            let all: Vec<Option<&Tensor>> = grads.iter().map(Some).collect();
            let mut some = all.clone();
            some[0] = None;
            let none = vec![None; count];
            let mut opt = Optimizer::new(&gpu, kind, 0.1, &params).unwrap();
            opt.step(&all).unwrap();
            gpu.sync().unwrap();
            gpu.reset_peak_memory();
            let memory = gpu.memory();
            for (what, grads) in [("all gradients", &all), ("one missing", &some), ("none", &none)] {
                let before = gpu.dispatch_count();
                opt.step(grads).unwrap();
                let dispatches = gpu.dispatch_count() - before;
                let want = u64::from(grads.iter().any(Option::is_some));
                assert_eq!(dispatches, want, "{kind:?}, {count} parameters, {what}: dispatches");
            }
            gpu.sync().unwrap();
            let after = gpu.memory();
            assert_eq!(after.live_bytes, memory.live_bytes, "{kind:?}, {count} parameters: live bytes");
            assert_eq!(after.peak_bytes, memory.live_bytes, "{kind:?}, {count} parameters: a step allocated");
        }
    }
}

#[test]
fn parameters_update_in_place_and_gradients_stay() {
    let gpu = gpu();
    let w = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_slice(&gpu, &[10.0], &[1]).unwrap();
    let held = w.clone();
    let view = w.reshape(&[6]).unwrap();
    let mut tape = Tape::new(&gpu);
    let var = tape.param(&w);
    let gw_source = Tensor::from_slice(&gpu, &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0], &[6]).unwrap();
    let gw = gw_source.reshape(&[2, 3]).unwrap();
    let mut opt = Optimizer::new(&gpu, OptimizerKind::sgd(), 0.5, &[w, b.clone()]).unwrap();
    // The bias's gradient is the bias itself: p ← p − 0.5·p.
    opt.step(&[Some(&gw), Some(&b)]).unwrap();
    assert_eq!(gpu.read(&held).unwrap(), vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(gpu.read(&view).unwrap(), vec![0.0; 6]);
    assert_eq!(gpu.read(var.value()).unwrap(), vec![0.0; 6]);
    assert_eq!(gpu.read(&opt.params()[0]).unwrap(), vec![0.0; 6]);
    assert_eq!(gpu.read(&b).unwrap(), vec![5.0]);
    assert_eq!(gpu.read(&gw_source).unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0], "the gradient was written");
}

#[test]
fn bad_arguments_are_errors() {
    let gpu = gpu();
    let p = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let q = Tensor::zeros(&gpu, &[2]).unwrap();
    let mut opt = Optimizer::new(&gpu, OptimizerKind::adamw(), 1e-3, &[p.clone(), q.clone()]).unwrap();
    let g3 = Tensor::zeros(&gpu, &[3]).unwrap();
    let g31 = Tensor::zeros(&gpu, &[3, 1]).unwrap();
    assert!(matches!(opt.step(&[Some(&g3)]), Err(Error::Shape { .. })), "too few gradients");
    assert!(matches!(opt.step(&[Some(&g31), None]), Err(Error::Shape { .. })), "gradient of the wrong shape");
    assert!(matches!(opt.step(&[None, Some(&g3)]), Err(Error::Shape { .. })), "gradient of the wrong size");
    assert_eq!(opt.steps(), 0, "a failed step counted");
    assert_eq!(gpu.read(&p).unwrap(), vec![1.0, 2.0, 3.0], "a failed step changed a parameter");
    assert!(matches!(opt.set_lr(-1.0), Err(Error::Invalid { .. })));
    assert!(matches!(opt.set_lr(f64::NAN), Err(Error::Invalid { .. })));
    assert_eq!(opt.lr(), 1e-3);
    assert!(matches!(opt.moments(2), Err(Error::Invalid { .. })));
    let ints = Tensor::from_u32(&gpu, &[1, 2], &[2]).unwrap();
    let new = |kind, lr, params: &[Tensor]| Optimizer::new(&gpu, kind, lr, params).map(drop);
    assert!(matches!(new(OptimizerKind::sgd(), 0.1, &[ints]), Err(Error::Shape { .. })), "u32 parameter");
    let alias = p.reshape(&[1, 3]).unwrap();
    assert!(matches!(new(OptimizerKind::sgd(), 0.1, &[p, alias]), Err(Error::Invalid { .. })), "alias");
    assert!(matches!(new(OptimizerKind::sgd(), f64::INFINITY, std::slice::from_ref(&q)), Err(Error::Invalid { .. })));
    for kind in [
        OptimizerKind::Sgd { weight_decay: Some(-0.1) },
        OptimizerKind::AdamW { beta1: 1.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        OptimizerKind::AdamW { beta1: 0.9, beta2: -0.1, eps: 1e-8, weight_decay: 0.0 },
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: -1.0, weight_decay: 0.0 },
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: f64::NAN },
    ] {
        assert!(matches!(new(kind, 1e-3, std::slice::from_ref(&q)), Err(Error::Invalid { .. })), "{kind:?}");
    }
    // A learning rate within f32 whose first AdamW step size, lr / (1 − β1), is not: refused
    // when the optimizer is made, naming the rate and the settings; SGD steps by lr itself.
    let e = new(OptimizerKind::adamw(), 1e38, std::slice::from_ref(&q)).expect_err("an overflowing step size");
    assert!(e.to_string().contains("learning rate 1e38 with AdamW (betas 0.9, 0.999"), "{e}");
    new(OptimizerKind::sgd(), 1e38, std::slice::from_ref(&q)).expect("SGD's step size is the learning rate");
    // One set later is refused by the step, which changes nothing.
    let mut adamw = Optimizer::new(&gpu, OptimizerKind::adamw(), 1e-3, std::slice::from_ref(&q)).unwrap();
    adamw.set_lr(1e38).unwrap();
    let e = adamw.step(&[Some(&Tensor::full(&gpu, &[2], 1.0).unwrap())]).expect_err("an overflowing step");
    assert!(e.to_string().contains("learning rate 1e38"), "{e}");
    assert_eq!((adamw.steps(), gpu.read(&q).unwrap()), (0, vec![0.0, 0.0]), "a refused step changed something");
    let mut sgd = Optimizer::new(&gpu, OptimizerKind::sgd(), 0.1, &[q]).unwrap();
    assert!(sgd.moments(0).unwrap().is_none());
    let mut empty = Optimizer::new(&gpu, OptimizerKind::adamw(), 0.1, &[]).unwrap();
    empty.step(&[]).unwrap();
    sgd.step(&[None]).unwrap();
    assert_eq!((empty.steps(), sgd.steps(), sgd.updates()), (1, 1, &[0][..]));
}

#[test]
fn segment_matches_its_wgsl_twin() {
    use wgpu::naga;
    let source = peft_wgpu::Shader::Optim.source();
    let module = naga::front::wgsl::parse_str(source).expect("optim.wgsl parses");
    let span = |name: &str| {
        module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(n), naga::TypeInner::Struct { span, .. }) if n == name => Some(*span as usize),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no struct {name} in optim.wgsl"))
    };
    assert_eq!(span("Segment"), size_of::<Segment>());
    assert_eq!(span("OptimParams"), size_of::<OptimParams>());
}
