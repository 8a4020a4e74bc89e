//! Anti-spoofing without eBPF (`fastPath: off`): strict rp_filter on each host veth drops
//! IPv4 from addresses the pod was not given, and IPv6, which an IPv4-only pod has no
//! business sending, does not get past its host veth. Every case proves it by what
//! arrives: the forged datagram goes first, then one that must arrive on the same path,
//! so once that one is there the forged one was dropped or delivered
//! ([`udp_send_in_order`]). With `antiSpoof: false` the same forged datagrams arrive.
//!
//! Topology (fastpath_support): pods 10.10.1.0/24 behind VM uplink `up0` 192.168.1.2/24,
//! which also gets 2001:db8:1::2/64 here.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde_json::json;
use testbed::fastpath_support::{udp_send_in_order, udp_socket_at, Pod, Router, Vm, UPLINK};
use testbed::kernel::{self, Capabilities};
use testbed::netns::TempDir;
use testbed::patience::io_timeout;
use testbed::probe::netstat;

/// The VM's uplink address, a receiver for datagrams to "the VM".
const VM_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
/// An address on the VM's uplink subnet that the pod does not own.
const UPLINK_FORGED: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
/// The VM's IPv6 address on its uplink.
const VM_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// Global IPv6 sources an IPv4-only pod could forge: elsewhere, and on the uplink's subnet.
const FORGED6: [Ipv6Addr; 2] = [Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 5), Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x99)];

/// A VM with the kernel path only, logging at info to a file, `all.rp_filter` as given
/// and the per-device default off (so what the plugin sets is what counts), and an IPv6
/// address on its uplink.
fn vm(router: &Router, anti_spoof: bool, all_rp_filter: u32, fast_path: &str) -> (Vm, TempDir) {
    let logs = TempDir::new("aslog");
    let mut vm = Vm::new(router, 1, fast_path);
    vm.conf["antiSpoof"] = json!(anti_spoof);
    vm.conf["logFile"] = json!(logs.path().join("veth-route.log"));
    vm.conf["logLevel"] = json!("info");
    vm.ns.sh("sysctl", &["-qw", &format!("net.ipv4.conf.all.rp_filter={all_rp_filter}"), "net.ipv4.conf.default.rp_filter=0"]);
    vm.ns.ip(&format!("-6 addr add {VM_IP6}/64 dev {UPLINK} nodad"));
    (vm, logs)
}

fn log(logs: &TempDir) -> String {
    std::fs::read_to_string(logs.path().join("veth-route.log")).unwrap_or_default()
}

fn host_veth(pod: &Pod) -> String {
    pod.result["interfaces"][0]["name"].as_str().unwrap().to_string()
}

fn sysctl(vm: &Vm, key: &str) -> String {
    vm.ns.sh("cat", &[&format!("/proc/sys/{key}")]).trim().to_string()
}

/// Let `pod` send from `addr` too (its kernel sends from any address on its interface).
fn forge(pod: &Pod, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => pod.ns.ip(&format!("addr add {a}/32 dev eth0")),
        IpAddr::V6(a) => pod.ns.ip(&format!("-6 addr add {a}/128 dev eth0 nodad")),
    };
}

/// What an attacker with CAP_NET_ADMIN in its own netns can do: route IPv6 to the VM out
/// of eth0, to the host veth's MAC (no NDP needed, so the datagram leaves the pod whatever
/// the host answers).
fn ipv6_route_to_vm(pod: &Pod) {
    let host_mac = pod.result["interfaces"][0]["mac"].as_str().unwrap();
    pod.ns.ip("-6 route add 2001:db8:1::/64 dev eth0");
    pod.ns.ip(&format!("-6 neigh replace {VM_IP6} lladdr {host_mac} dev eth0 nud permanent"));
}

/// Datagrams on `rx` up to and including `last`, with their sources.
fn receive_until(rx: &UdpSocket, last: &[u8]) -> Vec<(String, IpAddr)> {
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let (n, from) = rx.recv_from(&mut buf).unwrap_or_else(|e| panic!("waiting for {:?}: {e}", String::from_utf8_lossy(last)));
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from.ip()));
        if &buf[..n] == last {
            return got;
        }
    }
}

/// Whatever is queued on `rx` right now.
fn queued(rx: &UdpSocket) -> Vec<(String, IpAddr)> {
    rx.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match rx.recv_from(&mut buf) {
            Ok((n, from)) => got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from.ip())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return got,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// `attacker` sends a datagram from `forged`, then one from its own address, to a socket at
/// `to` in `receiver`. Returns what arrived (through the genuine one) and by how much the
/// VM's rp_filter drop counter moved.
fn forged_then_genuine(
    vm: &Vm,
    attacker: &Pod,
    forged: Ipv4Addr,
    receiver: &testbed::netns::NetNs,
    to: Ipv4Addr,
) -> (Vec<(String, IpAddr)>, u64) {
    let rx = udp_socket_at(receiver, to.into());
    let dst = SocketAddr::new(to.into(), rx.local_addr().unwrap().port());
    let before = netstat(&vm.ns, "IPReversePathFilter");
    udp_send_in_order(&attacker.ns, &[(forged.into(), dst, b"forged"), (attacker.ip.into(), dst, b"genuine")]);
    let got = receive_until(&rx, b"genuine");
    (got, netstat(&vm.ns, "IPReversePathFilter") - before)
}

/// `attacker` sends a datagram from each `FORGED6` source to the VM's IPv6 address, then an
/// IPv4 one from its own address to the VM; returns the IPv6 datagrams that arrived.
fn forged_ipv6_then_genuine_ipv4(vm: &Vm, attacker: &Pod) -> Vec<(String, IpAddr)> {
    let rx6 = udp_socket_at(&vm.ns, VM_IP6.into());
    let rx4 = udp_socket_at(&vm.ns, VM_IP.into());
    let dst6 = SocketAddr::new(VM_IP6.into(), rx6.local_addr().unwrap().port());
    let dst4 = SocketAddr::new(VM_IP.into(), rx4.local_addr().unwrap().port());
    udp_send_in_order(
        &attacker.ns,
        &[
            (FORGED6[0].into(), dst6, b"forged v6 global"),
            (FORGED6[1].into(), dst6, b"forged v6 uplink"),
            (attacker.ip.into(), dst4, b"genuine"),
        ],
    );
    assert_eq!(receive_until(&rx4, b"genuine"), [("genuine".to_string(), IpAddr::V4(attacker.ip))]);
    queued(&rx6)
}

#[test]
fn forged_ipv4_sources_are_dropped_by_strict_rp_filter() {
    let router = Router::new();
    let (vm, logs) = vm(&router, true, 0, "off");
    let attacker = vm.add_pod();
    let victim = vm.add_pod();
    let bystander = vm.add_pod();
    let veth = host_veth(&attacker);
    assert_eq!(sysctl(&vm, &format!("net/ipv4/conf/{veth}/rp_filter")), "1");
    let line = format!(
        "anti-spoofing for {} ({veth}): IPv4 by the kernel's strict rp_filter (eBPF from_pod not attached); IPv6 blocked by the kernel (disable_ipv6=1)",
        attacker.ip
    );
    assert!(log(&logs).contains(&line), "{}", log(&logs));

    for forged in [bystander.ip, UPLINK_FORGED] {
        forge(&attacker, forged.into());
        for (receiver, to) in [(&victim.ns, victim.ip), (&vm.ns, VM_IP)] {
            let (got, dropped) = forged_then_genuine(&vm, &attacker, forged, receiver, to);
            // Only the genuine one: a forged one delivered would have come first.
            assert_eq!(got, [("genuine".to_string(), IpAddr::V4(attacker.ip))], "{forged} -> {to}");
            assert_eq!(dropped, 1, "rp_filter drops for {forged} -> {to}");
        }
    }
}

#[test]
fn forged_ipv6_sources_do_not_get_past_the_host_veth() {
    let router = Router::new();
    let (vm, _logs) = vm(&router, true, 0, "off");
    let attacker = vm.add_pod();
    assert_eq!(sysctl(&vm, &format!("net/ipv6/conf/{}/disable_ipv6", host_veth(&attacker))), "1");
    ipv6_route_to_vm(&attacker);
    for forged in FORGED6 {
        forge(&attacker, forged.into());
    }
    assert_eq!(forged_ipv6_then_genuine_ipv4(&vm, &attacker), []);
}

#[test]
fn anti_spoof_off_lets_the_same_forged_datagrams_through() {
    let router = Router::new();
    let (vm, logs) = vm(&router, false, 0, "off");
    let sender = vm.add_pod();
    let receiver = vm.add_pod();
    let bystander = vm.add_pod();
    let veth = host_veth(&sender);
    assert_eq!(sysctl(&vm, &format!("net/ipv4/conf/{veth}/rp_filter")), "0");
    assert_eq!(sysctl(&vm, &format!("net/ipv6/conf/{veth}/disable_ipv6")), "0");
    assert!(log(&logs).contains(&format!("anti-spoofing for {} ({veth}): off (antiSpoof is false)", sender.ip)), "{}", log(&logs));

    for forged in [bystander.ip, UPLINK_FORGED] {
        forge(&sender, forged.into());
        for (ns, to) in [(&receiver.ns, receiver.ip), (&vm.ns, VM_IP)] {
            let (got, dropped) = forged_then_genuine(&vm, &sender, forged, ns, to);
            assert_eq!(
                got,
                [("forged".to_string(), IpAddr::V4(forged)), ("genuine".to_string(), IpAddr::V4(sender.ip))],
                "{forged} -> {to}"
            );
            assert_eq!(dropped, 0);
        }
    }

    ipv6_route_to_vm(&sender);
    for forged in FORGED6 {
        forge(&sender, forged.into());
    }
    let got = forged_ipv6_then_genuine_ipv4(&vm, &sender);
    assert_eq!(got, [("forged v6 global".to_string(), IpAddr::V6(FORGED6[0])), ("forged v6 uplink".to_string(), IpAddr::V6(FORGED6[1]))]);
}

/// `all.rp_filter=2` (Ubuntu's setting) wins over the veth's 1, and on a veth that holds the
/// gateway (`hostVeth`) loose lets a routable forged source through: ADD says so instead of
/// claiming protection, and the datagram indeed arrives.
#[test]
fn loose_rp_filter_is_reported_where_it_lets_forged_sources_through() {
    let router = Router::new();
    let (mut vm, logs) = vm(&router, true, 2, "off");
    vm.conf["gatewayMode"] = json!("hostVeth");
    let attacker = vm.add_pod();
    let victim = vm.add_pod();
    let bystander = vm.add_pod();
    let veth = host_veth(&attacker);
    assert_eq!(sysctl(&vm, &format!("net/ipv4/conf/{veth}/rp_filter")), "1");
    let text = log(&logs);
    let warning = format!(
        "anti-spoofing for {} ({veth}) is incomplete: IPv4 NOT enforced: eBPF from_pod not attached and kernel has rp_filter loose \
         (net.ipv4.conf.all.rp_filter=2 overrides the veth's 1) on a veth with an IPv4 address, IPv6 blocked (disable_ipv6=1); \
         set net.ipv4.conf.all.rp_filter to 0 or 1",
        attacker.ip
    );
    assert!(text.lines().any(|l| l.contains(&warning) && l.contains("WARN")), "{text}");

    forge(&attacker, bystander.ip.into());
    let (got, _) = forged_then_genuine(&vm, &attacker, bystander.ip, &victim.ns, victim.ip);
    assert_eq!(got[0], ("forged".to_string(), IpAddr::V4(bystander.ip)));
}

/// With the gateway on dummy0 the host veth has no IPv4 address, and the kernel's loose
/// check rejects every source not routed back through such an interface: `all=2` does not
/// open the door there, and ADD reports the guard as in force.
#[test]
fn loose_rp_filter_still_drops_forged_sources_on_a_veth_without_addresses() {
    if !Capabilities::probe().dummy {
        kernel::not_applicable(
            "loose_rp_filter_still_drops_forged_sources_on_a_veth_without_addresses",
            "no dummy device type, so every host veth holds the gateway (the loose case is tested with hostVeth)",
        );
        return;
    }
    let router = Router::new();
    let (mut vm, logs) = vm(&router, true, 2, "off");
    vm.conf["gatewayMode"] = json!("device");
    let attacker = vm.add_pod();
    let victim = vm.add_pod();
    let bystander = vm.add_pod();
    let veth = host_veth(&attacker);
    let line = format!(
        "anti-spoofing for {} ({veth}): IPv4 by the kernel's rp_filter (loose, as strict on a veth without IPv4 addresses) \
         (eBPF from_pod not attached); IPv6 blocked by the kernel (disable_ipv6=1)",
        attacker.ip
    );
    assert!(log(&logs).contains(&line), "{}", log(&logs));

    for forged in [bystander.ip, UPLINK_FORGED] {
        forge(&attacker, forged.into());
        let (got, dropped) = forged_then_genuine(&vm, &attacker, forged, &victim.ns, victim.ip);
        assert_eq!(got, [("genuine".to_string(), IpAddr::V4(attacker.ip))], "{forged}");
        assert_eq!(dropped, 1, "rp_filter drops for {forged}");
    }
}

#[test]
fn check_reports_the_kernel_anti_spoofing_undone() {
    let router = Router::new();
    let (vm, _logs) = vm(&router, true, 0, "off");
    let pod = vm.add_pod();
    let veth = host_veth(&pod);
    pod.check().assert_ok();
    vm.ns.sh("sysctl", &["-qw", &format!("net.ipv4.conf.{veth}.rp_filter=0"), &format!("net.ipv6.conf.{veth}.disable_ipv6=0")]);
    let (code, msg, _) = pod.check().error();
    assert_eq!(code, 121, "{msg}");
    assert!(msg.contains(&format!("anti-spoofing: net.ipv4.conf.{veth}.rp_filter is 0, expected 1 (strict)")), "{msg}");
    assert!(
        msg.contains(&format!("anti-spoofing: host veth {veth} accepts IPv6 from the pod (net.ipv6.conf.{veth}.disable_ipv6=0)")),
        "{msg}"
    );
}

/// Under the fast path the kernel's rp_filter stays on beneath `from_pod`, IPv6 is left to
/// `from_pod`, and the log names what guards the pod (eBPF where it attached, the kernel
/// where this kernel cannot run it).
#[test]
fn rp_filter_stays_on_beneath_the_fast_path() {
    let router = Router::new();
    let (vm, logs) = vm(&router, true, 0, "auto");
    let pod = vm.add_pod();
    let veth = host_veth(&pod);
    let text = log(&logs);
    let attached = text.contains(&format!("fast path attached for {}", pod.ip));
    assert_eq!(sysctl(&vm, &format!("net/ipv4/conf/{veth}/rp_filter")), "1");
    assert_eq!(sysctl(&vm, &format!("net/ipv6/conf/{veth}/disable_ipv6")), if attached { "0" } else { "1" });
    let line = if attached {
        "IPv4 by eBPF from_pod, with the kernel's strict rp_filter beneath it; IPv6 by eBPF from_pod (link-local ND/MLD only)"
    } else {
        "IPv4 by the kernel's strict rp_filter (eBPF from_pod not attached); IPv6 blocked by the kernel (disable_ipv6=1)"
    };
    assert!(text.contains(&format!("anti-spoofing for {} ({veth}): {line}", pod.ip)), "{text}");
    pod.check().assert_ok();
}
