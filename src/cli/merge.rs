//! `peft-wgpu merge`: a model folder with the adapter folded into its weights.

use std::path::Path;

use super::checks::{fitting_batch, refuse_special_outputs, same_place};
use super::inputs::{AdapterInput, read_model, refuse_headless, refuse_merged_twice, tokens};
use super::{holds_adapter, holds_model};
use crate::adapters::{Adapter, PeftType};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::Dataset;
use crate::io::json::JsonFile;
use crate::io::paths::check_output_dir;
use crate::nn::Vit;
use crate::train::{evaluate, finite_without_adapter};

/// `peft-wgpu merge`: writes a model folder with the adapter folded in. An `out` that already
/// holds a model (or is the `--model` folder) is refused unless `force`. Returns the number of
/// merged RLP prompt tokens the written model holds (`prompt_embeddings`), 0 for none.
pub fn merge(model: &Path, adapter: &Path, out: &Path, force: bool) -> Result<usize> {
    if !force && same_place(model, out) {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} is the --model folder; the merged model would replace the base one (pass --force to do that)",
                out.display()
            ),
        ));
    }
    let refuse_held = || {
        if holds_adapter(out) {
            return Err(Error::invalid(
                "--out",
                format!(
                    "{} holds an adapter; a merged model beside it would get the adapter applied again by \
                     PEFT-aware loaders; choose another folder",
                    out.display()
                ),
            ));
        }
        if !force && holds_model(out) {
            return Err(Error::invalid(
                "--out",
                format!("{} already holds a model; pass --force to overwrite it", out.display()),
            ));
        }
        Ok(())
    };
    refuse_held()?;
    check_output_dir(out, "--out")?;
    refuse_special_outputs(out, &["config.json", "model.safetensors", "model.safetensors.index.json"])?;
    let weights = read_model(model)?;
    let input = AdapterInput::folder(adapter, "--adapter", &weights.config)?;
    refuse_headless(&weights, model, Some(&input))?;
    // Force or not: `--force` is for replacing `--out` (the model itself, merging in place).
    refuse_merged_twice(&weights, model, &input, "--adapter", "merge it into the base model")?;
    if input.config.peft_type() == PeftType::Moppa {
        return Err(Error::invalid(
            "--adapter",
            format!(
                "{} is a MoPPA adapter, which filters tokens in the frequency domain and cannot be folded into \
                 the ViT's weights; evaluate it with `eval --adapter` instead",
                adapter.display()
            ),
        ));
    }

    let gpu = Gpu::new()?;
    let vit = Vit::from_weights(&gpu, &weights)?;
    // Recorded in the merged weights, so that the adapter is not applied to them again.
    let fingerprint = input.weights.as_ref().map(crate::io::safetensors::TensorFile::fingerprint);
    let adapter_file = input.source_file();
    let tokens = tokens(&weights, Some(&input))?;
    let adapter = input.build(&gpu, &vit, 0)?;
    let mut merged = adapter.merge(&gpu, &weights)?;
    // After the merge's own check, which names a weight that overflows.
    check_plain_image(&gpu, &vit, (&adapter, tokens), &adapter_file, model)?;
    merged.merged_adapters.extend(fingerprint);
    // The merged config is the model's own with the adapter's labels: fields this crate does
    // not read (transformers' version, pooler settings, custom keys) are kept.
    let original = JsonFile::read(&model.join("config.json"))?;
    // Checked again under the folder's lock: another run may have saved there meanwhile.
    merged.save_checked(out, merged.config.to_json_over(original.object()), refuse_held)?;
    let dtype = ["torch_dtype", "dtype"].into_iter().find_map(|k| original.opt_string(k).ok().flatten());
    if let Some(dtype) = dtype.filter(|d| !matches!(d.as_str(), "float32" | "float" | "auto")) {
        note!(
            "note: the merged weights are written in float32 (the model's config.json says {dtype}), so they take \
             more room; its config now says float32"
        );
    }
    Ok(merged.prompts.as_ref().map_or(0, |p| p.shape[0]))
}

/// Fails when the adapted model's logits for a plain image (every normalised pixel 0, the
/// data's mean) are not finite: its weights (or, when the model alone computes that image
/// finitely, the adapter's) are too large for f32 arithmetic, and the merged model would
/// compute no numbers on any image. `eval` and `train` refuse such an adapter on their data;
/// a merge has none, so this one image stands in for it. `tokens` counts the prompt tokens.
/// Skipped, with a note, when one image of this model is more than the device or the memory
/// holds, or than its loops run ([`Error::TooLong`]): the merge itself needs no image.
fn check_plain_image(
    gpu: &Gpu,
    vit: &Vit,
    (adapter, tokens): (&Adapter, usize),
    adapter_file: &Path,
    model: &Path,
) -> Result<()> {
    let c = vit.config();
    let shape = [1, c.num_channels, c.image_size[0], c.image_size[1]];
    let name = Path::new("a plain image");
    let skipped = || {
        note!(
            "note: one image of this model is more than this device or this machine's memory holds, so the merged \
             model was not run on a plain image to check that its logits are finite"
        );
        Ok(())
    };
    let n = shape.iter().product();
    let pixels = fitting_batch(c, (tokens, adapter.num_labels()), shape, 1, Some(gpu))
        .and_then(|_| crate::io::memory::reserve::<f32>(name, n));
    let Ok(mut pixels) = pixels else { return skipped() };
    pixels.resize(n, 0.0);
    let plain = Dataset::from_parts(name, shape, pixels, vec![0])?;
    let report = match evaluate(gpu, vit, Some(adapter), &plain, 1) {
        Err(Error::TooLong { .. } | Error::TooLarge { .. } | Error::OutOfMemory { .. }) => return skipped(),
        report => report?,
    };
    let Some((_, value)) = report.first_non_finite else { return Ok(()) };
    let message = |whose: &str| {
        format!(
            "{whose} make the model's logits for a plain image (every normalised pixel 0) {value}: values too large \
             for f32 arithmetic, so the merged model would compute no numbers"
        )
    };
    Err(match finite_without_adapter(gpu, vit, &plain, 0) {
        Ok(false) => Error::Format { path: crate::nn::weights::weights_file(model), message: message("its weights") },
        _ => Error::Format { path: adapter_file.to_path_buf(), message: message("this adapter's values") },
    })
}
