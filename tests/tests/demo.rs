//! The README's first command runs this demo: keep it true. Runs the demo binary as
//! `cargo xtask demo` does (its own local OpenStack, namespaces, the real plugins) and
//! checks that it finished and showed the design note's state.

use std::process::Command;

use testbed::cni_runner::{plugin_binary, workspace_binary};

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    // The demo execs these from the target dir, as a runtime and an operator would.
    workspace_binary("tcnp-ipam", "TCNP_IPAM_BIN");
    workspace_binary("vrouter-route-controller", "VRC_BIN");
    let out = Command::new(env!("CARGO_BIN_EXE_veth-route-demo")).env("VETH_ROUTE_BIN", plugin_binary()).output().expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "default via 169.254.1.1 dev eth0",
        "169.254.1.1 dev eth0 scope link",
        "nexthop 10.10.10.8",
        "ok  tcp the vrouter -> pod 2:8080",
        "VM port fixed IPs now: [\"10.10.10.8\"]",
        "router routes now: []",
        "nothing is left behind",
    ] {
        assert!(stdout.contains(expected), "demo output lacks {expected:?}:\n{stdout}");
    }
}
