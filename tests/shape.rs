//! Shape ops against their f64 twins, with gradients by finite differences on the twins
//! and by identities (an op followed by its inverse is the identity).

mod common;

use common::{Rng, assert_close, f64s, gpu};
use peft_wgpu::ops::elementwise::mul_var;
use peft_wgpu::ops::shape::{self, add_broadcast_var, concat_var, expand_var, permute_var, reshape_var, slice_var};
use peft_wgpu::ops::sum::sum_var;
use peft_wgpu::reference::shape as reference;
use peft_wgpu::{Gpu, Tape, Tensor, Var};

/// Runs `op` on parameters made from `inputs` and returns its value and the gradients of
/// `L = ⟨op(x…), w⟩` for a random `w` (which is returned too).
fn value_and_grads(
    gpu: &Gpu,
    rng: &mut Rng,
    inputs: &[(&[f32], &[usize])],
    op: impl FnOnce(&mut Tape, &[Var]) -> Var,
) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let mut tape = Tape::new(gpu);
    let vars: Vec<Var> = inputs.iter().map(|(x, s)| tape.param(&Tensor::from_slice(gpu, x, s).unwrap())).collect();
    let y = op(&mut tape, &vars);
    let w = rng.normal_vec(y.value().len(), 0.0, 1.0);
    let vw = tape.constant(&Tensor::from_slice(gpu, &w, y.shape()).unwrap());
    let value = gpu.read(y.value()).unwrap();
    let yw = mul_var(&mut tape, &y, &vw).unwrap();
    let loss = sum_var(&mut tape, &yw).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let g = vars.iter().map(|v| gpu.read(grads.get(v).expect("a gradient")).unwrap()).collect();
    (value, w, g)
}

/// Asserts `got` equals `want` exactly (pure data movement rounds nothing); names the first
/// mismatch.
fn assert_exact(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(&g, &w)| g as f64 != w) {
        panic!("{what}: element {i}: got {}, expected {}", got[i], want[i]);
    }
}

/// Gradient of `x ↦ ⟨f(x), w⟩` by central differences (exact up to rounding for linear `f`).
fn finite_diff(x: &[f64], w: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let h = 0.5;
    let mut x = x.to_vec();
    let loss = |x: &[f64]| f(x).iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + h;
            let up = loss(&x);
            x[i] = keep - h;
            let down = loss(&x);
            x[i] = keep;
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn permute_matches_reference_and_inverts() {
    let gpu = gpu();
    let mut rng = Rng::new(51);
    for shape in [vec![2, 3, 5, 7], vec![3, 86, 1], vec![257, 2], vec![1], vec![4, 1, 65, 2]] {
        for perm in permutations(shape.len()) {
            let x = rng.normal_vec(shape.iter().product(), 0.0, 1.0);
            let what = format!("permute {shape:?} by {perm:?}");
            let (y, w, g) =
                value_and_grads(&gpu, &mut rng, &[(&x, &shape)], |tape, v| permute_var(tape, &v[0], &perm).unwrap());
            assert_exact(&what, &y, &reference::permute(&f64s(&x), &shape, &perm));
            let fd = finite_diff(&f64s(&x), &f64s(&w), |x| reference::permute(x, &shape, &perm));
            assert_close(&format!("∂ {what}"), &g[0], &fd, 1e-12, 1e-12);
            // Permuting back gives x exactly.
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            let back = shape::permute(&gpu, &Tensor::from_slice(&gpu, &y, &out_shape).unwrap(), &inverse).unwrap();
            assert_eq!(gpu.read(&back).unwrap(), x, "{what} then its inverse");
        }
    }
    let t = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    assert!(shape::permute(&gpu, &t, &[0, 0]).is_err());
    assert!(shape::permute(&gpu, &t, &[1]).is_err());
}

#[test]
fn attention_head_split_round_trips() {
    // [B, T, H, dh] → [B, H, T, dh] → back, and the transpose of the last two axes.
    let gpu = gpu();
    let mut rng = Rng::new(52);
    let shape = [2, 197, 3, 8];
    let x = rng.normal_vec(shape.iter().product(), 0.0, 1.0);
    let t = Tensor::from_slice(&gpu, &x, &shape).unwrap();
    let heads = shape::permute(&gpu, &t, &[0, 2, 1, 3]).unwrap();
    assert_eq!(heads.shape(), &[2, 3, 197, 8]);
    assert_exact("heads", &gpu.read(&heads).unwrap(), &reference::permute(&f64s(&x), &shape, &[0, 2, 1, 3]));
    let kt = shape::permute(&gpu, &heads, &[0, 1, 3, 2]).unwrap();
    assert_eq!(kt.shape(), &[2, 3, 8, 197]);
    let back = shape::permute(&gpu, &shape::permute(&gpu, &kt, &[0, 1, 3, 2]).unwrap(), &[0, 2, 1, 3]).unwrap();
    assert_eq!(gpu.read(&back).unwrap(), x);
}

#[test]
fn concat_and_slice_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(53);
    // [CLS | prompts | patches] along the token axis, and the other axes.
    let b = 3;
    for (axis, lens) in [(1, vec![1, 5, 196]), (1, vec![1, 1]), (0, vec![2, 1, 3]), (2, vec![7, 250])] {
        let shapes: Vec<Vec<usize>> = lens
            .iter()
            .map(|&l| match axis {
                0 => vec![l, 4, 5],
                1 => vec![b, l, 9],
                _ => vec![b, 2, l],
            })
            .collect();
        let data: Vec<Vec<f32>> = shapes.iter().map(|s| rng.normal_vec(s.iter().product(), 0.0, 1.0)).collect();
        let inputs: Vec<(&[f32], &[usize])> = data.iter().zip(&shapes).map(|(d, s)| (&d[..], &s[..])).collect();
        let (y, w, g) = value_and_grads(&gpu, &mut rng, &inputs, |tape, v| {
            let refs: Vec<&Var> = v.iter().collect();
            concat_var(tape, &refs, axis).unwrap()
        });
        let d64: Vec<Vec<f64>> = data.iter().map(|d| f64s(d)).collect();
        let refs: Vec<&[f64]> = d64.iter().map(|d| &d[..]).collect();
        let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        let what = format!("concat axis {axis} lens {lens:?}");
        assert_exact(&what, &y, &reference::concat(&refs, &shape_refs, axis));
        // ∂x_i is the matching slice of w.
        let mut full_shape = shapes[0].clone();
        full_shape[axis] = lens.iter().sum();
        let mut start = 0;
        for (i, &len) in lens.iter().enumerate() {
            let want = reference::slice(&f64s(&w), &full_shape, axis, start, len);
            assert_exact(&format!("∂ input {i} of {what}"), &g[i], &want);
            start += len;
        }
    }
    let (a, c) = (Tensor::zeros(&gpu, &[2, 3, 4]).unwrap(), Tensor::zeros(&gpu, &[2, 3, 5]).unwrap());
    assert!(shape::concat(&gpu, &[&a, &c], 1).is_err());
    assert!(shape::concat(&gpu, &[], 0).is_err());
}

#[test]
fn slice_matches_reference_and_its_gradient_pads_with_zeros() {
    let gpu = gpu();
    let mut rng = Rng::new(54);
    let shape = [3, 202, 5];
    let x = rng.normal_vec(shape.iter().product(), 0.0, 1.0);
    // The CLS token, the prompt tokens, the patch tokens, and a slice along the last axis.
    for (axis, start, len) in [(1, 0, 1), (1, 1, 5), (1, 6, 196), (2, 1, 3), (0, 2, 1)] {
        let what = format!("slice axis {axis} {start}..{}", start + len);
        let (y, w, g) = value_and_grads(&gpu, &mut rng, &[(&x, &shape)], |tape, v| {
            slice_var(tape, &v[0], axis, start, len).unwrap()
        });
        assert_exact(&what, &y, &reference::slice(&f64s(&x), &shape, axis, start, len));
        let fd = finite_diff(&f64s(&x), &f64s(&w), |x| reference::slice(x, &shape, axis, start, len));
        assert_close(&format!("∂ {what}"), &g[0], &fd, 1e-12, 1e-12);
    }
    let t = Tensor::zeros(&gpu, &shape).unwrap();
    assert!(shape::slice(&gpu, &t, 1, 200, 3).is_err());
    assert!(shape::slice(&gpu, &t, 3, 0, 1).is_err());
}

#[test]
fn broadcast_add_and_expand_sum_their_gradients() {
    let gpu = gpu();
    let mut rng = Rng::new(55);
    // Position embeddings [T, C] and [1, T, C] on [B, T, C]; a bias [C] on [B, T, C].
    for (b, t, c, e_shape) in [(4, 197, 3, vec![197, 3]), (2, 5, 7, vec![1, 5, 7]), (3, 1, 257, vec![257])] {
        let x = rng.normal_vec(b * t * c, 0.0, 1.0);
        let e = rng.normal_vec(e_shape.iter().product(), 0.0, 1.0);
        let x_shape = [b, t, c];
        let (y, w, g) = value_and_grads(&gpu, &mut rng, &[(&x, &x_shape), (&e, &e_shape)], |tape, v| {
            add_broadcast_var(tape, &v[0], &v[1]).unwrap()
        });
        let what = format!("add_broadcast {x_shape:?} + {e_shape:?}");
        assert_close(&what, &y, &reference::add_broadcast(&f64s(&x), &f64s(&e)), 1e-7, 0.0);
        assert_exact(&format!("∂x {what}"), &g[0], &f64s(&w));
        let fd = finite_diff(&f64s(&e), &f64s(&w), |e| reference::add_broadcast(&f64s(&x), e));
        assert_close(&format!("∂e {what}"), &g[1], &fd, 1e-6, 1e-9);
    }
    // The CLS token [1, 1, C] expanded to [B, 1, C].
    for (b, c) in [(5, 768), (1, 3), (300, 2)] {
        let cls = rng.normal_vec(c, 0.0, 1.0);
        let (y, w, g) = value_and_grads(&gpu, &mut rng, &[(&cls, &[1, 1, c])], |tape, v| {
            expand_var(tape, &v[0], &[b, 1, c]).unwrap()
        });
        let what = format!("expand [1, 1, {c}] to [{b}, 1, {c}]");
        assert_exact(&what, &y, &reference::expand(&f64s(&cls), b * c));
        let fd = finite_diff(&f64s(&cls), &f64s(&w), |x| reference::expand(x, b * c));
        assert_close(&format!("∂ {what}"), &g[0], &fd, 1e-6, 1e-9);
    }
    let x = Tensor::zeros(&gpu, &[2, 3, 4]).unwrap();
    assert!(shape::add_broadcast(&gpu, &x, &Tensor::zeros(&gpu, &[3, 5]).unwrap()).is_err());
    assert!(shape::expand(&gpu, &Tensor::zeros(&gpu, &[2, 4]).unwrap(), &[2, 3, 4]).is_err());
}

#[test]
fn reshape_is_free_and_reshapes_its_gradient_back() {
    let gpu = gpu();
    let mut rng = Rng::new(56);
    let x = rng.normal_vec(24, 0.0, 1.0);
    let t = Tensor::from_slice(&gpu, &x, &[2, 3, 4]).unwrap();
    let mut tape = Tape::new(&gpu);
    let v = tape.param(&t);
    let r = reshape_var(&mut tape, &v, &[6, 4]).unwrap();
    assert!(r.value().same_buffer(&t), "reshape copied");
    let p = permute_var(&mut tape, &r, &[1, 0]).unwrap();
    let loss = sum_var(&mut tape, &p).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let g = grads.get(&v).unwrap();
    assert_eq!(g.shape(), &[2, 3, 4]);
    assert_eq!(gpu.read(g).unwrap(), vec![1.0; 24]);
    assert!(reshape_var(&mut Tape::new(&gpu), &v, &[5, 5]).is_err());
}
