//! Twins of `shaders/conv.wgsl`: PyTorch's `F.conv2d` (dilation 1) and its gradients, as
//! the textbook loops over every output, each gradient written from its own formula.

/// Geometry of a convolution: `x` `[b, cin, h, w]`, weight `[cout, cin/groups, kh, kw]`.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// `(vertical, horizontal)` stride.
    pub stride: (usize, usize),
    /// `(rows, columns)` of zero padding on each side.
    pub padding: (usize, usize),
    /// Groups.
    pub groups: usize,
}

impl Geometry {
    /// Output height and width.
    pub fn out(&self) -> (usize, usize) {
        let (ph, pw) = self.padding;
        ((self.h + 2 * ph - self.kh) / self.stride.0 + 1, (self.w + 2 * pw - self.kw) / self.stride.1 + 1)
    }

    /// Input channels per group.
    pub fn cpg(&self) -> usize {
        self.cin / self.groups
    }

    /// Calls `f(b, o, oh, ow, ci, c, i, j, ih, iw)` for every term `x[b,ci,ih,iw]·w[o,c,i,j]`
    /// of every output that reads a real (not padding) input.
    fn each_term(&self, mut f: impl FnMut([usize; 10])) {
        let (oh_n, ow_n) = self.out();
        let cpg = self.cpg();
        let per_group = self.cout / self.groups;
        for b in 0..self.b {
            for o in 0..self.cout {
                let g = o / per_group;
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        for c in 0..cpg {
                            for i in 0..self.kh {
                                for j in 0..self.kw {
                                    let ih = (oh * self.stride.0 + i).checked_sub(self.padding.0);
                                    let iw = (ow * self.stride.1 + j).checked_sub(self.padding.1);
                                    if let (Some(ih), Some(iw)) = (ih, iw)
                                        && ih < self.h
                                        && iw < self.w
                                    {
                                        f([b, o, oh, ow, g * cpg + c, c, i, j, ih, iw]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn x_at(&self, b: usize, ci: usize, ih: usize, iw: usize) -> usize {
        ((b * self.cin + ci) * self.h + ih) * self.w + iw
    }

    fn w_at(&self, o: usize, c: usize, i: usize, j: usize) -> usize {
        ((o * self.cpg() + c) * self.kh + i) * self.kw + j
    }

    fn y_at(&self, b: usize, o: usize, oh: usize, ow: usize) -> usize {
        let (oh_n, ow_n) = self.out();
        ((b * self.cout + o) * oh_n + oh) * ow_n + ow
    }

    fn y_len(&self) -> usize {
        let (oh, ow) = self.out();
        self.b * self.cout * oh * ow
    }
}

/// `y[b,o,oh,ow] = bias[o] + Σ_{c,i,j} x[b, g·Cin/G + c, oh·sh − ph + i, ow·sw − pw + j]·w[o,c,i,j]`.
pub fn conv2d(x: &[f64], w: &[f64], bias: Option<&[f64]>, geo: &Geometry) -> Vec<f64> {
    let mut y = vec![0.0; geo.y_len()];
    for (k, v) in y.iter_mut().enumerate() {
        let (oh, ow) = geo.out();
        *v = bias.map_or(0.0, |b| b[(k / (oh * ow)) % geo.cout]);
    }
    geo.each_term(|[b, o, oh, ow, ci, c, i, j, ih, iw]| {
        y[geo.y_at(b, o, oh, ow)] += x[geo.x_at(b, ci, ih, iw)] * w[geo.w_at(o, c, i, j)];
    });
    y
}

/// `∂x[b,ci,ih,iw] = Σ ∂y[b,o,oh,ow]·w[o,c,i,j]` over every term of the forward sum that
/// reads `x[b,ci,ih,iw]`.
pub fn conv2d_grad_input(dy: &[f64], w: &[f64], geo: &Geometry) -> Vec<f64> {
    let mut dx = vec![0.0; geo.b * geo.cin * geo.h * geo.w];
    geo.each_term(|[b, o, oh, ow, ci, c, i, j, ih, iw]| {
        dx[geo.x_at(b, ci, ih, iw)] += dy[geo.y_at(b, o, oh, ow)] * w[geo.w_at(o, c, i, j)];
    });
    dx
}

/// `∂w[o,c,i,j] = Σ_{b,oh,ow} ∂y[b,o,oh,ow]·x[b, g·Cin/G + c, ih, iw]`.
pub fn conv2d_grad_weight(dy: &[f64], x: &[f64], geo: &Geometry) -> Vec<f64> {
    let mut dw = vec![0.0; geo.cout * geo.cpg() * geo.kh * geo.kw];
    geo.each_term(|[b, o, oh, ow, ci, c, i, j, ih, iw]| {
        dw[geo.w_at(o, c, i, j)] += dy[geo.y_at(b, o, oh, ow)] * x[geo.x_at(b, ci, ih, iw)];
    });
    dw
}

/// `∂b[o] = Σ_{b,oh,ow} ∂y[b,o,oh,ow]`.
pub fn conv2d_grad_bias(dy: &[f64], geo: &Geometry) -> Vec<f64> {
    let (oh, ow) = geo.out();
    let mut db = vec![0.0; geo.cout];
    for (k, v) in dy.iter().enumerate() {
        db[(k / (oh * ow)) % geo.cout] += v;
    }
    db
}
