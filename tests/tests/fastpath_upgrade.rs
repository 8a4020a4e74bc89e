//! Upgrades on a live node: a new plugin build takes over every attachment while traffic
//! flows (no connection breaks, and no program of the old build keeps running anywhere),
//! and an older pin layout generation is migrated (its programs detached, its endpoints
//! carried, its directory removed).

use std::net::SocketAddrV4;

use serde_json::Value;
use testbed::fastpath_support::{tcp_transfer, try_tcp_transfer_with, udp_send_in_order, udp_socket_in, wait_until, Router, Vm, UPLINK};

/// Several MB, so the upgrade happens in the middle of the transfer.
const STREAM: usize = 8 << 20;

/// Kernel id of the program pinned at `pin`.
fn prog_id(pin: &std::path::Path) -> u64 {
    let out = std::process::Command::new("bpftool").args(["-j", "prog", "show", "pinned"]).arg(pin).output().unwrap();
    assert!(out.status.success(), "bpftool prog show pinned {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_u64().unwrap()
}

/// Whether the kernel still has program `id` (anything still attached or pinned keeps it).
fn prog_exists(id: u64) -> bool {
    std::process::Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]).output().unwrap().status.success()
}

/// The pinned program builds (directories under `progs/`).
fn builds(vm: &Vm) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(vm.pins().join("progs")).unwrap().flatten().map(|e| e.file_name()).collect()
}

/// A pod receives a long transfer from outside; in the middle, a new plugin build's first
/// ADD loads its programs and moves every attachment (pod veths and uplink, both hooks) to
/// them. The connection completes, and afterwards no program of the old build exists any
/// more: nothing is left running it.
#[test]
fn a_new_build_takes_over_under_live_traffic_and_leaves_no_old_program_running() {
    new_build_under_live_traffic(false);
}

/// The same with netlink (clsact/cls_bpf) attachments, which cannot be moved atomically:
/// they are replaced (a moment on the kernel path), not left on the old build.
#[test]
fn a_new_build_replaces_netlink_filters_under_live_traffic() {
    new_build_under_live_traffic(true);
}

fn new_build_under_live_traffic(netlink: bool) {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    if netlink {
        vm.env.push(("VETH_ROUTE_TC_ATTACH", "netlink".into()));
    }
    let vm = vm;
    let server = vm.add_pod();
    let old_build = builds(&vm);
    assert_eq!(old_build.len(), 1, "{old_build:?}");
    let progs = vm.pins().join("progs");
    let old_ids: Vec<u64> =
        ["from_pod", "to_pod", "from_uplink", "to_uplink"].iter().map(|p| prog_id(&progs.join(&old_build[0]).join(p))).collect();
    assert!(old_ids.iter().all(|id| prog_exists(*id)), "{old_ids:?}");
    // Pretend the pinned programs came from an older plugin build.
    std::fs::rename(progs.join(&old_build[0]), progs.join("0000000000000000")).unwrap();

    let mut newcomer = None;
    let connect = SocketAddrV4::new(server.ip, 7401);
    let sent = try_tcp_transfer_with(&router.ns, &server.ns, 0, connect, STREAM, STREAM / 2, || newcomer = Some(vm.add_pod()));
    assert_eq!(sent, Ok(STREAM), "the inbound connection survives the upgrade: {}", vm.stats());
    let newcomer = newcomer.expect("the new build's ADD ran");
    assert_eq!(builds(&vm), old_build, "only the new build is pinned");
    wait_until("the old build's programs are released", || old_ids.iter().all(|id| !prog_exists(*id)));
    eprintln!("old program ids {old_ids:?} are gone");

    server.check().assert_ok();
    newcomer.check().assert_ok();
    if netlink {
        for (hook, prog) in [("ingress", "from_uplink"), ("egress", "to_uplink")] {
            let filters = vm.ns.sh("tc", &["filter", "show", "dev", UPLINK, hook]);
            assert_eq!(filters.lines().filter(|l| l.contains(prog)).count(), 1, "one {prog} filter on {UPLINK} {hook}: {filters}");
        }
    } else {
        let uplink: Value = vm.stats()["uplinks"][UPLINK].clone();
        assert_eq!(uplink["ingress_programs"], serde_json::json!(["from_uplink"]), "{uplink}");
        assert_eq!(uplink["egress_programs"], serde_json::json!(["to_uplink"]), "{uplink}");
    }
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&newcomer.ns, &server.ns, 0, SocketAddrV4::new(server.ip, 7402), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > redirected, "the new build's programs redirect");
}

/// The first ADD of a build with a new pin layout finds the previous generation's pins (here
/// a fake `v1`: this build run with `VETH_ROUTE_TEST_PIN_LAYOUT_VERSION=1`, so the map
/// formats match and what is tested is the migration itself). Its pods keep their fast path
/// and anti-spoofing under the new generation, its uplink programs are replaced, none of
/// its programs keeps running, and its directory is gone.
#[test]
fn an_older_pin_layout_generation_is_migrated_by_the_next_add() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let old = vm.add_pod_with_env(&[("VETH_ROUTE_TEST_PIN_LAYOUT_VERSION", "1")]);
    let v1 = vm.pin_dir.join("v1");
    assert!(v1.is_dir() && !vm.pins().exists(), "the old generation lives in v1");
    let old_build = std::fs::read_dir(v1.join("progs")).unwrap().flatten().next().unwrap().path();
    let old_ids: Vec<u64> = ["from_pod", "to_pod", "from_uplink", "to_uplink"].iter().map(|p| prog_id(&old_build.join(p))).collect();
    assert!(old_ids.iter().all(|id| prog_exists(*id)), "{old_ids:?}");

    let new = vm.add_pod();
    assert!(!v1.exists(), "the old generation's directory is removed");
    wait_until("the old generation's programs are released", || old_ids.iter().all(|id| !prog_exists(*id)));
    let mut ips = vm.endpoint_ips();
    ips.sort();
    let mut want = vec![old.ip, new.ip];
    want.sort();
    assert_eq!(ips, want, "the old pod's endpoint was carried over");
    old.check().assert_ok();
    new.check().assert_ok();
    let stats = vm.stats();
    assert_eq!(stats["uplinks"][UPLINK]["ingress_programs"], serde_json::json!(["from_uplink"]), "{stats}");

    // The old pod is served by the new generation, both ways.
    let (from_pod, from_uplink) = (vm.counter("from_pod", "redirected"), vm.counter("from_uplink", "redirected"));
    assert_eq!(tcp_transfer(&new.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7403), 1 << 20), 1 << 20);
    assert_eq!(tcp_transfer(&router.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7404), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > from_pod && vm.counter("from_uplink", "redirected") > from_uplink, "{}", vm.stats());
    // Its anti-spoof entry came along: a forged source from the old pod does not arrive
    // (sent in order before a genuine datagram, which does).
    let rx = udp_socket_in(&new.ns, new.ip);
    rx.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let to = rx.local_addr().unwrap();
    old.ns.ip("addr add 10.10.1.250/32 dev eth0");
    let forged: std::net::IpAddr = "10.10.1.250".parse().unwrap();
    udp_send_in_order(&old.ns, &[(forged, to, b"forged"), (old.ip.into(), to, b"genuine")]);
    let mut buf = [0u8; 16];
    let (n, _) = rx.recv_from(&mut buf).expect("the genuine datagram arrives");
    assert_eq!(&buf[..n], b"genuine", "a forged source passed from_pod after the migration");
}
