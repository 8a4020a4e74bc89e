//! Proxy-neighbour mode on a shared L2 segment: the vrouter and three VMs on one Linux
//! bridge, pods wired by the real plugin with `"proxyNeighbor": {"uplink": "eth0"}`, and
//! not a single static route anywhere: the vrouter reaches every pod, and pods reach pods
//! on other VMs, because each VM answers ARP for exactly its own pods. A pod wired without
//! the option is unreachable from the vrouter (the control), and after DEL so are the others.
//! Run on the kernel path and with the eBPF fast path attached (ARP is not redirected by
//! the fast path; the IP traffic that follows is).

mod segment_support;

use segment_support::Segment;
use testbed::probe::{ping, tcp_read, TcpServer};

#[test]
fn kernel_path_vrouter_and_pods_on_other_vms_reach_pods_with_no_route() {
    reach_pods_with_no_route([10, 66, 0], "off");
}

#[test]
fn fast_path_vrouter_and_pods_on_other_vms_reach_pods_with_no_route() {
    reach_pods_with_no_route([10, 66, 1], "required");
}

fn reach_pods_with_no_route(prefix: [u8; 3], fast_path: &str) {
    let seg = Segment::new(prefix, 3);
    let mut pods = Vec::new();
    for vm in &seg.vms {
        let conf = vm.network(prefix, true, fast_path);
        for _ in 0..2 {
            let pod = vm.pod();
            let (ip, res) = vm.add(&conf, &pod);
            pods.push((vm, pod, ip, res, conf.clone()));
        }
    }
    // The control: a pod on the third VM without proxyNeighbor.
    let plain_vm = &seg.vms[2];
    let plain_conf = plain_vm.network(prefix, false, fast_path);
    let plain = plain_vm.pod();
    let (plain_ip, plain_res) = plain_vm.add(&plain_conf, &plain);

    // No static route in the vrouter: only its connected subnet.
    let routes = seg.vrouter.ip("-4 route show");
    assert_eq!(routes.lines().count(), 1, "vrouter routes: {routes}");
    for vm in &seg.vms {
        let entries = vm.proxy_entries();
        assert_eq!(entries.lines().count(), 2, "{}: one entry per pod: {entries}", vm.ip);
        assert!(!entries.contains(&plain_ip.to_string()));
    }

    // vrouter -> every pod, ICMP and TCP.
    for (_, pod, ip, _, _) in &pods {
        ping(&seg.vrouter, *ip).unwrap();
        let _srv = TcpServer::start(&pod.ns, 8080, "pod says hi");
        assert_eq!(tcp_read(&seg.vrouter, *ip, 8080).unwrap(), "pod says hi");
    }
    // pod <-> pod across VMs (and back), and a VM to another VM's pod.
    let (a, b) = (&pods[0], &pods[2]);
    assert_ne!(a.0.ip, b.0.ip);
    ping(&a.1.ns, b.2).unwrap();
    ping(&b.1.ns, a.2).unwrap();
    ping(&pods[4].1.ns, pods[1].2).unwrap();
    ping(&seg.vms[1].ns, pods[0].2).unwrap();

    // The control pod is unreachable from the vrouter: the entries are what makes it work.
    assert!(ping(&seg.vrouter, plain_ip).is_err(), "a pod without proxyNeighbor should not answer through the vrouter");
    plain_vm.del(&plain_conf, &plain, &plain_res);

    // DEL removes the entries; the vrouter forgets its cached neighbours and loses the pods.
    for (vm, pod, _, res, conf) in &pods {
        vm.del(conf, pod, res);
    }
    for vm in &seg.vms {
        assert_eq!(vm.proxy_entries(), "", "{}: entries left after DEL", vm.ip);
    }
    seg.vrouter.ip("neigh flush dev qr0");
    assert!(ping(&seg.vrouter, pods[0].2).is_err(), "deleted pod still answers");
}
