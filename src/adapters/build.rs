//! [`Build`]: the state while an adapter is built from its config and a source of tensors
//! (a file, a fresh initialisation, or a dry run): each tensor's key, shape and check, and
//! how module keys are named.

use std::path::{Path, PathBuf};

use super::params::{ParamBuilder, Slot, Value};
use super::source::{Init, Source};
use super::{PEFT_PREFIX, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::io::safetensors::HostTensor;
use crate::nn::{ModuleId, Naming, VitConfig};

/// State while an adapter is built from a config and a source of tensors.
pub(crate) struct Build<'a> {
    pub(crate) model: &'a VitConfig,
    pub(crate) config_path: &'a Path,
    pub(crate) saved: Vec<ModuleId>,
    pub(super) preferred: Naming,
    /// The namings the file's layer keys use (empty for a fresh adapter).
    pub(super) file_namings: Vec<Naming>,
    pub(super) source: Source<'a>,
    pub(super) params: ParamBuilder,
    /// Largest tensor the device takes, in bytes, and the limit that sets it; checked before
    /// any value is made.
    pub(super) max_bytes: (u64, &'static str),
    /// Values a new adapter (or its dry run) has made so far.
    pub(super) made: Made,
}

/// Values a new adapter has made so far, counted before each tensor's values are drawn: the
/// trainable ones must fit the optimizer's one buffer, and all of them the host's memory
/// (each tensor alone passing its own check, a large rank on many modules could need more).
#[derive(Default)]
pub(crate) struct Made {
    trainable: u64,
    all: u64,
    memory: crate::io::memory::Budget,
}

impl Build<'_> {
    /// Fails with [`Error::TooLarge`] naming `key` when a tensor of `shape` would not fit the
    /// device (or overflows), before anything is allocated for it.
    fn check_size(&self, key: &str, shape: &[usize]) -> Result<()> {
        // Every rank, count and width is at least 1 in a config read from a file; one built in
        // code may say 0, which would make an empty tensor and NaNs (or a division by zero).
        if shape.contains(&0) {
            return Err(Error::Config {
                path: self.config_path.to_path_buf(),
                key: key.into(),
                message: format!("would have shape {shape:?}; ranks and counts must be at least 1"),
            });
        }
        let bytes = shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64));
        let (max, limit) = self.max_bytes;
        match bytes {
            Some(b) if b <= max => Ok(()),
            _ => Err(Error::TooLarge {
                what: format!("adapter tensor `{key}` of shape {shape:?} (from {})", self.config_path.display()),
                bytes: bytes.unwrap_or(u64::MAX),
                limit,
                max,
            }),
        }
    }

    /// Counts a new adapter's tensor `key` of `shape` (checked by [`Build::check_size`]) into
    /// [`Made`]: fails when the trainable values would not fit the optimizer's buffer of all
    /// of them (one tensor, so within the limit [`Build::check_size`] applies), or all values
    /// the host's memory (as it was when they began to add up). An adapter read from a file
    /// is bounded by the file.
    fn count(&mut self, key: &str, shape: &[usize], trainable: bool) -> Result<()> {
        if self.source.is_file() {
            return Ok(());
        }
        let n = shape.iter().map(|&d| d as u64).product::<u64>();
        self.made.all = self.made.all.saturating_add(n);
        let from = self.config_path.display();
        if trainable {
            self.made.trainable = self.made.trainable.saturating_add(n);
            let (count, bytes) = (self.made.trainable, self.made.trainable.saturating_mul(4));
            let (max, limit) = self.max_bytes;
            if bytes > max {
                let what = format!(
                    "the {count} trainable values {from} makes (up to `{key}`; the optimizer keeps them in one \
                     buffer: lower the rank or target fewer modules)"
                );
                return Err(Error::TooLarge { what, bytes, limit, max });
            }
        }
        let bytes = self.made.all.saturating_mul(4);
        if let Some(free) = self.made.memory.shortfall(bytes) {
            let gib = crate::io::memory::gib;
            return Err(Error::Config {
                path: self.config_path.to_path_buf(),
                key: "r".into(),
                message: format!(
                    "makes {} of adapter tensors (up to `{key}`), more than the {} this process can still get; \
                     lower the rank or target fewer modules",
                    gib(bytes),
                    gib(free)
                ),
            });
        }
        Ok(())
    }

    /// A trainable tensor from the source.
    pub(crate) fn trainable(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Slot> {
        self.check_size(key, shape)?;
        self.count(key, shape, true)?;
        let t = self.source.tensor(key, shape, init)?;
        Ok(self.params.train(key.to_string(), Value::Host(t)))
    }

    /// A frozen tensor from the source.
    pub(crate) fn frozen(&mut self, key: &str, shape: &[usize], init: Init) -> Result<Slot> {
        self.check_size(key, shape)?;
        self.count(key, shape, false)?;
        let t = self.source.tensor(key, shape, init)?;
        Ok(self.params.freeze(key.to_string(), Value::Host(t)))
    }

    /// A frozen tensor saved as `key` that the source holds as `file_key` (RLP's merged
    /// prompts, read as the `P₀` of a new re-parameterisation).
    pub(crate) fn frozen_from(&mut self, key: &str, file_key: &str, shape: &[usize]) -> Result<Slot> {
        self.check_size(file_key, shape)?;
        let t = self.source.tensor(file_key, shape, Init::Zeros)?;
        Ok(self.params.freeze(key.to_string(), Value::Host(t)))
    }

    /// A trainable tensor the file does not hold, drawn by `init` from the source's seed
    /// mixed with `stream` (empty in a dry run).
    pub(crate) fn trainable_generated(&mut self, key: &str, shape: &[usize], init: Init, stream: u64) -> Result<Slot> {
        self.check_size(key, shape)?;
        self.count(key, shape, true)?;
        let t = self.source.generated(shape, init, stream);
        Ok(self.params.train(key.to_string(), Value::Host(t)))
    }

    /// Zeros of `shape` for `key` that come from no file (a new classifier head).
    pub(crate) fn zeros(&self, key: &str, shape: &[usize]) -> Result<HostTensor> {
        self.check_size(key, shape)?;
        self.source.zeros(shape)
    }

    /// Marks the file's keys for which `unread` holds as read without reading them: tensors
    /// PEFT writes but never loads.
    pub(crate) fn ignore_where(&mut self, unread: impl Fn(&str) -> bool) {
        self.source.ignore_where(unread);
    }

    pub(crate) fn params_mut(&mut self) -> &mut ParamBuilder {
        &mut self.params
    }

    pub(crate) fn is_file(&self) -> bool {
        self.source.is_file()
    }

    /// Whether the source is a file holding `key`.
    pub(crate) fn source_has(&self, key: &str) -> bool {
        self.source.is_file() && self.source.has(key)
    }

    pub(crate) fn source_any_shape(&mut self, key: &str) -> Result<Option<HostTensor>> {
        self.source.any_shape(key)
    }

    /// The weights file, for messages.
    pub(crate) fn weights_path(&self) -> PathBuf {
        match &self.source {
            Source::File { file, .. } => file.path().to_path_buf(),
            Source::Fresh { .. } | Source::Shapes => PathBuf::from(WEIGHTS_FILE),
        }
    }

    /// The naming of `module`'s keys: whichever the file uses (probing `<path>.<leaf>`), or
    /// for a new adapter the one its config prefers when `matched` (whether the module's
    /// target matches its path under a naming) allows, else the one that matched. A file so
    /// written keys each layer module in a naming its target names it by, which is the naming
    /// PEFT looks it up under.
    pub(crate) fn key_naming(&self, module: ModuleId, matched: impl Fn(Naming) -> bool, leaf: &str) -> Naming {
        if !matches!(module, ModuleId::Layer(..)) {
            return Naming::OnDisk; // the same path under both namings
        }
        let first = if matched(self.preferred) { self.preferred } else { self.preferred.other() };
        if !self.source.is_file() {
            return first;
        }
        [first, first.other()]
            .into_iter()
            .find(|&n| self.source.has(&format!("{PEFT_PREFIX}{}.{leaf}", module.path(n))))
            .unwrap_or(first)
    }

    /// The key stem (`base_model.model.<path>`) of a LoRA or FLoRA module whose first tensor is
    /// `<stem>.<leaf>`, in the naming [`Build::key_naming`] picks; `None` when the file left the
    /// module out as PEFT would ([`Build::left_out_by_file`]; asked only with `left_out`, for
    /// LoRA: PEFT reads no other type, whose files this crate keys in whichever naming they
    /// were read), its would-be key then kept in `left_out` (the first such) for
    /// [`Build::require_adapted`]. A config given beside another folder's
    /// tensors (`train --init DIR --adapter-config FILE`) that adapts a module those tensors
    /// do not hold is an error naming the module: the run continues an adapter, module for
    /// module.
    pub(crate) fn module_stem(
        &self,
        module: ModuleId,
        matched: impl Fn(Naming) -> bool + Copy,
        leaf: &str,
        left_out: Option<&mut Option<String>>,
    ) -> Result<Option<String>> {
        let naming = self.key_naming(module, matched, leaf);
        let stem = format!("{PEFT_PREFIX}{}", module.path(naming));
        if let Some(left_out) = left_out
            && self.left_out_by_file(module, matched)
        {
            left_out.get_or_insert_with(|| format!("{stem}.{leaf}"));
            return Ok(None);
        }
        if self.source.is_file() && !self.source.has_own_config() && !self.holds_any_naming(module, leaf) {
            return Err(Error::Config {
                path: self.config_path.to_path_buf(),
                key: "target_modules".into(),
                message: format!(
                    "adapts `{}`, for which {} holds no tensors (no `{stem}.{leaf}`); a run started from an \
                     adapter continues its own modules: leave this one out, or train a new adapter",
                    module.path(naming),
                    self.weights_path().display()
                ),
            });
        }
        Ok(Some(stem))
    }

    /// Fails when a LoRA or FLoRA config adapts no module: when modules were left out for the
    /// file's naming (`left_out`), naming `target_modules` if the file holds the first such
    /// module's tensor (the targets name it in the other naming only: config and tensors do
    /// not belong together), else that tensor as missing (a broken file being likelier then);
    /// otherwise `target_modules` and the `filters` that removed the rest.
    pub(crate) fn require_adapted(&self, adapted: usize, left_out: Option<String>, filters: &str) -> Result<()> {
        match (adapted, left_out) {
            (0, Some(key)) if self.source_has(&key) => {
                let keys_naming = key.strip_prefix(PEFT_PREFIX).and_then(Naming::of_path).unwrap_or(Naming::OnDisk);
                Err(Error::Config {
                    path: self.config_path.to_path_buf(),
                    key: "target_modules".into(),
                    message: format!(
                        "names modules in {} only, but {} keys them in {}, as `{key}`: the config and the \
                         tensors were not saved together (PEFT refuses such a folder too)",
                        keys_naming.other().describe(),
                        self.weights_path().display(),
                        keys_naming.describe(),
                    ),
                })
            }
            (0, Some(key)) => Err(Error::MissingTensor { path: self.weights_path(), key }),
            (0, None) => Err(Error::Config {
                path: self.config_path.to_path_buf(),
                key: "target_modules".into(),
                message: format!("leaves no module to adapt once {filters} are applied"),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the source is a file holding `module`'s `leaf` tensor under either naming.
    pub(crate) fn holds_any_naming(&self, module: ModuleId, leaf: &str) -> bool {
        Naming::BOTH.into_iter().any(|n| self.source_has(&format!("{PEFT_PREFIX}{}.{leaf}", module.path(n))))
    }

    /// The namings module names are read in: for a file read with its own config, those its
    /// layer keys use, as the PEFT that wrote both saw one (its transformers version's); for a
    /// fresh adapter, a config given beside another folder's tensors (`train --init DIR
    /// --adapter-config FILE`, whose names need not be the file's), or a file with no layer
    /// keys, both.
    pub(crate) fn read_namings(&self) -> Vec<Naming> {
        read_namings(&self.file_namings, &self.source)
    }

    /// Fails, naming the entry and the module, when `targets` name a module that is not a
    /// linear or conv layer (a LayerNorm, `attention`, `mlp`) under [`Build::read_namings`],
    /// as PEFT does; passing over it would train less than asked, and write a config PEFT
    /// cannot load. A file with no layer keys is not checked: which naming the PEFT that wrote
    /// it saw is not known, and an entry such as `intermediate` names a container under one
    /// naming only.
    pub(crate) fn check_target_kinds(&self, targets: &crate::nn::Targets) -> Result<()> {
        if self.source.has_own_config() && self.file_namings.is_empty() {
            return Ok(());
        }
        let Some((entry, path)) = targets.names_other_module(self.model.num_hidden_layers, &self.read_namings()) else {
            return Ok(());
        };
        let what = match targets {
            crate::nn::Targets::Names(_) => format!("`{entry}` names"),
            crate::nn::Targets::Regex(_) => format!("regex {entry:?} matches"),
        };
        Err(Error::Config {
            path: self.config_path.to_path_buf(),
            key: "target_modules".into(),
            message: format!(
                "{what} `{path}`, which is not a linear or conv layer (PEFT refuses it too); only linear \
                 and conv layers carry an adapter"
            ),
        })
    }

    /// Whether a file read with its own config left `module` out the way PEFT does: the
    /// module's target names it only under namings none of the file's layer keys use. PEFT
    /// sees one naming (its transformers version's), so a config such as `["q_proj", "value"]`
    /// adapts only `q_proj` under transformers 5, and `["projection", "q_proj"]` only the
    /// patch embedding under transformers 4; tensors the file holds for a module so left out
    /// are refused as not belonging to the config. A config given separately (see
    /// [`Build::read_namings`]) names modules under either naming, and leaves none out.
    fn left_out_by_file(&self, module: ModuleId, matched: impl Fn(Naming) -> bool) -> bool {
        if !self.source.has_own_config() || !matches!(module, ModuleId::Layer(..)) {
            return false;
        }
        let uses = |n: Naming| self.file_namings.contains(&n);
        Naming::BOTH.into_iter().all(|n| !matched(n) || !uses(n))
    }
}

/// [`Build::read_namings`] for `source`, whose layer keys use `file_namings`; also for the
/// saved modules, which are found before the build starts.
pub(crate) fn read_namings(file_namings: &[Naming], source: &Source<'_>) -> Vec<Naming> {
    if file_namings.is_empty() || !source.has_own_config() { Naming::BOTH.to_vec() } else { file_namings.to_vec() }
}
