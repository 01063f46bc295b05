//! PEFT's patterns are Python `re` expressions: `Pattern` matches the module paths of a
//! 2-layer ViT, under both namings, exactly as Python does (look-around, backreferences,
//! `{,n}`, `\Z`, comments, atomic groups, classes with `&&`, `--` or `[`), and PEFT's layer
//! expression around a `layers_pattern` name finds a layer's index where Python's does, by the fixture
//! scripts/fixtures_patterns.py wrote with Python's `re`. No GPU needed.

use std::path::Path;

use peft_wgpu::adapters::config::layer_regex;
use peft_wgpu::nn::{Pattern, PatternUse};

#[test]
fn patterns_match_module_paths_as_python_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/patterns.json");
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    let paths: Vec<&str> = fixture["paths"].as_array().expect("paths").iter().filter_map(|p| p.as_str()).collect();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(paths.len() > 30 && cases.len() > 25, "the fixture holds the cases");
    for case in cases {
        let source = case["pattern"].as_str().expect("pattern");
        let want: Vec<&str> = case["matches"].as_array().expect("matches").iter().filter_map(|p| p.as_str()).collect();
        let got: Vec<&str> = match case["use"].as_str() {
            // A `layers_pattern` name: PEFT's expression around it matches, its index set.
            Some("layer") => {
                let pattern = layer_regex(source).unwrap_or_else(|e| panic!("{source}: {e}"));
                paths.iter().copied().filter(|p| pattern.matches_with_group(p, "idx")).collect()
            }
            used => {
                let used = match used {
                    Some("whole") => PatternUse::Whole,
                    Some("tail") => PatternUse::Tail,
                    other => panic!("use {other:?}"),
                };
                let pattern = Pattern::new(source, used).unwrap_or_else(|e| panic!("{source}: {e}"));
                paths.iter().copied().filter(|p| pattern.is_match(p)).collect()
            }
        };
        assert_eq!(got, want, "{:?} pattern {source}", case["use"]);
    }
}

#[test]
fn a_pattern_python_refuses_is_refused() {
    for source in ["(", "[a", "a**", "(?P<x>a)(?P=y)"] {
        assert!(Pattern::new(source, PatternUse::Whole).is_err(), "{source}");
    }
}
