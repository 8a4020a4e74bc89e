//! Anti-spoofing in `from_pod`: a pod may only send IPv4 from the address it was given.

use std::io::ErrorKind;
use std::net::Ipv4Addr;

use serde_json::json;
use testbed::fastpath_support::{udp_socket_in, wait_until, Router, Vm};

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
    rx.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
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
    rx.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    udp_socket_in(&sender.ns, FORGED).send_to(b"other source", (receiver.ip, rx.local_addr().unwrap().port())).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).expect("datagram arrives with antiSpoof off");
    assert_eq!(&buf[..n], b"other source");
    assert_eq!(from.ip(), std::net::IpAddr::V4(FORGED));
    assert_eq!(vm.counter("from_pod", "drop_spoofed"), 0);
}
