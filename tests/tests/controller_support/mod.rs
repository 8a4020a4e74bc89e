//! Shared by the `controller_*` tests: a private network + subnet + router per test on the
//! shared local OpenStack (so tests run in parallel without touching each other's routes),
//! VM ports marked the way tcnp-ipam marks them, and running the real controller binary.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use openstack::{FixedIp, FixedIpRequest, Neutron};
use serde_json::{json, Value};
use testbed::openstack::{block_on, Stack};

pub mod proxy;
#[allow(unused_imports)]
pub use proxy::HoldProxy;

/// Tags tcnp-ipam puts on a VM port it manages (see vrouter-route-controller `managed`).
pub const MANAGED_TAG: &str = "veth-route:managed";
pub const PRIMARY_PREFIX: &str = "veth-route:primary=";
pub const PRIMARY6_PREFIX: &str = "veth-route:primary6=";

/// A built binary of the workspace (`cargo build --bins` runs before the tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --bins` first", p.display());
    p
}

/// One test's own network, subnet and router on the shared stack; removed on drop.
pub struct Lab<'a> {
    pub stack: &'a Stack,
    pub network_id: String,
    pub subnet_id: String,
    pub cidr: Ipv4Net,
    pub router_id: String,
    pub ports: Vec<String>,
    /// The network's `dhcpv6-stateful` IPv6 subnet, when [`Lab::add_ipv6`] made one.
    pub v6: Option<(String, Ipv6Net)>,
    /// False for a lab on another lab's router (it detaches, the owner deletes).
    owns_router: bool,
}

/// A test "VM": its Neutron port and its own address.
#[derive(Debug, Clone)]
pub struct Vm {
    pub port_id: String,
    pub primary: Ipv4Addr,
    pub subnet_id: String,
    /// The VM's own IPv6 address on the lab's IPv6 subnet (dual-stack VMs only).
    pub primary6: Option<Ipv6Addr>,
}

impl<'a> Lab<'a> {
    /// A network `name` with subnet `cidr` (gateway .1) and a router attached to it.
    pub fn new(stack: &'a Stack, name: &str, cidr: &str) -> Lab<'a> {
        let cidr: Ipv4Net = cidr.parse().unwrap();
        let (network_id, subnet_id) = stack.create_network(name, IpNet::V4(cidr), None).expect("network");
        let n = stack.neutron();
        let router_id = block_on(async {
            let id = n.create_router(&format!("{name}-router"), json!({})).await.expect("router").id;
            n.add_router_interface(&id, &subnet_id).await.expect("router interface");
            id
        });
        Lab { stack, network_id, subnet_id, cidr, router_id, ports: vec![], v6: None, owns_router: true }
    }

    /// A network `name` with subnet `cidr` attached to `router` (another lab's): two
    /// networks, e.g. of two clusters, behind one router. Drop it before the router's lab.
    pub fn on_router(stack: &'a Stack, name: &str, cidr: &str, router: &str) -> Lab<'a> {
        let cidr: Ipv4Net = cidr.parse().unwrap();
        let (network_id, subnet_id) = stack.create_network(name, IpNet::V4(cidr), None).expect("network");
        block_on(stack.neutron().add_router_interface(router, &subnet_id)).expect("router interface");
        Lab { stack, network_id, subnet_id, cidr, router_id: router.to_string(), ports: vec![], v6: None, owns_router: false }
    }

    pub fn neutron(&self) -> Neutron {
        self.stack.neutron()
    }

    /// The `n`th address of the subnet.
    pub fn ip(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + n)
    }

    /// A VM port with own address `primary`, marked managed by tcnp-ipam's tags.
    pub fn vm(&mut self, name: &str, primary: Ipv4Addr, mac: &str) -> Vm {
        let n = self.neutron();
        let body = json!({"name": name, "mac_address": mac, "device_owner": "compute:nova",
                          "fixed_ips": [{"subnet_id": self.subnet_id, "ip_address": primary.to_string()}]});
        let port = block_on(n.create_port(&self.network_id, body)).expect("VM port");
        block_on(n.set_port_tags(&port.id, &[MANAGED_TAG.to_string(), format!("{PRIMARY_PREFIX}{primary}")])).expect("tags");
        self.ports.push(port.id.clone());
        Vm { port_id: port.id, primary, subnet_id: self.subnet_id.clone(), primary6: None }
    }

    /// Gives the network a `dhcpv6-stateful` IPv6 subnet `cidr` (the kind tcnp-ipam takes
    /// pods' addresses from, with the RA mode a router interface needs), not yet on the
    /// router: see [`Lab::attach_ipv6`].
    pub fn add_ipv6(&mut self, cidr: &str) {
        let cidr: Ipv6Net = cidr.parse().unwrap();
        let id = self.stack.add_routed_ipv6_subnet(&self.network_id, IpNet::V6(cidr)).expect("IPv6 subnet");
        self.v6 = Some((id, cidr));
    }

    /// Adds a router interface on the IPv6 subnet (Neutron accepts one by subnet id).
    pub fn attach_ipv6(&self) {
        let (subnet, _) = self.v6.as_ref().expect("add_ipv6 first");
        block_on(self.neutron().add_router_interface(&self.router_id, subnet)).expect("IPv6 router interface");
    }

    /// The `n`th address of the IPv6 subnet.
    pub fn ip6(&self, n: u128) -> Ipv6Addr {
        let (_, cidr) = self.v6.as_ref().expect("add_ipv6 first");
        Ipv6Addr::from(u128::from(cidr.network()) + n)
    }

    /// A dual-stack VM port with own addresses `primary` and `primary6`, marked managed as
    /// tcnp-ipam marks it with `veth-route:primary6=<primary6_tag>` (the tag left out when `None`).
    pub fn vm_dual(&mut self, name: &str, primary: Ipv4Addr, primary6: Ipv6Addr, primary6_tag: Option<Ipv6Addr>, mac: &str) -> Vm {
        let n = self.neutron();
        let (subnet6, _) = self.v6.clone().expect("add_ipv6 first");
        let body = json!({"name": name, "mac_address": mac, "device_owner": "compute:nova",
                          "fixed_ips": [{"subnet_id": self.subnet_id, "ip_address": primary.to_string()},
                                        {"subnet_id": subnet6, "ip_address": primary6.to_string()}]});
        let port = block_on(n.create_port(&self.network_id, body)).expect("VM port");
        let mut tags = vec![MANAGED_TAG.to_string(), format!("{PRIMARY_PREFIX}{primary}")];
        tags.extend(primary6_tag.map(|p| format!("{PRIMARY6_PREFIX}{p}")));
        block_on(n.set_port_tags(&port.id, &tags)).expect("tags");
        self.ports.push(port.id.clone());
        Vm { port_id: port.id, primary, subnet_id: self.subnet_id.clone(), primary6: Some(primary6) }
    }

    /// Sets the pod addresses of both families on a dual-stack VM port.
    pub fn set_dual_pods(&self, vm: &Vm, pods: &[Ipv4Addr], pods6: &[Ipv6Addr]) {
        let (subnet6, _) = self.v6.clone().expect("add_ipv6 first");
        let v4 = std::iter::once(vm.primary).chain(pods.iter().copied()).map(|ip| (vm.subnet_id.clone(), IpAddr::V4(ip)));
        let v6 = vm.primary6.into_iter().chain(pods6.iter().copied()).map(|ip| (subnet6.clone(), IpAddr::V6(ip)));
        let ips: Vec<FixedIpRequest> =
            v4.chain(v6).map(|(subnet_id, ip_address)| FixedIpRequest::Address(FixedIp { subnet_id, ip_address })).collect();
        block_on(self.neutron().update_port_fixed_ips(&vm.port_id, &ips, json!({}), None)).expect("set pod IPs");
    }

    /// Sets the pod addresses on a VM port (what tcnp-ipam's ADDs and DELs amount to).
    pub fn set_pods(&self, vm: &Vm, pods: &[Ipv4Addr]) {
        let n = self.neutron();
        let ips: Vec<FixedIpRequest> = std::iter::once(vm.primary)
            .chain(pods.iter().copied())
            .map(|ip| FixedIpRequest::Address(FixedIp { subnet_id: vm.subnet_id.clone(), ip_address: IpAddr::V4(ip) }))
            .collect();
        block_on(n.update_port_fixed_ips(&vm.port_id, &ips, json!({}), None)).expect("set pod IPs");
    }

    /// The router's IPv4 routes as (destination, nexthop).
    pub fn routes(&self) -> BTreeSet<(Ipv4Net, Ipv4Addr)> {
        self.all_routes()
            .into_iter()
            .filter_map(|r| match r {
                (IpNet::V4(d), IpAddr::V4(n)) => Some((d, n)),
                (IpNet::V6(_), IpAddr::V6(_)) => None,
                other => panic!("Neutron holds a route of mixed families: {other:?}"),
            })
            .collect()
    }

    /// The router's routes of both families.
    pub fn all_routes(&self) -> BTreeSet<(IpNet, IpAddr)> {
        let r = block_on(self.neutron().get_router(&self.router_id)).expect("router");
        r.routes.iter().map(|r| (r.destination, r.nexthop)).collect()
    }

    /// The router's IPv6 routes.
    pub fn routes6(&self) -> BTreeSet<(Ipv6Net, Ipv6Addr)> {
        self.all_routes()
            .into_iter()
            .filter_map(|r| match r {
                (IpNet::V6(d), IpAddr::V6(n)) => Some((d, n)),
                _ => None,
            })
            .collect()
    }

    /// The router's revision (changes with any write to it, routes or tags).
    pub fn revision(&self) -> u64 {
        block_on(self.neutron().get_router(&self.router_id)).expect("router").revision_number
    }

    /// The router's tags.
    pub fn router_tags(&self) -> Vec<String> {
        block_on(self.neutron().get_router(&self.router_id)).expect("router").tags
    }

    /// Replaces the router's tags (as another tool using tags would have them).
    pub fn set_router_tags(&self, tags: &[String]) {
        block_on(self.neutron().set_router_tags(&self.router_id, tags)).expect("router tags");
    }

    /// Adds a route by hand, as an operator would.
    pub fn add_route_by_hand(&self, destination: &str, nexthop: Ipv4Addr) {
        let route = openstack::Route { destination: destination.parse().unwrap(), nexthop: IpAddr::V4(nexthop) };
        block_on(self.neutron().add_extraroutes(&self.router_id, &[route])).expect("hand-made route");
    }

    /// The controller command for this lab's network and router (credentials via OS_* env,
    /// cluster id `lab` unless `extra` names another with `--cluster-id`).
    pub fn controller(&self, extra: &[&str]) -> Command {
        let env = self.stack.env();
        let mut c = Command::new(bin("vrouter-route-controller"));
        c.args(["--network", &self.network_id, "--router", &self.router_id])
            .args(extra)
            .env_clear()
            .env("OS_AUTH_URL", &env.auth_url)
            .env("OS_USERNAME", &env.username)
            .env("OS_PASSWORD_FILE", &env.password_file)
            .env("OS_PROJECT_NAME", &env.project)
            .env("OS_DOMAIN", "default")
            .env("OS_REGION_NAME", &env.region)
            .env("VRC_CLUSTER_ID", "lab");
        c
    }

    /// Runs `vrouter-route-controller --once` against this lab's network.
    pub fn controller_once(&self, extra: &[&str]) -> Output {
        self.controller(&[&["--once"], extra].concat()).output().expect("run controller")
    }

    /// Starts the controller daemon with a health/metrics server on a free loopback port.
    pub fn controller_daemon(&self, extra: &[&str]) -> Daemon {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let log = std::env::temp_dir().join(format!("vrc-daemon-{}-{}.log", std::process::id(), addr.port()));
        let child = self
            .controller(&[&["--listen", &addr.to_string(), "--log-level", "debug"], extra].concat())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start controller");
        Daemon { child, addr, log }
    }
}

/// The route a router would use for `ip` (longest prefix match), if any.
pub fn lookup(routes: &BTreeSet<(Ipv4Net, Ipv4Addr)>, ip: Ipv4Addr) -> Option<Ipv4Addr> {
    routes.iter().filter(|(d, _)| d.contains(&ip)).max_by_key(|(d, _)| d.prefix_len()).map(|(_, n)| *n)
}

/// `--once` output: the status JSON on stdout.
pub fn status_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "controller output is not JSON ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        let n = self.neutron();
        let (router, subnet) = (self.router_id.clone(), self.subnet_id.clone());
        let subnet6 = self.v6.as_ref().map(|(id, _)| id.clone());
        let ports = self.ports.clone();
        let network = self.network_id.clone();
        let owns_router = self.owns_router;
        block_on(async move {
            // Routes via this network's VMs would keep Neutron from detaching it.
            let _ = n.update_router(&router, json!({"routes": []})).await;
            let _ = n.remove_router_interface(&router, &subnet).await;
            if let Some(s) = subnet6 {
                let _ = n.remove_router_interface(&router, &s).await;
            }
            if owns_router {
                let _ = n.delete_router(&router).await;
            }
            for p in ports {
                let _ = n.delete_port(&p).await;
            }
            let _ = n.delete_network(&network).await;
        });
    }
}

/// A running controller daemon; SIGTERM and wait on drop.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// GET `path` from its HTTP server: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((code, body))
    }

    /// A metric's value (first sample whose name+labels start with `series`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait controller")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `f` until it yields (bounded: a condition the system reaches by itself, not a timing assertion).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
