//! The binaries nodes get are static and run on an older userland than this machine's.
//!
//! A node's container runtime runs veth-route and tcnp-ipam on the node itself, so they
//! meet whatever libc the node has. The older userland is Debian 11 (bullseye, glibc
//! 2.31; a dynamic build here needs 2.34), bootstrapped once by `cargo xtask setup` into
//! a cached tarball (xtask/src/userland.rs), unpacked here into a directory of this
//! test's own and entered with chroot.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use testbed::cni_runner::{node_binaries_dir, plugin_binary};
use testbed::elf::linkage;
use testbed::netns::{run_ok, TempDir};

const NODE_BINARIES: [&str; 3] = ["veth-route", "tcnp-ipam", "vrouter-route-controller"];

#[test]
fn node_binaries_need_no_loader_and_no_library() {
    for name in NODE_BINARIES {
        let path = node_binaries_dir().join(name);
        let l = linkage(&std::fs::read(&path).unwrap()).unwrap();
        assert!(l.is_static(), "{} is not static: {l:?}", path.display());
    }
    // The same check on the workspace's ordinary (dynamic) build: it can fail.
    let dynamic = linkage(&std::fs::read(plugin_binary()).unwrap()).unwrap();
    assert!(dynamic.interpreter.is_some() && dynamic.needed > 0, "the debug build looks static: {dynamic:?}");
}

/// `veth-route`, `tcnp-ipam` and `vrouter-route-controller` of the release build answer
/// VERSION / --version inside Debian 11, where the dynamic build cannot even start.
#[test]
fn node_binaries_run_on_debian_11() {
    let root = debian_11_with_node_binaries();
    let dir = root.path().join("opt/veth-route");
    for plugin in ["veth-route", "tcnp-ipam"] {
        let out =
            chroot(root.path(), &format!("/opt/veth-route/{plugin}"), &[], &[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.1.0"}"#);
        assert!(out.status.success(), "{plugin} VERSION in Debian 11: {}", String::from_utf8_lossy(&out.stderr));
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{plugin} VERSION is not JSON ({e})"));
        let versions = info["supportedVersions"].as_array().unwrap_or_else(|| panic!("{plugin}: {info}"));
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert!(versions.iter().any(|s| s == v), "{plugin} does not announce {v}: {info}");
        }
    }
    let out = chroot(root.path(), "/opt/veth-route/vrouter-route-controller", &["--version"], &[], b"");
    assert!(out.status.success(), "controller --version in Debian 11: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("vrouter-route-controller {}", env!("CARGO_PKG_VERSION")));

    // What the issue is about: the ordinary dynamic build does not start there.
    std::fs::copy(plugin_binary(), dir.join("veth-route-dynamic")).unwrap();
    let out = chroot(root.path(), "/opt/veth-route/veth-route-dynamic", &[], &[("CNI_COMMAND", "VERSION")], b"{}");
    assert!(!out.status.success(), "the dynamic build ran on Debian 11: the userland is not older");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GLIBC_2.3"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The static tcnp-ipam resolves Keystone's host name itself, not through the node's libc:
/// in a static binary glibc's getaddrinfo would dlopen the node's NSS modules, built for
/// another glibc. The Debian 11 userland here can resolve the name only from /etc/hosts,
/// and its nsswitch.conf keeps its own libc away from that file (`hosts: dns`, and no DNS
/// server answers): `getent` there fails, tcnp-ipam's STATUS reaches Keystone by name.
#[test]
fn static_tcnp_ipam_resolves_names_in_process_on_debian_11() {
    let stack = testbed::openstack::shared();
    let root = debian_11_with_node_binaries();
    let name = "keystone.veth-route.test";
    replace_file(root.path(), "etc/hosts", &format!("127.0.0.1 localhost\n127.0.0.1 {name}\n"));
    replace_file(root.path(), "etc/nsswitch.conf", "hosts: dns\n");
    replace_file(root.path(), "etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
    let getent = chroot(root.path(), "/usr/bin/getent", &["hosts", name], &[], b"");
    assert!(!getent.status.success(), "the userland's own libc resolves {name}: the test proves nothing");

    // The password file at the same path inside, as the node would have it.
    let password_file = &stack.env().password_file;
    let inside = root.path().join(password_file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::copy(password_file, &inside).unwrap();
    let mut ipam = stack.ipam_config(&stack.env().network_id);
    let by_name = stack.env().auth_url.replace("127.0.0.1", name);
    assert_ne!(by_name, stack.env().auth_url, "Keystone's URL has no 127.0.0.1 to replace");
    ipam["openstackConf"]["authUrl"] = serde_json::json!(by_name);
    ipam["dataDir"] = serde_json::json!("/var/lib/cni/tcnp-ipam");
    let conf = serde_json::json!({ "cniVersion": "1.1.0", "name": "static-resolve", "type": "veth-route", "ipam": ipam });
    let out = chroot(root.path(), "/opt/veth-route/tcnp-ipam", &[], &[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes());
    assert!(
        out.status.success(),
        "tcnp-ipam STATUS against {by_name} in Debian 11: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `rel` under `root` as a new file: whatever was there, a symlink to a path of
/// this machine included, is removed first, never written through.
fn replace_file(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove {}: {e}", path.display()),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, contents.as_bytes()))
        .unwrap();
}

/// Debian 11 unpacked into a directory of the caller's, with the node binaries of the
/// release build in its /opt/veth-route.
fn debian_11_with_node_binaries() -> TempDir {
    let tarball = testbed::openstack::cache_dir().join("userland/debian-11-bullseye-minbase.tar");
    assert!(tarball.is_file(), "{} is missing: run `cargo xtask setup`", tarball.display());
    let root = TempDir::new("bullseye");
    run_ok(Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(root.path()));
    let debian = std::fs::read_to_string(root.path().join("etc/debian_version")).unwrap();
    assert!(debian.starts_with("11."), "not Debian 11: {debian}");
    let glibc = glibc_version(root.path());
    assert!(glibc < (2, 34), "the userland's glibc {glibc:?} is not older than 2.34");
    let dir = root.path().join("opt/veth-route");
    std::fs::create_dir_all(&dir).unwrap();
    for name in NODE_BINARIES {
        std::fs::copy(node_binaries_dir().join(name), dir.join(name)).unwrap();
    }
    root
}

/// The glibc of the userland at `root`: its libc.so.6, run inside, prints its version.
fn glibc_version(root: &Path) -> (u32, u32) {
    let out = chroot(root, "/lib/x86_64-linux-gnu/libc.so.6", &[], &[], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    // "GNU C Library (Debian GLIBC 2.31-13+deb11u11) stable release version 2.31."
    let v = text.split("release version ").nth(1).unwrap_or_else(|| panic!("libc.so.6 says: {text}"));
    let mut parts = v.trim_end_matches(|c: char| !c.is_ascii_digit()).split('.').map(|n| n.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Run `prog` inside `root` with a runtime-like clean environment.
fn chroot(root: &Path, prog: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).arg(prog).args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").envs(env.iter().copied());
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A program that exits without reading its input (the dynamic build, which the loader
    // refuses) may have closed the pipe first; its exit status and stderr tell the rest.
    match std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    child.wait_with_output().unwrap()
}
