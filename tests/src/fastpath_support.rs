//! Fixtures for the fast-path tests: one router namespace with several "VM" namespaces
//! behind it (each with its own pod subnet and pin dir, so Services can span VMs), pods
//! added by the real plugin binary (`cni_runner`), bulk TCP and TTL-revealing UDP traffic
//! from sockets opened inside namespaces, and the plugin's own `stats`/`endpoints --json`
//! for the counters. Built on `netns` and `cni_runner`.
//!
//! Topology (N = VM index):
//! ```text
//! pod (10.10.N.x) ==veth== VM netns --up0 (192.168.N.2)== router netns (192.168.N.1)
//! ```
//! Every namespace, pin directory and IPAM directory is unique and removed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::cni_runner::{self, Attachment, Outcome};
use crate::netns::{run_ok, unique, NetNs, TempDir};
use crate::patience::io_timeout;
use crate::vm::with_prev;

/// The pin layout version directory the plugin uses (`veth_route_common::PIN_LAYOUT_VERSION`).
pub const PIN_LAYOUT: &str = "v2";

/// Name of the uplink inside each VM namespace.
pub const UPLINK: &str = "up0";

/// The router ("vrouter" / remote host) every VM's uplink connects to.
pub struct Router {
    pub ns: NetNs,
}

impl Router {
    /// A forwarding namespace with no links yet; each [`Vm::new`] adds one.
    pub fn new() -> Self {
        let ns = NetNs::new("fr");
        ns.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        Self { ns }
    }

    /// The router's address on VM `index`'s link.
    pub fn addr_for(index: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, index, 1)
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

/// A VM: its namespace, uplink to the router, pin dir and IPAM store; pods live in 10.10.N.0/24.
pub struct Vm {
    pub ns: NetNs,
    pub index: u8,
    /// The router's end of this VM's uplink.
    pub router_link: String,
    pub pin_dir: PathBuf,
    /// host-local's store, removed on drop.
    ipam_dir: TempDir,
    /// The network config passed to the plugin; tests may edit it before adding pods.
    pub conf: Value,
    /// Extra environment for the plugin process.
    pub env: Vec<(&'static str, String)>,
    /// The plugin binary run for this VM (veth-route; benchmarks swap in ptp).
    pub bin: PathBuf,
}

impl Vm {
    /// A VM behind `router` with `fastPath` set to `fast_path`.
    pub fn new(router: &Router, index: u8, fast_path: &str) -> Self {
        let ns = NetNs::new("fv");
        let peer = unique("fu");
        ns.ip(&format!("link add {UPLINK} type veth peer name {peer} netns {}", router.ns.name()));
        ns.ip(&format!("addr add 192.168.{index}.2/24 dev {UPLINK}"));
        ns.ip(&format!("link set {UPLINK} up"));
        router.ns.ip(&format!("addr add 192.168.{index}.1/24 dev {peer}"));
        router.ns.ip(&format!("link set {peer} up"));
        router.ns.ip(&format!("route add 10.10.{index}.0/24 via 192.168.{index}.2"));
        ns.ip(&format!("route add default via {}", Router::addr_for(index)));
        ns.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let tag = unique("fp");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&tag);
        let ipam_dir = TempDir::new("fpipam");
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": format!("fastpath-{tag}"),
            "type": "veth-route",
            "fastPath": fast_path,
            "bpfPinDir": pin_dir,
            "uplinks": [UPLINK],
        });
        let bin = cni_runner::plugin_binary().to_path_buf();
        let mut vm = Self { ns, index, router_link: peer, pin_dir, ipam_dir, conf, env: Vec::new(), bin };
        vm.conf["ipam"] = vm.host_local();
        vm
    }

    /// Run the plugin for `command` as a runtime would, inside the VM namespace.
    /// `prev` is passed as `prevResult`, as runtimes do for CHECK and DEL.
    pub fn cni(&self, command: &str, att: &Attachment, prev: Option<&Value>) -> Outcome {
        self.cni_as(&self.conf, command, att, prev)
    }

    /// [`Vm::cni`] with another network config (a second network on this VM).
    pub fn cni_as(&self, conf: &Value, command: &str, att: &Attachment, prev: Option<&Value>) -> Outcome {
        self.cni_with(conf, command, att, prev, &[])
    }

    /// [`Vm::cni_as`] with `extra` environment for this run only.
    fn cni_with(&self, conf: &Value, command: &str, att: &Attachment, prev: Option<&Value>, extra: &[(&str, &str)]) -> Outcome {
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        let conf = with_prev(conf, prev);
        cni_runner::exec(&self.bin, &self.ns, command, Some(att), &env, conf.to_string().as_bytes())
    }

    /// ADD a pod; panics if the plugin fails.
    pub fn add_pod(&self) -> Pod<'_> {
        self.try_add_pod().unwrap_or_else(|out| panic!("ADD failed: {}{}", out.stdout, out.stderr))
    }

    /// ADD a pod; the plugin's output when it fails (the pod netns is then removed).
    pub fn try_add_pod(&self) -> Result<Pod<'_>, Outcome> {
        self.try_add_pod_as(self.conf.clone())
    }

    /// ADD a pod of network `conf` (a second network on this VM); panics if the plugin fails.
    pub fn add_pod_as(&self, conf: Value) -> Pod<'_> {
        self.try_add_pod_as(conf).unwrap_or_else(|out| panic!("ADD failed: {}{}", out.stdout, out.stderr))
    }

    /// ADD a pod with `extra` environment for the plugin's ADD only; panics if it fails.
    pub fn add_pod_with_env(&self, extra: &[(&str, &str)]) -> Pod<'_> {
        self.try_add_pod_with(self.conf.clone(), extra).unwrap_or_else(|out| panic!("ADD failed: {}{}", out.stdout, out.stderr))
    }

    fn try_add_pod_as(&self, conf: Value) -> Result<Pod<'_>, Outcome> {
        self.try_add_pod_with(conf, &[])
    }

    fn try_add_pod_with(&self, conf: Value, extra: &[(&str, &str)]) -> Result<Pod<'_>, Outcome> {
        let ns = NetNs::new("fp");
        let att = Attachment { container_id: format!("{}-ctr", unique("f")), netns: Some(ns.path().to_path_buf()), ifname: "eth0".into() };
        let out = self.cni_with(&conf, "ADD", &att, None, extra);
        if out.exit != 0 {
            return Err(out);
        }
        let result = out.result();
        let addr = result["ips"][0]["address"].as_str().expect("result has an address");
        let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
        let ip6 = result["ips"].as_array().into_iter().flatten().find_map(|ip| {
            let a = ip["address"].as_str()?;
            a.contains(':').then(|| a.split('/').next().unwrap().parse().unwrap())
        });
        Ok(Pod { vm: self, conf, ns, att, ip, ip6, result, deleted: false })
    }

    /// Make this VM dual-stack: IPv6 on its uplink and the router's end (the router routes
    /// the VM's pod prefix `fd00:10:10:N::/64` to it), an IPv6 default route, and an IPv6
    /// range in the network config's IPAM beside the IPv4 one. Call before adding pods.
    pub fn add_ipv6(&mut self, router: &Router) {
        let (index, link) = (self.index, &self.router_link);
        router.ns.sh("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
        router.ns.ip(&format!("addr add fd00:192:168:{index}::1/64 dev {link} nodad"));
        router.ns.ip(&format!("-6 route add fd00:10:10:{index}::/64 via fd00:192:168:{index}::2"));
        self.ns.ip(&format!("addr add fd00:192:168:{index}::2/64 dev {UPLINK} nodad"));
        self.ns.ip(&format!("-6 route add default via fd00:192:168:{index}::1"));
        let ranges = self.conf["ipam"]["ranges"].as_array_mut().expect("IPAM ranges");
        ranges.push(json!([{ "subnet": format!("fd00:10:10:{index}::/64") }]));
        // A config that lists its IPv4 default route gets the IPv6 one too (ptp).
        if let Some(routes) = self.conf["ipam"]["routes"].as_array_mut() {
            routes.push(json!({"dst": "::/0"}));
        }
    }

    /// host-local IPAM config for this VM's pod subnet.
    pub fn host_local(&self) -> Value {
        json!({ "type": "host-local", "dataDir": self.ipam_dir.path(), "ranges": [[{ "subnet": format!("10.10.{}.0/24", self.index) }]] })
    }

    /// The host veth routing to `ip` (from the VM's /32 route).
    pub fn host_veth_of(&self, ip: Ipv4Addr) -> String {
        let routes: Value = serde_json::from_str(&self.ns.ip(&format!("-j route show {ip}/32"))).unwrap();
        routes[0]["dev"].as_str().unwrap_or_else(|| panic!("no route to {ip}: {routes}")).to_string()
    }

    /// `veth-route stats --json` for this VM's pin dir.
    pub fn stats(&self) -> Value {
        self.operator_json(&["stats"])
    }

    /// Counter `name` of program `prog` ("from_pod" / "from_uplink").
    pub fn counter(&self, prog: &str, name: &str) -> u64 {
        self.stats()[prog][name].as_u64().unwrap_or_else(|| panic!("no counter {prog}.{name}"))
    }

    /// Pod addresses in the endpoint map (`veth-route endpoints --json`).
    pub fn endpoint_ips(&self) -> Vec<Ipv4Addr> {
        self.operator_json(&["endpoints"]).as_array().unwrap().iter().map(|e| e["ip"].as_str().unwrap().parse().unwrap()).collect()
    }

    /// `veth-route <cmd> --pin-dir <this VM's pins> --json`, parsed.
    pub fn operator_json(&self, cmd: &[&str]) -> Value {
        let out = run_ok(self.ns.command(cni_runner::plugin_binary()).args(cmd).arg("--pin-dir").arg(&self.pin_dir).arg("--json"));
        serde_json::from_str(&out).expect("operator output is JSON")
    }

    /// The versioned pin directory (`veth_route_common::PIN_LAYOUT_VERSION`).
    pub fn pins(&self) -> PathBuf {
        self.pin_dir.join(PIN_LAYOUT)
    }

    /// Host veths with pinned pod program links, sorted; both pod programs (`from_pod` on
    /// ingress, `to_pod` on egress) must agree.
    pub fn pod_link_pins(&self) -> Vec<String> {
        let list = |prog: &str| -> Vec<String> {
            let mut v: Vec<String> = match std::fs::read_dir(self.pins().join("links").join(prog)) {
                Ok(d) => d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
                Err(_) => Vec::new(),
            };
            v.sort();
            v
        };
        let (from, to) = (list("from_pod"), list("to_pod"));
        assert_eq!(from, to, "from_pod and to_pod link pins differ");
        from
    }

    /// Run `iptables` inside the VM.
    pub fn iptables(&self, args: &[&str]) {
        self.ns.sh("iptables", args);
    }

    /// A stateful host firewall (the INVALID drop kube-proxy installs): conntrack runs.
    pub fn drop_invalid(&self) {
        self.iptables(&["-w", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Link pins hold the TCX links; removing the tree detaches and frees everything.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// A pod added through the plugin; DEL and netns removal on drop.
pub struct Pod<'a> {
    pub vm: &'a Vm,
    /// The network config the pod was added with.
    conf: Value,
    pub ns: NetNs,
    pub att: Attachment,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address, on a dual-stack VM ([`Vm::add_ipv6`]).
    pub ip6: Option<std::net::Ipv6Addr>,
    /// The ADD result (prevResult of CHECK and DEL).
    pub result: Value,
    deleted: bool,
}

impl Pod<'_> {
    /// DEL through the plugin; must succeed.
    pub fn del(&mut self) {
        self.vm.cni_as(&self.conf, "DEL", &self.att, Some(&self.result)).assert_ok();
        self.deleted = true;
    }

    /// CHECK through the plugin.
    pub fn check(&self) -> Outcome {
        self.vm.cni_as(&self.conf, "CHECK", &self.att, Some(&self.result))
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = self.vm.cni_as(&self.conf, "DEL", &self.att, Some(&self.result));
        }
    }
}

/// Send `bytes` over TCP from a socket in `client` to `connect`, served by a listener in
/// `server` on `listen_port` (0: the port of `connect`); returns how many bytes the server
/// received, after checking their checksum. Panics on any failure.
pub fn tcp_transfer(client: &NetNs, server: &NetNs, listen_port: u16, connect: SocketAddrV4, bytes: usize) -> usize {
    try_tcp_transfer_with(client, server, listen_port, connect, bytes, 0, || {}).unwrap_or_else(|e| panic!("TCP {connect}: {e}"))
}

/// [`tcp_transfer`], with failures (no connection, reset, timeout) as `Err`, that runs
/// `midway` once the connection is established and the first `first` bytes are written
/// (something that happens to a live connection).
pub fn try_tcp_transfer_with(
    client: &NetNs,
    server: &NetNs,
    listen_port: u16,
    connect: impl Into<SocketAddr>,
    bytes: usize,
    first: usize,
    midway: impl FnOnce(),
) -> Result<usize, String> {
    let connect: SocketAddr = connect.into();
    let port = if listen_port == 0 { connect.port() } else { listen_port };
    let any = if connect.is_ipv6() { "::" } else { "0.0.0.0" };
    let listener = server.run(|| TcpListener::bind((any, port)).expect("bind"));
    let payload: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    let want_sum = crate::fnv1a(&payload);
    std::thread::scope(|s| {
        let srv = s.spawn(move || -> Result<(), String> {
            // poll first so a client that never connects cannot leave this thread in accept().
            let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one valid fd.
            if unsafe { libc::poll(&mut pfd, 1, io_timeout().as_millis() as i32) } != 1 {
                return Err("server: no connection arrived".into());
            }
            let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            conn.set_read_timeout(Some(io_timeout())).unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).map_err(|e| format!("server read: {e}"))?;
            conn.write_all(&(got.len() as u64).to_be_bytes()).map_err(|e| e.to_string())?;
            conn.write_all(&crate::fnv1a(&got).to_be_bytes()).map_err(|e| e.to_string())
        });
        let client_side = || -> Result<usize, String> {
            let mut conn = client.run(|| TcpStream::connect_timeout(&connect, io_timeout())).map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(io_timeout())).unwrap();
            conn.set_write_timeout(Some(io_timeout())).unwrap();
            let (head, tail) = payload.split_at(first.min(payload.len()));
            conn.write_all(head).map_err(|e| format!("client write: {e}"))?;
            midway();
            conn.write_all(tail).map_err(|e| format!("client write: {e}"))?;
            conn.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
            let mut reply = [0u8; 16];
            conn.read_exact(&mut reply).map_err(|e| format!("server's reply: {e}"))?;
            if u64::from_be_bytes(reply[8..].try_into().unwrap()) != want_sum {
                return Err("payload corrupted in transit".into());
            }
            Ok(u64::from_be_bytes(reply[..8].try_into().unwrap()) as usize)
        };
        let result = client_side();
        let server = srv.join().expect("server thread panicked");
        let n = result?;
        server?;
        Ok(n)
    })
}

/// Delete every conntrack entry of `ns` (ctnetlink's flush, what `conntrack -F` sends): a
/// flow the fast path bypasses after its first packet is in conntrack only until that
/// entry times out (2 minutes for a TCP flow conntrack saw only the SYN of); this is the
/// same state without the wait.
pub fn forget_conntrack(ns: &NetNs) {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    ns.run(|| {
        // SAFETY: a netlink socket we own, closed below; buffers outlive the calls.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER);
            assert!(fd >= 0, "netfilter netlink socket: {}", std::io::Error::last_os_error());
            // nlmsghdr, then nfgenmsg { family AF_UNSPEC, version 0, res_id 0 }: no tuple = flush.
            let mut req = [0u8; 20];
            req[0..4].copy_from_slice(&20u32.to_ne_bytes());
            req[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
            req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
            req[8..12].copy_from_slice(&1u32.to_ne_bytes());
            let sent = libc::send(fd, req.as_ptr().cast(), req.len(), 0);
            assert_eq!(sent, 20, "ctnetlink flush: {}", std::io::Error::last_os_error());
            let mut ack = [0u8; 256];
            let n = libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0);
            libc::close(fd);
            assert!(n >= 20, "ctnetlink flush: no answer");
            let errno = -i32::from_ne_bytes(ack[16..20].try_into().unwrap());
            assert_eq!(errno, 0, "ctnetlink flush: {}", std::io::Error::from_raw_os_error(errno));
        }
    });
}

/// Send one UDP datagram with IP TTL `ttl` from `sender` (bound to `from`, or any address)
/// to `to`, received in `receiver`; returns the TTL the receiver saw (IP_RECVTTL).
pub fn udp_ttl(sender: &NetNs, from: Option<Ipv4Addr>, receiver: &NetNs, to: Ipv4Addr, ttl: u32) -> u8 {
    udp_hops(sender, from.map(std::net::IpAddr::V4), receiver, to.into(), ttl)
}

/// [`udp_ttl`] for either family: an IPv6 datagram goes with hop limit `hops` and the
/// receiver reports the hop limit it saw (IPV6_RECVHOPLIMIT).
pub fn udp_hops(sender: &NetNs, from: Option<std::net::IpAddr>, receiver: &NetNs, to: std::net::IpAddr, hops: u32) -> u8 {
    let rx = receiver.run(|| UdpSocket::bind((to, 0)).expect("bind receiver"));
    let port = rx.local_addr().unwrap().port();
    let v6 = to.is_ipv6();
    enable_recv_hops(&rx, v6);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let any = if v6 { std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) } else { std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let tx = sender.run(|| UdpSocket::bind((from.unwrap_or(any), 0)).expect("bind sender"));
    if v6 {
        set_unicast_hops(&tx, hops);
    } else {
        tx.set_ttl(hops).unwrap();
    }
    tx.send_to(b"ttl probe", (to, port)).expect("send");
    let (payload, got) = recv_with_hops(&rx).expect("datagram delivered");
    assert_eq!(payload, b"ttl probe");
    got
}

/// A UDP socket created inside `ns`, bound to `bind` (port chosen by the kernel).
pub fn udp_socket_in(ns: &NetNs, bind: Ipv4Addr) -> UdpSocket {
    ns.run(|| UdpSocket::bind((bind, 0)).expect("bind"))
}

fn enable_recv_hops(sock: &UdpSocket, v6: bool) {
    if v6 {
        set_int_opt(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT");
    } else {
        set_int_opt(sock, libc::IPPROTO_IP, libc::IP_RECVTTL, 1, "IP_RECVTTL");
    }
}

/// The hop limit of IPv6 datagrams `sock` sends.
pub fn set_unicast_hops(sock: &UdpSocket, hops: u32) {
    set_int_opt(sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, hops as libc::c_int, "IPV6_UNICAST_HOPS");
}

fn set_int_opt(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int, what: &str) {
    // SAFETY: setsockopt with a valid int option on our socket.
    let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), level, name, (&value as *const libc::c_int).cast(), 4) };
    assert_eq!(rc, 0, "{what}: {}", std::io::Error::last_os_error());
}

/// One datagram and its IP TTL or IPv6 hop limit; None on timeout.
fn recv_with_hops(sock: &UdpSocket) -> Option<(Vec<u8>, u8)> {
    let mut buf = [0u8; 2048];
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg into buffers we own.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut ttl = None;
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && ty == libc::IP_TTL) || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_HOPLIMIT) {
                ttl = Some(*(libc::CMSG_DATA(c) as *const libc::c_int) as u8);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((buf[..n as usize].to_vec(), ttl.expect("IP_TTL or IPV6_HOPLIMIT control message")))
}

/// Poll `cond` until it holds (event-driven counters settle in microseconds; the deadline
/// only turns a bug into a failure instead of a hang).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + io_timeout();
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::yield_now();
    }
}

/// A UDP socket created inside `ns`, bound to `bind` of either family (port chosen by the
/// kernel).
pub fn udp_socket_at(ns: &NetNs, bind: std::net::IpAddr) -> UdpSocket {
    ns.run(|| UdpSocket::bind((bind, 0)).unwrap_or_else(|e| panic!("bind {bind}: {e}")))
}

/// Send each `(source, destination, payload)` from `ns`, in order, from one thread pinned
/// to one CPU. The pod's veth hands the host what one CPU sends in order (that CPU's
/// backlog, or the veth's single NAPI queue), and the host takes each packet to its
/// socket or drops it before it looks at the next. So once a later datagram has arrived,
/// every earlier one from the same pod has been delivered or dropped: a test learns that
/// a datagram did not arrive without waiting for a timeout.
pub fn udp_send_in_order(ns: &NetNs, datagrams: &[(std::net::IpAddr, SocketAddr, &[u8])]) {
    ns.run(|| {
        stay_on_this_cpu();
        for (from, to, payload) in datagrams {
            let sock = UdpSocket::bind((*from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
            sock.send_to(payload, to).unwrap_or_else(|e| panic!("send {from} -> {to}: {e}"));
        }
    });
}

/// Pin the calling thread to the CPU it runs on, so what it sends stays in order (see
/// [`udp_send_in_order`]).
pub fn stay_on_this_cpu() {
    // SAFETY: sched_getcpu/sched_setaffinity on the calling thread with a cpu_set_t we own.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu: {}", std::io::Error::last_os_error());
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
}
