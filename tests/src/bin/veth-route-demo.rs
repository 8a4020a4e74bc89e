//! `cargo xtask demo`: the user's design note, live. A local Keystone + Neutron, a namespace
//! playing the VM (its uplink MAC is its Neutron port's MAC), one playing the vrouter, and
//! pods wired by the real `veth-route` + `tcnp-ipam` binaries exactly as `cnitool` would run
//! them. Prints what a person would look at, checks that traffic flows, deletes the pods
//! and leaves nothing behind.
//!
//! `--dual-stack`: the network also has a routed IPv6 subnet, the VM an IPv6 address on
//! its port, and tcnp-ipam `ipFamilies` IPv4 and IPv6: every pod gets both, the router
//! `/128`s via the VM's IPv6 address, and the traffic checks run over both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, ExitCode};

use serde_json::{json, Value};
use testbed::cni_runner;
use testbed::openstack::{block_on, Stack, StackOptions};
use testbed::probe;
use testbed::vm::Vm;

type DemoResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 8);

/// The pods' IPv6 subnet in `--dual-stack` (the router's interface takes its ::1).
const SUBNET6: &str = "fd00:10:10::/64";
const VROUTER_IP6: &str = "fd00:10:10::1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dual_stack = match args.as_slice() {
        [] => false,
        [a] if a == "--dual-stack" => true,
        _ => {
            eprintln!("usage: veth-route-demo [--dual-stack]");
            return ExitCode::from(2);
        }
    };
    match demo(dual_stack) {
        Ok(()) => {
            println!("\nDemo finished: every check passed and nothing is left behind.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Print a command as the seed note does (`[root@where ~]# cmd`) followed by its output.
fn show(prompt: &str, cmd: &str, out: &str) {
    println!("[root@{prompt} ~]# {cmd}");
    print!("{out}");
}

fn demo(dual_stack: bool) -> DemoResult {
    step("1. A local OpenStack (Keystone 30 + Neutron 29 on loopback, SQLite)");
    let stack = Stack::start(StackOptions::default())?;
    let env = stack.env().clone();
    println!("Keystone  {}\nNeutron   {}", env.auth_url, env.neutron_url);
    println!("network   {} subnet {} (gateway {}), router {}", env.network_id, env.cidr, env.gateway, env.router_id);
    let neutron = stack.neutron();
    let subnet6 = if dual_stack {
        // dhcpv6-stateful: Neutron takes explicit fixed IPs only on a stateful subnet, and a
        // router interface needs an RA mode too.
        let id = stack.add_routed_ipv6_subnet(&env.network_id, SUBNET6.parse()?)?;
        block_on(neutron.add_router_interface(&env.router_id, &id))?;
        println!("IPv6 subnet {id} {SUBNET6} (dhcpv6-stateful), on the router as {VROUTER_IP6}");
        Some(id)
    } else {
        None
    };

    step("2. Namespaces: the VM (10.10.10.8 on eth0), its vrouter (10.10.10.1 on qr0)");
    let vm = Vm::new();
    let mac = vm.ns.ip("-o link show eth0");
    let mac = mac.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).ok_or("no MAC on eth0")?.to_string();
    let mut fixed_ips = vec![json!({"subnet_id": env.subnet_id, "ip_address": VM_IP.to_string()})];
    fixed_ips.extend(subnet6.iter().map(|id| json!({"subnet_id": id})));
    let port = block_on(neutron.create_port(
        &env.network_id,
        json!({"name": "demo-vm", "mac_address": mac, "device_owner": "compute:nova", "fixed_ips": fixed_ips}),
    ))?;
    println!("the VM's Neutron port {} has MAC {mac} and fixed IPs {:?}", port.id, ips_of(&port));
    // The VM's IPv6 address, as DHCPv6 would configure it; the vrouter's is the router's.
    let vm_ip6 = port.fixed_ips.iter().find_map(|f| match f.ip_address {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    });
    if let Some(ip6) = vm_ip6 {
        vm.ns.ip(&format!("addr add {ip6}/64 dev eth0 nodad"));
        vm.vrouter.ip(&format!("addr add {VROUTER_IP6}/64 dev qr0 nodad"));
        vm.ns.ip(&format!("-6 route add default via {VROUTER_IP6} dev eth0"));
        println!("the VM has {ip6} on eth0, the vrouter {VROUTER_IP6} on qr0");
    }
    // The VM reaches the API at the same loopback URLs (relayed to the root namespace).
    let _api = stack.expose_in(vm.ns.path())?;

    step("3. The CNI config (the design note's, with the password in a 0600 file)");
    let mut ipam = stack.ipam_config(&env.network_id);
    ipam["dataDir"] = json!(vm.ipam_dir.path());
    ipam["hostInterface"] = json!("eth0");
    if dual_stack {
        ipam["neutronConf"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
        ipam["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    }
    let conf = json!({
        "cniVersion": "0.3.1",
        "name": "cni0",
        "type": "veth-route",
        "bpfPinDir": vm.pin_dir,
        "uplinks": ["eth0"],
        "logFile": vm.log_file(),
        "ipam": ipam,
    });
    println!("{}", serde_json::to_string_pretty(&conf)?);

    step("4. cnitool add: two pods");
    let pods = [vm.pod(), vm.pod()];
    let mut results = Vec::new();
    for pod in &pods {
        let out = vm.add(&conf, pod);
        if out.exit != 0 {
            return Err(format!("ADD failed: {}{}", out.stdout, out.stderr).into());
        }
        results.push(out.result());
    }
    let ips: Vec<Ipv4Addr> = results.iter().map(pod_ip).collect::<DemoResult<_>>()?;
    let ips6: Vec<Option<Ipv6Addr>> = results.iter().map(pod_ip6).collect::<DemoResult<_>>()?;
    if dual_stack && ips6.iter().any(Option::is_none) {
        return Err("--dual-stack: a pod got no IPv6 address".into());
    }
    println!("{}", serde_json::to_string_pretty(&results[0])?);

    step("5. Inside the first pod (compare with the design note)");
    show("pod", "ip -4 addr", &pods[0].ns.ip("-4 addr"));
    show("pod", "ip route", &pods[0].ns.ip("route"));
    if dual_stack {
        show("pod", "ip -6 addr show scope global", &pods[0].ns.ip("-6 addr show scope global"));
        show("pod", "ip -6 route", &pods[0].ns.ip("-6 route"));
        show("pod", "ip -6 neigh", &pods[0].ns.ip("-6 neigh"));
    }

    step("6. On the VM: the gateway, the host veths and the /32 routes");
    show("vm", "ip -4 addr", &vm.ns.ip("-4 addr"));
    show("vm", "ip route", &vm.ns.ip("route"));
    if dual_stack {
        show("vm", "ip -6 route", &vm.ns.ip("-6 route"));
    }

    step("7. Neutron: the pods' addresses are fixed IPs of the VM's own port");
    let now = block_on(neutron.get_port(&port.id))?;
    for ip in &now.fixed_ips {
        println!("  {} (subnet {})", ip.ip_address, ip.subnet_id);
    }
    let all_ips = ips.iter().map(|ip| IpAddr::V4(*ip)).chain(ips6.iter().flatten().map(|ip| IpAddr::V6(*ip)));
    for ip in all_ips {
        if !now.fixed_ips.iter().any(|f| f.ip_address == ip) {
            return Err(format!("{ip} is not on the VM's port").into());
        }
    }

    step(if dual_stack {
        "8. vrouter-route-controller --once: the router learns <pod>/32 and <pod>/128 via the VM"
    } else {
        "8. vrouter-route-controller --once: the router learns <pod>/32 via the VM"
    });
    let router_routes = sync_router(&stack, &vm)?;
    for r in &router_routes {
        println!("  {} nexthop {}", r.0, r.1);
        // Stand in for the L3 agent: program the vrouter namespace from the router's routes.
        let family = if r.0.contains(':') { "-6 " } else { "" };
        vm.vrouter.ip(&format!("{family}route replace {} via {}", r.0, r.1));
    }
    if dual_stack && !ips6.iter().flatten().all(|ip| router_routes.iter().any(|r| r.0 == format!("{ip}/128"))) {
        return Err("the router has no /128 route for a pod's IPv6 address".into());
    }
    show("vrouter", "ip route", &vm.vrouter.ip("route"));
    if dual_stack {
        show("vrouter", "ip -6 route", &vm.vrouter.ip("-6 route"));
    }

    step("9. Traffic");
    let checks: [(&str, &testbed::netns::NetNs, Ipv4Addr); 5] = [
        ("pod 1 -> its gateway 169.254.1.1", &pods[0].ns, Ipv4Addr::new(169, 254, 1, 1)),
        ("pod 1 -> pod 2 on the same VM", &pods[0].ns, ips[1]),
        ("pod 1 -> the VM's own address", &pods[0].ns, VM_IP),
        ("pod 1 -> the vrouter", &pods[0].ns, env_gateway(&env.gateway)?),
        ("vrouter -> pod 2 (through the VM)", &vm.vrouter, ips[1]),
    ];
    for (what, from, to) in checks {
        probe::ping(from, to)?;
        println!("  ok  ping {what} ({to})");
    }
    // TCP is what the fast path redirects (ICMP stays on the kernel path in `auto` mode).
    let _server = probe::TcpServer::start(&pods[1].ns, 8080, "hello from pod 2");
    for (what, from) in [("pod 1", &pods[0].ns), ("the vrouter", &vm.vrouter)] {
        let reply = probe::tcp_read(from, ips[1], 8080)?;
        println!("  ok  tcp {what} -> pod 2:8080 answered {reply:?}");
    }
    if let Some(pod2_ip6) = ips6[1] {
        let _server6 = probe::TcpServer::start_on(&pods[1].ns, IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8086, "hello over IPv6 from pod 2");
        for (what, from) in [("pod 1", &pods[0].ns), ("the vrouter", &vm.vrouter)] {
            let reply = probe::tcp_read(from, pod2_ip6, 8086)?;
            println!("  ok  tcp {what} -> pod 2 [{pod2_ip6}]:8086 answered {reply:?}");
        }
    }

    step("10. The eBPF fast path (`veth-route stats`, `veth-route endpoints`)");
    for sub in ["endpoints", "stats"] {
        let out = vm.ns.command(cni_runner::plugin_binary()).args([sub, "--pin-dir"]).arg(&vm.pin_dir).output()?;
        show("vm", &format!("veth-route {sub}"), &String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            print!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    step("11. cnitool del: the pods go; GC with the pool off releases the warm spares too");
    for (pod, res) in pods.iter().zip(&results) {
        let out = vm.del(&conf, pod, Some(res));
        if out.exit != 0 {
            return Err(format!("DEL failed: {}{}", out.stdout, out.stderr).into());
        }
    }
    // tcnp-ipam's default warm pool keeps up to two addresses on the port for the next pods.
    let kept = block_on(neutron.get_port(&port.id))?;
    let own = port.fixed_ips.len();
    let spares = kept.fixed_ips.len() - own;
    println!("VM port fixed IPs after DEL: {:?} (the VM's and {spares} warm spares)", ips_of(&kept));
    if spares > 2 * own {
        return Err(format!("DEL left {spares} addresses on the port; the default pool keeps at most 2 per family").into());
    }
    // A node drained for good: GC with the pool turned off releases the spares too.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["ipam"]["pool"] = json!({ "max": 0 });
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = vm.plugin("GC", &gc, None);
    if out.exit != 0 {
        return Err(format!("GC failed: {}{}", out.stdout, out.stderr).into());
    }
    let after = block_on(neutron.get_port(&port.id))?;
    println!("VM port fixed IPs now: {:?}", ips_of(&after));
    if after.fixed_ips.len() != own {
        return Err("pod addresses were not released".into());
    }
    let left = sync_router(&stack, &vm)?;
    println!("router routes now: {left:?}");
    let mut routes = vm.ns.ip("route");
    if dual_stack {
        routes += &vm.ns.ip("-6 route");
    }
    show("vm", "ip route", &routes);
    let veths = vm.ns.ip("-o link show type veth");
    if routes.contains("dev veth") || veths.lines().count() != 1 {
        return Err(format!("pod links or routes left on the VM:\n{veths}{routes}").into());
    }
    block_on(neutron.delete_port(&port.id))?;
    Ok(())
}

/// A port's addresses, as text.
fn ips_of(port: &openstack::Port) -> Vec<String> {
    port.fixed_ips.iter().map(|f| f.ip_address.to_string()).collect()
}

/// The IPv6 address of a CNI result, if it has one.
fn pod_ip6(result: &Value) -> DemoResult<Option<Ipv6Addr>> {
    let ips = result["ips"].as_array().ok_or("result has no ips")?;
    let v6 = ips.iter().filter_map(|ip| ip["address"].as_str()).find(|a| a.contains(':'));
    Ok(match v6 {
        Some(a) => Some(a.split('/').next().unwrap_or_default().parse()?),
        None => None,
    })
}

/// The first IPv4 address of a CNI result.
fn pod_ip(result: &Value) -> DemoResult<Ipv4Addr> {
    let addr = result["ips"][0]["address"].as_str().ok_or("result has no address")?;
    Ok(addr.split('/').next().unwrap_or_default().parse()?)
}

fn env_gateway(gw: &std::net::IpAddr) -> DemoResult<Ipv4Addr> {
    match gw {
        std::net::IpAddr::V4(v4) => Ok(*v4),
        other => Err(format!("unexpected gateway {other}").into()),
    }
}

/// Run one reconcile of the route controller against the stack and return the router's routes.
fn sync_router(stack: &Stack, _vm: &Vm) -> DemoResult<Vec<(String, String)>> {
    let env = stack.env();
    let bin = cni_runner::target_dir().join("debug/vrouter-route-controller");
    run_controller(&bin, stack)?;
    let router = block_on(stack.neutron().get_router(&env.router_id))?;
    Ok(router.routes.iter().map(|r| (r.destination.to_string(), r.nexthop.to_string())).collect())
}

fn run_controller(bin: &Path, stack: &Stack) -> DemoResult {
    let env = stack.env();
    let out = Command::new(bin)
        .arg("--once")
        .args(["--auth-url", &env.auth_url, "--username", &env.username, "--project", &env.project])
        .arg("--password-file")
        .arg(&env.password_file)
        .args(["--network", &env.network_id, "--cluster-id", "demo"])
        .output()?;
    if !out.status.success() {
        return Err(format!("vrouter-route-controller --once failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}
