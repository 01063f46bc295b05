//! The closed set of kernels: each is one entry point of one shader file with its binding
//! counts.
//!
//! Binding convention (every shader follows it): `@group(0)` holds the read-only storage
//! inputs at bindings `0..inputs`, then the read-write outputs, in the order of
//! [`Kernel::spec`]; parameters arrive as one `var<immediate>` struct. A kernel whose
//! shader file or entry point is missing fails the `shaders_validate` test, and one that is
//! not listed here cannot be dispatched.

use super::Shader;

/// One compute entry point of one shader file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// `y[i] = value`.
    Fill,
    /// `y[i] = a[i] + b[i]`.
    Add,
    /// `y[i] = a[i] * b[i]`.
    Mul,
    /// `y[i] = alpha * a[i] + beta * b[i]`.
    Axpby,
    /// `y[i] = alpha * a[i]`.
    Scale,
    /// LayerNorm over the last axis; also writes the row mean and rstd.
    LayerNorm,
    /// `∂x` of LayerNorm.
    LayerNormBackward,
    /// Partial sums of `∂y·x̂` over chunks of rows (`∂γ` before `SumRows`).
    LayerNormGammaPartials,
    /// `y = softmax(alpha·x)` over the last axis.
    Softmax,
    /// `∂x = alpha·y ⊙ (∂y − Σ ∂y ⊙ y)`.
    SoftmaxBackward,
    /// `y = erf(x)`.
    Erf,
    /// `y = x·Φ(x)`.
    Gelu,
    /// `∂x = ∂y·(Φ(x) + x·φ(x))`.
    GeluBackward,
    /// `y = gelu(x + b)`, `b` broadcast over rows.
    BiasGelu,
    /// `∂z = ∂y·gelu'(x + b)`.
    BiasGeluBackward,
    /// Per-row cross-entropy, log-sum-exp and argmax hit.
    CrossEntropyRows,
    /// `∂logits = (softmax − onehot)·∂loss / rows`.
    CrossEntropyBackward,
    /// Fused SGD step over flat buffers: `p ← p − lr·(g + wd·p)`.
    SgdStep,
    /// Fused AdamW step over flat buffers (torch.optim.AdamW).
    AdamwStep,
    /// `C = alpha·op(A)·op(B) (+ bias) (+ addend)`, 128×128 tiles.
    Matmul,
    /// The same product on 64×64 tiles.
    Matmul64,
    /// The same product for outputs with few columns (256×8 tiles).
    MatmulNarrow,
    /// Permutes the axes of a tensor of rank ≤ 4.
    Permute,
    /// Copies a block along one axis between two tensors (concat and slice).
    CopyBlock,
    /// `y = x + e`, `e` broadcast over the leading axes of `x`.
    AddBroadcast,
    /// `y = alpha·x`, `x` repeated over new leading axes.
    Expand,
    /// Images `[B, C, H, W]` to patch rows `[B, gh·gw, C·p·p]`.
    Patchify,
    /// The adjoint of `Patchify` (col2im without overlap).
    Unpatchify,
    /// Partial sums of `[rows, cols]` over chunks of rows.
    SumRows,
    /// Partial sums of a flat array over blocks, by a tree in workgroup memory.
    SumAll,
    /// Orthonormal DCT-II along the last axis of `[rows, N]`.
    Dct2Rows,
    /// Orthonormal DCT-III (inverse DCT-II) along the last axis of `[rows, N]`.
    Dct3Rows,
    /// DCT-II along one axis of the token grid; prefix tokens copied.
    Dct2GridAxis,
    /// DCT-III along one axis of the token grid; prefix tokens copied.
    Dct3GridAxis,
    /// Fused MoPPA filter `IDCT2(DCT2(x) ⊙ r)` in workgroup memory.
    MoppaFused,
    /// Fused MoPPA filter backward: `∂x` and per-chunk partial `∂r`.
    MoppaFusedGrad,
    /// [`Kernel::MoppaFused`] specialised to 14×14 grids.
    MoppaFused14,
    /// [`Kernel::MoppaFusedGrad`] specialised to 14×14 grids (per-example partial `∂r`).
    MoppaFusedGrad14,
    /// Grid tokens times `r` broadcast over the batch; prefix tokens copied.
    GridScale,
    /// `Σ_b u ⊙ v` over the grid tokens.
    GridMulReduce,
    /// Sum of equal-length chunks.
    SumChunks,
    /// Router softmax `π = softmax_b(logits / τ)`.
    RouterProbs,
    /// Route entropy `−mean π log(π + 1e-8)`.
    RouteEntropy,
    /// Router backward from `∂π` to `∂logits`, `∂τ`.
    RouterGrad,
    /// Route entropy backward to `∂logits`, `∂τ`.
    RouteEntropyGrad,
    /// Prior response `r = Σ_b π_b g_b`.
    PriorResponse,
    /// Prior response backward to `u_b = K_b T_b` for one branch.
    PriorGradU,
    /// Prior response backward to one row of `π`.
    PriorGradProbs,
    /// Prior response backward to `K_b`.
    PriorGradK,
    /// Prior response backward to `T_b`.
    PriorGradT,
    /// Inverted dropout with a hashed mask.
    Dropout,
    /// The MoPPA filter (or the spectrum) with one workgroup per image and channel tile.
    SpectralTile,
    /// The MoPPA filter (or the spectrum) on 14 × 14 grids, a constant DCT matrix.
    SpectralTile14,
    /// `y = conv2d(x, w) + b` (PyTorch's `F.conv2d`), one thread per output.
    Conv2d,
    /// `∂x` of `Conv2d` (transposed convolution), one thread per input element.
    Conv2dGradInput,
    /// Partial sums of `∂w` of `Conv2d` over chunks of batch positions.
    Conv2dGradWeight,
    /// Partial sums of `∂b` of `Conv2d` over chunks of batch positions.
    Conv2dGradBias,
    /// `C = alpha·A·B (+ bias) (+ addend)` laid out for CPU adapters (rows shared by a
    /// workgroup, vec4 loads).
    MatmulRowsNn,
    /// The same with `B` transposed.
    MatmulRowsNt,
    /// The same with `A` transposed.
    MatmulRowsTn,
    /// The same with both transposed.
    MatmulRowsTt,
    /// `MatmulRowsNn` sharing rows among 8 lanes (subgroups of at least 8).
    MatmulRows8Nn,
    /// `MatmulRowsNt` sharing rows among 8 lanes (subgroups of at least 8).
    MatmulRows8Nt,
    /// Fused attention forward: `o`, `lse` from `q`, `k`, `v`.
    AttentionForward,
    /// Fused attention backward to `q` (and `D = Σ ∂o ⊙ o`).
    AttentionBackwardQ,
    /// Fused attention backward to `k` and `v`.
    AttentionBackwardKv,
    /// The MoPPA filter (or the spectrum alone) for CPU adapters.
    MoppaRows,
    /// The same for 14 × 14 grids (half the multiply-adds, by the DCT's symmetry).
    MoppaRows14,
    /// LayerNorm forward, one invocation per row (CPU adapters).
    LayerNormRows,
    /// LayerNorm backward to `x`, one invocation per row (CPU adapters).
    LayerNormBackwardRows,
}

/// Where a kernel lives and how many buffers it binds.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// Its shader file.
    pub shader: Shader,
    /// Its entry point.
    pub entry: &'static str,
    /// Read-only storage inputs (bindings `0..inputs`).
    pub inputs: u32,
    /// Read-write outputs (bindings after the inputs).
    pub outputs: u32,
}

const fn spec(shader: Shader, entry: &'static str, inputs: u32, outputs: u32) -> KernelSpec {
    KernelSpec { shader, entry, inputs, outputs }
}

impl Kernel {
    /// Every kernel, for validation.
    pub const ALL: &'static [Kernel] = &[
        Kernel::Fill,
        Kernel::Add,
        Kernel::Mul,
        Kernel::Axpby,
        Kernel::Scale,
        Kernel::LayerNorm,
        Kernel::LayerNormBackward,
        Kernel::LayerNormGammaPartials,
        Kernel::Softmax,
        Kernel::SoftmaxBackward,
        Kernel::Erf,
        Kernel::Gelu,
        Kernel::GeluBackward,
        Kernel::BiasGelu,
        Kernel::BiasGeluBackward,
        Kernel::CrossEntropyRows,
        Kernel::CrossEntropyBackward,
        Kernel::SgdStep,
        Kernel::AdamwStep,
        Kernel::Matmul,
        Kernel::Matmul64,
        Kernel::MatmulNarrow,
        Kernel::Permute,
        Kernel::CopyBlock,
        Kernel::AddBroadcast,
        Kernel::Expand,
        Kernel::Patchify,
        Kernel::Unpatchify,
        Kernel::SumRows,
        Kernel::SumAll,
        Kernel::Dct2Rows,
        Kernel::Dct3Rows,
        Kernel::Dct2GridAxis,
        Kernel::Dct3GridAxis,
        Kernel::MoppaFused,
        Kernel::MoppaFusedGrad,
        Kernel::MoppaFused14,
        Kernel::MoppaFusedGrad14,
        Kernel::GridScale,
        Kernel::GridMulReduce,
        Kernel::SumChunks,
        Kernel::RouterProbs,
        Kernel::RouteEntropy,
        Kernel::RouterGrad,
        Kernel::RouteEntropyGrad,
        Kernel::PriorResponse,
        Kernel::PriorGradU,
        Kernel::PriorGradProbs,
        Kernel::PriorGradK,
        Kernel::PriorGradT,
        Kernel::Dropout,
        Kernel::SpectralTile,
        Kernel::SpectralTile14,
        Kernel::Conv2d,
        Kernel::Conv2dGradInput,
        Kernel::Conv2dGradWeight,
        Kernel::Conv2dGradBias,
        Kernel::MatmulRowsNn,
        Kernel::MatmulRowsNt,
        Kernel::MatmulRowsTn,
        Kernel::MatmulRowsTt,
        Kernel::MatmulRows8Nn,
        Kernel::MatmulRows8Nt,
        Kernel::AttentionForward,
        Kernel::AttentionBackwardQ,
        Kernel::AttentionBackwardKv,
        Kernel::MoppaRows,
        Kernel::MoppaRows14,
        Kernel::LayerNormRows,
        Kernel::LayerNormBackwardRows,
    ];

    /// Shader, entry point and binding counts.
    pub fn spec(self) -> KernelSpec {
        use Shader as S;
        match self {
            Kernel::Fill => spec(S::Elementwise, "fill", 0, 1),
            Kernel::Add => spec(S::Elementwise, "add", 2, 1),
            Kernel::Mul => spec(S::Elementwise, "mul", 2, 1),
            Kernel::Axpby => spec(S::Elementwise, "axpby", 2, 1),
            Kernel::Scale => spec(S::Elementwise, "scale", 1, 1),
            Kernel::LayerNorm => spec(S::Norm, "layer_norm", 3, 3),
            Kernel::LayerNormBackward => spec(S::Norm, "layer_norm_backward", 5, 1),
            Kernel::LayerNormGammaPartials => spec(S::Norm, "layer_norm_gamma_partials", 4, 1),
            Kernel::Softmax => spec(S::Softmax, "softmax", 1, 1),
            Kernel::SoftmaxBackward => spec(S::Softmax, "softmax_backward", 2, 1),
            Kernel::Erf => spec(S::Activation, "erf", 1, 1),
            Kernel::Gelu => spec(S::Activation, "gelu", 1, 1),
            Kernel::GeluBackward => spec(S::Activation, "gelu_backward", 2, 1),
            Kernel::BiasGelu => spec(S::Activation, "bias_gelu", 2, 1),
            Kernel::BiasGeluBackward => spec(S::Activation, "bias_gelu_backward", 3, 1),
            Kernel::CrossEntropyRows => spec(S::Loss, "cross_entropy_rows", 2, 3),
            Kernel::CrossEntropyBackward => spec(S::Loss, "cross_entropy_backward", 4, 1),
            Kernel::SgdStep => spec(S::Optim, "sgd_step", 2, 1),
            Kernel::AdamwStep => spec(S::Optim, "adamw_step", 2, 3),
            Kernel::Matmul => spec(S::Matmul, "matmul", 4, 1),
            Kernel::Matmul64 => spec(S::Matmul, "matmul64", 4, 1),
            Kernel::MatmulNarrow => spec(S::Matmul, "matmul_narrow", 4, 1),
            Kernel::Permute => spec(S::Shape, "permute", 1, 1),
            Kernel::CopyBlock => spec(S::Shape, "copy_block", 1, 1),
            Kernel::AddBroadcast => spec(S::Shape, "add_broadcast", 2, 1),
            Kernel::Expand => spec(S::Shape, "expand", 1, 1),
            Kernel::Patchify => spec(S::Shape, "patchify", 1, 1),
            Kernel::Unpatchify => spec(S::Shape, "unpatchify", 1, 1),
            Kernel::SumRows => spec(S::Sum, "sum_rows", 1, 1),
            Kernel::SumAll => spec(S::Sum, "sum_all", 1, 1),
            Kernel::Dct2Rows => spec(S::Dct, "dct2_rows", 2, 1),
            Kernel::Dct3Rows => spec(S::Dct, "dct3_rows", 2, 1),
            Kernel::Dct2GridAxis => spec(S::Dct, "dct2_grid_axis", 2, 1),
            Kernel::Dct3GridAxis => spec(S::Dct, "dct3_grid_axis", 2, 1),
            Kernel::MoppaFused => spec(S::Spectral, "moppa_fused", 3, 1),
            Kernel::MoppaFusedGrad => spec(S::Spectral, "moppa_fused_grad", 4, 2),
            Kernel::MoppaFused14 => spec(S::Spectral14, "moppa_fused14", 3, 1),
            Kernel::MoppaFusedGrad14 => spec(S::Spectral14, "moppa_fused_grad14", 4, 2),
            Kernel::GridScale => spec(S::SpectralGrid, "grid_scale", 2, 1),
            Kernel::GridMulReduce => spec(S::SpectralGrid, "grid_mul_reduce", 2, 1),
            Kernel::SumChunks => spec(S::SpectralGrid, "sum_chunks", 1, 1),
            Kernel::RouterProbs => spec(S::Priors, "router_probs", 2, 1),
            Kernel::RouteEntropy => spec(S::Priors, "route_entropy", 2, 1),
            Kernel::RouterGrad => spec(S::Priors, "router_grad", 3, 2),
            Kernel::RouteEntropyGrad => spec(S::Priors, "route_entropy_grad", 3, 2),
            Kernel::PriorResponse => spec(S::Priors, "prior_response", 7, 1),
            Kernel::PriorGradU => spec(S::Priors, "prior_grad_u", 4, 1),
            Kernel::PriorGradProbs => spec(S::Priors, "prior_grad_probs", 3, 1),
            Kernel::PriorGradK => spec(S::Priors, "prior_grad_k", 2, 1),
            Kernel::PriorGradT => spec(S::Priors, "prior_grad_t", 2, 1),
            Kernel::Dropout => spec(S::Dropout, "dropout", 1, 1),
            Kernel::SpectralTile => spec(S::SpectralTile, "spectral_tile", 3, 1),
            Kernel::SpectralTile14 => spec(S::SpectralTile14, "spectral_tile14", 2, 1),
            Kernel::Conv2d => spec(S::Conv, "conv2d", 3, 1),
            Kernel::Conv2dGradInput => spec(S::Conv, "conv2d_grad_input", 2, 1),
            Kernel::Conv2dGradWeight => spec(S::Conv, "conv2d_grad_weight", 2, 1),
            Kernel::Conv2dGradBias => spec(S::Conv, "conv2d_grad_bias", 1, 1),
            Kernel::MatmulRowsNn => spec(S::MatmulRows, "matmul_rows_nn", 4, 1),
            Kernel::MatmulRowsNt => spec(S::MatmulRows, "matmul_rows_nt", 4, 1),
            Kernel::MatmulRowsTn => spec(S::MatmulRows, "matmul_rows_tn", 4, 1),
            Kernel::MatmulRowsTt => spec(S::MatmulRows, "matmul_rows_tt", 4, 1),
            Kernel::MatmulRows8Nn => spec(S::MatmulRows, "matmul_rows8_nn", 4, 1),
            Kernel::MatmulRows8Nt => spec(S::MatmulRows, "matmul_rows8_nt", 4, 1),
            Kernel::AttentionForward => spec(S::Attention, "attention_forward", 3, 2),
            Kernel::AttentionBackwardQ => spec(S::Attention, "attention_backward_q", 6, 2),
            Kernel::AttentionBackwardKv => spec(S::Attention, "attention_backward_kv", 6, 2),
            Kernel::MoppaRows => spec(S::SpectralRows, "moppa_rows", 3, 1),
            Kernel::MoppaRows14 => spec(S::SpectralRows14, "moppa_rows14", 3, 1),
            Kernel::LayerNormRows => spec(S::NormRows, "layer_norm_rows", 3, 3),
            Kernel::LayerNormBackwardRows => spec(S::NormRows, "layer_norm_backward_rows", 5, 1),
        }
    }
}
