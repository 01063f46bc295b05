//! Training and evaluation loops (SPEC §12): mean cross-entropy plus MoPPA's route term,
//! SGD or AdamW on the adapter's tensors only, deterministic or seeded batch order.

use crate::adapters::Adapter;
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, PendingRead};
use crate::io::Dataset;
use crate::nn::Vit;
use crate::ops::elementwise::add_var;
use crate::ops::loss::cross_entropy_var;
use crate::optim::{Optimizer, OptimizerCheckpoint, OptimizerKind};
use crate::rng::Rng;
use crate::tensor::Tensor;

mod eval;

pub use eval::{EvalReport, evaluate, evaluate_with_progress, finite_without_adapter, first_non_finite_image};

/// Which rows each step takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOrder {
    /// Step `t` uses rows `(t·B + j) mod N`, `j = 0…B−1`.
    Sequential,
    /// A new seeded permutation of the rows every epoch.
    Shuffled {
        /// Seed of the permutations.
        seed: u64,
    },
}

/// The rows of every step, in order.
#[derive(Clone, Debug)]
pub struct Batches {
    order: BatchOrder,
    rows: usize,
    batch: usize,
    rng: Rng,
    perm: Vec<usize>,
    cursor: usize,
    step: usize,
}

impl Batches {
    /// Batches of `batch` rows drawn from `rows` rows.
    pub fn new(order: BatchOrder, rows: usize, batch: usize) -> Batches {
        let seed = match order {
            BatchOrder::Shuffled { seed } => seed,
            BatchOrder::Sequential => 0,
        };
        Batches { order, rows, batch, rng: Rng::new(seed ^ 0x005E_ED0F_BA7C), perm: Vec::new(), cursor: 0, step: 0 }
    }

    /// The rows of the next step; an error when the list of `batch` row numbers is more
    /// than the allocator gives (a batch no device could take anyway).
    pub fn next_rows(&mut self) -> Result<Vec<usize>> {
        let mut rows = Vec::new();
        if self.rows == 0 {
            return Ok(rows);
        }
        rows.try_reserve_exact(self.batch).map_err(|_| {
            Error::invalid("batch size", format!("{}: the list of its rows does not fit in memory", self.batch))
        })?;
        let t = self.step;
        self.step += 1;
        match self.order {
            // In u128, so `t·B + j` cannot wrap however long the run.
            BatchOrder::Sequential => rows.extend(
                (0..self.batch).map(|j| ((t as u128 * self.batch as u128 + j as u128) % self.rows as u128) as usize),
            ),
            BatchOrder::Shuffled { .. } => {
                for _ in 0..self.batch {
                    if self.cursor == self.perm.len() {
                        // A fresh permutation of the rows each epoch, in the list of the last.
                        if self.perm.len() != self.rows {
                            self.perm.try_reserve_exact(self.rows).map_err(|_| {
                                Error::invalid(
                                    "data",
                                    format!("a shuffled order of {} rows does not fit in memory", self.rows),
                                )
                            })?;
                            self.perm.resize(self.rows, 0);
                        }
                        self.perm.iter_mut().enumerate().for_each(|(i, p)| *p = i);
                        self.rng.shuffle(&mut self.perm);
                        self.cursor = 0;
                    }
                    self.cursor += 1;
                    rows.push(self.perm[self.cursor - 1]);
                }
            }
        }
        Ok(rows)
    }
}

/// Why a classifier with one label is not trained.
pub(crate) const ONE_LABEL: &str = "cross-entropy over one class is 0 whatever the weights, so training cannot \
     learn (transformers trains a one-label head by regression, which peft-wgpu does not do)";

/// Settings of a training run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// SGD or AdamW and their settings.
    pub optimizer: OptimizerKind,
    /// Batch order.
    pub order: BatchOrder,
    /// Seed of the dropout masks (LoRA's `lora_dropout`).
    pub seed: u64,
}

/// What one step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// 0-based step.
    pub step: usize,
    /// Steps in the run.
    pub steps: usize,
    /// Loss of this step (cross-entropy plus the route term).
    pub loss: f32,
    /// Images in the step.
    pub images: usize,
}

/// Uploads the images and labels of `rows`.
pub fn upload_batch(gpu: &Gpu, data: &Dataset, rows: &[usize]) -> Result<(Tensor, Tensor)> {
    let (pixels, labels) = data.gather(rows)?;
    let [_, c, h, w] = data.shape;
    Ok((Tensor::from_slice(gpu, &pixels, &[rows.len(), c, h, w])?, Tensor::from_u32(gpu, &labels, &[rows.len()])?))
}

/// Fails with [`Error::TooLarge`] when a batch of `batch` images of `data` would not fit one
/// device tensor (before the rows of such a batch are even listed).
fn check_batch_fits(gpu: &Gpu, data: &Dataset, batch: usize) -> Result<()> {
    let [_, c, h, w] = data.shape;
    let bytes = [batch, c, h, w].iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64)).unwrap_or(u64::MAX);
    let (max, limit) = gpu.max_tensor_bytes();
    if bytes > max {
        return Err(Error::TooLarge { what: format!("a batch of {batch} images"), bytes, limit, max });
    }
    Ok(())
}

/// Fails unless the model's weights and the adapter's tensors live on `gpu`.
fn check_device(gpu: &Gpu, vit: &Vit, adapter: Option<&Adapter>) -> Result<()> {
    gpu.check_owns("model weights", vit.weights().values())?;
    if vit.headless() && !adapter.is_some_and(Adapter::has_own_head) {
        return Err(Error::invalid("model", HEADLESS));
    }
    if let Some(a) = adapter {
        let tensors = a.trainable().iter().chain(a.frozen()).map(|p| &p.tensor);
        gpu.check_owns("adapter tensors", tensors)?;
    }
    Ok(())
}

/// Why a model without a classifier cannot be used without an adapter that brings one.
pub(crate) const HEADLESS: &str = "has no classifier (a ViTModel backbone): use it with an adapter that brings a \
     head of its own (`num_labels` and `modules_to_save: [\"classifier\"]` in a new adapter's config)";

/// Checks that `data` fits the model (and the adapter's head) and that the options are sane.
pub fn check_inputs(vit: &Vit, labels: usize, data: &Dataset, batch_size: usize) -> Result<()> {
    let c = &vit.config;
    data.check_fits(c.num_channels, c.image_size, labels)?;
    if batch_size == 0 {
        return Err(Error::invalid("batch size", "must be at least 1"));
    }
    Ok(())
}

/// Trains `adapter` on `data` for `options.steps` steps; `on_step` sees every step. The loss
/// of every step is checked: a non-finite one stops the run with an error naming the step,
/// and the adapter (with the optimizer's state) is left as it was before that step, or
/// before the previous one when that step's update is at fault (the parameters it made give
/// its own batch a non-finite loss, rather than this step's images being the cause). The
/// last update, which no later loss shows, is checked the same way, by the parameters it
/// made and the loss they give on its batch ([`Error::DivergedUpdate`]), and undone too.
///
/// The device never waits for the host between steps: step `t`'s loss is read back (and
/// checked, and reported to `on_step`) only once step `t + 1` has been submitted. Before
/// each update the optimizer keeps a device-side checkpoint of the adapter and its moments,
/// so a step whose loss turns out non-finite is undone with the one submitted after it.
/// So when `on_step` sees step `t` (not the last), the adapter's tensors already hold the
/// update of step `t + 1`, which may still be undone: save the adapter after `train`
/// returns, not from `on_step`.
pub fn train(
    gpu: &Gpu,
    vit: &Vit,
    adapter: &Adapter,
    data: &Dataset,
    options: &TrainOptions,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<()> {
    if adapter.num_labels() < 2 {
        return Err(Error::invalid("classifier", format!("it has 1 label: {ONE_LABEL}")));
    }
    check_inputs(vit, adapter.num_labels(), data, options.batch_size)?;
    check_device(gpu, vit, Some(adapter))?;
    adapter.check_model("train", &vit.config)?;
    check_batch_fits(gpu, data, options.batch_size)?;
    if options.steps == 0 {
        return Err(Error::invalid("number of steps", "must be at least 1"));
    }
    let params: Vec<Tensor> = adapter.trainable().iter().map(|p| p.tensor.clone()).collect();
    let mut optimizer = Optimizer::new(gpu, options.optimizer, options.lr, &params)?;
    let mut batches = Batches::new(options.order, data.len(), options.batch_size);
    let run = Run { gpu, vit, adapter, data };
    // The step whose loss is being read back.
    let mut in_flight: Option<InFlight> = None;
    // The state before the last step whose loss was found finite, and that step's batch.
    let mut last_good: Option<(OptimizerCheckpoint, Vec<usize>)> = None;
    for step in 0..options.steps {
        let rows = batches.next_rows()?;
        let (images, labels) = upload_batch(gpu, data, &rows)?;
        let mut tape = Tape::new(gpu);
        let base = vit.bind(&mut tape, false);
        let step_seed = Rng::new(options.seed ^ (step as u64).wrapping_mul(0xA24B_AED4_963E_E407)).next_u64();
        let bound = adapter.bind_train(&mut tape, step_seed);
        let images = tape.constant(&images);
        let logits = vit.forward(&mut tape, &base, &images, &bound)?;
        let mut loss = cross_entropy_var(&mut tape, &logits, &labels)?;
        if let Some(term) = bound.regularizer(&mut tape, step, options.steps)? {
            loss = add_var(&mut tape, &loss, &term)?;
        }
        let loss_value = loss.value().clone();
        let vars = bound.vars().to_vec();
        drop(bound);
        let grads = tape.backward(&loss)?;
        let before = optimizer.checkpoint()?;
        optimizer.step_vars(&grads, &vars)?;
        let read = gpu.read_later(&loss_value)?;
        let report = StepReport { step, steps: options.steps, loss: f32::NAN, images: rows.len() };
        if let Some(done) = in_flight.replace(InFlight { report, read, before, rows }) {
            last_good = Some(finish_step(&run, &mut optimizer, done, last_good.as_ref(), on_step)?);
        }
    }
    if let Some(done) = in_flight {
        let step = done.report.step;
        let (before, rows) = finish_step(&run, &mut optimizer, done, last_good.as_ref(), on_step)?;
        // No later loss shows what the last update did.
        if let Some(what) = run.update_fault(&rows)? {
            optimizer.restore(&before)?;
            gpu.sync()?;
            return Err(Error::DivergedUpdate { step, what });
        }
    }
    gpu.sync()
}

/// What a training run reads.
struct Run<'a> {
    gpu: &'a Gpu,
    vit: &'a Vit,
    adapter: &'a Adapter,
    data: &'a Dataset,
}

impl Run<'_> {
    /// What is wrong with the adapter's parameters as an update left them, checked on the
    /// batch `rows` that update came from: non-finite values, or a non-finite loss on that
    /// batch (huge but finite values overflow in the forward pass); `None` when neither.
    fn update_fault(&self, rows: &[usize]) -> Result<Option<String>> {
        for p in self.adapter.trainable() {
            if !self.gpu.read(&p.tensor)?.iter().all(|x| x.is_finite()) {
                return Ok(Some(format!("`{}` holds non-finite values", p.key)));
            }
        }
        let value = inference_loss(self.gpu, self.vit, self.adapter, self.data, rows)?;
        Ok((!value.is_finite()).then(|| format!("the loss on its batch is then {value}")))
    }
}

/// A step submitted but not yet checked: its report (without the loss), the read of its
/// loss, the optimizer's state before its update and its batch.
struct InFlight {
    report: StepReport,
    read: PendingRead,
    before: OptimizerCheckpoint,
    rows: Vec<usize>,
}

/// Reads a step's loss and reports it, returning the state before the step and its batch. A
/// non-finite loss fails, undoing the step's update and any after it; and the previous
/// step's too (back to `last_good`) when that update is at fault (the parameters it made are
/// not sound on its own batch, [`Run::update_fault`]) rather than this step's images.
fn finish_step(
    run: &Run<'_>,
    optimizer: &mut Optimizer,
    step: InFlight,
    last_good: Option<&(OptimizerCheckpoint, Vec<usize>)>,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(OptimizerCheckpoint, Vec<usize>)> {
    let InFlight { mut report, read, before, rows } = step;
    let value = read.wait()?[0];
    if !value.is_finite() {
        optimizer.restore(&before)?;
        if let Some((good, good_rows)) = last_good
            && run.update_fault(good_rows)?.is_some()
        {
            optimizer.restore(good)?;
        }
        run.gpu.sync()?;
        return Err(Error::NonFiniteLoss { step: report.step, value });
    }
    report.loss = value;
    on_step(&report);
    Ok((before, rows))
}

/// The rows step 0 of a run with `options` trains on (of a data set of `images` images).
pub fn first_rows(options: &TrainOptions, images: usize) -> Result<Vec<usize>> {
    rows_of_step(options, images, 0)
}

/// The rows step `step` (0-based) of a run with `options` trains on (of a data set of
/// `images` images).
pub fn rows_of_step(options: &TrainOptions, images: usize, step: usize) -> Result<Vec<usize>> {
    let mut batches = Batches::new(options.order, images, options.batch_size);
    for _ in 0..step {
        batches.next_rows()?;
    }
    batches.next_rows()
}

/// Mean cross-entropy of the adapted model on `rows`, without recording anything.
fn inference_loss(gpu: &Gpu, vit: &Vit, adapter: &Adapter, data: &Dataset, rows: &[usize]) -> Result<f32> {
    let (images, labels) = upload_batch(gpu, data, rows)?;
    let mut tape = Tape::inference(gpu);
    let base = vit.bind(&mut tape, false);
    let images = tape.constant(&images);
    let bound = adapter.bind(&mut tape);
    let logits = vit.forward(&mut tape, &base, &images, &bound)?;
    let loss = cross_entropy_var(&mut tape, &logits, &labels)?;
    Ok(gpu.read(loss.value())?[0])
}
