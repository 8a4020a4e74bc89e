//! Upgrades on a live node: a new plugin build takes over every attachment while traffic
//! flows (no connection breaks, and no program of the old build keeps running anywhere),
//! an older pin layout generation is migrated (its programs detached, its endpoints
//! carried, its directory removed), and pods an older build attached with TCX links keep
//! being served.

use std::net::SocketAddrV4;

use serde_json::{json, Value};
use testbed::fastpath_support::{
    tcp_transfer, try_tcp_transfer_with, udp_send_in_order, udp_socket_at, udp_socket_in, wait_until, Router, Vm, UPLINK,
};
use testbed::kernel::{not_applicable, Capabilities};
use testbed::patience::io_timeout;

/// Several MB, so the upgrade happens in the middle of the transfer.
const STREAM: usize = 8 << 20;

/// Kernel id of the BPF object of `kind` (`prog`, `link`) pinned at `pin`.
fn pinned_id(kind: &str, pin: &std::path::Path) -> u64 {
    let out = std::process::Command::new("bpftool").args(["-j", kind, "show", "pinned"]).arg(pin).output().unwrap();
    assert!(out.status.success(), "bpftool {kind} show pinned {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_u64().unwrap()
}

/// Whether the kernel still has the BPF object of `kind` with `id` (anything still attached
/// or pinned keeps a program).
fn exists(kind: &str, id: u64) -> bool {
    std::process::Command::new("bpftool").args([kind, "show", "id", &id.to_string()]).output().unwrap().status.success()
}

/// Kernel id of the program pinned at `pin`.
fn prog_id(pin: &std::path::Path) -> u64 {
    pinned_id("prog", pin)
}

fn prog_exists(id: u64) -> bool {
    exists("prog", id)
}

/// The cls_bpf filter running `prog` on `dev`'s `hook` in the VM: ("pref P handle H", the
/// program's id), from `tc filter show`; `None` if there is none.
fn bpf_filter(vm: &Vm, dev: &str, hook: &str, prog: &str) -> Option<(String, u64)> {
    let out = vm.ns.sh("tc", &["filter", "show", "dev", dev, hook]);
    let line = out.lines().find(|l| l.contains(&format!(" {prog} ")))?;
    let word_after =
        |w: &str| line.split_whitespace().skip_while(|x| *x != w).nth(1).unwrap_or_else(|| panic!("no {w} in {line}")).to_string();
    Some((format!("pref {} handle {}", word_after("pref"), word_after("handle")), word_after("id").parse().unwrap()))
}

/// The pinned program builds (directories under `progs/`).
fn builds(vm: &Vm) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(vm.pins().join("progs")).unwrap().flatten().map(|e| e.file_name()).collect()
}

/// A pod receives a long transfer from outside; in the middle, a new plugin build's first
/// ADD loads its programs and moves every attachment (pod veths: netlink filters, whose
/// programs are swapped in place; the uplink: TCX where the kernel has it) to them. The
/// connection completes, and afterwards no program of the old build exists any more:
/// nothing is left running it.
#[test]
fn a_new_build_takes_over_under_live_traffic_and_leaves_no_old_program_running() {
    new_build_under_live_traffic(None);
}

/// The same with every attachment a netlink (clsact/cls_bpf) filter, the uplink's too, as
/// on kernels before 6.6. On those kernels that is what the default does, and the default
/// variant above has run it.
#[test]
fn a_new_build_replaces_netlink_filters_under_live_traffic() {
    if !Capabilities::probe().tcx {
        return not_applicable(
            "a_new_build_replaces_netlink_filters_under_live_traffic",
            "no TCX before 6.6, so the default variant attached netlink filters everywhere and covered this",
        );
    }
    new_build_under_live_traffic(Some("netlink"));
}

/// The same with every attachment a TCX link, the pod veths' too, as builds before netlink
/// pod attachments made them: the links move with `bpf_link_update`.
#[test]
fn a_new_build_moves_the_tcx_links_of_older_pods_under_live_traffic() {
    if !Capabilities::probe().tcx {
        return not_applicable("a_new_build_moves_the_tcx_links_of_older_pods_under_live_traffic", "no TCX before 6.6");
    }
    new_build_under_live_traffic(Some("tcx"));
}

/// `attach`: `VETH_ROUTE_TC_ATTACH` for every plugin run, or `None` for the default.
fn new_build_under_live_traffic(attach: Option<&str>) {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    if let Some(mode) = attach {
        vm.env.push(("VETH_ROUTE_TC_ATTACH", mode.into()));
    }
    let vm = vm;
    let server = vm.add_pod();
    let veth = vm.host_veth_of(server.ip);
    let filters_before = [("ingress", "from_pod"), ("egress", "to_pod")].map(|(hook, prog)| bpf_filter(&vm, &veth, hook, prog));
    // Another tool's filter after ours: a filter of ours deleted and added again would get
    // a new priority (the kernel picks one below the first filter's), one swapped in place
    // keeps its own.
    for (hook, filter) in ["ingress", "egress"].iter().zip(&filters_before) {
        if filter.is_some() {
            vm.ns.sh(
                "tc",
                &[
                    "filter", "add", "dev", &veth, hook, "pref", "50000", "protocol", "all", "u32", "match", "u32", "0", "0", "classid",
                    "1:1",
                ],
            );
        }
    }
    let old_build = builds(&vm);
    assert_eq!(old_build.len(), 1, "{old_build:?}");
    let progs = vm.pins().join("progs");
    let old_ids: Vec<u64> =
        ["from_pod", "to_pod", "from_uplink", "to_uplink"].iter().map(|p| prog_id(&progs.join(&old_build[0]).join(p))).collect();
    assert!(old_ids.iter().all(|id| prog_exists(*id)), "{old_ids:?}");
    // Pretend the pinned programs came from an older plugin build.
    std::fs::rename(progs.join(&old_build[0]), progs.join("0000000000000000")).unwrap();

    let mut newcomer = None;
    let connect = SocketAddrV4::new(server.ip, 7401);
    let sent = try_tcp_transfer_with(&router.ns, &server.ns, 0, connect, STREAM, STREAM / 2, || newcomer = Some(vm.add_pod()));
    assert_eq!(sent, Ok(STREAM), "the inbound connection survives the upgrade: {}", vm.stats());
    let newcomer = newcomer.expect("the new build's ADD ran");
    assert_eq!(builds(&vm), old_build, "only the new build is pinned");
    wait_until("the old build's programs are released", || old_ids.iter().all(|id| !prog_exists(*id)));
    eprintln!("old program ids {old_ids:?} are gone");

    server.check().assert_ok();
    newcomer.check().assert_ok();
    for (before, (hook, prog)) in filters_before.iter().zip([("ingress", "from_pod"), ("egress", "to_pod")]) {
        let after = bpf_filter(&vm, &veth, hook, prog);
        match (before, &after) {
            // Swapped in place: the same filter (priority and handle), a new program.
            (Some((where_before, id_before)), Some((where_after, id_after))) => {
                assert_eq!(where_before, where_after, "{prog}'s filter was replaced, not updated in place");
                assert_ne!(id_before, id_after, "{prog}'s filter still runs the old program");
            }
            (None, None) => assert_eq!(attach, Some("tcx"), "{veth} {hook} has no {prog} filter"),
            _ => panic!("{prog} on {veth} {hook} changed kind: {before:?} -> {after:?}"),
        }
    }
    if attach == Some("netlink") || !Capabilities::probe().tcx {
        for (hook, prog) in [("ingress", "from_uplink"), ("egress", "to_uplink")] {
            let filters = vm.ns.sh("tc", &["filter", "show", "dev", UPLINK, hook]);
            assert_eq!(filters.lines().filter(|l| l.contains(prog)).count(), 1, "one {prog} filter on {UPLINK} {hook}: {filters}");
        }
    } else {
        let uplink: Value = vm.stats()["uplinks"][UPLINK].clone();
        assert_eq!(uplink["ingress_programs"], serde_json::json!(["from_uplink"]), "{uplink}");
        assert_eq!(uplink["egress_programs"], serde_json::json!(["to_uplink"]), "{uplink}");
    }
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&newcomer.ns, &server.ns, 0, SocketAddrV4::new(server.ip, 7402), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > redirected, "the new build's programs redirect");
}

/// The first ADD of a build with a new pin layout finds the previous generation's pins (here
/// a fake `v1`: this build run with `VETH_ROUTE_TEST_PIN_LAYOUT_VERSION=1`, so the map
/// formats match and what is tested is the migration itself). Its pods keep their fast path
/// and anti-spoofing under the new generation, its uplink programs are replaced, none of
/// its programs keeps running, and its directory is gone.
#[test]
fn an_older_pin_layout_generation_is_migrated_by_the_next_add() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let old = vm.add_pod_with_env(&[("VETH_ROUTE_TEST_PIN_LAYOUT_VERSION", "1")]);
    let v1 = vm.pin_dir.join("v1");
    assert!(v1.is_dir() && !vm.pins().exists(), "the old generation lives in v1");
    let old_build = std::fs::read_dir(v1.join("progs")).unwrap().flatten().next().unwrap().path();
    let old_ids: Vec<u64> = ["from_pod", "to_pod", "from_uplink", "to_uplink"].iter().map(|p| prog_id(&old_build.join(p))).collect();
    assert!(old_ids.iter().all(|id| prog_exists(*id)), "{old_ids:?}");

    let new = vm.add_pod();
    assert!(!v1.exists(), "the old generation's directory is removed");
    wait_until("the old generation's programs are released", || old_ids.iter().all(|id| !prog_exists(*id)));
    let mut ips = vm.endpoint_ips();
    ips.sort();
    let mut want = vec![old.ip, new.ip];
    want.sort();
    assert_eq!(ips, want, "the old pod's endpoint was carried over");
    old.check().assert_ok();
    new.check().assert_ok();
    let stats = vm.stats();
    assert_eq!(stats["uplinks"][UPLINK]["ingress_programs"], serde_json::json!(["from_uplink"]), "{stats}");

    // The old pod is served by the new generation, both ways.
    let (from_pod, from_uplink) = (vm.counter("from_pod", "redirected"), vm.counter("from_uplink", "redirected"));
    assert_eq!(tcp_transfer(&new.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7403), 1 << 20), 1 << 20);
    assert_eq!(tcp_transfer(&router.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7404), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > from_pod && vm.counter("from_uplink", "redirected") > from_uplink, "{}", vm.stats());
    // Its anti-spoof entry came along: a forged source from the old pod does not arrive
    // (sent in order before a genuine datagram, which does).
    let rx = udp_socket_in(&new.ns, new.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to = rx.local_addr().unwrap();
    old.ns.ip("addr add 10.10.1.250/32 dev eth0");
    let forged: std::net::IpAddr = "10.10.1.250".parse().unwrap();
    udp_send_in_order(&old.ns, &[(forged, to, b"forged"), (old.ip.into(), to, b"genuine")]);
    let mut buf = [0u8; 16];
    let (n, _) = rx.recv_from(&mut buf).expect("the genuine datagram arrives");
    assert_eq!(&buf[..n], b"genuine", "a forged source passed from_pod after the migration");
}

/// Kernel id of the link pinned at `pin` (a TCX link pin).
fn link_id(pin: &std::path::Path) -> u64 {
    pinned_id("link", pin)
}

fn link_exists(id: u64) -> bool {
    exists("link", id)
}

/// Builds before netlink pod attachments attached pods with TCX links, pinned as files at
/// the link pin paths (played here with `VETH_ROUTE_TC_ATTACH=tcx` on their ADD only). The
/// default build attaches new pods with cls_bpf filters beside them, and CHECKs, lists,
/// DELs and GCs the old pods by what their pins hold, leaving no pin and no link behind.
#[test]
fn pods_with_tcx_links_of_an_older_build_are_checked_listed_deleted_and_collected() {
    if !Capabilities::probe().tcx {
        return not_applicable("pods_with_tcx_links_of_an_older_build_are_checked_listed_deleted_and_collected", "no TCX before 6.6");
    }
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let tcx = [("VETH_ROUTE_TC_ATTACH", "tcx")];
    let mut old = vm.add_pod_with_env(&tcx);
    let mut lost = vm.add_pod_with_env(&tcx);
    let new = vm.add_pod();
    let pin = |prog: &str, veth: &str| vm.pins().join("links").join(prog).join(veth);
    let (old_veth, lost_veth, new_veth) = (vm.host_veth_of(old.ip), vm.host_veth_of(lost.ip), vm.host_veth_of(new.ip));
    let mut old_links = Vec::new();
    for veth in [&old_veth, &lost_veth] {
        for (prog, hook) in [("from_pod", "ingress"), ("to_pod", "egress")] {
            assert!(pin(prog, veth).is_file(), "{prog} of {veth} is a TCX link pin");
            old_links.push(link_id(&pin(prog, veth)));
            let filters = vm.ns.sh("tc", &["filter", "show", "dev", veth, hook]);
            assert!(!filters.contains(prog), "{veth} {hook} runs {prog} from its TCX link, not a filter: {filters}");
        }
    }
    assert!(old_links.iter().all(|id| link_exists(*id)), "{old_links:?}");
    for (prog, hook) in [("from_pod", "ingress"), ("to_pod", "egress")] {
        assert!(pin(prog, &new_veth).is_dir(), "{prog} of the new pod is recorded as a netlink filter");
        let filters = vm.ns.sh("tc", &["filter", "show", "dev", &new_veth, hook]);
        assert!(filters.contains(prog), "{new_veth} {hook}: {filters}");
    }

    old.check().assert_ok();
    new.check().assert_ok();
    // Listed from what the kernel runs on each veth, TCX links or filters.
    for e in vm.operator_json(&["endpoints"]).as_array().unwrap() {
        assert_eq!((&e["ingress_programs"], &e["egress_programs"]), (&json!(["from_pod"]), &json!(["to_pod"])), "{e}");
    }
    let guards = vm.stats()["anti_spoofing"].clone();
    for veth in [&old_veth, &new_veth] {
        let g = guards.as_array().unwrap().iter().find(|g| g["host_veth"] == veth.as_str()).unwrap_or_else(|| panic!("{veth}: {guards}"));
        assert_eq!(g["from_pod"], true, "{g}");
    }
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&new.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7405), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > redirected, "both kinds redirect");

    // A tampered old pod still fails CHECK: its link pin is what ADD did.
    std::fs::remove_file(pin("to_pod", &old_veth)).unwrap();
    let (_, msg, err) = old.check().error();
    assert!(format!("{msg} {err}").contains("not attached"), "{err}");

    old.del();
    // `lost`'s namespace goes without a DEL (its veth with it); GC finds its pins.
    lost.ns.delete();
    let mut conf = vm.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{ "containerID": new.att.container_id, "ifname": "eth0" }]);
    testbed::cni_runner::exec(testbed::cni_runner::plugin_binary(), &vm.ns, "GC", None, &[], conf.to_string().as_bytes()).assert_ok();
    lost.del();
    for veth in [&old_veth, &lost_veth] {
        for prog in ["from_pod", "to_pod"] {
            assert!(std::fs::symlink_metadata(pin(prog, veth)).is_err(), "{} is left", pin(prog, veth).display());
        }
    }
    assert_eq!(vm.pod_link_pins(), vec![new_veth.clone()]);
    assert_eq!(vm.endpoint_ips(), vec![new.ip]);
    wait_until("the old pods' TCX links are released", || old_links.iter().all(|id| !link_exists(*id)));
    new.check().assert_ok();
}

/// Builds from before IPv6 endpoints gave a dual-stack pod a `sources6` entry (its IPv6
/// anti-spoofing) but pinned no `endpoints6` or `flows6` map. Played here: a dual-stack
/// pod of this build, then those two map pins removed and the program pins renamed as
/// another build's (the old programs still hold the two maps, unpinned, where such a build
/// had none; nothing here reads them). That pod fails CHECK for its missing IPv6 endpoint;
/// the next build's first ADD derives the endpoint from the pod's IPv4 one, so CHECK
/// passes and the fast path carries the pod's IPv6.
#[test]
fn dual_stack_pods_of_a_build_without_ipv6_endpoints_get_them_at_the_next_builds_first_add() {
    old_dual_stack_pod_gets_its_ipv6_endpoint(false);
}

/// The same when the next build also has a new pin layout generation: the migration carries
/// the old pod's `sources6` entry, and its IPv6 endpoint is derived as above.
#[test]
fn dual_stack_pods_of_an_older_generation_without_ipv6_endpoints_get_them_in_the_migration() {
    old_dual_stack_pod_gets_its_ipv6_endpoint(true);
}

/// `older_generation`: the old pod lives in a fake `v1` (see
/// [`an_older_pin_layout_generation_is_migrated_by_the_next_add`]), else in this build's.
fn old_dual_stack_pod_gets_its_ipv6_endpoint(older_generation: bool) {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "always");
    vm.add_ipv6(&router);
    let vm = vm;
    let old = if older_generation { vm.add_pod_with_env(&[("VETH_ROUTE_TEST_PIN_LAYOUT_VERSION", "1")]) } else { vm.add_pod() };
    let old6 = old.ip6.expect("a dual-stack pod");
    let old_pins = if older_generation { vm.pin_dir.join("v1") } else { vm.pins() };
    for map in ["endpoints6", "flows6"] {
        std::fs::remove_file(old_pins.join(map)).unwrap();
    }
    if !older_generation {
        let progs = vm.pins().join("progs");
        let build = builds(&vm).pop().unwrap();
        std::fs::rename(progs.join(build), progs.join("0000000000000000")).unwrap();
        let (_, msg, err) = old.check().error();
        assert!(format!("{msg} {err}").contains(&format!("IPv6 endpoint for {old6} is missing")), "{msg} {err}");
    }

    let new = vm.add_pod();
    assert!(!vm.pin_dir.join("v1").exists(), "no old generation is left");
    old.check().assert_ok();
    new.check().assert_ok();
    let listed = vm.operator_json(&["endpoints"]);
    let entry = listed.as_array().unwrap().iter().find(|e| e["ip"] == old.ip.to_string()).unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(entry["ip6"], json!(old6.to_string()), "{entry}");

    // The network reaches the old pod's IPv6 through the fast path (`always`: every
    // datagram to a pod's endpoint is redirected), and the pod answers.
    let rx = udp_socket_at(&old.ns, old6.into());
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let tx = udp_socket_at(&router.ns, format!("fd00:192:168:{}::1", vm.index).parse().unwrap());
    tx.set_read_timeout(Some(io_timeout())).unwrap();
    let before = vm.counter("from_uplink", "redirected");
    let mut buf = [0u8; 16];
    tx.send_to(b"to the old pod", rx.local_addr().unwrap()).unwrap();
    let (n, from) = rx.recv_from(&mut buf).expect("the datagram reaches the old pod");
    assert_eq!(&buf[..n], b"to the old pod");
    rx.send_to(b"answer", from).unwrap();
    let (n, _) = tx.recv_from(&mut buf).expect("the old pod's answer arrives");
    assert_eq!(&buf[..n], b"answer");
    assert!(vm.counter("from_uplink", "redirected") > before, "from_uplink did not redirect to the old pod's IPv6: {}", vm.stats());
}
