//! Chaining with Debian's reference plugins: `portmap` forwards a VM port to the pod,
//! `bandwidth` shapes the host veth; CHECK and DEL run through the chain as libcni does.

use serde_json::json;
use testbed::cni_runner::Chain;
use testbed::probe::{tcp_read, TcpServer};
use testbed::vm::Vm;

#[test]
fn portmap_and_bandwidth_chain() {
    let vm = Vm::new();
    let before = vm.snapshot();
    let mut veth = vm.network("1.0.0");
    veth.as_object_mut().unwrap().remove("cniVersion");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "cni0",
        "plugins": [
            veth,
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    let runtime = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000},
    });
    let chain = Chain { vm: &vm.ns, list, runtime };
    let pod = vm.pod();
    let att = pod.attachment();
    let result = chain.add(&att).unwrap_or_else(|o| panic!("chain ADD failed: {} {}", o.stdout, o.stderr));
    let host_veth = result["interfaces"][0]["name"].as_str().unwrap().to_string();

    // portmap: the vrouter reaches the pod's port 80 through the VM's port 8080.
    let _server = TcpServer::start(&pod.ns, 80, "hello from the pod");
    assert_eq!(tcp_read(&vm.vrouter, vm.uplink_ip, 8080).unwrap(), "hello from the pod");

    // bandwidth: a token bucket on the host veth (ingress) and on its ifb (egress).
    let qdisc = vm.ns.ip(&format!("-d link show {host_veth}"));
    assert!(qdisc.contains(&host_veth));
    let tc = vm.ns.sh("tc", &["qdisc", "show", "dev", &host_veth]);
    assert!(tc.contains("tbf"), "no tbf on {host_veth}: {tc}");

    // CHECK through veth-route and bandwidth. Debian's portmap 1.1.1 fails its own CHECK on
    // IPv4-only setups ("could not check ipv6 dnat: chain CNI-DN-... not found"), an upstream
    // bug unrelated to us, so it is left out of the CHECK pass.
    let mut checked = chain.list.clone();
    checked["plugins"].as_array_mut().unwrap().retain(|p| p["type"] != "portmap");
    Chain { vm: &vm.ns, list: checked, runtime: chain.runtime.clone() }
        .check(&att, &result)
        .unwrap_or_else(|o| panic!("chain CHECK failed: {}", o.stdout));
    chain.del(&att, Some(&result)).unwrap_or_else(|o| panic!("chain DEL failed: {}", o.stdout));

    // portmap keeps its shared CNI-HOSTPORT-* chains by design; everything else must go.
    let mut after = vm.snapshot();
    after.rules.retain(|r| !r.contains("CNI-HOSTPORT"));
    after.assert_same_as(&before, "after chain DEL");
}
