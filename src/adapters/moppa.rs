//! MoPPA (SPEC §3): before the attention branch of chosen layers, tokens go through
//! `IDCT2(DCT2(x) ⊙ r)` with `r` the router's mixture of heat, wave and Poisson responses.
//! `K_b` is shared by all layers; `T_b`, router logits and temperature belong to each layer.

use std::collections::BTreeMap;

use super::Build;
use super::config::MoppaConfig;
use super::params::{PEFT_PREFIX, Slot};
use super::source::Init;
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::dct::GridPlan;
use crate::ops::elementwise::{add_var, scale_var};
use crate::ops::priors::{prior_response_var, route_entropy_var};
use crate::ops::spectral::moppa_filter_var;

/// Branch names in router order.
pub const BRANCHES: [&str; 3] = ["heat", "wave", "poisson"];

/// The tensors of one filtered layer.
#[derive(Clone, Debug)]
pub(crate) struct MoppaLayer {
    pub(crate) t: [Slot; 3],
    pub(crate) logits: Slot,
    pub(crate) tau: Slot,
}

/// The whole MoPPA adapter.
pub(crate) struct MoppaParts {
    pub(crate) k: [Slot; 3],
    pub(crate) layers: BTreeMap<usize, MoppaLayer>,
    pub(crate) entropy_scale: f64,
    pub(crate) entropy_decay_fraction: f64,
    /// The grid's DCT tables on the device, made by [`MoppaParts::attach`].
    pub(crate) plan: Option<GridPlan>,
    grid: (usize, usize),
}

/// File key of the shared coefficient of branch `b`.
pub fn k_key(branch: &str) -> String {
    format!("{PEFT_PREFIX}vit.encoder.moppa.k_{branch}")
}

/// File key stem of layer `l`'s own tensors.
pub fn layer_stem(layer: usize) -> String {
    format!("{PEFT_PREFIX}vit.encoder.layer.{layer}.moppa")
}

/// The tensors of a MoPPA adapter (host side; [`MoppaParts::attach`] makes the device tables).
pub(crate) fn build(cfg: &MoppaConfig, build: &mut Build<'_>) -> Result<MoppaParts> {
    let model = build.model;
    let err =
        |key: &str, message: String| Error::Config { path: build.config_path.to_path_buf(), key: key.into(), message };
    let heads = cfg.num_heads.unwrap_or(model.num_attention_heads);
    if !model.hidden_size.is_multiple_of(heads) {
        return Err(err("num_heads", format!("({heads}) must divide the model's hidden_size ({})", model.hidden_size)));
    }
    let d = model.hidden_size / heads;
    let layers: Vec<usize> = cfg.layers.clone().unwrap_or_else(|| (0..model.num_hidden_layers).collect());
    let mut unique = layers.clone();
    unique.sort_unstable();
    unique.dedup();
    if layers.is_empty() || unique.len() != layers.len() {
        return Err(err("layers", format!("{layers:?} must name at least one layer, each once")));
    }
    if let Some(&bad) = layers.iter().find(|&&l| l >= model.num_hidden_layers) {
        let n = model.num_hidden_layers;
        let numbered = format!("numbered from 0 to {}", n.saturating_sub(1));
        return Err(err("layers", format!("names layer {bad}, but the model has {n} layers, {numbered}")));
    }
    let (gh, gw) = model.grid();
    if gh.max(gw) > crate::ops::dct::MAX_LEN {
        return Err(err(
            "peft_type",
            format!(
                "MOPPA transforms grids of up to {0} × {0} patches; this model's is {gh} × {gw}",
                crate::ops::dct::MAX_LEN
            ),
        ));
    }
    let mut k = [0; 3];
    for (slot, b) in k.iter_mut().zip(BRANCHES) {
        *slot = build.trainable(&k_key(b), &[gh, gw, heads], Init::Const(1.0))?;
    }
    let mut parts = BTreeMap::new();
    for l in layers {
        let stem = layer_stem(l);
        let t_init = [
            Init::Normal { mean: 0.05, std: 0.01 },
            Init::Normal { mean: 0.05, std: 0.01 },
            Init::Normal { mean: 0.5, std: 0.1 },
        ];
        let mut t = [0; 3];
        for (i, b) in BRANCHES.iter().enumerate() {
            t[i] = build.trainable(&format!("{stem}.t_{b}"), &[d], t_init[i])?;
        }
        let logits =
            build.trainable(&format!("{stem}.router_logits"), &[3, heads], Init::Normal { mean: 0.0, std: 1.0 })?;
        let tau_key = format!("{stem}.temperature");
        let tau = build.trainable(&tau_key, &[heads], Init::Const(5.0))?;
        // The router divides the logits by τ in f32, and its gradient by τ²: a τ of a file whose
        // square underflows (0 included) leaves no finite gradient, and one that a logit divided
        // by overflows no finite route (the softmax of an infinity is NaN). The shapes are
        // checked by now; fresh values (τ = 5) pass.
        if let Some(tv) = build.source_any_shape(&tau_key)? {
            let lv = build.source_any_shape(&format!("{stem}.router_logits"))?.map(|t| t.data).unwrap_or_default();
            let smallest = f32::MIN_POSITIVE.sqrt();
            let tiny = tv.data.iter().enumerate().find(|(_, t)| t.abs() < smallest).map(|(h, &t)| {
                format!("is {t:e} for head {h}, below {smallest:e}: its square, which the router's gradient divides by, underflows f32")
            });
            let overflow = || {
                lv.iter().enumerate().find_map(|(i, &l)| {
                    let (t, h) = (tv.data[i % heads], i % heads);
                    (!(l / t).is_finite())
                        .then(|| format!("is {t:e} for head {h}: the router's logit {l:e} divided by it overflows f32"))
                })
            };
            if let Some(why) = tiny.or_else(overflow) {
                return Err(Error::Format { path: build.weights_path(), message: format!("tensor `{tau_key}` {why}") });
            }
        }
        parts.insert(l, MoppaLayer { t, logits, tau });
    }
    Ok(MoppaParts {
        k,
        layers: parts,
        entropy_scale: cfg.entropy_scale,
        entropy_decay_fraction: cfg.entropy_decay_fraction,
        plan: None,
        grid: (gh, gw),
    })
}

impl MoppaParts {
    /// Uploads the grid's DCT tables.
    pub(crate) fn attach(&mut self, gpu: &Gpu) -> Result<()> {
        self.plan = Some(GridPlan::new(gpu, self.grid.0, self.grid.1)?);
        Ok(())
    }

    /// The filtered input of layer `layer`'s attention branch, or `None` for a layer without
    /// a filter.
    pub(crate) fn pre_attention(&self, tape: &mut Tape, vars: &[Var], layer: usize, x: &Var) -> Result<Option<Var>> {
        let Some(l) = self.layers.get(&layer) else { return Ok(None) };
        let k = self.k.map(|s| &vars[s]);
        let t = l.t.map(|s| &vars[s]);
        let r = prior_response_var(tape, k, t, &vars[l.logits], &vars[l.tau])?;
        let plan = self.plan.as_ref().expect("a built MoPPA adapter has its grid tables");
        moppa_filter_var(tape, plan, x, &r).map(Some)
    }

    /// `λ_t = entropy_scale · max(0, 1 − t / (entropy_decay_fraction · T))` at step `step` of
    /// `total`.
    pub fn entropy_weight(&self, step: usize, total: usize) -> f64 {
        let horizon = self.entropy_decay_fraction * total as f64;
        self.entropy_scale * (1.0 - step as f64 / horizon).max(0.0)
    }

    /// The route term `−λ_t · Σ_l H_l` added to the loss, or `None` when `λ_t = 0`.
    pub(crate) fn route_term(&self, tape: &mut Tape, vars: &[Var], step: usize, total: usize) -> Result<Option<Var>> {
        let lambda = self.entropy_weight(step, total);
        if lambda == 0.0 {
            return Ok(None);
        }
        let mut sum: Option<Var> = None;
        for l in self.layers.values() {
            let h = route_entropy_var(tape, &vars[l.logits], &vars[l.tau])?;
            sum = Some(match sum {
                None => h,
                Some(s) => add_var(tape, &s, &h)?,
            });
        }
        sum.map(|s| scale_var(tape, &s, -lambda as f32)).transpose()
    }
}
