//! The controller daemon under Neutron faults: it reacts to pod changes through its change
//! check (not the resync timer), and when Neutron fails in the middle of a pass, or stops
//! altogether, it backs off (1 s, 2 s, 4 s ...), reports unready, and removes no route.
//!
//! `FaultProxy` is a fake, named as such: it sits in front of the REAL Neutron and fails one
//! kind of call (listing the managed ports) with 503 while every other call goes through.
//! A real Neutron cannot be made to fail one call mid-pass on demand; this is the dangerous
//! case (the routers read fine, the pods do not), where a naive controller would conclude
//! "no pods" and delete every route. The second test stops the real Neutron.

mod controller_support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use controller_support::proxy::{forward, read_message};
use controller_support::{wait_for, Lab};
use testbed::openstack::{shared, Stack, StackOptions};

/// Fake: an HTTP relay to the real Neutron that answers 503 to `GET /v2.0/ports?..tags=..`
/// while `fault` is set, and relays everything else (`controller_support::proxy`).
struct FaultProxy {
    addr: SocketAddr,
    fault: Arc<AtomicBool>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(AtomicBool::new(false));
        let f = fault.clone();
        // The thread ends with the test process; it only ever talks to loopback.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || relay(conn, upstream, &f));
            }
        });
        FaultProxy { addr, fault }
    }
}

fn relay(mut client: TcpStream, upstream: SocketAddr, fault: &AtomicBool) {
    let Some((head, body)) = read_message(&mut client) else { return };
    let line = head.lines().next().unwrap_or("");
    if fault.load(Ordering::SeqCst) && line.starts_with("GET /v2.0/ports?") && line.contains("tags=") {
        let msg = r#"{"NeutronError":{"type":"ServiceUnavailable","message":"injected fault","detail":""}}"#;
        let _ = write!(
            client,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        );
        return;
    }
    forward(client, &head, &body, upstream);
}

fn errors(d: &controller_support::Daemon) -> f64 {
    d.metric("vrouter_reconciles_total{result=\"error\"}").unwrap_or(0.0)
}

#[test]
fn failing_pod_listing_mid_pass_removes_nothing_and_backs_off() {
    let stack = shared();
    let mut lab = Lab::new(stack, "vrc-fault", "10.68.0.0/24");
    let a = lab.vm("vm-a", lab.ip(11), "fa:16:3e:68:00:01");
    let b = lab.vm("vm-b", lab.ip(12), "fa:16:3e:68:00:02");
    lab.set_pods(&a, &[lab.ip(20), lab.ip(21), lab.ip(22)]);
    lab.set_pods(&b, &[lab.ip(30), lab.ip(31)]);
    let upstream: SocketAddr = stack.env().neutron_url.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream);
    let url = format!("http://{}", proxy.addr);
    // Resync only hourly: whatever happens below is driven by the change check.
    let mut d = lab.controller_daemon(&["--neutron-url", &url, "--poll-interval", "1", "--resync-interval", "3600"]);
    let expected = |pods: &[(u32, &controller_support::Vm)]| -> bool {
        let routes = lab.routes();
        pods.iter().all(|(n, vm)| controller_support::lookup(&routes, lab.ip(*n)) == Some(vm.primary))
    };
    wait_for("first convergence", || {
        (expected(&[(20, &a), (21, &a), (22, &a), (30, &b), (31, &b)]) && d.get("/readyz")?.0 == 200).then_some(())
    });

    // A new pod on B is noticed by the change check.
    lab.set_pods(&b, &[lab.ip(30), lab.ip(31), lab.ip(32)]);
    wait_for("route for the new pod", || expected(&[(32, &b)]).then_some(()));

    // Fault: the managed-port listing fails, and meanwhile A's pods really go away.
    let revision = lab.revision();
    let before = errors(&d);
    proxy.fault.store(true, Ordering::SeqCst);
    lab.set_pods(&a, &[]);
    wait_for("three failed passes", || (errors(&d) >= before + 3.0).then_some(()));
    assert_eq!(lab.revision(), revision, "the router was written while Neutron was failing: {}", d.log());
    let (code, why) = d.get("/readyz").unwrap();
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("503"), "readiness should say why: {why}");
    assert_eq!(d.get("/healthz").unwrap().0, 200, "a Neutron outage is not a reason to restart the controller");
    let log = d.log();
    for step in ["retrying in 1.", "retrying in 2.", "retrying in 4."] {
        assert!(log.contains(step), "backoff should double ({step}): {log}");
    }
    assert!(d.metric("vrouter_neutron_errors_total{kind=\"unavailable\"}").unwrap() >= 3.0);

    // Healed: A's routes go now (a complete read says so), B's stay.
    proxy.fault.store(false, Ordering::SeqCst);
    wait_for("convergence after the fault", || {
        let routes = lab.routes();
        let a_gone = (20..23).all(|n| controller_support::lookup(&routes, lab.ip(n)).is_none());
        (a_gone && expected(&[(30, &b), (31, &b), (32, &b)]) && d.get("/readyz")?.0 == 200).then_some(())
    });
    assert!(d.stop().success(), "SIGTERM: {}", d.log());
}

/// Routes of `router` straight from Neutron's database (Neutron itself is down).
fn routes_in_db(stack: &Stack, router: &str) -> String {
    let db = stack.env().dir.join("neutron.db");
    let py = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nprint(sorted(c.execute('select destination,nexthop from routerroutes where router_id=?',(sys.argv[2],)).fetchall()))";
    let out = Command::new(testbed::openstack::venv_dir().join("bin/python")).args(["-c", py]).arg(db).arg(router).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn neutron_stopped_controller_stays_up_unready_and_keeps_routes() {
    let stack = Stack::start(StackOptions::default()).expect("private OpenStack");
    let mut lab = Lab::new(&stack, "vrc-stop", "10.69.0.0/24");
    let a = lab.vm("vm-a", lab.ip(11), "fa:16:3e:69:00:01");
    lab.set_pods(&a, &[lab.ip(20), lab.ip(21), lab.ip(25)]);
    let mut d = lab.controller_daemon(&["--poll-interval", "1", "--resync-interval", "2"]);
    wait_for("convergence", || (lab.routes().len() == 2 && d.get("/readyz")?.0 == 200).then_some(()));
    let before = routes_in_db(&stack, &lab.router_id);
    assert!(before.contains("10.69.0.20/31") && before.contains("10.69.0.25/32"), "{before}");

    stack.stop_neutron();
    let errs = errors(&d);
    wait_for("three failed passes", || (errors(&d) >= errs + 3.0).then_some(()));
    let (code, why) = d.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(why.contains("unreachable"), "{why}");
    assert!(d.log().contains("retrying in 4."), "backoff should double: {}", d.log());
    assert_eq!(routes_in_db(&stack, &lab.router_id), before, "routes changed while Neutron was down");
    assert!(d.stop().success(), "SIGTERM while Neutron is down: {}", d.log());
    // Lab cleanup needs Neutron: the stack's teardown removes everything instead.
    std::mem::forget(lab);
}
