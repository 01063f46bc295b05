//! Twins of `shaders/matmul.wgsl` and of the linear layer built on it.

use crate::ops::matmul::MatmulSpec;

/// Element `(i, j)` of `op(M)` for a row-major matrix `rows × cols` at `m`.
fn at(m: &[f64], cols: usize, transposed: bool, i: usize, j: usize) -> f64 {
    if transposed { m[j * cols + i] } else { m[i * cols + j] }
}

/// `C[z] = alpha · op(A[z]) · op(B[z]) (+ bias[j]) (+ addend[z, i, j])` from the textbook sum.
///
/// `a_shape`/`b_shape` are `[..., rows, cols]`; batch axes equal, or one side a single
/// matrix shared by all batches (as the kernel requires). Returns `C` row-major.
pub fn matmul(
    a: &[f64],
    a_shape: &[usize],
    b: &[f64],
    b_shape: &[usize],
    spec: MatmulSpec,
    bias: Option<&[f64]>,
    addend: Option<&[f64]>,
) -> Vec<f64> {
    let (ra, ca) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let (rb, cb) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
    let (m, k) = if spec.trans_a { (ca, ra) } else { (ra, ca) };
    let n = if spec.trans_b { rb } else { cb };
    let (za, zb) = (a.len() / (ra * ca).max(1), b.len() / (rb * cb).max(1));
    let batch = za.max(zb);
    let mut c = vec![0.0; batch * m * n];
    for z in 0..batch {
        let am = &a[(z % za) * ra * ca..][..ra * ca];
        let bm = &b[(z % zb) * rb * cb..][..rb * cb];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|q| at(am, ca, spec.trans_a, i, q) * at(bm, cb, spec.trans_b, q, j)).sum();
                let at_c = (z * m + i) * n + j;
                c[at_c] = spec.alpha as f64 * dot
                    + bias.map_or(0.0, |bias| bias[j])
                    + addend.map_or(0.0, |addend| addend[at_c]);
            }
        }
    }
    c
}

/// `y = x Wᵀ + b` for `x` `[rows, in]` (flattened leading axes), `W` `[out, in]`.
pub fn linear(x: &[f64], w: &[f64], out: usize, b: Option<&[f64]>) -> Vec<f64> {
    let inn = w.len() / out;
    let rows = x.len() / inn;
    matmul(x, &[rows, inn], w, &[out, inn], MatmulSpec::new().transpose_b(), b, None)
}
