//! Helpers shared by the property tests (`fuzz_files.rs`, `fuzz_configs.rs`).

use std::path::{Path, PathBuf};

use proptest::prelude::ProptestConfig;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Cases per property unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// The error of a loader must name `path` (by its file name at least).
pub fn names_file(e: &peft_wgpu::Error, path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    e.to_string().contains(&name)
}
