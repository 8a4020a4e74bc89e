//! Running CNI plugins exactly as a runtime (cnitool/libcni) does: CNI_* variables in a
//! clean environment, the config on stdin, inside the namespace that plays the VM.
//!
//! Finding the plugin binary: `VETH_ROUTE_BIN` if set; otherwise the first call runs
//! `cargo build -p veth-route` (a no-op when up to date) and uses
//! `<target dir>/debug/veth-route`, the target dir being `CARGO_TARGET_DIR` or the
//! workspace's `target/`. Tests, the demo and the benchmarks all go through
//! [`plugin_binary`], so they always exercise the current source.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::netns::NetNs;

/// Where Debian's reference plugins live (host-local, ptp, portmap, bandwidth, static).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The veth-route binary (built on first use; see the module docs).
pub fn plugin_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("veth-route", "VETH_ROUTE_BIN"))
}

/// A binary of this workspace: `$override_var` if set, else `cargo build -p <name>` (a
/// no-op when up to date) and `<target dir>/debug/<name>`. Callers cache the answer.
pub fn workspace_binary(name: &str, override_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        return PathBuf::from(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", name, "--bin", name])
        .current_dir(workspace_root())
        .status()
        .unwrap_or_else(|e| panic!("run cargo build -p {name}: {e}"));
    assert!(status.success(), "cargo build -p {name} failed");
    let bin = target_dir().join("debug").join(name);
    assert!(bin.is_file(), "{} missing after build", bin.display());
    bin
}

/// The binaries nodes get (veth-route, tcnp-ipam, vrouter-route-controller): static,
/// built by `cargo xtask build --release` (run once per test process; a no-op when up to
/// date) into `<target dir>/x86_64-unknown-linux-gnu/release`.
pub fn node_binaries_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["xtask", "build", "--release"])
            .current_dir(workspace_root())
            .status()
            .unwrap_or_else(|e| panic!("run cargo xtask build --release: {e}"));
        assert!(status.success(), "cargo xtask build --release failed");
        target_dir().join("x86_64-unknown-linux-gnu/release")
    })
}

/// CNI_PATH for tests: the directory of veth-route, then the reference plugins.
pub fn cni_path() -> String {
    format!("{}:{REFERENCE_PLUGINS}", plugin_binary().parent().expect("binary has a dir").display())
}

/// One attachment: container ID, netns, interface name.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS (None: a DEL after the netns is gone, passed as empty).
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME.
    pub ifname: String,
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code.
    pub exit: i32,
    /// stdout (the result or error JSON).
    pub stdout: String,
    /// stderr (logs, if not sent to a file).
    pub stderr: String,
}

impl Outcome {
    /// The result JSON of a successful run (panics with the error otherwise).
    pub fn result(&self) -> Value {
        assert_eq!(self.exit, 0, "plugin failed: {}{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("result is not JSON ({e}): {:?}", self.stdout))
    }

    /// Assert success with empty stdout (DEL, CHECK, STATUS, GC).
    pub fn assert_ok(&self) {
        assert_eq!(self.exit, 0, "plugin failed: {}{}", self.stdout, self.stderr);
        assert!(self.stdout.trim().is_empty(), "unexpected output: {}", self.stdout);
    }

    /// The CNI error of a failed run, checking its shape: (code, msg, the whole object).
    pub fn error(&self) -> (u64, String, Value) {
        assert_ne!(self.exit, 0, "expected failure, got success: {}", self.stdout);
        let v: Value =
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("error is not JSON ({e}): {:?} {}", self.stdout, self.stderr));
        assert!(v["cniVersion"].is_string(), "error lacks cniVersion: {v}");
        let code = v["code"].as_u64().unwrap_or_else(|| panic!("error lacks a numeric code: {v}"));
        let msg = v["msg"].as_str().unwrap_or_else(|| panic!("error lacks msg: {v}")).to_string();
        (code, msg, v)
    }
}

/// Run plugin `bin` for `command` inside `vm`, env cleared like a runtime would, except
/// `VETH_ROUTE_TC_ATTACH`: set for the whole suite, it runs every test with that attach
/// method (e.g. netlink filters on a kernel that has TCX).
pub fn exec(bin: &Path, vm: &NetNs, command: &str, att: Option<&Attachment>, extra_env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let mut cmd = vm.command(bin);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("CNI_COMMAND", command).env("CNI_PATH", cni_path());
    if let Ok(mode) = std::env::var("VETH_ROUTE_TC_ATTACH") {
        cmd.env("VETH_ROUTE_TC_ATTACH", mode);
    }
    if let Some(a) = att {
        cmd.env("CNI_CONTAINERID", &a.container_id).env("CNI_IFNAME", &a.ifname);
        if let Some(ns) = &a.netns {
            cmd.env("CNI_NETNS", ns);
        }
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    run(cmd, stdin)
}

/// Run a prepared command with `stdin`.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Outcome {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait for plugin");
    Outcome {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a list-wide operation (GC, STATUS) did.
#[derive(Debug)]
pub enum ListRun {
    /// libcni invokes no plugin for GC or STATUS below spec 1.1.0.
    NotInvoked,
    /// Each plugin run, in order: (type, outcome).
    Ran(Vec<(String, Outcome)>),
}

/// `version` (`x.y.z`) >= `min`, as libcni's `version.GreaterThanOrEqualTo`.
pub fn version_at_least(version: &str, min: [u64; 3]) -> bool {
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let v = [0, 1, 2].map(|i| parts.get(i).copied().unwrap_or(0));
    v >= min
}

/// A network config list (conflist) run the way libcni runs it.
pub struct Chain<'a> {
    /// The namespace the plugins run in (the VM).
    pub vm: &'a NetNs,
    /// `{"cniVersion","name","plugins":[...]}`.
    pub list: Value,
    /// The runtime's capability arguments (`{"bandwidth": {...}, "portMappings": [...]}`):
    /// as libcni does, each plugin gets in `runtimeConfig` the keys its `capabilities` enable.
    pub runtime: Value,
}

impl Chain<'_> {
    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["name"] = self.list["name"].clone();
        c["cniVersion"] = self.list["cniVersion"].clone();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (cap, on) in caps {
                if on == &Value::Bool(true) && !self.runtime[cap].is_null() {
                    c["runtimeConfig"][cap] = self.runtime[cap].clone();
                }
            }
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn bin(plugin: &Value) -> PathBuf {
        let ty = plugin["type"].as_str().expect("plugin has a type");
        if ty == "veth-route" {
            plugin_binary().to_path_buf()
        } else {
            Path::new(REFERENCE_PLUGINS).join(ty)
        }
    }

    /// ADD through every plugin; returns the final result or the first failure.
    pub fn add(&self, att: &Attachment) -> Result<Value, Outcome> {
        let mut prev: Option<Value> = None;
        for p in self.list["plugins"].as_array().expect("plugins array") {
            let conf = self.plugin_conf(p, prev.as_ref());
            let out = exec(&Self::bin(p), self.vm, "ADD", Some(att), &[], conf.to_string().as_bytes());
            if out.exit != 0 {
                return Err(out);
            }
            prev = Some(out.result());
        }
        Ok(prev.unwrap_or(json!({})))
    }

    /// CHECK every plugin with the cached result.
    pub fn check(&self, att: &Attachment, result: &Value) -> Result<(), Outcome> {
        for p in self.list["plugins"].as_array().expect("plugins array") {
            let out = exec(&Self::bin(p), self.vm, "CHECK", Some(att), &[], self.plugin_conf(p, Some(result)).to_string().as_bytes());
            if out.exit != 0 {
                return Err(out);
            }
        }
        Ok(())
    }

    /// STATUS of the list as libcni (v1.2) runs it: nothing at all when the list's
    /// `cniVersion` is below 1.1.0 (so a runtime never learns the network's state); else
    /// each plugin in order with `name` and `cniVersion` injected, only CNI_COMMAND and
    /// CNI_PATH set, stopping at the first failure.
    pub fn status(&self) -> ListRun {
        self.list_op("STATUS", json!({}), true)
    }

    /// GC of the list as libcni (v1.2) runs it: nothing below 1.1.0; else every plugin,
    /// failures collected, with `cni.dev/valid-attachments` injected. (libcni first DELs
    /// the attachments of its own cache that are not valid; this runner keeps no cache.)
    pub fn gc(&self, valid: &[Attachment]) -> ListRun {
        let valid: Vec<Value> = valid.iter().map(|a| json!({ "containerID": a.container_id, "ifname": a.ifname })).collect();
        self.list_op("GC", json!({ "cni.dev/valid-attachments": valid }), false)
    }

    fn list_op(&self, command: &str, inject: Value, stop_at_failure: bool) -> ListRun {
        let version = self.list["cniVersion"].as_str().unwrap_or("");
        if !version_at_least(version, [1, 1, 0]) {
            return ListRun::NotInvoked;
        }
        let mut ran = Vec::new();
        for p in self.list["plugins"].as_array().expect("plugins array") {
            let mut conf = p.clone();
            conf["name"] = self.list["name"].clone();
            conf["cniVersion"] = self.list["cniVersion"].clone();
            if let Value::Object(extra) = &inject {
                for (k, v) in extra {
                    conf[k] = v.clone();
                }
            }
            let out = exec(&Self::bin(p), self.vm, command, None, &[], conf.to_string().as_bytes());
            let failed = out.exit != 0;
            ran.push((p["type"].as_str().unwrap_or("").to_string(), out));
            if failed && stop_at_failure {
                break;
            }
        }
        ListRun::Ran(ran)
    }

    /// DEL in reverse order with the cached result, as libcni does.
    pub fn del(&self, att: &Attachment, result: Option<&Value>) -> Result<(), Outcome> {
        for p in self.list["plugins"].as_array().expect("plugins array").iter().rev() {
            let out = exec(&Self::bin(p), self.vm, "DEL", Some(att), &[], self.plugin_conf(p, result).to_string().as_bytes());
            if out.exit != 0 {
                return Err(out);
            }
        }
        Ok(())
    }
}
