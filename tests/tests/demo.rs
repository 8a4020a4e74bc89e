//! The README's first command runs this demo: keep it true. Runs the demo binary as
//! `cargo xtask demo` does (its own local OpenStack, namespaces, the real plugins) and
//! checks that it finished and showed the design note's state; `--dual-stack` too.

use std::process::Command;

use testbed::cni_runner::{plugin_binary, workspace_binary};

/// Run the demo with `args` and check that it succeeded and printed each of `expected`.
fn demo(args: &[&str], expected: &[&str]) {
    // The demo execs these from the target dir, as a runtime and an operator would.
    workspace_binary("tcnp-ipam", "TCNP_IPAM_BIN");
    workspace_binary("vrouter-route-controller", "VRC_BIN");
    let out = Command::new(env!("CARGO_BIN_EXE_veth-route-demo"))
        .args(args)
        .env("VETH_ROUTE_BIN", plugin_binary())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for e in expected {
        assert!(stdout.contains(e), "demo {args:?} output lacks {e:?}:\n{stdout}");
    }
}

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    demo(
        &[],
        &[
            "default via 169.254.1.1 dev eth0",
            "169.254.1.1 dev eth0 scope link",
            "nexthop 10.10.10.8",
            "ok  tcp the vrouter -> pod 2:8080",
            "VM port fixed IPs now: [\"10.10.10.8\"]",
            "router routes now: []",
            "nothing is left behind",
        ],
    );
}

/// `cargo xtask demo --dual-stack`: both families in the pods, on the router and in the
/// traffic checks (the demo itself fails when a pod lacks either address or a /128).
#[test]
fn the_dual_stack_demo_shows_both_families_and_cleans_up() {
    demo(
        &["--dual-stack"],
        &[
            "default via 169.254.1.1 dev eth0",
            "default via fe80::1 dev eth0",
            "/128 nexthop fd00:10:10::",
            "ok  tcp the vrouter -> pod 2:8080",
            "ok  tcp the vrouter -> pod 2 [fd00:10:10::",
            "router routes now: []",
            "nothing is left behind",
        ],
    );
}
