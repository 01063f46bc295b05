//! A bench for variants of the 14 × 14 MoPPA filter kernel (`shaders/spectral_tile14.wgsl`):
//! each `.wgsl` file of a folder, written with the production kernel's bindings, immediates
//! and entry point (`scripts/gen_spectral_tile14.py --lab DIR` writes a set), is built on
//! its own, checked against the library's unfused filter (files named `diag_*` are timed
//! only: they measure a part of the work) and timed by GPU timestamps around each dispatch.
//!
//!     cargo run --release --example spectral_lab -- DIR [BATCH ...]
//!
//! `LAB_FILTER=<text>[,<text>…]` keeps the files whose name contains one of them.
//! A file's first line `// lab: tc=N images=G shared=BYTES` gives its channels and images
//! per workgroup, so the grid is `[768 / N, ⌈BATCH / G⌉]`, and its workgroup memory, checked
//! against the device's limit before the kernel is built. Reports the median device time of single dispatches and the mean of a
//! stream of dispatches in one pass, with GB/s as 2·bytes of `x` / time (SPEC §13's measure).

use std::time::Instant;

use anyhow::{Context, bail, ensure};
use peft_wgpu::ops::dct::GridPlan;
use peft_wgpu::ops::spectral::{self, FilterPath};
use peft_wgpu::ops::spectral_tile::TileParams;
use peft_wgpu::rng::Rng;
use peft_wgpu::{Gpu, Tensor};
use wgpu::util::DeviceExt;

const CHANNELS: usize = 768;
const CELLS: usize = 196;
const RUNS: u32 = 21;
const STREAM: u32 = 20;

struct Problem {
    batch: usize,
    x: wgpu::Buffer,
    r: wgpu::Buffer,
    y: wgpu::Buffer,
    expected: Vec<f32>,
}

fn storage(device: &wgpu::Device, data: &[f32]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("lab"),
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

fn problem(gpu: &Gpu, batch: usize) -> anyhow::Result<Problem> {
    let mut rng = Rng::new(7);
    let xs = rng.normal_vec(batch * CELLS * CHANNELS, 0.0, 1.0);
    let rs = rng.uniform_vec(CELLS * CHANNELS, 0.0, 1.0);
    let plan = GridPlan::new(gpu, 14, 14)?;
    let x = Tensor::from_slice(gpu, &xs, &[batch, 14, 14, CHANNELS])?;
    let r = Tensor::from_slice(gpu, &rs, &[14, 14, CHANNELS])?;
    let expected = gpu.read(&spectral::moppa_filter_with(gpu, &plan, &x, &r, FilterPath::Unfused)?)?;
    let device = gpu.device();
    Ok(Problem {
        batch,
        x: storage(device, &xs),
        r: storage(device, &rs),
        y: storage(device, &vec![f32::NAN; xs.len()]),
        expected,
    })
}

fn read(gpu: &Gpu, buffer: &wgpu::Buffer) -> anyhow::Result<Vec<u8>> {
    let device = gpu.device();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("lab staging"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    gpu.queue().submit([encoder.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("mapping the lab's staging buffer"));
    device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None })?;
    let bytes = staging.slice(..).get_mapped_range().map_err(|e| anyhow::anyhow!("{e:?}"))?.to_vec();
    Ok(bytes)
}

struct Variant {
    name: String,
    tc: usize,
    images: usize,
    pipeline: wgpu::ComputePipeline,
}

fn build(gpu: &Gpu, path: &std::path::Path) -> anyhow::Result<Variant> {
    let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let first = source.lines().next().and_then(|l| l.strip_prefix("// lab: tc="));
    let first = first.with_context(|| format!("{}: the first line is not `// lab: …`", path.display()))?;
    let fields: Vec<&str> = first.split_whitespace().collect();
    let [tc, images, shared] = fields[..] else {
        bail!("{}: the first line is not `// lab: tc=N images=G shared=BYTES`", path.display())
    };
    let field = |text: &str, key: &str| -> anyhow::Result<usize> {
        let value = text.strip_prefix(key).with_context(|| format!("{}: no {key} in {first}", path.display()))?;
        Ok(value.parse()?)
    };
    let (tc, images, shared) = (field(tc, "")?, field(images, "images=")?, field(shared, "shared=")?);
    let limit = gpu.limits().max_compute_workgroup_storage_size as usize;
    // A driver given a kernel past its workgroup memory may hang rather than refuse it.
    ensure!(shared <= limit, "{}: {shared} bytes of workgroup memory, the device has {limit}", path.display());
    ensure!(tc > 0 && CHANNELS.is_multiple_of(tc), "{}: tc={tc} does not divide {CHANNELS}", path.display());
    let device = gpu.device();
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("spectral_tile14"),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        bail!("{}: {e}", path.display());
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Variant { name, tc, images, pipeline })
}

/// Records `count` dispatches of `v` on `p` in one pass, between timestamps `at` and `at + 1`.
fn dispatches(
    gpu: &Gpu,
    v: &Variant,
    p: &Problem,
    encoder: &mut wgpu::CommandEncoder,
    q: &wgpu::QuerySet,
    at: u32,
    count: u32,
) {
    let params =
        TileParams { batch: p.batch as u32, tokens: CELLS as u32, channels: CHANNELS as u32, ..Default::default() };
    let group = gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &v.pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: p.x.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: p.r.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: p.y.as_entire_binding() },
        ],
    });
    let writes = wgpu::ComputePassTimestampWrites {
        query_set: q,
        beginning_of_pass_write_index: Some(at),
        end_of_pass_write_index: Some(at + 1),
    };
    let mut pass =
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
    pass.set_pipeline(&v.pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.set_immediates(0, bytemuck::bytes_of(&params));
    for _ in 0..count {
        pass.dispatch_workgroups((CHANNELS / v.tc) as u32, p.batch.div_ceil(v.images) as u32, 1);
    }
}

/// Device milliseconds: the median of `RUNS` single dispatches and the mean over a stream.
fn time(gpu: &Gpu, v: &Variant, p: &Problem) -> anyhow::Result<(f64, f64)> {
    let device = gpu.device();
    let slots = 2 * (RUNS + 1);
    let q = device.create_query_set(&wgpu::QuerySetDescriptor {
        label: None,
        ty: wgpu::QueryType::Timestamp,
        count: slots,
    });
    let resolved = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(slots) * wgpu::QUERY_SIZE as u64,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    // Warm-up.
    let mut encoder = device.create_command_encoder(&Default::default());
    dispatches(gpu, v, p, &mut encoder, &q, 0, 3);
    gpu.queue().submit([encoder.finish()]);
    let mut encoder = device.create_command_encoder(&Default::default());
    for i in 0..RUNS {
        dispatches(gpu, v, p, &mut encoder, &q, 2 * i, 1);
    }
    dispatches(gpu, v, p, &mut encoder, &q, 2 * RUNS, STREAM);
    encoder.resolve_query_set(&q, 0..slots, &resolved, 0);
    gpu.queue().submit([encoder.finish()]);
    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&read(gpu, &resolved)?);
    let ms = |i: usize| {
        ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * f64::from(gpu.queue().get_timestamp_period()) * 1e-6
    };
    let mut singles: Vec<f64> = (0..RUNS as usize).map(ms).collect();
    singles.sort_by(f64::total_cmp);
    Ok((singles[singles.len() / 2], ms(RUNS as usize) / f64::from(STREAM)))
}

fn check(gpu: &Gpu, v: &Variant, p: &Problem) -> anyhow::Result<f32> {
    let device = gpu.device();
    // NaN everywhere first, so an element the kernel leaves unwritten fails.
    gpu.queue().write_buffer(&p.y, 0, bytemuck::cast_slice(&vec![f32::NAN; p.expected.len()]));
    let mut encoder = device.create_command_encoder(&Default::default());
    let q =
        device.create_query_set(&wgpu::QuerySetDescriptor { label: None, ty: wgpu::QueryType::Timestamp, count: 2 });
    dispatches(gpu, v, p, &mut encoder, &q, 0, 1);
    gpu.queue().submit([encoder.finish()]);
    let y: Vec<f32> = bytemuck::pod_collect_to_vec(&read(gpu, &p.y)?);
    let scale = p.expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // A NaN (a value never written) counts as an infinite error.
    let worst = y.iter().zip(&p.expected).map(|(a, b)| if a.is_nan() { f32::INFINITY } else { (a - b).abs() });
    let worst = worst.fold(0.0f32, f32::max);
    Ok(worst / scale)
}

#[expect(clippy::print_stdout, reason = "an example that reports timings")]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: spectral_lab DIR [BATCH ...]")?;
    let batches: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let batches = if batches.is_empty() { vec![64] } else { batches };
    let gpu = Gpu::new()?;
    ensure!(gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY), "the adapter has no timestamp queries");
    let info = gpu.adapter_info();
    println!("adapter: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    // LAB_FILTER=<text>,…: only the variants whose file name contains one of them.
    if let Ok(only) = std::env::var("LAB_FILTER") {
        files.retain(|f| f.file_name().is_some_and(|n| only.split(',').any(|o| n.to_string_lossy().contains(o))));
    }
    let start = Instant::now();
    let variants = files.iter().map(|f| build(&gpu, f)).collect::<anyhow::Result<Vec<_>>>()?;
    println!("built {} variants in {:.1} s", variants.len(), start.elapsed().as_secs_f64());
    for batch in batches {
        let p = problem(&gpu, batch)?;
        let bytes = (2 * batch * CELLS * CHANNELS * 4) as f64;
        println!("batch {batch} ({:.1} MB moved)", bytes / 1e6);
        println!(
            "{:>20} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "variant", "error", "single µs", "GB/s", "stream µs", "GB/s"
        );
        for v in &variants {
            let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
            let error = check(&gpu, v, &p)?;
            if let Some(e) = pollster::block_on(scope.pop()) {
                bail!("{}: {e}", v.name);
            }
            let verdict = if v.name.starts_with("diag_") { "(diag)".to_string() } else { format!("{error:.1e}") };
            ensure!(v.name.starts_with("diag_") || error <= 1e-5, "{}: relative error {error}", v.name);
            let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
            let (single, stream) = time(&gpu, v, &p)?;
            if let Some(e) = pollster::block_on(scope.pop()) {
                bail!("{}: {e}", v.name);
            }
            println!(
                "{:>20} {verdict:>10} {:>10.1} {:>10.0} {:>10.1} {:>10.0}",
                v.name,
                single * 1e3,
                bytes / single / 1e6,
                stream * 1e3,
                bytes / stream / 1e6
            );
        }
    }
    Ok(())
}
