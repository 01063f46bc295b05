//! `config.json` of a Hugging Face `ViTForImageClassification`.

use std::path::Path;

use crate::error::Result;
use crate::io::json::JsonFile;

/// The architecture of a ViT classifier, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Width of every token, `D`.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Input image `[height, width]` (a config's integer `image_size` is a square).
    pub image_size: [usize; 2],
    /// Patch `[height, width]`, no side larger than the image's; pixels past the last whole
    /// patch are dropped, as by transformers' strided conv.
    pub patch_size: [usize; 2],
    /// Input channels.
    pub num_channels: usize,
    /// LayerNorm epsilon, as written in the config (the kernels use it as f32).
    pub layer_norm_eps: f64,
    /// Whether query, key and value have biases.
    pub qkv_bias: bool,
    /// Classes of the classifier head.
    pub num_labels: usize,
    /// Class names by index, when the config has them.
    pub id2label: Vec<String>,
    /// transformers' `problem_type` when the config names one: the loss it trains with
    /// (`train` and `eval` compute that of `single_label_classification` only).
    pub problem_type: Option<String>,
}

/// transformers' `ViTConfig` defaults (ViT-B/16 at 224) of the sizes a config may leave out.
pub(crate) const SIZE_DEFAULTS: [(&str, usize); 6] = [
    ("hidden_size", 768),
    ("num_hidden_layers", 12),
    ("num_attention_heads", 12),
    ("intermediate_size", 3072),
    ("image_size", 224),
    ("patch_size", 16),
];

/// The default of size field `key` ([`SIZE_DEFAULTS`]).
fn size_default(key: &str) -> usize {
    SIZE_DEFAULTS.iter().find(|(k, _)| *k == key).map_or(0, |&(_, v)| v)
}

/// Upper bound on every size field (labels included): beyond it a config is certainly
/// corrupt.
pub(crate) const MAX_DIM: usize = 1 << 20;
/// Upper bound on `num_hidden_layers`.
const MAX_LAYERS: usize = 4096;
/// Upper bound on `num_channels`.
const MAX_CHANNELS: usize = 4096;

impl VitConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<VitConfig> {
        VitConfig::from_json(&JsonFile::read(&dir.join("config.json"))?)
    }

    /// Parses and validates a config object.
    pub fn from_json(json: &JsonFile) -> Result<VitConfig> {
        // An explicit `null` for a field with a default is no value (transformers refuses it,
        // or builds something else: `qkv_bias: null` makes layers without biases), not the
        // default a missing key gets.
        let sizes = SIZE_DEFAULTS.map(|(key, _)| key);
        for key in ["hidden_act", "qkv_bias", "num_channels"].into_iter().chain(sizes) {
            if json.object().get(key).is_some_and(serde_json::Value::is_null) {
                return Err(json.error(key, "is null; give a value, or leave the key out for the default"));
            }
        }
        if let Some(model_type) = json.opt_string("model_type")?
            && model_type != "vit"
        {
            return Err(json.error("model_type", format!("is `{model_type}`; only `vit` models are supported")));
        }
        let act = json.opt_string("hidden_act")?.unwrap_or_else(|| "gelu".into());
        // transformers' `gelu` and `gelu_python` are both the exact (erf) GELU.
        if act != "gelu" && act != "gelu_python" {
            return Err(json.error(
                "hidden_act",
                format!("is `{act}`; only the exact (erf) GELU, `gelu` or `gelu_python`, is supported"),
            ));
        }
        // Sizes a config leaves out take transformers' `ViTConfig` defaults (ViT-B/16 at 224).
        let size =
            |key: &str, max: usize| Ok::<_, crate::Error>(json.opt_usize_in(key, 1, max)?.unwrap_or(size_default(key)));
        let hidden_size = size("hidden_size", MAX_DIM)?;
        let num_attention_heads = size("num_attention_heads", MAX_DIM)?;
        if !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(json.error(
                "num_attention_heads",
                format!("({num_attention_heads}) must divide hidden_size ({hidden_size})"),
            ));
        }
        // transformers 5 reads an explicit `head_dim` and sizes q/k/v by it; here heads split
        // the width.
        if let Some(head_dim) = json.opt_usize_in("head_dim", 0, usize::MAX)?
            && head_dim != hidden_size / num_attention_heads
        {
            return Err(json.error(
                "head_dim",
                format!(
                    "is {head_dim}; only heads that split hidden_size are supported (hidden_size / \
                     num_attention_heads = {})",
                    hidden_size / num_attention_heads
                ),
            ));
        }
        let image_size = sides(json, "image_size")?;
        let patch_size = sides(json, "patch_size")?;
        // transformers' strided conv drops the pixels past the last whole patch; a patch
        // larger than the image leaves no token at all.
        if image_size.iter().zip(&patch_size).any(|(i, p)| p > i) {
            return Err(json.error(
                "patch_size",
                format!("({}) is larger than image_size ({})", show_sides(patch_size), show_sides(image_size)),
            ));
        }
        let eps = json.opt_f64("layer_norm_eps")?.unwrap_or(1e-12);
        if !(eps > 0.0 && (eps as f32) > 0.0 && (eps as f32).is_finite()) {
            return Err(
                json.error("layer_norm_eps", format!("must be a positive number within f32's range, got {eps:e}"))
            );
        }
        let id2label = id2label(json)?;
        let num_labels = match json.opt_usize_in("num_labels", 1, MAX_DIM)? {
            Some(n) if !id2label.is_empty() && n != id2label.len() => {
                return Err(json.error("num_labels", format!("is {n} but id2label has {} entries", id2label.len())));
            }
            Some(n) => n,
            None if !id2label.is_empty() => id2label.len(),
            None => 2,
        };
        Ok(VitConfig {
            hidden_size,
            num_hidden_layers: size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads,
            intermediate_size: size("intermediate_size", MAX_DIM)?,
            image_size,
            patch_size,
            num_channels: json.opt_usize_in("num_channels", 1, MAX_CHANNELS)?.unwrap_or(3),
            layer_norm_eps: eps,
            qkv_bias: json.opt_bool("qkv_bias")?.unwrap_or(true),
            num_labels,
            id2label,
            problem_type: json.opt_string("problem_type")?,
        })
    }

    /// Checks a config built in code (as [`VitConfig::from_json`] checks a file): every size
    /// at least 1, heads dividing the width, no patch side larger than the image's, a positive
    /// finite `layer_norm_eps`.
    pub fn check(&self) -> Result<()> {
        // The bounds `from_json` reads a file with.
        let sizes = [
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_DIM),
            ("intermediate_size", self.intermediate_size, MAX_DIM),
            ("num_channels", self.num_channels, MAX_CHANNELS),
            ("num_labels", self.num_labels, MAX_DIM),
        ];
        let invalid =
            |what: &str, message: String| Err(crate::error::Error::invalid(format!("ViT config {what}"), message));
        if let Some((name, value, max)) = sizes.iter().find(|(_, v, max)| !(1..=*max).contains(v)) {
            return invalid(name, format!("must be between 1 and {max}, got {value}"));
        }
        let sides = self.image_size.iter().chain(&self.patch_size);
        if let Some(side) = sides.into_iter().find(|s| !(1..=MAX_DIM).contains(*s)) {
            return invalid("image_size/patch_size", format!("sides must be between 1 and {MAX_DIM}, got {side}"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid("num_attention_heads", format!("({}) must divide hidden_size", self.num_attention_heads));
        }
        if self.image_size.iter().zip(&self.patch_size).any(|(i, p)| p > i) {
            let (p, i) = (show_sides(self.patch_size), show_sides(self.image_size));
            return invalid("patch_size", format!("({p}) is larger than image_size ({i})"));
        }
        let eps = self.layer_norm_eps;
        if !(eps > 0.0 && (eps as f32) > 0.0 && (eps as f32).is_finite()) {
            return invalid("layer_norm_eps", format!("{eps:e} is not a positive number within f32's range"));
        }
        Ok(())
    }

    /// The patch grid `(gh, gw)`: patches per column and per row.
    pub fn grid(&self) -> (usize, usize) {
        // (0, 0) for a zero patch side, which `check` refuses.
        let side = |i: usize| self.image_size[i].checked_div(self.patch_size[i]).unwrap_or(0);
        (side(0), side(1))
    }

    /// Tokens per image: CLS plus the patches.
    pub fn tokens(&self) -> usize {
        let (gh, gw) = self.grid();
        1 + gh * gw
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// This config as `config.json` text, in the form transformers writes.
    pub fn to_json(&self) -> String {
        let (id2label, label2id) = self.label_maps();
        let value = serde_json::json!({
            "architectures": ["ViTForImageClassification"],
            "model_type": "vit",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "image_size": sides_json(self.image_size),
            "patch_size": sides_json(self.patch_size),
            "num_channels": self.num_channels,
            "layer_norm_eps": self.layer_norm_eps,
            "qkv_bias": self.qkv_bias,
            "initializer_range": 0.02,
            "id2label": id2label,
            "label2id": label2id,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// `base` (the `config.json` this model was read from) with the labels of this config,
    /// f32 as its dtype and `ViTForImageClassification` as its architecture: every other
    /// field, including those this crate does not read, is kept as it was.
    pub fn to_json_over(&self, base: &serde_json::Map<String, serde_json::Value>) -> String {
        let (id2label, label2id) = self.label_maps();
        let mut value = base.clone();
        // What it is now, whatever the base's said (`ViTModel`, say): transformers'
        // `AutoModel` builds the class named here.
        value.insert("architectures".into(), serde_json::json!(["ViTForImageClassification"]));
        value.insert("id2label".into(), id2label.into());
        value.insert("label2id".into(), label2id.into());
        // The merged weights are written in f32, whatever the base's were.
        for key in ["torch_dtype", "dtype"] {
            if value.contains_key(key) {
                value.insert(key.into(), "float32".into());
            }
        }
        if value.contains_key("num_labels") {
            value.insert("num_labels".into(), self.num_labels.into());
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// `id2label` and `label2id` as transformers writes them (`LABEL_i` for unnamed labels).
    fn label_maps(&self) -> (serde_json::Map<String, serde_json::Value>, serde_json::Map<String, serde_json::Value>) {
        let labels: Vec<String> = (0..self.num_labels)
            .map(|i| self.id2label.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")))
            .collect();
        let id2label = labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone().into())).collect();
        let label2id = labels.iter().enumerate().map(|(i, l)| (l.clone(), i.into())).collect();
        (id2label, label2id)
    }
}

fn id2label(json: &JsonFile) -> Result<Vec<String>> {
    let Some(value) = json.get("id2label") else { return Ok(Vec::new()) };
    let map = value.as_object().ok_or_else(|| json.error("id2label", "must be an object"))?;
    if map.len() > MAX_DIM {
        let message = format!("has {} entries, more labels than the {MAX_DIM} a model may have", map.len());
        return Err(json.error("id2label", message));
    }
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let i: usize = k.parse().map_err(|_| json.error("id2label", format!("key `{k}` is not an index")))?;
        let slot = labels
            .get_mut(i)
            .ok_or_else(|| json.error("id2label", format!("index {i} out of range 0..{}", map.len())))?;
        *slot = Some(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
    }
    Ok(labels.into_iter().map(Option::unwrap_or_default).collect())
}

/// A size written as an integer (a square) or, as transformers also accepts, a
/// `[height, width]` pair; a square of its default ([`SIZE_DEFAULTS`]) when the config
/// leaves it out.
fn sides(json: &JsonFile, key: &str) -> Result<[usize; 2]> {
    let Some(value @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) = json.get(key) else {
        let side = json.opt_usize_in(key, 1, MAX_DIM)?.unwrap_or(size_default(key));
        return Ok([side, side]);
    };
    let in_range = |v: &serde_json::Value| v.as_u64().filter(|v| (1..=MAX_DIM as u64).contains(v));
    match value.as_array().map(Vec::as_slice) {
        Some([h, w]) => match (in_range(h), in_range(w)) {
            (Some(h), Some(w)) => Ok([h as usize, w as usize]),
            _ => Err(json.error(key, format!("is {value}; both sides must be integers from 1 to {MAX_DIM}"))),
        },
        _ => Err(json.error(key, format!("is {value}; expected an integer or a [height, width] pair"))),
    }
}

/// A size as the config writes it: an integer for a square, else `[height, width]`.
fn sides_json([h, w]: [usize; 2]) -> serde_json::Value {
    if h == w { h.into() } else { serde_json::json!([h, w]) }
}

/// A size for a message: `8` for a square, `8×12` otherwise.
pub(crate) fn show_sides([h, w]: [usize; 2]) -> String {
    if h == w { h.to_string() } else { format!("{h}×{w}") }
}
