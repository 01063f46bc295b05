//! The closed set of shader files under `shaders/`, compiled into the binary.

/// A WGSL source file under `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shader {
    /// `shaders/elementwise.wgsl`: fill, add, multiply, scale.
    Elementwise,
    /// `shaders/norm.wgsl`: LayerNorm forward and backward.
    Norm,
    /// `shaders/softmax.wgsl`: scaled softmax over the last axis, forward and backward.
    Softmax,
    /// `shaders/activation.wgsl`: erf and exact GELU (plain and with a bias).
    Activation,
    /// `shaders/loss.wgsl`: cross-entropy with integer labels.
    Loss,
    /// `shaders/optim.wgsl`: fused SGD and AdamW steps.
    Optim,
    /// `shaders/matmul.wgsl`: batched tiled matrix products with a fused epilogue.
    Matmul,
    /// `shaders/shape.wgsl`: permute, block copies (concat, slice), broadcasts, patchify.
    Shape,
    /// `shaders/sum.wgsl`: sums over rows and over all elements (tree reductions).
    Sum,
    /// `shaders/dct.wgsl`: orthonormal DCT-II / DCT-III along rows and along grid axes.
    Dct,
    /// `shaders/spectral.wgsl`: the fused MoPPA spectral filter, forward and backward.
    Spectral,
    /// `shaders/spectral_grid.wgsl`: the unfused MoPPA filter's multiply and reductions.
    SpectralGrid,
    /// `shaders/spectral14.wgsl`: the fused MoPPA filter specialised to 14×14 grids.
    Spectral14,
    /// `shaders/priors.wgsl`: physical-prior responses and the router.
    Priors,
    /// `shaders/dropout.wgsl`: inverted dropout with a hashed mask.
    Dropout,
    /// `shaders/spectral_tile.wgsl`: the MoPPA filter laid out for GPUs.
    SpectralTile,
    /// `shaders/spectral_tile14.wgsl`: the same on 14 × 14 grids with a constant DCT matrix.
    SpectralTile14,
    /// `shaders/conv.wgsl`: general 2-D convolution (stride, padding, groups) and its gradients.
    Conv,
    /// `shaders/matmul_rows.wgsl`: the batched product laid out for CPU adapters.
    MatmulRows,
    /// `shaders/attention.wgsl`: fused multi-head attention for CPU adapters.
    Attention,
    /// `shaders/spectral_rows.wgsl`: the MoPPA filter laid out for CPU adapters.
    SpectralRows,
    /// `shaders/spectral_rows14.wgsl`: the same for 14 × 14 grids, by the DCT's symmetry.
    SpectralRows14,
    /// `shaders/norm_rows.wgsl`: LayerNorm laid out for CPU adapters.
    NormRows,
}

impl Shader {
    /// Every shader file, for validation.
    pub const ALL: &'static [Shader] = &[
        Shader::Elementwise,
        Shader::Norm,
        Shader::Softmax,
        Shader::Activation,
        Shader::Loss,
        Shader::Optim,
        Shader::Matmul,
        Shader::Shape,
        Shader::Sum,
        Shader::Dct,
        Shader::Spectral,
        Shader::Priors,
        Shader::Dropout,
        Shader::SpectralTile,
        Shader::SpectralTile14,
        Shader::SpectralGrid,
        Shader::Spectral14,
        Shader::Conv,
        Shader::MatmulRows,
        Shader::Attention,
        Shader::SpectralRows,
        Shader::SpectralRows14,
        Shader::NormRows,
    ];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Norm => "norm.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Loss => "loss.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::Shape => "shape.wgsl",
            Shader::Sum => "sum.wgsl",
            Shader::Dct => "dct.wgsl",
            Shader::Spectral => "spectral.wgsl",
            Shader::SpectralGrid => "spectral_grid.wgsl",
            Shader::Spectral14 => "spectral14.wgsl",
            Shader::Priors => "priors.wgsl",
            Shader::Dropout => "dropout.wgsl",
            Shader::SpectralTile => "spectral_tile.wgsl",
            Shader::SpectralTile14 => "spectral_tile14.wgsl",
            Shader::Conv => "conv.wgsl",
            Shader::MatmulRows => "matmul_rows.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::SpectralRows => "spectral_rows.wgsl",
            Shader::SpectralRows14 => "spectral_rows14.wgsl",
            Shader::NormRows => "norm_rows.wgsl",
        }
    }

    /// Whether the shader uses subgroup operations: its pipelines need a device opened with
    /// [`wgpu::Features::SUBGROUP`] (see [`crate::Gpu::has_subgroups_of`]).
    pub fn uses_subgroups(self) -> bool {
        matches!(self, Shader::MatmulRows | Shader::Attention)
    }

    /// WGSL source text, compiled into the binary.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Shader::Norm => include_str!("../../shaders/norm.wgsl"),
            Shader::Softmax => include_str!("../../shaders/softmax.wgsl"),
            Shader::Activation => include_str!("../../shaders/activation.wgsl"),
            Shader::Loss => include_str!("../../shaders/loss.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::Shape => include_str!("../../shaders/shape.wgsl"),
            Shader::Sum => include_str!("../../shaders/sum.wgsl"),
            Shader::Dct => include_str!("../../shaders/dct.wgsl"),
            Shader::Spectral => include_str!("../../shaders/spectral.wgsl"),
            Shader::SpectralGrid => include_str!("../../shaders/spectral_grid.wgsl"),
            Shader::Spectral14 => include_str!("../../shaders/spectral14.wgsl"),
            Shader::Priors => include_str!("../../shaders/priors.wgsl"),
            Shader::Dropout => include_str!("../../shaders/dropout.wgsl"),
            Shader::SpectralTile => include_str!("../../shaders/spectral_tile.wgsl"),
            Shader::SpectralTile14 => include_str!("../../shaders/spectral_tile14.wgsl"),
            Shader::Conv => include_str!("../../shaders/conv.wgsl"),
            Shader::MatmulRows => include_str!("../../shaders/matmul_rows.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::SpectralRows => include_str!("../../shaders/spectral_rows.wgsl"),
            Shader::SpectralRows14 => include_str!("../../shaders/spectral_rows14.wgsl"),
            Shader::NormRows => include_str!("../../shaders/norm_rows.wgsl"),
        }
    }
}
