//! The node image of `deploy/Containerfile`, built by `cargo xtask image` with Debian's
//! podman and run as the manifests run it: the install script (deploy/install-cni) with
//! host directories mounted in place of the node's /opt/cni/bin and /etc/cni/net.d, the
//! ConfigMap's conflist at /config and the Secret at /secret; the controller's command,
//! as the Deployment's non-root user. Then an upgrade to a second image while pods are
//! added and deleted in a loop with the installed veth-route.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use serde::Deserialize;
use serde_json::Value;
use testbed::cni_runner::{exec, node_binaries_dir, workspace_root, REFERENCE_PLUGINS};
use testbed::netns::{run_ok, unique, TempDir};
use testbed::podman::Podman;
use testbed::vm::Vm;

/// The documents of a manifest file of deploy/.
fn manifest(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join("deploy").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

/// The node's directories and what the DaemonSet mounts into the init container.
struct Node {
    _root: TempDir,
    bin: PathBuf,
    net: PathBuf,
    config: PathBuf,
    secret: PathBuf,
}

impl Node {
    fn new(conflist: &str, password: &str) -> Node {
        let root = TempDir::new("node");
        let [bin, net, config, secret] = ["opt-cni-bin", "etc-cni-net.d", "config", "secret"].map(|d| root.path().join(d));
        for d in [&bin, &net, &config, &secret] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(config.join("10-veth-route.conflist"), conflist).unwrap();
        std::fs::write(secret.join("password"), password).unwrap();
        Node { _root: root, bin, net, config, secret }
    }

    /// `podman run` of `image`'s default command with the DaemonSet's mounts.
    fn install(&self, podman: &Podman, image: &str) -> String {
        let mounts = [
            (&self.bin, "/host/opt/cni/bin", ""),
            (&self.net, "/host/etc/cni/net.d", ""),
            (&self.config, "/config", ":ro"),
            (&self.secret, "/secret", ":ro"),
        ];
        let mut cmd = podman.command(&["run", "--rm"]);
        for (host, inside, opts) in mounts {
            cmd.arg("-v").arg(format!("{}:{inside}{opts}", host.display()));
        }
        run_ok(cmd.arg(image))
    }

    /// (name, mode, inode) of everything under the node's directories, sorted.
    fn files(&self) -> Vec<(String, u32, u64)> {
        let mut out = Vec::new();
        for top in [&self.bin, &self.net] {
            walk(top, top, &mut out);
        }
        out.sort();
        out
    }
}

fn walk(top: &Path, dir: &Path, out: &mut Vec<(String, u32, u64)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let name = format!("{}/{}", top.file_name().unwrap().to_str().unwrap(), p.strip_prefix(top).unwrap().display());
        out.push((name, m.permissions().mode() & 0o7777, m.ino()));
        if m.is_dir() {
            walk(top, &p, out);
        }
    }
}

#[test]
fn image_installs_atomically_and_upgrades_under_running_adds() {
    let podman = Podman::new();
    let image = format!("localhost/veth-route-test:{}", unique("a"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(Command::new(cargo).args(["xtask", "image", "--tag", &image]).envs(podman.env()).current_dir(workspace_root()));
    let bins = node_binaries_dir();

    // The controller Deployment runs its command from this image, as its non-root user.
    let controller = manifest("controller.yaml");
    let dep = controller.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        manifest("cni-node.yaml").iter().find(|d| d["kind"] == "DaemonSet").unwrap()["spec"]["template"]["spec"]["initContainers"][0]
            ["image"]
    );
    let command = c["command"][0].as_str().unwrap();
    let user = c["securityContext"]["runAsUser"].as_u64().unwrap().to_string();
    let version = podman.run(&["run", "--rm", "--read-only", "--user", &user, &image, command, "--version"]);
    assert_eq!(version.trim(), format!("vrouter-route-controller {}", env!("CARGO_PKG_VERSION")));

    // First install: the shipped ConfigMap's conflist, a password.
    let cm = manifest("cni-node.yaml");
    let conflist = cm.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["10-veth-route.conflist"].as_str().unwrap().to_string();
    let password = format!("pw-{}", unique("s"));
    let node = Node::new(&conflist, &password);
    let log = node.install(&podman, &image);
    assert!(log.contains("veth-route CNI installed"), "{log}");
    for b in ["veth-route", "tcnp-ipam"] {
        assert_eq!(std::fs::read(node.bin.join(b)).unwrap(), std::fs::read(bins.join(b)).unwrap(), "{b} is not the release build");
    }
    assert_eq!(std::fs::read_to_string(node.net.join("veth-route/openstack-password")).unwrap(), password);
    assert_eq!(std::fs::read_to_string(node.net.join("10-veth-route.conflist")).unwrap(), conflist);
    let files = node.files();
    let modes: Vec<(&str, u32)> = files.iter().map(|(n, m, _)| (n.as_str(), *m)).collect();
    assert_eq!(
        modes,
        [
            ("etc-cni-net.d/10-veth-route.conflist", 0o644),
            ("etc-cni-net.d/veth-route", 0o700),
            ("etc-cni-net.d/veth-route/openstack-password", 0o600),
            ("opt-cni-bin/tcnp-ipam", 0o755),
            ("opt-cni-bin/veth-route", 0o755),
        ],
        "exactly these files, with these modes (no temporary file left)"
    );
    // The conflist names the plugin the password file belongs to.
    let list: Value = serde_json::from_str(&conflist).unwrap();
    assert_eq!(list["plugins"][0]["ipam"]["openstackConf"]["passwordFile"], "/etc/cni/net.d/veth-route/openstack-password");

    // Again: nothing changes, not even an inode.
    let log = node.install(&podman, &image);
    assert!(!log.contains("installed /"), "a second run replaced files: {log}");
    assert_eq!(node.files(), files, "the second run changed the node's files");

    // The upgrade: a second image whose veth-route differs (the release build with bytes
    // appended: an ELF runs the same with a tail, and the bytes tell the builds apart).
    let context = TempDir::new("upgrade");
    let mut upgraded = std::fs::read(bins.join("veth-route")).unwrap();
    upgraded.extend_from_slice(format!("\nveth-route-test upgrade {image}\n").as_bytes());
    std::fs::write(context.path().join("veth-route"), &upgraded).unwrap();
    std::fs::set_permissions(context.path().join("veth-route"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(context.path().join("Containerfile"), format!("FROM {image}\nCOPY veth-route /opt/veth-route/bin/veth-route\n"))
        .unwrap();
    let image2 = format!("{image}-upgrade");
    podman.build(&context.path().join("Containerfile"), context.path(), &image2);

    // Pods come and go with the installed plugin, as a runtime runs it from /opt/cni/bin,
    // from before the upgrade starts until after it ends.
    let vm = Vm::new();
    let conf = vm.network("1.0.0");
    let installed = node.bin.join("veth-route");
    let cni_path = format!("{}:{REFERENCE_PLUGINS}", node.bin.display());
    let upgrading = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (first_add, first_add_seen) = mpsc::channel();
    let (failures, during, after) = std::thread::scope(|s| {
        let adds = s.spawn(|| {
            let (mut failures, mut during, mut after) = (Vec::new(), 0, 0);
            loop {
                let finished = done.load(Ordering::SeqCst);
                let overlapping = upgrading.load(Ordering::SeqCst) && !finished;
                let pod = vm.pod();
                let att = pod.attachment();
                let env = [("CNI_PATH", cni_path.as_str())];
                let add = exec(&installed, &vm.ns, "ADD", Some(&att), &env, conf.to_string().as_bytes());
                if add.exit != 0 {
                    failures.push(format!("ADD: {} {}", add.stdout, add.stderr));
                }
                let del = exec(&installed, &vm.ns, "DEL", Some(&att), &env, conf.to_string().as_bytes());
                if del.exit != 0 {
                    failures.push(format!("DEL: {} {}", del.stdout, del.stderr));
                }
                let _ = first_add.send(());
                // Counted only when the upgrade was running both before and after this ADD.
                if overlapping && upgrading.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst) {
                    during += 1;
                }
                if finished {
                    after += 1;
                    return (failures, during, after);
                }
            }
        });
        first_add_seen.recv().expect("the ADD loop ended before its first round");
        upgrading.store(true, Ordering::SeqCst);
        let log = node.install(&podman, &image2);
        done.store(true, Ordering::SeqCst);
        assert!(log.contains("installed /host/opt/cni/bin/veth-route"), "{log}");
        assert!(!log.contains("installed /host/opt/cni/bin/tcnp-ipam"), "tcnp-ipam did not change: {log}");
        adds.join().unwrap()
    });
    assert!(failures.is_empty(), "pods failed during the upgrade: {failures:#?}");
    assert!(during > 0, "no ADD ran entirely while the upgrade ran: the test proved nothing");
    assert_eq!(after, 1);
    assert_eq!(std::fs::read(&installed).unwrap(), upgraded, "the new veth-route is not in place");
    let after_files: Vec<(String, u32)> = node.files().into_iter().map(|(n, m, _)| (n, m)).collect();
    assert_eq!(after_files, files.iter().map(|(n, m, _)| (n.clone(), *m)).collect::<Vec<_>>(), "files or modes differ after the upgrade");
    eprintln!("node_image: {during} ADD/DEL rounds ran while the upgrade ran, none failed");
}
