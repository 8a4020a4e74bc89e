//! `veth-route-openstack up|down|env`: a local Keystone + Neutron that outlives this command,
//! for people trying veth-route and for CI runs that share one stack across test binaries.
//! Run through `cargo xtask openstack ...`. The run directory is `$VETH_ROUTE_OS_RUN_DIR`,
//! else `$VETH_ROUTE_CACHE/openstack-run-<hash of the checkout's path>` (cache default
//! `/var/cache/veth-route`); secrets stay in its 0600 files and are never printed.

use std::path::PathBuf;
use std::process::ExitCode;

use testbed::openstack::{Stack, StackOptions, ENV_VAR};

/// `$VETH_ROUTE_OS_RUN_DIR` (a test run keeps its stack apart from one a person started),
/// else one directory per checkout: two worktrees on one machine each get their own stack,
/// and `down` in one never stops the other's.
fn run_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VETH_ROUTE_OS_RUN_DIR") {
        return PathBuf::from(dir);
    }
    let root = testbed::cni_runner::workspace_root();
    testbed::openstack::cache_dir().join(format!("openstack-run-{:08x}", testbed::fnv1a(root.as_os_str().as_encoded_bytes()) as u32))
}

fn print_env(stack: &Stack) {
    let dir = &stack.env().dir;
    println!("export {ENV_VAR}={}", stack.env_file().display());
    println!("export OS_CLIENT_CONFIG_FILE={}", dir.join("clouds.yaml").display());
    println!("export OS_CLOUD=veth-route");
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let dir = run_dir();
    let state = dir.join("stack.json");
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = (|| {
        match arg.as_str() {
            "up" => {
                if state.exists() {
                    let stack = Stack::attach(&state)?;
                    if testbed::openstack::block_on(stack.neutron().ping()).is_ok() {
                        eprintln!("local OpenStack already running in {}", dir.display());
                        print_env(&stack);
                        return Ok(());
                    }
                    eprintln!("stale local OpenStack in {}: replacing it", dir.display());
                    stack.destroy();
                }
                let opts = StackOptions { detached: true, dir: Some(dir.clone()), ..Default::default() };
                let stack = Stack::start(opts)?;
                let e = stack.env();
                eprintln!(
                    "Keystone {} and Neutron {} up; network {} subnet {} ({}), router {}; logs in {}",
                    e.auth_url,
                    e.neutron_url,
                    e.network_id,
                    e.subnet_id,
                    e.cidr,
                    e.router_id,
                    dir.display()
                );
                print_env(&stack);
            }
            "down" => {
                if state.exists() {
                    Stack::attach(&state)?.destroy();
                    eprintln!("local OpenStack stopped");
                } else {
                    eprintln!("no local OpenStack running");
                }
            }
            "env" => print_env(&Stack::attach(&state).map_err(|e| format!("{e} (run `cargo xtask openstack up`)"))?),
            _ => return Err("usage: veth-route-openstack up|down|env".into()),
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veth-route-openstack: {e}");
            ExitCode::FAILURE
        }
    }
}
