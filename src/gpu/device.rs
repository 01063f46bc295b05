//! Choosing an adapter and opening the device, or adopting one an application already has.

use std::sync::{Arc, Mutex};

use super::{Gpu, Inner, MAX_PARAMS_BYTES, lock, pipelines, pool, recorder};
use crate::error::{Error, Result};

/// How to pick the adapter. [`GpuOptions::from_env`] reads `PEFT_WGPU_ADAPTER` (a substring of
/// the adapter name, case-insensitive) and `PEFT_WGPU_BACKEND` (`vulkan`, `metal`, `dx12`).
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Keep only adapters whose name contains this, case-insensitive.
    pub adapter_name: Option<String>,
    /// Backends to consider.
    pub backends: wgpu::Backends,
    /// Preference between integrated and discrete GPUs when several match.
    pub power: wgpu::PowerPreference,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter_name: None,
            backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
            power: wgpu::PowerPreference::HighPerformance,
        }
    }
}

impl GpuOptions {
    /// Defaults, overridden by `PEFT_WGPU_ADAPTER` and `PEFT_WGPU_BACKEND` when set.
    pub fn from_env() -> Result<Self> {
        let mut options = GpuOptions::default();
        if let Some(name) = crate::io::env_var("PEFT_WGPU_ADAPTER")?
            && !name.is_empty()
        {
            options.adapter_name = Some(name);
        }
        if let Some(backend) = crate::io::env_var("PEFT_WGPU_BACKEND")?
            && !backend.is_empty()
        {
            options.backends = match backend.to_ascii_lowercase().as_str() {
                "vulkan" | "vk" => wgpu::Backends::VULKAN,
                "metal" | "mtl" => wgpu::Backends::METAL,
                "dx12" | "d3d12" => wgpu::Backends::DX12,
                other => {
                    return Err(Error::invalid(
                        "PEFT_WGPU_BACKEND",
                        format!("`{other}` is not one of vulkan, metal, dx12"),
                    ));
                }
            };
        }
        Ok(options)
    }
}

/// Device memory held by tensors of one [`Gpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in tensors that are alive now.
    pub live_bytes: u64,
    /// Highest `live_bytes` since the device opened or [`Gpu::reset_peak_memory`].
    pub peak_bytes: u64,
    /// Bytes held by the pool for reuse.
    pub pooled_bytes: u64,
}

const NO_ADAPTER_HINT: &str = "install a Vulkan, Metal or DX12 driver; on headless Linux: \
     apt-get install -y mesa-vulkan-drivers libvulkan1 (lavapipe); where one is installed, it \
     could not start (a memory or address-space limit, `ulimit -v`, too tight for it, say)";

impl Gpu {
    /// Opens the adapter chosen by [`GpuOptions::from_env`].
    pub fn new() -> Result<Gpu> {
        Gpu::with_options(&GpuOptions::from_env()?)
    }

    /// Opens an adapter chosen by `options` among its backends that the kernels are written
    /// for (Vulkan, Metal, DX12; others, such as GL, are left out); none of them is an error.
    pub fn with_options(options: &GpuOptions) -> Result<Gpu> {
        let backends = options.backends & (wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12);
        if backends.is_empty() {
            return Err(Error::invalid(
                "GpuOptions::backends",
                format!("{:?} names none of Vulkan, Metal and DX12", options.backends),
            ));
        }
        let options = &GpuOptions { backends, ..options.clone() };
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pick_adapter(&instance, options)?;
        let info = adapter.get_info();
        let limits = Gpu::required_limits(&adapter.limits()).map_err(|(limit, needed, available)| Error::Limit {
            adapter: info.name.clone(),
            limit,
            needed,
            available,
        })?;
        let wanted = Gpu::required_features() | (adapter.features() & Gpu::optional_features());
        if !adapter.features().contains(Gpu::required_features()) {
            return Err(Error::Device {
                adapter: info.name,
                message: "the adapter lacks immediates (push constants), which the kernels use".into(),
            });
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("peft-wgpu"),
            required_features: wanted,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| Error::Device { adapter: info.name.clone(), message: e.to_string() })?;
        Gpu::adopt(device, queue, info, true)
    }

    /// Adopts a device an application already uses (for rendering, say), so training runs on
    /// the same device. It must have been opened with [`Gpu::required_features`] and limits at
    /// least [`Gpu::required_limits`], and `queue` must be the one opened with it (wgpu
    /// cannot tell a queue's device; another device's queue makes the first submission panic
    /// inside wgpu-core). The adapter's description, which chooses the kernels, is the
    /// device's own ([`wgpu::Device::adapter_info`]).
    ///
    /// The device's uncaptured-error handler and device-lost callback stay the
    /// application's: this crate catches the errors of its own work in error scopes (pushed
    /// and popped around each of its calls, on the calling thread) and reports them from its
    /// own calls, so an error the application causes never surfaces here, nor one of ours
    /// there. A lost device therefore reaches this crate as the errors of the work it
    /// refused ([`crate::ErrorKind::Device`]). wgpu runs ready callbacks, the application's
    /// too, inside this crate's submits and polls; they may use the `Gpu`.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Gpu> {
        let info = device.adapter_info();
        Gpu::adopt(device, queue, info, false)
    }

    /// Wraps `device`; `owned` when this crate opened it, and so may also install the
    /// handlers that catch what no error scope does (a lost device, errors raised later by
    /// the driver).
    fn adopt(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo, owned: bool) -> Result<Gpu> {
        recorder::submit_every_from_env()?;
        // By default only a GPU this crate opened has a limit (see `Gpu::set_wait_limit`).
        let wait_limit = recorder::wait_limit_from_env()?
            .unwrap_or((owned && info.device_type != wgpu::DeviceType::Cpu).then_some(recorder::DEFAULT_WAIT_LIMIT));
        let cpu_kernels = kernels_from_env()?.unwrap_or(info.device_type == wgpu::DeviceType::Cpu);
        if !device.features().contains(Gpu::required_features()) {
            return Err(Error::Device {
                adapter: info.name,
                message: "the device was opened without Features::IMMEDIATES; request Gpu::required_features()".into(),
            });
        }
        // The same minimums `Gpu::new` asks an adapter for, so a device opened with lower
        // limits is refused here by name rather than failing later in a kernel.
        let limits = device.limits();
        if let Err((limit, needed, available)) = Gpu::required_limits(&limits) {
            return Err(Error::Limit { adapter: info.name, limit, needed, available });
        }
        let errors = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        if owned {
            let sink = Arc::clone(&errors);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                lock(&sink).push(super::device_error(e, "GPU work"));
            }));
            let lost_sink = Arc::clone(&lost);
            device.set_device_lost_callback(move |reason, message| {
                // Destroyed follows a `Gpu::device().destroy()` from the application (wgpu
                // calls it at the next poll or submission once the queue is empty).
                let message = match reason {
                    wgpu::DeviceLostReason::Destroyed => {
                        "the device was destroyed (wgpu::Device::destroy); make a new Gpu".to_string()
                    }
                    _ => message,
                };
                *lock(&lost_sink) = Some(message);
            });
        }
        let kernels = pipelines::Registry::new();
        Ok(Gpu {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                kernels,
                pool: Arc::new(Mutex::new(pool::Pool::default())),
                recorder: Mutex::new(recorder::Recorder::default()),
                submit_turn: parking_lot::ReentrantMutex::new(()),
                errors,
                lost,
                poison: false.into(),
                profiling: false.into(),
                wait_limit: Mutex::new(wait_limit),
                finished: Arc::default(),
                abandoned: false.into(),
                cpu_kernels,
            }),
        })
    }

    /// Features the kernels cannot run without.
    pub fn required_features() -> wgpu::Features {
        wgpu::Features::IMMEDIATES
    }

    /// Features used when the adapter has them: timestamps for benchmarks, subgroups for the
    /// CPU adapters' matrix product and attention (`matmul_rows.wgsl`, `attention.wgsl`).
    pub fn optional_features() -> wgpu::Features {
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP
    }

    /// The limits to request from an adapter offering `adapter`: WebGPU's defaults raised to
    /// what the adapter can give for buffer sizes and workgroup memory. Errs with
    /// `(limit, needed, available)` when the adapter is below what the kernels need.
    pub fn required_limits(adapter: &wgpu::Limits) -> Result<wgpu::Limits, (&'static str, u64, u64)> {
        let base = wgpu::Limits::default();
        let checks: [(&'static str, u64, u64); 6] = [
            ("max_immediate_size", MAX_PARAMS_BYTES.into(), adapter.max_immediate_size.into()),
            ("max_storage_buffers_per_shader_stage", 8, adapter.max_storage_buffers_per_shader_stage.into()),
            // A kernel binds each of its (up to 8) buffers at its own index.
            ("max_bindings_per_bind_group", 8, adapter.max_bindings_per_bind_group.into()),
            ("max_compute_workgroup_storage_size", 16384, adapter.max_compute_workgroup_storage_size.into()),
            ("max_compute_invocations_per_workgroup", 256, adapter.max_compute_invocations_per_workgroup.into()),
            ("max_compute_workgroup_size_x", 256, adapter.max_compute_workgroup_size_x.into()),
        ];
        if let Some(&bad) = checks.iter().find(|(_, needed, available)| available < needed) {
            return Err(bad);
        }
        Ok(wgpu::Limits {
            max_immediate_size: MAX_PARAMS_BYTES,
            max_storage_buffers_per_shader_stage: adapter.max_storage_buffers_per_shader_stage.min(16),
            max_bindings_per_bind_group: adapter.max_bindings_per_bind_group.min(base.max_bindings_per_bind_group),
            max_storage_buffer_binding_size: adapter.max_storage_buffer_binding_size,
            max_buffer_size: adapter.max_buffer_size,
            max_compute_workgroup_storage_size: adapter.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: adapter.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: adapter.max_compute_workgroup_size_x,
            max_compute_workgroup_size_y: adapter.max_compute_workgroup_size_y,
            max_compute_workgroups_per_dimension: adapter.max_compute_workgroups_per_dimension,
            ..base
        })
    }
}

fn pick_adapter(instance: &wgpu::Instance, options: &GpuOptions) -> Result<wgpu::Adapter> {
    let filter = options.adapter_name.as_ref().map(|s| s.to_lowercase());
    let all = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    let restricted = options.backends != all;
    let describe = || {
        let mut d = match &options.adapter_name {
            Some(name) => format!(" matching PEFT_WGPU_ADAPTER=\"{name}\""),
            None => String::new(),
        };
        if restricted {
            let names: Vec<&str> =
                [(wgpu::Backends::VULKAN, "Vulkan"), (wgpu::Backends::METAL, "Metal"), (wgpu::Backends::DX12, "DX12")]
                    .into_iter()
                    .filter(|(b, _)| options.backends.contains(*b))
                    .map(|(_, n)| n)
                    .collect();
            d.push_str(&format!(" on {} (PEFT_WGPU_BACKEND)", names.join(", ")));
        }
        d
    };
    let mut adapters: Vec<wgpu::Adapter> = pollster::block_on(instance.enumerate_adapters(options.backends))
        .into_iter()
        .filter(|a| filter.as_ref().is_none_or(|f| a.get_info().name.to_lowercase().contains(f)))
        .collect();
    if adapters.is_empty() {
        let hint = if filter.is_some() || restricted {
            // Every backend's adapters, from an instance not limited to the chosen ones.
            let everything = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: all,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let names: Vec<String> = pollster::block_on(everything.enumerate_adapters(all))
                .iter()
                .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend))
                .collect();
            format!("adapters present: [{}]", names.join(", "))
        } else {
            NO_ADAPTER_HINT.to_string()
        };
        return Err(Error::NoAdapter { filter: describe(), hint });
    }
    // Rank by device type according to the power preference; keep enumeration order on ties.
    let rank = |a: &wgpu::Adapter| {
        use wgpu::DeviceType as T;
        let t = a.get_info().device_type;
        match (options.power, t) {
            (wgpu::PowerPreference::LowPower, T::IntegratedGpu) => 0,
            (wgpu::PowerPreference::LowPower, T::DiscreteGpu) => 1,
            (_, T::DiscreteGpu) => 0,
            (_, T::IntegratedGpu) => 1,
            (_, T::VirtualGpu) => 2,
            (_, T::Other) => 3,
            (_, T::Cpu) => 4,
        }
    };
    adapters.sort_by_key(rank);
    Ok(adapters.swap_remove(0))
}

/// `PEFT_WGPU_KERNELS`, read once: `Some(true)` for `cpu`, `Some(false)` for `gpu`, `None`
/// when unset, empty or `auto`; an error naming the variable for any other value.
fn kernels_from_env() -> Result<Option<bool>> {
    static CPU: std::sync::OnceLock<std::result::Result<Option<bool>, String>> = std::sync::OnceLock::new();
    crate::ops::env_choice(&CPU, "PEFT_WGPU_KERNELS", &[("cpu", true), ("gpu", false)])
}
