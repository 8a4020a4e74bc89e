//! A podman of one test's own: storage, run, temporary and network-config directories
//! under one temporary directory, removed on drop with every container and image in it.
//!
//! The settings come from a `containers.conf` and `storage.conf` of its own, passed as
//! `CONTAINERS_CONF` / `CONTAINERS_STORAGE_CONF`, so that `cargo xtask image` run with
//! [`Podman::env`] builds into the same storage. On these machines crun fails on the
//! sandbox's cgroup and rlimit setup, hence runc, cgroupfs and explicit ulimits; vfs
//! storage needs no overlay mounts; containers get no network (none is needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{run_ok, TempDir};

/// A private podman; everything it made goes with it.
pub struct Podman {
    dir: TempDir,
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Podman {
    /// Write its configuration under a new temporary directory.
    pub fn new() -> Podman {
        let dir = TempDir::new("podman");
        let d = dir.path();
        std::fs::create_dir_all(d.join("tmp")).expect("podman tmp dir");
        std::fs::create_dir_all(d.join("net")).expect("podman network dir");
        let containers = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             netns = \"none\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\n\
             static_dir = \"{d}/storage/libpod\"\n\
             volume_path = \"{d}/storage/volumes\"\n\
             [network]\n\
             network_config_dir = \"{d}/net\"\n",
            d = d.display()
        );
        let storage = format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n", d = d.display());
        std::fs::write(d.join("containers.conf"), containers).expect("write containers.conf");
        std::fs::write(d.join("storage.conf"), storage).expect("write storage.conf");
        Podman { dir }
    }

    /// The variables that point podman (and `cargo xtask image`) at this instance.
    pub fn env(&self) -> [(&'static str, PathBuf); 2] {
        [("CONTAINERS_CONF", self.dir.path().join("containers.conf")), ("CONTAINERS_STORAGE_CONF", self.dir.path().join("storage.conf"))]
    }

    /// `podman <args>` on this instance.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.envs(self.env()).args(args);
        cmd
    }

    /// Run `podman <args>`, panic with its stderr on failure, return stdout.
    pub fn run(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args))
    }

    /// `podman build` of `containerfile` in `context` as `tag`.
    pub fn build(&self, containerfile: &Path, context: &Path, tag: &str) {
        let mut cmd = self.command(&["build", "--pull=never", "-q", "-t", tag, "-f"]);
        run_ok(cmd.arg(containerfile).arg(context));
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs layers are plain directories, but containers hold run-time state (and a
        // runc that is still running holds mounts): remove through podman first.
        for args in [["rm", "-a", "-f"], ["rmi", "-a", "-f"]] {
            let _ = self.command(&args).output();
        }
    }
}
