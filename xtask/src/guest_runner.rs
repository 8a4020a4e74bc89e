//! `xtask guest-run <dir>`: the guest side of the kernel matrix. vng boots a kernel with this
//! machine's file system and runs this same binary inside; it reads the plan from `<dir>`
//! (shared read-write with the host), prepares the kernel the way a node's boot would, prints
//! its capabilities and runs the jobs, leaving everything the host judges in `<dir>`:
//!
//! - `capabilities`: one line (see [`Capabilities::summary`]);
//! - `<job>.log`: the job's stdout and stderr; `<job>.status`: `exit <code> seconds <n>`;
//! - `done`: written last. Its absence tells the host the guest died (panic, OOM, timeout).
//!
//! Files instead of the console because vng's exit code is not the command's (it is 255
//! here whatever the command did) and the console interleaves kernel messages.
//! With no guest (`--kernel host`) the host calls [`run`] directly.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::capabilities::Capabilities;
use crate::plan::{Job, Plan};
use crate::process::{run as run_cmd, Result};

/// Written after the last job.
pub const DONE: &str = "done";
/// The capabilities line.
pub const CAPABILITIES: &str = "capabilities";

/// What the datapath and its tests need loaded on a distro kernel, where all of it is
/// modular. Most would autoload on first use, but not everything the tests rely on does:
/// the conntrack kfuncs exist only while `nf_conntrack` is loaded (kube-proxy loads it on a
/// real node), and loading up front keeps the first test from paying for autoloading.
/// Debian's iptables is iptables-nft, hence the nf_tables family; `ip6t_rpfilter` is the
/// match of dual-stack pods' IPv6 anti-spoofing rule.
const MODULES: &[&str] = &[
    "veth",
    "dummy",
    "8021q",
    "ifb",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_nat",
    "nft_masq",
    "nft_reject_inet",
    "nft_fib_inet",
    "iptable_nat",
    "iptable_filter",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_comment",
    "xt_statistic",
    "xt_mark",
    "xt_addrtype",
    "xt_multiport",
    "xt_nat",
    "ip6t_rpfilter",
    "sch_ingress",
    "sch_tbf",
    "sch_fq",
    "cls_bpf",
    "cls_u32",
    "cls_matchall",
    "act_bpf",
    "act_mirred",
];

/// Run the plan in `dir`; Err only when the guest side itself cannot work (the jobs'
/// failures are in their status files).
pub fn run(dir: &Path) -> Result<()> {
    let plan = Plan::read(dir)?;
    if plan.prepare {
        prepare()?;
        let plugin: Vec<&Path> =
            plan.env.iter().filter(|(k, _)| k == crate::plan::PLUGIN_VAR).map(|(_, v)| Path::new(v.as_str())).collect();
        crate::guest_cache::cache(&plugin)?;
    }
    let caps = Capabilities::probe();
    println!("kernel {}: {}", caps.release, caps.summary());
    std::fs::write(dir.join(CAPABILITIES), format!("{}\n{}\n", caps.release, caps.summary()))?;
    for job in &plan.jobs {
        run_job(&plan, job, dir)?;
    }
    std::fs::write(dir.join(DONE), "")?;
    Ok(())
}

/// A guest starts with bare sysfs: pins need bpffs, and the modules a node would have.
fn prepare() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")?.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"));
    if !mounted {
        run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    // modprobe succeeds for built-in modules too; a missing one is reported, not fatal: the
    // capabilities line and the tests say what it costs.
    let missing: Vec<&str> = MODULES
        .iter()
        .copied()
        .filter(|m| !Command::new("modprobe").arg(m).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false))
        .collect();
    if missing.is_empty() {
        println!("modules: all {} loaded or built in", MODULES.len());
    } else {
        println!("modules: {} of {} loaded or built in; missing: {}", MODULES.len() - missing.len(), MODULES.len(), missing.join(" "));
    }
    Ok(())
}

fn run_job(plan: &Plan, job: &Job, dir: &Path) -> Result<()> {
    println!("running {} ...", job.name);
    let log = File::create(dir.join(format!("{}.log", job.name)))?;
    let started = Instant::now();
    let status = Command::new(&job.program)
        .args(&job.args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status();
    let seconds = started.elapsed().as_secs();
    // A program that cannot start is a failed job (exit 127, as a shell says), not a dead guest.
    let code = match status {
        // Killed by a signal: 128 + signal, as a shell reports it.
        Ok(s) => s.code().or_else(|| s.signal().map(|n| 128 + n)).unwrap_or(128),
        Err(e) => {
            std::fs::write(dir.join(format!("{}.log", job.name)), format!("cannot start {}: {e}\n", job.program.display()))?;
            127
        }
    };
    std::fs::write(dir.join(format!("{}.status", job.name)), format!("exit {code} seconds {seconds}\n"))?;
    println!("{}: {} after {seconds} s", job.name, if code == 0 { "ok".to_string() } else { format!("FAILED (exit {code})") });
    Ok(())
}
