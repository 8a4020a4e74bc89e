//! Dual-stack pods (issue 12): host-local hands out one IPv4 and one IPv6 address, and the
//! plugin wires both. The pod's IPv6 state, seed-style; traffic between two pods and from
//! the vrouter over IPv6, and forged IPv6 sources dropped (proven by what arrives), each
//! with the fast path off (the kernel's rpfilter rule alone) and on (from_pod first; the
//! IPv6 traffic redirected, proven by the counters); the hop limit; a Service over IPv6
//! (NAT stays on the kernel path); CHECK, DEL and GC for both families; results of every
//! spec version; `ipMasq` and `proxyNeighbor` for IPv6; two IPv6 addresses refused with
//! nothing left.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde_json::{json, Value};
use testbed::dual_stack::{dual_stack, dual_stack_with, from_pod_counter, ipv6_of, route_ipv6_through_the_vrouter, Redirects};
use testbed::fastpath_support::{udp_send_in_order, udp_socket_at};
use testbed::patience::io_timeout;
use testbed::vm::{with_prev, Pod, Vm};

/// The host veth of the pod behind `result` (the result's first interface).
fn host_veth(result: &Value) -> String {
    result["interfaces"][0]["name"].as_str().unwrap().to_string()
}

#[test]
fn a_dual_stack_pod_gets_both_families_as_the_design_says() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let conf = dual_stack(&vm, "1.0.0");
    let res = vm.add(&conf, &pod).result();

    // IPv4 first (runtimes take the first address as the pod's), IPv6 as a /128 with the
    // link-local gateway, both on the pod's interface.
    let ips = res["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{res}");
    assert!(ips[0]["address"].as_str().unwrap().starts_with("10.10.10."), "{res}");
    let ip6 = ipv6_of(&res);
    assert_eq!(ips[1], json!({"address": format!("{ip6}/128"), "gateway": "fe80::1", "interface": 1}), "{res}");
    assert!(res["routes"].as_array().unwrap().contains(&json!({"dst": "::/0", "gw": "fe80::1"})), "{res}");

    // The pod: its address usable at once (no DAD), the default route via fe80::1 and the
    // gateway's neighbour entry fixed to the host veth's MAC.
    let addr = pod.ns.ip("-6 -o addr show dev eth0 scope global");
    assert!(addr.contains(&format!("inet6 {ip6}/128")), "{addr}");
    assert!(!addr.contains("tentative"), "{addr}");
    assert_eq!(pod.ns.ip("-6 route show default").trim(), "default via fe80::1 dev eth0 metric 1024 pref medium");
    let host = host_veth(&res);
    let host_mac = vm.ns.ip(&format!("-j link show {host}"));
    let host_mac: Value = serde_json::from_str(&host_mac).unwrap();
    let neigh = pod.ns.ip("-6 neigh show fe80::1 dev eth0");
    assert_eq!(neigh.trim(), format!("fe80::1 lladdr {} PERMANENT", host_mac[0]["address"].as_str().unwrap()));
    for key in ["accept_ra", "autoconf", "accept_dad"] {
        assert_eq!(pod.ns.sh("sysctl", &["-n", &format!("net.ipv6.conf.eth0.{key}")]).trim(), "0", "pod {key}");
    }

    // The host: the /128 route, fe80::1 on the veth, IPv6 forwarding, the rpfilter rule.
    assert_eq!(vm.ns.ip(&format!("-6 route show {ip6}")).trim(), format!("{ip6} dev {host} metric 1024 pref medium"));
    assert!(vm.ns.ip(&format!("-6 -o addr show dev {host}")).contains("inet6 fe80::1/64 scope link"));
    assert_eq!(vm.ns.sh("sysctl", &["-n", "net.ipv6.conf.all.forwarding"]).trim(), "1");
    let raw = vm.ns.sh("ip6tables", &["-w", "-t", "raw", "-S", "PREROUTING"]);
    assert!(raw.contains(&format!("-i {host} -m rpfilter --invert")), "{raw}");

    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.snapshot().assert_same_as(&before, "after DEL of a dual-stack pod");
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

#[test]
fn dual_stack_pods_talk_over_ipv6_with_the_fast_path_off() {
    pods_talk_over_ipv6("off");
}

/// `auto`: the first datagram of each flow takes the kernel path; the answers, once the
/// kernel was seen to deliver the flow untranslated, the fast path.
#[test]
fn dual_stack_pods_talk_over_ipv6_with_the_fast_path_auto() {
    pods_talk_over_ipv6("auto");
}

/// `always`: every datagram to a pod's IPv6 address is redirected.
#[test]
fn dual_stack_pods_talk_over_ipv6_with_the_fast_path_always() {
    pods_talk_over_ipv6("always");
}

/// Two dual-stack pods and the vrouter talk over IPv6, through the host. With the fast
/// path on, its counters prove it carried them: only IPv6 is sent while they are read.
fn pods_talk_over_ipv6(fast_path: &str) {
    let vm = Vm::new();
    let on = fast_path != "off";
    let conf = dual_stack_with(&vm, fast_path);
    let (a, b) = (vm.pod(), vm.pod());
    let (ra, rb) = (vm.add(&conf, &a).result(), vm.add(&conf, &b).result());
    let (a6, b6) = (ipv6_of(&ra), ipv6_of(&rb));
    let before = on.then(|| Redirects::read(&vm));
    exchange(&a, a6, &b, b6);
    if let Some(before) = &before {
        // auto: b's answer (the flow verified by a's first datagram); always: both.
        let want = if fast_path == "always" { 2 } else { 1 };
        let got = Redirects::read(&vm).pod_to_pod - before.pod_to_pod;
        assert!(got >= want, "from_pod redirected {got} IPv6 datagrams between the pods, want at least {want}");
    }

    // The vrouter reaches the pod through the VM's IPv6 address, as its /128 route says.
    route_ipv6_through_the_vrouter(&vm, a6);
    let rx = udp_socket_at(&a.ns, IpAddr::V6(a6));
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let tx = udp_socket_at(&vm.vrouter, "fd00:10:10::1".parse().unwrap());
    tx.set_read_timeout(Some(io_timeout())).unwrap();
    let before = on.then(|| Redirects::read(&vm));
    let mut buf = [0u8; 64];
    // Twice each way: in `auto` the second datagram from the vrouter rides the flow that
    // the first one and the pod's answer verified.
    for round in ["first", "second"] {
        tx.send_to(round.as_bytes(), rx.local_addr().unwrap()).unwrap();
        let (n, from) = rx.recv_from(&mut buf).expect("the vrouter's datagram arrives in the pod");
        assert_eq!((&buf[..n], from.ip()), (round.as_bytes(), "fd00:10:10::1".parse::<IpAddr>().unwrap()));
        // And the pod answers back out through its default route.
        rx.send_to(b"answer", from).unwrap();
        let (n, _) = tx.recv_from(&mut buf).expect("the pod's answer reaches the vrouter");
        assert_eq!(&buf[..n], b"answer");
    }
    if let Some(before) = &before {
        let after = Redirects::read(&vm);
        let (into_pod, out) = (after.from_the_network - before.from_the_network, after.out_of_the_vm - before.out_of_the_vm);
        let want_in = if fast_path == "always" { 2 } else { 1 };
        assert!(into_pod >= want_in, "from_uplink redirected {into_pod} IPv6 datagrams into the pod, want at least {want_in}");
        // Out of the VM only `auto` redirects (verified flows; `always` is about pod
        // destinations): both answers, on the flow the first datagram verified.
        if fast_path == "auto" {
            assert!(out >= 2, "from_pod sent {out} IPv6 answers out of the VM, want 2");
        }
    }

    for (p, r) in [(&a, &ra), (&b, &rb)] {
        vm.del(&conf, p, Some(r)).assert_ok();
    }
}

/// One datagram each way between two pods; returns after both arrived.
fn exchange(a: &Pod, a6: Ipv6Addr, b: &Pod, b6: Ipv6Addr) {
    let (sa, sb) = (udp_socket_at(&a.ns, IpAddr::V6(a6)), udp_socket_at(&b.ns, IpAddr::V6(b6)));
    for s in [&sa, &sb] {
        s.set_read_timeout(Some(io_timeout())).unwrap();
    }
    let mut buf = [0u8; 64];
    sa.send_to(b"a to b", sb.local_addr().unwrap()).unwrap();
    let (n, from) = sb.recv_from(&mut buf).expect("a's datagram arrives at b");
    assert_eq!((&buf[..n], from), (&b"a to b"[..], sa.local_addr().unwrap()));
    sb.send_to(b"b to a", from).unwrap();
    let (n, from) = sa.recv_from(&mut buf).expect("b's datagram arrives at a");
    assert_eq!((&buf[..n], from), (&b"b to a"[..], sb.local_addr().unwrap()));
}

#[test]
fn a_dual_stack_pod_cannot_send_from_a_forged_ipv6_source_with_the_fast_path_off() {
    forged_ipv6_sources_are_dropped("off");
}

/// With the fast path on, from_pod drops them first (counted as spoofed); the rpfilter
/// rule stays beneath it.
#[test]
fn a_dual_stack_pod_cannot_send_from_a_forged_ipv6_source_with_the_fast_path_on() {
    forged_ipv6_sources_are_dropped("auto");
}

/// A dual-stack pod that forges its IPv6 source (another address of its subnet, one from
/// elsewhere) reaches nobody with it. Its own address still works, and arriving after the
/// forged datagrams proves they were dropped, not delayed.
fn forged_ipv6_sources_are_dropped(fast_path: &str) {
    let vm = Vm::new();
    let conf = dual_stack_with(&vm, fast_path);
    let (a, b) = (vm.pod(), vm.pod());
    let (ra, rb) = (vm.add(&conf, &a).result(), vm.add(&conf, &b).result());
    let (a6, b6) = (ipv6_of(&ra), ipv6_of(&rb));
    let forged: [Ipv6Addr; 2] = ["fd00:10:10::99".parse().unwrap(), "2001:db8:99::5".parse().unwrap()];
    for f in forged {
        // A pod with CAP_NET_ADMIN can add any address to its own interface.
        a.ns.ip(&format!("addr add {f}/128 dev eth0 nodad"));
    }
    let rx = udp_socket_at(&b.ns, IpAddr::V6(b6));
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to: SocketAddr = rx.local_addr().unwrap();
    let sends: Vec<(IpAddr, SocketAddr, &[u8])> =
        vec![(forged[0].into(), to, b"forged in subnet"), (forged[1].into(), to, b"forged elsewhere"), (a6.into(), to, b"genuine")];
    let spoofed = (fast_path != "off").then(|| from_pod_counter(&vm, "drop_spoofed"));
    udp_send_in_order(&a.ns, &sends);
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).expect("the genuine datagram arrives");
    assert_eq!((&buf[..n], from.ip()), (&b"genuine"[..], IpAddr::V6(a6)), "a forged datagram arrived first");
    if let Some(before) = spoofed {
        assert_eq!(from_pod_counter(&vm, "drop_spoofed"), before + 2, "from_pod must drop both forged datagrams itself");
    }
    // What `veth-route stats` says guards the pod.
    let stats = vm.ns.sh(testbed::cni_runner::plugin_binary().to_str().unwrap(), &["stats", "--pin-dir", vm.pin_dir.to_str().unwrap()]);
    let line = stats.lines().find(|l| l.contains(&host_veth(&ra))).unwrap_or_else(|| panic!("no line for the pod's veth: {stats}"));
    assert!(line.ends_with("ip6tables rpfilter rule"), "{line}");
    if fast_path != "off" {
        assert!(line.contains(&format!("IPv6 source {a6} and link-local")), "{line}");
    }

    for (p, r) in [(&a, &ra), (&b, &rb)] {
        vm.del(&conf, p, Some(r)).assert_ok();
    }
}

/// `ipMasq` hides a dual-stack pod's IPv6 behind the VM's own, as it does its IPv4: the
/// vrouter sees the VM's address, and the answer finds its way back to the pod. Inside the
/// pods' subnet nothing is translated. DEL removes the ip6tables chain with the iptables one.
#[test]
fn ip_masq_translates_a_dual_stack_pods_ipv6_too() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut conf = dual_stack(&vm, "1.0.0");
    conf["ipMasq"] = json!(true);
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let ip6 = ipv6_of(&res);
    // The VM's IPv6 on its uplink, and a destination beyond the vrouter.
    vm.ns.ip("addr add fd00:10:10::8/64 dev eth0 nodad");
    vm.vrouter.ip("addr add fd00:10:10::1/64 dev qr0 nodad");
    vm.vrouter.ip("addr add 2001:db8:ff::1/128 dev qr0 nodad");
    vm.ns.ip("-6 route add default via fd00:10:10::1 dev eth0");
    let far = udp_socket_at(&vm.vrouter, "2001:db8:ff::1".parse().unwrap());
    far.set_read_timeout(Some(io_timeout())).unwrap();
    let near = udp_socket_at(&vm.vrouter, "fd00:10:10::1".parse().unwrap());
    near.set_read_timeout(Some(io_timeout())).unwrap();
    let sock = udp_socket_at(&pod.ns, IpAddr::V6(ip6));
    sock.set_read_timeout(Some(io_timeout())).unwrap();
    let mut buf = [0u8; 64];

    sock.send_to(b"out", far.local_addr().unwrap()).unwrap();
    let (n, from) = far.recv_from(&mut buf).expect("the pod's datagram leaves the VM");
    assert_eq!((&buf[..n], from.ip()), (&b"out"[..], "fd00:10:10::8".parse::<IpAddr>().unwrap()), "not masqueraded");
    far.send_to(b"back", from).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("the answer reaches the pod through reverse NAT");
    assert_eq!(&buf[..n], b"back");

    sock.send_to(b"near", near.local_addr().unwrap()).unwrap();
    let (_, from) = near.recv_from(&mut buf).expect("the datagram inside the subnet arrives");
    assert_eq!(from.ip(), IpAddr::V6(ip6), "traffic inside the pods' subnet must keep the pod's address");

    vm.check(&conf, &pod, &res).assert_ok();
    vm.del(&conf, &pod, Some(&res)).assert_ok();
    vm.ns.ip("-6 route del default via fd00:10:10::1 dev eth0");
    vm.ns.ip("addr del fd00:10:10::8/64 dev eth0");
    vm.snapshot().assert_same_as(&before, "after DEL of a masqueraded dual-stack pod");
}

/// A Service over IPv6: ip6tables DNATs a VIP to a pod of the same VM, with the fast path
/// on. The connection establishes, so the backend's answers came back through reverse NAT
/// (from the VIP): the translated flow never verifies, so it stays on the kernel path,
/// which translates both ways.
#[test]
fn a_service_vip_over_ipv6_reaches_its_backend_pod() {
    let vm = Vm::new();
    let conf = dual_stack_with(&vm, "auto");
    let (client, backend) = (vm.pod(), vm.pod());
    let (rc, rb) = (vm.add(&conf, &client).result(), vm.add(&conf, &backend).result());
    let vip: Ipv6Addr = "fd00:96::10".parse().unwrap();
    vm.ns.dnat("tcp", vip.into(), 80, SocketAddr::new(IpAddr::V6(ipv6_of(&rb)), 8080));
    let _server = testbed::probe::TcpServer::start_on(&backend.ns, IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080, "backend");
    assert_eq!(testbed::probe::tcp_read(&client.ns, vip, 80).as_deref(), Ok("backend"));
    vm.ns.sh("ip6tables", &["-w", "-t", "nat", "-F", "PREROUTING"]);
    for (p, r) in [(&client, &rc), (&backend, &rb)] {
        vm.del(&conf, p, Some(r)).assert_ok();
    }
}

/// Something a test does to the node (break a piece, repair it).
type Action<'a> = Box<dyn Fn() + 'a>;

/// CHECK finds each IPv6 piece missing: the host route, the veth's gateway address, the
/// rpfilter rule, the pod's neighbour entry for fe80::1.
#[test]
fn check_catches_each_missing_ipv6_piece() {
    let vm = Vm::new();
    let conf = dual_stack(&vm, "1.0.0");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let (ip6, host) = (ipv6_of(&res), host_veth(&res));
    let tag = format!("veth-route/cni0/{}/eth0", pod.id);
    let rule = ["-i", &host, "-m", "rpfilter", "--invert", "-m", "comment", "--comment", &tag, "-j", "DROP"];
    let ip6tables = |op: &str| drop(vm.ns.sh("ip6tables", &[&["-w", "-t", "raw", op, "PREROUTING"][..], &rule[..]].concat()));
    let host_mac: Value = serde_json::from_str(&vm.ns.ip(&format!("-j link show {host}"))).unwrap();
    let host_mac = host_mac[0]["address"].as_str().unwrap().to_string();
    // (what breaks, how CHECK says it, the ip commands that break and repair it)
    let breakages: [(&str, String, Action, Action); 4] = [
        (
            "host route",
            format!("host route `{ip6} dev {host}` is missing"),
            Box::new(|| drop(vm.ns.ip(&format!("-6 route del {ip6}/128 dev {host}")))),
            Box::new(|| drop(vm.ns.ip(&format!("-6 route add {ip6}/128 dev {host} proto boot")))),
        ),
        (
            "IPv6 gateway address",
            format!("host veth {host} lacks the IPv6 gateway address fe80::1/64"),
            Box::new(|| drop(vm.ns.ip(&format!("-6 addr del fe80::1/64 dev {host}")))),
            Box::new(|| drop(vm.ns.ip(&format!("-6 addr add fe80::1/64 dev {host} nodad")))),
        ),
        ("rpfilter rule", format!("no rpfilter rule for host veth {host}"), Box::new(|| ip6tables("-D")), Box::new(|| ip6tables("-I"))),
        (
            "gateway neighbour entry",
            "no neighbour entry for gateway fe80::1".to_string(),
            Box::new(|| drop(pod.ns.ip("-6 neigh del fe80::1 dev eth0"))),
            Box::new(|| drop(pod.ns.ip(&format!("-6 neigh replace fe80::1 lladdr {host_mac} dev eth0 nud permanent")))),
        ),
    ];
    vm.check(&conf, &pod, &res).assert_ok();
    for (what, needle, breaks, repairs) in &breakages {
        breaks();
        let (_, _, err) = vm.check(&conf, &pod, &res).error();
        assert!(err.to_string().contains(needle.as_str()), "{what}: {err}");
        repairs();
        vm.check(&conf, &pod, &res).assert_ok();
    }
    vm.del(&conf, &pod, Some(&res)).assert_ok();
}

/// GC removes a stale dual-stack attachment's rpfilter rule with its veth; DEL without
/// prevResult removes the rule too.
#[test]
fn gc_and_del_without_prev_result_remove_the_rpfilter_rule() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let conf = dual_stack(&vm, "1.0.0");
    let (stale, kept) = (vm.pod(), vm.pod());
    let _ = vm.add(&conf, &stale).result();
    let res_kept = vm.add(&conf, &kept).result();
    let mut gc = with_prev(&conf, None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": kept.id, "ifname": "eth0"}]);
    gc["cniVersion"] = json!("1.1.0");
    vm.plugin("GC", &gc, None).assert_ok();
    let raw = vm.ns.sh("ip6tables", &["-w", "-t", "raw", "-S", "PREROUTING"]);
    assert!(!raw.contains(&stale.id), "GC left the stale pod's rule: {raw}");
    assert!(raw.contains(&kept.id), "GC removed the kept pod's rule: {raw}");
    vm.del(&conf, &kept, None).assert_ok();
    vm.snapshot().assert_same_as(&before, "after GC and DEL without prevResult");
    let _ = res_kept;
}

/// The result lists the IPv6 address in every spec version's shape: `version: "6"` up to
/// 0.4.0, none from 1.0.0. CHECK accepts each (0.4.0 and later have CHECK).
#[test]
fn results_of_every_spec_version_carry_the_ipv6_address() {
    let vm = Vm::new();
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = dual_stack(&vm, version);
        let pod = vm.pod();
        let res = vm.add(&conf, &pod).result();
        assert_eq!(res["cniVersion"], version);
        let ip6 = &res["ips"][1];
        assert!(ip6["address"].as_str().unwrap().ends_with("/128"), "{version}: {res}");
        if version.starts_with("0.") {
            assert_eq!(ip6["version"], "6", "{version}: {res}");
            assert_eq!(res["ips"][0]["version"], "4", "{version}: {res}");
        } else {
            assert!(ip6.get("version").is_none(), "{version}: {res}");
        }
        if version >= "0.4.0" {
            vm.check(&conf, &pod, &res).assert_ok();
        }
        vm.del(&conf, &pod, Some(&res)).assert_ok();
    }
}

/// `proxyNeighbor` answers neighbour solicitations for a dual-stack pod's IPv6 on the
/// uplink (proxy NDP), so the vrouter reaches the pod over IPv6 without a route, as it does
/// over IPv4 by ARP. CHECK sees the entry go; DEL without prevResult removes both.
#[test]
fn proxy_neighbor_answers_ndp_for_a_dual_stack_pod() {
    let vm = Vm::new();
    let mut conf = dual_stack(&vm, "1.1.0");
    conf["proxyNeighbor"] = json!({"uplink": "eth0"});
    // The VM's own IPv6 on the uplink, as DHCPv6 gives it: the pod's answers go on-link.
    vm.ns.ip("addr add fd00:10:10::8/64 dev eth0 nodad");
    vm.vrouter.ip("addr add fd00:10:10::1/64 dev qr0 nodad");
    let pod = vm.pod();
    let res = vm.add(&conf, &pod).result();
    let ip6 = ipv6_of(&res);
    let entries = vm.ns.ip("-6 neigh show proxy dev eth0");
    assert!(entries.contains(&ip6.to_string()), "{entries}");
    assert!(!vm.vrouter.ip("-6 route").contains(&ip6.to_string()), "the vrouter must have no route to the pod");

    let rx = udp_socket_at(&pod.ns, IpAddr::V6(ip6));
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let tx = udp_socket_at(&vm.vrouter, "fd00:10:10::1".parse().unwrap());
    tx.set_read_timeout(Some(io_timeout())).unwrap();
    tx.send_to(b"on-link", rx.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).expect("the vrouter's datagram reaches the pod through proxy NDP");
    assert_eq!(&buf[..n], b"on-link");
    rx.send_to(b"back", from).unwrap();
    let (n, _) = tx.recv_from(&mut buf).expect("the pod's answer reaches the vrouter");
    assert_eq!(&buf[..n], b"back");
    vm.check(&conf, &pod, &res).assert_ok();

    vm.ns.ip(&format!("-6 neigh del proxy {ip6} dev eth0"));
    let (code, msg, _) = vm.check(&conf, &pod, &res).error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains(&format!("no proxy neighbour entry for {ip6} on eth0")), "{msg}");
    vm.ns.ip(&format!("-6 neigh add proxy {ip6} dev eth0 proto 86"));

    vm.del(&conf, &pod, None).assert_ok();
    assert_eq!(vm.ns.ip("neigh show proxy dev eth0"), "", "DEL left a proxy entry");
    assert_eq!(vm.ns.ip("-6 neigh show proxy dev eth0"), "", "DEL left an IPv6 proxy entry");
}

/// Two IPv6 addresses are refused (which one would the pod use?), after IPAM answered,
/// with everything rolled back (host-local's allocations included).
#[test]
fn two_ipv6_addresses_are_refused_and_leave_nothing() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let mut conf = dual_stack(&vm, "1.0.0");
    conf["ipam"]["ranges"].as_array_mut().unwrap().push(json!([{"subnet": "fd00:20:20::/64"}]));
    let (code, msg, err) = vm.add(&conf, &pod).error();
    assert_eq!(code, 123, "{err}");
    assert!(msg.contains("returned 2 IPv6 addresses"), "{err}");
    vm.snapshot().assert_same_as(&before, "after the refused ADD with two IPv6 addresses");
}
