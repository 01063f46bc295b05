//! `adapter_config.json` for the four adapter types (SPEC §9), read and written in the form
//! PEFT uses. Unknown keys are ignored on reading and kept on writing.

mod fields;
mod kinds;
mod lora;
mod saved;

use std::path::Path;

use serde_json::{Map, Value, json};

pub use kinds::{FloraConfig, FloraRank, MoppaConfig, RlpConfig};
pub use lora::{LoraBias, LoraConfig, LoraInit, layer_regex};

use crate::error::Result;
use crate::io::json::{JsonFile, whole_number};
use crate::io::stamp::ConfigStamp;
use crate::nn::{ModuleId, Naming, Targets};
pub(crate) use saved::EMBEDDINGS;

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
    /// The file as [`AdapterConfig::read`] read it, so that the weights are checked against
    /// the bytes parsed, not against the file as it is later.
    read_as: Option<ConfigStamp>,
}

const MAX_RANK: usize = 1 << 16;

impl AdapterConfig {
    /// Reads `path` (an `adapter_config.json`).
    pub fn read(path: &Path) -> Result<AdapterConfig> {
        let (bytes, stamp) = ConfigStamp::read(path)?;
        let config = AdapterConfig::from_json(&JsonFile::parse(path, &bytes)?)?;
        Ok(AdapterConfig { read_as: Some(stamp), ..config })
    }

    /// The file as [`AdapterConfig::read`] read it; `None` for a config parsed from memory.
    pub(crate) fn read_as(&self) -> Option<&ConfigStamp> {
        self.read_as.as_ref()
    }

    /// Reads `dir/adapter_config.json`.
    pub fn from_dir(dir: &Path) -> Result<AdapterConfig> {
        AdapterConfig::read(&dir.join("adapter_config.json"))
    }

    /// Parses and validates a config object.
    pub fn from_json(j: &JsonFile) -> Result<AdapterConfig> {
        let peft_type = j.string("peft_type")?;
        // Upper case only, as PEFT reads it (its `PeftType` values).
        let kind = match peft_type.as_str() {
            "LORA" => AdapterKind::Lora(lora::lora(j)?),
            "FLORA" => AdapterKind::Flora(kinds::flora(j)?),
            "MOPPA" => AdapterKind::Moppa(kinds::moppa(j)?),
            "RLP" => AdapterKind::Rlp(kinds::rlp(j)?),
            other => {
                let upper = other.to_ascii_uppercase();
                let hint = if ["LORA", "FLORA", "MOPPA", "RLP"].contains(&upper.as_str()) {
                    format!(" (write `{upper}`: PEFT reads the types in upper case)")
                } else {
                    String::new()
                };
                return Err(j.error("peft_type", format!("`{other}` is not one of LORA, FLORA, MOPPA, RLP{hint}")));
            }
        };
        let mut modules_to_save = j.opt_strings("modules_to_save")?.unwrap_or_default();
        if modules_to_save.iter().any(String::is_empty) {
            return Err(j.error("modules_to_save", "has an empty name, which every module's path ends with"));
        }
        // PEFT's sequence-classification models train and save the head (`classifier`, or
        // `score` in other architectures) with the adapter, whatever modules_to_save says.
        if task_type(j)? == Some("SEQ_CLS") {
            for head in ["classifier", "score"] {
                if !modules_to_save.iter().any(|m| m == head) {
                    modules_to_save.push(head.into());
                }
            }
        }
        Ok(AdapterConfig {
            kind,
            modules_to_save,
            num_labels: j.opt_usize_in("num_labels", 1, 1 << 20)?,
            raw: j.object().clone(),
            read_as: None,
        })
    }

    /// Checks the numbers of a config that may have been changed in code since it was read
    /// (reading checks them too): multipliers finite in f32, dropout in [0, 1], LoRA's
    /// `rank_pattern`/`alpha_pattern` keys valid regexes, MoPPA's entropy settings finite with
    /// a positive decay fraction. Errors name the key.
    pub fn check_values(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, value: f64, want: &str| {
            Err(crate::error::Error::Config {
                path: path.to_path_buf(),
                key: key.into(),
                message: format!("is {value}; {want}"),
            })
        };
        let f32_finite = |v: f64| (v as f32).is_finite();
        match &self.kind {
            AdapterKind::Lora(c) => {
                for (key, v) in std::iter::once(("lora_alpha", c.lora_alpha))
                    .chain(c.alpha_pattern.iter().map(|(_, a)| ("alpha_pattern", *a)))
                {
                    if !f32_finite(v) {
                        return bad(key, v, "expected a finite number within f32's range");
                    }
                }
                if !(0.0..=1.0).contains(&c.lora_dropout) {
                    return bad("lora_dropout", c.lora_dropout, "expected a value in [0, 1]");
                }
                lora::check_pattern_keys(c, path)?;
            }
            AdapterKind::Flora(FloraConfig { scale, .. }) | AdapterKind::Rlp(RlpConfig { scale, .. })
                if !f32_finite(*scale) =>
            {
                return bad("scale", *scale, "expected a finite number within f32's range");
            }
            AdapterKind::Moppa(m) if !f32_finite(m.entropy_scale) => {
                return bad("entropy_scale", m.entropy_scale, "expected a finite number within f32's range");
            }
            AdapterKind::Moppa(m) if !(m.entropy_decay_fraction > 0.0 && m.entropy_decay_fraction.is_finite()) => {
                return bad("entropy_decay_fraction", m.entropy_decay_fraction, "expected a positive number");
            }
            _ => {}
        }
        Ok(())
    }

    /// Fails, naming the key, when one of the config's regular expressions (`target_modules`
    /// or `exclude_modules` as a string, a key of `rank_pattern` or `alpha_pattern`, PEFT's
    /// expression around a `layers_pattern`) takes more
    /// than [`crate::nn::pattern::BACKTRACK_LIMIT`] steps to match a module path of a model
    /// with `layers` layers: checked once, before the many matches of building an adapter.
    pub fn check_pattern_costs(&self, layers: usize, path: &Path) -> Result<()> {
        let targets = |key: &'static str, t: Option<&Targets>| match t {
            Some(Targets::Regex(re)) => Some((key, re.clone())),
            _ => None,
        };
        let patterns: Vec<(&str, crate::nn::Pattern)> = match &self.kind {
            AdapterKind::Lora(c) => targets("target_modules", Some(&c.target_modules))
                .into_iter()
                .chain(targets("exclude_modules", c.exclude_modules.as_ref()))
                .chain(c.pattern_keys())
                .collect(),
            AdapterKind::Flora(c) => targets("target_modules", Some(&c.target_modules)).into_iter().collect(),
            AdapterKind::Moppa(_) | AdapterKind::Rlp(_) => return Ok(()),
        };
        let paths = ModuleId::pattern_paths(layers);
        for (key, re) in &patterns {
            for module in &paths {
                re.check_cost(module).map_err(|why| crate::error::Error::Config {
                    path: path.to_path_buf(),
                    key: (*key).into(),
                    message: format!("regex {:?} {why}", re.source()),
                })?;
            }
        }
        Ok(())
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

    /// Records `name` as `base_model_name_or_path`, as PEFT does with the name the base model
    /// was loaded by, whatever the config said; returns the other name it said, if any (PEFT
    /// warns about it).
    pub fn set_base_model(&mut self, name: &str) -> Option<String> {
        let before = self.raw.insert("base_model_name_or_path".into(), Value::String(name.into()));
        before.and_then(|v| v.as_str().map(str::to_string)).filter(|b| b != name)
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
        // Kept in a LoRA config too, though PEFT's LoraConfig warns that it ignores it: the
        // config given again to `train` must make the same head.
        if let Some(n) = self.num_labels {
            o.insert("num_labels".into(), n.into());
        }
        fields::write_fields(&self.kind, &mut o);
        if let AdapterKind::Lora(_) = &self.kind {
            let defaults = [
                ("bias", json!("none")),
                ("fan_in_fan_out", json!(false)),
                ("inference_mode", json!(true)),
                ("task_type", Value::Null),
                ("base_model_name_or_path", Value::Null),
            ];
            for (k, v) in defaults {
                o.entry(k).or_insert(v);
            }
            // As PEFT saves it once it has reset it (see `lora::lora`).
            o.insert("fan_in_fan_out".into(), json!(false));
            // As PEFT saves an adapter without a task: the model class, by which
            // `AutoPeftModel.from_pretrained` loads the base model.
            if o.get("task_type").is_none_or(Value::is_null) {
                let class = json!({
                    "base_model_class": "ViTForImageClassification",
                    "parent_library": "transformers.models.vit.modeling_vit",
                });
                o.insert("auto_mapping".into(), class);
            }
        }
        serde_json::to_string_pretty(&Value::Object(o)).unwrap_or_default()
    }

    /// This config without the LoRA fields PEFT 0.18 added where they hold nothing (null,
    /// false, empty) and without `peft_version`: PEFT 0.17, which reads the on-disk naming
    /// under transformers 4, warns of every field it does not know. Set fields stay, for
    /// PEFT 0.17 to refuse or pass over as it does.
    pub(crate) fn without_unset_newer_fields(&self) -> AdapterConfig {
        /// `LoraConfig` fields of PEFT 0.21 that PEFT 0.17 lacks.
        const NEWER: [&str; 9] = [
            "alora_invocation_tokens",
            "arrow_config",
            "ensure_weight_tying",
            "kasa_config",
            "lora_ga_config",
            "monteclora_config",
            "peft_version",
            "use_bdlora",
            "velora_config",
        ];
        let mut c = self.clone();
        let unset = |v: &Value| match v {
            Value::Null | Value::Bool(false) => true,
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        c.raw.retain(|k, v| !NEWER.contains(&k.as_str()) || (k != "peft_version" && !unset(v)));
        c
    }

    /// This LoRA config with its choice of modules spelled out as the paths under `naming`
    /// of `adapted` (`(module, rank, alpha)`) and of `saved` (with `vit.embeddings` when its
    /// own tensors are saved too): `target_modules` lists them,
    /// `rank_pattern` and `alpha_pattern` name those off the defaults, and
    /// `exclude_modules`, `layers_to_transform` and `layers_pattern` (now encoded in the list)
    /// are cleared. It adapts the same modules with the same ranks under either naming here,
    /// and PEFT under the transformers of `naming` reads it as this crate does. Other types
    /// are returned as they are.
    pub(crate) fn spelled_out(
        &self,
        adapted: &[(ModuleId, usize, f64)],
        saved: &[ModuleId],
        saves_embeddings: bool,
        naming: Naming,
    ) -> AdapterConfig {
        let mut c = self.clone();
        let AdapterKind::Lora(l) = &mut c.kind else { return c };
        let path = |m: ModuleId| m.path(naming);
        let targets: Vec<String> = adapted.iter().map(|&(m, ..)| path(m)).collect();
        let ranks: Vec<(String, usize)> =
            adapted.iter().filter(|&&(_, r, _)| r != l.r).map(|&(m, r, _)| (path(m), r)).collect();
        let alphas: Vec<(String, f64)> =
            adapted.iter().filter(|&&(_, _, a)| a != l.lora_alpha).map(|&(m, _, a)| (path(m), a)).collect();
        c.raw.insert("target_modules".into(), json!(targets));
        c.raw.insert("rank_pattern".into(), Value::Object(ranks.iter().map(|(k, r)| (k.clone(), json!(r))).collect()));
        c.raw
            .insert("alpha_pattern".into(), Value::Object(alphas.iter().map(|(k, a)| (k.clone(), json!(a))).collect()));
        for key in ["exclude_modules", "layers_to_transform", "layers_pattern"] {
            c.raw.insert(key.into(), Value::Null);
        }
        l.target_modules = Targets::Names(targets);
        l.rank_pattern = ranks;
        l.alpha_pattern = alphas;
        l.exclude_modules = None;
        l.layers_to_transform = None;
        l.layers_pattern = Vec::new();
        if !saved.is_empty() || saves_embeddings {
            // `vit.embeddings` holds the patch embedding, which it saves with it.
            let listed = saved.iter().filter(|&&m| !(saves_embeddings && m == ModuleId::PatchEmbed));
            let embeddings = saves_embeddings.then(|| EMBEDDINGS.to_string());
            c.modules_to_save = embeddings.into_iter().chain(listed.map(|&m| path(m))).collect();
        }
        c
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

/// The tasks PEFT can load an adapter of an image classifier for: its base model
/// (`FEATURE_EXTRACTION`, or none) and its sequence-classification model. PEFT refuses any
/// other name, and its language-model tasks fail on a ViT, so those are refused here too.
const VIT_TASK_TYPES: [&str; 2] = ["SEQ_CLS", "FEATURE_EXTRACTION"];

fn task_type(j: &JsonFile) -> Result<Option<&str>> {
    match j.get("task_type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if VIT_TASK_TYPES.contains(&t.as_str()) => Ok(Some(t)),
        Some(other) => Err(j.error(
            "task_type",
            format!("is {other}; a ViT image classifier's adapter has null, \"SEQ_CLS\" or \"FEATURE_EXTRACTION\""),
        )),
    }
}

fn targets(j: &JsonFile, key: &str) -> Result<Targets> {
    Targets::from_config(j.require(key)?).map_err(|m| j.error(key, m))
}

/// Optional targets (`exclude_modules`): absent, null or an empty string (which PEFT, testing
/// the value's truth, takes for none) is none.
fn opt_targets(j: &JsonFile, key: &str) -> Result<Option<Targets>> {
    match j.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => Targets::from_config(v).map(Some).map_err(|m| j.error(key, m)),
    }
}

fn usize_list(j: &JsonFile, key: &str) -> Result<Option<Vec<usize>>> {
    let Some(v) = j.get(key) else { return Ok(None) };
    let bad = || j.error(key, "must be a non-negative integer or a list of them");
    match v {
        Value::Number(_) => Ok(Some(vec![whole_number(v).ok_or_else(bad)? as usize])),
        Value::Array(items) => items
            .iter()
            .map(|i| whole_number(i).map(|x| x as usize).ok_or_else(bad))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        _ => Err(bad()),
    }
}

/// Writes `config` as `dir/adapter_config.json` atomically.
pub fn write(dir: &Path, config: &AdapterConfig) -> Result<()> {
    crate::io::atomic::write(&dir.join("adapter_config.json"), config.to_json().as_bytes())
}
