//! `ViTForImageClassification`'s forward pass on the tape, with hooks where adapters act.

use std::collections::BTreeMap;
use std::path::Path;

use super::VitConfig;
use super::attention::multi_head_attention;
use super::names::{LayerPart, ModuleId, Naming};
use super::weights::{PROMPT_KEY, VitWeights};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::activation::gelu_var;
use crate::ops::elementwise::add_var;
use crate::ops::linear::linear_var;
use crate::ops::norm::layer_norm_var;
use crate::ops::patch::patch_embed;
use crate::ops::shape::{add_broadcast_var, concat_var, expand_var, reshape_var, slice_var};
use crate::tensor::Tensor;

/// Where an adapter changes the forward pass. Every method defaults to "no change".
pub trait VitHooks {
    /// Output of linear `module` for input `x`, replacing `x Wᵀ + b`; `None` keeps the base.
    fn linear(&self, _tape: &mut Tape, _module: ModuleId, _x: &Var, _w: &Var, _b: Option<&Var>) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Patch-embedding output `[B, N, D]` replacing the base conv; `None` keeps the base.
    fn patch_embed(&self, _tape: &mut Tape, _images: &Var, _w: &Var, _b: &Var) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Tokens after the position embeddings, `[B, T, D]` (RLP inserts prompts after CLS).
    fn after_embeddings(&self, _tape: &mut Tape, x: Var) -> Result<Var> {
        Ok(x)
    }

    /// The input of layer `layer`'s attention branch (before `layernorm_before`); `prefix`
    /// tokens precede the `gh × gw` patch grid. `None` keeps `x`.
    fn pre_attention(
        &self,
        _tape: &mut Tape,
        _layer: usize,
        _x: &Var,
        _prefix: usize,
        _grid: (usize, usize),
    ) -> Result<Option<Var>> {
        Ok(None)
    }

    /// Prompt tokens this adapter inserts after CLS.
    fn prompt_tokens(&self) -> usize {
        0
    }

    /// Weight and bias that replace the base ones of `module` (saved modules).
    fn module_weights(&self, _module: ModuleId) -> Option<(Var, Option<Var>)> {
        None
    }

    /// A bias that replaces the one of `module` (base or saved), for a LoRA adapter that
    /// trains biases.
    fn module_bias(&self, _module: ModuleId) -> Option<Var> {
        None
    }

    /// `cls_token` `[1, 1, D]` and `position_embeddings` `[1, T, D]` that replace the base
    /// ones (saved embeddings).
    fn embeddings(&self) -> Option<(Var, Var)> {
        None
    }

    /// Fails when these hooks were made for another architecture than `model` (an adapter
    /// for another model would leave layers unadapted or its own tensors unused).
    fn check_model(&self, _model: &VitConfig) -> Result<()> {
        Ok(())
    }
}

/// No adapter.
pub struct NoHooks;

impl VitHooks for NoHooks {}

/// A ViT classifier whose weights live on the GPU.
pub struct Vit {
    /// The architecture, read-only outside the crate ([`Vit::config`]): it describes the
    /// uploaded weights, so changing it alone would make them disagree.
    pub(crate) config: VitConfig,
    weights: BTreeMap<String, Tensor>,
    /// Merged RLP prompts `[n, D]` inserted after CLS, when the folder has them.
    prompts: Option<Tensor>,
    /// Tells this model's [`VitVars`] from another's.
    id: u64,
    /// Whether its folder had no classifier ([`VitWeights::headless`]).
    headless: bool,
}

impl std::fmt::Debug for Vit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("Vit")
            .field("layers", &c.num_hidden_layers)
            .field("hidden_size", &c.hidden_size)
            .field("heads", &c.num_attention_heads)
            .field("image_size", &c.image_size)
            .field("patch_size", &c.patch_size)
            .field("num_labels", &c.num_labels)
            .field("parameters", &self.num_parameters())
            .field("merged_prompts", &self.prompts.as_ref().map(|p| p.shape()[0]))
            .finish()
    }
}

/// The model's weights on one tape, trainable or frozen, from [`Vit::bind`]; they run only
/// that model's [`Vit::forward`].
#[derive(Debug)]
pub struct VitVars {
    vars: BTreeMap<String, Var>,
    prompts: Option<Var>,
    model: u64,
}

impl VitVars {
    /// The variable of the weight called `key` (on-disk name).
    pub fn get(&self, key: &str) -> Result<&Var> {
        self.vars
            .get(key)
            .ok_or_else(|| Error::invalid("model weight", format!("`{key}` is not a weight of this model")))
    }

    /// Every weight, by on-disk name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Vit {
    /// The architecture of the uploaded weights.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Uploads host weights (with a merged RLP model's `prompt_embeddings`, if any). On a CPU
    /// adapter (lavapipe), whose buffers are host memory too, weights larger than the memory
    /// this process can still get are refused first.
    pub fn from_weights(gpu: &Gpu, weights: &VitWeights) -> Result<Vit> {
        weights.check()?;
        if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu {
            let bytes = weights.tensors.values().chain(&weights.prompts).map(|t| t.data.len() as u64 * 4).sum();
            if let Some(free) = crate::io::memory::shortfall(bytes) {
                return Err(Error::TooLarge {
                    what: "the model's weights on this CPU adapter (whose buffers are host memory)".into(),
                    bytes,
                    limit: "the memory this process can still get",
                    max: free,
                });
            }
        }
        // Named here, where the key is known, rather than by the upload.
        let (max, limit) = gpu.max_tensor_bytes();
        let named = weights.tensors.iter().map(|(k, t)| (k.as_str(), t));
        for (key, t) in named.chain(weights.prompts.iter().map(|p| (PROMPT_KEY, p))) {
            let bytes = (t.data.len() as u64).saturating_mul(4);
            if bytes > max {
                let what = format!("model weight `{key}` (shape {:?})", t.shape);
                return Err(Error::TooLarge { what, bytes, limit, max });
            }
        }
        let mut map = BTreeMap::new();
        for (k, t) in &weights.tensors {
            map.insert(k.clone(), Tensor::from_slice(gpu, &t.data, &t.shape)?);
        }
        let prompts = weights.prompts.as_ref().map(|p| Tensor::from_slice(gpu, &p.data, &p.shape)).transpose()?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Vit { config: weights.config.clone(), weights: map, prompts, id, headless: weights.headless })
    }

    /// Whether the model came without a classifier (a `ViTModel` backbone, see
    /// [`VitWeights::headless`]): it classifies only with an adapter that brings a head.
    pub fn headless(&self) -> bool {
        self.headless
    }

    /// Loads a transformers folder (`config.json` + weights).
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<Vit> {
        Vit::from_weights(gpu, &VitWeights::load(dir)?)
    }

    /// The weights on the GPU by on-disk name.
    pub fn weights(&self) -> &BTreeMap<String, Tensor> {
        &self.weights
    }

    /// Prompt tokens merged into this model from RLP adapters (`prompt_embeddings`; 0 for none).
    pub fn merged_prompts(&self) -> usize {
        self.prompts.as_ref().map_or(0, |p| p.shape()[0])
    }

    /// Number of weights (parameters) of the model, as PyTorch counts them.
    pub fn num_parameters(&self) -> usize {
        self.weights.values().map(Tensor::len).sum::<usize>() + self.prompts.as_ref().map_or(0, Tensor::len)
    }

    /// Fails unless `vars` come from this model's [`Vit::bind`].
    fn check_vars(&self, vars: &VitVars) -> Result<()> {
        if vars.model != self.id {
            return Err(Error::invalid("ViT forward", "the weights were bound from another model (`Vit::bind`)"));
        }
        Ok(())
    }

    /// Puts the weights on `tape`, as trainable leaves or as constants.
    pub fn bind(&self, tape: &mut Tape, trainable: bool) -> VitVars {
        let vars = self
            .weights
            .iter()
            .map(|(k, t)| (k.clone(), if trainable { tape.param(t) } else { tape.constant(t) }))
            .collect();
        VitVars { vars, prompts: self.prompts.as_ref().map(|p| tape.constant(p)), model: self.id }
    }

    /// Logits `[B, num_labels]` for images `[B, C, H, W]`, with `vars` from this model's
    /// [`Vit::bind`] (another model's are refused). A [`Vit::headless`] model needs `hooks`
    /// that bring a classifier ([`VitHooks::module_weights`]).
    pub fn forward(&self, tape: &mut Tape, vars: &VitVars, images: &Var, hooks: &dyn VitHooks) -> Result<Var> {
        self.check_vars(vars)?;
        let c = &self.config;
        c.check()?;
        hooks.check_model(c)?;
        if self.headless && hooks.module_weights(ModuleId::Classifier).is_none() {
            return Err(Error::invalid("model", crate::train::HEADLESS));
        }
        let &[b, ch, h, w] = images.shape() else {
            return Err(Error::shape("ViT forward", "images [B, C, H, W]", format!("{:?}", images.shape())));
        };
        if b == 0 {
            return Err(Error::shape("ViT forward", "at least one image", "a batch of 0 images"));
        }
        if (ch, [h, w]) != (c.num_channels, c.image_size) {
            return Err(Error::shape(
                "ViT forward",
                format!("images of {}×{}×{}", c.num_channels, c.image_size[0], c.image_size[1]),
                format!("{ch}×{h}×{w}"),
            ));
        }
        let d = c.hidden_size;
        let (pw, pb) = module_vars(vars, hooks, ModuleId::PatchEmbed)?;
        let pb = pb.ok_or_else(|| Error::invalid("model", "the patch embedding has no bias"))?;
        let patches = match hooks.patch_embed(tape, images, &pw, &pb)? {
            Some(p) => p,
            None => patch_embed(tape, images, &pw, Some(&pb))?,
        };
        let (cls, pos) = match hooks.embeddings() {
            Some(replaced) => replaced,
            None => {
                (vars.get("vit.embeddings.cls_token")?.clone(), vars.get("vit.embeddings.position_embeddings")?.clone())
            }
        };
        let cls = expand_var(tape, &cls, &[b, 1, d])?;
        let x = concat_var(tape, &[&cls, &patches], 1)?;
        let pos = reshape_var(tape, &pos, &[c.tokens(), d])?;
        let mut x = add_broadcast_var(tape, &x, &pos)?;
        let mut prefix = 1;
        if let Some(p) = &vars.prompts {
            x = insert_after_cls(tape, &x, p)?;
            prefix += p.shape()[0];
        }
        x = hooks.after_embeddings(tape, x)?;
        prefix += hooks.prompt_tokens();
        let grid = c.grid();
        for layer in 0..c.num_hidden_layers {
            x = self.layer_forward(tape, vars, hooks, layer, &x, prefix, grid)?;
        }
        let (nw, nb) = module_vars(vars, hooks, ModuleId::FinalNorm)?;
        let x = layer_norm(tape, &x, &nw, nb.as_ref(), c.layer_norm_eps as f32)?;
        let cls = slice_var(tape, &x, 1, 0, 1)?;
        let cls = reshape_var(tape, &cls, &[b, d])?;
        linear(tape, vars, hooks, ModuleId::Classifier, &cls)
    }

    /// One transformer layer on tokens `x` `[B, T, D]` (`prefix` tokens before a `gh × gw`
    /// grid), as [`Vit::forward`] runs it:
    ///
    /// ```text
    /// x_f = hooks.pre_attention(x)            (x itself without a hook)
    /// x   = x + Attn(LN_before(x_f))
    /// x   = x + MLP(LN_after(x))              MLP = fc2(GELU(fc1(·)))
    /// ```
    ///
    /// The backward of each piece comes from its tape ops.
    #[expect(clippy::too_many_arguments, reason = "one transformer layer's inputs, all needed")]
    pub fn layer_forward(
        &self,
        tape: &mut Tape,
        vars: &VitVars,
        hooks: &dyn VitHooks,
        layer: usize,
        x: &Var,
        prefix: usize,
        grid: (usize, usize),
    ) -> Result<Var> {
        self.check_vars(vars)?;
        let c = &self.config;
        let m = |part| ModuleId::Layer(layer, part);
        let filtered = hooks.pre_attention(tape, layer, x, prefix, grid)?;
        let (lw, lb) = module_vars(vars, hooks, m(LayerPart::LnBefore))?;
        let h = layer_norm(tape, filtered.as_ref().unwrap_or(x), &lw, lb.as_ref(), c.layer_norm_eps as f32)?;
        let q = linear(tape, vars, hooks, m(LayerPart::Query), &h)?;
        let k = linear(tape, vars, hooks, m(LayerPart::Key), &h)?;
        let v = linear(tape, vars, hooks, m(LayerPart::Value), &h)?;
        let a = multi_head_attention(tape, &q, &k, &v, c.num_attention_heads)?;
        let a = linear(tape, vars, hooks, m(LayerPart::AttnOut), &a)?;
        let x = add_var(tape, x, &a)?;
        let (lw, lb) = module_vars(vars, hooks, m(LayerPart::LnAfter))?;
        let h = layer_norm(tape, &x, &lw, lb.as_ref(), c.layer_norm_eps as f32)?;
        let h = linear(tape, vars, hooks, m(LayerPart::Fc1), &h)?;
        let h = gelu_var(tape, &h)?;
        let h = linear(tape, vars, hooks, m(LayerPart::Fc2), &h)?;
        add_var(tape, &x, &h)
    }
}

/// `[B, T, D]` with `prompts` `[n, D]` inserted after the first (CLS) token.
pub fn insert_after_cls(tape: &mut Tape, x: &Var, prompts: &Var) -> Result<Var> {
    let &[b, t, d] = x.shape() else {
        return Err(Error::shape("insert prompts", "tokens [B, T, D]", format!("{:?}", x.shape())));
    };
    let &[n, pd] = prompts.shape() else {
        return Err(Error::shape("insert prompts", format!("prompts [n, {d}]"), format!("{:?}", prompts.shape())));
    };
    if pd != d || t == 0 {
        return Err(Error::shape(
            "insert prompts",
            "prompts [n, D] for tokens [B, T ≥ 1, D]",
            format!("prompts {:?}, tokens {:?}", prompts.shape(), x.shape()),
        ));
    }
    let p = reshape_var(tape, prompts, &[1, n, d])?;
    let p = expand_var(tape, &p, &[b, n, d])?;
    let cls = slice_var(tape, x, 1, 0, 1)?;
    let rest = slice_var(tape, x, 1, 1, t - 1)?;
    concat_var(tape, &[&cls, &p, &rest], 1)
}

fn module_vars(vars: &VitVars, hooks: &dyn VitHooks, module: ModuleId) -> Result<(Var, Option<Var>)> {
    let (w, b) = match hooks.module_weights(module) {
        Some(replaced) => replaced,
        None => {
            let path = module.path(Naming::OnDisk);
            (vars.get(&format!("{path}.weight"))?.clone(), vars.vars.get(&format!("{path}.bias")).cloned())
        }
    };
    Ok((w, hooks.module_bias(module).or(b)))
}

fn linear(tape: &mut Tape, vars: &VitVars, hooks: &dyn VitHooks, module: ModuleId, x: &Var) -> Result<Var> {
    let (w, b) = module_vars(vars, hooks, module)?;
    match hooks.linear(tape, module, x, &w, b.as_ref())? {
        Some(y) => Ok(y),
        None => linear_var(tape, x, &w, b.as_ref()),
    }
}

fn layer_norm(tape: &mut Tape, x: &Var, w: &Var, b: Option<&Var>, eps: f32) -> Result<Var> {
    let b = b.ok_or_else(|| Error::invalid("model", "a LayerNorm has no bias"))?;
    layer_norm_var(tape, x, w, b, eps)
}
