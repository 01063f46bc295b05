//! The general 2-D convolution (`ops::conv`, `shaders/conv.wgsl`): forward and every gradient
//! against the f64 twins on awkward geometries, the adjoint identities, finite differences of
//! the twins, the tape op, PyTorch (`scripts/fixtures_flora_conv.py`), and its errors.

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::conv::{Conv2dSpec, conv2d, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight, conv2d_var};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::conv::{self as reference, Geometry};
use peft_wgpu::{Gpu, Tape, Tensor};

/// `(x shape, out channels, kernel, stride, padding, groups)`.
type Case = ([usize; 4], usize, (usize, usize), (usize, usize), (usize, usize), usize);

const CASES: [Case; 11] = [
    ([1, 1, 1, 1], 1, (1, 1), (1, 1), (0, 0), 1),   // sizes 1
    ([2, 3, 7, 5], 4, (3, 2), (2, 1), (1, 0), 1),   // non-square kernel, strides and padding per axis
    ([2, 4, 9, 9], 6, (3, 3), (2, 2), (1, 1), 2),   // grouped
    ([1, 5, 6, 6], 5, (3, 3), (1, 1), (1, 1), 5),   // depthwise
    ([2, 3, 5, 5], 6, (3, 3), (1, 1), (1, 1), 3),   // depthwise with two outputs per channel
    ([1, 2, 16, 17], 3, (1, 1), (3, 3), (2, 2), 1), // padding wider than the kernel
    ([1, 1, 2, 2], 2, (4, 4), (1, 1), (1, 1), 1),   // the kernel spans the padded input
    ([3, 2, 13, 11], 3, (2, 2), (1, 1), (0, 0), 1), // 360 batch positions: several ∂w chunks
    ([1, 1, 257, 1], 1, (1, 1), (1, 1), (0, 0), 1), // workgroup + 1 outputs
    ([1, 1, 255, 1], 1, (1, 1), (1, 1), (0, 0), 1), // workgroup − 1 outputs
    ([2, 7, 5, 3], 11, (2, 3), (1, 2), (0, 1), 1),  // primes
];

fn geometry(&(x, cout, k, stride, padding, groups): &Case) -> Geometry {
    Geometry { b: x[0], cin: x[1], h: x[2], w: x[3], cout, kh: k.0, kw: k.1, stride, padding, groups }
}

fn spec(&(_, _, _, stride, padding, groups): &Case) -> Conv2dSpec {
    Conv2dSpec { stride, padding, groups }
}

/// Random x, w, b and ∂y of a case, on the host.
struct Data {
    geo: Geometry,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

impl Data {
    fn new(case: &Case, rng: &mut Rng) -> Data {
        let geo = geometry(case);
        let (oh, ow) = geo.out();
        Data {
            x: rng.normal_vec(geo.b * geo.cin * geo.h * geo.w, 0.0, 1.0),
            w: rng.normal_vec(geo.cout * geo.cpg() * geo.kh * geo.kw, 0.0, 0.5),
            b: rng.normal_vec(geo.cout, 0.0, 1.0),
            dy: rng.normal_vec(geo.b * geo.cout * oh * ow, 0.0, 1.0),
            geo,
        }
    }

    fn shapes(&self) -> ([usize; 4], [usize; 4], [usize; 4]) {
        let g = &self.geo;
        let (oh, ow) = g.out();
        ([g.b, g.cin, g.h, g.w], [g.cout, g.cpg(), g.kh, g.kw], [g.b, g.cout, oh, ow])
    }

    fn upload(&self, gpu: &Gpu) -> [Tensor; 4] {
        let (xs, ws, ys) = self.shapes();
        [
            Tensor::from_slice(gpu, &self.x, &xs).unwrap(),
            Tensor::from_slice(gpu, &self.w, &ws).unwrap(),
            Tensor::from_slice(gpu, &self.b, &[self.geo.cout]).unwrap(),
            Tensor::from_slice(gpu, &self.dy, &ys).unwrap(),
        ]
    }
}

#[test]
fn conv2d_and_its_gradients_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(71);
    for (n, case) in CASES.iter().enumerate() {
        let d = Data::new(case, &mut rng);
        let [x, w, b, dy] = d.upload(&gpu);
        let (xs, ws, ys) = d.shapes();
        let geo = &d.geo;
        let what = |name: &str| format!("{name} {case:?}");
        let (oh, ow) = geo.out();
        let per_output = geo.cpg() * geo.kh * geo.kw;
        let positions = geo.b * oh * ow;
        // Even cases with a bias, odd ones without.
        let bias = (n % 2 == 0).then_some(&b);
        let y = conv2d(&gpu, &x, &w, bias, spec(case)).unwrap();
        assert_eq!(y.shape(), ys);
        let b64 = f64s(&d.b);
        let want = reference::conv2d(&f64s(&d.x), &f64s(&d.w), bias.map(|_| b64.as_slice()), geo);
        assert_close(&what("conv2d"), &gpu.read(&y).unwrap(), &want, tol(4.0, per_output), 1e-6);

        let dx = conv2d_grad_input(&gpu, &dy, &w, &xs, spec(case)).unwrap();
        let want = reference::conv2d_grad_input(&f64s(&d.dy), &f64s(&d.w), geo);
        let terms = (geo.cout / geo.groups) * geo.kh * geo.kw;
        assert_close(&what("∂x"), &gpu.read(&dx).unwrap(), &want, tol(4.0, terms), 1e-6);

        let dw = conv2d_grad_weight(&gpu, &dy, &x, &ws, spec(case)).unwrap();
        assert_eq!(dw.shape(), ws);
        let want = reference::conv2d_grad_weight(&f64s(&d.dy), &f64s(&d.x), geo);
        assert_close(&what("∂w"), &gpu.read(&dw).unwrap(), &want, tol(4.0, positions), 1e-6);

        let db = conv2d_grad_bias(&gpu, &dy).unwrap();
        let want = reference::conv2d_grad_bias(&f64s(&d.dy), geo);
        assert_close(&what("∂b"), &gpu.read(&db).unwrap(), &want, tol(4.0, positions), 1e-6);
    }
}

fn dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let terms = a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64);
    terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()))
}

#[test]
fn gradients_are_adjoints_of_the_convolution() {
    // ⟨conv(x, w), ∂y⟩ = ⟨x, conv2d_grad_input(∂y, w)⟩ = ⟨w, conv2d_grad_weight(∂y, x)⟩.
    let gpu = gpu();
    let mut rng = Rng::new(72);
    for case in &CASES {
        let d = Data::new(case, &mut rng);
        let [x, w, _, dy] = d.upload(&gpu);
        let (xs, ws, _) = d.shapes();
        let y = gpu.read(&conv2d(&gpu, &x, &w, None, spec(case)).unwrap()).unwrap();
        let dx = gpu.read(&conv2d_grad_input(&gpu, &dy, &w, &xs, spec(case)).unwrap()).unwrap();
        let dw = gpu.read(&conv2d_grad_weight(&gpu, &dy, &x, &ws, spec(case)).unwrap()).unwrap();
        let (lhs, scale) = dot(&y, &d.dy);
        for (name, (rhs, _)) in [("∂x", dot(&d.x, &dx)), ("∂w", dot(&d.w, &dw))] {
            let allowed = 1e-5 * scale.max(1e-3);
            assert!((lhs - rhs).abs() <= allowed, "{name} adjoint {case:?}: {lhs} vs {rhs} (allowed {allowed:.2e})");
        }
    }
}

/// `L = Σ conv2d(x, w, b) ⊙ ∂y` on the twin.
fn twin_loss(x: &[f64], w: &[f64], b: &[f64], dy: &[f64], geo: &Geometry) -> f64 {
    reference::conv2d(x, w, Some(b), geo).iter().zip(dy).map(|(y, g)| y * g).sum()
}

#[test]
fn twin_gradients_match_finite_differences() {
    let mut rng = Rng::new(73);
    for case in [&CASES[1], &CASES[2], &CASES[4], &CASES[6]] {
        let d = Data::new(case, &mut rng);
        let geo = &d.geo;
        let (x, w, b, dy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
        let grads = [
            reference::conv2d_grad_input(&dy, &w, geo),
            reference::conv2d_grad_weight(&dy, &x, geo),
            reference::conv2d_grad_bias(&dy, geo),
        ];
        let h = 1e-4;
        for (which, grad) in grads.iter().enumerate() {
            let base = [&x, &w, &b][which];
            for k in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = [x.clone(), w.clone(), b.clone()];
                    v[which][k] += delta;
                    twin_loss(&v[0], &v[1], &v[2], &dy, geo)
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (fd - grad[k]).abs() <= 1e-7 * (1.0 + fd.abs()),
                    "{} [{k}] {case:?}: finite difference {fd}, twin {}",
                    ["∂x", "∂w", "∂b"][which],
                    grad[k]
                );
            }
        }
    }
}

#[test]
fn conv2d_var_backward_gives_every_gradient_and_saves_only_what_it_needs() {
    let gpu = gpu();
    let mut rng = Rng::new(74);
    let case = &CASES[4];
    let d = Data::new(case, &mut rng);
    let [x, w, b, dy] = d.upload(&gpu);
    let geo = &d.geo;
    let (oh, ow) = geo.out();
    let mut tape = Tape::new(&gpu);
    let (vx, vw, vb) = (tape.param(&x), tape.param(&w), tape.param(&b));
    let y = conv2d_var(&mut tape, &vx, &vw, Some(&vb), spec(case)).unwrap();
    let g = tape.constant(&dy);
    let prod = mul_var(&mut tape, &y, &g).unwrap();
    let loss = sum_var(&mut tape, &prod).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let read = |v| gpu.read(grads.get(v).expect("a gradient")).unwrap();
    let dy64 = f64s(&d.dy);
    let n = geo.b * oh * ow;
    assert_close("∂x", &read(&vx), &reference::conv2d_grad_input(&dy64, &f64s(&d.w), geo), tol(4.0, 18), 1e-6);
    assert_close("∂w", &read(&vw), &reference::conv2d_grad_weight(&dy64, &f64s(&d.x), geo), tol(4.0, n), 1e-6);
    assert_close("∂b", &read(&vb), &reference::conv2d_grad_bias(&dy64, geo), tol(4.0, n), 1e-6);

    // A frozen weight and bias: only the input gets a gradient.
    let mut tape = Tape::new(&gpu);
    let (vx, vw, vb) = (tape.param(&x), tape.constant(&w), tape.constant(&b));
    let y = conv2d_var(&mut tape, &vx, &vw, Some(&vb), spec(case)).unwrap();
    let g = tape.constant(&dy);
    let prod = mul_var(&mut tape, &y, &g).unwrap();
    let loss = sum_var(&mut tape, &prod).unwrap();
    let grads = tape.backward(&loss).unwrap();
    assert_eq!(grads.len(), 1, "only x is trainable");
    assert!(grads.get(&vx).is_some() && grads.get(&vw).is_none() && grads.get(&vb).is_none());
}

#[test]
fn conv2d_matches_pytorch() {
    let gpu = gpu();
    let f = fixture("flora_conv_torch.safetensors");
    let s = f.ints("conv.spec");
    let spec = Conv2dSpec {
        stride: (s[0] as usize, s[1] as usize),
        padding: (s[2] as usize, s[3] as usize),
        groups: s[4] as usize,
    };
    let up = |k: &str| Tensor::from_slice(&gpu, &f.f32(k), &f.shape(k)).unwrap();
    let mut tape = Tape::new(&gpu);
    let (vx, vw, vb) = (tape.param(&up("conv.x")), tape.param(&up("conv.weight")), tape.param(&up("conv.bias")));
    let y = conv2d_var(&mut tape, &vx, &vw, Some(&vb), spec).unwrap();
    let w_shape = f.shape("conv.weight");
    let k = w_shape[1] * w_shape[2] * w_shape[3];
    assert_close("y", &gpu.read(y.value()).unwrap(), &f.f64("conv.y"), tol(4.0, k), 1e-6);
    let g = tape.constant(&up("conv.grad_out"));
    let prod = mul_var(&mut tape, &y, &g).unwrap();
    let loss = sum_var(&mut tape, &prod).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let read = |v| gpu.read(grads.get(v).expect("a gradient")).unwrap();
    let positions = y.shape()[0] * y.shape()[2] * y.shape()[3];
    assert_close("∂x", &read(&vx), &f.f64("conv.grad.x"), tol(4.0, k), 1e-6);
    assert_close("∂w", &read(&vw), &f.f64("conv.grad.weight"), tol(4.0, positions), 1e-6);
    assert_close("∂b", &read(&vb), &f.f64("conv.grad.bias"), tol(4.0, positions), 1e-6);
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let x = t(&[2, 4, 5, 5]);
    let ok = Conv2dSpec::new();
    assert!(conv2d(&gpu, &x, &t(&[6, 4, 3, 3]), None, ok).is_ok());
    for (w, spec, why) in [
        (t(&[6, 3, 3, 3]), ok, "weight channels differ from the input's"),
        (t(&[6, 4, 3, 3]), ok.groups(2), "weight has Cin, not Cin/groups, channels"),
        (t(&[5, 2, 3, 3]), ok.groups(2), "groups do not divide the outputs"),
        (t(&[6, 1, 3, 3]), ok.groups(3), "groups do not divide the inputs"),
        (t(&[6, 4, 6, 3]), ok, "kernel taller than the input"),
        (t(&[6, 4, 8, 3]), ok.padding(1), "kernel taller than the padded input"),
        (t(&[6, 4, 3, 3]), ok.stride(0), "stride 0"),
        (t(&[6, 4, 3, 3]), ok.groups(0), "zero groups"),
        (t(&[6, 4, 3]), ok, "a 3-D weight"),
    ] {
        assert!(conv2d(&gpu, &x, &w, None, spec).is_err(), "{why}");
    }
    let w = t(&[6, 4, 3, 3]);
    assert!(conv2d(&gpu, &x, &w, Some(&t(&[5])), ok).is_err(), "bias of the wrong length");
    assert!(conv2d(&gpu, &t(&[4, 5, 5]), &w, None, ok).is_err(), "a 3-D input");
    assert!(conv2d_grad_input(&gpu, &t(&[2, 6, 4, 3]), &w, &[2, 4, 5, 5], ok).is_err(), "∂y of the wrong shape");
    assert!(conv2d_grad_weight(&gpu, &t(&[2, 6, 3, 4]), &x, &[6, 4, 3, 3], ok).is_err(), "∂y of the wrong shape");
    assert!(conv2d_grad_bias(&gpu, &t(&[2, 6, 3])).is_err(), "a 3-D ∂y");
}
