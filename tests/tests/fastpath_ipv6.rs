//! The fast path's IPv6 at its edges, on dual-stack pods: the hop limit, and ICMPv6
//! "packet too big" about a bypassed flow (IPv6 routers never fragment, so without it a
//! connection through a hop with a lower MTU stalls).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use testbed::dual_stack::{dual_stack_with, from_pod_counter, ipv6_of, route_ipv6_through_the_vrouter, VROUTER6};
use testbed::fastpath_support::{forget_conntrack, set_unicast_hops, try_tcp_transfer_with, udp_hops, udp_socket_at, wait_until};
use testbed::netns::{unique, NetNs};
use testbed::vm::Vm;

/// Several MB: many full-size segments.
const STREAM: usize = 4 << 20;
/// At least this many packets for STREAM even if every packet is a 64 KiB GSO skb.
const MIN_STREAM_PACKETS: u64 = (STREAM / 65536) as u64;

/// A routed IPv6 packet loses one hop on its way through the VM: each datagram the fast
/// path delivers arrives with the hop limit one lower, and one that would expire is the
/// kernel's (which answers with time exceeded).
#[test]
fn the_fast_path_decrements_the_ipv6_hop_limit() {
    let vm = Vm::new();
    let conf = dual_stack_with(&vm, "always");
    let (a, b) = (vm.pod(), vm.pod());
    let (ra, rb) = (vm.add(&conf, &a).result(), vm.add(&conf, &b).result());
    let (a6, b6) = (ipv6_of(&ra), ipv6_of(&rb));
    let before = from_pod_counter(&vm, "redirected");
    assert_eq!(udp_hops(&a.ns, Some(IpAddr::V6(a6)), &b.ns, IpAddr::V6(b6), 7), 6, "hop limit after one router");
    assert!(from_pod_counter(&vm, "redirected") > before, "the probe took the fast path");
    let before = from_pod_counter(&vm, "pass_ttl");
    let tx = udp_socket_at(&a.ns, IpAddr::V6(a6));
    set_unicast_hops(&tx, 1);
    tx.send_to(b"expiring", SocketAddr::new(IpAddr::V6(b6), 9)).unwrap();
    wait_until("from_pod passes the expiring datagram to the kernel", || from_pod_counter(&vm, "pass_ttl") > before);
    for (p, r) in [(&a, &ra), (&b, &rb)] {
        vm.del(&conf, p, Some(r)).assert_ok();
    }
}

/// A host behind the vrouter over a hop with a lower MTU: the vrouter's end of the link
/// has `mtu`, the far host's own interface 1500, so TCP's MSS does not hide the hop and
/// the vrouter answers full-size packets with "packet too big".
struct Far {
    ns: NetNs,
}

impl Far {
    const ADDR: &str = "fd00:200::2";

    fn behind(vm: &Vm, mtu: u32) -> Far {
        let ns = NetNs::new("f6");
        let link = unique("fl");
        vm.vrouter.ip(&format!("link add {link} type veth peer name far0 netns {}", ns.name()));
        vm.vrouter.ip(&format!("link set {link} mtu {mtu} up"));
        vm.vrouter.ip(&format!("addr add fd00:200::1/64 dev {link} nodad"));
        vm.vrouter.sh("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
        ns.ip("link set far0 mtu 1500 up");
        ns.ip(&format!("addr add {}/64 dev far0 nodad", Far::ADDR));
        ns.ip("-6 route add default via fd00:200::1");
        Far { ns }
    }

    fn addr() -> Ipv6Addr {
        Far::ADDR.parse().unwrap()
    }
}

/// A pod sends a bulk transfer over an IPv6 connection the fast path bypasses, through a
/// hop with a lower MTU. The vrouter's "packet too big" quotes a flow conntrack no longer
/// knows (its entry expired, as it does two minutes into any bypassed connection), so on
/// the kernel path it is INVALID and ip6tables' INVALID drop (kube-proxy installs one)
/// swallows it: the pod would resend full-size segments until the connection times out.
/// Handled as its flow is, it reaches the pod.
#[test]
fn packet_too_big_for_a_bypassed_ipv6_flow_reaches_the_pod_past_the_invalid_drop() {
    let vm = Vm::new();
    let conf = dual_stack_with(&vm, "auto");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    route_ipv6_through_the_vrouter(&vm, ipv6_of(&res));
    let far = Far::behind(&vm, 1400);
    vm.ns.sh("ip6tables", &["-w", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
    let out = from_pod_counter(&vm, "redirected_out");
    let connect = SocketAddr::new(IpAddr::V6(Far::addr()), 7311);
    let sent = try_tcp_transfer_with(&pod.ns, &far.ns, 0, connect, STREAM, 0, || forget_conntrack(&vm.ns));
    assert_eq!(sent, Ok(STREAM));
    assert!(from_pod_counter(&vm, "redirected_out") >= out + MIN_STREAM_PACKETS, "the transfer bypassed the kernel");
    // The pod learnt the path MTU: the ICMPv6 error arrived (from the vrouter's far side).
    let route = pod.ns.ip(&format!("-6 route get {}", Far::ADDR));
    assert!(route.contains("mtu 1400"), "the pod has no path MTU for {} (vrouter {VROUTER6}): {route}", Far::ADDR);
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}
