//! Mistyped commands through the binary: one line with exit code 2 that keeps clap's tip
//! (the flag or subcommand meant), and points at the help that lists the right flags.

mod cli_support;

use cli_support::{USAGE, check_failure, fails, run_env};

#[test]
fn a_mistyped_flag_or_subcommand_gets_clap_s_tip_and_the_subcommand_s_help() {
    // The two adapter flags mixed up, the likeliest first mistake.
    let line = fails(&["train", "--adapter", "a", "--data", "d"], USAGE, &["'--adapter'", "'--adapter-config'"]);
    assert!(line.contains("see peft-wgpu train --help"), "{line}");
    let line = fails(&["eval", "--adapter-config", "c.json"], USAGE, &["'--adapter-config'", "'--adapter'"]);
    assert!(line.contains("see peft-wgpu eval --help"), "{line}");
    let line = fails(&["trian"], USAGE, &["'trian'", "'train'"]);
    assert!(line.contains("see peft-wgpu --help"), "{line}");
    fails(&["train", "--steps", "1", "--epochs", "2"], USAGE, &["--steps", "--epochs"]);
}

/// Unix only: arguments there are any bytes (Windows gives UTF-16, checked by the OS).
#[cfg(unix)]
#[test]
fn an_argument_that_is_not_unicode_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let bytes = std::ffi::OsStr::from_bytes(b"tr\xffin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peft-wgpu"))
        .arg(bytes)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs");
    check_failure(&out, USAGE, &["see peft-wgpu --help"], true);
}

#[test]
fn a_bench_filter_that_matches_no_workload_is_refused() {
    let out = run_env(&["bench"], &[("PEFT_WGPU_BENCH_FILTER", "no_such_workload")]);
    check_failure(&out, USAGE, &["PEFT_WGPU_BENCH_FILTER", "no_such_workload", "matmul_1024"], true);
}
