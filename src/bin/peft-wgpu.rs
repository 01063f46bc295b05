//! The `peft-wgpu` command line.

fn main() {
    std::process::exit(0);
}
