//! Project tasks: `cargo xtask <task>`. Run `cargo xtask --help` for the list.

mod ebpf;
mod openstack;
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
    /// The main job: a local OpenStack, namespaces as VM, vrouter and pods, wired by the plugins (needs root).
    Demo,
    /// Benchmarks side by side (release build); prints ratios and writes docs/benchmarks.md (needs root).
    Bench,
    /// Install, build, and run the whole test suite (needs root).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A local Keystone + Neutron for trying veth-route (`up` prints `export` lines).
    Openstack {
        #[command(subcommand)]
        action: OpenstackAction,
    },
}

#[derive(Subcommand)]
enum OpenstackAction {
    /// Start it (or report the running one) and print the environment to use it.
    Up,
    /// Stop it and remove its run directory.
    Down,
    /// Print the environment of the running one.
    Env,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => suite::build_ebpf(),
        Task::Build { release } => suite::build(release),
        Task::Demo => suite::demo(),
        Task::Bench => suite::bench(),
        Task::Test { args } => suite::test(&args),
        Task::Openstack { action: OpenstackAction::Up } => openstack::up(),
        Task::Openstack { action: OpenstackAction::Down } => openstack::down(),
        Task::Openstack { action: OpenstackAction::Env } => openstack::env(),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
