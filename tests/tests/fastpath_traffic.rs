//! The eBPF fast path carries real traffic between namespaces: pod<->pod on one VM, remote ->
//! pod through the uplink, pod -> remote. In `auto` the kernel routes the first packet of
//! each flow; once the egress programs saw it delivered untranslated, both directions
//! bypass the kernel. The programs' own counters prove which path each packet took; the
//! receiver sees the TTL one hop lower, like a routed packet.

use std::net::{Ipv4Addr, SocketAddrV4};

use testbed::fastpath_support::{tcp_transfer, udp_socket_in, udp_ttl, Router, Vm, UPLINK};
use testbed::patience::io_timeout;

/// Several MB in MTU-sized segments (1500-byte MTU on every link).
const STREAM: usize = 4 << 20;
/// At least this many redirected packets for STREAM even if every packet is a 64 KiB GSO skb.
const MIN_STREAM_PACKETS: u64 = (STREAM / 65536) as u64;

/// IPv4 packets a program handed to the kernel (ARP/IPv6 aside).
fn ipv4_passed(vm: &Vm, prog: &str) -> u64 {
    let s = vm.stats();
    s[prog]["passed"].as_u64().unwrap() - s[prog]["pass_not_ip"].as_u64().unwrap() - s[prog]["pass_ipv6"].as_u64().unwrap()
}

#[test]
fn pod_to_pod_on_one_vm_is_redirected_after_the_first_packet_of_each_flow() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let a = vm.add_pod();
    let b = vm.add_pod();
    let redirected = vm.counter("from_pod", "redirected");
    let passed = ipv4_passed(&vm, "from_pod");
    let new_flows = vm.counter("from_pod", "pass_new_flow");
    let verified = vm.counter("to_pod", "flows_verified");

    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7001), STREAM), STREAM);
    assert_eq!(udp_ttl(&a.ns, None, &b.ns, b.ip, 64), 63, "receiver must see TTL 64-1");
    assert_eq!(udp_ttl(&b.ns, None, &a.ns, a.ip, 64), 63);

    assert!(vm.counter("from_pod", "redirected") >= redirected + MIN_STREAM_PACKETS);
    // Three flows (one TCP, two one-datagram UDP): exactly their first packets took the
    // kernel path, and the kernel delivered each of them untranslated.
    assert_eq!(vm.counter("from_pod", "pass_new_flow"), new_flows + 3);
    assert_eq!(ipv4_passed(&vm, "from_pod"), passed + 3, "only first packets may take the kernel path");
    assert_eq!(vm.counter("to_pod", "flows_verified"), verified + 3);
}

/// A UDP request goes through the kernel; the answer (the same flow reversed) is redirected.
#[test]
fn a_udp_answer_between_pods_is_redirected() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let a = vm.add_pod();
    let b = vm.add_pod();
    let (sa, sb) = (udp_socket_in(&a.ns, a.ip), udp_socket_in(&b.ns, b.ip));
    for s in [&sa, &sb] {
        s.set_read_timeout(Some(io_timeout())).unwrap();
    }
    let redirected = vm.counter("from_pod", "redirected");
    sa.send_to(b"question", sb.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sb.recv_from(&mut buf).expect("question delivered");
    assert_eq!((&buf[..n], from), (&b"question"[..], sa.local_addr().unwrap()));
    assert_eq!(vm.counter("from_pod", "redirected"), redirected, "the first datagram is the kernel's");
    sb.send_to(b"answer", from).unwrap();
    let (n, from) = sa.recv_from(&mut buf).expect("answer delivered");
    assert_eq!((&buf[..n], from), (&b"answer"[..], sb.local_addr().unwrap()));
    assert_eq!(vm.counter("from_pod", "redirected"), redirected + 1, "the answer is redirected");
}

#[test]
fn remote_to_pod_through_the_uplink_is_redirected_both_ways() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    // Conntrack runs, and the INVALID drop kube-proxy installs is there: the flows that
    // bypass the kernel never show it anything it could take for INVALID.
    vm.drop_invalid();
    let pod = vm.add_pod();
    let redirected = vm.counter("from_uplink", "redirected");
    let out = vm.counter("from_pod", "redirected_out");
    let verified = vm.counter("to_pod", "flows_verified");

    assert_eq!(tcp_transfer(&router.ns, &pod.ns, 0, SocketAddrV4::new(pod.ip, 7002), STREAM), STREAM);
    assert_eq!(udp_ttl(&router.ns, None, &pod.ns, pod.ip, 64), 63);

    assert!(vm.counter("from_uplink", "redirected") >= redirected + MIN_STREAM_PACKETS, "{}", vm.stats());
    // The pod's side of the connection leaves by FIB lookup + redirect.
    assert!(vm.counter("from_pod", "redirected_out") > out);
    assert_eq!(vm.counter("to_pod", "flows_verified"), verified + 2, "the TCP and the UDP flow");
    let stats = vm.stats();
    assert_eq!(stats["uplinks"][UPLINK]["ingress_programs"], serde_json::json!(["from_uplink"]));
    assert_eq!(stats["uplinks"][UPLINK]["egress_programs"], serde_json::json!(["to_uplink"]));
}

/// With inbound packets redirected and the pod's replies on the kernel path, conntrack would
/// see the pod's SYN-ACK as a new flow and `ipMasq` would rewrite its source: connections
/// from outside to a pod would break. Replies of a verified flow bypass the kernel too.
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
}

/// The pod's own connections out are masqueraded as configured: the kernel translates them,
/// so they never verify and stay on the kernel path in both directions.
#[test]
fn masqueraded_pod_to_remote_connections_stay_with_the_kernel_both_ways() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    vm.conf["ipMasq"] = serde_json::json!(true);
    vm.drop_invalid();
    let pod = vm.add_pod();
    let out = vm.counter("from_pod", "redirected_out");
    let kernel = vm.counter("from_pod", "pass_kernel_flow");
    let to_vm = vm.counter("from_uplink", "pass_not_local");
    let verified = vm.counter("to_uplink", "flows_verified");
    assert_eq!(tcp_transfer(&pod.ns, &router.ns, 0, SocketAddrV4::new(Router::addr_for(1), 7007), STREAM), STREAM);
    assert!(vm.counter("from_pod", "pass_kernel_flow") >= kernel + MIN_STREAM_PACKETS);
    assert_eq!(vm.counter("from_pod", "redirected_out"), out);
    assert_eq!(vm.counter("to_uplink", "flows_verified"), verified, "a masqueraded flow never verifies");
    // The answers come back to the VM's address, not the pod's.
    assert!(vm.counter("from_uplink", "pass_not_local") > to_vm);
}

/// Without masquerade the kernel routes the pod's SYN out untranslated; the uplink's egress
/// program sees that, and the rest of the connection bypasses the kernel both ways, with
/// conntrack and its INVALID drop in place.
#[test]
fn pod_to_remote_connections_bypass_the_kernel_after_the_syn() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    vm.drop_invalid();
    let pod = vm.add_pod();
    let out = vm.counter("from_pod", "redirected_out");
    let new_flows = vm.counter("from_pod", "pass_new_flow");
    let verified = vm.counter("to_uplink", "flows_verified");
    let inbound = vm.counter("from_uplink", "redirected");
    assert_eq!(tcp_transfer(&pod.ns, &router.ns, 0, SocketAddrV4::new(Router::addr_for(1), 7008), STREAM), STREAM);
    assert!(vm.counter("from_pod", "redirected_out") >= out + MIN_STREAM_PACKETS);
    assert_eq!(vm.counter("from_pod", "pass_new_flow"), new_flows + 1, "the SYN takes the kernel path");
    assert_eq!(vm.counter("to_uplink", "flows_verified"), verified + 1);
    assert!(vm.counter("from_uplink", "redirected") > inbound, "the remote's answers are redirected");
    let remote = Router::addr_for(1);
    assert_eq!(udp_ttl(&pod.ns, None, &router.ns, remote, 64), 63);
}

#[test]
fn fast_path_always_redirects_too() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "always");
    let a = vm.add_pod();
    let b = vm.add_pod();
    assert!(vm.operator_json(&["endpoints"]).as_array().unwrap().iter().all(|e| e["mode"] == "always"));
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
    tracked.drop_invalid();
    for vm in [&plain, &tracked] {
        let pod = vm.add_pod();
        let vm_addr = Ipv4Addr::new(192, 168, vm.index, 2);
        assert_eq!(tcp_transfer(&vm.ns, &pod.ns, 0, SocketAddrV4::new(pod.ip, 7009), 1 << 20), 1 << 20);
        assert_eq!(tcp_transfer(&pod.ns, &vm.ns, 0, SocketAddrV4::new(vm_addr, 7010), 1 << 20), 1 << 20);
    }
}
