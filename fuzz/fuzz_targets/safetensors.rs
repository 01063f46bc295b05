//! Any bytes as a safetensors file: opening never panics, every error names the file, and a
//! file that opens can be read tensor by tensor, every way, without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use peft_wgpu::io::{Dataset, TensorFile};

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzzed.safetensors");
    match TensorFile::from_bytes(path, bytes) {
        Err(e) => assert!(e.to_string().contains("fuzzed.safetensors"), "error without the file: {e}"),
        Ok(file) => {
            let keys: Vec<String> = file.keys().map(str::to_string).collect();
            for k in &keys {
                let shape = file.shape(k).map(<[usize]>::to_vec).unwrap_or_default();
                for e in
                    [file.f32(k).err(), file.integers(k).err(), file.f32_shaped(k, &shape).err()].into_iter().flatten()
                {
                    assert!(e.to_string().contains("fuzzed.safetensors"), "error without the file: {e}");
                }
            }
            if let Err(e) = Dataset::from_file(&file) {
                assert!(e.to_string().contains("fuzzed.safetensors"), "error without the file: {e}");
            }
        }
    }
});
