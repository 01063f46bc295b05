//! Module paths of a ViT under both namings in use, and PEFT's `target_modules` matching.
//!
//! transformers 4 (and every checkpoint on disk) names layer modules
//! `vit.encoder.layer.{i}.attention.attention.query`, …; transformers 5 names the same modules
//! `vit.layers.{i}.attention.q_proj`, …. Adapters written under either naming load; matching
//! tries both paths of each module.

use super::pattern::{Pattern, PatternUse};
use crate::error::{Error, Result};

/// A module of one transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerPart {
    /// Attention query projection.
    Query,
    /// Attention key projection.
    Key,
    /// Attention value projection.
    Value,
    /// Attention output projection.
    AttnOut,
    /// First MLP linear (`intermediate.dense`, `mlp.fc1`).
    Fc1,
    /// Second MLP linear (`output.dense`, `mlp.fc2`).
    Fc2,
    /// LayerNorm before attention.
    LnBefore,
    /// LayerNorm before the MLP.
    LnAfter,
}

impl LayerPart {
    /// Every part, in the order of the layer.
    pub const ALL: [LayerPart; 8] = [
        LayerPart::LnBefore,
        LayerPart::Query,
        LayerPart::Key,
        LayerPart::Value,
        LayerPart::AttnOut,
        LayerPart::LnAfter,
        LayerPart::Fc1,
        LayerPart::Fc2,
    ];

    /// Whether the part is a linear layer (adapters can target it).
    pub fn is_linear(self) -> bool {
        !matches!(self, LayerPart::LnBefore | LayerPart::LnAfter)
    }

    fn v4_suffix(self) -> &'static str {
        match self {
            LayerPart::Query => "attention.attention.query",
            LayerPart::Key => "attention.attention.key",
            LayerPart::Value => "attention.attention.value",
            LayerPart::AttnOut => "attention.output.dense",
            LayerPart::Fc1 => "intermediate.dense",
            LayerPart::Fc2 => "output.dense",
            LayerPart::LnBefore => "layernorm_before",
            LayerPart::LnAfter => "layernorm_after",
        }
    }

    fn v5_suffix(self) -> &'static str {
        match self {
            LayerPart::Query => "attention.q_proj",
            LayerPart::Key => "attention.k_proj",
            LayerPart::Value => "attention.v_proj",
            LayerPart::AttnOut => "attention.o_proj",
            LayerPart::Fc1 => "mlp.fc1",
            LayerPart::Fc2 => "mlp.fc2",
            LayerPart::LnBefore => "layernorm_before",
            LayerPart::LnAfter => "layernorm_after",
        }
    }
}

/// A module of the model that holds weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleId {
    /// The patch-embedding conv, `vit.embeddings.patch_embeddings.projection`.
    PatchEmbed,
    /// A module of layer `i`.
    Layer(usize, LayerPart),
    /// The final LayerNorm, `vit.layernorm`.
    FinalNorm,
    /// The classifier head, `classifier`.
    Classifier,
}

/// Which naming a path uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Naming {
    /// transformers 4 and on-disk checkpoints: `vit.encoder.layer.{i}.attention.attention.query`.
    OnDisk,
    /// transformers 5: `vit.layers.{i}.attention.q_proj`.
    Transformers5,
}

impl Naming {
    /// Both namings, on-disk first.
    pub const BOTH: [Naming; 2] = [Naming::OnDisk, Naming::Transformers5];

    /// The naming that is not this one.
    pub fn other(self) -> Naming {
        match self {
            Naming::OnDisk => Naming::Transformers5,
            Naming::Transformers5 => Naming::OnDisk,
        }
    }

    /// How a message names this naming: the transformers versions that use it, with an
    /// example path.
    pub fn describe(self) -> &'static str {
        match self {
            Naming::OnDisk => "transformers 4's naming (`vit.encoder.layer.N.attention.attention.query`)",
            Naming::Transformers5 => "transformers 5's naming (`vit.layers.N.attention.q_proj`)",
        }
    }

    /// The naming a module path is written in: `None` outside the layers, where both agree.
    pub fn of_path(path: &str) -> Option<Naming> {
        if path.starts_with("vit.encoder.layer.") {
            Some(Naming::OnDisk)
        } else if path.starts_with("vit.layers.") {
            Some(Naming::Transformers5)
        } else {
            None
        }
    }
}

impl ModuleId {
    /// The dotted path under `naming`.
    pub fn path(self, naming: Naming) -> String {
        match (self, naming) {
            (ModuleId::PatchEmbed, _) => "vit.embeddings.patch_embeddings.projection".into(),
            (ModuleId::FinalNorm, _) => "vit.layernorm".into(),
            (ModuleId::Classifier, _) => "classifier".into(),
            (ModuleId::Layer(i, part), Naming::OnDisk) => format!("vit.encoder.layer.{i}.{}", part.v4_suffix()),
            (ModuleId::Layer(i, part), Naming::Transformers5) => format!("vit.layers.{i}.{}", part.v5_suffix()),
        }
    }

    /// Both paths (equal for modules outside the layers).
    pub fn paths(self) -> [String; 2] {
        [self.path(Naming::OnDisk), self.path(Naming::Transformers5)]
    }

    /// Whether the module is a linear or conv layer that adapters may target.
    pub fn is_adaptable(self) -> bool {
        match self {
            ModuleId::PatchEmbed | ModuleId::Classifier => true,
            ModuleId::FinalNorm => false,
            ModuleId::Layer(_, part) => part.is_linear(),
        }
    }

    /// The paths under `naming` of the modules of a ViT classifier with `layers` layers that
    /// are neither linear nor conv layers, as transformers names them: the model (the empty
    /// path) and the containers, LayerNorms, dropouts and activations. PEFT refuses a target
    /// that names one.
    pub fn other_paths(layers: usize, naming: Naming) -> Vec<String> {
        let (top, per_layer): (&[&str], &[&str]) = match naming {
            Naming::OnDisk => (
                &["vit.encoder", "vit.encoder.layer"],
                &[
                    "",
                    ".attention",
                    ".attention.attention",
                    ".attention.attention.dropout",
                    ".attention.output",
                    ".attention.output.dropout",
                    ".intermediate",
                    ".intermediate.intermediate_act_fn",
                    ".output",
                    ".output.dropout",
                    ".layernorm_before",
                    ".layernorm_after",
                ],
            ),
            Naming::Transformers5 => (
                &["vit.layers"],
                &["", ".attention", ".layernorm_before", ".layernorm_after", ".mlp", ".mlp.activation_fn", ".dropout"],
            ),
        };
        let layer = |i: usize| match naming {
            Naming::OnDisk => format!("vit.encoder.layer.{i}"),
            Naming::Transformers5 => format!("vit.layers.{i}"),
        };
        let shared =
            ["", "vit", "vit.embeddings", "vit.embeddings.patch_embeddings", "vit.embeddings.dropout", "vit.layernorm"];
        let mut paths: Vec<String> = shared.iter().chain(top).map(|p| p.to_string()).collect();
        paths.extend((0..layers).flat_map(|i| per_layer.iter().map(move |tail| format!("{}{tail}", layer(i)))));
        paths
    }

    /// Every path a pattern of an adapter config is matched against in a model with `layers`
    /// layers: each module's under both namings (those outside the layers twice), then the
    /// other modules' ([`ModuleId::other_paths`]).
    pub fn pattern_paths(layers: usize) -> Vec<String> {
        let mut paths: Vec<String> = ModuleId::all(layers).into_iter().flat_map(ModuleId::paths).collect();
        paths.extend(Naming::BOTH.into_iter().flat_map(|n| ModuleId::other_paths(layers, n)));
        paths
    }

    /// Every module of a model with `layers` layers.
    pub fn all(layers: usize) -> Vec<ModuleId> {
        let mut v = vec![ModuleId::PatchEmbed];
        v.extend((0..layers).flat_map(|i| LayerPart::ALL.map(|p| ModuleId::Layer(i, p))));
        v.extend([ModuleId::FinalNorm, ModuleId::Classifier]);
        v
    }

    /// The module named `path` under either naming, with the naming it used (layers
    /// `0..layers`; a layer index is written in decimal without leading zeros, as PyTorch
    /// names submodules). Reads the path once rather than comparing it with every module's.
    pub fn parse(path: &str, layers: usize) -> Option<(ModuleId, Naming)> {
        for m in [ModuleId::PatchEmbed, ModuleId::FinalNorm, ModuleId::Classifier] {
            if m.path(Naming::OnDisk) == path {
                return Some((m, Naming::OnDisk));
            }
        }
        let naming = Naming::of_path(path)?;
        let rest = match naming {
            Naming::OnDisk => path.strip_prefix("vit.encoder.layer.")?,
            Naming::Transformers5 => path.strip_prefix("vit.layers.")?,
        };
        let (index, suffix) = rest.split_once('.')?;
        let canonical =
            !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && (index == "0" || !index.starts_with('0'));
        let i: usize = index.parse().ok().filter(|&i| canonical && i < layers)?;
        let part = LayerPart::ALL.into_iter().find(|p| match naming {
            Naming::OnDisk => p.v4_suffix() == suffix,
            Naming::Transformers5 => p.v5_suffix() == suffix,
        })?;
        Some((ModuleId::Layer(i, part), naming))
    }
}

/// PEFT's `target_modules`: a list of names, each matching a module whose path equals it or
/// ends with `.` + it, or one regular expression matched against the whole path.
#[derive(Clone, Debug)]
pub enum Targets {
    /// Names matched exactly or as a dotted suffix.
    Names(Vec<String>),
    /// A regex (Python's syntax, as PEFT's) matched against the path: [`Targets::regex`] and
    /// [`Targets::from_config`] make it match the whole path ([`PatternUse::Whole`], PEFT's
    /// `re.fullmatch`); one built to match anywhere in the path ([`PatternUse::Anywhere`]) is
    /// saved as `.*(?:…).*`, so that it reads back with the same meaning.
    Regex(Pattern),
}

impl Targets {
    /// From the config value: a string is a regex (as in PEFT), a list holds names. PEFT's
    /// special value `"all-linear"` (in any case) names every linear layer: in a ViT
    /// classifier the six of each transformer layer and the classifier (PEFT leaves out only a
    /// language model's output embeddings, which a ViT has none of), spelled as PEFT under
    /// transformers 5 does.
    pub fn from_config(value: &serde_json::Value) -> std::result::Result<Targets, String> {
        match value {
            // PEFT compares the string lower-cased.
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("all-linear") => Ok(Targets::Names(
                ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "classifier"].map(String::from).to_vec(),
            )),
            serde_json::Value::String(s) if s.is_empty() => {
                Err("is an empty string, which names no module: name the modules to adapt".into())
            }
            serde_json::Value::String(s) => Targets::regex(s),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(|| "must hold strings".to_string()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Targets::Names),
            _ => Err("must be a string (a regex) or a list of module names".into()),
        }
    }

    /// PEFT's regex form: `pattern` (Python's syntax) must match a module's whole path.
    pub fn regex(pattern: &str) -> std::result::Result<Targets, String> {
        Pattern::new(pattern, PatternUse::Whole)
            .map(Targets::Regex)
            .map_err(|e| format!("is not a valid regular expression: {e}"))
    }

    /// The regex as an adapter config writes it (matched against the whole path), for
    /// [`Targets::Regex`]; `None` for names.
    pub fn config_regex(&self) -> Option<String> {
        let Targets::Regex(re) = self else { return None };
        Some(match re.used() {
            PatternUse::Whole => re.source().to_string(),
            PatternUse::Anywhere => format!(".*(?:{}).*", re.source()),
            PatternUse::Tail => format!("(.*\\.)?({})", re.source()),
            PatternUse::Start => format!("(?:{}).*", re.source()),
        })
    }

    /// Whether `path` is targeted.
    pub fn matches_path(&self, path: &str) -> bool {
        match self {
            Targets::Names(names) => names.iter().any(|t| name_matches(t, path)),
            Targets::Regex(re) => re.is_match(path),
        }
    }

    /// Whether `module` is targeted under either naming; returns the naming that matched.
    pub fn matches(&self, module: ModuleId) -> Option<Naming> {
        Naming::BOTH.into_iter().find(|&n| self.matches_under(module, n))
    }

    /// Whether `module` is targeted by its path under `naming`.
    pub fn matches_under(&self, module: ModuleId, naming: Naming) -> bool {
        self.matches_path(&module.path(naming))
    }

    /// The first module under `namings` that the targets name but that is neither a linear
    /// nor a conv layer ([`ModuleId::other_paths`]): the entry (or the regex) and the path.
    /// PEFT refuses such a target ("Target module … is not supported"), rather than passing
    /// over it.
    pub fn names_other_module(&self, layers: usize, namings: &[Naming]) -> Option<(String, String)> {
        let paths = namings.iter().flat_map(|&n| ModuleId::other_paths(layers, n));
        let mut hits = paths.filter(|p| self.matches_path(p));
        let path = hits.next()?;
        let entry = match self {
            Targets::Names(names) => names.iter().find(|t| name_matches(t, &path)).cloned().unwrap_or_default(),
            Targets::Regex(_) => self.config_regex().unwrap_or_default(),
        };
        Some((entry, path))
    }

    /// The adaptable modules targeted in a model with `layers` layers; an error naming the
    /// targets when there are none.
    pub fn resolve(&self, layers: usize, config_path: &std::path::Path) -> Result<Vec<(ModuleId, Naming)>> {
        let found: Vec<(ModuleId, Naming)> = ModuleId::all(layers)
            .into_iter()
            .filter(|m| m.is_adaptable())
            .filter_map(|m| self.matches(m).map(|n| (m, n)))
            .collect();
        if found.is_empty() {
            return Err(Error::Config {
                path: config_path.to_path_buf(),
                key: "target_modules".into(),
                message: format!("{self} matches no linear or conv module of this {layers}-layer ViT"),
            });
        }
        Ok(found)
    }
}

/// Whether target name `name` names the module at `path`: the path itself, or its end after
/// a dot, as PEFT matches a name in `target_modules`.
fn name_matches(name: &str, path: &str) -> bool {
    path.strip_suffix(name).is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Targets::Names(n) => f.write_str(&crate::error::list_excerpt(n)),
            Targets::Regex(_) => write!(f, "regex {:?}", self.config_regex().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_round_trip() {
        for m in ModuleId::all(3) {
            for n in [Naming::OnDisk, Naming::Transformers5] {
                let (back, _) = ModuleId::parse(&m.path(n), 3).expect("parses");
                assert_eq!(back, m);
            }
        }
        for path in [
            "vit.encoder.layer.3.attention.attention.query",
            "vit.encoder.layer.01.attention.attention.query",
            "vit.encoder.layer.+1.attention.attention.query",
            "vit.layers.1.attention.query",
            "vit.layers.1",
            "vit.layers..mlp.fc1",
            "layers.1.mlp.fc1",
            "vit.layernorm.weight",
        ] {
            assert_eq!(ModuleId::parse(path, 3), None, "{path}");
        }
        assert_eq!(
            ModuleId::parse("vit.layers.10.mlp.fc1", 11),
            Some((ModuleId::Layer(10, LayerPart::Fc1), Naming::Transformers5))
        );
    }

    #[test]
    fn targets_match_like_peft() {
        let t = Targets::Names(vec!["query".into(), "v_proj".into()]);
        assert_eq!(t.matches(ModuleId::Layer(0, LayerPart::Query)), Some(Naming::OnDisk));
        assert_eq!(t.matches(ModuleId::Layer(2, LayerPart::Value)), Some(Naming::Transformers5));
        assert_eq!(t.matches(ModuleId::Layer(0, LayerPart::Key)), None);
        // A suffix must start at a dot: "dense" matches, "ense" does not.
        let t = Targets::Names(vec!["ense".into()]);
        assert_eq!(t.matches(ModuleId::Layer(0, LayerPart::Fc1)), None);
        let t = Targets::from_config(&serde_json::json!(r"vit\.layers\.1\..*_proj")).expect("regex");
        assert!(t.matches(ModuleId::Layer(1, LayerPart::AttnOut)).is_some());
        assert!(t.matches(ModuleId::Layer(0, LayerPart::AttnOut)).is_none());
        let none = Targets::Names(vec!["nothing".into()]);
        let e = none.resolve(2, std::path::Path::new("adapter_config.json")).expect_err("no match");
        assert!(e.to_string().contains("target_modules") && e.to_string().contains("nothing"), "{e}");
    }
}
