//! The `peft-wgpu` command line (SPEC §11): a thin layer over the library that parses flags,
//! shows progress, and turns every error into one line and an exit code.

mod message;
mod numbers;
mod progress;
#[cfg(unix)]
mod signals;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use message::{bounded, one_line, printable};
use numbers::{count, seed};
use peft_wgpu::optim::OptimizerKind;
use peft_wgpu::{Error, ErrorKind, cli};
use progress::TerminalProgress;

/// Exit code for bad flags or values (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit code for bad files: paths, formats, tensors, configs, data.
const EXIT_INPUT: u8 = 3;
/// Exit code for GPU problems: no adapter, limits, out of memory, device lost.
const EXIT_DEVICE: u8 = 4;
/// Exit code for a training run that diverged.
const EXIT_TRAINING: u8 = 5;
/// Exit code for a bug in peft-wgpu.
const EXIT_INTERNAL: u8 = 70;

#[derive(Parser)]
#[command(
    name = "peft-wgpu",
    version,
    about = "Parameter-efficient fine-tuning on any GPU through wgpu",
    after_help = "Environment: PEFT_WGPU_ADAPTER=<part of the GPU adapter's name, any case> and \
                  PEFT_WGPU_BACKEND=vulkan|metal|dx12 choose the GPU (`peft-wgpu info` shows it); \
                  PEFT_WGPU_KERNELS=auto|gpu|cpu takes the kernels written for GPUs or for CPU \
                  adapters (auto, the default: by the adapter's kind); \
                  PEFT_WGPU_LORA_NAMING=transformers4|transformers5 is the module naming `train` saves LoRA \
                  keys in, for PEFT 0.17 under transformers 4 or PEFT 0.18+ under transformers 5 (default: the \
                  --init file's, else transformers5); PEFT_WGPU_WAIT_SECONDS=<seconds> fails a wait during \
                  which the GPU finishes none of its work for that long (default 600 on GPUs, none on CPU \
                  adapters; 0: none).\n\
                  Exit codes: 0 success, 2 bad flags or values, 3 bad input files (or an output that cannot be \
                  written), 4 GPU problems, \
                  5 training diverged, 70 internal error, 128 + N stopped by signal N (130: SIGINT)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Adamw,
    Sgd,
}

#[derive(Subcommand)]
enum Command {
    /// Train an adapter on a data set and save it.
    #[command(group(clap::ArgGroup::new("start").required(true).multiple(true).args(["adapter_config", "init"])))]
    Train {
        /// Model folder (config.json + model.safetensors, or shards with their index).
        #[arg(long)]
        model: PathBuf,
        /// adapter_config.json describing the adapter (optional with --init).
        #[arg(long)]
        adapter_config: Option<PathBuf>,
        /// Training data (.safetensors with pixel_values and labels).
        #[arg(long)]
        data: PathBuf,
        /// Output adapter folder.
        #[arg(long)]
        out: PathBuf,
        /// Start from this adapter folder instead of a fresh initialisation.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Optimizer steps (instead of --epochs).
        #[arg(long, allow_negative_numbers = true, conflicts_with = "epochs", value_parser = count)]
        steps: Option<usize>,
        /// Passes over the data, fractions allowed (default 1 when --steps is not given):
        /// ceil(E·N/B) steps of full batches, so when B does not divide N the last batch wraps
        /// to the start.
        #[arg(long, allow_negative_numbers = true)]
        epochs: Option<f64>,
        /// Images per step.
        #[arg(long, allow_negative_numbers = true, default_value_t = 32, value_parser = count)]
        batch_size: usize,
        /// Learning rate.
        #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
        lr: f64,
        /// Optimizer.
        #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
        optimizer: OptimizerArg,
        /// Weight decay (AdamW default 0.01, SGD default none).
        #[arg(long, allow_negative_numbers = true)]
        weight_decay: Option<f64>,
        /// Seed of the fresh adapter's initialisation, the shuffling, LoRA's dropout masks, and
        /// the `A` of an RLP adapter given to --init in merged form.
        #[arg(long, allow_negative_numbers = true, default_value_t = 0, value_parser = seed)]
        seed: u64,
        /// Step t uses rows (t·B + j) mod N instead of a seeded shuffle.
        #[arg(long)]
        no_shuffle: bool,
        /// Data to evaluate on after training.
        #[arg(long)]
        eval_data: Option<PathBuf>,
        /// Overwrite an adapter already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Accuracy and mean loss of a model, with an adapter or without, on a data set.
    Eval {
        /// Model folder (config.json + model.safetensors, or shards with their index).
        #[arg(long)]
        model: PathBuf,
        /// Adapter folder (adapter_config.json + adapter_model.safetensors); without it the
        /// model is evaluated alone.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Data (.safetensors with pixel_values and labels).
        #[arg(long)]
        data: PathBuf,
        /// Images per batch.
        #[arg(long, allow_negative_numbers = true, default_value_t = 64, value_parser = count)]
        batch_size: usize,
        /// Write the logits [N, labels] to this .safetensors file.
        #[arg(long)]
        logits_out: Option<PathBuf>,
    },
    /// Fold an adapter into the model's weights and write a model folder.
    Merge {
        /// Model folder (config.json + model.safetensors, or shards with their index).
        #[arg(long)]
        model: PathBuf,
        /// Adapter folder (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Output model folder.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite a model already in --out.
        #[arg(long)]
        force: bool,
    },
    /// The GPU adapter in use, its backend, limits and features.
    Info,
    /// Run the benchmark workloads (matmul_1024, spectral_filter_64x14x14x768,
    /// vitb_block_{lora,moppa,full}_train_step_b8, tiny_vit_train_step_b64; bench/README.md in
    /// the repository describes them). Each is checked against the f64 CPU twin, run once
    /// untimed, then timed; `ms` is the median wall time of one run with the device
    /// synchronised. PEFT_WGPU_BENCH_FILTER=<part of a name> runs only those;
    /// PEFT_WGPU_BENCH_REPEATS=<n> sets the timed runs.
    Bench {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Fine-tune a small pretrained ViT on digits 5–9 with every adapter and compare.
    Demo {
        /// Where to write the SVG of the loss curves.
        #[arg(long, default_value = "demo_loss.svg")]
        svg: PathBuf,
        /// Fine-tuning steps of every method (default 600).
        #[arg(long, allow_negative_numbers = true, value_parser = count)]
        steps: Option<usize>,
    },
}

/// `eprintln!` that never panics: a stderr that cannot be written loses the line, not the run.
macro_rules! note {
    ($($arg:tt)*) => {
        peft_wgpu::io::stderr_line(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// Prints a line on stdout; a closed or full stdout is an error naming `<stdout>`, not a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io { path: "<stdout>".into(), source }
}

/// Help and version go to stdout as clap renders them; a flag error becomes one line (clap's
/// message without its usage block) and exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    if matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion | Clap::DisplayHelpOnMissingArgumentOrSubcommand) {
        // Help that cannot be written (a full disk) is an error, as any output is; a reader
        // that closed the pipe early (`| head`) is not.
        if let Err(source) = e.print()
            && source.kind() != std::io::ErrorKind::BrokenPipe
        {
            note!("peft-wgpu: error: {}", stdout_error(source));
            return ExitCode::from(EXIT_INPUT);
        }
        return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
    }
    // clap's message and its tips ("a similar argument exists: …") come in blocks before
    // the usage block.
    let text = e.render().to_string();
    let blocks: Vec<String> = text
        .split("\n\n")
        .take_while(|b| !b.trim_start().starts_with("Usage:") && !b.trim_start().starts_with("For more information"))
        .map(|b| b.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|b| !b.is_empty())
        .collect();
    let message = if blocks.is_empty() { "bad arguments".to_string() } else { blocks.join("; ") };
    // Point at the help of the subcommand given, which lists its flags.
    let first = std::env::args_os().nth(1);
    let known = |a: &&str| Cli::command().get_subcommands().any(|c| c.get_name() == *a);
    let help = match first.as_ref().and_then(|a| a.to_str()).filter(known) {
        Some(command) => format!("peft-wgpu {command} --help"),
        None => "peft-wgpu --help".to_string(),
    };
    note!("peft-wgpu: error: {} (see {help})", bounded(&printable(message.trim_start_matches("error: "))));
    ExitCode::from(EXIT_USAGE)
}

/// Whether `e` is stdout closed by its reader (`peft-wgpu eval … | head -1`): not a failure
/// worth a message.
fn is_broken_pipe(e: &Error) -> bool {
    match e {
        Error::Io { path, source } => path.as_os_str() == "<stdout>" && source.kind() == std::io::ErrorKind::BrokenPipe,
        // The result line of a training run whose adapter is saved.
        Error::After { source, .. } => is_broken_pipe(source),
        _ => false,
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    signals::catch_file_size_signal();
    #[cfg(unix)]
    signals::clean_up_on_signals();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        note!("peft-wgpu: internal error: {message} (this is a bug; please report it)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            note!("peft-wgpu: error: {}", one_line(&e.to_string()));
            ExitCode::from(match e.kind() {
                ErrorKind::Usage => EXIT_USAGE,
                ErrorKind::Input => EXIT_INPUT,
                ErrorKind::Device => EXIT_DEVICE,
                ErrorKind::Training => EXIT_TRAINING,
                _ => EXIT_INTERNAL,
            })
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Train {
            model,
            adapter_config,
            data,
            out,
            init,
            steps,
            epochs,
            batch_size,
            lr,
            optimizer,
            weight_decay,
            seed,
            no_shuffle,
            eval_data,
            force,
        } => {
            let optimizer = match optimizer {
                OptimizerArg::Adamw => {
                    let mut kind = OptimizerKind::adamw();
                    if let OptimizerKind::AdamW { weight_decay: wd, .. } = &mut kind
                        && let Some(w) = weight_decay
                    {
                        *wd = w;
                    }
                    kind
                }
                OptimizerArg::Sgd => OptimizerKind::Sgd { weight_decay },
            };
            let args = cli::TrainArgs {
                model,
                adapter_config,
                data,
                out,
                init,
                steps,
                epochs,
                batch_size,
                lr,
                optimizer,
                seed,
                shuffle: !no_shuffle,
                eval_data,
                force,
            };
            // The progress prints the `trained …` line once the adapter is saved.
            let outcome = cli::train(&args, &mut TerminalProgress::new())?;
            if let Some(e) = outcome.eval {
                // `eval`'s two lines, each marked as the --eval-data's.
                out!("eval accuracy: {:.4} ({} images)", e.accuracy, e.images);
                out!("eval mean loss: {:.6}", e.mean_loss);
            }
            Ok(())
        }
        Command::Eval { model, adapter, data, batch_size, logits_out } => {
            let mut progress = TerminalProgress::new();
            let report =
                cli::eval(&model, adapter.as_deref(), &data, batch_size, logits_out.as_deref(), &mut progress)?;
            out!("accuracy: {:.4} ({} images)", report.accuracy, report.images);
            out!("mean loss: {:.6}", report.mean_loss);
            Ok(())
        }
        Command::Merge { model, adapter, out, force } => {
            let prompts = cli::merge(&model, &adapter, &out, force)?;
            out!("merged model written to {}", out.display());
            if prompts > 0 {
                note!("{}", cli::prompts_note(prompts));
            }
            Ok(())
        }
        Command::Info => info(),
        Command::Bench { json } => peft_wgpu::bench::run_cli(json),
        Command::Demo { svg, steps } => {
            let defaults = peft_wgpu::demo::DemoOptions::default();
            let options =
                // Progress lines on a pipe or in a log too (the bars only on a terminal).
                peft_wgpu::demo::DemoOptions {
                    svg: Some(svg),
                    steps: steps.unwrap_or(defaults.steps),
                    progress: true,
                    ..defaults
                };
            write!(std::io::stdout().lock(), "{}", peft_wgpu::demo::run(&options)?).map_err(stdout_error)?;
            Ok(())
        }
    }
}

fn info() -> Result<(), Error> {
    let gpu = peft_wgpu::Gpu::new()?;
    let i = gpu.adapter_info();
    let l = gpu.limits();
    out!("GPU adapter: {} ({:?})", i.name, i.device_type);
    out!("backend:     {:?}", i.backend);
    out!("driver:      {} {}", i.driver, i.driver_info);
    out!("kernels:     {}", if gpu.cpu_kernels() { "for CPU adapters" } else { "for GPUs" });
    if gpu.features().contains(wgpu::Features::SUBGROUP) {
        out!("subgroups:   {} to {} lanes", i.subgroup_min_size, i.subgroup_max_size);
    }
    out!("limits:");
    let limits = [
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ("max_buffer_size", l.max_buffer_size),
        ("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size.into()),
        ("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup.into()),
        ("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension.into()),
        ("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage.into()),
        ("max_immediate_size", l.max_immediate_size.into()),
    ];
    for (name, value) in limits {
        out!("  {name:<38} {value}");
    }
    let names: Vec<&str> = gpu.features().iter_names().map(|(name, _)| name).collect();
    out!("features: {}", if names.is_empty() { "none beyond WebGPU's".to_string() } else { names.join(", ") });
    Ok(())
}
