//! An adapter bound to a tape: its tensors as tape variables and the hooks through which it
//! changes the ViT's forward pass.

use super::{Adapter, Kind, flora, lora};
use crate::autograd::{Gradients, Tape, Var};
use crate::error::Result;
use crate::nn::{ModuleId, VitConfig, VitHooks};
use crate::tensor::Tensor;

/// An adapter's tensors on one tape; the hooks through which it changes the ViT.
#[derive(Debug)]
pub struct BoundAdapter<'a> {
    pub(super) adapter: &'a Adapter,
    pub(super) vars: Vec<Var>,
    pub(super) frozen: Vec<Var>,
    pub(super) dropout_seed: Option<u64>,
    /// The images of the step's batch this pass computes: (first, count); `None`: all.
    pub(super) part: Option<(usize, usize)>,
}

impl BoundAdapter<'_> {
    /// The seed of the dropout mask on the input of the `index`-th adapted LoRA module (in
    /// the adapter's module order, that of its `lora_A` tensors in [`Adapter::trainable`]),
    /// `None` when bound for inference: `seed ^ (index + 1)·0x9E3779B97F4A7C15` from the seed
    /// given to [`Adapter::bind_train`], so no two modules share a mask. The mask is
    /// [`crate::ops::dropout::dropout`]'s for that seed over the module's input, flattened
    /// (for the patch embedding, over its patch rows `[B·patches, C·ph·pw]`).
    pub fn dropout_seed(&self, index: usize) -> Option<u64> {
        self.dropout_seed.map(|s| s ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The mask of the `index`-th LoRA module's input over the images of this pass (all of
    /// the batch's unless bound to a part).
    fn dropout_draw(&self, index: usize) -> Option<lora::Draw> {
        let (first_image, images) = self.part.unwrap_or((0, 1));
        self.dropout_seed(index).map(|seed| lora::Draw { seed, first_image, images })
    }
}

impl BoundAdapter<'_> {
    /// The gradients of the trainable tensors in [`Adapter::trainable`]'s order; `grads`
    /// must come from the tape this adapter was bound to ([`Gradients::of`]).
    pub fn gradients<'g>(&self, grads: &'g Gradients) -> Result<Vec<Option<&'g Tensor>>> {
        grads.of(&self.vars)
    }

    /// The trainable tensors as tape variables, in [`Adapter::trainable`]'s order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Extra loss terms at `step` of `total` (MoPPA's `−λ_t Σ_l H_l`), if any.
    pub fn regularizer(&self, tape: &mut Tape, step: usize, total: usize) -> Result<Option<Var>> {
        match &self.adapter.kind {
            Kind::Moppa(m) => m.route_term(tape, &self.vars, step, total),
            _ => Ok(None),
        }
    }
}

impl VitHooks for BoundAdapter<'_> {
    fn check_model(&self, model: &VitConfig) -> Result<()> {
        self.adapter.check_model("ViT forward", model)
    }

    fn linear(&self, tape: &mut Tape, module: ModuleId, x: &Var, w: &Var, b: Option<&Var>) -> Result<Option<Var>> {
        let v = &self.vars;
        match &self.adapter.kind {
            Kind::Lora(ms) => match ms.iter().position(|m| m.module == module) {
                Some(i) => {
                    let m = &ms[i];
                    lora::linear(tape, m, &v[m.a], &v[m.b], x, w, b, self.dropout_draw(i)).map(Some)
                }
                None => Ok(None),
            },
            Kind::Flora(ms) => match ms.iter().find(|m| m.module == module) {
                Some(m) => {
                    let factors: Vec<Var> = m.factors.iter().map(|&s| v[s].clone()).collect();
                    flora::linear(tape, m, &v[m.core], &factors, x, w, b).map(Some)
                }
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn patch_embed(&self, tape: &mut Tape, images: &Var, w: &Var, b: &Var) -> Result<Option<Var>> {
        // The first hook of every pass, so the one that sees the batch: a part of another size
        // would draw the dropout masks of other images.
        if let Some((first, count)) = self.part
            && images.shape().first() != Some(&count)
        {
            let batch = images.shape().first().copied().unwrap_or(0);
            return Err(crate::error::Error::invalid(
                "Adapter::bind_train_part",
                format!("images {first}..{} are {count}, but the pass computes {batch}", first + count),
            ));
        }
        let v = &self.vars;
        let module = ModuleId::PatchEmbed;
        match &self.adapter.kind {
            Kind::Lora(ms) => match ms.iter().position(|m| m.module == module) {
                Some(i) => {
                    let m = &ms[i];
                    lora::patch_embed(tape, m, &v[m.a], &v[m.b], images, w, b, self.dropout_draw(i)).map(Some)
                }
                None => Ok(None),
            },
            Kind::Flora(ms) => match ms.iter().find(|m| m.module == module) {
                Some(m) => {
                    let factors: Vec<Var> = m.factors.iter().map(|&s| v[s].clone()).collect();
                    flora::patch_embed(tape, m, &v[m.core], &factors, images, w, b).map(Some)
                }
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn after_embeddings(&self, tape: &mut Tape, x: Var) -> Result<Var> {
        match &self.adapter.kind {
            Kind::Rlp(r) => r.insert(tape, &x, &self.frozen[r.p0], &self.vars[r.a], &self.vars[r.b]),
            _ => Ok(x),
        }
    }

    fn pre_attention(
        &self,
        tape: &mut Tape,
        layer: usize,
        x: &Var,
        _prefix: usize,
        _grid: (usize, usize),
    ) -> Result<Option<Var>> {
        match &self.adapter.kind {
            Kind::Moppa(m) => m.pre_attention(tape, &self.vars, layer, x),
            _ => Ok(None),
        }
    }

    fn prompt_tokens(&self) -> usize {
        match &self.adapter.kind {
            Kind::Rlp(r) => r.tokens,
            _ => 0,
        }
    }

    fn embeddings(&self) -> Option<(Var, Var)> {
        let e = self.adapter.embeddings?;
        Some((self.vars[e.cls_token].clone(), self.vars[e.position_embeddings].clone()))
    }

    fn module_bias(&self, module: ModuleId) -> Option<Var> {
        let b = self.adapter.biases.iter().find(|b| b.module == module)?;
        Some(self.vars[b.slot].clone())
    }

    fn module_weights(&self, module: ModuleId) -> Option<(Var, Option<Var>)> {
        let s = self.adapter.saved.iter().find(|s| s.module == module)?;
        let list = if s.frozen { &self.frozen } else { &self.vars };
        Some((list[s.weight].clone(), s.bias.map(|b| list[b].clone())))
    }
}
