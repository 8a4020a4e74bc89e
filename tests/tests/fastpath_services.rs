//! kube-proxy-style Services keep working with `fastPath: auto`: iptables DNAT in the VM
//! from a virtual IP to a backend pod on the same VM and on a second VM. The backend's
//! replies belong to a NATed conntrack entry, so the fast path must hand them to the
//! kernel for reverse NAT (counted as `pass_nat`) instead of redirecting them.

use std::net::{Ipv4Addr, SocketAddrV4};

use testbed::fastpath_support::{tcp_transfer, try_tcp_transfer, Router, Vm};

const VIP_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const BYTES: usize = 1 << 20;

/// What kube-proxy's iptables mode installs for a ClusterIP with one endpoint.
fn dnat(vm: &Vm, vip: Ipv4Addr, backend: Ipv4Addr) {
    let to = format!("{backend}:8080");
    let vip = vip.to_string();
    vm.iptables(&["-w", "-t", "nat", "-A", "PREROUTING", "-d", &vip, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", &to]);
}

#[test]
fn service_vip_to_local_and_remote_backend_works_with_fast_path_auto() {
    let router = Router::new();
    let vm1 = Vm::new(&router, 1, "auto");
    let vm2 = Vm::new(&router, 2, "auto");
    let client = vm1.add_pod();
    let local_backend = vm1.add_pod();
    let remote_backend = vm2.add_pod();
    dnat(&vm1, VIP_LOCAL, local_backend.ip);
    dnat(&vm1, VIP_REMOTE, remote_backend.ip);

    // Same VM: client -> VIP is DNATed by the kernel; the backend's replies (dst = client, a
    // local pod) hit the endpoint map but conntrack says NAT, so they stay on the kernel path.
    let nat = vm1.counter("from_pod", "pass_nat");
    assert_eq!(tcp_transfer(&client.ns, &local_backend.ns, 8080, SocketAddrV4::new(VIP_LOCAL, 80), BYTES), BYTES);
    assert!(vm1.counter("from_pod", "pass_nat") > nat, "backend replies must be left to reverse NAT");

    // Backend on VM2: its replies enter VM1 through the uplink, same decision there.
    let nat_up = vm1.counter("from_uplink", "pass_nat");
    let vm2_redirected = vm2.counter("from_uplink", "redirected");
    assert_eq!(tcp_transfer(&client.ns, &remote_backend.ns, 8080, SocketAddrV4::new(VIP_REMOTE, 80), BYTES), BYTES);
    assert!(vm1.counter("from_uplink", "pass_nat") > nat_up, "remote backend replies must be left to reverse NAT");
    // VM2 did no NAT itself: the DNATed packets arriving there go straight into the backend,
    // and the backend's replies straight out again.
    assert!(vm2.counter("from_uplink", "redirected") > vm2_redirected);
    assert!(vm2.counter("from_pod", "redirected_out") > 0);

    // Plain pod-to-pod traffic between the same pods is still redirected.
    let redirected = vm1.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&client.ns, &local_backend.ns, 0, SocketAddrV4::new(local_backend.ip, 8081), BYTES), BYTES);
    assert!(vm1.counter("from_pod", "redirected") > redirected);
}

/// Why `auto` exists: `always` redirects the backend's replies past reverse NAT, the client
/// sees the backend's address instead of the VIP and the connection never establishes.
#[test]
fn fast_path_always_breaks_same_vm_services_as_documented() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "always");
    let client = vm.add_pod();
    let backend = vm.add_pod();
    dnat(&vm, VIP_LOCAL, backend.ip);
    let outcome = try_tcp_transfer(&client.ns, &backend.ns, 8080, SocketAddrV4::new(VIP_LOCAL, 80), 1024);
    assert!(outcome.is_err(), "expected the un-NATed reply to break the connection, got {outcome:?}");
}

/// A host whose conntrack kfuncs are unusable (nf_conntrack built as a module): `auto`
/// cannot prove flows un-NATed, so it keeps the kernel path; `always` still works.
#[test]
fn without_conntrack_kfuncs_auto_keeps_the_kernel_path_and_always_still_redirects() {
    let router = Router::new();
    let mut auto = Vm::new(&router, 1, "auto");
    auto.env.push(("VETH_ROUTE_NO_CT_KFUNCS", "1".into()));
    let a = auto.add_pod();
    let b = auto.add_pod();
    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7201), BYTES), BYTES);
    let progs = std::fs::read_dir(auto.pin_dir.join("v1/progs")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(progs, 0, "auto must not load programs that cannot check NAT");
    assert!(auto.pod_link_pins().is_empty());

    let mut always = Vm::new(&router, 2, "always");
    always.env.push(("VETH_ROUTE_NO_CT_KFUNCS", "1".into()));
    let c = always.add_pod();
    let d = always.add_pod();
    let redirected = always.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&c.ns, &d.ns, 0, SocketAddrV4::new(d.ip, 7202), BYTES), BYTES);
    assert!(always.counter("from_pod", "redirected") > redirected);
}

/// hostPort / NodePort style: DNAT from the VM's own address to a pod. The request takes
/// the kernel path (not a pod address); the pod's replies leave towards the remote client
/// and must get reverse NAT, so they must not be routed out by the fast path.
#[test]
fn host_port_dnat_to_a_pod_works_with_fast_path_auto() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let pod = vm.add_pod();
    let to = format!("{}:8080", pod.ip);
    vm.iptables(&[
        "-w",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "192.168.1.2",
        "-p",
        "tcp",
        "--dport",
        "30080",
        "-j",
        "DNAT",
        "--to-destination",
        &to,
    ]);
    let out = vm.counter("from_pod", "redirected_out");
    let vm_addr = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 30080);
    assert_eq!(tcp_transfer(&router.ns, &pod.ns, 8080, vm_addr, BYTES), BYTES);
    assert_eq!(vm.counter("from_pod", "redirected_out"), out, "replies of a DNATed flow must stay with the kernel");
}
