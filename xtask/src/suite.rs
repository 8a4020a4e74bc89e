//! Building the workspace and running the test suite.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::bench_table;
use crate::kernels::{self, KernelChoice};
use crate::matrix;
use crate::plan::{Job, Plan};
use crate::process::{cargo, run, workspace_root, Result};

/// Build the kernel programs the plugin embeds.
pub fn build_ebpf() -> Result<()> {
    let object = crate::ebpf::build_ebpf(true)?;
    eprintln!("eBPF object: {}", object.display());
    Ok(())
}

/// The binaries that go onto nodes, built static by `build --release`.
pub const NODE_BINARIES: &[&str] = &["veth-route", "tcnp-ipam", "vrouter-route-controller"];

/// The target the node binaries are built for. Naming it explicitly, although it is the
/// host's, puts the artefacts in `target/<triple>/` and keeps [`STATIC_RUSTFLAGS`] off
/// build scripts and proc-macros (built for the host), which cannot be static. (A
/// `[target.<triple>] rustflags` in .cargo/config.toml would not do: for the host's triple
/// cargo applies it to plain `cargo build` and `cargo test` too.)
const NODE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// glibc linked in statically: the binaries run on any node's libc (Debian 11, RHEL 8 ...).
/// reqwest resolves names in-process (its hickory-dns feature, on by default once built
/// in), so glibc's getaddrinfo, which in a static binary dlopens the node's own NSS
/// modules, is not what resolves Keystone's and Neutron's names. It is still linked into
/// tcnp-ipam and the controller (reqwest keeps its getaddrinfo resolver as the
/// alternative, and std's lookup_host), and the link still warns about it.
const STATIC_RUSTFLAGS: &str = "target.x86_64-unknown-linux-gnu.rustflags=[\"-C\", \"target-feature=+crt-static\"]";

/// Where the static node binaries land.
pub fn static_dir() -> PathBuf {
    workspace_root().join("target").join(NODE_TARGET).join("release")
}

/// Build the eBPF object, then: debug, every binary of the workspace (tests exec the
/// plugins as a runtime would); release, the static node binaries in [`static_dir`].
pub fn build(release: bool) -> Result<()> {
    build_ebpf()?;
    if !release {
        return run(cargo().args(["build", "--workspace", "--bins"]));
    }
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", NODE_TARGET, "--config", STATIC_RUSTFLAGS]);
    for b in NODE_BINARIES {
        cmd.args(["-p", b, "--bin", b]);
    }
    run(&mut cmd)?;
    eprintln!("static binaries: {}", static_dir().display());
    Ok(())
}

/// The eBPF object, then in debug every binary and every test executable of the workspace,
/// in one build: the host suite's `cargo test` and the kernel matrix's lookup of the test
/// executables then build nothing, and no test executable is relinked while a guest runs it.
fn build_bins_and_tests() -> Result<()> {
    build_ebpf()?;
    run(cargo().args(["build", "--workspace", "--bins", "--tests"]))
}

/// What `cargo xtask test` was asked for.
pub struct TestOptions {
    /// `--kernel`: run only the datapath tests, on these kernels.
    pub kernels: Vec<String>,
    /// `--no-guests`: the host suite only.
    pub no_guests: bool,
    /// Extra arguments for `cargo test` (filters reach the guests too, see
    /// [`matrix::executable_args`]).
    pub args: Vec<String>,
}

/// Everything the README's test command promises: install, build, the whole suite on the
/// host, then the datapath tests on the kernel matrix (the host kernel again, so its
/// not-applicable lines are collected too, and Debian 12's 6.1 and 6.12 in guests). One
/// local OpenStack serves every test binary of the host suite (each would otherwise start
/// its own). With `--kernel`, only the datapath tests on those kernels.
pub fn test(opts: &TestOptions) -> Result<()> {
    let host_suite_wanted = opts.kernels.is_empty();
    let specs: Vec<&str> = match (opts.kernels.is_empty(), opts.no_guests) {
        (false, _) => opts.kernels.iter().map(String::as_str).collect(),
        (true, true) => Vec::new(),
        (true, false) => std::iter::once("host").chain(kernels::DEFAULT_GUESTS.iter().copied()).collect(),
    };
    // Parsed first: a misspelt --kernel fails before minutes of building.
    let choices = specs.iter().map(|s| KernelChoice::parse(s)).collect::<Result<Vec<_>>>()?;
    // Phase times go to the log: CI's time limit is the whole run's.
    let started = Instant::now();
    let mut setup = crate::setup::begin()?;
    // Fetched and unpacked during the build; a download problem still shows before the
    // long host suite.
    let guests: Vec<KernelChoice> = choices.iter().filter(|c| **c != KernelChoice::Host).cloned().collect();
    setup.also("the guest kernels", move || guests.iter().try_for_each(|c| kernels::prepare(c).map(drop)));
    build_bins_and_tests()?;
    // The static release binaries: the host suite's packaging tests check and install
    // them, and the guests drive that same veth-route.
    if host_suite_wanted || choices.iter().any(|c| *c != KernelChoice::Host) {
        build(true)?;
    }
    // Looked up before the host suite: after it (its tests run `cargo build -p ...`) this
    // rebuilt ring, reqwest's TLS stack and the crates above them (27 s in a CI run).
    let executables = if choices.is_empty() { Vec::new() } else { matrix::build_tests(matrix::DATAPATH_TESTS)? };
    setup.finish()?;
    eprintln!("xtask: setup and build took {} s", started.elapsed().as_secs());
    let filter = matrix::executable_args(&opts.args);
    let datapath = |c: &KernelChoice| {
        let report = matrix::run_on(c, "datapath tests", |guest| matrix::test_plan(&executables, &filter, guest));
        eprint!("{}", report.failure_details());
        report
    };
    let (on_host, in_guests): (Vec<&KernelChoice>, Vec<&KernelChoice>) = choices.iter().partition(|c| **c == KernelChoice::Host);
    // The guests run beside the host suite. Under TCG they are CPU-bound, while the host
    // suite mostly waits on the one Neutron worker and leaves a core idle; vng runs them at
    // the lowest priority (see vng.rs), so the host suite keeps the CPU it asks for. One
    // after the other: two guests only slow each other down.
    std::thread::scope(|scope| {
        let guests = scope.spawn(|| {
            let started = Instant::now();
            let reports: Vec<_> = in_guests.iter().map(|c| datapath(c)).collect();
            if !reports.is_empty() {
                eprintln!("xtask: the guests took {} s", started.elapsed().as_secs());
            }
            reports
        });
        let host_suite = host_suite_wanted.then(|| -> Result<()> {
            let started = Instant::now();
            let stack = TestStack::up()?;
            let result = run(cargo().args(["test", "--workspace"]).args(&opts.args).env(TestStack::ENV_VAR, stack.env_file()));
            eprintln!("xtask: the host suite took {} s", started.elapsed().as_secs());
            result
        });
        // The host kernel's datapath run after the host suite: both use the host's bpffs
        // and network stack.
        let mut reports: Vec<_> = on_host.iter().map(|c| datapath(c)).collect();
        reports.extend(guests.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        if choices.is_empty() {
            return host_suite.unwrap_or(Ok(()));
        }
        matrix::conclude(&reports, host_suite.as_ref())
    })
}

/// The test run's Keystone + Neutron, in a run directory of its own; stopped on drop.
struct TestStack {
    dir: PathBuf,
}

impl TestStack {
    /// The variable the test bed reads to reuse a running stack.
    const ENV_VAR: &'static str = "VETH_ROUTE_OS_ENV";

    fn up() -> Result<TestStack> {
        let dir = std::env::temp_dir().join(format!("veth-route-test-openstack-{}", std::process::id()));
        let stack = TestStack { dir };
        run(stack.tool("up").stdout(std::process::Stdio::null()))?;
        Ok(stack)
    }

    fn env_file(&self) -> PathBuf {
        self.dir.join("stack.json")
    }

    fn tool(&self, action: &str) -> Command {
        let mut cmd = Command::new(workspace_root().join("target/debug/veth-route-openstack"));
        cmd.arg(action).env("VETH_ROUTE_OS_RUN_DIR", &self.dir);
        cmd
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if let Err(e) = run(&mut self.tool("down")) {
            eprintln!("xtask: stopping the test OpenStack: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The README's first command: install, build, then run the demo binary of the test bed.
pub fn demo(dual_stack: bool) -> Result<()> {
    crate::setup::setup()?;
    build(false)?;
    run_tool("debug", "veth-route-demo", if dual_stack { &["--dual-stack"] } else { &[] })
}

/// Release build, then the test bed's benchmark runner; with `kernel`, only the datapath
/// section, on that kernel (in a guest unless it is `host`).
pub fn bench(kernel: Option<&str>) -> Result<()> {
    let choice = kernel.map(KernelChoice::parse).transpose()?;
    crate::setup::setup()?;
    build_ebpf()?;
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    match choice {
        None => run_tool("release", "veth-route-bench", &[]),
        Some(choice) => bench_on(&choice),
    }
}

/// The datapath benchmark through the matrix runner. Under TCG the absolute numbers mean
/// nothing; the fast path / kernel path ratios still show whether the fast path engages.
fn bench_on(choice: &KernelChoice) -> Result<()> {
    let bin_dir = workspace_root().join("target/release");
    let mut env = vec![
        (crate::plan::PLUGIN_VAR.to_string(), bin_dir.join("veth-route").display().to_string()),
        ("VETH_ROUTE_BENCH_ONLY".to_string(), "datapath".to_string()),
    ];
    // Under emulation (about 30x slower) the host's defaults would outlast the guest's
    // 25-minute limit: fewer rounds, pods and Services unless asked for.
    let guest_defaults = [
        ("VETH_ROUTE_BENCH_SECONDS", "3"),
        ("VETH_ROUTE_BENCH_ROUNDS", "2"),
        ("VETH_ROUTE_BENCH_PODS", "20"),
        ("VETH_ROUTE_BENCH_SERVICES", "200"),
    ];
    for (knob, default) in guest_defaults {
        match std::env::var(knob) {
            Ok(value) => env.push((knob.to_string(), value)),
            Err(_) if *choice != KernelChoice::Host => env.push((knob.to_string(), default.to_string())),
            Err(_) => {}
        }
    }
    let plan = |guest: bool| Plan {
        prepare: guest,
        cwd: workspace_root().join("tests"),
        env: env.clone(),
        jobs: vec![Job { name: "bench-datapath".into(), program: bin_dir.join("veth-route-bench"), args: Vec::new() }],
    };
    // The datapath section renders its chart into docs/ even in a partial run; on the host
    // (a guest cannot write there) that would replace the full run's chart with this one's.
    let charts: Vec<(PathBuf, Option<Vec<u8>>)> = ["docs/benchmarks-datapath.svg", "docs/benchmarks-datapath.png"]
        .iter()
        .map(|f| workspace_root().join(f))
        .map(|p| {
            let kept = std::fs::read(&p).ok();
            (p, kept)
        })
        .collect();
    let report = matrix::run_on(choice, "datapath benchmark", plan);
    for (path, kept) in charts {
        if let Some(bytes) = kept {
            std::fs::write(&path, bytes)?;
        }
    }
    let log = std::fs::read_to_string(report.dir.join("bench-datapath.log")).unwrap_or_default();
    println!("\n== datapath benchmark on {} ==\n{}", report.label, log.trim_end());
    print!("{}", report.summary());
    if !report.ok() {
        return Err(format!("the datapath benchmark failed on {}", report.label).into());
    }
    let Some((header, rows)) = bench_table::ratio_table(&log) else {
        return Err(format!("the datapath benchmark on {} printed no ratio table", report.label).into());
    };
    let kernel = match choice {
        KernelChoice::Host => format!("{} (host)", crate::capabilities::release()),
        _ => report.label.clone(),
    };
    // "tc attach: pods cls_bpf, uplinks TCX, dummy yes, ..." -> "pods cls_bpf, uplinks TCX".
    let attach = report
        .capabilities
        .as_deref()
        .and_then(|c| c.strip_prefix(crate::capabilities::ATTACH_PREFIX))
        .and_then(|c| c.split(", dummy").next())
        .map(|c| c.split(" (").next().unwrap_or(c))
        .unwrap_or("?");
    let file = bench_table::record(&kernel, attach.trim(), &header, &rows)?;
    println!("ratios recorded in {}", file.display());
    Ok(())
}

/// Run a test-bed binary of `profile` against the plugin built alongside it.
fn run_tool(profile: &str, name: &str, args: &[&str]) -> Result<()> {
    let bin_dir = workspace_root().join("target").join(profile);
    run(Command::new(bin_dir.join(name)).args(args).env(crate::plan::PLUGIN_VAR, bin_dir.join("veth-route")))
}
