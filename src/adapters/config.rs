//! `adapter_config.json` for the four adapter types (SPEC §9), read and written in the form
//! PEFT uses. Unknown keys are ignored on reading and kept on writing.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::Result;
use crate::io::json::JsonFile;
use crate::nn::{ModuleId, Naming, Targets};

/// Which adapter a config describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeftType {
    /// Low-rank adaptation, exactly as Hugging Face PEFT.
    Lora,
    /// Low-rank core tensor with one factor per mode.
    Flora,
    /// Mixture of physical priors (spectral filters) before attention.
    Moppa,
    /// Re-parameterised low-rank prompt tokens.
    Rlp,
}

impl PeftType {
    /// The `peft_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            PeftType::Lora => "LORA",
            PeftType::Flora => "FLORA",
            PeftType::Moppa => "MOPPA",
            PeftType::Rlp => "RLP",
        }
    }
}

/// LoRA settings (PEFT's `LoraConfig`, the parts that change the maths).
#[derive(Clone, Debug)]
pub struct LoraConfig {
    /// Default rank.
    pub r: usize,
    /// Default alpha.
    pub lora_alpha: f64,
    /// Modules to adapt.
    pub target_modules: Targets,
    /// Modules never adapted.
    pub exclude_modules: Option<Targets>,
    /// Only these layer indices, when given.
    pub layers_to_transform: Option<Vec<usize>>,
    /// Per-module rank overrides: pattern → rank.
    pub rank_pattern: Vec<(String, usize)>,
    /// Per-module alpha overrides: pattern → alpha.
    pub alpha_pattern: Vec<(String, f64)>,
    /// Dropout on the LoRA input during training (PEFT semantics).
    pub lora_dropout: f64,
    /// Scale by `alpha/√r` instead of `alpha/r`.
    pub use_rslora: bool,
    /// How a fresh adapter's `A` and `B` start (`init_lora_weights`).
    pub init: LoraInit,
}

/// PEFT's `init_lora_weights` choices that touch only `A` and `B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraInit {
    /// `true`: `A` Kaiming-uniform (a = √5), `B = 0`.
    Default,
    /// `"gaussian"`: `A ~ N(0, 1/r²)`, `B = 0`.
    Gaussian,
    /// `false`: both as a fresh `nn.Linear` (uniform on `±1/√fan_in`), so not an identity.
    Random,
    /// `"eva"` or `"orthogonal"`: inits that touch only `A` and `B` but need data or a
    /// procedure this crate does not run; a trained adapter loads, a fresh one is refused.
    LoadOnly(&'static str),
}

/// Rank of a FLoRA core: one for every mode, or one per mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloraRank {
    /// `r_i = min(r, d_i)`.
    Uniform(usize),
    /// One rank per mode, in the weight's PyTorch mode order.
    PerMode(Vec<usize>),
}

/// FLoRA settings.
#[derive(Clone, Debug)]
pub struct FloraConfig {
    /// Core ranks.
    pub r: FloraRank,
    /// Multiplier of ΔW.
    pub scale: f64,
    /// Modules to adapt (linear and conv).
    pub target_modules: Targets,
}

/// MoPPA settings.
#[derive(Clone, Debug)]
pub struct MoppaConfig {
    /// Router heads; `None` means the model's attention heads.
    pub num_heads: Option<usize>,
    /// Layers with a pre-filter; `None` means all.
    pub layers: Option<Vec<usize>>,
    /// Weight of the route-entropy term at step 0.
    pub entropy_scale: f64,
    /// Fraction of training over which the entropy weight decays to zero.
    pub entropy_decay_fraction: f64,
}

/// RLP settings.
#[derive(Clone, Debug)]
pub struct RlpConfig {
    /// Prompt tokens inserted after CLS.
    pub num_prompt_tokens: usize,
    /// Rank of `A·B`.
    pub r: usize,
    /// Multiplier of `A·B`.
    pub scale: f64,
}

/// The type-specific part of a config.
#[derive(Clone, Debug)]
pub enum AdapterKind {
    /// LoRA.
    Lora(LoraConfig),
    /// FLoRA.
    Flora(FloraConfig),
    /// MoPPA.
    Moppa(MoppaConfig),
    /// RLP.
    Rlp(RlpConfig),
}

/// A whole `adapter_config.json`.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    /// Type-specific settings.
    pub kind: AdapterKind,
    /// Modules trained in full and saved with the adapter (`modules_to_save`).
    pub modules_to_save: Vec<String>,
    /// Labels of a new classifier head, when the task differs from the base model's.
    pub num_labels: Option<usize>,
    /// The object as read, so unknown keys survive a save.
    raw: Map<String, Value>,
}

const MAX_RANK: usize = 1 << 16;

impl AdapterConfig {
    /// Reads `path` (an `adapter_config.json`).
    pub fn read(path: &Path) -> Result<AdapterConfig> {
        AdapterConfig::from_json(&JsonFile::read(path)?)
    }

    /// Reads `dir/adapter_config.json`.
    pub fn from_dir(dir: &Path) -> Result<AdapterConfig> {
        AdapterConfig::read(&dir.join("adapter_config.json"))
    }

    /// Parses and validates a config object.
    pub fn from_json(j: &JsonFile) -> Result<AdapterConfig> {
        let peft_type = j.string("peft_type")?;
        let kind = match peft_type.to_ascii_uppercase().as_str() {
            "LORA" => AdapterKind::Lora(lora(j)?),
            "FLORA" => AdapterKind::Flora(flora(j)?),
            "MOPPA" => AdapterKind::Moppa(moppa(j)?),
            "RLP" => AdapterKind::Rlp(rlp(j)?),
            other => return Err(j.error("peft_type", format!("`{other}` is not one of LORA, FLORA, MOPPA, RLP"))),
        };
        Ok(AdapterConfig {
            kind,
            modules_to_save: j.opt_strings("modules_to_save")?.unwrap_or_default(),
            num_labels: j.opt_usize_in("num_labels", 1, 1 << 20)?,
            raw: j.object().clone(),
        })
    }

    /// The adapter type.
    pub fn peft_type(&self) -> PeftType {
        match self.kind {
            AdapterKind::Lora(_) => PeftType::Lora,
            AdapterKind::Flora(_) => PeftType::Flora,
            AdapterKind::Moppa(_) => PeftType::Moppa,
            AdapterKind::Rlp(_) => PeftType::Rlp,
        }
    }

    /// Records `name` as `base_model_name_or_path` (as PEFT does with the name the base model
    /// was loaded by) unless the config already names one.
    pub fn set_base_model_if_unnamed(&mut self, name: &str) {
        if self.raw.get("base_model_name_or_path").is_none_or(Value::is_null) {
            self.raw.insert("base_model_name_or_path".into(), Value::String(name.into()));
        }
    }

    /// Whether `module` is one of `modules_to_save` (PEFT: the path ends with a listed name).
    pub fn saves_module(&self, module: ModuleId) -> bool {
        Naming::BOTH.into_iter().any(|n| self.saves_module_under(module, n))
    }

    /// Whether one of `modules_to_save` names `module` by its path under `naming`.
    pub fn saves_module_under(&self, module: ModuleId, naming: Naming) -> bool {
        let path = module.path(naming);
        self.modules_to_save.iter().any(|m| path.ends_with(m.as_str()))
    }

    /// The config as PEFT writes it: the object read (unknown keys kept) with this crate's
    /// fields set, and for LoRA the fields PEFT needs to load it.
    pub fn to_json(&self) -> String {
        let mut o = self.raw.clone();
        o.insert("peft_type".into(), self.peft_type().as_str().into());
        o.insert(
            "modules_to_save".into(),
            if self.modules_to_save.is_empty() { Value::Null } else { json!(self.modules_to_save) },
        );
        if let Some(n) = self.num_labels {
            o.insert("num_labels".into(), n.into());
        }
        if let AdapterKind::Lora(c) = &self.kind {
            let defaults = [
                ("r", json!(c.r)),
                ("lora_alpha", json!(c.lora_alpha)),
                ("lora_dropout", json!(c.lora_dropout)),
                ("use_rslora", json!(c.use_rslora)),
                ("bias", json!("none")),
                ("fan_in_fan_out", json!(false)),
                ("init_lora_weights", json!(true)),
                ("inference_mode", json!(true)),
                ("task_type", Value::Null),
                ("base_model_name_or_path", Value::Null),
                ("rank_pattern", json!({})),
                ("alpha_pattern", json!({})),
            ];
            for (k, v) in defaults {
                o.entry(k).or_insert(v);
            }
        }
        serde_json::to_string_pretty(&Value::Object(o)).unwrap_or_default()
    }

    /// The naming to write module keys under: the one `target_modules` is written in when it
    /// names layer modules of only one naming, else the on-disk naming.
    pub fn preferred_naming(targets: &Targets, layers: usize) -> Naming {
        let modules = ModuleId::all(layers);
        let hits =
            |n: Naming| modules.iter().any(|m| matches!(m, ModuleId::Layer(..)) && targets.matches_path(&m.path(n)));
        if hits(Naming::Transformers5) && !hits(Naming::OnDisk) { Naming::Transformers5 } else { Naming::OnDisk }
    }
}

fn targets(j: &JsonFile, key: &str) -> Result<Targets> {
    Targets::from_config(j.require(key)?).map_err(|m| j.error(key, m))
}

fn opt_targets(j: &JsonFile, key: &str) -> Result<Option<Targets>> {
    j.get(key).map(|v| Targets::from_config(v).map_err(|m| j.error(key, m))).transpose()
}

fn usize_list(j: &JsonFile, key: &str) -> Result<Option<Vec<usize>>> {
    let Some(v) = j.get(key) else { return Ok(None) };
    let bad = || j.error(key, "must be a non-negative integer or a list of them");
    match v {
        Value::Number(n) => Ok(Some(vec![n.as_u64().ok_or_else(bad)? as usize])),
        Value::Array(items) => {
            items.iter().map(|i| i.as_u64().map(|x| x as usize).ok_or_else(bad)).collect::<Result<Vec<_>>>().map(Some)
        }
        _ => Err(bad()),
    }
}

/// PEFT matches `rank_pattern`/`alpha_pattern` keys as regular expressions; a key that is not
/// one is an error naming it rather than a pattern that silently never matches.
fn check_pattern(j: &JsonFile, field: &str, pattern: &str) -> Result<()> {
    regex::Regex::new(&format!(r"^(.*\.)?({pattern})$"))
        .map(|_| ())
        .map_err(|e| j.error(field, format!("key `{pattern}` is not a valid regular expression: {e}")))
}

fn lora(j: &JsonFile) -> Result<LoraConfig> {
    if let Some(bias) = j.opt_string("bias")?
        && bias != "none"
    {
        return Err(j.error("bias", format!("is `{bias}`; only \"none\" is supported")));
    }
    for (key, what) in
        [("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out (Conv1D layers)"), ("lora_bias", "lora_bias")]
    {
        if j.opt_bool(key)?.unwrap_or(false) {
            return Err(j.error(key, format!("is true; {what} is not supported")));
        }
    }
    // PEFT options that change what the adapter computes or how PEFT loads it are refused
    // rather than ignored; absent, null, false, [] and {} all mean "not used".
    for (key, what) in [
        ("layer_replication", "layer replication"),
        ("use_qalora", "QALoRA"),
        ("target_parameters", "LoRA on parameters (`target_parameters`)"),
        ("trainable_token_indices", "trainable tokens"),
        ("alora_invocation_tokens", "aLoRA"),
        ("megatron_config", "Megatron layers"),
        ("velora_config", "VeLoRA"),
        ("monteclora_config", "MonteCLoRA"),
        ("use_bdlora", "BD-LoRA"),
        ("arrow_config", "Arrow routing"),
        ("kasa_config", "KaSA"),
    ] {
        if j.get(key).is_some_and(is_set) {
            return Err(j.error(key, format!("is set; {what} is not supported")));
        }
    }
    if let Some(v) = j.get("layers_pattern").filter(|v| is_set(v)) {
        let names: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        if names.is_empty() || names.iter().any(|n| !matches!(*n, "layer" | "layers")) {
            return Err(j.error("layers_pattern", format!("is {v}; a ViT's layers are `layer` (on disk) or `layers`")));
        }
    }
    let init = match j.get("init_lora_weights") {
        None | Some(Value::Null | Value::Bool(true)) => LoraInit::Default,
        Some(Value::Bool(false)) => LoraInit::Random,
        Some(Value::String(s)) if s == "gaussian" => LoraInit::Gaussian,
        Some(Value::String(s)) if s == "eva" => LoraInit::LoadOnly("eva"),
        Some(Value::String(s)) if s == "orthogonal" => LoraInit::LoadOnly("orthogonal"),
        Some(v) => {
            return Err(j.error(
                "init_lora_weights",
                format!("is {v}; only true, false and \"gaussian\" are supported (and \"eva\" or \"orthogonal\" for a trained adapter; PiSSA, OLoRA, LoftQ and CorDA change the base weights)"),
            ));
        }
    };
    let dropout = j.opt_f64("lora_dropout")?.unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(j.error("lora_dropout", format!("must be in [0, 1), got {dropout}")));
    }
    let mut rank_pattern = Vec::new();
    if let Some(v) = j.get("rank_pattern") {
        let map = v.as_object().ok_or_else(|| j.error("rank_pattern", "must be an object"))?;
        for (k, r) in map {
            check_pattern(j, "rank_pattern", k)?;
            let r = r
                .as_u64()
                .filter(|&r| (1..=MAX_RANK as u64).contains(&r))
                .ok_or_else(|| j.error("rank_pattern", format!("`{k}` needs a rank between 1 and {MAX_RANK}")))?;
            rank_pattern.push((k.clone(), r as usize));
        }
    }
    let mut alpha_pattern = Vec::new();
    if let Some(v) = j.get("alpha_pattern") {
        let map = v.as_object().ok_or_else(|| j.error("alpha_pattern", "must be an object"))?;
        for (k, a) in map {
            check_pattern(j, "alpha_pattern", k)?;
            let a = a
                .as_f64()
                .filter(|a| a.is_finite())
                .ok_or_else(|| j.error("alpha_pattern", format!("`{k}` needs a number")))?;
            alpha_pattern.push((k.clone(), a));
        }
    }
    let target_modules = targets(j, "target_modules")?;
    let layers_to_transform = usize_list(j, "layers_to_transform")?;
    if matches!(target_modules, Targets::Regex(_)) && layers_to_transform.is_some() {
        return Err(
            j.error("layers_to_transform", "cannot be used when target_modules is a string (a regex), as in PEFT")
        );
    }
    Ok(LoraConfig {
        r: j.usize_in("r", 1, MAX_RANK)?,
        lora_alpha: j.opt_f64("lora_alpha")?.unwrap_or(8.0),
        target_modules,
        exclude_modules: opt_targets(j, "exclude_modules")?,
        layers_to_transform,
        rank_pattern,
        alpha_pattern,
        lora_dropout: dropout,
        use_rslora: j.opt_bool("use_rslora")?.unwrap_or(false),
        init,
    })
}

/// Whether a PEFT option holds a value that turns it on.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn flora(j: &JsonFile) -> Result<FloraConfig> {
    let r = match j.require("r")? {
        Value::Array(_) => {
            let ranks = usize_list(j, "r")?.unwrap_or_default();
            if ranks.is_empty() || ranks.iter().any(|&r| r == 0 || r > MAX_RANK) {
                return Err(j.error("r", "must list ranks between 1 and 65536"));
            }
            FloraRank::PerMode(ranks)
        }
        _ => FloraRank::Uniform(j.usize_in("r", 1, MAX_RANK)?),
    };
    Ok(FloraConfig { r, scale: j.opt_f64("scale")?.unwrap_or(1.0), target_modules: targets(j, "target_modules")? })
}

fn moppa(j: &JsonFile) -> Result<MoppaConfig> {
    let decay = j.opt_f64("entropy_decay_fraction")?.unwrap_or(0.5);
    if decay <= 0.0 {
        return Err(j.error("entropy_decay_fraction", format!("must be positive, got {decay}")));
    }
    let layers = usize_list(j, "layers")?;
    if let Some(layers) = &layers {
        if layers.is_empty() {
            return Err(j.error("layers", "is empty, so no layer would be adapted (leave it out for all layers)"));
        }
        if let Some(l) = layers.iter().enumerate().find_map(|(i, l)| layers[..i].contains(l).then_some(l)) {
            return Err(j.error("layers", format!("lists layer {l} more than once")));
        }
    }
    Ok(MoppaConfig {
        num_heads: j.opt_usize_in("num_heads", 1, 1 << 16)?,
        layers,
        entropy_scale: j.opt_f64("entropy_scale")?.unwrap_or(0.0),
        entropy_decay_fraction: decay,
    })
}

fn rlp(j: &JsonFile) -> Result<RlpConfig> {
    Ok(RlpConfig {
        num_prompt_tokens: j.usize_in("num_prompt_tokens", 1, 1 << 16)?,
        r: j.usize_in("r", 1, MAX_RANK)?,
        scale: j.opt_f64("scale")?.unwrap_or(1.0),
    })
}

impl LoraConfig {
    /// Rank and alpha for the module at `path`, after `rank_pattern`/`alpha_pattern` (PEFT:
    /// the first pattern `p` with `path` matching `(.*\.)?(p)$`).
    pub fn rank_alpha(&self, path: &str) -> (usize, f64) {
        fn find<T: Copy>(patterns: &[(String, T)], path: &str) -> Option<T> {
            patterns
                .iter()
                .find(|(k, _)| regex::Regex::new(&format!(r"^(.*\.)?({k})$")).is_ok_and(|re| re.is_match(path)))
                .map(|&(_, v)| v)
        }
        (find(&self.rank_pattern, path).unwrap_or(self.r), find(&self.alpha_pattern, path).unwrap_or(self.lora_alpha))
    }

    /// `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scaling(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
    }
}

/// Writes `config` as `dir/adapter_config.json` atomically.
pub fn write(dir: &Path, config: &AdapterConfig) -> Result<()> {
    crate::io::atomic::write(&dir.join("adapter_config.json"), config.to_json().as_bytes())
}
