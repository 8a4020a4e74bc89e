//! Building the workspace and running the test suite.

use std::path::PathBuf;
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

/// Everything the README's test command promises: install, build, test. One local
/// OpenStack serves every test binary of the run (each would otherwise start its own).
pub fn test(args: &[String]) -> Result<()> {
    crate::setup::setup()?;
    build(false)?;
    let stack = TestStack::up()?;
    run(cargo().args(["test", "--workspace"]).args(args).env(TestStack::ENV_VAR, stack.env_file()))
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
