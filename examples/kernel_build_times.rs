//! How long the driver takes to build each kernel's pipeline (shader compilation), one line
//! per kernel: `cargo run --release --example kernel_build_times [NAME ...]`, where NAME is a
//! kernel as `Kernel`'s Debug prints it (`MoppaRows`); without names, every kernel in turn.
//! `--list` prints the names only, so a script can time each kernel in a process of its own
//! (drivers may compile one shader at a time per process).

use std::time::Instant;

use peft_wgpu::{Gpu, Kernel};

#[expect(clippy::print_stdout, reason = "an example that reports timings")]
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for kernel in Kernel::ALL {
            println!("{kernel:?}");
        }
        return Ok(());
    }
    let chosen: Vec<Kernel> = if args.is_empty() {
        Kernel::ALL.to_vec()
    } else {
        args.iter()
            .map(|name| {
                Kernel::ALL
                    .iter()
                    .copied()
                    .find(|k| format!("{k:?}") == *name)
                    .ok_or_else(|| anyhow::anyhow!("no kernel is named {name:?} (--list names them)"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let start = Instant::now();
    let gpu = Gpu::new()?;
    println!("device: {} ({:.0} ms to open)", gpu.adapter_info().name, start.elapsed().as_secs_f64() * 1e3);
    for kernel in chosen {
        let start = Instant::now();
        let outcome = gpu.prepare(&[kernel]);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match outcome {
            Ok(()) => println!("{kernel:?}\t{ms:.1} ms"),
            Err(e) => println!("{kernel:?}\t{ms:.1} ms\tnot built: {e}"),
        }
    }
    Ok(())
}
