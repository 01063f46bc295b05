//! LoRA exactly as Hugging Face PEFT (SPEC §4): `y = x Wᵀ + b + s·(x Aᵀ) Bᵀ`, with
//! `s = lora_alpha / r` (or `/ √r` with rsLoRA). `B·A` is never formed while training.

use super::config::{LoraConfig, LoraInit, layer_regex};
use super::params::Slot;
use super::source::Init;
use super::{Build, PEFT_PREFIX};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::io::safetensors::HostTensor;
use crate::nn::weights::module_shapes;
use crate::nn::{ModuleId, Naming, Pattern, Targets};
use crate::ops::dropout::dropout_var;
use crate::ops::linear::linear_var;
use crate::ops::matmul::{MatmulSpec, matmul_var};
use crate::ops::patch::patchify_var;
use crate::ops::shape::reshape_var;

/// One adapted module.
#[derive(Clone, Debug)]
pub(crate) struct LoraModule {
    pub(crate) module: ModuleId,
    pub(crate) a: Slot,
    pub(crate) b: Slot,
    /// Rank and alpha after `rank_pattern` and `alpha_pattern`.
    pub(crate) r: usize,
    pub(crate) alpha: f64,
    pub(crate) scale: f32,
    /// PEFT's `lora_dropout` on the input of the LoRA branch while training.
    pub(crate) dropout: f64,
    /// The module's key stem, `base_model.model.<path>` in the naming its tensors use.
    pub(crate) stem: String,
}

/// Resolves the targets and creates (or reads) `lora_A` and `lora_B` for each.
pub(crate) fn build(cfg: &LoraConfig, build: &mut Build<'_>) -> Result<Vec<LoraModule>> {
    let layers = build.model.num_hidden_layers;
    if let Some(&bad) = cfg.layers_to_transform.iter().flatten().find(|&&l| l >= layers) {
        return Err(Error::Config {
            path: build.config_path.to_path_buf(),
            key: "layers_to_transform".into(),
            message: format!(
                "names layer {bad}, but the model has {layers} layers, numbered from 0 to {}",
                layers.saturating_sub(1)
            ),
        });
    }
    let mut modules = Vec::new();
    // The first module left out because the file names it in a naming its keys do not use
    // (see `Build::left_out_by_file`): when that leaves nothing, the file is more likely broken.
    let mut left_out: Option<String> = None;
    let rank_alpha = cfg.rank_alpha_lookup();
    build.check_target_kinds(&cfg.target_modules)?;
    // An exclusion, like a target, names modules in the namings the file was written in: PEFT
    // under transformers 5 does not see `output.dense`, and adapted what it names. An entry
    // in the other naming still excludes a module the file has no tensors for (as this crate
    // saved such configs before spelling them out; PEFT would add that module with `B = 0`,
    // which changes nothing).
    let namings = build.read_namings();
    // Refused when read and by `check_values` if not regexes.
    let layer_names: Vec<Pattern> = cfg.layers_pattern.iter().filter_map(|name| layer_regex(name).ok()).collect();
    for (module, matched) in cfg.target_modules.resolve(layers, build.config_path)? {
        if build.saved.contains(&module) {
            continue; // PEFT never adapts a module it also saves.
        }
        if let Some(ex) = &cfg.exclude_modules
            && (namings.iter().any(|&n| ex.matches_under(module, n))
                || (ex.matches(module).is_some() && !build.holds_any_naming(module, "lora_A.weight")))
        {
            continue;
        }
        if !in_layers_to_transform(cfg, &layer_names, module, matched) {
            continue;
        }
        let named_under = |n: Naming| cfg.target_modules.matches_under(module, n);
        let Some(stem) = build.module_stem(module, named_under, "lora_A.weight", Some(&mut left_out))? else {
            continue;
        };
        // PEFT matches `rank_pattern` and `alpha_pattern` against the module's path in the
        // model it runs on: for a file, the naming of its keys (the one the PEFT that wrote it
        // saw); for a new adapter, the naming its target matched, transformers 5's when it
        // matches under both (the naming a new adapter is saved in).
        let keyed = stem.strip_prefix(PEFT_PREFIX).and_then(Naming::of_path);
        let pattern_naming = match keyed {
            Some(n) if build.is_file() => n,
            _ if named_under(Naming::Transformers5) => Naming::Transformers5,
            _ => matched,
        };
        let (r, alpha) = rank_alpha(&module.path(pattern_naming));
        let (w, _) = module_shapes(build.model, module);
        let (a_shape, b_shape) = match w.as_slice() {
            [out, inp] => (vec![r, *inp], vec![*out, r]),
            [out, c, kh, kw] => (vec![r, *c, *kh, *kw], vec![*out, r, 1, 1]),
            _ => unreachable!("adaptable modules are linear or conv"),
        };
        let fan_in: usize = a_shape[1..].iter().product();
        // PEFT's inits. Kaiming-uniform with a = √5, as `nn.Linear` and `nn.Conv2d` start, is
        // U(−1/√fan_in, 1/√fan_in); B's fan-in is r.
        let kaiming = |fan_in: usize| Init::Uniform { bound: 1.0 / (fan_in as f64).sqrt() };
        let (a_init, b_init) = match cfg.init {
            LoraInit::Default => (kaiming(fan_in), Init::Zeros),
            LoraInit::Gaussian => (Init::Normal { mean: 0.0, std: 1.0 / r as f64 }, Init::Zeros),
            LoraInit::Random => (kaiming(fan_in), kaiming(r)),
            LoraInit::Orthogonal if !build.is_file() => orthogonal_init(build, cfg, &w, r, &stem)?,
            LoraInit::Orthogonal => (Init::Zeros, Init::Zeros), // read from the file
            LoraInit::LoadOnly(name) if !build.is_file() => {
                return Err(Error::Config {
                    path: build.config_path.to_path_buf(),
                    key: "init_lora_weights".into(),
                    message: format!(
                        "is \"{name}\", an initialisation this crate does not make for a new adapter; start from \
                         true, false or \"gaussian\" (an adapter trained with it loads)"
                    ),
                });
            }
            LoraInit::LoadOnly(_) => (Init::Zeros, Init::Zeros), // read from the file
        };
        let path = module.path(pattern_naming);
        let overlap = |e| overlapping_patterns(e, cfg, &path);
        let a = build.trainable(&format!("{stem}.lora_A.weight"), &a_shape, a_init).map_err(overlap)?;
        let b = build.trainable(&format!("{stem}.lora_B.weight"), &b_shape, b_init).map_err(overlap)?;
        let scale = cfg.scaling(r, alpha) as f32;
        modules.push(LoraModule { module, a, b, r, alpha, scale, dropout: cfg.lora_dropout, stem });
    }
    // No module of any layer, under either naming, has an index PEFT finds after the names.
    let finds_no_layer = || {
        ModuleId::all(layers)
            .into_iter()
            .filter(|m| matches!(m, ModuleId::Layer(..)))
            .all(|m| Naming::BOTH.into_iter().all(|n| !in_named_layer(&layer_names, &m.path(n))))
    };
    if modules.is_empty()
        && !layer_names.is_empty()
        && cfg.layers_to_transform.as_ref().is_some_and(|keep| !keep.is_empty())
        && finds_no_layer()
    {
        return Err(Error::Config {
            path: build.config_path.to_path_buf(),
            key: "layers_pattern".into(),
            message: "finds no layer in this ViT, so layers_to_transform keeps no module: PEFT reads a layer's \
                      index after one of these names, in `(?:^|.*?\\.)NAME\\.(?P<idx>\\d+)\\.`, and a ViT's \
                      layers are `vit.encoder.layer.N` on disk and `vit.layers.N` in transformers 5 (`layer` or \
                      `layers`)"
                .into(),
        });
    }
    build.require_adapted(
        modules.len(),
        left_out,
        "modules_to_save, exclude_modules, layers_to_transform and layers_pattern",
    )?;
    Ok(modules)
}

/// `e`, a file's factor of the module at `path` whose shape is not the config's, told as what
/// it likely is when two `rank_pattern` keys match that module: PEFT takes the first key that
/// matches but saves the keys sorted, so it reads its own file back with another rank (and
/// fails on it too). Any other error as it is.
fn overlapping_patterns(e: Error, cfg: &LoraConfig, path: &str) -> Error {
    match e {
        Error::AdapterShape { path: file, key, expected, got, .. } if cfg.patterns_overlap([path]) => Error::Format {
            path: file,
            message: format!(
                "tensor `{key}` is shape {got:?}, but rank_pattern gives {expected:?}: two of its keys match \
                 `{path}`, and PEFT saves them sorted, so its file reads back with another rank (PEFT cannot load \
                 it either)"
            ),
        },
        e => e,
    }
}

/// The largest rank PEFT's `"orthogonal"` init is made for here: its basis costs about
/// `4·r³` operations per module on the host (under a second at 1024, minutes past 4096).
const MAX_ORTHOGONAL_RANK: usize = 1024;

/// The inits of `A` and `B` for PEFT's `"orthogonal"`: one orthogonal basis drawn per module,
/// its even rows for `A` and odd rows for `B`. PEFT refuses an odd rank; it replaces a conv's
/// factors with matrices its forward cannot use, so a conv is refused here.
fn orthogonal_init(build: &mut Build<'_>, cfg: &LoraConfig, w: &[usize], r: usize, stem: &str) -> Result<(Init, Init)> {
    let refuse = |key: &str, message: String| {
        Err(Error::Config { path: build.config_path.to_path_buf(), key: key.into(), message })
    };
    let path = stem.strip_prefix(PEFT_PREFIX).unwrap_or(stem);
    if w.len() != 2 {
        return refuse(
            "init_lora_weights",
            format!("is \"orthogonal\", which makes factors for linear layers only; `{path}` is a convolution"),
        );
    }
    let key = if r == cfg.r { "r" } else { "rank_pattern" };
    if !r.is_multiple_of(2) {
        return refuse(key, format!("gives `{path}` rank {r}; init_lora_weights \"orthogonal\" needs an even rank"));
    }
    if r > MAX_ORTHOGONAL_RANK {
        return refuse(
            key,
            format!(
                "gives `{path}` rank {r}; init_lora_weights \"orthogonal\" draws an r × r orthogonal basis per \
                 module (work growing as r³), made here for ranks up to {MAX_ORTHOGONAL_RANK}"
            ),
        );
    }
    let basis_seed = build.source.shared_seed();
    Ok((
        Init::Orthogonal { rank: r, rows: 0, basis_seed, transposed: true },
        Init::Orthogonal { rank: r, rows: 1, basis_seed, transposed: false },
    ))
}

/// PEFT's `layers_to_transform`: a module matched by a target name as a dotted suffix is kept
/// only inside a listed layer (modules outside the layers have no index and are dropped); a
/// module whose path is itself listed in `target_modules`, or an empty list, keeps it. (A regex
/// `target_modules` with `layers_to_transform` is a config error, as in PEFT.) With
/// `layers_pattern`, the index is the one PEFT's expression around the first name that matches
/// the path finds ([`layer_regex`]; none when that match leaves its index out), under either
/// naming, as targets match.
fn in_layers_to_transform(cfg: &LoraConfig, layer_names: &[Pattern], module: ModuleId, matched: Naming) -> bool {
    let (Some(keep), Targets::Names(names)) = (&cfg.layers_to_transform, &cfg.target_modules) else { return true };
    if keep.is_empty() || names.contains(&module.path(matched)) {
        return true;
    }
    let ModuleId::Layer(i, _) = module else { return false };
    keep.contains(&i)
        && (layer_names.is_empty() || Naming::BOTH.into_iter().any(|n| in_named_layer(layer_names, &module.path(n))))
}

/// Whether PEFT finds a layer index in `path` after one of `layer_names` (its first name that
/// matches decides; a ViT's module path holds one number, its layer's).
fn in_named_layer(layer_names: &[Pattern], path: &str) -> bool {
    layer_names.iter().find(|re| re.is_match(path)).is_some_and(|re| re.matches_with_group(path, "idx"))
}

/// The dropout mask of one LoRA module's input in a training step: drawn from `seed` over the
/// input of the step's whole batch, of which this pass computes `images` images from
/// `first_image` on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Draw {
    pub seed: u64,
    pub first_image: usize,
    pub images: usize,
}

/// The LoRA branch's input `x` (image-major, of [`Draw::images`] images): `x`, or `dropout(x)`
/// while training (`draw` given), with the batch's mask over this pass's images.
fn branch_input(tape: &mut Tape, m: &LoraModule, x: &Var, draw: Option<Draw>) -> Result<Var> {
    match draw {
        Some(d) if m.dropout > 0.0 => {
            let per_image = x.value().len() / d.images.max(1);
            dropout_var(tape, x, m.dropout, d.seed, d.first_image.wrapping_mul(per_image))
        }
        _ => Ok(x.clone()),
    }
}

/// `x Wᵀ + b + s·(dropout(x) Aᵀ) Bᵀ`; the LoRA branch is added in the epilogue of its last
/// product. Dropout applies only while training (`draw` given), as in PEFT.
#[expect(clippy::too_many_arguments, reason = "the module, its two factors, the base layer and the mask")]
pub(crate) fn linear(
    tape: &mut Tape,
    m: &LoraModule,
    a: &Var,
    b: &Var,
    x: &Var,
    w: &Var,
    bias: Option<&Var>,
    draw: Option<Draw>,
) -> Result<Var> {
    let base = linear_var(tape, x, w, bias)?;
    let xd = branch_input(tape, m, x, draw)?;
    let h = matmul_var(tape, &xd, a, MatmulSpec::new().transpose_b(), None, None)?;
    matmul_var(tape, &h, b, MatmulSpec::new().transpose_b().scaled(m.scale), None, Some(&base))
}

/// The patch embedding with a LoRA conv (PEFT's `Conv2d` LoRA: `A` a conv of the same kernel
/// and stride to `r` channels, `B` a 1×1 conv), done on patch rows.
#[expect(clippy::too_many_arguments, reason = "the module, its two factors, the base conv and the mask")]
pub(crate) fn patch_embed(
    tape: &mut Tape,
    m: &LoraModule,
    a: &Var,
    b: &Var,
    images: &Var,
    w: &Var,
    bias: &Var,
    draw: Option<Draw>,
) -> Result<Var> {
    let &[d, c, ph, pw] = w.shape() else {
        return Err(Error::shape("LoRA conv", "a weight [D, C, ph, pw]", format!("{:?}", w.shape())));
    };
    let r = a.shape()[0];
    let rows = patchify_var(tape, images, [ph, pw])?;
    let w2 = reshape_var(tape, w, &[d, c * ph * pw])?;
    let a2 = reshape_var(tape, a, &[r, c * ph * pw])?;
    let b2 = reshape_var(tape, b, &[d, r])?;
    let base = linear_var(tape, &rows, &w2, Some(bias))?;
    let rows_d = branch_input(tape, m, &rows, draw)?;
    let h = matmul_var(tape, &rows_d, &a2, MatmulSpec::new().transpose_b(), None, None)?;
    matmul_var(tape, &h, &b2, MatmulSpec::new().transpose_b().scaled(m.scale), None, Some(&base))
}

/// `W ← W + s·B·A` (for a conv, `A` flattened over its kernel).
pub(crate) fn merge(m: &LoraModule, a: &HostTensor, b: &HostTensor, w: &mut HostTensor) {
    let r = a.shape[0];
    let cols = a.len() / r;
    let rows = b.shape[0];
    for o in 0..rows {
        for i in 0..cols {
            let delta: f64 = (0..r).map(|k| f64::from(b.data[o * r + k]) * f64::from(a.data[k * cols + i])).sum();
            let slot = &mut w.data[o * cols + i];
            *slot = (f64::from(*slot) + f64::from(m.scale) * delta) as f32;
        }
    }
}
