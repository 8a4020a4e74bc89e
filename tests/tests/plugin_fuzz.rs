//! A seeded mutation fuzzer over the plugin's input: the config parser in-process, and ADD
//! in a namespace with the real plugin and host-local. Bounded rounds; the seed is printed
//! and `VETH_ROUTE_FUZZ_SEED` / `VETH_ROUTE_FUZZ_ROUNDS` replay or extend a run (see
//! testbed::mutate).
//!
//! What must hold for every input: no panic; a failure is a CNI error object with a code
//! and a message, and leaves nothing behind in the VM or the pod; a success is a result,
//! and its DEL leaves the VM as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cni::{ErrorCode, Invocation, Request, Verb, Version};
use serde_json::{json, Value};
use testbed::cni_runner;
use testbed::mutate::{self, Rng};
use testbed::vm::{Pod, Vm};

/// Values worth trying for the plugin's keys, valid and not; None: anything.
fn key_candidates(key: &str, rng: &mut Rng) -> Option<Value> {
    let v = match key {
        "cniVersion" => json!(rng.pick(&["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "0.2.0", "1.2.0", "", "1"])),
        "mtu" => json!(rng.pick(&[68, 1280, 1450, 9000, 65535, 67, 65536, 0])),
        "gateway" => json!(rng.pick(&["169.254.1.1", "169.254.100.1", "10.10.10.1", "224.0.0.1", "0.0.0.0", "255.255.255.255", "fe80::1"])),
        "gatewayMode" => json!(rng.pick(&["auto", "device", "hostVeth", "HostVeth", ""])),
        "gatewayDevice" => json!(rng.pick(&["dummy0", "", "a b", "way-too-long-name0", "lo"])),
        // Never the machine's own bpffs pins: only values that are refused, or off.
        "fastPath" => json!(rng.pick(&["off", "Off", "", "sometimes"])),
        "bpfPinDir" => json!(rng.pick(&["", "relative/pins", "/sys/fs/bpf/../../tmp", "/"])),
        "logFile" => json!(rng.pick(&["", "relative.log", "/", "/tmp/../etc/x.log"])),
        "logLevel" => json!(rng.pick(&["debug", "trace", "off", "loud", ""])),
        "ipMasq" => json!(rng.one_in(2)),
        "antiSpoof" => json!(rng.one_in(2)),
        "uplinks" => json!(rng.pick(&[json!([]), json!(["eth0", "eth0"]), json!(["a/b"]), json!([""])])),
        "proxyNeighbor" => json!(rng.pick(&[json!({"uplink": "nonexistent0"}), json!({"uplnk": "eth0"}), json!({})])),
        "prevResult" => rng
            .pick(&[
                json!(0),
                json!("x"),
                json!({"ips": [{"address": "nonsense"}]}),
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.10.10.77/24"}]}),
                json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "fd00::1/64", "interface": 9}]}),
            ])
            .clone(),
        "runtimeConfig" => rng.pick(&[json!({"bandwidth": {"ingressRate": "fast"}}), json!({"portMappings": 1}), json!([])]).clone(),
        "ranges" => json!([[{"subnet": rng.pick(&["10.10.10.0/24", "10.10.10.0/33", "fd00::/64", "x"]), "rangeStart": "10.10.10.19"}]]),
        "routes" => json!([{"dst": rng.pick(&["0.0.0.0/0", "10.1.2.3/8", "::/0", "nonsense", "192.0.2.0/24"])}]),
        "type" => json!(rng.pick(&["veth-route", "host-local", "no-such-plugin", ""])),
        _ => return None,
    };
    Some(v)
}

fn parse_request(verb: Verb, config: Vec<u8>) -> Request {
    let inv = Invocation {
        verb,
        container_id: "c-fuzz".into(),
        netns: Some(PathBuf::from("/var/run/netns/vr-fuzz")),
        ifname: "eth0".into(),
        args: BTreeMap::new(),
        path: Vec::new(),
    };
    Request { inv, config, version: Version::V1_0_0 }
}

#[test]
fn the_config_parser_answers_every_input_with_a_config_or_a_config_error() {
    let mut rng = Rng::from_env("config parser");
    let seed = json!({
        "cniVersion": "1.0.0", "name": "cni0", "type": "veth-route", "mtu": 1450, "ipMasq": true,
        "gatewayMode": "hostVeth", "fastPath": "auto", "bpfPinDir": "/sys/fs/bpf/veth-route", "uplinks": ["eth0"],
        "logFile": "/var/log/veth-route.log", "proxyNeighbor": {"uplink": "eth0"},
        "runtimeConfig": {"bandwidth": {"ingressRate": 1000}},
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.10.10.19/24"}], "routes": [{"dst": "0.0.0.0/0"}]},
        "ipam": {"type": "tcnp-ipam", "routes": [{"dst": "0.0.0.0/0"}]},
    });
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..mutate::rounds(20_000) {
        let mut v = seed.clone();
        for _ in 0..=rng.below(3) {
            mutate::mutate_value(&mut rng, &mut v, &key_candidates);
        }
        let mut bytes = v.to_string().into_bytes();
        if rng.one_in(4) {
            mutate::mutate_bytes(&mut rng, &mut bytes);
        }
        let verb = *rng.pick(&[Verb::Add, Verb::Del, Verb::Check, Verb::Gc]);
        let req = parse_request(verb, bytes.clone());
        let input = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = std::panic::catch_unwind(|| veth_route::config::parse(&req).map(drop))
            .unwrap_or_else(|_| panic!("the config parser panicked on {input}"));
        match parsed {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert!(
                    matches!(e.code, ErrorCode::DecodingFailure | ErrorCode::InvalidNetworkConfig),
                    "{verb:?} {input}: code {:?} is not a config error: {e}",
                    e.code
                );
                assert!(!e.msg.is_empty(), "{input}: empty message");
            }
        }
    }
    eprintln!("config parser: {accepted} accepted, {refused} refused");
    assert!(accepted > 0 && refused > 0, "the mutations explored only one side: {accepted} accepted, {refused} refused");
}

/// A runtime's environment for one round: the pod's attachment, sometimes mangled.
fn environment(rng: &mut Rng, pod: &Pod) -> Vec<(&'static str, String)> {
    let netns = pod.ns.path().display().to_string();
    let mut env = vec![("CNI_CONTAINERID", pod.id.clone()), ("CNI_NETNS", netns), ("CNI_IFNAME", pod.ifname.clone())];
    if rng.one_in(3) {
        let i = rng.below(env.len());
        env[i].1 = match env[i].0 {
            "CNI_CONTAINERID" => rng.pick(&["", "bad id/..", "-leading", "a"]).to_string(),
            // Never /proc/<pid>/ns paths: those could be the machine's own namespace.
            "CNI_NETNS" => rng.pick(&["", "/var/run/netns/vr-fuzz-none", "relative/ns", "/dev/null", "/tmp"]).to_string(),
            _ => rng.pick(&["", "eth0123456789abc", "a/b", ".", "net1", "eth0:1"]).to_string(),
        };
    }
    if rng.one_in(3) {
        env.push(("CNI_ARGS", rng.pick(&["IgnoreUnknown=1;K8S_POD_NAME=p", "=", ";;", "a", "K=V=W", "IgnoreUnknown=1;x"]).to_string()));
    }
    env
}

fn run(vm: &Vm, command: &str, env: &[(&'static str, String)], stdin: &[u8]) -> cni_runner::Outcome {
    let mut cmd = vm.ns.command(cni_runner::plugin_binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_PATH", cni_runner::cni_path())
        .env("CNI_COMMAND", command);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cni_runner::run(cmd, stdin)
}

#[test]
fn add_with_mutated_input_sets_up_everything_or_leaves_nothing() {
    let mut rng = Rng::from_env("ADD");
    let vm = Vm::new();
    let before = vm.snapshot();
    let pod = vm.pod();
    let (mut set_up, mut refused) = (0, 0);
    for round in 0..mutate::rounds(80) {
        let mut conf = vm.network(*rng.pick(&["0.3.1", "1.0.0", "1.1.0"]));
        // One mutation at most, so that a good share of the rounds is set up and deleted.
        if !rng.one_in(4) {
            mutate::mutate_value(&mut rng, &mut conf, &key_candidates);
        }
        // host-local keeps its allocations in the VM's dataDir, never the machine's default:
        // moving them would also hide a leak from the snapshot.
        if conf["ipam"].is_object() {
            conf["ipam"]["dataDir"] = vm.host_local()["dataDir"].clone();
        }
        let mut stdin = conf.to_string().into_bytes();
        if rng.one_in(6) {
            mutate::mutate_bytes(&mut rng, &mut stdin);
        }
        let env = environment(&mut rng, &pod);
        let input = format!("round {round}: env {env:?} config {}", String::from_utf8_lossy(&stdin));
        let out = run(&vm, "ADD", &env, &stdin);
        if out.exit == 0 {
            set_up += 1;
            let res: Value =
                serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{input}: result is not JSON ({e}): {}", out.stdout));
            assert!(res["interfaces"].is_array() || res["ip4"].is_object(), "{input}: not a result: {res}");
            let del = run(&vm, "DEL", &env, &stdin);
            assert_eq!(del.exit, 0, "{input}: DEL after a successful ADD failed: {}", del.stdout);
        } else {
            refused += 1;
            let (code, msg, _) = out.error();
            assert!(code > 0 && !msg.is_empty(), "{input}: {}", out.stdout);
        }
        let mut after = vm.snapshot();
        // A round that left fastPath at its default loaded the node's programs and maps into
        // the VM's own pin dir; they stay for the next pod by design. Per-attachment pins
        // (links/<program>/<interface>) must not.
        after.pins.retain(|p| p.split("/links/").nth(1).is_some_and(|rest| rest.contains('/')));
        after.assert_same_as(&before, &input);
        assert_eq!(pod.ns.ip("-o link show").lines().count(), 1, "{input}: the pod kept links");
        assert_eq!(pod.ns.ip("route show"), "", "{input}: the pod kept routes");
    }
    eprintln!("ADD: {set_up} set up and deleted, {refused} refused");
    assert!(refused > 0 && set_up > 0, "the mutations explored only one side: {set_up} set up, {refused} refused");
}
