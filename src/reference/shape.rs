//! Twins of `shaders/shape.wgsl`, and a direct strided convolution for patch embeddings.

use crate::tensor::numel;

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    (0..shape.len()).map(|i| numel(&shape[i + 1..])).collect()
}

/// `y[i_0, …] = x[i_{perm⁻¹}…]`: axis `a` of `y` is axis `perm[a]` of `x`.
pub fn permute(x: &[f64], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let (xs, ys) = (strides(shape), strides(&out_shape));
    (0..x.len())
        .map(|j| {
            let src: usize = (0..perm.len()).map(|a| (j / ys[a]) % out_shape[a] * xs[perm[a]]).sum();
            x[src]
        })
        .collect()
}

/// `[x_0 | x_1 | …]` along `axis`; `shapes[i]` is the shape of `inputs[i]`.
pub fn concat(inputs: &[&[f64]], shapes: &[&[usize]], axis: usize) -> Vec<f64> {
    let outer = numel(&shapes[0][..axis]);
    let mut y = Vec::new();
    for o in 0..outer {
        for (x, shape) in inputs.iter().zip(shapes) {
            let block = numel(&shape[axis..]);
            y.extend_from_slice(&x[o * block..(o + 1) * block]);
        }
    }
    y
}

/// `x[.., start..start + len, ..]` along `axis`.
pub fn slice(x: &[f64], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<f64> {
    let inner = numel(&shape[axis + 1..]);
    let outer = numel(&shape[..axis]);
    let mut y = Vec::new();
    for o in 0..outer {
        let base = (o * shape[axis] + start) * inner;
        y.extend_from_slice(&x[base..base + len * inner]);
    }
    y
}

/// `y[j] = x[j] + e[j mod |e|]`.
pub fn add_broadcast(x: &[f64], e: &[f64]) -> Vec<f64> {
    x.iter().enumerate().map(|(j, v)| v + e[j % e.len()]).collect()
}

/// `y[j] = x[j mod |x|]` for `n` outputs.
pub fn expand(x: &[f64], n: usize) -> Vec<f64> {
    (0..n).map(|j| x[j % x.len()]).collect()
}

/// Patch rows `[B, gh·gw, C·ph·pw]` of images `[B, C, H, W]` for a `[ph, pw]` patch, row
/// order `(c, kh, kw)`.
pub fn patchify(img: &[f64], shape: &[usize], patch: [usize; 2]) -> Vec<f64> {
    let mut y = Vec::new();
    for_each_patch_pixel(shape, patch, |i| y.push(img[i]));
    y
}

/// The adjoint of [`patchify`]: scatters patch rows back to images (0 where no patch reads).
pub fn unpatchify(rows: &[f64], shape: &[usize], patch: [usize; 2]) -> Vec<f64> {
    let mut img = vec![0.0; shape.iter().product()];
    let mut j = 0;
    for_each_patch_pixel(shape, patch, |i| {
        img[i] += rows[j];
        j += 1;
    });
    img
}

/// Calls `visit` with the image index of each entry of the patch rows, in their order.
fn for_each_patch_pixel(shape: &[usize], [ph, pw]: [usize; 2], mut visit: impl FnMut(usize)) {
    let (b, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    for bi in 0..b {
        for py in 0..h / ph {
            for px in 0..w / pw {
                for ci in 0..c {
                    for kh in 0..ph {
                        for kw in 0..pw {
                            visit(((bi * c + ci) * h + py * ph + kh) * w + px * pw + kw);
                        }
                    }
                }
            }
        }
    }
}

/// The convolution `y[b, o, py, px] = bias[o] + Σ_{c,kh,kw} w[o, c, kh, kw]·img[b, c,
/// py·ph + kh, px·pw + kw]` with stride `(ph, pw)`, returned as tokens `[B, gh·gw, D]`
/// (patches row-major). Written as the direct sum, independent of [`patchify`].
pub fn patch_conv(
    img: &[f64],
    shape: &[usize],
    w: &[f64],
    d: usize,
    patch: [usize; 2],
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let (b, c, h, wd) = (shape[0], shape[1], shape[2], shape[3]);
    let [ph, pw] = patch;
    let (gh, gw) = (h / ph, wd / pw);
    let mut y = vec![0.0; b * gh * gw * d];
    for bi in 0..b {
        for py in 0..gh {
            for px in 0..gw {
                for o in 0..d {
                    let mut acc = bias.map_or(0.0, |bias| bias[o]);
                    for ci in 0..c {
                        for kh in 0..ph {
                            for kw in 0..pw {
                                let pixel = img[((bi * c + ci) * h + py * ph + kh) * wd + px * pw + kw];
                                acc += w[((o * c + ci) * ph + kh) * pw + kw] * pixel;
                            }
                        }
                    }
                    y[((bi * gh + py) * gw + px) * d + o] = acc;
                }
            }
        }
    }
    y
}
