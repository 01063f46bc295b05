//! Any bytes as a data file: loading never panics, errors name the file, and a data set that
//! loads has finite pixels, one label per image, and can be checked against any model shape
//! and gathered.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use peft_wgpu::io::{Dataset, TensorFile};

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzzed_data.safetensors");
    let named = |e: &peft_wgpu::Error| assert!(e.to_string().contains("fuzzed_data"), "error without the file: {e}");
    let data = match TensorFile::from_bytes(path, bytes).and_then(|f| Dataset::from_file(&f)) {
        Ok(d) => d,
        Err(e) => return named(&e),
    };
    assert!(!data.is_empty() && data.pixels.iter().all(|p| p.is_finite()));
    assert_eq!(data.labels.len(), data.len());
    for (c, side, labels) in [(3, 8, 5), (1, 1, 1), (data.shape[1], data.shape[2], 1 << 20)] {
        if let Err(e) = data.check_fits(c, [side, side], labels) {
            named(&e);
        }
    }
    let rows: Vec<usize> = (0..data.len()).rev().collect();
    let (pixels, labels) = data.gather(&rows).expect("rows of the data set");
    assert_eq!((pixels.len(), labels.len()), (data.pixels.len(), data.len()));
});
