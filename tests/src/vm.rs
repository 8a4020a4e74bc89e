//! The simulated node: a namespace playing the OpenStack VM, with an uplink veth to a
//! namespace playing its vrouter, its own bpffs pin directory and IPAM data directory,
//! and pods (namespaces) wired by the real plugin binary. Everything is removed on drop.
//!
//! Addresses follow the design note: VM 10.10.10.8/24 on `eth0`, vrouter 10.10.10.1/24 on
//! `qr0`, pods from 10.10.10.19 up (host-local).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::cni_runner::{self, Attachment, Outcome};
use crate::netns::{unique, NetNs, TempDir};

/// A VM with its vrouter.
pub struct Vm {
    /// The VM's network namespace (the plugin runs here).
    pub ns: NetNs,
    /// The vrouter's namespace.
    pub vrouter: NetNs,
    /// The VM's uplink address (10.10.10.8).
    pub uplink_ip: Ipv4Addr,
    /// The vrouter's address (10.10.10.1).
    pub vrouter_ip: Ipv4Addr,
    /// bpffs pin directory of this VM (removed on drop).
    pub pin_dir: PathBuf,
    /// host-local's data directory.
    pub ipam_dir: TempDir,
    /// Plugin log file directory.
    pub log_dir: TempDir,
}

/// A pod: its namespace and attachment identity.
pub struct Pod {
    /// The pod's namespace.
    pub ns: NetNs,
    /// CNI_CONTAINERID.
    pub id: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

impl Pod {
    /// The attachment as passed to the plugin (netns None once it was deleted).
    pub fn attachment(&self) -> Attachment {
        let netns = self.ns.path().exists().then(|| self.ns.path().to_path_buf());
        Attachment { container_id: self.id.clone(), netns, ifname: self.ifname.clone() }
    }
}

impl Default for Vm {
    fn default() -> Self {
        Self::new()
    }
}

impl Vm {
    /// Build the VM and vrouter namespaces and the uplink between them.
    pub fn new() -> Vm {
        let ns = NetNs::new("vm");
        let vrouter = NetNs::new("rt");
        ns.ip(&format!("link add eth0 type veth peer name qr0 netns {}", vrouter.name()));
        ns.ip("addr add 10.10.10.8/24 dev eth0");
        ns.ip("link set eth0 up");
        vrouter.ip("addr add 10.10.10.1/24 dev qr0");
        vrouter.ip("link set qr0 up");
        ns.ip("route add default via 10.10.10.1 dev eth0");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("pin"));
        Vm {
            ns,
            vrouter,
            uplink_ip: Ipv4Addr::new(10, 10, 10, 8),
            vrouter_ip: Ipv4Addr::new(10, 10, 10, 1),
            pin_dir,
            ipam_dir: TempDir::new("ipam"),
            log_dir: TempDir::new("log"),
        }
    }

    /// The design note's network config with host-local IPAM in this VM's data dir,
    /// the fast path off (tests here are about the kernel path), debug logs to a file.
    pub fn network(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cni0",
            "type": "veth-route",
            "fastPath": "off",
            "bpfPinDir": self.pin_dir,
            "logFile": self.log_file(),
            "logLevel": "debug",
            "ipam": self.host_local(),
        })
    }

    /// host-local IPAM for 10.10.10.19-10.10.10.250 with a default route.
    pub fn host_local(&self) -> Value {
        json!({
            "type": "host-local",
            "dataDir": self.ipam_dir.path(),
            "ranges": [[{"subnet": "10.10.10.0/24", "rangeStart": "10.10.10.19", "rangeEnd": "10.10.10.250"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        })
    }

    /// The plugin's log file.
    pub fn log_file(&self) -> PathBuf {
        self.log_dir.path().join("veth-route.log")
    }

    /// A new pod namespace with a unique container ID and `eth0`.
    pub fn pod(&self) -> Pod {
        Pod { ns: NetNs::new("pod"), id: format!("{}-ctr", unique("c")), ifname: "eth0".into() }
    }

    /// Run veth-route for `command` with `conf` for `pod`.
    pub fn plugin(&self, command: &str, conf: &Value, att: Option<&Attachment>) -> Outcome {
        cni_runner::exec(cni_runner::plugin_binary(), &self.ns, command, att, &[], conf.to_string().as_bytes())
    }

    /// ADD `pod`.
    pub fn add(&self, conf: &Value, pod: &Pod) -> Outcome {
        self.plugin("ADD", conf, Some(&pod.attachment()))
    }

    /// DEL `pod` (with `prev` as prevResult when given).
    pub fn del(&self, conf: &Value, pod: &Pod, prev: Option<&Value>) -> Outcome {
        self.plugin("DEL", &with_prev(conf, prev), Some(&pod.attachment()))
    }

    /// CHECK `pod` against `prev`.
    pub fn check(&self, conf: &Value, pod: &Pod, prev: &Value) -> Outcome {
        self.plugin("CHECK", &with_prev(conf, Some(prev)), Some(&pod.attachment()))
    }

    /// Route `pod_ip` through the VM in the vrouter, as vrouter-route-controller would.
    pub fn route_in_vrouter(&self, pod_ip: Ipv4Addr) {
        self.vrouter.ip(&format!("route replace {pod_ip}/32 via {}", self.uplink_ip));
    }

    /// Everything a pod attachment could leave behind in the VM.
    pub fn snapshot(&self) -> Snapshot {
        let links = self.ns.link_names();
        // IPv6 link-local addresses and their routes are the kernel's, made for every link
        // that comes up (they change from tentative to usable in between two snapshots);
        // the links themselves are compared.
        let link_local = |l: &str| l.contains("fe80:");
        let addrs = self
            .ns
            .ip("-o addr show")
            .lines()
            .filter(|l| !link_local(l))
            .map(|l| l.split("valid_lft").next().unwrap_or(l).trim().to_string())
            .collect();
        let routes = [self.ns.ip("-4 route show table all"), self.ns.ip("-6 route show table all")]
            .iter()
            .flat_map(|t| t.lines().filter(|l| !link_local(l)).map(str::to_string).collect::<Vec<_>>())
            .collect();
        let tables = [
            ("iptables", "nat"),
            ("iptables", "filter"),
            ("iptables", "mangle"),
            ("ip6tables", "raw"),
            ("ip6tables", "nat"),
            ("ip6tables", "filter"),
        ];
        let rules = tables
            .iter()
            .flat_map(|(prog, t)| {
                self.ns.sh(prog, &["-w", "-t", t, "-S"]).lines().map(|l| format!("{prog} -t {t} {l}")).collect::<Vec<_>>()
            })
            .collect();
        let ipam = list_files(self.ipam_dir.path())
            .into_iter()
            .filter(|f| f.rsplit('/').next().is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok()))
            .collect();
        let pins = list_files(&self.pin_dir);
        Snapshot { links, addrs, routes, rules, ipam, pins }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// `conf` with `prevResult` set (or removed).
pub fn with_prev(conf: &Value, prev: Option<&Value>) -> Value {
    let mut c = conf.clone();
    match prev {
        Some(p) => c["prevResult"] = p.clone(),
        None => {
            if let Some(o) = c.as_object_mut() {
                o.remove("prevResult");
            }
        }
    }
    c
}

/// The plugin's default gateway device.
const GATEWAY_DEVICE: &str = "dummy0";

/// The VM state relevant for "nothing left behind".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Link names.
    pub links: Vec<String>,
    /// `ip -o addr` lines (both families, without IPv6 link-local addresses).
    pub addrs: Vec<String>,
    /// All routes of all tables, both families (without IPv6 link-local ones).
    pub routes: Vec<String>,
    /// iptables rules of nat, filter and mangle; ip6tables rules of raw, nat and filter.
    pub rules: Vec<String>,
    /// host-local allocations.
    pub ipam: Vec<String>,
    /// bpffs pins.
    pub pins: Vec<String>,
}

impl Snapshot {
    /// Panic with a readable diff when `self` (after) differs from `before`.
    ///
    /// The gateway device (`dummy0` with 169.254.1.1, on kernels with the dummy type) is the
    /// node's, shared by every pod, and stays after the last DEL by design, as a bridge
    /// plugin's bridge does; it is the one thing allowed to appear.
    pub fn assert_same_as(&self, before: &Snapshot, what: &str) {
        let gateway_device = |x: &String| x == GATEWAY_DEVICE || x.split_whitespace().any(|w| w == GATEWAY_DEVICE);
        let diff = |name: &str, a: &[String], b: &[String]| -> Vec<String> {
            let mut d: Vec<String> =
                b.iter().filter(|x| !a.contains(x) && !gateway_device(x)).map(|x| format!("{name} left behind: {x}")).collect();
            d.extend(a.iter().filter(|x| !b.contains(x)).map(|x| format!("{name} missing: {x}")));
            d
        };
        let mut all = diff("link", &before.links, &self.links);
        all.extend(diff("address", &before.addrs, &self.addrs));
        all.extend(diff("route", &before.routes, &self.routes));
        all.extend(diff("iptables rule", &before.rules, &self.rules));
        all.extend(diff("IPAM allocation", &before.ipam, &self.ipam));
        all.extend(diff("pin", &before.pins, &self.pins));
        assert!(all.is_empty(), "{what}:\n{}", all.join("\n"));
    }
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(list_files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}
