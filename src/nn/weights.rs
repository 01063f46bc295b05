//! Loading the weights of a `ViTForImageClassification` folder (single file or sharded with
//! its index), accepting both namings, checking every shape against the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::VitConfig;
use super::names::{LayerPart, ModuleId, Naming};
pub use super::save::{finish_interrupted_save, weights_file};
pub use super::shapes::{expected_shapes, module_shapes};
use super::shapes::{f32_bytes, holds_all, prompts_fit, prompts_shape};
use super::shards::{INDEX_FILE, weight_files};
use crate::error::{Error, Result};
use crate::io::safetensors::{HostTensor, TensorFile};
use crate::io::stamp;

/// Every weight of a ViT on the host, keyed by its on-disk name.
#[derive(Clone, Debug)]
pub struct VitWeights {
    /// The architecture.
    pub config: VitConfig,
    /// Weights by on-disk name (`vit.encoder.layer.0.attention.attention.query.weight`, …).
    pub tensors: BTreeMap<String, HostTensor>,
    /// Prompt tokens `[n, D]` inserted after CLS, in a model merged from an RLP adapter.
    pub prompts: Option<HostTensor>,
    /// Fingerprints of the adapter weight files merged into these weights, oldest first
    /// (saved as [`stamp::MERGED_KEY`]; empty for a model no adapter was merged into).
    pub merged_adapters: Vec<String>,
    /// Whether the folder held no classifier (a `ViTModel` backbone, or a classifier saved
    /// with no labels): the head in `tensors` is zeros, and only an adapter with a head of
    /// its own (a saved `classifier`, a new one by `num_labels`) makes a classifier of it,
    /// as `ViTForImageClassification.from_pretrained(backbone, num_labels=N)` adds a new one.
    pub headless: bool,
}

/// Key of the merged RLP prompts in a model file.
pub const PROMPT_KEY: &str = "prompt_embeddings";

/// The most prompt tokens a model (merged) or an RLP adapter may hold: every one joins the
/// attention of every layer, whose cost grows with the square of the token count.
pub const MAX_PROMPT_TOKENS: usize = 1 << 16;

/// Fails on a weight the files hold for a part of the model its config does not have: a
/// layer past `num_hidden_layers`, or a query, key or value bias with `qkv_bias` false.
/// transformers would drop them with a warning; here they mean a config that does not
/// describe its weights. (Other extra tensors, a backbone's pooler say, are passed over.)
fn refuse_stray_weights(files: &[TensorFile], config: &VitConfig, bare: bool) -> Result<()> {
    let layers = config.num_hidden_layers;
    for f in files {
        for key in f.keys() {
            // A backbone's keys, read as a classifier's (`encoder.layer.N` as `vit.encoder.layer.N`).
            let prefixed = if bare { format!("vit.{key}") } else { key.to_string() };
            let index = ["vit.encoder.layer.", "vit.layers."]
                .iter()
                .find_map(|p| prefixed.strip_prefix(p))
                .and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
            let message = match index {
                Some(i) if i >= layers => {
                    format!("holds `{key}`, a weight of layer {i}, but config.json has num_hidden_layers {layers}")
                }
                _ if !config.qkv_bias && is_qkv_bias(&prefixed, layers) => {
                    format!("holds `{key}`, but config.json sets qkv_bias false (transformers would drop it)")
                }
                _ => continue,
            };
            return Err(Error::Format { path: f.path().to_path_buf(), message });
        }
    }
    Ok(())
}

/// Whether `key` is the bias of a query, key or value projection, under either naming.
fn is_qkv_bias(key: &str, layers: usize) -> bool {
    let Some(module) = key.strip_suffix(".bias") else { return false };
    matches!(
        ModuleId::parse(module, layers),
        Some((ModuleId::Layer(_, LayerPart::Query | LayerPart::Key | LayerPart::Value), _))
    )
}

/// Translates an on-disk key to its transformers-5 spelling (same key outside the layers).
fn v5_alias(key: &str, layers: usize) -> Option<String> {
    let (module, leaf) = key.rsplit_once('.')?;
    let (id, _) = ModuleId::parse(module, layers)?;
    Some(format!("{}.{leaf}", id.path(Naming::Transformers5)))
}

/// `e`, a weight whose shape the config does not give, blamed on `dir/config.json` when that
/// leaves out sizes whose defaults (transformers', ViT-B/16 at 224) gave the shape.
/// `e`, a weight's shape mismatch, with the config.json sizes its expected shape comes from,
/// so that a config that does not describe its weights (a `num_labels` or `id2label` of
/// another head, say) is seen as a candidate as well as the weights file.
fn with_sizes(e: Error, key: &str, c: &VitConfig) -> Error {
    let Error::TensorMismatch { path, key: name, expected, got } = e else { return e };
    let sizes = if key.starts_with("classifier.") {
        format!("num_labels {} (id2label's length when it is given), hidden_size {}", c.num_labels, c.hidden_size)
    } else if key.contains("patch_embeddings") {
        format!("hidden_size {}, num_channels {}, patch_size {:?}", c.hidden_size, c.num_channels, c.patch_size)
    } else if key.contains("position_embeddings") {
        format!("image_size {:?}, patch_size {:?}, hidden_size {}", c.image_size, c.patch_size, c.hidden_size)
    } else if key.contains("intermediate") || key.contains(".output.dense") && !key.contains("attention") {
        format!("hidden_size {}, intermediate_size {}", c.hidden_size, c.intermediate_size)
    } else {
        format!("hidden_size {}", c.hidden_size)
    };
    Error::TensorMismatch { path, key: name, expected: format!("{expected} (config.json: {sizes})"), got }
}

fn blame_defaults(dir: &Path, e: Error) -> Error {
    let path = dir.join("config.json");
    let Ok(json) = crate::io::json::JsonFile::read(&path) else { return e };
    let left_out: Vec<String> = super::config::SIZE_DEFAULTS
        .iter()
        .filter(|(k, _)| json.get(k).is_none())
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    if left_out.is_empty() {
        return e;
    }
    let message = format!(
        "leaves out sizes, so transformers' defaults apply ({}), which the weights do not fit: {e}",
        left_out.join(", ")
    );
    Error::Format { path, message }
}

impl VitWeights {
    /// Reads `dir/config.json` and the weights beside it (with the folder's shared lock held,
    /// see [`crate::io::atomic::lock_shared`]).
    pub fn load(dir: &Path) -> Result<VitWeights> {
        VitWeights::load_as(dir, "a model folder")
    }

    /// [`VitWeights::load`], saying what the folder is for (`what`) when it is none.
    pub(crate) fn load_as(dir: &Path, what: &str) -> Result<VitWeights> {
        // Held while the files are read, so that all of them come from one save even while
        // another process saves into the folder (`merge --force`).
        let lock = crate::io::atomic::lock_shared(dir);
        finish_interrupted_save(dir);
        if lock.is_some() {
            // No save is under way: temporaries are a killed one's.
            stamp::remove_leftovers(&dir.join("model.safetensors"), &dir.join("config.json"));
        }
        stamp::refuse_unfinished(&dir.join("model.safetensors"), &dir.join("config.json"))?;
        crate::io::paths::expect_dir(dir, what, "config.json")?;
        crate::io::paths::refuse_special_files(dir, &["config.json", "model.safetensors"])?;
        let config = VitConfig::from_dir(dir)?;
        let shapes = expected_shapes(&config);
        // The f32 copies of the tensors, beside the files' bytes in memory: the most needed
        // (each file's memory is given back behind every tensor converted, which saves the
        // copy where the allocator shrinks a block in place, as glibc does). Checked before
        // the files are read, as far as the files can hold them (so that a config that does
        // not fit its weights is named as such), and again once the shapes are checked.
        let copies = shapes.iter().fold(0u64, |sum, (_, s)| sum.saturating_add(f32_bytes(s)));
        let (files, placed) = weight_files(dir, copies)?;
        // Which file and name holds each tensor, every shape checked before any is converted.
        let mut wanted: Vec<(usize, String, String)> = Vec::with_capacity(shapes.len() + 1);
        // A backbone (`ViTModel`) names its weights without the `vit.` prefix.
        let bare = !files.iter().any(|f| f.keys().any(|k| k.starts_with("vit.")))
            && files.iter().any(|f| f.keys().any(|k| k.starts_with("embeddings.")));
        let headless = !files.iter().any(|f| f.keys().any(|k| k.starts_with("classifier.")));
        let mut zero_head = Vec::new();
        for (key, shape) in shapes {
            if headless && key.starts_with("classifier.") {
                zero_head.push((key, shape));
                continue;
            }
            let alias = v5_alias(&key, config.num_hidden_layers);
            let mut spellings = vec![key.clone()];
            spellings.extend(alias);
            if bare {
                spellings = spellings.iter().map(|n| n.strip_prefix("vit.").unwrap_or(n).to_string()).collect();
            }
            let (spelled, alias) = (&spellings[0], spellings.get(1));
            let names = std::iter::once(spelled).chain(alias);
            // The shard the index names for the key (no other shard holds it, see
            // `weight_files`); else whichever file holds it.
            let found = match names.clone().find_map(|n| placed.get(n).map(|&i| (i, n))) {
                Some((i, name)) => Some((i, name.clone())),
                None => files
                    .iter()
                    .enumerate()
                    .find_map(|(i, f)| names.clone().find(|n| f.contains(n)).map(|n| (i, n.clone()))),
            };
            let Some((at, name)) = found else {
                let path = files.first().map(|f| f.path().to_path_buf()).unwrap_or_else(|| dir.to_path_buf());
                if files.len() == 1 && placed.is_empty() {
                    return Err(Error::MissingTensor { path, key: spelled.clone() });
                }
                // Sharded: the index lists no shard for the key, and none it lists holds it.
                return Err(Error::Config {
                    path: dir.join(INDEX_FILE),
                    key: "weight_map".into(),
                    message: format!("has no entry for tensor `{spelled}`, and no shard it lists holds it"),
                });
            };
            // A config that leaves out sizes is named for them; otherwise the sizes used are
            // shown beside the weights file.
            files[at].check_shape(&name, &shape).map_err(|e| match blame_defaults(dir, e) {
                e @ Error::TensorMismatch { .. } => with_sizes(e, &key, &config),
                blamed => blamed,
            })?;
            // The same weight under both namings: which one counts would be a guess.
            if let Some(other) = std::iter::once(spelled).chain(alias).find(|n| **n != name)
                && let Some(f) = files.iter().find(|f| f.contains(other))
            {
                return Err(Error::Format {
                    path: f.path().to_path_buf(),
                    message: format!(
                        "holds `{other}` and `{name}`, one weight under transformers 4's and 5's names; keep one"
                    ),
                });
            }
            wanted.push((at, name, key));
        }
        refuse_stray_weights(&files, &config, bare)?;
        let prompt_file = match placed.get(PROMPT_KEY) {
            Some(&i) if !files[i].contains(PROMPT_KEY) => {
                return Err(Error::MissingTensor { path: files[i].path().to_path_buf(), key: PROMPT_KEY.into() });
            }
            Some(&i) => Some(i),
            None => files.iter().position(|f| f.contains(PROMPT_KEY)),
        };
        if let Some(i) = prompt_file {
            let shape = files[i].shape(PROMPT_KEY).unwrap_or_default();
            if !prompts_fit(shape, config.hidden_size) {
                return Err(Error::TensorMismatch {
                    path: files[i].path().to_path_buf(),
                    key: PROMPT_KEY.into(),
                    expected: prompts_shape(config.hidden_size),
                    got: format!("shape {shape:?}"),
                });
            }
            wanted.push((i, PROMPT_KEY.into(), PROMPT_KEY.into()));
        }
        crate::io::memory::check_loadable(files.first().map_or(dir, TensorFile::path), "it", 0, copies)?;
        // Each file converted into f32 tensors and let go, tensor by tensor from its end.
        let (mut tensors, mut prompts) = (BTreeMap::new(), None);
        let merged_adapters = files
            .iter()
            .find_map(|f| f.metadata().get(stamp::MERGED_KEY))
            .map(|list| list.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        for (at, file) in files.into_iter().enumerate() {
            let mine: Vec<&(usize, String, String)> = wanted.iter().filter(|w| w.0 == at).collect();
            let names: Vec<&str> = mine.iter().map(|w| w.1.as_str()).collect();
            for ((_, _, key), tensor) in mine.iter().zip(file.into_f32_tensors(&names)?) {
                if key == PROMPT_KEY {
                    prompts = Some(tensor);
                } else {
                    tensors.insert(key.clone(), tensor);
                }
            }
        }
        for (key, shape) in zero_head {
            let values = vec![0.0; shape.iter().product()];
            tensors.insert(key, HostTensor::new(shape, values)?);
        }
        Ok(VitWeights { config, tensors, prompts, merged_adapters, headless })
    }

    /// Fails unless `config` passes [`VitConfig::check`], every tensor it implies is here
    /// with its shape and as many values, the prompts, if any, are `[n ≥ 1, hidden]`, and
    /// every value is finite (a `VitWeights` built or changed in code).
    pub fn check(&self) -> Result<()> {
        self.config.check()?;
        for (key, shape) in expected_shapes(&self.config) {
            match self.tensors.get(&key) {
                Some(t) if t.shape == shape && holds_all(&t.shape, t.data.len()) => {}
                Some(t) => {
                    return Err(Error::shape(
                        "ViT weights",
                        format!("`{key}` of shape {shape:?}"),
                        format!("shape {:?} with {} values", t.shape, t.data.len()),
                    ));
                }
                None => return Err(Error::invalid("ViT weights", format!("`{key}` is missing"))),
            }
        }
        if let Some(p) = &self.prompts {
            let d = self.config.hidden_size;
            if !prompts_fit(&p.shape, d) || !holds_all(&p.shape, p.data.len()) {
                return Err(Error::shape(
                    "ViT weights",
                    format!("`{PROMPT_KEY}` of {}", prompts_shape(d)),
                    format!("shape {:?} with {} values", p.shape, p.data.len()),
                ));
            }
        }
        // What a folder's `load` refuses, weights made in code may not hold either.
        let prompt_key = PROMPT_KEY.to_string();
        for (key, t) in self.tensors.iter().chain(self.prompts.iter().map(|p| (&prompt_key, p))) {
            t.check_finite(|| format!("weight `{key}`"))?;
        }
        Ok(())
    }

    /// Random weights for `config`, seeded: linear and conv weights `N(0, 0.02²)` as
    /// transformers initialises them, embeddings `N(0, 0.02²)`, biases `N(0, 0.02²)`,
    /// LayerNorm gains `1 + N(0, 0.02²)`. For benchmarks and tests that need a model of a
    /// given shape and no file. A `config` that fails [`VitConfig::check`], or whose tensors
    /// could not be held (past [`crate::gpu::MAX_TENSOR_BYTES`], or past the host's memory),
    /// is an error, found before anything is generated.
    pub fn random(config: &VitConfig, seed: u64) -> Result<VitWeights> {
        let mut rng = crate::rng::Rng::new(seed);
        VitWeights::generate(config, "VitWeights::random", |key, shape, n, data| {
            let is_norm_gain = key.ends_with(".weight") && shape.len() == 1;
            data.extend(rng.normal_iter(n, if is_norm_gain { 1.0 } else { 0.0 }, 0.02));
        })
    }

    /// Weights of `config` whose values `fill(key, shape, n, data)` appends to `data` (room
    /// for its `n` values reserved): the config is checked and every tensor's room reserved
    /// first, so a config too large to hold is an error (`what` names the caller) before
    /// anything is generated.
    pub(crate) fn generate(
        config: &VitConfig,
        what: &str,
        mut fill: impl FnMut(&str, &[usize], usize, &mut Vec<f32>),
    ) -> Result<VitWeights> {
        config.check()?;
        let shapes = expected_shapes(config);
        let mut sizes = Vec::with_capacity(shapes.len());
        for (key, shape) in &shapes {
            let n = crate::tensor::checked_numel(shape).unwrap_or(usize::MAX);
            let bytes = (n as u64).saturating_mul(4);
            if bytes > crate::gpu::MAX_TENSOR_BYTES {
                let (limit, max) = (crate::gpu::MAX_TENSOR_LIMIT, crate::gpu::MAX_TENSOR_BYTES);
                return Err(Error::TooLarge { what: format!("weight `{key}` of shape {shape:?}"), bytes, limit, max });
            }
            let mut data: Vec<f32> = Vec::new();
            data.try_reserve_exact(n)
                .map_err(|_| Error::invalid(what, format!("no host memory for `{key}` of shape {shape:?}")))?;
            sizes.push((data, n));
        }
        let tensors = shapes
            .into_iter()
            .zip(sizes)
            .map(|((key, shape), (mut data, n))| {
                fill(&key, &shape, n, &mut data);
                (key, HostTensor { shape, data })
            })
            .collect();
        Ok(VitWeights { config: config.clone(), tensors, prompts: None, merged_adapters: Vec::new(), headless: false })
    }

    /// The weight called `key` (on-disk name).
    pub fn get(&self, key: &str) -> Result<&HostTensor> {
        self.tensors
            .get(key)
            .ok_or_else(|| Error::MissingTensor { path: PathBuf::from("<model>"), key: key.to_string() })
    }

    /// Weight and bias of `module`.
    pub fn module(&self, module: ModuleId) -> Result<(&HostTensor, Option<&HostTensor>)> {
        let path = module.path(Naming::OnDisk);
        let w = self.get(&format!("{path}.weight"))?;
        let b = self.tensors.get(&format!("{path}.bias"));
        Ok((w, b))
    }
}
