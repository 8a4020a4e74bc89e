//! One L2 segment in namespaces: a Linux bridge (in its own "switch" namespace), the
//! vrouter (`qr0`, `<prefix>.1/24`) and several VMs (`eth0`, `<prefix>.<8+i>/24`, default
//! route via the vrouter), each VM with its own pin, IPAM and log directories. Pods are
//! wired by the real veth-route plugin with host-local IPAM on a per-VM address range.
//! Everything is removed on drop (namespaces take their links with them).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{json, Value};
use testbed::cni_runner::{self, Outcome};
use testbed::netns::{unique, NetNs, TempDir};
use testbed::vm::{with_prev, Pod};

/// The segment.
pub struct Segment {
    pub switch: NetNs,
    pub vrouter: NetNs,
    pub prefix: [u8; 3],
    pub vms: Vec<Node>,
}

/// A VM on the segment.
pub struct Node {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub pin_dir: PathBuf,
    pub ipam_dir: TempDir,
    pub log_dir: TempDir,
    /// First and last pod address host-local may hand out on this VM.
    pub range: (Ipv4Addr, Ipv4Addr),
}

impl Segment {
    /// A bridge with the vrouter on it and `vms` VMs; VM i's pods get `<prefix>.<20+10i>..+9`.
    pub fn new(prefix: [u8; 3], vms: usize) -> Segment {
        let switch = NetNs::new("sw");
        switch.ip("link add br0 type bridge");
        switch.ip("link set br0 up");
        let vrouter = NetNs::new("rt");
        let mut seg = Segment { switch, vrouter, prefix, vms: vec![] };
        seg.plug(&seg.vrouter, "qr0");
        let [a, b, c] = prefix;
        seg.vrouter.ip(&format!("addr add {a}.{b}.{c}.1/24 dev qr0"));
        for i in 0..vms {
            let ns = NetNs::new("vm");
            seg.plug(&ns, "eth0");
            let ip = Ipv4Addr::new(a, b, c, 8 + i as u8);
            ns.ip(&format!("addr add {ip}/24 dev eth0"));
            ns.ip(&format!("route add default via {a}.{b}.{c}.1 dev eth0"));
            let mac = ns.ip("-o link show eth0").split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
            let first = 20 + 10 * i as u8;
            seg.vms.push(Node {
                ns,
                ip,
                mac,
                pin_dir: PathBuf::from("/sys/fs/bpf").join(unique("pin")),
                ipam_dir: TempDir::new("ipam"),
                log_dir: TempDir::new("log"),
                range: (Ipv4Addr::new(a, b, c, first), Ipv4Addr::new(a, b, c, first + 9)),
            });
        }
        seg
    }

    /// Connects `ns` to the bridge through a veth whose inner end is `ifname`.
    fn plug(&self, ns: &NetNs, ifname: &str) {
        let port = unique("p");
        self.switch.ip(&format!("link add {port} type veth peer name {ifname} netns {}", ns.name()));
        self.switch.ip(&format!("link set {port} master br0 up"));
        ns.ip(&format!("link set {ifname} up"));
    }

    /// The vrouter's address on the segment.
    pub fn vrouter_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }
}

impl Node {
    /// veth-route network config for this VM (host-local on the VM's range); `fast_path` is
    /// the plugin's `fastPath` (`off`: kernel path only, `required`: eBPF fast path attached).
    pub fn network(&self, prefix: [u8; 3], proxy_neighbor: bool, fast_path: &str) -> Value {
        let [a, b, c] = prefix;
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "cni0",
            "type": "veth-route",
            "fastPath": fast_path,
            "bpfPinDir": self.pin_dir,
            "logFile": self.log_dir.path().join("veth-route.log"),
            "logLevel": "debug",
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir.path(),
                "ranges": [[{"subnet": format!("{a}.{b}.{c}.0/24"), "rangeStart": self.range.0.to_string(), "rangeEnd": self.range.1.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        });
        if proxy_neighbor {
            conf["proxyNeighbor"] = json!({"uplink": "eth0"});
        }
        conf
    }

    /// A new pod namespace.
    pub fn pod(&self) -> Pod {
        Pod { ns: NetNs::new("pod"), id: format!("{}-ctr", unique("c")), ifname: "eth0".into() }
    }

    /// ADDs `pod` and returns its address.
    pub fn add(&self, conf: &Value, pod: &Pod) -> (Ipv4Addr, Value) {
        let out = self.exec("ADD", conf, pod);
        let res = out.result();
        let ip = res["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
        (ip, res)
    }

    /// DEL `pod`.
    pub fn del(&self, conf: &Value, pod: &Pod, prev: &Value) {
        self.exec("DEL", &with_prev(conf, Some(prev)), pod).assert_ok();
    }

    fn exec(&self, cmd: &str, conf: &Value, pod: &Pod) -> Outcome {
        cni_runner::exec(cni_runner::plugin_binary(), &self.ns, cmd, Some(&pod.attachment()), &[], conf.to_string().as_bytes())
    }

    /// This VM's proxy neighbour entries on the uplink.
    pub fn proxy_entries(&self) -> String {
        self.ns.ip("neigh show proxy dev eth0")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
