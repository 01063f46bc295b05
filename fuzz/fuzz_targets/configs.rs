//! Any bytes as `adapter_config.json` or `config.json`: parsing never panics and errors name
//! the file; an adapter config that parses is checked against the tiny test ViT on the host
//! (the whole adapter build with shapes only), which must not panic either.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use peft_wgpu::adapters::{Adapter, AdapterConfig};
use peft_wgpu::io::json::JsonFile;
use peft_wgpu::nn::VitConfig;

const TINY_VIT: &[u8] = include_bytes!("../../tests/fixtures/vit_tiny/config.json");

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzzed/adapter_config.json");
    let named =
        |e: &peft_wgpu::Error| assert!(e.to_string().contains("adapter_config.json"), "error without the file: {e}");
    let json = match JsonFile::parse(path, bytes) {
        Ok(j) => j,
        Err(e) => return named(&e),
    };
    if let Err(e) = VitConfig::from_json(&json) {
        named(&e);
    }
    match AdapterConfig::from_json(&json) {
        Err(e) => named(&e),
        Ok(config) => {
            let tiny = JsonFile::parse(Path::new("config.json"), TINY_VIT).expect("the fixture parses");
            let model = VitConfig::from_json(&tiny).expect("the fixture is valid");
            if let Err(e) = Adapter::check(config, path, None, &model) {
                named(&e);
            }
        }
    }
});
