//! What the fast path must not get wrong at its edges: ICMP errors about the flows it
//! bypasses (PMTUD through kube-proxy's INVALID drop), the neighbour of a bypassed flow
//! expiring, VLAN-tagged frames on an uplink, an endpoint whose pod went without a DEL,
//! and networks with different `fastPath` modes on one pin directory.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use serde_json::json;
use testbed::fastpath_support::{
    forget_conntrack, stay_on_this_cpu, try_tcp_transfer_with, udp_socket_in, udp_ttl, wait_until, Router, Vm, UPLINK,
};
use testbed::netns::{unique, NetNs};
use testbed::patience::io_timeout;

/// Several MB: many full-size segments.
const STREAM: usize = 4 << 20;
/// At least this many packets for STREAM even if every packet is a 64 KiB GSO skb.
const MIN_STREAM_PACKETS: u64 = (STREAM / 65536) as u64;

/// A host behind the router, reached over a hop with a lower MTU: the router's end of the
/// link has `mtu`, the far host's own interface 1500, so TCP's MSS does not hide the hop
/// and the router answers full-size packets with ICMP "fragmentation needed".
struct Far {
    ns: NetNs,
}

impl Far {
    const ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 2);

    fn behind(router: &Router, mtu: u32) -> Far {
        let ns = NetNs::new("ff");
        let link = unique("fl");
        router.ns.ip(&format!("link add {link} type veth peer name far0 netns {}", ns.name()));
        router.ns.ip(&format!("link set {link} mtu {mtu} up"));
        router.ns.ip(&format!("addr add 192.168.200.1/24 dev {link}"));
        ns.ip("link set far0 mtu 1500 up");
        ns.ip(&format!("addr add {}/24 dev far0", Far::ADDR));
        ns.ip("route add default via 192.168.200.1");
        Far { ns }
    }
}

/// A pod sends a bulk transfer over a connection the fast path bypasses, through a hop with
/// a lower MTU. The router's "fragmentation needed" quotes a flow conntrack no longer knows
/// (its entry expired, as it does two minutes into any bypassed connection), so on the
/// kernel path it is INVALID and kube-proxy's rule drops it: the pod would resend full-size
/// segments until the connection times out. Handled as its flow is, it reaches the pod.
#[test]
fn fragmentation_needed_for_a_bypassed_flow_reaches_the_pod_past_the_invalid_drop() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    vm.drop_invalid();
    let far = Far::behind(&router, 1400);
    let pod = vm.add_pod();
    let out = vm.counter("from_pod", "redirected_out");
    let connect = SocketAddrV4::new(Far::ADDR, 7301);
    let sent = try_tcp_transfer_with(&pod.ns, &far.ns, 0, connect, STREAM, 0, || forget_conntrack(&vm.ns));
    assert_eq!(sent, Ok(STREAM), "{}", vm.stats());
    assert!(vm.counter("from_pod", "redirected_out") >= out + MIN_STREAM_PACKETS, "the transfer bypassed the kernel");
    // The pod learnt the path MTU: the ICMP error arrived.
    let route = pod.ns.ip(&format!("route get {}", Far::ADDR));
    assert!(route.contains("mtu 1400"), "the pod has no path MTU for {}: {route}", Far::ADDR);
}

/// With `ipMasq`, a pod's segment of an inbound connection that fell back to the kernel
/// mid-stream would be masqueraded (conntrack, its entry expired, takes it for a new flow
/// of the pod's) and the connection would die. The VM's neighbour entry for the router
/// goes away in the middle of the transfer: the fast path resolves it itself.
#[test]
fn an_inbound_transfer_with_ip_masq_survives_a_neighbour_flush_on_the_uplink() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    vm.conf["ipMasq"] = json!(true);
    let pod = vm.add_pod();
    let out = vm.counter("from_pod", "redirected_out");
    let gateway = Router::addr_for(1).to_string();
    let connect = SocketAddrV4::new(pod.ip, 7302);
    let sent = try_tcp_transfer_with(&router.ns, &pod.ns, 0, connect, STREAM, STREAM / 2, || {
        // What the flush deleted, from ip's own report: the entry itself may be back at once
        // (the fast path's redirect_neigh resolves it again), so showing it proves nothing.
        let flushed = vm.ns.ip(&format!("-s neigh flush dev {UPLINK}"));
        assert!(flushed.contains("deleting") && !flushed.contains("deleting 0 "), "the flush deleted no entry: {flushed}");
        forget_conntrack(&vm.ns);
    });
    assert_eq!(sent, Ok(STREAM));
    assert!(vm.counter("from_pod", "redirected_out") > out, "the pod's side of the connection bypassed the kernel");
    assert!(vm.ns.ip(&format!("neigh show dev {UPLINK}")).contains(&gateway), "the router's entry was resolved again");
}

/// A frame tagged for VLAN 5 (a trunk's subport: another network) carries an IPv4 packet
/// for a pod. The kernel takes the tag out of the frame before tc runs, so the packet looks
/// untagged; redirected, it would reach the pod's VLAN 5 interface. It goes to the kernel
/// (which has no VLAN 5 here and drops it), counted as `pass_not_ip`.
#[test]
fn a_vlan_tagged_frame_for_a_pod_is_not_redirected() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "always");
    let pod = vm.add_pod();
    // Where a redirected tagged frame would arrive; kernels without VLAN devices (this
    // machine's) still show the redirect in the counters.
    let vlan_in_pod = pod.ns.ip_output("link add link eth0 name eth0.5 type vlan id 5").status.success();
    if vlan_in_pod {
        pod.ns.ip("link set eth0.5 up");
    } else {
        testbed::kernel::not_applicable(
            "a_vlan_tagged_frame_for_a_pod_is_not_redirected (arrival part)",
            "no VLAN device type: the pod cannot receive a tagged frame, only the counters show where it went",
        );
    }
    // The router's neighbour entry for the VM's address, so the untagged datagram leaves at once.
    assert_eq!(udp_ttl(&router.ns, None, &pod.ns, pod.ip, 64), 63);

    let rx = udp_socket_in(&pod.ns, pod.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to = rx.local_addr().unwrap();
    let uplink: serde_json::Value = serde_json::from_str(&vm.ns.ip(&format!("-j link show {UPLINK}"))).unwrap();
    let uplink_mac = parse_mac(uplink[0]["address"].as_str().unwrap());
    let link: serde_json::Value = serde_json::from_str(&router.ns.ip(&format!("-j link show {}", vm.router_link))).unwrap();
    let ifindex = link[0]["ifindex"].as_u64().unwrap() as u32;
    let frame = tagged_udp_frame(uplink_mac, 5, Router::addr_for(1), pod.ip, to.port(), b"tagged");
    let redirected = vm.counter("from_uplink", "redirected");
    let not_ip = vm.counter("from_uplink", "pass_not_ip");
    // Tagged first, then untagged, in order from one CPU: once the untagged one arrived, the
    // tagged one was delivered before it or not at all.
    router.ns.run(|| {
        stay_on_this_cpu();
        send_frame(ifindex, &frame);
        UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"untagged", to).unwrap();
    });
    let mut buf = [0u8; 64];
    let (n, _) = rx.recv_from(&mut buf).expect("the untagged datagram arrives");
    assert_eq!(&buf[..n], b"untagged", "the VLAN-tagged datagram reached the pod");
    assert_eq!(vm.counter("from_uplink", "redirected"), redirected + 1, "only the untagged datagram is redirected");
    assert!(vm.counter("from_uplink", "pass_not_ip") > not_ip, "the tagged frame is counted");
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// An Ethernet frame with an 802.1Q tag carrying one UDP datagram (no UDP checksum, which
/// IPv4 allows), as a trunk port delivers it.
fn tagged_udp_frame(dst_mac: [u8; 6], vlan: u16, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x05]);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vlan.to_be_bytes());
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = ip.chunks(2).fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Send one raw frame out of interface `ifindex` of the calling thread's namespace.
fn send_frame(ifindex: u32, frame: &[u8]) {
    // SAFETY: a packet socket we own and close; sockaddr_ll and the frame outlive the call.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, frame.len() as isize, "sending the tagged frame: {err}");
    }
}

/// The runtime loses a pod without a DEL: its namespace, and with it the veth pair, is gone
/// but the endpoint is still in the map. A redirect there would be a silent drop counted as
/// `redirected`; the packet goes to the kernel instead, counted as `pass_redirect_failed`,
/// and the next DEL removes the entry.
#[test]
fn a_packet_for_a_pod_gone_without_del_goes_to_the_kernel_and_is_counted() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let mut pod = vm.add_pod();
    let veth = vm.host_veth_of(pod.ip);
    let rx = udp_socket_in(&pod.ns, pod.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = udp_socket_in(&router.ns, Router::addr_for(1));
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        tx.send_to(b"x", to).unwrap();
        rx.recv_from(&mut buf).expect("datagram delivered");
    }
    let redirected = vm.counter("from_uplink", "redirected");
    let failed = vm.counter("from_uplink", "pass_redirect_failed");
    assert!(redirected > 0, "the flow is bypassed: {}", vm.stats());

    drop(rx);
    pod.ns.delete();
    wait_until("the pod's veth pair is gone", || !vm.ns.ip_output(&format!("link show {veth}")).status.success());
    assert!(vm.endpoint_ips().contains(&pod.ip), "the stale endpoint is still there (no DEL ran)");
    tx.send_to(b"x", to).unwrap();
    wait_until("the datagram met the fast path", || {
        vm.counter("from_uplink", "redirected") + vm.counter("from_uplink", "pass_redirect_failed") > redirected + failed
    });
    assert_eq!(vm.counter("from_uplink", "redirected"), redirected, "a redirect to a vanished veth is a silent drop");
    assert_eq!(vm.counter("from_uplink", "pass_redirect_failed"), failed + 1);

    pod.del();
    assert!(!vm.endpoint_ips().contains(&pod.ip), "DEL removes the stale endpoint");
}

/// Two networks share a pin directory (the default one), one `auto`, one `always`. Each
/// pod keeps its own network's mode whichever ADD came last: the first datagram from outside
/// to the `auto` pod takes the kernel path, to the `always` pod it is redirected.
#[test]
fn networks_with_different_modes_share_a_pin_directory() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let auto = vm.add_pod();
    let other_ipam = testbed::netns::TempDir::new("fpipam2");
    let mut always = vm.conf.clone();
    always["name"] = json!(format!("{}-always", vm.conf["name"].as_str().unwrap()));
    always["fastPath"] = json!("always");
    always["ipam"] = json!({ "type": "host-local", "dataDir": other_ipam.path(),
        "ranges": [[{ "subnet": "10.10.1.0/24", "rangeStart": "10.10.1.200", "rangeEnd": "10.10.1.250" }]] });
    let always = vm.add_pod_as(always);
    let modes: Vec<(String, String)> = vm
        .operator_json(&["endpoints"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["ip"].as_str().unwrap().to_string(), e["mode"].as_str().unwrap().to_string()))
        .collect();
    assert!(modes.contains(&(auto.ip.to_string(), "auto".into())), "{modes:?}");
    assert!(modes.contains(&(always.ip.to_string(), "always".into())), "{modes:?}");

    let (redirected, new_flows) = (vm.counter("from_uplink", "redirected"), vm.counter("from_uplink", "pass_new_flow"));
    assert_eq!(udp_ttl(&router.ns, None, &auto.ns, auto.ip, 64), 63);
    assert_eq!(vm.counter("from_uplink", "pass_new_flow"), new_flows + 1, "auto: the first datagram is the kernel's");
    assert_eq!(vm.counter("from_uplink", "redirected"), redirected);
    assert_eq!(udp_ttl(&router.ns, None, &always.ns, always.ip, 64), 63);
    assert_eq!(vm.counter("from_uplink", "redirected"), redirected + 1, "always: every datagram is redirected");
    assert_eq!(vm.counter("from_uplink", "pass_new_flow"), new_flows + 1);
}

/// A pod whose MTU is below the uplink's: a datagram from outside that does not fit would
/// be pushed into the pod over its MTU by `bpf_redirect_peer`. It goes to the kernel
/// instead (`pass_redirect_failed`), which answers "fragmentation needed" as a router does:
/// the sender learns the pod's path MTU, and a datagram that fits is redirected.
#[test]
fn a_packet_larger_than_the_pods_mtu_goes_to_the_kernel_which_answers_fragmentation_needed() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "always");
    vm.conf["mtu"] = json!(1400);
    let pod = vm.add_pod();
    let rx = udp_socket_in(&pod.ns, pod.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to = rx.local_addr().unwrap();
    let tx = udp_socket_in(&router.ns, Router::addr_for(1));
    let dont_fragment: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: setsockopt with an int option on our socket.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&tx),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&dont_fragment as *const libc::c_int).cast(),
            4,
        )
    };
    assert_eq!(rc, 0, "IP_MTU_DISCOVER: {}", std::io::Error::last_os_error());
    let failed = vm.counter("from_uplink", "pass_redirect_failed");
    tx.send_to(&[7u8; 1472], to).expect("a 1500-byte packet fits the router's link");
    wait_until("the sender learns the pod's path MTU", || router.ns.ip(&format!("route get {}", pod.ip)).contains("mtu 1400"));
    assert_eq!(vm.counter("from_uplink", "pass_redirect_failed"), failed + 1, "{}", vm.stats());
    let redirected = vm.counter("from_uplink", "redirected");
    tx.send_to(&[7u8; 1372], to).expect("a datagram that fits");
    let mut buf = [0u8; 2048];
    let (n, _) = rx.recv_from(&mut buf).expect("the datagram that fits arrives");
    assert_eq!(n, 1372, "the oversized datagram must not have reached the pod");
    assert_eq!(vm.counter("from_uplink", "redirected"), redirected + 1);
}
