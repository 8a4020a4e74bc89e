//! The local OpenStack (Keystone 30 + Neutron 29) for tests and the demo.
//!
//! `install_venv` builds `$VETH_ROUTE_CACHE/openstack-venv` (default `/var/cache/veth-route`)
//! from the committed `tests/openstack/constraints.txt`; it is a quick no-op when the venv
//! already holds exactly those versions. `up`/`down`/`env` drive the test bed's
//! `veth-route-openstack` binary, which keeps a stack running in
//! `$VETH_ROUTE_CACHE/openstack-run-<hash of this checkout's path>` (one per worktree).

use std::path::PathBuf;
use std::process::Command;

use crate::process::{cargo, output, run, workspace_root, Result};

/// Root of cached, machine-local things.
fn cache_dir() -> PathBuf {
    std::env::var_os("VETH_ROUTE_CACHE").map(PathBuf::from).unwrap_or_else(|| "/var/cache/veth-route".into())
}

/// Where the venv lives.
pub fn venv_dir() -> PathBuf {
    cache_dir().join("openstack-venv")
}

fn constraints() -> PathBuf {
    workspace_root().join("tests/openstack/constraints.txt")
}

/// Normalised `name==version` lines (pip spells names with `-`, `_` or `.` and any case).
fn pins(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.to_ascii_lowercase().replace(['_', '.'], "-").replace("-=", "="))
        .collect();
    v.sort();
    v
}

/// Python 3.11+ to build the venv with: `$VETH_ROUTE_PYTHON`, else `python3.11`, else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("VETH_ROUTE_PYTHON") {
        return p;
    }
    for candidate in ["python3.11", "python3.12", "python3"] {
        if crate::process::succeeds(Command::new(candidate).args(["-c", "import sys; assert sys.version_info >= (3, 11)"])) {
            return candidate.to_string();
        }
    }
    "python3".to_string()
}

/// Creates or repairs the venv so that it matches the constraints file exactly.
pub fn install_venv() -> Result<()> {
    let venv = venv_dir();
    let wanted = std::fs::read_to_string(constraints())?;
    let pip = venv.join("bin/pip");
    if pip.exists() {
        let have = output(Command::new(&pip).args(["freeze", "--disable-pip-version-check"]))?;
        if pins(&have) == pins(&wanted) {
            return Ok(());
        }
        eprintln!("setup: OpenStack venv {} differs from the constraints; updating it", venv.display());
    } else {
        eprintln!("setup: creating the OpenStack venv in {} (about 90 s)", venv.display());
        std::fs::create_dir_all(cache_dir())?;
        run(Command::new(python()).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&pip).args(["install", "-q", "--disable-pip-version-check", "-r"]).arg(constraints()))
}

fn stack_tool(action: &str) -> Result<()> {
    install_venv()?;
    run(cargo().args(["run", "-q", "-p", "testbed", "--bin", "veth-route-openstack", "--", action]))
}

/// `cargo xtask openstack up`: start (or find) the local stack; prints `export` lines.
pub fn up() -> Result<()> {
    stack_tool("up")
}

/// `cargo xtask openstack down`: stop it and remove its run directory.
pub fn down() -> Result<()> {
    run(cargo().args(["run", "-q", "-p", "testbed", "--bin", "veth-route-openstack", "--", "down"]))
}

/// `cargo xtask openstack env`: print the `export` lines for a running stack.
pub fn env() -> Result<()> {
    run(cargo().args(["run", "-q", "-p", "testbed", "--bin", "veth-route-openstack", "--", "env"]))
}
