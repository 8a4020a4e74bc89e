//! deploy/: every manifest parses, and everything it references is real. The binaries are
//! ones the workspace builds; the controller's flags are in its `--help`; its config file is
//! accepted by the real binary (`--once` against the local OpenStack, with only the
//! site-specific values — URL, network, password path — substituted); its probe paths are
//! answered by the real server, which stops cleanly on SIGTERM; the CNI config list, as
//! shipped, goes through libcni's STATUS and GC (which libcni skips below spec 1.1.0) in a
//! namespace playing a VM of the local OpenStack.
//!
//! YAML is parsed with `serde_yaml` (a dev-dependency of the tests only): a hand-written
//! subset parser would only prove the manifests match that subset, not what kubectl reads.

mod controller_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controller_support::{bin, Lab};
use serde::Deserialize;
use serde_json::{json, Value};
use testbed::cni_runner::{Chain, ListRun};
use testbed::openstack::shared;
use testbed::openstack::StackVm;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn docs() -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vr-deploy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_document_is_a_well_formed_object() {
    let docs = docs();
    assert!(docs.len() >= 7, "expected Secret, 2 ConfigMaps, DaemonSet, ServiceAccount, Deployment, Service");
    for d in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(d[key].is_string(), "document without {key}: {d}");
        }
        assert!(d["metadata"]["name"].is_string(), "unnamed {}", d["kind"]);
        assert_eq!(d["metadata"]["namespace"], "kube-system", "{} {}", d["kind"], d["metadata"]["name"]);
    }
    // Nothing in deploy/ needs the Kubernetes API: no RBAC objects, no token mounted.
    assert!(!docs.iter().any(|d| d["kind"].as_str().unwrap().contains("Role")));
}

#[test]
fn cni_installer_and_config_match_the_plugins() {
    let docs = docs();
    let secret = find(&docs, "Secret", "veth-route-openstack");
    assert!(secret["stringData"]["password"].is_string());
    let cm = find(&docs, "ConfigMap", "veth-route-cni-config");
    let (file, text) = cm["data"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(file, "10-veth-route.conflist");
    let conflist: Value = serde_json::from_str(text.as_str().unwrap()).expect("conflist is JSON");
    assert!(!text.as_str().unwrap().contains("\"password\""), "no password in the config file");
    let plugin = &conflist["plugins"][0];
    assert_eq!(plugin["type"], "veth-route");
    assert_eq!(plugin["ipam"]["type"], "tcnp-ipam");
    let pw_file = plugin["ipam"]["openstackConf"]["passwordFile"].as_str().unwrap();

    // The install script (deploy/install-cni, in the image: tests/tests/node_image.rs runs
    // it) copies exactly the binaries we build, writes the password where the config reads
    // it, and the conflist under the ConfigMap's file name, reading what the DaemonSet mounts.
    let ds = find(&docs, "DaemonSet", "veth-route-node");
    let init = &ds["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["command"], json!(["/opt/veth-route/install-cni"]));
    assert!(init["args"].is_null(), "the script takes no arguments");
    let script = std::fs::read_to_string(deploy_dir().join("install-cni")).unwrap();
    let binaries: Vec<&str> = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("for b in ").and_then(|r| r.split(';').next()))
        .expect("binary loop")
        .split_whitespace()
        .collect();
    for b in &binaries {
        bin(b);
    }
    for p in conflist["plugins"].as_array().unwrap() {
        let t = p["type"].as_str().unwrap();
        assert!(
            binaries.contains(&t) || Path::new("/usr/lib/cni").join(t).exists(),
            "plugin {t} is neither installed nor a reference plugin"
        );
    }
    let pw_in_net_d = pw_file.strip_prefix("/etc/cni/net.d/").expect("the password file lives under /etc/cni/net.d");
    let (pw_dir, pw_name) = pw_in_net_d.rsplit_once('/').unwrap();
    assert!(script.contains(&format!("PASSWORD_DIR=$NET_DIR/{pw_dir}\n")), "script must install the password at {pw_file}");
    assert!(script.contains(&format!("\"$PASSWORD_DIR/{pw_name}\"")), "script must install the password at {pw_file}");
    assert!(script.contains(&format!("CONFLIST={file}\n")));
    let mounts = init["volumeMounts"].as_array().unwrap();
    let mount = |name: &str| mounts.iter().find(|m| m["name"] == name).unwrap()["mountPath"].as_str().unwrap();
    assert!(script.contains(&format!("BIN_DIR={}\n", mount("cni-bin"))));
    assert!(script.contains(&format!("NET_DIR={}\n", mount("cni-net"))));
    assert!(script.contains(&format!("{}/password", mount("openstack-secret"))));
    assert!(script.contains(&format!("\"{}/$CONFLIST\"", mount("cni-config"))));

    // The shipped list as a runtime runs it: libcni's STATUS and GC, in a namespace playing
    // a VM of a lab network. Only site values are substituted (cloud, network, log files,
    // and this test's own data and bpffs pin dirs); cniVersion and the chain stay as shipped.
    // libcni runs no plugin for GC or STATUS below 1.1.0, so a list that says less would
    // never have its node blocks and spares released, nor its readiness reported.
    let lab = Lab::new(shared(), "vrc-deploy-cni", "10.63.0.0/24");
    let vm = StackVm::new(shared(), &lab.network_id).expect("VM namespace");
    let env = shared().env();
    let data = tmpdir("cni");
    let pins = PathBuf::from("/sys/fs/bpf").join(format!("vr-deploy-{}", std::process::id()));
    let mut list = conflist.clone();
    let ipam = &mut list["plugins"][0]["ipam"];
    ipam["openstackConf"]["authUrl"] = json!(env.auth_url);
    ipam["openstackConf"]["passwordFile"] = json!(env.password_file);
    ipam["openstackConf"]["username"] = json!(env.username);
    ipam["openstackConf"]["project"] = json!(env.project);
    ipam["openstackConf"]["region"] = json!(env.region);
    ipam["neutronConf"]["networks"] = json!([lab.network_id]);
    ipam["dataDir"] = json!(data.join("ipam"));
    ipam["logFile"] = json!(data.join("ipam.log"));
    list["plugins"][0]["logFile"] = json!(data.join("plugin.log"));
    list["plugins"][0]["bpfPinDir"] = json!(pins);
    let chain = Chain { vm: &vm.ns, list, runtime: json!({}) };
    let version = conflist["cniVersion"].as_str().unwrap();
    for (op, run) in [("STATUS", chain.status()), ("GC", chain.gc(&[]))] {
        let ListRun::Ran(ran) = run else { panic!("libcni runs no {op} for a list of cniVersion {version}: runtimes would never call it") };
        assert_eq!(ran[0].0, "veth-route", "{op}: {ran:?}");
        for (ty, out) in &ran {
            if binaries.contains(&ty.as_str()) || reference_supports(ty, version) {
                out.assert_ok();
                continue;
            }
            // Debian 12's reference plugins (1.1.1) predate spec 1.1.0: they fail every
            // command of the list (ADD with "incompatible CNI versions", GC and STATUS
            // asking for a container id). deploy/README.md says which release nodes need.
            assert_ne!(out.exit, 0, "{op} {ty} accepted a version it does not announce: {}", out.stdout);
            testbed::kernel::not_applicable(
                "cni_installer_and_config_match_the_plugins",
                &format!(
                    "{op} of {ty}: this machine's reference plugin predates CNI {version} (needs containernetworking-plugins >= 1.6.0): {}",
                    out.stdout.trim()
                ),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(data);
}

/// Whether the reference plugin `ty` on this machine accepts configs of `version`.
fn reference_supports(ty: &str, version: &str) -> bool {
    let out = Command::new(Path::new(testbed::cni_runner::REFERENCE_PLUGINS).join(ty))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{ty} VERSION: {e}"));
    info["supportedVersions"].as_array().is_some_and(|v| v.iter().any(|s| s == version))
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

/// Waits for a condition the controller reaches on its own (bounded; not a timing assertion).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn controller_deployment_runs_as_written() {
    let docs = docs();
    let dep = find(&docs, "Deployment", "vrouter-route-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the controller must not depend on the routes it maintains");
    let c = &pod["containers"][0];
    let command = c["command"][0].as_str().unwrap();
    bin(Path::new(command).file_name().unwrap().to_str().unwrap());
    let help = String::from_utf8(Command::new(bin("vrouter-route-controller")).arg("--help").output().unwrap().stdout).unwrap();
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "flag {flag} unknown to the controller");
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        assert!(help.contains(&format!("[env: {name}=")), "env {name} unknown to the controller");
    }
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == config_path), "config not mounted at {config_path}");

    let cm = find(&docs, "ConfigMap", "vrouter-route-controller");
    let key = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    let mut config: Value = serde_json::from_str(cm["data"][key].as_str().unwrap()).expect("config.json is JSON");
    let secret_dir = mounts.iter().find(|m| m["name"] == "openstack-secret").unwrap()["mountPath"].as_str().unwrap();
    assert_eq!(config["openstack"]["passwordFile"], format!("{secret_dir}/password"));
    let listen: SocketAddr = config["listen"].as_str().unwrap().parse().unwrap();
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(u64::from(listen.port())));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], port["name"], "{probe} port");
    }

    // The real binary with the deployed config, site values substituted.
    let mut lab = Lab::new(shared(), "vrc-deploy-ctl", "10.64.0.0/24");
    let vm = lab.vm("vm0", lab.ip(11), "fa:16:3e:64:00:01");
    lab.set_pods(&vm, &[lab.ip(20), lab.ip(21)]);
    let env = shared().env();
    config["networks"] = json!([lab.network_id]);
    config["openstack"]["authUrl"] = json!(env.auth_url);
    config["openstack"]["passwordFile"] = json!(env.password_file);
    config["openstack"]["username"] = json!(env.username);
    config["openstack"]["project"] = json!(env.project);
    config["openstack"]["region"] = json!(env.region);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config["listen"] = json!(free.to_string());
    let dir = tmpdir("ctl");
    let file = dir.join("config.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let once = Command::new(bin("vrouter-route-controller")).args(["--once", "--config"]).arg(&file).env_clear().output().unwrap();
    assert!(once.status.success(), "--once with the deployed config: {}", String::from_utf8_lossy(&once.stderr));
    assert_eq!(lab.routes().len(), 1, "the two pods .20/.21 collapse into one /31");

    // Daemon mode: the probes the manifest declares answer, then SIGTERM stops it cleanly.
    let mut daemon =
        Command::new(bin("vrouter-route-controller")).arg("--config").arg(&file).env_clear().stderr(Stdio::piped()).spawn().unwrap();
    let live = c["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    let ready = c["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert_eq!((live, ready), ("/healthz", "/readyz"), "liveness and readiness are the controller's two probe endpoints");
    let (code, _) = wait_for("the health server", || get(free, live));
    assert_eq!(code, 200);
    // A path the controller does not serve would fail the probe.
    assert_eq!(get(free, "/health").map(|(c, _)| c), Some(404));
    wait_for("readiness", || get(free, ready).filter(|(c, _)| *c == 200));
    let (_, metrics) = get(free, "/metrics").unwrap();
    assert!(metrics.contains(&format!("vrouter_routes_applied{{router=\"{}\"}} 1", lab.router_id)), "{metrics}");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let mut log = String::new();
    daemon.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "SIGTERM should stop the controller cleanly: {status}; {log}");
    assert!(!log.contains(&std::fs::read_to_string(&env.password_file).unwrap()), "password in the log");
    let _ = std::fs::remove_dir_all(dir);
}
