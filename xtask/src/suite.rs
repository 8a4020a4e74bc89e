//! Building the workspace and running the test suite.

use std::process::Command;

use crate::process::{cargo, run, workspace_root, Result};

/// Build the kernel programs the plugin embeds.
pub fn build_ebpf() -> Result<()> {
    let object = crate::ebpf::build_ebpf(true)?;
    eprintln!("eBPF object: {}", object.display());
    Ok(())
}

/// Build the eBPF object, then every binary (tests exec the plugins as a runtime would).
pub fn build(release: bool) -> Result<()> {
    build_ebpf()?;
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// Everything the README's test command promises: install, build, test.
pub fn test(args: &[String]) -> Result<()> {
    crate::setup::setup()?;
    build(false)?;
    run(cargo().args(["test", "--workspace"]).args(args))
}

/// The README's first command: install, build, then run the demo binary of the test bed.
pub fn demo() -> Result<()> {
    crate::setup::setup()?;
    build(false)?;
    run_tool("debug", "veth-route-demo")
}

/// Release build, then the test bed's benchmark runner.
pub fn bench() -> Result<()> {
    crate::setup::setup()?;
    build(true)?;
    run_tool("release", "veth-route-bench")
}

/// Run a test-bed binary of `profile` against the plugin built alongside it.
fn run_tool(profile: &str, name: &str) -> Result<()> {
    let bin_dir = workspace_root().join("target").join(profile);
    run(Command::new(bin_dir.join(name)).env("VETH_ROUTE_BIN", bin_dir.join("veth-route")))
}
