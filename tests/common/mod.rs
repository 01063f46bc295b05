//! Helpers shared by the integration tests: the GPU (a missing adapter fails loudly), float
//! comparison with a tolerance that scales with the work, and seeded data.
#![allow(dead_code, unused_imports, reason = "each test binary uses a different subset of the helpers")]

use peft_wgpu::Gpu;
pub use peft_wgpu::rng::Rng;

/// The GPU for tests, with new buffers poisoned with NaN so unwritten outputs fail.
/// Panics, never skips, when no adapter exists.
pub fn gpu() -> Gpu {
    match Gpu::new() {
        Ok(gpu) => {
            gpu.set_poison_new_buffers(true);
            gpu
        }
        Err(e) => panic!(
            "GPU tests need a wgpu adapter and none could be opened: {e}\n\
             On headless Linux install lavapipe: apt-get install -y mesa-vulkan-drivers libvulkan1"
        ),
    }
}

/// Whether `gpu` should pick the CPU adapters' kernels: what `PEFT_WGPU_KERNELS` asks for
/// (`cpu`, `gpu`), else whether the adapter is a CPU. Asserts that `gpu` agrees, so a test
/// that checks which kernel ran also checks the choice of family.
pub fn expect_cpu_kernels(gpu: &Gpu) -> bool {
    let forced = std::env::var("PEFT_WGPU_KERNELS").map(|v| v.trim().to_ascii_lowercase()).unwrap_or_default();
    let want = match forced.as_str() {
        "cpu" => true,
        "gpu" => false,
        _ => gpu.adapter_info().device_type == wgpu::DeviceType::Cpu,
    };
    assert_eq!(gpu.cpu_kernels(), want, "kernel family on {:?} with PEFT_WGPU_KERNELS={forced:?}", gpu.adapter_info());
    want
}

/// f32 machine epsilon as f64.
pub const EPS: f64 = f32::EPSILON as f64;

/// Relative tolerance for a result that sums `n` f32 products: `c·√n·ε`, at least `c·ε`.
pub fn tol(c: f64, n: usize) -> f64 {
    c * (n.max(1) as f64).sqrt() * EPS
}

/// Asserts `|got − want| ≤ rel·max(|want|, scale) + abs` elementwise, where `scale` is the
/// largest |want| (so near-zero entries of a large result are judged against its size).
/// The message names the worst index and both values.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs expected {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        assert!(g.is_finite() || !w.is_finite(), "{what}: element {i} is {g}, expected {w}");
        let err = (g - w).abs() / (rel * scale.max(f64::MIN_POSITIVE) + abs);
        if err > worst.1 || err.is_nan() {
            worst = (i, err);
        }
    }
    let (i, ratio) = worst;
    assert!(
        ratio <= 1.0,
        "{what}: worst element {i}: got {}, expected {} (|diff| {:.3e}, allowed {:.3e}; rel {rel:.1e} of max |x| {scale:.3e} + abs {abs:.1e})",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs(),
        rel * scale + abs,
    );
}

/// Relative error between two vectors in the 2-norm: `‖a − b‖ / ‖b‖`.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// f32 → f64.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A safetensors fixture from `tests/fixtures/` (made by the scripts in `scripts/`).
pub struct Fixture {
    name: String,
    tensors: std::collections::HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
}

/// Loads `tests/fixtures/<name>`; panics with the path when it is missing or corrupt.
pub fn fixture(name: &str) -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(key, view)| (key, (view.dtype(), view.shape().to_vec(), view.data().to_vec())))
        .collect();
    Fixture { name: name.to_string(), tensors }
}

impl Fixture {
    fn get(&self, key: &str) -> &(safetensors::Dtype, Vec<usize>, Vec<u8>) {
        self.tensors.get(key).unwrap_or_else(|| panic!("fixture {}: no tensor `{key}`", self.name))
    }

    /// Whether the fixture holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The shape of `key`.
    pub fn shape(&self, key: &str) -> Vec<usize> {
        self.get(key).1.clone()
    }

    /// An f32 tensor's values.
    pub fn f32(&self, key: &str) -> Vec<f32> {
        let (dtype, _, data) = self.get(key);
        assert_eq!(*dtype, safetensors::Dtype::F32, "fixture {}: `{key}` is {dtype:?}, not F32", self.name);
        data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    /// An f64 tensor's values.
    pub fn f64(&self, key: &str) -> Vec<f64> {
        let (dtype, _, data) = self.get(key);
        assert_eq!(*dtype, safetensors::Dtype::F64, "fixture {}: `{key}` is {dtype:?}, not F64", self.name);
        data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
    }

    /// A u32 tensor's values.
    pub fn u32(&self, key: &str) -> Vec<u32> {
        let (dtype, _, data) = self.get(key);
        assert_eq!(*dtype, safetensors::Dtype::U32, "fixture {}: `{key}` is {dtype:?}, not U32", self.name);
        data.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    /// An integer tensor (I64, I32, U32 or U8) as i64.
    pub fn ints(&self, key: &str) -> Vec<i64> {
        let (dtype, _, data) = self.get(key);
        match dtype {
            safetensors::Dtype::I64 => {
                data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
            }
            safetensors::Dtype::I32 => {
                data.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect()
            }
            safetensors::Dtype::U32 => {
                data.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect()
            }
            safetensors::Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
            other => panic!("fixture {}: `{key}` is {other:?}, not an integer type", self.name),
        }
    }

    /// Every key.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.tensors.keys().cloned().collect();
        k.sort();
        k
    }
}
