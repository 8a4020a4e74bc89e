//! The eBPF fast path carries real traffic between namespaces: pod<->pod on one VM, remote ->
//! pod through the uplink (both directions bypass the kernel), pod -> remote (the kernel's,
//! both directions). The programs' own counters prove which path each packet took; the
//! receiver sees the TTL one hop lower, like a routed packet.

use std::net::{Ipv4Addr, SocketAddrV4};

use testbed::fastpath_support::{tcp_transfer, udp_ttl, Router, Vm, UPLINK};

/// Several MB in MTU-sized segments (1500-byte MTU on every link).
const STREAM: usize = 4 << 20;
/// At least this many redirected packets for STREAM even if every packet is a 64 KiB GSO skb.
const MIN_STREAM_PACKETS: u64 = (STREAM / 65536) as u64;

/// IPv4 packets a program handed to the kernel (ARP/IPv6 aside).
fn ipv4_passed(vm: &Vm, prog: &str) -> u64 {
    let s = vm.stats();
    s[prog]["passed"].as_u64().unwrap() - s[prog]["pass_not_ipv4"].as_u64().unwrap()
}

#[test]
fn pod_to_pod_on_one_vm_is_redirected_and_routed_like_one_hop() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let a = vm.add_pod();
    let b = vm.add_pod();
    let redirected = vm.counter("from_pod", "redirected");
    let passed = ipv4_passed(&vm, "from_pod");

    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7001), STREAM), STREAM);
    assert_eq!(udp_ttl(&a.ns, None, &b.ns, b.ip, 64), 63, "receiver must see TTL 64-1");
    assert_eq!(udp_ttl(&b.ns, None, &a.ns, a.ip, 64), 63);

    assert!(vm.counter("from_pod", "redirected") >= redirected + MIN_STREAM_PACKETS + 2);
    assert_eq!(ipv4_passed(&vm, "from_pod"), passed, "no pod-to-pod IPv4 packet may take the kernel path");
}

#[test]
fn remote_to_pod_through_the_uplink_is_redirected_both_ways() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    // Conntrack runs, yet never sees half a flow (which would make it INVALID and dropped).
    drop_invalid(&vm);
    let pod = vm.add_pod();
    let redirected = vm.counter("from_uplink", "redirected");
    let out = vm.counter("from_pod", "redirected_out");

    assert_eq!(tcp_transfer(&router.ns, &pod.ns, 0, SocketAddrV4::new(pod.ip, 7002), STREAM), STREAM);
    assert_eq!(udp_ttl(&router.ns, None, &pod.ns, pod.ip, 64), 63);

    assert!(vm.counter("from_uplink", "redirected") >= redirected + MIN_STREAM_PACKETS);
    // The pod's side of the connection leaves by FIB lookup + redirect: conntrack never
    // sees half of the flow.
    assert!(vm.counter("from_pod", "redirected_out") > out);
    let stats = vm.stats();
    assert_eq!(stats["uplinks"][UPLINK]["tcx_ingress_programs"], serde_json::json!(["from_uplink"]));
}

/// The bug this guards against: with inbound packets redirected and replies on the kernel
/// path, conntrack sees the pod's SYN-ACK as a new flow and `ipMasq` rewrites its source,
/// so connections from outside to a pod break.
#[test]
fn remote_to_pod_connections_work_with_ip_masq() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    vm.conf["ipMasq"] = serde_json::json!(true);
    let pod = vm.add_pod();
    assert_eq!(tcp_transfer(&router.ns, &pod.ns, 0, SocketAddrV4::new(pod.ip, 7006), STREAM), STREAM);
    // UDP from outside: the first datagram creates the conntrack entry on the kernel path.
    let new_flow = vm.counter("from_uplink", "pass_new_flow");
    assert_eq!(udp_ttl(&router.ns, None, &pod.ns, pod.ip, 64), 63);
    assert_eq!(vm.counter("from_uplink", "pass_new_flow"), new_flow + 1);
    // The pod's own connections out are masqueraded as configured (kernel path): the
    // answers come back to the VM's address, not the pod's.
    let to_vm = vm.counter("from_uplink", "pass_not_local");
    assert_eq!(tcp_transfer(&pod.ns, &router.ns, 0, SocketAddrV4::new(Router::addr_for(1), 7007), 1 << 20), 1 << 20);
    assert!(vm.counter("from_uplink", "pass_not_local") > to_vm);
}

/// A stateful host firewall (the INVALID drop kube-proxy installs): conntrack runs.
fn drop_invalid(vm: &Vm) {
    vm.iptables(&["-w", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
}

#[test]
fn pod_to_remote_connections_stay_with_conntrack_both_ways() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    drop_invalid(&vm);
    let pod = vm.add_pod();
    let remote = Router::addr_for(1);
    let not_local = vm.counter("from_pod", "pass_not_local");
    let tracked = vm.counter("from_uplink", "pass_tracked");
    let out = vm.counter("from_pod", "redirected_out");

    assert_eq!(tcp_transfer(&pod.ns, &router.ns, 0, SocketAddrV4::new(remote, 7003), STREAM), STREAM);
    assert_eq!(udp_ttl(&pod.ns, None, &router.ns, remote, 64), 63);

    // The pod opened the connection: the kernel routes it (masquerade, policy intact)...
    assert!(vm.counter("from_pod", "pass_not_local") > not_local + MIN_STREAM_PACKETS);
    assert_eq!(vm.counter("from_pod", "redirected_out"), out);
    // ...and the remote's answers, which conntrack knows, stay with the kernel too.
    assert!(vm.counter("from_uplink", "pass_tracked") > tracked);
}

/// Without any conntrack user in the VM there is no NAT and no state to keep consistent:
/// after the pod's SYN (always the kernel's) the connection bypasses the kernel both ways.
#[test]
fn pod_to_remote_connections_bypass_the_kernel_when_nothing_tracks_them() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let pod = vm.add_pod();
    let out = vm.counter("from_pod", "redirected_out");
    let not_local = vm.counter("from_pod", "pass_not_local");
    assert_eq!(tcp_transfer(&pod.ns, &router.ns, 0, SocketAddrV4::new(Router::addr_for(1), 7008), STREAM), STREAM);
    assert!(vm.counter("from_pod", "redirected_out") >= out + MIN_STREAM_PACKETS);
    assert!(vm.counter("from_pod", "pass_not_local") > not_local, "the SYN takes the kernel path");
}

#[test]
fn fast_path_always_redirects_too() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "always");
    let a = vm.add_pod();
    let b = vm.add_pod();
    assert_eq!(vm.stats()["mode"], "always");
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7004), STREAM), STREAM);
    assert_eq!(udp_ttl(&router.ns, None, &b.ns, b.ip, 64), 63);
    assert!(vm.counter("from_pod", "redirected") >= redirected + MIN_STREAM_PACKETS);
}

#[test]
fn fast_path_off_uses_only_kernel_routes() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "off");
    let a = vm.add_pod();
    let b = vm.add_pod();

    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7005), STREAM), STREAM);
    assert_eq!(udp_ttl(&a.ns, None, &b.ns, b.ip, 64), 63);
    assert_eq!(udp_ttl(&router.ns, None, &b.ns, b.ip, 64), 63);

    // Nothing was loaded, pinned or attached: every packet took the kernel path.
    assert!(!vm.pin_dir.exists(), "fastPath off must not create {}", vm.pin_dir.display());
}

/// The VM itself talks to its pods (kubelet probes) and pods to the VM: local addresses are
/// never "routed out" by the fast path (the FIB says local), with or without conntrack.
#[test]
fn vm_to_pod_and_pod_to_vm_work_with_the_fast_path() {
    let router = Router::new();
    let plain = Vm::new(&router, 1, "auto");
    let tracked = Vm::new(&router, 2, "auto");
    drop_invalid(&tracked);
    for vm in [&plain, &tracked] {
        let pod = vm.add_pod();
        let vm_addr = Ipv4Addr::new(192, 168, vm.index, 2);
        assert_eq!(tcp_transfer(&vm.ns, &pod.ns, 0, SocketAddrV4::new(pod.ip, 7009), 1 << 20), 1 << 20);
        assert_eq!(tcp_transfer(&pod.ns, &vm.ns, 0, SocketAddrV4::new(vm_addr, 7010), 1 << 20), 1 << 20);
    }
}
