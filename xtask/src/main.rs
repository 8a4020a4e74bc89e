//! Project tasks: `cargo xtask <task>`. Run `cargo xtask --help` for the list.

mod bench_table;
mod capabilities;
mod ebpf;
mod guest_cache;
mod guest_runner;
mod image;
mod kernels;
mod matrix;
mod openstack;
mod plan;
mod process;
mod report;
mod setup;
mod suite;
mod userland;
mod vng;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "veth-route project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what builds and tests need (Debian packages, bpf-linker, OpenStack and virtme-ng venvs, the matrix's kernels); idempotent.
    Setup,
    /// Build the eBPF programs (release, with BTF) that the plugin embeds.
    BuildEbpf,
    /// Build the eBPF programs and every binary of the workspace; with --release, the static node binaries.
    Build {
        /// Release mode: veth-route, tcnp-ipam and vrouter-route-controller, static, in target/x86_64-unknown-linux-gnu/release.
        #[arg(long)]
        release: bool,
    },
    /// Build the node image of deploy/Containerfile with podman (static binaries, FROM scratch).
    Image {
        /// The image's name.
        #[arg(long, default_value = image::DEFAULT_TAG)]
        tag: String,
    },
    /// The main job: a local OpenStack, namespaces as VM, vrouter and pods, wired by the plugins (needs root).
    Demo {
        /// Pods get an IPv6 address too (a routed IPv6 subnet, tcnp-ipam ipFamilies IPv4 and IPv6).
        #[arg(long)]
        dual_stack: bool,
    },
    /// Benchmarks side by side (release build); prints ratios and writes docs/benchmarks.md (needs root).
    Bench {
        /// Only the datapath section, on this kernel (`host`, `6.1`, `6.12`, a package or a .deb), in a guest.
        #[arg(long, value_name = "KERNEL")]
        kernel: Option<String>,
    },
    /// Install, build, run the whole suite, then the datapath tests on the kernel matrix (host, Debian 6.1 and 6.12 guests; needs root).
    Test {
        /// Only the datapath tests, on this kernel: `host`, `6.1`, `6.12`, a Debian package name or a .deb file. Repeatable.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// The host suite only, no kernel matrix.
        #[arg(long, conflicts_with = "kernels")]
        no_guests: bool,
        /// Extra arguments passed to `cargo test` (e.g. a test name filter); filters and arguments after `--` also reach the datapath test executables.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Inside a guest of the kernel matrix: run the plan in DIR (started by `cargo xtask test` and `bench --kernel`).
    #[command(hide = true)]
    GuestRun {
        /// The shared results directory holding the plan.
        dir: std::path::PathBuf,
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
        Task::Setup => setup::setup().and_then(|()| kernels::prepare_defaults()),
        Task::BuildEbpf => suite::build_ebpf(),
        Task::Build { release } => suite::build(release),
        Task::Image { tag } => image::image(&tag),
        Task::Demo { dual_stack } => suite::demo(dual_stack),
        Task::Bench { kernel } => suite::bench(kernel.as_deref()),
        Task::Test { kernels, no_guests, args } => suite::test(&suite::TestOptions { kernels, no_guests, args }),
        Task::GuestRun { dir } => guest_runner::run(&dir),
        Task::Openstack { action: OpenstackAction::Up } => openstack::up(),
        Task::Openstack { action: OpenstackAction::Down } => openstack::down(),
        Task::Openstack { action: OpenstackAction::Env } => openstack::env(),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
