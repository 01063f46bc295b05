//! Where an adapter's tensors come from while it is built: a fresh initialisation, or an
//! `adapter_model.safetensors` whose every tensor must be used and well-shaped.

use std::collections::BTreeSet;
use std::path::Path;

use super::params::PEFT_PREFIX;
use crate::error::{Error, Result};
use crate::io::safetensors::{HostTensor, TensorFile};
use crate::nn::Naming;
use crate::rng::Rng;

/// How a fresh tensor is initialised.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// All zeros.
    Zeros,
    /// All equal to the value.
    Const(f32),
    /// `N(mean, std²)`.
    Normal { mean: f64, std: f64 },
    /// Uniform on `[-bound, bound)`.
    Uniform { bound: f64 },
    /// PEFT's `"orthogonal"` LoRA init, one factor of it: `G·Q[rows::2]` (`[n, rank]`, or its
    /// transpose `[rank, n]` when `transposed`) with `G` of shape `[n, rank/2]` drawn from
    /// `N(0, 1/10²)` (PEFT's standard normal divided by 10) and `Q` the `rank × rank`
    /// orthogonal matrix drawn from `basis_seed`. `A` takes the rows
    /// from 0 (transposed), `B` those from 1, so `B·A = 0` while neither is zero.
    Orthogonal { rank: usize, rows: usize, basis_seed: u64, transposed: bool },
}

/// Fresh values from a seeded generator, values read from a file, or shapes only.
pub(crate) enum Source<'a> {
    /// A new adapter; `basis` keeps the last orthogonal basis drawn (its seed, rank and
    /// values), which the two factors of one module share.
    Fresh { rng: Rng, basis: Option<(u64, usize, Vec<f64>)> },
    /// A dry run that checks a config against a model: tensors have their shape and no values,
    /// so nothing is generated or allocated.
    Shapes,
    /// An adapter file; `other_config` names the adapter config it is read with when that is
    /// not the one saved beside it (for messages); `used` collects the keys read, to reject
    /// the rest; `seed` draws what the file leaves undetermined (`A` of RLP's merged form).
    File { file: &'a TensorFile, other_config: Option<&'a Path>, used: BTreeSet<String>, seed: u64 },
}

impl<'a> Source<'a> {
    /// A source reading `file` with the adapter config `config` (for messages); `seed` draws
    /// what the file leaves undetermined.
    pub(crate) fn file(file: &'a TensorFile, config: &'a Path, seed: u64) -> Source<'a> {
        let folder = |p: &Path| {
            let parent = p.parent().unwrap_or(Path::new(""));
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf())
        };
        let other_config = (folder(file.path()) != folder(config)).then_some(config);
        Source::File { file, other_config, used: BTreeSet::new(), seed }
    }

    /// A new adapter's source, drawing from `seed`.
    pub(crate) fn fresh(seed: u64) -> Source<'a> {
        Source::Fresh { rng: Rng::new(seed), basis: None }
    }

    /// Whether tensors come from a file.
    pub(crate) fn is_file(&self) -> bool {
        matches!(self, Source::File { .. })
    }

    /// Whether tensors come from a file read with the config saved beside it (not one given
    /// separately, as `train --init DIR --adapter-config FILE` does).
    pub(crate) fn has_own_config(&self) -> bool {
        matches!(self, Source::File { other_config: None, .. })
    }

    /// Tensor `key` of exactly `shape`: read from the file, or made by `init`.
    pub(crate) fn tensor(&mut self, key: &str, shape: &[usize], init: Init) -> Result<HostTensor> {
        match self {
            Source::Fresh { rng, basis } => Ok(fresh(rng, basis, shape, init)),
            Source::Shapes => Ok(HostTensor { shape: shape.to_vec(), data: Vec::new() }),
            Source::File { file, other_config, used, .. } => {
                used.insert(key.to_string());
                match file.shape(key) {
                    Some(got) if got != shape => Err(Error::AdapterShape {
                        path: file.path().to_path_buf(),
                        key: key.to_string(),
                        expected: shape.into(),
                        got: got.into(),
                        other_config: other_config.map(Path::to_path_buf),
                    }),
                    _ => file.f32(key),
                }
            }
        }
    }

    /// Zeros of `shape` that come from no file (a new classifier head); empty in a dry run.
    pub(crate) fn zeros(&self, shape: &[usize]) -> Result<HostTensor> {
        match self {
            Source::Shapes => Ok(HostTensor { shape: shape.to_vec(), data: Vec::new() }),
            _ => HostTensor::zeros(shape),
        }
    }

    /// A tensor the file does not hold, drawn by `init` from the source's seed mixed with
    /// `stream` (empty in a dry run).
    pub(crate) fn generated(&mut self, shape: &[usize], init: Init, stream: u64) -> HostTensor {
        match self {
            Source::Shapes => HostTensor { shape: shape.to_vec(), data: Vec::new() },
            Source::Fresh { rng, basis } => fresh(rng, basis, shape, init),
            Source::File { seed, .. } => fresh(&mut Rng::new(*seed ^ stream), &mut None, shape, init),
        }
    }

    /// A seed for values that several fresh tensors share (0 for a file or a dry run).
    pub(crate) fn shared_seed(&mut self) -> u64 {
        match self {
            Source::Fresh { rng, .. } => rng.next_u64(),
            Source::Shapes | Source::File { .. } => 0,
        }
    }

    /// Tensor `key` from the file whatever its shape (`None` for a fresh adapter).
    pub(crate) fn any_shape(&mut self, key: &str) -> Result<Option<HostTensor>> {
        match self {
            Source::Fresh { .. } | Source::Shapes => Ok(None),
            Source::File { file, used, .. } => {
                used.insert(key.to_string());
                file.f32(key).map(Some)
            }
        }
    }

    /// Counts the file's keys for which `unread` holds as used, without reading them.
    pub(crate) fn ignore_where(&mut self, unread: impl Fn(&str) -> bool) {
        if let Source::File { file, used, .. } = self {
            used.extend(file.keys().filter(|k| unread(k)).map(str::to_string));
        }
    }

    /// Whether the file holds `key` (false for a fresh adapter).
    pub(crate) fn has(&self, key: &str) -> bool {
        matches!(self, Source::File { file, .. } if file.contains(key))
    }

    /// The namings in which the file's keys name layer modules (none for a fresh adapter).
    pub(crate) fn layer_namings(&self) -> Vec<Naming> {
        let Source::File { file, .. } = self else { return Vec::new() };
        let used: Vec<Naming> =
            file.keys().filter_map(|k| k.strip_prefix(PEFT_PREFIX).and_then(Naming::of_path)).collect();
        Naming::BOTH.into_iter().filter(|n| used.contains(n)).collect()
    }

    /// Fails on the first tensor of the file that nothing used: an adapter for another model
    /// or another configuration.
    pub(crate) fn finish(self) -> Result<()> {
        if let Source::File { file, used, .. } = self
            && let Some(extra) = file.keys().find(|k| !used.contains(*k))
        {
            return Err(Error::Format {
                path: file.path().to_path_buf(),
                message: format!(
                    "tensor `{extra}` does not belong to this adapter config and model \
                     (an adapter made for another model or config?)"
                ),
            });
        }
        Ok(())
    }
}

/// Values of `shape` drawn by `init`; an orthogonal basis is drawn once for the factors that
/// share it (`basis` keeps the last one).
fn fresh(rng: &mut Rng, basis: &mut Option<(u64, usize, Vec<f64>)>, shape: &[usize], init: Init) -> HostTensor {
    let n = shape.iter().product();
    let data = match init {
        Init::Zeros => vec![0.0; n],
        Init::Const(v) => vec![v; n],
        Init::Normal { mean, std } => rng.normal_vec(n, mean, std),
        Init::Uniform { bound } => rng.uniform_vec(n, -bound, bound),
        Init::Orthogonal { rank, rows, basis_seed, transposed } => {
            if !matches!(basis, Some((seed, r, _)) if *seed == basis_seed && *r == rank) {
                *basis = Some((basis_seed, rank, orthogonal(&mut Rng::new(basis_seed), rank)));
            }
            let q = basis.as_ref().map(|(_, _, q)| q.as_slice()).unwrap_or_default();
            let n = n / rank.max(1);
            let mut data = vec![0.0; n * rank];
            for k in 0..n {
                let g: Vec<f64> = (0..rank / 2).map(|_| rng.normal() / 10.0).collect();
                for j in 0..rank {
                    let v: f64 = g.iter().enumerate().map(|(h, g)| g * q[(rows + 2 * h) * rank + j]).sum();
                    data[if transposed { j * n + k } else { k * rank + j }] = v as f32;
                }
            }
            data
        }
    };
    HostTensor { shape: shape.to_vec(), data }
}

/// An `r × r` orthogonal matrix (row-major): the rows of a standard normal matrix made
/// orthonormal by Gram–Schmidt, in f64, each row orthogonalised twice against the ones
/// before it so that rounding leaves no lean.
fn orthogonal(rng: &mut Rng, r: usize) -> Vec<f64> {
    let mut q: Vec<f64> = (0..r * r).map(|_| rng.normal()).collect();
    for i in 0..r {
        for _ in 0..2 {
            for j in 0..i {
                let d: f64 = (0..r).map(|c| q[i * r + c] * q[j * r + c]).sum();
                (0..r).for_each(|c| q[i * r + c] -= d * q[j * r + c]);
            }
        }
        let norm = (0..r).map(|c| q[i * r + c] * q[i * r + c]).sum::<f64>().sqrt();
        // A normal draw in the span of the rows before it has probability zero.
        (0..r).for_each(|c| q[i * r + c] /= norm);
    }
    q
}
