//! kube-proxy-style Services keep working with `fastPath: auto`: iptables DNAT in the VM
//! from a virtual IP to a backend pod on the same VM and on a second VM. The kernel
//! translates these flows, so they never come out of it under the tuple they went in with:
//! they never verify, and the backend's replies stay on the kernel path for reverse NAT
//! (counted as `pass_new_flow` / `pass_kernel_flow`), never redirected.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use testbed::fastpath_support::{tcp_transfer, udp_socket_in, wait_until, Router, Vm};
use testbed::patience::io_timeout;
use testbed::probe::netstat;

const VIP_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const BYTES: usize = 1 << 20;

/// What kube-proxy's iptables mode installs for a ClusterIP with one endpoint.
fn dnat(vm: &Vm, vip: Ipv4Addr, backend: Ipv4Addr) {
    vm.ns.dnat("tcp", vip.into(), 80, SocketAddrV4::new(backend, 8080).into());
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
    // local pod) hit the endpoint map, but their flow never verified: kernel path.
    let (redirected, kernel, verified) =
        (vm1.counter("from_pod", "redirected"), vm1.counter("from_pod", "pass_kernel_flow"), vm1.counter("to_pod", "flows_verified"));
    assert_eq!(tcp_transfer(&client.ns, &local_backend.ns, 8080, SocketAddrV4::new(VIP_LOCAL, 80), BYTES), BYTES);
    assert_eq!(vm1.counter("from_pod", "redirected"), redirected, "no packet of a NATed flow may be redirected");
    assert_eq!(vm1.counter("to_pod", "flows_verified"), verified, "a NATed flow never verifies");
    assert!(vm1.counter("from_pod", "pass_kernel_flow") > kernel, "backend replies must be left to reverse NAT");

    // Backend on VM2: its replies enter VM1 through the uplink, same decision there.
    let (up_redirected, up_kernel) = (vm1.counter("from_uplink", "redirected"), vm1.counter("from_uplink", "pass_kernel_flow"));
    let vm2_redirected = vm2.counter("from_uplink", "redirected");
    assert_eq!(tcp_transfer(&client.ns, &remote_backend.ns, 8080, SocketAddrV4::new(VIP_REMOTE, 80), BYTES), BYTES);
    assert_eq!(vm1.counter("from_uplink", "redirected"), up_redirected, "remote backend replies must be left to reverse NAT");
    assert!(vm1.counter("from_uplink", "pass_kernel_flow") > up_kernel);
    // VM2 did no NAT itself: the DNATed packets arriving there go straight into the backend,
    // and the backend's replies straight out again.
    assert!(vm2.counter("from_uplink", "redirected") > vm2_redirected);
    assert!(vm2.counter("from_pod", "redirected_out") > 0);

    // Plain pod-to-pod traffic between the same pods is still redirected.
    let redirected = vm1.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&client.ns, &local_backend.ns, 0, SocketAddrV4::new(local_backend.ip, 8081), BYTES), BYTES);
    assert!(vm1.counter("from_pod", "redirected") > redirected);
}

/// Why `auto` exists: `always` redirects the backend's replies past reverse NAT. The client
/// gets the SYN-ACK from the backend's address instead of the VIP's, answers it with a
/// reset, and its connection to the VIP never establishes.
#[test]
fn fast_path_always_breaks_same_vm_services_as_documented() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "always");
    let client = vm.add_pod();
    let backend = vm.add_pod();
    dnat(&vm, VIP_LOCAL, backend.ip);
    let _listener = backend.ns.run(|| TcpListener::bind(("0.0.0.0", 8080)).expect("bind"));
    let resets = netstat(&client.ns, "OutRsts");
    let conn = client.ns.run(|| ConnectInFlight::start(SocketAddrV4::new(VIP_LOCAL, 80)));
    // Nothing else runs in the client pod: its first reset answers the stray SYN-ACK.
    wait_until("the client resets the backend's un-NATed SYN-ACK", || netstat(&client.ns, "OutRsts") > resets);
    assert_eq!(conn.tcp_state(), TCP_SYN_SENT, "the connection to the VIP must not establish");
}

/// `TCP_SYN_SENT` of the kernel's `tcp_states.h`, as `tcp_info.tcpi_state` reports it.
const TCP_SYN_SENT: u8 = 2;

/// A non-blocking connect left in flight, so the test sees its state without waiting for
/// the connect to time out.
struct ConnectInFlight(OwnedFd);

impl ConnectInFlight {
    fn start(to: SocketAddrV4) -> ConnectInFlight {
        // SAFETY: socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: connect(2) with a sockaddr_in that lives across the call and its size.
        let rc = unsafe {
            libc::connect(fd.as_raw_fd(), (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
        };
        let err = std::io::Error::last_os_error();
        assert!(rc < 0 && err.raw_os_error() == Some(libc::EINPROGRESS), "connect {to}: expected EINPROGRESS, got {rc} ({err})");
        ConnectInFlight(fd)
    }

    fn tcp_state(&self) -> u8 {
        // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt(2) on a socket we own, into `info` of size `len`.
        let rc = unsafe {
            libc::getsockopt(self.0.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_state
    }
}

/// A tuple reused across the two kinds of flow: a client's socket first talks to a pod
/// directly (verified, bypassed both ways), then to a Service VIP that DNATs to that very
/// pod and port. The kernel delivers the translated flow under the verified tuple, which
/// the fast path never sends that way: the state is demoted, and the answer goes back
/// through reverse NAT. The client must see it come from the VIP.
#[test]
fn a_tuple_reused_by_a_nated_flow_is_demoted_and_the_answer_is_reverse_nated() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let client = vm.add_pod();
    let backend = vm.add_pod();
    let client_sock = udp_socket_in(&client.ns, client.ip);
    let server = udp_socket_in(&backend.ns, backend.ip);
    for s in [&client_sock, &server] {
        s.set_read_timeout(Some(io_timeout())).unwrap();
    }
    let server_addr = server.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let mut exchange = |to: std::net::SocketAddr| {
        client_sock.send_to(b"ping", to).unwrap();
        let (_, from) = server.recv_from(&mut buf).expect("request delivered");
        server.send_to(b"pong", from).unwrap();
        let (n, from) = client_sock.recv_from(&mut buf).expect("answer delivered");
        assert_eq!(&buf[..n], b"pong");
        from
    };
    // Before any NAT rule exists the VM has no conntrack, so the direct flow leaves none.
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(exchange(server_addr), server_addr);
    assert_eq!(vm.counter("from_pod", "redirected"), redirected + 1, "the direct answer is redirected");

    let vip = SocketAddrV4::new(VIP_LOCAL, 53);
    vm.ns.dnat("udp", VIP_LOCAL.into(), 53, server_addr);
    let demoted = vm.counter("to_pod", "flows_demoted");
    assert_eq!(exchange(vip.into()), std::net::SocketAddr::V4(vip), "the answer must come back from the VIP");
    assert_eq!(vm.counter("to_pod", "flows_demoted"), demoted + 1);
}

/// hostPort / NodePort style: DNAT from the VM's own address to a pod. The request takes
/// the kernel path (not a pod address); the pod's replies leave towards the remote client
/// and must get reverse NAT, so they must not be routed out by the fast path.
#[test]
fn host_port_dnat_to_a_pod_works_with_fast_path_auto() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let pod = vm.add_pod();
    vm.ns.dnat("tcp", Ipv4Addr::new(192, 168, 1, 2).into(), 30080, SocketAddrV4::new(pod.ip, 8080).into());
    let out = vm.counter("from_pod", "redirected_out");
    let vm_addr = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 30080);
    assert_eq!(tcp_transfer(&router.ns, &pod.ns, 8080, vm_addr, BYTES), BYTES);
    assert_eq!(vm.counter("from_pod", "redirected_out"), out, "replies of a DNATed flow must stay with the kernel");
}
