//! The cache of shader modules and compute pipelines, each built once on first use with an
//! explicit layout that follows the binding convention of [`super::kernels`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Kernel, MAX_PARAMS_BYTES, Shader, catch_errors, device_error, lock};
use crate::error::Result;

/// A built pipeline and the layout its bind groups use.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind_layout: wgpu::BindGroupLayout,
}

/// Shader modules and pipelines, each built once on first use.
pub(crate) struct Registry {
    modules: Mutex<HashMap<Shader, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry { modules: Mutex::default(), pipelines: Mutex::default() }
    }

    /// The pipeline of `kernel`, built on first use.
    pub(crate) fn pipeline(&self, device: &wgpu::Device, kernel: Kernel) -> Result<Arc<Pipeline>> {
        if let Some(p) = lock(&self.pipelines).get(&kernel) {
            return Ok(Arc::clone(p));
        }
        let spec = kernel.spec();
        let module = self.module(device, spec.shader)?;
        let label = format!("peft-wgpu::{}", spec.entry);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..spec.inputs + spec.outputs)
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: binding < spec.inputs },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let ((pipeline, bind_layout), errors) = catch_errors(device, || {
            let bind_layout = device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&bind_layout)],
                immediate_size: MAX_PARAMS_BYTES,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: Default::default(),
                cache: None,
            });
            (pipeline, bind_layout)
        });
        if let Some(e) = errors.into_iter().next() {
            return Err(device_error(e, &format!("building kernel {}", spec.entry)));
        }
        let built = Arc::new(Pipeline { pipeline, bind_layout });
        lock(&self.pipelines).insert(kernel, Arc::clone(&built));
        Ok(built)
    }

    fn module(&self, device: &wgpu::Device, shader: Shader) -> Result<Arc<wgpu::ShaderModule>> {
        if let Some(m) = lock(&self.modules).get(&shader) {
            return Ok(Arc::clone(m));
        }
        let (module, errors) = catch_errors(device, || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(shader.source().into()),
            })
        });
        if let Some(e) = errors.into_iter().next() {
            return Err(device_error(e, &format!("compiling {}", shader.file_name())));
        }
        let module = Arc::new(module);
        lock(&self.modules).insert(shader, Arc::clone(&module));
        Ok(module)
    }
}
