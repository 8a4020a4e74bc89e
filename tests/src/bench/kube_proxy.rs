//! The iptables rules kube-proxy writes in iptables mode, generated for a given set of
//! Services, so the datapath benchmark can load a VM the way a real node is loaded.
//!
//! The shapes follow kube-proxy's `iptables-save` output (1.28+): nat `PREROUTING` and
//! `OUTPUT` jump to `KUBE-SERVICES`, which has one rule per Service port matching its
//! cluster IP and port, jumping to `KUBE-SVC-<hash>`; that chain marks traffic from outside
//! the cluster CIDR for masquerade (`KUBE-MARK-MASQ`) and picks an endpoint with
//! `-m statistic --mode random --probability 1/n, 1/(n-1), ...`, each `KUBE-SEP-<hash>`
//! marking hairpin traffic and DNATing to its endpoint; `KUBE-SERVICES` ends with the
//! `addrtype LOCAL` jump to `KUBE-NODEPORTS`; `KUBE-POSTROUTING` masquerades marked packets.
//! filter `FORWARD` carries `KUBE-PROXY-FIREWALL`, `KUBE-FORWARD` (INVALID drop, mark
//! accept, RELATED/ESTABLISHED accept) and the `ctstate NEW` jumps to `KUBE-SERVICES` and
//! `KUBE-EXTERNAL-SERVICES`. Left out: NodePorts and load balancers, which no packet of
//! the benchmark reaches, and the nfacct counter on the INVALID drop (a counter only, and
//! not every kernel has `xt_nfacct`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use crate::netns::{run_ok, NetNs};

/// One Service port with its endpoints.
pub struct Service {
    /// `namespace/name:port`, as kube-proxy's comments and chain hashes use it.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<SocketAddrV4>,
}

/// The node's Services and its cluster CIDR (traffic from outside it is masqueraded).
pub struct Rules {
    pub cluster_cidr: &'static str,
    pub services: Vec<Service>,
}

impl Rules {
    /// `services` Services of `endpoints` endpoints each, cluster IPs from 10.96.0.0/16,
    /// endpoints spread over pods of other nodes (10.10.16.0/20 and up: no VM of the
    /// benchmark uses those subnets, so no measured packet is a Service packet).
    pub fn synthetic(services: usize, endpoints: usize) -> Rules {
        let services = (0..services)
            .map(|i| {
                let ip = |n: usize| Ipv4Addr::new(10, 96, (n / 250) as u8, (n % 250 + 1) as u8);
                let endpoints = (0..endpoints)
                    .map(|k| {
                        let n = i * endpoints + k;
                        SocketAddrV4::new(Ipv4Addr::new(10, 10, 16 + (n / 250) as u8, (n % 250 + 1) as u8), 8080)
                    })
                    .collect();
                Service { name: format!("bench-{}/svc-{i}:http", i % 20), cluster_ip: ip(i), port: 80, endpoints }
            })
            .collect();
        Rules { cluster_cidr: "10.10.0.0/16", services }
    }

    /// The `iptables-restore` input (nat and filter), as kube-proxy writes it.
    pub fn render(&self) -> String {
        let mut chains = String::new();
        let mut rules = String::new();
        for svc in &self.services {
            let svc_chain = chain_name("KUBE-SVC-", &svc.name);
            let _ = writeln!(chains, ":{svc_chain} - [0:0]");
            let _ = writeln!(
                rules,
                "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j {svc_chain}",
                svc.cluster_ip, svc.name, svc.port
            );
            let _ = writeln!(
                rules,
                "-A {svc_chain} ! -s {} -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
                self.cluster_cidr, svc.cluster_ip, svc.name, svc.port
            );
            let n = svc.endpoints.len();
            for (k, ep) in svc.endpoints.iter().enumerate() {
                let sep_chain = chain_name("KUBE-SEP-", &format!("{}{ep}", svc.name));
                let _ = writeln!(chains, ":{sep_chain} - [0:0]");
                let pick = match n - k {
                    1 => String::new(),
                    left => format!("-m statistic --mode random --probability {} ", probability(left)),
                };
                let _ = writeln!(rules, "-A {svc_chain} -m comment --comment \"{} -> {ep}\" {pick}-j {sep_chain}", svc.name);
                let _ = writeln!(rules, "-A {sep_chain} -s {}/32 -m comment --comment \"{}\" -j KUBE-MARK-MASQ", ep.ip(), svc.name);
                let _ = writeln!(rules, "-A {sep_chain} -p tcp -m comment --comment \"{}\" -m tcp -j DNAT --to-destination {ep}", svc.name);
            }
        }
        format!(
            "*nat\n\
             :KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
             {chains}\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
             {rules}\
             -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             COMMIT\n\
             *filter\n\
             :KUBE-FORWARD - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n\
             :KUBE-NODEPORTS - [0:0]\n:KUBE-FIREWALL - [0:0]\n\
             -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
             -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
             -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
             -A INPUT -j KUBE-FIREWALL\n\
             -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
             -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
             -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
             -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -j KUBE-FIREWALL\n\
             -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
             -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             COMMIT\n"
        )
    }

    /// Load the rules into `ns` with `iptables-restore --noflush`, as kube-proxy does;
    /// `scratch` holds the input file.
    pub fn apply(&self, ns: &NetNs, scratch: &Path) {
        let file = scratch.join("kube-proxy.rules");
        std::fs::write(&file, self.render()).expect("write kube-proxy rules");
        run_ok(ns.command("iptables-restore").args(["-w", "--noflush"]).arg(&file));
    }
}

/// kube-proxy's chain names: a prefix and 16 characters of a hash of the Service (port) name
/// (kube-proxy uses base32 of SHA-256; any stable hash has the same shape).
fn chain_name(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = crate::fnv1a(key.as_bytes());
    let mut name = prefix.to_string();
    for _ in 0..16 {
        name.push(ALPHABET[(h & 31) as usize] as char);
        h = h.rotate_right(5).wrapping_mul(0x9e3779b97f4a7c15) ^ 0x5851f42d4c957f2d;
    }
    name
}

/// The probability kube-proxy writes for the endpoint with `left` endpoints still to choose
/// from: 1/left with 10 decimals (its `computeProbability`).
fn probability(left: usize) -> String {
    format!("{:.10}", 1.0 / left as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::netns::TempDir;

    /// The generated rules are what kube-proxy's do, proven by traffic: connections to a
    /// Service's cluster IP are DNATed to its endpoints, and the statistic rules spread them.
    #[test]
    fn generated_rules_dnat_a_service_to_all_of_its_endpoints() {
        let ns = NetNs::new("kp");
        // Endpoints are local addresses of a veth in the namespace (no dummy device on every kernel).
        ns.ip("link add kp0 type veth peer name kp1");
        let endpoints: Vec<SocketAddrV4> = (1..=3).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 10, 200, i), 8080)).collect();
        for ep in &endpoints {
            ns.ip(&format!("addr add {}/32 dev kp0", ep.ip()));
        }
        ns.ip("link set kp0 up");
        ns.ip("link set kp1 up");
        // As on a node: the cluster IPs are routable (a default route), DNAT then reroutes.
        ns.ip("route add 10.96.0.0/16 dev kp0");
        let mut rules = Rules::synthetic(50, 3);
        rules.services[17].endpoints = endpoints.clone();
        let vip = rules.services[17].cluster_ip;
        let scratch = TempDir::new("kp");
        rules.apply(&ns, scratch.path());
        let saved = ns.sh("iptables-save", &["-t", "nat"]);
        assert_eq!(saved.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count(), 50);
        assert_eq!(saved.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(), 150);
        // The kernel keeps a 32-bit fraction: iptables-save prints what kube-proxy's own dumps show.
        assert_eq!(saved.matches("--probability 0.33333333349").count(), 50, "{saved}");

        let reached: HashSet<Ipv4Addr> = ns.run(|| {
            let listener = TcpListener::bind(("0.0.0.0", 8080)).expect("bind");
            (0..30)
                .map(|_| {
                    let mut client = TcpStream::connect((vip, 80)).expect("connect to the cluster IP");
                    let (conn, _) = listener.accept().expect("accept");
                    let local = match conn.local_addr().unwrap() {
                        std::net::SocketAddr::V4(a) => *a.ip(),
                        other => panic!("not IPv4: {other}"),
                    };
                    drop(conn);
                    // The server's close reaches the client: EOF.
                    assert_eq!(client.read(&mut [0u8; 1]).expect("read"), 0);
                    local
                })
                .collect()
        });
        let want: HashSet<Ipv4Addr> = endpoints.iter().map(|e| *e.ip()).collect();
        // 30 connections all picking fewer than 3 endpoints: probability below 1e-5.
        assert_eq!(reached, want, "every endpoint is chosen, and nothing else");
    }

    #[test]
    fn chain_names_are_kube_proxy_shaped_and_distinct() {
        let names: HashSet<String> = (0..2000).map(|i| chain_name("KUBE-SVC-", &format!("ns/svc-{i}:http"))).collect();
        assert_eq!(names.len(), 2000);
        assert!(names.iter().all(|n| n.len() == 25), "iptables chain names are at most 28 characters");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
    }
}
