//! Anti-spoofing in `from_pod`: a pod may only send IPv4 from the address it was given.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::net::UdpSocket;

use serde_json::json;
use testbed::fastpath_support::{udp_socket_in, wait_until, Router, Vm, UPLINK};
use testbed::patience::io_timeout;

/// An address inside the VM's pod subnet that no pod owns.
const FORGED: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 250);

#[test]
fn spoofed_source_is_dropped_and_counted_while_real_traffic_flows() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let attacker = vm.add_pod();
    let victim = vm.add_pod();
    // The attacker's kernel will happily send from any address configured on eth0.
    attacker.ns.ip(&format!("addr add {FORGED}/32 dev eth0"));

    let rx = udp_socket_in(&victim.ns, victim.ip);
    rx.set_nonblocking(true).unwrap();
    let to = (victim.ip, rx.local_addr().unwrap().port());
    let drops = vm.counter("from_pod", "drop_spoofed");

    udp_socket_in(&attacker.ns, FORGED).send_to(b"forged", to).unwrap();
    wait_until("the forged datagram is counted as dropped", || vm.counter("from_pod", "drop_spoofed") > drops);
    let mut buf = [0u8; 64];
    let err = rx.recv_from(&mut buf).expect_err("the forged datagram must not arrive");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    // The same pod using its own address is unaffected.
    udp_socket_in(&attacker.ns, attacker.ip).send_to(b"genuine", to).unwrap();
    rx.set_nonblocking(false).unwrap();
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let (n, from) = rx.recv_from(&mut buf).expect("genuine datagram arrives");
    assert_eq!(&buf[..n], b"genuine");
    assert_eq!(from.ip(), std::net::IpAddr::V4(attacker.ip));
    assert_eq!(vm.counter("from_pod", "drop_spoofed"), drops + 1);
}

#[test]
fn anti_spoof_off_lets_other_sources_through() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    vm.conf["antiSpoof"] = json!(false);
    let sender = vm.add_pod();
    let receiver = vm.add_pod();
    sender.ns.ip(&format!("addr add {FORGED}/32 dev eth0"));
    let endpoints = vm.operator_json(&["endpoints"]);
    assert!(endpoints.as_array().unwrap().iter().all(|e| e["anti_spoof"] == json!(false)), "{endpoints}");

    let rx = udp_socket_in(&receiver.ns, receiver.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    udp_socket_in(&sender.ns, FORGED).send_to(b"other source", (receiver.ip, rx.local_addr().unwrap().port())).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).expect("datagram arrives with antiSpoof off");
    assert_eq!(&buf[..n], b"other source");
    assert_eq!(from.ip(), std::net::IpAddr::V4(FORGED));
    assert_eq!(vm.counter("from_pod", "drop_spoofed"), 0);
}

/// With program logging enabled at load, `veth-route trace` shows each spoofed drop.
#[test]
fn trace_shows_spoofed_drops_when_program_logging_is_on() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;

    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    vm.env.push(("VETH_ROUTE_BPF_LOG", "debug".into()));
    let attacker = vm.add_pod();
    let victim = vm.add_pod();
    attacker.ns.ip(&format!("addr add {FORGED}/32 dev eth0"));

    let mut trace = vm
        .ns
        .command(&vm.bin)
        .args(["trace", "--pin-dir"])
        .arg(&vm.pin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start veth-route trace");
    // Ready once it says it is following (printed after attaching to the ring buffer).
    let mut stderr = BufReader::new(trace.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("following"), "trace did not start: {first}");
    let (tx, rx) = mpsc::channel();
    let stdout = trace.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let rx_sock = udp_socket_in(&victim.ns, victim.ip);
    udp_socket_in(&attacker.ns, FORGED).send_to(b"forged", (victim.ip, rx_sock.local_addr().unwrap().port())).unwrap();
    let line = rx.recv_timeout(io_timeout());
    let _ = trace.kill();
    let _ = trace.wait();
    let line = line.expect("a trace record for the spoofed packet");
    assert!(line.contains(&format!("drop spoofed source {FORGED}")), "{line}");
}

/// A forged global IPv6 source from an IPv4-only pod, sent to the VM's own IPv6 address,
/// does not arrive: `from_pod` lets only link-local ND/MLD through. (The pod reaches the
/// host veth's MAC through a static neighbour entry, as a pod with CAP_NET_ADMIN in its own
/// netns could set up.) With `antiSpoof: false` the same datagram arrives: the test could fail.
#[test]
fn ipv6_from_an_ipv4_only_pod_is_dropped() {
    for anti_spoof in [true, false] {
        let router = Router::new();
        let mut vm = Vm::new(&router, 1, "auto");
        vm.conf["antiSpoof"] = json!(anti_spoof);
        let pod = vm.add_pod();
        let veth = vm.host_veth_of(pod.ip);
        let host_mac = vm.ns.ip(&format!("-j link show {veth}"));
        let host_mac: serde_json::Value = serde_json::from_str(&host_mac).unwrap();
        let host_mac = host_mac[0]["address"].as_str().unwrap().to_string();
        vm.ns.ip(&format!("-6 addr add fd00:10::1/64 dev {UPLINK} nodad"));
        pod.ns.ip("-6 addr add fd00:20::99/64 dev eth0 nodad");
        pod.ns.ip(&format!("-6 neigh add fe80::1 lladdr {host_mac} dev eth0 nud permanent"));
        pod.ns.ip("-6 route add fd00:10::/64 via fe80::1 dev eth0");
        let rx = vm.ns.run(|| UdpSocket::bind("[fd00:10::1]:0").expect("bind the VM's IPv6 address"));
        let port = rx.local_addr().unwrap().port();
        let drops = vm.counter("from_pod", "drop_ipv6");

        let tx = pod.ns.run(|| UdpSocket::bind("[fd00:20::99]:0").expect("bind the pod's IPv6 address"));
        tx.send_to(b"forged v6", format!("[fd00:10::1]:{port}")).unwrap();
        let mut buf = [0u8; 64];
        if anti_spoof {
            wait_until("the IPv6 datagram is counted as dropped", || vm.counter("from_pod", "drop_ipv6") > drops);
            rx.set_nonblocking(true).unwrap();
            let err = rx.recv_from(&mut buf).expect_err("IPv6 from an IPv4-only pod must not arrive");
            assert_eq!(err.kind(), ErrorKind::WouldBlock);
        } else {
            rx.set_read_timeout(Some(io_timeout())).unwrap();
            let (n, from) = rx.recv_from(&mut buf).expect("with antiSpoof off the datagram arrives");
            assert_eq!(&buf[..n], b"forged v6");
            assert_eq!(from.ip().to_string(), "fd00:20::99");
            assert_eq!(vm.counter("from_pod", "drop_ipv6"), drops);
        }
    }
}

/// `veth-route stats` says what guards each pod's sources: `from_pod` where it is attached,
/// the kernel's strict rp_filter (and IPv6 block) where it is not; never nothing.
#[test]
fn stats_name_the_anti_spoofing_in_force_for_every_pod() {
    let router = Router::new();
    let fast = Vm::new(&router, 1, "auto");
    let off = Vm::new(&router, 2, "off");
    let a = fast.add_pod();
    let b = off.add_pod();
    for (vm, pod, ebpf) in [(&fast, &a, true), (&off, &b, false)] {
        let stats = vm.stats();
        assert_eq!(stats["pinned"], json!(ebpf), "{stats}");
        let veth = vm.host_veth_of(pod.ip);
        let guards = stats["anti_spoofing"].as_array().unwrap();
        let g = guards.iter().find(|g| g["host_veth"] == json!(veth)).unwrap_or_else(|| panic!("{veth} not listed: {stats}"));
        assert_eq!(g["from_pod"], json!(ebpf), "{g}");
        assert_eq!(g["kernel"]["rp_filter"], json!("strict"), "{g}");
        if !ebpf {
            assert_eq!(g["kernel"]["ipv6"], json!("blocked"), "without from_pod the kernel takes no IPv6 from the pod: {g}");
        }
    }
}
