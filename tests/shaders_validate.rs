//! Every shader parses and validates with naga (no GPU needed), every kernel's entry point
//! exists and binds exactly the storage buffers its spec declares, and every WGSL params
//! struct has a host twin of the same size.

use std::collections::HashMap;

use peft_wgpu::gpu::{Kernel, Shader};
use wgpu::naga;

/// Host mirrors of the WGSL `*Params` structs: (shader, struct name, host size).
fn host_params() -> Vec<(Shader, &'static str, usize)> {
    use std::mem::size_of;
    vec![
        (Shader::Elementwise, "EwParams", size_of::<peft_wgpu::ops::elementwise::EwParams>()),
        (Shader::Dropout, "DropoutParams", size_of::<peft_wgpu::ops::dropout::DropoutParams>()),
        (Shader::SpectralTile, "TileParams", size_of::<peft_wgpu::ops::spectral_tile::TileParams>()),
        (Shader::SpectralTile14, "TileParams", size_of::<peft_wgpu::ops::spectral_tile::TileParams>()),
        (Shader::Norm, "NormParams", size_of::<peft_wgpu::ops::norm::NormParams>()),
        (Shader::Softmax, "SoftmaxParams", size_of::<peft_wgpu::ops::softmax::SoftmaxParams>()),
        (Shader::Activation, "ActivationParams", size_of::<peft_wgpu::ops::activation::ActivationParams>()),
        (Shader::Loss, "LossParams", size_of::<peft_wgpu::ops::loss::LossParams>()),
        (Shader::Optim, "OptimParams", size_of::<peft_wgpu::optim::OptimParams>()),
        (Shader::Matmul, "MatmulParams", size_of::<peft_wgpu::ops::matmul::MatmulParams>()),
        (Shader::Shape, "PermuteParams", size_of::<peft_wgpu::ops::shape::PermuteParams>()),
        (Shader::Shape, "BlockParams", size_of::<peft_wgpu::ops::shape::BlockParams>()),
        (Shader::Shape, "BroadcastParams", size_of::<peft_wgpu::ops::shape::BroadcastParams>()),
        (Shader::Shape, "PatchParams", size_of::<peft_wgpu::ops::patch::PatchParams>()),
        (Shader::Sum, "SumParams", size_of::<peft_wgpu::ops::sum::SumParams>()),
        (Shader::Dct, "DctParams", size_of::<peft_wgpu::ops::dct::DctParams>()),
        (Shader::Dct, "GridParams", size_of::<peft_wgpu::ops::dct::GridParams>()),
        (Shader::Spectral, "FusedParams", size_of::<peft_wgpu::ops::spectral::FusedParams>()),
        (Shader::Spectral14, "FusedParams", size_of::<peft_wgpu::ops::spectral::FusedParams>()),
        (Shader::SpectralGrid, "GridOpParams", size_of::<peft_wgpu::ops::spectral::GridOpParams>()),
        (Shader::Priors, "PriorParams", size_of::<peft_wgpu::ops::priors::PriorParams>()),
        (Shader::Conv, "ConvParams", size_of::<peft_wgpu::ops::conv::ConvParams>()),
        (Shader::MatmulRows, "MatmulParams", size_of::<peft_wgpu::ops::matmul::MatmulParams>()),
        (Shader::Attention, "AttentionParams", size_of::<peft_wgpu::ops::attention::AttentionParams>()),
        (Shader::SpectralRows, "SpectralRowsParams", size_of::<peft_wgpu::ops::spectral::SpectralRowsParams>()),
        (Shader::SpectralRows14, "SpectralRowsParams", size_of::<peft_wgpu::ops::spectral::SpectralRowsParams>()),
        (Shader::NormRows, "NormParams", size_of::<peft_wgpu::ops::norm::NormParams>()),
    ]
}

fn parse(shader: Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(shader.source())
        .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(shader.source())));
    // Only what the device is asked for (`Gpu::required_features`: immediates; subgroups,
    // optional, only where the registry says a shader uses them); a shader needing more
    // would fail here rather than on a user's device.
    let mut caps = naga::valid::Capabilities::IMMEDIATES;
    if shader.uses_subgroups() {
        caps |= naga::valid::Capabilities::SUBGROUP;
    }
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::BALLOT)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(shader.source())));
    (module, info)
}

#[test]
fn shaders_validate() {
    for &shader in Shader::ALL {
        parse(shader);
        // A shader said to use subgroups does: without them it is invalid, so the registry's
        // flag (which the validation above reads; the ops check `Gpu::has_subgroups_of`
        // before choosing such a kernel) is not stale.
        if shader.uses_subgroups() {
            let module = naga::front::wgsl::parse_str(shader.source()).expect("parsed above");
            let plain =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::IMMEDIATES)
                    .validate(&module);
            assert!(plain.is_err(), "{} is flagged as using subgroups but validates without", shader.file_name());
        }
    }
}

/// The registries are closed both ways: every file under `shaders/` is a [`Shader`], every
/// compute entry point of a shader is a [`Kernel`], and neither list repeats itself.
#[test]
fn every_shader_file_and_entry_point_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    let mut registered: Vec<String> = Shader::ALL.iter().map(|s| s.file_name().to_string()).collect();
    registered.sort();
    let before = registered.len();
    registered.dedup();
    assert_eq!(registered.len(), before, "Shader::ALL repeats a file");
    assert_eq!(files, registered, "files under shaders/ vs Shader::ALL");

    let mut kernels: Vec<(String, &str)> =
        Kernel::ALL.iter().map(|k| (k.spec().shader.file_name().to_string(), k.spec().entry)).collect();
    kernels.sort();
    let before = kernels.len();
    kernels.dedup();
    assert_eq!(kernels.len(), before, "Kernel::ALL repeats an entry point");
    for &shader in Shader::ALL {
        let (module, _) = parse(shader);
        for ep in module.entry_points.iter().filter(|ep| ep.stage == naga::ShaderStage::Compute) {
            let key = (shader.file_name().to_string(), ep.name.as_str());
            assert!(kernels.contains(&key), "{}: entry point `{}` has no Kernel", shader.file_name(), ep.name);
        }
    }
}

#[test]
fn kernels_bind_what_their_spec_declares() {
    for &kernel in Kernel::ALL {
        let spec = kernel.spec();
        let (module, info) = parse(spec.shader);
        let index =
            module.entry_points.iter().position(|ep| ep.name == spec.entry).unwrap_or_else(|| {
                panic!("{kernel:?}: no entry point `{}` in {}", spec.entry, spec.shader.file_name())
            });
        let ep = &module.entry_points[index];
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{kernel:?} is not a compute entry point");
        let uses = info.get_entry_point(index);
        let mut bound: HashMap<u32, bool> = HashMap::new();
        for (handle, var) in module.global_variables.iter() {
            if uses[handle].is_empty() {
                continue;
            }
            if let naga::AddressSpace::Storage { access } = var.space {
                let binding = var.binding.as_ref().expect("storage globals have bindings");
                assert_eq!(binding.group, 0, "{kernel:?}: storage outside group 0");
                let writable = access.contains(naga::StorageAccess::STORE);
                assert!(
                    bound.insert(binding.binding, writable).is_none(),
                    "{kernel:?}: binding {} used twice",
                    binding.binding
                );
            }
        }
        let total = spec.inputs + spec.outputs;
        for b in 0..total {
            match bound.get(&b) {
                Some(&writable) => assert_eq!(
                    writable,
                    b >= spec.inputs,
                    "{kernel:?}: binding {b} should be {}",
                    if b >= spec.inputs { "read_write (an output)" } else { "read-only (an input)" }
                ),
                None => panic!("{kernel:?}: binding {b} declared in the spec but unused by `{}`", spec.entry),
            }
        }
        assert_eq!(bound.len() as u32, total, "{kernel:?}: uses bindings {bound:?}, spec declares {total}");
    }
}

#[test]
fn params_structs_match_host_twins() {
    let host = host_params();
    for &shader in Shader::ALL {
        let (module, _) = parse(shader);
        for (_, ty) in module.types.iter() {
            let (Some(name), naga::TypeInner::Struct { span, .. }) = (&ty.name, &ty.inner) else { continue };
            if !name.ends_with("Params") {
                continue;
            }
            let (_, _, size) = host.iter().find(|(s, n, _)| *s == shader && n == name).unwrap_or_else(|| {
                panic!("{}: struct {name} has no host twin listed in host_params()", shader.file_name())
            });
            assert_eq!(
                *span as usize,
                *size,
                "{}: {name} is {span} bytes in WGSL, {size} on the host",
                shader.file_name()
            );
            assert!(*size <= peft_wgpu::gpu::MAX_PARAMS_BYTES as usize, "{name} exceeds MAX_PARAMS_BYTES");
        }
    }
}
