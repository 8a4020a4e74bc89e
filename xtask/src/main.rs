//! Project tasks: `cargo xtask <task>`. Run `cargo xtask --help` for the list.

mod process;
mod setup;
mod suite;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "veth-route project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what builds and tests need (Debian packages, bpf-linker, OpenStack venv); idempotent.
    Setup,
    /// Build the eBPF programs (release, with BTF) that the plugin embeds.
    BuildEbpf,
    /// Build the eBPF programs and every binary of the workspace.
    Build {
        /// Build the binaries in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Install, build, and run the whole test suite (needs root).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => suite::build_ebpf(),
        Task::Build { release } => suite::build(release),
        Task::Test { args } => suite::test(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
