//! LoRA's part of `adapter_config.json`: PEFT's `LoraConfig` fields that change the maths,
//! and the PEFT options this crate refuses rather than ignores.

use std::path::Path;

use serde_json::Value;

use super::{MAX_RANK, opt_targets, targets, usize_list};
use crate::error::Result;
use crate::io::json::JsonFile;
use crate::nn::{Pattern, PatternUse, Targets};

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
    /// PEFT's `layers_pattern`: Python regexes for the name before a layer's index, which
    /// `layers_to_transform` reads (see [`layer_regex`]); empty: any name.
    pub layers_pattern: Vec<String>,
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
    /// Which of the model's biases are trained and saved with the adapter (PEFT's `bias`).
    pub bias: LoraBias,
}

/// PEFT's `bias`: which biases of the base model train with the adapter. PEFT stores them in
/// the adapter file (a LoRA-adapted module's as `<m>.base_layer.bias`, any other's as
/// `<m>.bias`) and loads them over the base model's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoraBias {
    /// `"none"`: no bias trains.
    #[default]
    None,
    /// `"all"`: every bias of the model (linear layers, LayerNorms, the patch embedding).
    All,
    /// `"lora_only"`: the biases of the modules LoRA adapts.
    LoraOnly,
}

impl LoraBias {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LoraBias::None => "none",
            LoraBias::All => "all",
            LoraBias::LoraOnly => "lora_only",
        }
    }
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
    /// `"orthogonal"`: `A` and `B` from the interleaved rows of one random orthogonal
    /// `r × r` matrix, each times a normal matrix of std 1/10, so `B·A = 0` though neither is
    /// zero; linear layers and an even `r` only, as in PEFT, and `r` at most 1024 (PEFT has
    /// no bound; the basis costs `r³`).
    Orthogonal,
    /// `"eva"`: an init that touches only `A` and `B` but that this crate does not make (it
    /// needs the training data); a trained adapter loads, a fresh one is refused.
    LoadOnly(&'static str),
}

/// PEFT matches `rank_pattern`/`alpha_pattern` keys as regular expressions; a key that is not
/// one is an error naming it rather than a pattern that silently never matches.
fn check_pattern(j: &JsonFile, field: &str, pattern: &str) -> Result<()> {
    pattern_regex(pattern)
        .map(|_| ())
        .map_err(|e| j.error(field, format!("key `{pattern}` is not a valid regular expression: {e}")))
}

/// Fails naming the first key of `rank_pattern` or `alpha_pattern` that is not a regex (a
/// config changed in code; reading refuses one with [`check_pattern`]).
pub(super) fn check_pattern_keys(c: &LoraConfig, path: &Path) -> Result<()> {
    let error =
        |key: &str, message: String| crate::error::Error::Config { path: path.to_path_buf(), key: key.into(), message };
    let ranks = c.rank_pattern.iter().map(|(k, _)| ("rank_pattern", k));
    for (field, key) in ranks.chain(c.alpha_pattern.iter().map(|(k, _)| ("alpha_pattern", k))) {
        if let Err(e) = pattern_regex(key) {
            return Err(error(field, format!("key `{key}` is not a valid regular expression: {e}")));
        }
    }
    for name in &c.layers_pattern {
        layer_regex(name).map_err(|e| error("layers_pattern", e))?;
    }
    Ok(())
}

/// The names a `layers_pattern` value gives, in order: null, `""` and `[]` none (any name,
/// as PEFT reads them), a string itself; `None` for a value that is neither.
pub(super) fn layer_names(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::String(s) if s.is_empty() => Some(Vec::new()),
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// PEFT's expression for a layer's index after a `layers_pattern` name (Python's syntax,
/// matched from a module path's start): a module is in layer `i` when it matches with `i` as
/// its group `idx`.
pub fn layer_regex(name: &str) -> std::result::Result<Pattern, String> {
    Pattern::new(&format!(r"(?:^|.*?\.){name}\.(?P<idx>\d+)\."), PatternUse::Start).map_err(|e| {
        format!("`{name}` makes PEFT's layer expression `(?:^|.*?\\.){name}\\.(?P<idx>\\d+)\\.` invalid: {e}")
    })
}

/// PEFT's reading of a pattern key (Python's syntax): the key matches a module path's whole
/// tail after a dot.
fn pattern_regex(key: &str) -> std::result::Result<Pattern, String> {
    Pattern::new(key, PatternUse::Tail)
}

pub(super) fn lora(j: &JsonFile) -> Result<LoraConfig> {
    if j.is_null("bias") {
        // PEFT fails on it (it compares the value's ending); absent means "none".
        return Err(j.error("bias", "is null; expected \"none\", \"all\" or \"lora_only\""));
    }
    let bias = match j.opt_string("bias")?.as_deref() {
        None | Some("none") => LoraBias::None,
        Some("all") => LoraBias::All,
        Some("lora_only") => LoraBias::LoraOnly,
        Some(other) => {
            return Err(j.error("bias", format!("is `{other}`; expected \"none\", \"all\" or \"lora_only\"")));
        }
    };
    for (key, what) in [("use_dora", "DoRA"), ("lora_bias", "lora_bias")] {
        if j.opt_bool(key)?.unwrap_or(false) {
            return Err(j.error(key, format!("is true; {what} is not supported")));
        }
    }
    // `fan_in_fan_out` describes GPT-2's Conv1D weights; on `nn.Linear` PEFT warns, sets it to
    // false and computes as without it, and a ViT has no Conv1D: read as a flag, written false.
    j.opt_bool("fan_in_fan_out")?;
    // QALoRA pools the input of GPTQ-quantised layers only; PEFT's `nn.Linear` and `nn.Conv2d`
    // LoRA layers ignore `use_qalora` (and its group size), and a ViT here has no other.
    j.opt_bool("use_qalora")?;
    // PEFT options that change what the adapter computes or how PEFT loads it are refused
    // rather than ignored; absent, null, false, [] and {} all mean "not used".
    for (key, what) in [
        ("layer_replication", "layer replication"),
        ("target_parameters", "LoRA on parameters (`target_parameters`)"),
        ("trainable_token_indices", "trainable tokens"),
        ("alora_invocation_tokens", "aLoRA"),
        ("megatron_config", "Megatron layers"),
    ] {
        if j.get(key).is_some_and(is_set) {
            return Err(j.error(key, format!("is set; {what} is not supported")));
        }
    }
    // A variant's sub-config turns the variant on whenever it is there: PEFT reads `{}` as
    // the variant's config with its defaults. Only null (or absence) means "not used".
    for (key, what) in [
        ("velora_config", "VeLoRA"),
        ("monteclora_config", "MonteCLoRA"),
        ("use_bdlora", "BD-LoRA"),
        ("arrow_config", "Arrow routing"),
        ("kasa_config", "KaSA"),
    ] {
        // `use_bdlora` reads as a flag: false is off too.
        let off = |v: &Value| v.is_null() || (key == "use_bdlora" && *v == Value::Bool(false));
        if j.get(key).is_some_and(|v| !off(v)) {
            return Err(j.error(key, format!("is set; {what} is not supported (only null leaves it off, as in PEFT)")));
        }
    }
    // PEFT takes a layer's index after any of the names.
    let layers_pattern: Vec<String> = match j.get("layers_pattern").map(layer_names) {
        None => Vec::new(),
        Some(Some(names)) => names.into_iter().map(str::to_string).collect(),
        Some(None) => return Err(j.error("layers_pattern", "must be a string or a list of strings")),
    };
    if let Some(e) = layers_pattern.iter().find_map(|name| layer_regex(name).err()) {
        return Err(j.error("layers_pattern", e));
    }
    // PEFT resets A and B only for a value Python calls true: null leaves nn.Linear's own
    // initialisation, as false does.
    let init = match j.get("init_lora_weights") {
        None if j.is_null("init_lora_weights") => LoraInit::Random,
        None | Some(Value::Bool(true)) => LoraInit::Default,
        Some(Value::Bool(false)) => LoraInit::Random,
        Some(Value::String(s)) if s == "gaussian" => LoraInit::Gaussian,
        Some(Value::String(s)) if s == "eva" => LoraInit::LoadOnly("eva"),
        Some(Value::String(s)) if s == "orthogonal" => LoraInit::Orthogonal,
        Some(v) => {
            return Err(j.error(
                "init_lora_weights",
                format!(
                    "is {v}; only true, false, \"gaussian\" and \"orthogonal\" are supported (and \"eva\" for a \
                     trained adapter; PiSSA, OLoRA, LoftQ and CorDA change the base weights: save such an \
                     adapter with PEFT's `path_initial_model_for_weight_conversion` to get a plain LoRA)"
                ),
            ));
        }
    };
    let dropout = j.opt_f64("lora_dropout")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&dropout) {
        return Err(j.error("lora_dropout", format!("must be in [0, 1], got {dropout}")));
    }
    let mut rank_pattern = Vec::new();
    if let Some(v) = j.get("rank_pattern") {
        let map = v.as_object().ok_or_else(|| j.error("rank_pattern", "must be an object"))?;
        for (k, r) in map {
            check_pattern(j, "rank_pattern", k)?;
            let r = crate::io::json::whole_number(r)
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
                .filter(|&a| (a as f32).is_finite())
                .ok_or_else(|| j.error("alpha_pattern", format!("`{k}` needs a number")))?;
            alpha_pattern.push((k.clone(), a));
        }
    }
    let target_modules = targets(j, "target_modules")?;
    let layers_to_transform = usize_list(j, "layers_to_transform")?;
    // PEFT's LoraConfig refuses these (a string, "all-linear" too, is not a list of names;
    // `layers_pattern` given as null is not given, "" and [] are).
    let string_targets = matches!(j.get("target_modules"), Some(Value::String(_)));
    if string_targets && layers_to_transform.is_some() {
        return Err(j.error("layers_to_transform", "cannot be used when target_modules is a string, as in PEFT"));
    }
    if string_targets && !matches!(j.get("layers_pattern"), None | Some(Value::Null)) {
        return Err(j.error("layers_pattern", "cannot be used when target_modules is a string, as in PEFT"));
    }
    if !layers_pattern.is_empty() && layers_to_transform.is_none() {
        return Err(j.error("layers_pattern", "is given without layers_to_transform, which PEFT refuses"));
    }
    Ok(LoraConfig {
        r: j.usize_in("r", 1, MAX_RANK)?,
        lora_alpha: j.opt_f64("lora_alpha")?.unwrap_or(8.0),
        target_modules,
        exclude_modules: opt_targets(j, "exclude_modules")?,
        layers_to_transform,
        layers_pattern,
        rank_pattern,
        alpha_pattern,
        lora_dropout: dropout,
        use_rslora: j.opt_bool("use_rslora")?.unwrap_or(false),
        init,
        bias,
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

impl LoraConfig {
    /// Rank and alpha for the module at `path`, after `rank_pattern`/`alpha_pattern` (PEFT:
    /// the first pattern `p` with `path` matching `(.*\.)?(p)$`).
    pub fn rank_alpha(&self, path: &str) -> (usize, f64) {
        self.rank_alpha_lookup()(path)
    }

    /// [`LoraConfig::rank_alpha`] for many paths: the patterns are compiled once.
    pub fn rank_alpha_lookup(&self) -> impl Fn(&str) -> (usize, f64) + '_ {
        fn compile<T: Copy>(patterns: &[(String, T)]) -> Vec<(Pattern, T)> {
            // A key that is not a regex is refused when read (`check_pattern`) and when built
            // in code (`AdapterConfig::check_values`).
            patterns.iter().filter_map(|(k, v)| Some((pattern_regex(k).ok()?, *v))).collect()
        }
        fn find<T: Copy>(patterns: &[(Pattern, T)], path: &str) -> Option<T> {
            patterns.iter().find(|(re, _)| re.is_match(path)).map(|&(_, v)| v)
        }
        let (ranks, alphas) = (compile(&self.rank_pattern), compile(&self.alpha_pattern));
        move |path| (find(&ranks, path).unwrap_or(self.r), find(&alphas, path).unwrap_or(self.lora_alpha))
    }

    /// The compiled keys of `rank_pattern` and `alpha_pattern` and the layer expressions of
    /// `layers_pattern` ([`layer_regex`]), each with its field (one that is not a regex is
    /// refused when read and by `check_values`, and left out here).
    pub(crate) fn pattern_keys(&self) -> impl Iterator<Item = (&'static str, Pattern)> + '_ {
        let ranks = self.rank_pattern.iter().map(|(k, _)| ("rank_pattern", k));
        let keys = ranks.chain(self.alpha_pattern.iter().map(|(k, _)| ("alpha_pattern", k)));
        let layers = self.layers_pattern.iter().filter_map(|name| Some(("layers_pattern", layer_regex(name).ok()?)));
        keys.filter_map(|(field, key)| Some((field, pattern_regex(key).ok()?))).chain(layers)
    }

    /// The keys of `rank_pattern` and `alpha_pattern`, each with its field, that match none
    /// of `paths`.
    pub(crate) fn patterns_matching_none(&self, paths: &[String]) -> Vec<(&'static str, &str)> {
        let ranks = self.rank_pattern.iter().map(|(k, _)| ("rank_pattern", k.as_str()));
        let keys = ranks.chain(self.alpha_pattern.iter().map(|(k, _)| ("alpha_pattern", k.as_str())));
        keys.filter(|(_, key)| pattern_regex(key).is_ok_and(|re| !paths.iter().any(|p| re.is_match(p)))).collect()
    }

    /// Whether two keys of `rank_pattern`, or two of `alpha_pattern`, match one of `paths`.
    /// PEFT takes the first key that matches but writes the keys sorted, so a folder it saves
    /// again may give such a module another rank or alpha; a config like this is written
    /// with its modules spelled out.
    pub(crate) fn patterns_overlap<'p>(&self, paths: impl IntoIterator<Item = &'p str>) -> bool {
        let compile =
            |keys: Vec<&String>| -> Vec<Pattern> { keys.into_iter().filter_map(|k| pattern_regex(k).ok()).collect() };
        let ranks = compile(self.rank_pattern.iter().map(|(k, _)| k).collect());
        let alphas = compile(self.alpha_pattern.iter().map(|(k, _)| k).collect());
        let twice = |res: &[Pattern], path: &str| res.iter().filter(|re| re.is_match(path)).count() > 1;
        paths.into_iter().any(|p| twice(&ranks, p) || twice(&alphas, p))
    }

    /// `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scaling(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
    }
}
