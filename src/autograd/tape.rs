//! The tape: nodes, leaves, recording and the reverse sweep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::elementwise;
use crate::tensor::{Tensor, VersionWatch};

/// Index of a node in its [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

/// A value on a tape: its tensor, its node and whether a gradient flows back through it.
#[derive(Clone, Debug)]
pub struct Var {
    id: NodeId,
    /// The [`Tape`] the node belongs to.
    tape: u64,
    value: Tensor,
    requires_grad: bool,
}

impl Var {
    /// The node this value belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Whether a gradient flows back through this value.
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }
}

/// A backward rule: given the gradient of the node's output, the gradients of its parents
/// (in the order they were recorded; `None` where a parent needs none).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Gpu, &Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

struct Node {
    parents: Vec<NodeId>,
    backward: Option<BackwardFn>,
    trainable_leaf: bool,
    /// A leaf of a recording tape, watched: ops save leaves (a weight for the input's
    /// gradient, say), so a leaf changed in place since it was recorded (by an optimizer
    /// step) makes the saved values stale. The watch does not keep the leaf alive.
    leaf: Option<VersionWatch>,
}

/// The arena of recorded operations. See the [module docs](crate::autograd).
pub struct Tape {
    /// Distinguishes this tape's `Var`s from those of every other tape.
    id: u64,
    gpu: Gpu,
    nodes: Vec<Node>,
    recording: bool,
    /// The first op that was given a `Var` of another tape, or the first leaf of another
    /// device: its gradients cannot be linked, so [`Tape::backward`] refuses to run.
    foreign: Option<String>,
    /// The trainable leaves, so that a tensor made a parameter twice is one leaf.
    params: Vec<Var>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("id", &self.id)
            .field("nodes", &self.nodes.len())
            .field("recording", &self.recording)
            .field("params", &self.params.len())
            .finish()
    }
}

/// Ids of tapes, unique in the process.
static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);

/// Gradients of the trainable leaves after [`Tape::backward`].
#[derive(Debug, Default)]
pub struct Gradients {
    tape: u64,
    grads: HashMap<NodeId, Tensor>,
}

impl Gradients {
    /// The gradients of `vars`, in order, as [`crate::Optimizer::step`] takes them: `None`
    /// where the loss does not depend on a leaf. A `Var` of another tape (one kept from an
    /// earlier step, say) or a constant is an error, where [`Gradients::get`] would answer
    /// `None` and the step would silently update nothing.
    pub fn of<'v>(&self, vars: impl IntoIterator<Item = &'v Var>) -> Result<Vec<Option<&Tensor>>> {
        let vars: Vec<&Var> = vars.into_iter().collect();
        if let Some(i) = vars.iter().position(|v| !v.requires_grad) {
            return Err(Error::invalid(
                "gradients",
                format!(
                    "variable {i} ({:?}) is a constant, which gets no gradient (make it with Tape::param)",
                    vars[i].shape()
                ),
            ));
        }
        if let Some(i) = vars.iter().position(|v| v.tape != self.tape) {
            return Err(Error::invalid(
                "gradients",
                format!(
                    "variable {i} ({:?}) is from another tape than the one these gradients come from \
                     (take the variables of this step's tape)",
                    vars[i].shape()
                ),
            ));
        }
        Ok(vars.iter().map(|v| self.grads.get(&v.id)).collect())
    }

    /// The gradient of a trainable leaf; `None` when the loss does not depend on it, or `v`
    /// belongs to another tape (use [`Gradients::of`] to have that refused).
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        if v.tape != self.tape {
            return None;
        }
        self.grads.get(&v.id)
    }

    /// Removes and returns the gradient of a trainable leaf (`None` as for [`Gradients::get`]).
    pub fn take(&mut self, v: &Var) -> Option<Tensor> {
        if v.tape != self.tape {
            return None;
        }
        self.grads.remove(&v.id)
    }

    /// Number of leaves that received a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

impl Tape {
    /// A tape that records backward rules, for training.
    pub fn new(gpu: &Gpu) -> Tape {
        Tape::with_recording(gpu, true)
    }

    /// A tape that records nothing: every value is a constant and ops save no tensors.
    pub fn inference(gpu: &Gpu) -> Tape {
        Tape::with_recording(gpu, false)
    }

    fn with_recording(gpu: &Gpu, recording: bool) -> Tape {
        let id = NEXT_TAPE.fetch_add(1, Ordering::Relaxed);
        Tape { id, gpu: gpu.clone(), nodes: Vec::new(), recording, foreign: None, params: Vec::new() }
    }

    /// The device ops on this tape run on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Whether backward rules are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn next_id(&self) -> NodeId {
        NodeId(u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes on one tape"))
    }

    /// A trainable leaf: [`Tape::backward`] returns its gradient (on a recording tape).
    /// A tensor made a parameter again (the same buffer and shape, an adapter bound twice,
    /// say) gets the `Var` it got the first time, so its gradient sums every use. A view of
    /// the same buffer under another shape is a leaf of its own, with the gradient of its
    /// own uses only: reshape the first `Var` instead.
    pub fn param(&mut self, value: &Tensor) -> Var {
        if !self.recording {
            return self.leaf(value, false);
        }
        if let Some(v) = self.params.iter().find(|v| v.value.same_buffer(value) && v.shape() == value.shape()) {
            return v.clone();
        }
        let v = self.leaf(value, true);
        self.params.push(v.clone());
        v
    }

    /// A frozen leaf: no gradient flows into it and ops save nothing for its sake.
    pub fn constant(&mut self, value: &Tensor) -> Var {
        self.leaf(value, false)
    }

    fn leaf(&mut self, value: &Tensor, trainable: bool) -> Var {
        let id = self.next_id();
        if !value.is_on(&self.gpu) && self.foreign.is_none() {
            // Ops that dispatch refuse it by name; one that only reshapes would not.
            self.foreign = Some(format!("leaf {} is a tensor of another Gpu than the tape's", id.0));
        }
        let leaf = self.recording.then(|| value.watch());
        self.nodes.push(Node { parents: Vec::new(), backward: None, trainable_leaf: trainable, leaf });
        Var { id, tape: self.id, value: value.clone(), requires_grad: trainable }
    }

    /// Records the output of an op. `backward` is kept only when the tape records and some
    /// parent requires a gradient; otherwise it is dropped at once with what it saved. A
    /// parent of another tape cannot be linked: the op is recorded without a backward rule
    /// and [`Tape::backward`] will refuse to run.
    pub(crate) fn push(
        &mut self,
        value: Tensor,
        parents: &[&Var],
        backward: impl FnOnce(&Gpu, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Var {
        let foreign = parents.iter().any(|p| p.tape != self.id);
        if foreign && self.foreign.is_none() {
            let node = self.nodes.len();
            self.foreign =
                Some(format!("node {node} was given a Var of another tape; a Var works only on the tape that made it"));
        }
        let requires_grad = self.recording && !foreign && parents.iter().any(|p| p.requires_grad);
        let id = self.next_id();
        self.nodes.push(Node {
            parents: if requires_grad { parents.iter().map(|p| p.id).collect() } else { Vec::new() },
            backward: if requires_grad { Some(Box::new(backward)) } else { None },
            trainable_leaf: false,
            leaf: None,
        });
        Var { id, tape: self.id, value, requires_grad }
    }

    /// Runs the backward sweep from a scalar `loss` and returns the gradients of all trainable
    /// leaves it reaches. Consumes the tape, freeing every saved activation.
    pub fn backward(self, loss: &Var) -> Result<Gradients> {
        if loss.value.len() != 1 {
            return Err(Error::shape("backward", "a scalar loss", format!("{:?}", loss.shape())));
        }
        if loss.tape != self.id {
            return Err(Error::invalid("backward", "the loss is a Var of another tape"));
        }
        if !self.recording {
            return Err(Error::invalid(
                "backward",
                "the tape was made by Tape::inference and recorded no backward rules; train with Tape::new",
            ));
        }
        if let Some(what) = self.foreign {
            return Err(Error::invalid("backward", what));
        }
        let changed = self.nodes.iter().enumerate().find_map(|(i, n)| Some((i, n.leaf.as_ref()?.changed()?)));
        if let Some((node, shape)) = changed {
            return Err(Error::invalid(
                "backward",
                format!(
                    "leaf {node} (shape {shape:?}) was changed in place (an optimizer step or restore, perhaps \
                     of another run training the same tensors at once) after this tape recorded it, so the values \
                     its ops saved are stale; record the forward pass again, and train one adapter in one run at \
                     a time"
                ),
            ));
        }
        let mut gradients = Gradients { tape: self.id, grads: HashMap::new() };
        if !loss.requires_grad {
            return Ok(gradients);
        }
        let gpu = self.gpu;
        let mut nodes = self.nodes;
        let mut grads: Vec<Option<Tensor>> = vec![None; nodes.len()];
        grads[loss.id.0 as usize] = Some(Tensor::full(&gpu, loss.shape(), 1.0)?);
        for index in (0..=loss.id.0 as usize).rev() {
            let Some(grad) = grads[index].take() else { continue };
            let node = &mut nodes[index];
            if node.trainable_leaf {
                gradients.grads.insert(NodeId(index as u32), grad);
                continue;
            }
            let Some(backward) = node.backward.take() else { continue };
            let parents = std::mem::take(&mut node.parents);
            let parent_grads = backward(&gpu, &grad)?;
            debug_assert_eq!(parent_grads.len(), parents.len(), "a backward rule returns one entry per parent");
            for (parent, g) in parents.into_iter().zip(parent_grads) {
                let Some(g) = g else { continue };
                let slot = &mut grads[parent.0 as usize];
                *slot = Some(match slot.take() {
                    None => g,
                    Some(acc) => elementwise::add(&gpu, &acc, &g)?,
                });
            }
        }
        Ok(gradients)
    }
}
