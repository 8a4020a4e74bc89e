//! Network namespaces for tests: uniquely named, removed on drop, entered with setns(2)
//! from a dedicated thread or with `nsenter --net=` (never `ip netns exec`, which remounts
//! /sys and hides the bpffs pins).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `vr` + pid + `tag` + counter. Keep `tag` short:
/// names used for links must stay within 15 characters.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("vr{}{tag}{n}", std::process::id())
}

/// A named network namespace (`/var/run/netns/<name>`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    deleted: bool,
}

impl NetNs {
    /// Create `vr<pid><tag><n>` with its loopback up.
    pub fn new(tag: &str) -> NetNs {
        let name = unique(tag);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { path: PathBuf::from("/var/run/netns").join(&name), name, deleted: false };
        ns.ip("link set lo up");
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path, as a runtime passes in CNI_NETNS.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Delete it now (as `ip netns del` would), e.g. to test DEL after the netns is gone.
    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
            self.deleted = true;
        }
    }

    /// A command that runs inside the namespace (`nsenter --net=<path> prog ...`).
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display())).arg(prog);
        c
    }

    /// Run `ip <args>` (split on whitespace) inside; panics with stderr on failure.
    pub fn ip(&self, args: &str) -> String {
        run_ok(self.command("ip").args(args.split_whitespace()))
    }

    /// The names of the links inside. Names, not `ip link` lines: those carry states (a
    /// peer's carrier coming up, an operstate settling) that change on their own.
    pub fn link_names(&self) -> Vec<String> {
        self.ip("-o link show")
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// Add a DNAT rule to nat PREROUTING inside, as kube-proxy's iptables mode does for a
    /// Service: `proto` traffic to `dst:dport` goes to `to`. iptables or ip6tables, by
    /// `dst`'s family.
    pub fn dnat(&self, proto: &str, dst: std::net::IpAddr, dport: u16, to: std::net::SocketAddr) {
        let program = if dst.is_ipv4() { "iptables" } else { "ip6tables" };
        let (dst, dport, to) = (dst.to_string(), dport.to_string(), to.to_string());
        self.sh(
            program,
            &["-w", "-t", "nat", "-A", "PREROUTING", "-d", &dst, "-p", proto, "--dport", &dport, "-j", "DNAT", "--to-destination", &to],
        );
    }

    /// Run `ip <args>` inside and return the raw output (for commands expected to fail).
    pub fn ip_output(&self, args: &str) -> Output {
        self.command("ip").args(args.split_whitespace()).output().expect("run ip")
    }

    /// Run any program inside; panics on failure.
    pub fn sh(&self, prog: &str, args: &[&str]) -> String {
        run_ok(self.command(prog).args(args))
    }

    /// Run `f` on a thread that has joined this namespace (sockets it opens live here).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(&self.path).unwrap_or_else(|e| panic!("open {}: {e}", self.path.display()));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid fd; only this short-lived thread changes namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {}: {}", self.path.display(), std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Run a command, panic with its stderr if it fails, return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `<tmp>/<unique(tag)>`.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
