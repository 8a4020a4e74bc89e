//! The kernel matrix: the datapath tests run on each kernel of the matrix, one guest at a
//! time, with a verdict and a summary per kernel.
//!
//! The test executables are built here, on the host (`cargo test --no-run`), and run as they
//! are in the guest, which sees this machine's file system: no cargo and no build inside a
//! TCG guest, which would take longer than the tests.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::kernels::{self, KernelChoice};
use crate::plan::{Job, Plan};
use crate::process::{cargo, output, workspace_root, Result};
use crate::report::KernelReport;
use crate::vng::{Boot, Ended};

/// The datapath tests (test targets under tests/tests/) that run on every kernel of the
/// matrix: whatever depends on the kernel (veth, routes, TC attach, BPF programs, conntrack,
/// iptables). Tests that need the local OpenStack (Keystone, Neutron) are not here: a guest
/// has no network to reach it, and the IPAM does not depend on the kernel.
pub const DATAPATH_TESTS: &[&str] = &[
    "plugin_seed",
    "plugin_gateway",
    "plugin_antispoof_kernel",
    "plugin_dual_stack",
    "fastpath_ipv6",
    "fastpath_traffic",
    "fastpath_edges",
    "fastpath_services",
    "fastpath_antispoof",
    "fastpath_bandwidth",
    "fastpath_lifecycle",
    "fastpath_upgrade",
    "plugin_chain",
    "plugin_check",
];

/// Tests of [`DATAPATH_TESTS`] that guests skip, with the reason (printed in the summary, so
/// the skip is never silent). Only stress repetitions belong here: what they add over a
/// single round does not depend on the kernel, and under TCG they cost minutes.
pub const SKIPPED_IN_GUESTS: &[(&str, &str, &str)] = &[(
    "fastpath_lifecycle",
    "del_removes_entry_and_pins_and_fifty_cycles_leave_nothing_stale",
    "50 ADD/DEL rounds take 3.5 min under TCG; single rounds run in the other lifecycle tests, all 50 on the host",
)];

/// libtest threads in a guest (`VETH_ROUTE_GUEST_THREADS` overrides). The guest has 2 vCPUs
/// on the 2 host cores and the tests are CPU-bound under TCG (~30x slower than native),
/// so more threads than vCPUs only interleave the same work (measured: README's "Kernel
/// matrix").
const GUEST_TEST_THREADS: usize = 2;

fn guest_test_threads() -> usize {
    std::env::var("VETH_ROUTE_GUEST_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(GUEST_TEST_THREADS)
}

/// The plugin the tests drive in a guest: the static release build nodes get (built once
/// for both). Under TCG the debug build's start-up (77 MB read over 9p, unoptimised BTF
/// parsing) made the list take twice as long.
pub fn guest_plugin() -> PathBuf {
    crate::suite::static_dir().join("veth-route")
}

/// `target/kernel-matrix/<kernel>/`: plan, logs, status files and console of each run.
fn results_root() -> PathBuf {
    workspace_root().join("target/kernel-matrix")
}

/// Build the test executables of `tests` and return (target name, executable) pairs in list
/// order. All of the workspace's tests, as the host suite builds them, so that after
/// `cargo xtask test`'s build this is a no-op: naming targets activates fewer
/// dev-dependencies, and cargo would rebuild reqwest's TLS stack and the test bed with
/// other features.
pub fn build_tests(tests: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let json = output(cargo().args(["test", "--no-run", "--message-format=json", "--workspace"]))?;
    tests
        .iter()
        .map(|t| {
            executable_of(&json, t)
                .map(|exe| (t.to_string(), exe))
                .ok_or_else(|| format!("cargo test --no-run reported no executable for test target {t}").into())
        })
        .collect()
}

/// The `"executable"` of the compiler-artifact message whose target is the test `name`.
/// Read without a JSON parser: cargo prints one object per line, and the fields needed are
/// plain strings.
fn executable_of(json: &str, name: &str) -> Option<PathBuf> {
    let target = format!("\"kind\":[\"test\"],\"crate_types\":[\"bin\"],\"name\":\"{name}\"");
    json.lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(&target))
        .find_map(|l| l.split_once("\"executable\":\"").and_then(|(_, rest)| rest.split_once('"')).map(|(exe, _)| PathBuf::from(exe)))
}

/// The variable that stretches the test bed's waits for traffic (`testbed::patience`).
const PATIENCE_VAR: &str = "VETH_ROUTE_PATIENCE";
/// A guest runs under `nice` beside the host suite, and its clock runs on while it gets no
/// CPU: its tests wait six times as long before calling a packet lost (60 s, not 10).
const GUEST_PATIENCE: u32 = 6;

/// The plan of the datapath tests: `filter` (test-name filters and libtest flags) goes to
/// every executable after the runner's own flags. `--show-output` because libtest swallows
/// the output of passing tests, and with it their not-applicable lines.
pub fn test_plan(executables: &[(String, PathBuf)], filter: &[String], guest: bool) -> Plan {
    let plugin = if guest { guest_plugin() } else { workspace_root().join("target/debug/veth-route") };
    let plugin_var = (crate::plan::PLUGIN_VAR.to_string(), plugin.display().to_string());
    let jobs = executables
        .iter()
        .map(|(name, exe)| {
            let mut args = vec!["--show-output".to_string()];
            if guest {
                args.push(format!("--test-threads={}", guest_test_threads()));
                for (_, test, _) in SKIPPED_IN_GUESTS.iter().filter(|(target, _, _)| target == name) {
                    args.extend(["--skip".to_string(), test.to_string()]);
                }
            }
            args.extend(filter.iter().cloned());
            Job { name: name.clone(), program: exe.clone(), args }
        })
        .collect();
    Plan {
        prepare: guest,
        cwd: workspace_root().join("tests"),
        env: if guest { vec![plugin_var, (PATIENCE_VAR.into(), GUEST_PATIENCE.to_string())] } else { vec![plugin_var] },
        jobs,
    }
}

/// Run `plan` on one kernel and read the verdict. Never an Err: a kernel that cannot even
/// boot is a failed row of the matrix, and the other kernels still run.
/// `what` names the plan in the headings ("datapath tests").
pub fn run_on(choice: &KernelChoice, what: &str, plan_for: impl Fn(bool) -> Plan) -> KernelReport {
    let started = Instant::now();
    let result = match choice {
        KernelChoice::Host => run_on_host(what, &plan_for(false)),
        _ => run_in_guest(choice, what, &plan_for(true)),
    };
    match result {
        Ok((label, plan, dir, ended, reboot)) => {
            let mut report = KernelReport::read(label, &plan, &dir, started.elapsed().as_secs());
            if ended == Ended::TimedOut {
                report.problem =
                    Some(format!("the guest was killed after {} min (hung?); see console.log", crate::vng::TIMEOUT.as_secs() / 60));
            }
            report.notes.extend(reboot);
            report
        }
        Err((label, e)) => KernelReport::broken(label, e.to_string(), results_root()),
    }
}

/// The label, the plan, its results directory, how the (last) boot ended, and what a
/// second boot was for, if the first died.
type RunResult = std::result::Result<(String, Plan, PathBuf, Ended, Option<String>), (String, Box<dyn std::error::Error>)>;

fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = results_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run_on_host(what: &str, plan: &Plan) -> RunResult {
    let label = format!("host {}", crate::capabilities::release());
    let go = || -> Result<PathBuf> {
        let dir = fresh_dir("host")?;
        plan.write(&dir)?;
        eprintln!("\n== {what} on the host kernel ({label}) ==");
        crate::guest_runner::run(&dir)?;
        Ok(dir)
    };
    go().map(|dir| (label.clone(), plan.clone(), dir, Ended::Returned, None)).map_err(|e| (label.clone(), e))
}

fn run_in_guest(choice: &KernelChoice, what: &str, plan: &Plan) -> RunResult {
    let label = choice.label();
    let kernel = kernels::prepare(choice).map_err(|e| (label.clone(), e))?;
    let label = kernel.release.clone();
    let go = || -> Result<(PathBuf, Ended, Option<String>)> {
        let dir = fresh_dir(&kernel.release)?;
        let copied = with_copied_programs(plan, &dir)?;
        copied.write(&dir)?;
        eprintln!("\n== {what} in a guest on {} ({}) ==", kernel.release, kernel.image.display());
        // The guest runs this very binary. A copy, because the workspace build that
        // preceded may have relinked target/debug/xtask under the running process.
        let runner = dir.join("xtask-guest-run");
        std::fs::copy("/proc/self/exe", &runner)?;
        let boot = || {
            let command: Vec<OsString> = vec![runner.clone().into(), "guest-run".into(), dir.clone().into()];
            Boot { kernel: &kernel, shared: &dir, command, label: &short_label(&kernel.release) }.run()
        };
        let ended = boot()?;
        match second_boot_plan(&copied, &dir, ended) {
            None => Ok((dir, ended, None)),
            Some(rest) => {
                let note = reboot_note(&dir, &rest);
                eprintln!("\n== {}: {note} ==", kernel.release);
                std::fs::rename(dir.join("console.log"), dir.join(FIRST_CONSOLE))?;
                rest.write(&dir)?;
                Ok((dir.clone(), boot()?, Some(note)))
            }
        }
    };
    go().map(|(dir, ended, note)| (label.clone(), plan.clone(), dir, ended, note)).map_err(|e| (label.clone(), e))
}

/// Where the console of a first boot that died is kept.
const FIRST_CONSOLE: &str = "console-first-boot.log";

/// When a guest died before finishing its plan (no `done` marker, and not killed as hung):
/// the plan of the jobs it did not finish, for one more boot. Once seen (6.12 under TCG):
/// a double fault inside `kmem_cache_alloc` in the middle of a test target that passed on
/// the next 70 boots. A kernel bug the tests trigger would strike the second boot too, and
/// the summary names the first boot's death either way, with its console kept.
fn second_boot_plan(plan: &Plan, dir: &Path, ended: Ended) -> Option<Plan> {
    if ended != Ended::Returned || dir.join(crate::guest_runner::DONE).exists() {
        return None;
    }
    let jobs: Vec<_> = plan.jobs.iter().filter(|j| !dir.join(format!("{}.status", j.name)).exists()).cloned().collect();
    (!jobs.is_empty()).then(|| Plan { jobs, ..plan.clone() })
}

/// What the summary says about a second boot: which job the first boot died in, and the
/// console's first oops line.
fn reboot_note(dir: &Path, rest: &Plan) -> String {
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let oops = console.lines().find(|l| l.contains("Oops") || l.contains("Kernel panic") || l.contains("BUG")).unwrap_or("no oops line");
    let names: Vec<&str> = rest.jobs.iter().map(|j| j.name.as_str()).collect();
    format!(
        "the first boot died during {} ({}; console in {FIRST_CONSOLE}); a second boot ran what it had not finished: {}",
        names[0],
        oops.trim(),
        names.join(", ")
    )
}

/// `plan` with each job's executable copied into `dir/bin`. The host suite runs beside the
/// guest, and a `cargo build` it starts must not relink an executable under the guest,
/// which reads it over 9p as it goes.
fn with_copied_programs(plan: &Plan, dir: &Path) -> Result<Plan> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let mut copied = plan.clone();
    for job in &mut copied.jobs {
        let to = bin.join(&job.name);
        std::fs::copy(&job.program, &to).map_err(|e| format!("copying {} to {}: {e}", job.program.display(), to.display()))?;
        job.program = to;
    }
    Ok(copied)
}

/// `6.1.0-57-amd64` -> `6.1`, for the console prefix.
fn short_label(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Print the failure details of each report and the summary; Err if any kernel failed.
pub fn conclude(reports: &[KernelReport], host_suite: Option<&Result<()>>) -> Result<()> {
    println!("\n== kernel matrix: datapath tests ({}) ==", DATAPATH_TESTS.join(", "));
    if let Some(r) = host_suite {
        println!("{:<28} {}", "host suite (cargo test)", if r.is_ok() { "ok" } else { "FAILED" });
    }
    for r in reports {
        print!("{}", r.summary());
    }
    if reports.iter().any(|r| !r.label.starts_with("host")) {
        for (target, test, why) in SKIPPED_IN_GUESTS {
            println!("skipped in guests: {target}::{test} ({why})");
        }
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.ok()).map(|r| r.label.as_str()).collect();
    match (host_suite, failed.is_empty()) {
        (Some(Err(e)), _) if failed.is_empty() => Err(format!("host suite failed: {e}").into()),
        (Some(Err(e)), _) => Err(format!("host suite failed ({e}), and the datapath tests failed on: {}", failed.join(", ")).into()),
        (_, true) => Ok(()),
        (_, false) => Err(format!("datapath tests failed on: {}", failed.join(", ")).into()),
    }
}

/// Split `cargo xtask test` arguments for the test executables: cargo's own options (before
/// an inner `--`) are for the host suite only; test-name filters and everything after the
/// inner `--` (libtest flags) go to the executables too.
pub fn executable_args(args: &[String]) -> Vec<String> {
    // cargo test options that take a value: the value is not a test-name filter.
    const VALUED: &[&str] = &[
        "-p",
        "--package",
        "--test",
        "--bin",
        "--exclude",
        "-F",
        "--features",
        "-j",
        "--jobs",
        "--profile",
        "--target",
        "--target-dir",
        "--manifest-path",
    ];
    let mut out = Vec::new();
    let mut iter = args.iter();
    let mut skip_value = false;
    for a in iter.by_ref() {
        if a == "--" {
            break;
        }
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if VALUED.contains(&a.as_str()) {
            skip_value = true;
        } else if !a.starts_with('-') {
            out.push(a.clone());
        }
    }
    out.extend(iter.cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_that_died_gets_one_more_boot_for_what_it_did_not_finish() {
        let dir = std::env::temp_dir().join(format!("vr-reboot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let job = |n: &str| Job { name: n.into(), program: PathBuf::from("/bin/true"), args: vec![] };
        let plan = Plan { prepare: true, cwd: PathBuf::from("/"), env: vec![], jobs: vec![job("a"), job("b"), job("c")] };
        std::fs::write(dir.join("a.status"), "exit 0 seconds 1").unwrap();
        std::fs::write(dir.join("console.log"), "[ 1.0] boot\n[ 165.5] Oops: double fault: 0000 [#1]\n[ 165.6] more\n").unwrap();

        let rest = second_boot_plan(&plan, &dir, Ended::Returned).expect("a second boot");
        assert_eq!(rest.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!((rest.prepare, &rest.cwd), (true, &plan.cwd));
        let note = reboot_note(&dir, &rest);
        assert!(note.starts_with("the first boot died during b ([ 165.5] Oops: double fault"), "{note}");
        assert!(note.ends_with("a second boot ran what it had not finished: b, c"), "{note}");
        // Killed as hung: no second boot (it would hang too, for as long again).
        assert!(second_boot_plan(&plan, &dir, Ended::TimedOut).is_none());
        // Finished: none.
        std::fs::write(dir.join(crate::guest_runner::DONE), "").unwrap();
        assert!(second_boot_plan(&plan, &dir, Ended::Returned).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn filters_and_libtest_flags_reach_the_executables() {
        let a = |v: &[&str]| executable_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["seed"]), vec!["seed"]);
        assert_eq!(a(&["-p", "testbed", "seed", "--", "--exact"]), vec!["seed", "--exact"]);
        assert_eq!(a(&["--release"]), Vec::<String>::new());
    }

    #[test]
    fn executable_is_found_by_target_name() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"plugin_seed","src_path":"/w/tests/tests/plugin_seed.rs"},"executable":"/w/target/debug/deps/plugin_seed-1234"}"#;
        assert_eq!(executable_of(json, "plugin_seed"), Some(PathBuf::from("/w/target/debug/deps/plugin_seed-1234")));
        assert_eq!(executable_of(json, "plugin"), None);
    }

    #[test]
    fn short_labels() {
        assert_eq!(short_label("6.1.0-57-amd64"), "6.1");
        assert_eq!(short_label("6.12.117+deb12-amd64"), "6.12");
    }
}
