//! `peft-wgpu eval`: accuracy and mean loss of a model, with or without an adapter, and its
//! logits on request.

use std::path::Path;

use super::Progress;
use super::checks::{Blame, at_least_one, check_logits, fitting_batch, refuse_overwriting_inputs};
use super::inputs::{AdapterInput, read_data, read_model_for_loss, refuse_headless, refuse_merged_twice, tokens};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::paths::{Replaces, check_output_file};
use crate::io::safetensors::{self as st, HostTensor};
use crate::nn::Vit;
use crate::train::{EvalReport, evaluate_with_progress};

/// `peft-wgpu eval`: accuracy and mean loss; with `logits_out`, writes the logits (the report
/// holds them only then: `EvalReport::logits` is empty otherwise).
pub fn eval(
    model: &Path,
    adapter: Option<&Path>,
    data: &Path,
    batch_size: usize,
    logits_out: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    at_least_one("--batch-size", Some(batch_size))?;
    if let Some(path) = logits_out {
        check_output_file(path, "--logits-out", Replaces::Logits)?;
        let inputs = [("--data", data), ("--model", model), ("--adapter", adapter.unwrap_or(model))];
        refuse_overwriting_inputs(path, "--logits-out", &inputs)?;
    }
    let weights = read_model_for_loss(model)?;
    let adapter = adapter.map(|dir| AdapterInput::folder(dir, "--adapter", &weights.config)).transpose()?;
    refuse_headless(&weights, model, adapter.as_ref())?;
    if let Some(a) = &adapter {
        refuse_merged_twice(
            &weights,
            model,
            a,
            "--adapter",
            "evaluate the merged model alone, or the base model with it",
        )?;
    }
    let labels = adapter.as_ref().map_or(weights.config.num_labels, |a| a.labels);
    if labels == 1 && weights.config.problem_type.is_none() {
        // transformers scores such a head by regression (mean squared error), not by accuracy.
        let from = adapter.as_ref().map_or(model.join("config.json"), |a| a.labels_config(model, &weights.config));
        let message = "is 1 and config.json sets no problem_type, so transformers scores the head by \
                       regression; eval computes accuracy and cross-entropy over class labels, which needs a \
                       head of at least 2 labels";
        return Err(Error::Config { path: from, key: "num_labels".into(), message: message.into() });
    }
    let data = read_data(data, "--data", &weights.config, labels)?;
    if let Some(path) = logits_out {
        // The logits and the file made of them are both in memory while it is written.
        let bytes = (data.len() as u64).saturating_mul(labels as u64).saturating_mul(8);
        if let Some(free) = crate::io::memory::shortfall(bytes) {
            let message = format!(
                "the logits of {} images × {labels} labels need {bytes} bytes of memory to write, more than the \
                 {free} bytes this process can still get; evaluate fewer images at a time (split the data file)",
                data.len()
            );
            return Err(Error::Io { path: path.to_path_buf(), source: std::io::Error::other(message) });
        }
    }
    let tokens = tokens(&weights, adapter.as_ref())?;
    let asked = batch_size.min(data.len());
    let batch = fitting_batch(&weights.config, (tokens, labels), data.shape, asked, None)?;

    let gpu = Gpu::new()?;
    let batch = fitting_batch(&weights.config, (tokens, labels), data.shape, batch, Some(&gpu))?;
    if batch < asked {
        note!(
            "note: --batch-size {batch_size} is more than the {batch} images of this model that one tensor on this \
             device holds; evaluating {batch} at a time (the results do not depend on the batch size)"
        );
    }
    let vit = Vit::from_weights(&gpu, &weights)?;
    let adapter_file = adapter.as_ref().map(AdapterInput::source_file);
    let adapter = adapter.map(|a| a.build(&gpu, &vit, 0)).transpose()?;
    let mut report =
        evaluate_with_progress(&gpu, &vit, adapter.as_ref(), &data, batch, logits_out.is_some(), &mut |i, n| {
            progress.evaluated(i, n);
        })?;
    let blame = Blame { gpu: &gpu, vit: &vit, model, adapter: adapter.as_ref().zip(adapter_file.as_deref()) };
    check_logits(&report, &data, &blame)?;
    if let Some(path) = logits_out {
        let t = HostTensor::new(vec![data.len(), report.labels], std::mem::take(&mut report.logits))?;
        crate::io::atomic::write_output(path, &st::serialize(path, &[("logits".to_string(), &t)], None)?)?;
        report.logits = t.data;
    }
    Ok(report)
}
