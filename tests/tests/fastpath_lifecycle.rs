//! Fast-path lifecycle: DEL removes the endpoint and link pins, many ADD/DEL cycles leave
//! nothing stale, CHECK sees a missing entry or attachment, GC drops what no pod owns,
//! concurrent first ADDs load the programs once, and a host without usable eBPF keeps the
//! kernel path (or fails ADD cleanly when `fastPath: required`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;

use serde_json::json;
use testbed::fastpath_support::{tcp_transfer, udp_ttl, Router, Vm};
use testbed::patience::io_timeout;

#[test]
fn del_removes_entry_and_pins_and_fifty_cycles_leave_nothing_stale() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let resident = vm.add_pod();
    for cycle in 0..50 {
        let mut pod = vm.add_pod();
        let veth = vm.host_veth_of(pod.ip);
        assert!(vm.endpoint_ips().contains(&pod.ip), "cycle {cycle}: no endpoint after ADD");
        assert!(vm.pod_link_pins().contains(&veth), "cycle {cycle}: no link pin after ADD");
        pod.del();
        assert!(!vm.endpoint_ips().contains(&pod.ip), "cycle {cycle}: endpoint left after DEL");
        assert!(!vm.pod_link_pins().contains(&veth), "cycle {cycle}: link pin left after DEL");
    }
    assert_eq!(vm.endpoint_ips(), vec![resident.ip], "only the resident pod may remain");
    assert_eq!(vm.pod_link_pins(), vec![vm.host_veth_of(resident.ip)]);

    let fresh = vm.add_pod();
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&fresh.ns, &resident.ns, 0, SocketAddrV4::new(resident.ip, 7101), 1 << 20), 1 << 20);
    assert_eq!(udp_ttl(&resident.ns, None, &fresh.ns, fresh.ip, 64), 63);
    assert!(vm.counter("from_pod", "redirected") > redirected);
}

#[test]
fn del_is_idempotent_and_works_after_the_pod_netns_is_gone() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let mut pod = vm.add_pod();
    let veth = vm.host_veth_of(pod.ip);
    pod.ns.delete(); // takes the veth pair with it
    pod.del();
    pod.del();
    assert!(!vm.endpoint_ips().contains(&pod.ip));
    assert!(!vm.pod_link_pins().contains(&veth));
}

#[test]
fn check_reports_a_missing_endpoint_and_a_missing_attachment() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let a = vm.add_pod();
    let b = vm.add_pod();
    a.check().assert_ok();
    b.check().assert_ok();

    // Tamper 1: remove a's endpoint behind the plugin's back, as an operator with bpftool could.
    let key: Vec<String> = a.ip.octets().iter().map(u8::to_string).collect();
    let map = vm.pins().join("endpoints");
    let mut cmd = std::process::Command::new("bpftool");
    cmd.args(["map", "delete", "pinned"]).arg(&map).arg("key").args(&key);
    assert!(cmd.status().unwrap().success());
    let (_, msg, err) = a.check().error();
    assert!(format!("{msg} {err}").contains(&format!("no endpoint for {}", a.ip)), "{err}");

    // Tamper 2: detach from_pod from b's veth: delete its netlink filter (the pin path
    // records it as a directory), or drop its TCX link pin (a file; suite-wide
    // `VETH_ROUTE_TC_ATTACH=tcx`).
    let veth = vm.host_veth_of(b.ip);
    let pin = vm.pins().join("links/from_pod").join(&veth);
    if pin.is_dir() {
        vm.ns.sh("tc", &["filter", "del", "dev", &veth, "ingress"]);
    } else {
        std::fs::remove_file(pin).unwrap();
    }
    let (_, msg, err) = b.check().error();
    assert!(format!("{msg} {err}").contains("not attached"), "{err}");
}

#[test]
fn gc_removes_endpoints_and_pins_of_attachments_not_kept() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let kept = vm.add_pod();
    let mut leaked = vm.add_pod();
    let leaked_veth = vm.host_veth_of(leaked.ip);

    let mut conf = vm.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{ "containerID": kept.att.container_id, "ifname": "eth0" }]);
    let out = testbed::cni_runner::exec(testbed::cni_runner::plugin_binary(), &vm.ns, "GC", None, &[], conf.to_string().as_bytes());
    out.assert_ok();

    assert_eq!(vm.endpoint_ips(), vec![kept.ip]);
    assert!(!vm.pod_link_pins().contains(&leaked_veth));
    assert_eq!(vm.pod_link_pins(), vec![vm.host_veth_of(kept.ip)]);
    leaked.del(); // still succeeds: nothing left to remove
}

/// Two networks share the (default) pin directory, as two conflists or Multus do. GC of one
/// with no valid attachment removes its own pods only: the other network's pods keep their
/// fast path and their anti-spoofing (a forged datagram still does not arrive).
#[test]
fn gc_of_one_network_leaves_the_pods_of_another_network_on_the_same_pins_alone() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let gone = vm.add_pod();
    let gone_veth = vm.host_veth_of(gone.ip);
    let other_ipam = testbed::netns::TempDir::new("fpipam2");
    let mut other = vm.conf.clone();
    other["name"] = json!(format!("{}-other", vm.conf["name"].as_str().unwrap()));
    other["ipam"] = json!({ "type": "host-local", "dataDir": other_ipam.path(),
        "ranges": [[{ "subnet": "10.10.1.0/24", "rangeStart": "10.10.1.200", "rangeEnd": "10.10.1.250" }]] });
    let b1 = vm.add_pod_as(other.clone());
    let b2 = vm.add_pod_as(other);

    let mut conf = vm.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    testbed::cni_runner::exec(testbed::cni_runner::plugin_binary(), &vm.ns, "GC", None, &[], conf.to_string().as_bytes()).assert_ok();

    let mut want = vec![b1.ip, b2.ip];
    want.sort();
    assert_eq!(vm.endpoint_ips(), want, "only the GC'd network's pod leaves the map");
    assert_eq!(vm.pod_link_pins().len(), 2);
    assert!(!vm.pod_link_pins().contains(&gone_veth));
    b1.check().assert_ok();
    b2.check().assert_ok();

    // Anti-spoofing still holds for the other network's pods: by what arrives.
    let forged = Ipv4Addr::new(10, 10, 1, 251);
    b1.ns.ip(&format!("addr add {forged}/32 dev eth0"));
    let rx = testbed::fastpath_support::udp_socket_in(&b2.ns, b2.ip);
    rx.set_read_timeout(Some(io_timeout())).unwrap();
    let to = (b2.ip, rx.local_addr().unwrap().port());
    let drops = vm.counter("from_pod", "drop_spoofed");
    testbed::fastpath_support::udp_socket_in(&b1.ns, forged).send_to(b"forged", to).unwrap();
    testbed::fastpath_support::udp_socket_in(&b1.ns, b1.ip).send_to(b"genuine", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).expect("the genuine datagram arrives");
    assert_eq!((&buf[..n], from.ip()), (&b"genuine"[..], std::net::IpAddr::V4(b1.ip)), "the forged datagram must not arrive first");
    assert_eq!(vm.counter("from_pod", "drop_spoofed"), drops + 1);
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&b1.ns, &b2.ns, 0, SocketAddrV4::new(b2.ip, 7107), 1 << 16), 1 << 16);
    assert!(vm.counter("from_pod", "redirected") > redirected, "the other network keeps its fast path");
}

#[test]
fn twenty_concurrent_first_adds_load_once_and_all_get_the_fast_path() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let pods: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| vm.add_pod())).collect();
        handles.into_iter().map(|h| h.join().expect("ADD")).collect()
    });
    let mut want: Vec<_> = pods.iter().map(|p| p.ip).collect();
    want.sort();
    assert_eq!(vm.endpoint_ips(), want);
    assert_eq!(vm.pod_link_pins().len(), 20);
    let endpoints = vm.operator_json(&["endpoints"]);
    for e in endpoints.as_array().unwrap() {
        assert_eq!(e["ingress_programs"], json!(["from_pod"]), "{e}");
        assert_eq!(e["egress_programs"], json!(["to_pod"]), "{e}");
    }
    // One uplink attachment however many ADDs raced for it.
    assert_eq!(vm.stats()["uplinks"]["up0"]["ingress_programs"], json!(["from_uplink"]));
    assert_eq!(vm.stats()["uplinks"]["up0"]["egress_programs"], json!(["to_uplink"]));
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&pods[0].ns, &pods[19].ns, 0, SocketAddrV4::new(pods[19].ip, 7106), 1 << 16), 1 << 16);
    assert!(vm.counter("from_pod", "redirected") > redirected);
}

#[test]
fn without_usable_ebpf_the_kernel_path_serves() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    // A pin dir that is not on bpffs makes eBPF unusable for this config.
    let not_bpffs = testbed::netns::TempDir::new("nobpf");
    vm.conf["bpfPinDir"] = json!(not_bpffs.path());
    let a = vm.add_pod();
    let b = vm.add_pod();
    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7102), 1 << 20), 1 << 20);
    assert_eq!(udp_ttl(&router.ns, None, &b.ns, b.ip, 64), 63);
    a.check().assert_ok();
    assert_eq!(std::fs::read_dir(not_bpffs.path()).unwrap().count(), 0, "nothing may be pinned off bpffs");
}

#[test]
fn fast_path_required_fails_add_cleanly_without_usable_ebpf() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "required");
    let not_bpffs = testbed::netns::TempDir::new("nobpf");
    vm.conf["bpfPinDir"] = json!(not_bpffs.path());
    let links_before = vm.ns.link_names();
    let out = match vm.try_add_pod() {
        Ok(_) => panic!("ADD with fastPath required must fail without eBPF"),
        Err(out) => out,
    };
    let (_, msg, err) = out.error();
    assert!(format!("{msg} {err}").contains("eBPF"), "{err}");
    assert_eq!(vm.ns.link_names(), links_before, "failed ADD must leave no interface behind");

    // STATUS says so before any ADD is tried (CNI 1.1.0; code 50: plugin not available).
    vm.conf["cniVersion"] = json!("1.1.0");
    let none = testbed::cni_runner::Attachment { container_id: "status".into(), netns: None, ifname: "eth0".into() };
    let (code, msg, _) = vm.cni("STATUS", &none, None).error();
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("required"), "{msg}");
    // With the default pin dir on bpffs the same config is ready.
    vm.conf["bpfPinDir"] = json!(vm.pin_dir);
    vm.cni("STATUS", &none, None).assert_ok();
}

#[test]
fn add_failing_after_the_early_attach_leaves_no_pin_entry_or_interface() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    let links_before = vm.ns.link_names();
    // The veth and its from_pod attachment exist before IPAM runs; a missing IPAM plugin
    // fails the ADD after both.
    vm.conf["ipam"]["type"] = json!("no-such-ipam");
    if vm.try_add_pod().is_ok() {
        panic!("ADD with a missing IPAM plugin must fail");
    }
    assert_eq!(vm.ns.link_names(), links_before, "failed ADD must leave no interface behind");
    assert!(vm.pins().join("links/from_pod").is_dir(), "the ADD got as far as the datapath");
    assert_eq!(vm.pod_link_pins(), Vec::<String>::new(), "failed ADD must leave no link pin");
    assert_eq!(vm.endpoint_ips(), Vec::<std::net::Ipv4Addr>::new());
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(vm.pins().join("sources")).output().unwrap();
    let sources: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool prints JSON");
    assert_eq!(sources.as_array().map(Vec::len), Some(0), "failed ADD must leave no anti-spoof entry: {sources}");
}

#[test]
fn netlink_attach_fallback_redirects_and_cleans_up() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    // What the plugin does on kernels before 6.6 (no TCX): clsact + cls_bpf via netlink for
    // the uplink too, not only for the pod veths.
    vm.env.push(("VETH_ROUTE_TC_ATTACH", "netlink".into()));
    let a = vm.add_pod();
    let mut b = vm.add_pod();
    let veth_b = vm.host_veth_of(b.ip);
    for (dev, hook, prog) in [
        (veth_b.as_str(), "ingress", "from_pod"),
        (&veth_b, "egress", "to_pod"),
        ("up0", "ingress", "from_uplink"),
        ("up0", "egress", "to_uplink"),
    ] {
        let filters = vm.ns.sh("tc", &["filter", "show", "dev", dev, hook]);
        assert!(filters.contains(prog), "{dev} {hook}: {filters}");
    }
    let redirected = vm.counter("from_pod", "redirected");
    let redirected_in = vm.counter("from_uplink", "redirected");
    assert_eq!(tcp_transfer(&a.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7103), 1 << 20), 1 << 20);
    assert_eq!(tcp_transfer(&router.ns, &b.ns, 0, SocketAddrV4::new(b.ip, 7105), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > redirected);
    assert!(vm.counter("from_uplink", "redirected") > redirected_in);
    a.check().assert_ok();

    b.del();
    assert!(!vm.endpoint_ips().contains(&b.ip));
    assert!(vm.ns.ip_output(&format!("link show {veth_b}")).status.code() != Some(0), "DEL removes the veth and its filters");
}

#[test]
fn a_new_program_build_takes_over_existing_links_on_the_next_add() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let old = vm.add_pod();
    // Pretend the pinned programs came from an older plugin build.
    let progs = vm.pins().join("progs");
    let builds: Vec<_> = std::fs::read_dir(&progs).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(builds.len(), 1, "one build pinned: {builds:?}");
    std::fs::rename(progs.join(&builds[0]), progs.join("0000000000000000")).unwrap();
    old.check().assert_ok(); // an older build's program is still a valid attachment

    let new = vm.add_pod();
    let now: Vec<_> = std::fs::read_dir(&progs).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(now, builds, "the old build is unpinned once links moved to the new one");
    // CHECK now wants this build's program on the old pod's veth: the link was moved.
    old.check().assert_ok();
    new.check().assert_ok();
    assert_eq!(vm.stats()["uplinks"]["up0"]["ingress_programs"], json!(["from_uplink"]));
    let redirected = vm.counter("from_pod", "redirected");
    assert_eq!(tcp_transfer(&new.ns, &old.ns, 0, SocketAddrV4::new(old.ip, 7104), 1 << 20), 1 << 20);
    assert!(vm.counter("from_pod", "redirected") > redirected);
}

/// A host without bpffs mounted: the first ADDs mount it (mode 0700), once, even when racing. Runs in a
/// private mount namespace where /sys/fs/bpf is unmounted, so the machine's is untouched.
#[test]
fn missing_bpffs_is_mounted_once_by_concurrent_adds() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let pods: Vec<_> = (0..5).map(|_| testbed::netns::NetNs::new("fm")).collect();
    let bin = vm.bin.display().to_string();
    let conf = vm.conf.to_string().replace('\'', "'\\''");
    let mut script = String::from("umount /sys/fs/bpf || exit 9\n");
    for (i, p) in pods.iter().enumerate() {
        script += &format!(
            "(echo '{conf}' | nsenter --net={vm_ns} env CNI_COMMAND=ADD CNI_CONTAINERID=mnt{i} CNI_NETNS={pod} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni {bin} >/dev/null || echo ADD-FAILED) &\n",
            vm_ns = vm.ns.path().display(),
            pod = p.path().display(),
        );
    }
    script += "wait\necho mounts=$(grep -c ' /sys/fs/bpf ' /proc/self/mountinfo) mode=$(stat -c %a /sys/fs/bpf)\n";
    script += &format!("nsenter --net={} {bin} endpoints --json --pin-dir {}\n", vm.ns.path().display(), vm.pin_dir.display());
    let out = std::process::Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("ADD-FAILED"), "{stdout}");
    assert!(stdout.contains("mounts=1"), "bpffs must be mounted exactly once: {stdout}");
    // Not bpffs's default 1777: nobody but root may create the pin dir first.
    assert!(stdout.contains("mode=1700"), "bpffs must be mounted with mode 0700 (bpffs adds the sticky bit): {stdout}");
    let endpoints: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(endpoints.as_array().unwrap().len(), 5, "{endpoints}");
    // The pins lived in the private bpffs; the pods' veths go with their namespaces.
}

/// A pod added with `fastPath: off` on a host where the fast path runs has no entries;
/// its DEL (which cleans up whatever the current config says) must still succeed.
#[test]
fn del_of_a_kernel_path_pod_on_a_fast_path_host_succeeds() {
    let router = Router::new();
    let mut vm = Vm::new(&router, 1, "auto");
    {
        let _fast = vm.add_pod(); // loads and pins: the maps exist from here on
    }
    vm.conf["fastPath"] = json!("off");
    let mut slow = vm.add_pod();
    assert!(!vm.endpoint_ips().contains(&slow.ip));
    slow.del();
    assert!(vm.endpoint_ips().is_empty());
}

/// A pin directory someone else could have planted (world-writable) or that points
/// elsewhere (a symbolic link) is refused with a CNI error naming it, and nothing is pinned
/// or left behind.
#[test]
fn a_pin_directory_others_could_write_or_redirect_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    // Interface names, but the node's gateway device (which outlives pods by design).
    let links = || -> Vec<String> {
        let out = vm.ns.ip("-o link show");
        out.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().to_string()).filter(|n| n != "dummy0").collect()
    };
    let links_before = links();

    std::fs::create_dir(&vm.pin_dir).unwrap();
    std::fs::set_permissions(&vm.pin_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = vm.try_add_pod().err().expect("ADD with a world-writable pin dir must fail");
    let (code, msg, _) = out.error();
    assert_eq!(code, 122, "{msg}");
    assert!(msg.contains(&vm.pin_dir.display().to_string()) && msg.contains("writable by group or others"), "{msg}");
    assert_eq!(std::fs::read_dir(&vm.pin_dir).unwrap().count(), 0, "nothing may be pinned there");

    // The pin dir is a link to another bpffs directory (which is fine in itself).
    let elsewhere = std::path::Path::new("/sys/fs/bpf").join(testbed::netns::unique("fpelse"));
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir(&vm.pin_dir).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &vm.pin_dir).unwrap();
    let out = vm.try_add_pod().err().expect("ADD with a symlinked pin dir must fail");
    let (code, msg, _) = out.error();
    let planted = std::fs::read_dir(&elsewhere).unwrap().count();
    std::fs::remove_file(&vm.pin_dir).unwrap();
    let _ = std::fs::remove_dir_all(&elsewhere);
    assert_eq!(code, 122, "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
    assert_eq!(planted, 0, "nothing may be pinned where the link points");
    assert_eq!(links(), links_before, "a failed ADD leaves no interface behind");
}

/// CHECK compares an attachment with what its ADD did, not with what the node has: a pod
/// added while its network had `fastPath: off` (or eBPF was unusable) passes CHECK once the
/// network is back on `auto` and other pods have the fast path; a pod that had the fast path
/// and lost part of it still fails.
#[test]
fn check_goes_by_what_add_did_for_the_attachment() {
    let router = Router::new();
    let vm = Vm::new(&router, 1, "auto");
    let fast = vm.add_pod();
    let mut off = vm.conf.clone();
    off["fastPath"] = json!("off");
    let slow = vm.add_pod_as(off);
    assert!(!vm.endpoint_ips().contains(&slow.ip));
    vm.cni("CHECK", &slow.att, Some(&slow.result)).assert_ok();
    fast.check().assert_ok();

    let veth = vm.host_veth_of(fast.ip);
    for prog in ["from_pod", "to_pod"] {
        let pin = vm.pins().join("links").join(prog).join(&veth);
        if pin.is_dir() {
            std::fs::remove_dir(&pin).unwrap();
        } else {
            std::fs::remove_file(&pin).unwrap();
        }
    }
    let (_, msg, err) = fast.check().error();
    assert!(format!("{msg} {err}").contains("not attached"), "{err}");
}
