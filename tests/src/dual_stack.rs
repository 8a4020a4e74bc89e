//! Dual-stack pods on the simulated node: the network config with an IPv6 range, the
//! address an ADD gave, and the fast path's counters.

use std::net::Ipv6Addr;

use serde_json::{json, Value};

use crate::vm::Vm;

/// The pods' IPv6 subnet (host-local hands out from ::2 up).
pub const SUBNET6: &str = "fd00:10:10::/64";
/// The VM's IPv6 address on its uplink, and the vrouter's, in [`SUBNET6`].
pub const VM6: &str = "fd00:10:10::8";
pub const VROUTER6: &str = "fd00:10:10::1";

/// The VM's network config (fast path off) with a second, IPv6 range and an IPv6 default
/// route.
pub fn dual_stack(vm: &Vm, version: &str) -> Value {
    let mut conf = vm.network(version);
    conf["ipam"]["ranges"] = json!([
        [{"subnet": "10.10.10.0/24", "rangeStart": "10.10.10.19", "rangeEnd": "10.10.10.250"}],
        [{"subnet": SUBNET6}],
    ]);
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    conf
}

/// [`dual_stack`] with `fastPath` set, and the VM's uplink (`eth0`) given to the fast path.
pub fn dual_stack_with(vm: &Vm, fast_path: &str) -> Value {
    let mut conf = dual_stack(vm, "1.0.0");
    conf["fastPath"] = json!(fast_path);
    if fast_path != "off" {
        conf["uplinks"] = json!(["eth0"]);
    }
    conf
}

/// The IPv6 address of an ADD result.
pub fn ipv6_of(result: &Value) -> Ipv6Addr {
    let ip = result["ips"].as_array().unwrap().iter().find_map(|ip| ip["address"].as_str().filter(|a| a.contains(':')));
    let ip = ip.unwrap_or_else(|| panic!("no IPv6 address in {result}"));
    ip.split('/').next().unwrap().parse().unwrap()
}

/// IPv6 between the VM and the vrouter: addresses on both ends of the uplink, the VM's
/// default route via the vrouter, and the vrouter's route to `pod6` via the VM (as
/// vrouter-route-controller writes it).
pub fn route_ipv6_through_the_vrouter(vm: &Vm, pod6: Ipv6Addr) {
    vm.ns.ip(&format!("addr add {VM6}/64 dev eth0 nodad"));
    vm.vrouter.ip(&format!("addr add {VROUTER6}/64 dev qr0 nodad"));
    vm.vrouter.ip(&format!("route add {pod6}/128 via {VM6}"));
    vm.ns.ip(&format!("-6 route add default via {VROUTER6} dev eth0"));
}

/// Counter `name` of program `prog` (`veth-route stats`).
pub fn counter(vm: &Vm, prog: &str, name: &str) -> u64 {
    let out =
        vm.ns.sh(crate::cni_runner::plugin_binary().to_str().unwrap(), &["stats", "--pin-dir", vm.pin_dir.to_str().unwrap(), "--json"]);
    let stats: Value = serde_json::from_str(&out).expect("stats --json");
    stats[prog][name].as_u64().unwrap_or_else(|| panic!("no counter {prog}.{name}: {stats}"))
}

/// Counter `name` of `from_pod`.
pub fn from_pod_counter(vm: &Vm, name: &str) -> u64 {
    counter(vm, "from_pod", name)
}

/// The fast path's redirect counters, read before and after some traffic.
pub struct Redirects {
    /// `from_pod`: into a pod of this VM.
    pub pod_to_pod: u64,
    /// `from_pod`: out of the VM.
    pub out_of_the_vm: u64,
    /// `from_uplink`: into a pod.
    pub from_the_network: u64,
}

impl Redirects {
    pub fn read(vm: &Vm) -> Redirects {
        Redirects {
            pod_to_pod: from_pod_counter(vm, "redirected"),
            out_of_the_vm: from_pod_counter(vm, "redirected_out"),
            from_the_network: counter(vm, "from_uplink", "redirected"),
        }
    }
}
