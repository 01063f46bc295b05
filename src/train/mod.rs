//! Training and evaluation loops (SPEC §12): mean cross-entropy plus MoPPA's route term,
//! SGD or AdamW on the adapter's tensors only, deterministic or seeded batch order.

use crate::adapters::Adapter;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::nn::Vit;
use crate::optim::{Optimizer, OptimizerCheckpoint, OptimizerKind};
use crate::rng::Rng;
use crate::tensor::Tensor;

mod eval;
mod step;

use step::{InFlight, Run, finish_step};

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
    /// than the allocator gives.
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
    /// The most images computed at once: a larger batch is computed in pieces of at most this
    /// many images, whose gradients are summed before the step (gradient accumulation: the
    /// same step as the whole batch at once, up to rounding, LoRA's dropout masks included).
    /// `None`: the whole batch at once. Either way a piece the device cannot take (a tensor
    /// past its buffer limit, a grid past its workgroup limit) is halved until it can, and
    /// the run goes on with that size.
    pub micro_batch: Option<usize>,
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
    /// Pieces the step's batch was computed in (1 unless it was more than
    /// [`TrainOptions::micro_batch`] images, or than the device takes at once).
    pub pieces: usize,
    /// The most images of the step computed at once.
    pub at_once: usize,
}

/// Uploads the images and labels of `rows`.
pub fn upload_batch(gpu: &Gpu, data: &Dataset, rows: &[usize]) -> Result<(Tensor, Tensor)> {
    let (pixels, labels) = data.gather(rows)?;
    let [_, c, h, w] = data.shape;
    Ok((Tensor::from_slice(gpu, &pixels, &[rows.len(), c, h, w])?, Tensor::from_u32(gpu, &labels, &[rows.len()])?))
}

/// `batch`, or the most images of `data` one device tensor holds when fewer; fails with
/// [`Error::TooLarge`] when not even one image fits.
fn images_that_fit(gpu: &Gpu, data: &Dataset, batch: usize) -> Result<usize> {
    let [_, c, h, w] = data.shape;
    let bytes = [c, h, w].iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64)).unwrap_or(u64::MAX);
    let (max, limit) = gpu.max_tensor_bytes();
    if bytes > max {
        return Err(Error::TooLarge { what: format!("one image of {c}×{h}×{w}"), bytes, limit, max });
    }
    Ok(batch.min(usize::try_from(max / bytes).unwrap_or(usize::MAX)))
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

/// Trains `adapter` on `data` for `options.steps` steps; `on_step` sees every step. A batch
/// of more images than [`TrainOptions::micro_batch`], or than the device takes at once, is
/// computed in pieces whose gradients are summed before the step. The loss
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
///
/// One adapter is trained by one run at a time: a second `train` of the same adapter (from
/// another thread) changes its tensors under the first: one of the two fails, and the
/// other's result holds some of the failed run's updates.
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
    if options.steps == 0 {
        return Err(Error::invalid("number of steps", "must be at least 1"));
    }
    if options.micro_batch == Some(0) {
        return Err(Error::invalid("micro batch", "must be at least 1"));
    }
    let at_once =
        images_that_fit(gpu, data, options.micro_batch.unwrap_or(options.batch_size).min(options.batch_size))?;
    let params: Vec<Tensor> = adapter.trainable().iter().map(|p| p.tensor.clone()).collect();
    let mut optimizer = Optimizer::new(gpu, options.optimizer, options.lr, &params)?;
    let mut batches = Batches::new(options.order, data.len(), options.batch_size);
    let mut run = Run { gpu, vit, adapter, data, at_once };
    // The step whose loss is being read back.
    let mut in_flight: Option<InFlight> = None;
    // The state before the last step whose loss was found finite, and that step's batch.
    let mut last_good: Option<(OptimizerCheckpoint, Vec<usize>)> = None;
    for step in 0..options.steps {
        let rows = batches.next_rows()?;
        let step_seed = Rng::new(options.seed ^ (step as u64).wrapping_mul(0xA24B_AED4_963E_E407)).next_u64();
        let at = (step, options.steps, step_seed);
        let mut refusals = Refusals::default();
        let (loss_value, grads) = loop {
            match run.gradients(&optimizer, &rows, at) {
                // More images at once than the device takes: the same images in smaller
                // pieces give the same step.
                Err(e) if refusals.retry_smaller(&e, run.at_once) => run.at_once /= 2,
                other => break other?,
            }
        };
        let before = optimizer.checkpoint()?;
        optimizer.step(&grads.iter().map(Option::as_ref).collect::<Vec<_>>())?;
        drop(grads);
        let read = gpu.read_later(&loss_value)?;
        let (images, at_once) = (rows.len(), run.at_once.min(rows.len()));
        let report = StepReport {
            step,
            steps: options.steps,
            loss: f32::NAN,
            images,
            pieces: images.div_ceil(at_once),
            at_once,
        };
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

/// Tells a pass the device refused for its size, to be tried again in smaller pieces, from one
/// that smaller pieces cannot help.
#[derive(Default)]
struct Refusals {
    /// The last refusal that led to smaller pieces.
    last: Option<String>,
}

impl Refusals {
    /// Whether a pass over `images` images that failed with `e` is worth trying in pieces of
    /// half as many: `e` refuses a size (a tensor past the device's buffers, a grid past its
    /// workgroups per axis), there is more than one image, and a pass with twice as many did
    /// not fail the same way already (then the batch is not what is refused: a classifier
    /// with more labels than one grid axis takes, say).
    fn retry_smaller(&mut self, e: &Error, images: usize) -> bool {
        if images <= 1 || !matches!(e, Error::TooManyWorkgroups { .. } | Error::TooLarge { .. }) {
            return false;
        }
        let text = e.to_string();
        if self.last.as_ref() == Some(&text) {
            return false;
        }
        self.last = Some(text);
        true
    }
}

/// The rows step 0 of a run with `options` trains on (of a data set of `images` images).
pub fn first_rows(options: &TrainOptions, images: usize) -> Result<Vec<usize>> {
    rows_of_step(options, images, 0)
}

/// The rows step `step` (0-based) of a run with `options` trains on (of a data set of
/// `images` images): at once in sequential order, by drawing every batch before it when
/// shuffled (each epoch's permutation follows from the one before), so in time proportional
/// to `step` then.
pub fn rows_of_step(options: &TrainOptions, images: usize, step: usize) -> Result<Vec<usize>> {
    let mut batches = Batches::new(options.order, images, options.batch_size);
    match options.order {
        BatchOrder::Sequential => batches.step = step,
        BatchOrder::Shuffled { .. } => {
            for _ in 0..step {
                batches.next_rows()?;
            }
        }
    }
    batches.next_rows()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size refusals lead to smaller pieces until one repeats unchanged (then the batch is not
    /// what the device refuses) or a piece is one image; other errors never do.
    #[test]
    fn only_refusals_that_depend_on_the_batch_are_retried_smaller() {
        let wide = |workgroups| Error::TooManyWorkgroups { kernel: "matmul", workgroups, max: 65_535 };
        let mut refusals = Refusals::default();
        assert!(refusals.retry_smaller(&wide(70_000), 64));
        assert!(refusals.retry_smaller(&wide(66_000), 32), "a smaller piece, a smaller grid");
        assert!(!refusals.retry_smaller(&wide(66_000), 16), "the same refusal again");
        assert!(!Refusals::default().retry_smaller(&wide(70_000), 1), "one image cannot be split");
        let other = Error::invalid("batch", "anything else");
        assert!(!Refusals::default().retry_smaller(&other, 64));
        let large = Error::TooLarge { what: "x".into(), bytes: 1 << 30, limit: "max_buffer_size", max: 1 << 27 };
        assert!(Refusals::default().retry_smaller(&large, 2));
    }

    /// The rows of a step are those its run draws, in either order; sequential ones come at
    /// once for any step.
    #[test]
    fn rows_of_a_step_are_the_runs() {
        let options = |order| TrainOptions {
            steps: 10,
            batch_size: 3,
            lr: 0.1,
            optimizer: OptimizerKind::Sgd { weight_decay: None },
            order,
            seed: 0,
            micro_batch: None,
        };
        for order in [BatchOrder::Sequential, BatchOrder::Shuffled { seed: 7 }] {
            let mut run = Batches::new(order, 5, 3);
            for step in 0..10 {
                let (got, want) =
                    (rows_of_step(&options(order), 5, step).expect("rows"), run.next_rows().expect("rows"));
                assert_eq!(got, want, "{order:?} step {step}");
            }
        }
        let far = usize::MAX - 1;
        let want: Vec<usize> = (0..3).map(|j| ((far as u128 * 3 + j) % 7) as usize).collect();
        assert_eq!(rows_of_step(&options(BatchOrder::Sequential), 7, far).expect("rows"), want);
    }
}
