//! Routes mode end to end: a vrouter and 3 VMs on one segment, pods wired by the real
//! plugin, their addresses recorded on the VMs' Neutron ports (as tcnp-ipam does), the
//! controller writes the Neutron router's routes, and the test programs the vrouter
//! namespace's kernel routes from them (standing in for the L3 agent). A client behind
//! the vrouter then reaches every pod; before the routes are programmed it reaches none.

mod controller_support;
mod segment_support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use controller_support::Lab;
use segment_support::Segment;
use testbed::netns::NetNs;
use testbed::openstack::shared;
use testbed::probe::{ping, tcp_read, TcpServer};

const PREFIX: [u8; 3] = [10, 67, 0];

#[test]
fn client_behind_the_vrouter_reaches_every_pod_through_neutron_routes() {
    let seg = Segment::new(PREFIX, 3);
    // A client on the vrouter's other side.
    let client = NetNs::new("cl");
    client.ip(&format!("link add eth0 type veth peer name qg0 netns {}", seg.vrouter.name()));
    client.ip("addr add 192.168.67.2/24 dev eth0");
    client.ip("link set eth0 up");
    client.ip("route add default via 192.168.67.1");
    seg.vrouter.ip("addr add 192.168.67.1/24 dev qg0");
    seg.vrouter.ip("link set qg0 up");
    seg.vrouter.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);

    // Neutron: the same subnet, one port per VM with the VM's MAC and address.
    let mut lab = Lab::new(shared(), "vrc-traffic", "10.67.0.0/24");
    let ports: Vec<_> = seg.vms.iter().enumerate().map(|(i, vm)| lab.vm(&format!("vm{i}"), vm.ip, &vm.mac)).collect();

    // Two pods per VM, wired by the plugin; their addresses go onto the VM's port.
    let mut pods = Vec::new();
    let mut owner = BTreeMap::new();
    for (vm, port) in seg.vms.iter().zip(&ports) {
        let conf = vm.network(PREFIX, false, "auto");
        let mut ips = Vec::new();
        for _ in 0..2 {
            let pod = vm.pod();
            let (ip, res) = vm.add(&conf, &pod);
            ips.push(ip);
            owner.insert(ip, vm.ip);
            pods.push((vm, pod, ip, res, conf.clone()));
        }
        lab.set_pods(port, &ips);
    }

    // Control: without router routes the client reaches no pod.
    assert!(ping(&client, pods[0].2).is_err(), "pod reachable before any route exists");

    let out = lab.controller_once(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let routes = lab.routes();
    assert!(!routes.is_empty());
    // The L3 agent's job: Neutron router routes become kernel routes in the vrouter.
    for (dst, nexthop) in &routes {
        seg.vrouter.ip(&format!("route replace {dst} via {nexthop} dev qr0"));
    }
    for (dst, nexthop) in &routes {
        for ip in dst.hosts().chain([dst.network()]) {
            if let Some(vm) = owner.get(&ip) {
                assert_eq!(vm, nexthop, "{dst} sends {ip} to the wrong VM");
            }
        }
    }

    let mut reached: Vec<Ipv4Addr> = Vec::new();
    for (_, pod, ip, _, _) in &pods {
        ping(&client, *ip).unwrap_or_else(|e| panic!("client -> pod {ip}: {e}; routes {routes:?}"));
        let _srv = TcpServer::start(&pod.ns, 8080, "hello from the pod");
        assert_eq!(tcp_read(&client, *ip, 8080).unwrap(), "hello from the pod");
        reached.push(*ip);
    }
    assert_eq!(reached.len(), 6);

    for (vm, pod, _, res, conf) in &pods {
        vm.del(conf, pod, res);
    }
}
