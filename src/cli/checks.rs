//! Checks on flags, sizes and results that turn a bad value into an error naming it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, MAX_TENSOR_BYTES, MAX_TENSOR_LIMIT};
use crate::io::Dataset;
use crate::nn::VitConfig;
use crate::optim::OptimizerKind;
use crate::train::EvalReport;

/// What one batch's largest tensor allows, for images of `[_, c, h, w]`: the bytes per image of that tensor, the most bytes
/// a tensor may have (before the GPU is known: [`MAX_TENSOR_BYTES`]; with it: the device's limit)
/// and the limit's name. The largest tensor per image is the images themselves, an MLP
/// activation (`tokens × intermediate_size`) or the logits (`labels`); `tokens` counts prompt
/// tokens too. Where attention is not fused (on GPUs, and CPU adapters without subgroups of
/// 4) its scores are computed in pieces that fit, but one head's (`tokens²`) must fit one
/// tensor whatever the batch: an error otherwise.
fn batch_room(
    model: &VitConfig,
    (tokens, labels): (usize, usize),
    [_, c, h, w]: [usize; 4],
    gpu: Option<&Gpu>,
) -> Result<(u64, u64, &'static str, String)> {
    let fused_attention =
        gpu.is_none_or(|g| crate::ops::attention::fused_by_default(g, model.hidden_size, model.num_attention_heads));
    let (max, limit) = gpu.map_or((MAX_TENSOR_BYTES, MAX_TENSOR_LIMIT), Gpu::max_tensor_bytes);
    if !fused_attention {
        crate::nn::attention::one_head_scores(tokens, (max, limit))?;
    }
    let width = model.intermediate_size.max(model.hidden_size);
    let (elements, what) = [
        ((c as u64).saturating_mul(h as u64).saturating_mul(w as u64), format!("the images, {c}×{h}×{w} each")),
        (
            (tokens as u64).saturating_mul(width as u64),
            format!("the MLP activations, {tokens} tokens × {width} per image"),
        ),
        (labels as u64, format!("the logits, {labels} per image")),
    ]
    .into_iter()
    .max_by_key(|(n, _)| *n)
    .unwrap_or((1, String::new()));
    Ok((elements.max(1).saturating_mul(4), max, limit, what))
}

/// `batch`, or the most images that fit one batch (see [`batch_room`]) when fewer: evaluation
/// gives the same results in smaller batches, and training sums the gradients of the pieces.
/// Fails with [`Error::TooLarge`] when not even one image fits (before the GPU is known: on
/// no device).
pub(super) fn fitting_batch(
    model: &VitConfig,
    sizes: (usize, usize),
    shape: [usize; 4],
    batch: usize,
    gpu: Option<&Gpu>,
) -> Result<usize> {
    let (per_image, max, limit, largest) = batch_room(model, sizes, shape, gpu)?;
    let fit = usize::try_from(max / per_image).unwrap_or(usize::MAX);
    if fit == 0 {
        let device = if gpu.is_some() { "this device" } else { "any device" };
        return Err(Error::TooLarge {
            what: format!("one image of this model on {device} (its largest tensor is {largest})"),
            bytes: per_image,
            limit,
            max,
        });
    }
    Ok(batch.min(fit))
}

/// Refuses a batch of more images than the list of one step's rows can hold in memory (the
/// address space, or what the system can still give).
pub(super) fn check_rows(batch: usize) -> Result<()> {
    let bytes = (batch as u128) * size_of::<usize>() as u128;
    let short = u64::try_from(bytes).ok().filter(|&b| b <= isize::MAX as u64).map(crate::io::memory::shortfall);
    let why = match short {
        None => "more than the address space holds".to_string(),
        Some(Some(free)) => format!("more than the {free} bytes this process can still get"),
        Some(None) => return Ok(()),
    };
    Err(Error::invalid(
        "--batch-size",
        format!("{batch} images are more than one step can list: their row numbers take {bytes} bytes, {why}"),
    ))
}

pub(super) fn at_least_one(flag: &str, value: Option<usize>) -> Result<()> {
    match value {
        Some(0) => Err(Error::invalid(flag, "must be at least 1")),
        _ => Ok(()),
    }
}

pub(super) fn check_optimizer(lr: f64, optimizer: &OptimizerKind) -> Result<()> {
    if !(lr > 0.0 && (lr as f32).is_finite() && lr as f32 > 0.0) {
        return Err(Error::invalid("--lr", format!("must be a positive number that fits in f32, got {lr:?}")));
    }
    let decay = match *optimizer {
        OptimizerKind::Sgd { weight_decay } => weight_decay,
        OptimizerKind::AdamW { weight_decay, .. } => Some(weight_decay),
    };
    if let Some(wd) = decay
        && !(wd >= 0.0 && (wd as f32).is_finite())
    {
        return Err(Error::invalid("--weight-decay", format!("must be a number ≥ 0 that fits in f32, got {wd:?}")));
    }
    Ok(())
}

/// Fails, naming the first image, when the model's logits are not finite: an accuracy and a
/// mean loss computed from them would be meaningless (see [`non_finite_logits`]).
pub(super) fn check_logits(report: &EvalReport, data: &Dataset, blame: &Blame<'_>) -> Result<()> {
    match report.first_non_finite {
        Some(found) => Err(non_finite_logits(blame, data, found)),
        None => Ok(()),
    }
}

/// What a non-finite logit may be blamed on besides the data: the model run (from the folder
/// `model`), and the adapter with the file it came from (its weights, or the config of a
/// fresh one).
pub(super) struct Blame<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) vit: &'a crate::nn::Vit,
    pub(super) model: &'a Path,
    pub(super) adapter: Option<(&'a crate::adapters::Adapter, &'a Path)>,
}

/// The error for image `image` of `data` whose logits are not finite (first `value`). When
/// the image's pixels are of ordinary size: naming the adapter's file when the model alone
/// computes that image finitely (the adapter's values overflow f32), the model's weights when
/// it does not. Otherwise (or when that cannot be told) the data file, with a hint at the
/// likelier culprit.
pub(super) fn non_finite_logits(blame: &Blame<'_>, data: &Dataset, (image, value): (usize, f32)) -> Error {
    let per = data.pixels.len() / data.len().max(1);
    let largest = data.pixels[image * per..(image + 1) * per].iter().fold(0f32, |m, v| m.max(v.abs()));
    // Normalised pixels are a few units; far beyond that, the data is the likelier culprit.
    let ordinary = largest <= 1e3;
    let data_name = data.path().display();
    if ordinary {
        // With an adapter: its file, and whether the model alone computes the image finitely.
        let alone = blame
            .adapter
            .map(|(_, file)| (file, crate::train::finite_without_adapter(blame.gpu, blame.vit, data, image)));
        match alone {
            Some((file, Ok(true))) => {
                return Error::Format {
                    path: file.to_path_buf(),
                    message: format!(
                        "this adapter makes the logits of image {image} of {data_name} {value}, which the model \
                         alone computes finitely: its values are too large for f32 arithmetic"
                    ),
                };
            }
            None | Some((_, Ok(false))) => {
                return Error::Format {
                    path: crate::nn::weights::weights_file(blame.model),
                    message: format!(
                        "the model's weights make its logits of image {image} of {data_name} {value}, though the \
                         image's pixels are of ordinary size (largest magnitude {largest:e}): weights too large \
                         for f32 arithmetic?"
                    ),
                };
            }
            Some((_, Err(_))) => {}
        }
    }
    let check = if !ordinary {
        "check the data's normalisation"
    } else {
        "the pixels are of ordinary size, so check the model's and the adapter's weights"
    };
    Error::Format {
        path: data.path().to_path_buf(),
        message: format!(
            "the model's logits for image {image} are {value} (its largest pixel magnitude is {largest:e}); \
             {check}"
        ),
    }
}

/// Refuses an `--out` folder whose files `names` (those a save replaces) include a pipe,
/// socket or device, force or not: a save would destroy it.
pub(super) fn refuse_special_outputs(out: &Path, names: &[&str]) -> Result<()> {
    crate::io::paths::refuse_special_files(out, names).map_err(|e| Error::invalid("--out", e.to_string()))?;
    // A folder under a file's name cannot be replaced by the file: found now, not after the run.
    match names.iter().map(|n| out.join(n)).find(|p| p.is_dir()) {
        Some(path) => Err(Error::invalid(
            "--out",
            format!("{} is a folder, not a file; it is not replaced (move it away first)", path.display()),
        )),
        None => Ok(()),
    }
}

/// Refuses the input of flag `second` naming the same pipe, device or `/dev` stream as that
/// of `first` (`--data` and `--eval-data` both `/dev/stdin`, one FIFO): it can be read only
/// once, so the second read would find nothing or wait forever.
pub(super) fn refuse_one_stream_twice((first, data): (&str, &Path), (second, eval): (&str, &Path)) -> Result<()> {
    let (Ok(d), Ok(e)) = (std::fs::metadata(data), std::fs::metadata(eval)) else { return Ok(()) };
    // `/dev/stdin` and `/dev/fd/N` of a regular file share its read position on some systems,
    // so reading it twice through them finds nothing the second time.
    let stream = !d.is_file() && !d.is_dir();
    if same_file((data, &d), (eval, &e)) && (stream || (data.starts_with("/dev") && eval.starts_with("/dev"))) {
        return Err(Error::invalid(
            second,
            format!(
                "{} is the same input as {first} {}, a pipe, device or /dev stream that can be read only once; \
                 give {second} a file of its own",
                eval.display(),
                data.display()
            ),
        ));
    }
    Ok(())
}

/// Whether two paths with their metadata are one file (on Unix by device and inode, so also
/// through links; elsewhere by the paths as given).
#[cfg(unix)]
fn same_file((_, a): (&Path, &std::fs::Metadata), (_, b): (&Path, &std::fs::Metadata)) -> bool {
    crate::io::paths::same_inode(a, b)
}

#[cfg(not(unix))]
fn same_file((a, _): (&Path, &std::fs::Metadata), (b, _): (&Path, &std::fs::Metadata)) -> bool {
    a == b
}

/// Refuses an output file that is one of the `inputs` (files, or files inside input folders,
/// each with the flag that names it): writing it would destroy what the run reads. Files are
/// compared as the system finds them (on Unix by device and inode), not by their absolute
/// paths, which may be too long to spell out. `flag` names the output: a file, or with
/// `--out` a file of the output folder.
pub(super) fn refuse_overwriting_inputs(out: &Path, flag: &str, inputs: &[(&str, &Path)]) -> Result<()> {
    if std::fs::symlink_metadata(out).is_err() {
        return Ok(()); // a new file
    }
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    for &(input_flag, input) in inputs {
        let what = if same_place(out, input) {
            format!("this run's {input_flag}")
        } else if input.is_dir() && same_place(folder, input) {
            format!("a file of this run's {input_flag} folder {}", input.display())
        } else {
            continue;
        };
        let other = if flag == "--out" { "folder" } else { "file" };
        return Err(Error::invalid(
            flag,
            format!("{} is {what}; writing it would destroy an input, choose another {other}", out.display()),
        ));
    }
    Ok(())
}

/// Whether two paths lead to one file or folder (through links too; on Unix by device and
/// inode, which needs no absolute path, however deep the working folder).
pub(super) fn same_place(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => same_file((a, &x), (b, &y)),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of 2²⁰ labels has 4 MiB of logits per image: no device indexes more than 4,095
    /// images' worth in one tensor, so a larger batch is taken 4,095 images at a time (by
    /// evaluation and training alike), and one that fits stays as given.
    #[test]
    fn batches_shrink_to_what_one_tensor_holds() {
        let json = br#"{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
                        "intermediate_size": 16, "image_size": 4, "patch_size": 2, "num_channels": 1}"#;
        let model =
            VitConfig::from_json(&crate::io::json::JsonFile::parse(Path::new("config.json"), json).expect("JSON"))
                .expect("a config");
        let n = 5000;
        let data =
            Dataset::from_parts(Path::new("data"), [n, 1, 4, 4], vec![0.0; n * 16], vec![0; n]).expect("a data set");
        let sizes = (5, 1 << 20);
        assert_eq!(fitting_batch(&model, sizes, data.shape, n, None).expect("fits"), 4095);
        assert_eq!(fitting_batch(&model, sizes, data.shape, 64, None).expect("fits"), 64);
        // A head no device holds one image of is refused, saying so.
        let e = fitting_batch(&model, (5, usize::MAX / 8), data.shape, 1, None).expect_err("one image too large");
        assert!(e.to_string().contains("one image of this model on any device"), "{e}");
        assert!(e.to_string().contains("the logits, 2305843009213693951 per image"), "{e}");
    }
}
