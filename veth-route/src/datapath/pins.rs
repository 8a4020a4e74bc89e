//! The versioned pin layout on bpffs, mounting bpffs when needed, and the host-wide lock.
//!
//! ```text
//! <bpfPinDir>/v2/endpoints               map: pod IPv4 -> {ifindex, pod_mac, host_mac}
//! <bpfPinDir>/v2/sources                 map: host veth ifindex -> {ip, flags} (anti-spoof)
//! <bpfPinDir>/v2/settings                map: [0] -> {mode}
//! <bpfPinDir>/v2/counters                per-CPU map: [0]=from_pod [1]=from_uplink [2]=to_pod [3]=to_uplink
//! <bpfPinDir>/v2/flows                   LRU map: flow 5-tuple -> {state} (pending / verified)
//! <bpfPinDir>/v2/progs/<obj>/<program>   programs from_pod, to_pod, from_uplink, to_uplink
//! <bpfPinDir>/v2/links/<program>/<if>    one program on one interface: TCX link (a file) or netlink filter record (a directory)
//! ```

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use veth_route_common::PIN_LAYOUT_VERSION;

use super::loader::Prog;
use super::DatapathError;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
/// Where bpffs is conventionally mounted.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Paths of every pinned object under one versioned directory.
#[derive(Debug, Clone)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    /// Layout under `<pin_dir>/v<PIN_LAYOUT_VERSION>`.
    pub fn new(pin_dir: &Path) -> Self {
        Self { root: pin_dir.join(format!("v{}", layout_version())) }
    }

    /// The layout of an older generation at `root` (see [`Self::older_generations`]).
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    /// Directories of older layout generations next to this one (`v<k>`, k smaller),
    /// oldest first: left by a build before the last layout change, for `migrate`.
    pub fn older_generations(&self) -> Vec<PathBuf> {
        let current = layout_version();
        let Some(Ok(entries)) = self.root.parent().map(std::fs::read_dir) else { return Vec::new() };
        let mut older: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let k = e.file_name().to_str()?.strip_prefix('v')?.parse::<u32>().ok()?;
                (k < current).then(|| (k, e.path()))
            })
            .collect();
        older.sort();
        older.into_iter().map(|(_, p)| p).collect()
    }

    /// The versioned directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pin path of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Directory of the program pins, one subdirectory per eBPF object build.
    pub fn programs(&self) -> PathBuf {
        self.root.join("progs")
    }

    /// Pin path of program `name` from the eBPF object identified by `object_id`.
    pub fn program(&self, object_id: &str, name: &str) -> PathBuf {
        self.programs().join(object_id).join(name)
    }

    /// Directory of program `prog`'s link pins, one per interface.
    pub fn links(&self, prog: Prog) -> PathBuf {
        self.root.join("links").join(prog.name())
    }

    /// Link pin of `prog` on interface `ifname`.
    pub fn link(&self, prog: Prog, ifname: &str) -> PathBuf {
        self.links(prog).join(ifname)
    }

    /// Whether the versioned directory exists (i.e. the fast path was ever set up here).
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Mount bpffs if needed and create the directories; fails if the pin dir is not on bpffs.
    pub fn prepare(&self) -> Result<(), DatapathError> {
        ensure_bpffs_mounted()?;
        // Check before creating anything, so a pin dir off bpffs leaves no directories behind.
        let existing = self.root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        if !is_bpffs(existing)? {
            return Err(DatapathError::Unavailable(format!("{} is not on a bpf filesystem", self.root.display())));
        }
        // The pin dir itself and everything below it: root's alone. The bpffs directories
        // above it may be shared (mounted 1777 by someone else), but only with the sticky
        // bit, so nobody can replace what root created there.
        let mut above = Vec::new();
        for dir in self.root.ancestors().skip(2) {
            if dir.exists() && !is_bpffs(dir)? {
                break;
            }
            above.push(dir);
        }
        for dir in above.into_iter().rev() {
            if dir.exists() {
                check_dir(dir, Shared::IfSticky)?;
            } else {
                private_dir(dir)?;
            }
        }
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        let dirs = [parent.to_path_buf(), self.root.clone(), self.root.join("links"), self.programs()];
        for dir in dirs.into_iter().chain(Prog::ALL.map(|p| self.links(p))) {
            private_dir(&dir)?;
        }
        Ok(())
    }

    /// Take the host-wide lock (flock on the versioned directory), released on drop.
    ///
    /// bpffs holds no regular files, but directories can be flocked; every plugin process on
    /// the host serialises loading, pinning and map updates on it.
    pub fn lock(&self) -> Result<PinLock, DatapathError> {
        check_dir(&self.root, Shared::No)?;
        let dir = File::open(&self.root).map_err(|source| DatapathError::Fs { op: "opening", path: self.root.clone(), source })?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(DatapathError::Fs { op: "locking", path: self.root.clone(), source: io::Error::last_os_error() });
        }
        Ok(PinLock { _dir: dir })
    }
}

/// The layout version this build uses: [`PIN_LAYOUT_VERSION`]. Tests set
/// `VETH_ROUTE_TEST_PIN_LAYOUT_VERSION` to play an older generation with this build's map
/// formats (a fake: there is no older build to run), so that the migration can be tested.
fn layout_version() -> u32 {
    std::env::var("VETH_ROUTE_TEST_PIN_LAYOUT_VERSION").ok().and_then(|v| v.parse().ok()).unwrap_or(PIN_LAYOUT_VERSION)
}

/// Holds the host-wide datapath lock until dropped (closing the fd releases the flock).
pub struct PinLock {
    _dir: File,
}

/// Whether a directory may be writable by others.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shared {
    No,
    /// Yes, with the sticky bit (others cannot rename or remove what is not theirs).
    IfSticky,
}

/// Create `dir` (mode 0700) if it does not exist, then [`check_dir`] it.
fn private_dir(dir: &Path) -> Result<(), DatapathError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Also a concurrent ADD's: checked like any other.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(DatapathError::Unavailable(format!("creating {}: {e}", dir.display()))),
    }
    check_dir(dir, Shared::No)
}

/// Refuse a pin directory someone else could have planted or could change: one that is a
/// symbolic link (it would take the pins elsewhere), not a directory, not owned by us
/// (root), or writable by group or others (they could swap its maps for their own).
/// `lstat`, so a symbolic link is seen as such.
fn check_dir(dir: &Path, shared: Shared) -> Result<(), DatapathError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let insecure = |problem: String| DatapathError::InsecurePins { path: dir.to_path_buf(), problem };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| DatapathError::Unavailable(format!("lstat {}: {e}", dir.display())))?;
    if meta.file_type().is_symlink() {
        return Err(insecure("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(insecure("is not a directory".into()));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(insecure(format!("is owned by uid {}, not {me}", meta.uid())));
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(shared == Shared::IfSticky && sticky) {
        return Err(insecure(format!("is writable by group or others (mode {:04o})", mode & 0o7777)));
    }
    Ok(())
}

/// `true` if `path` lives on bpffs.
fn is_bpffs(path: &Path) -> Result<bool, DatapathError> {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => Ok(s.filesystem_type().0 == BPF_FS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(DatapathError::Unavailable(format!("statfs {}: {e}", path.display()))),
    }
}

/// Mount bpffs on /sys/fs/bpf unless it already is (systemd normally does this).
///
/// Concurrent ADDs serialise on an flock of the mount point, so bpffs is mounted once
/// instead of being stacked (a second mount would hide the pins made under the first).
fn ensure_bpffs_mounted() -> Result<(), DatapathError> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root)? {
        return Ok(());
    }
    let dir = File::open(root).map_err(|e| DatapathError::Unavailable(format!("opening {BPFFS_ROOT}: {e}")))?;
    // SAFETY: flock on a file descriptor we own; released when `dir` is closed.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = io::Error::last_os_error();
        return Err(DatapathError::Unavailable(format!("locking {BPFFS_ROOT}: {e}")));
    }
    if is_bpffs(root)? {
        return Ok(()); // another ADD mounted it while we waited
    }
    // mode=0700: bpffs defaults to 01777, which would let any local user create the pin dir
    // first.
    nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .map_err(|e| DatapathError::Unavailable(format!("mounting bpffs on {BPFFS_ROOT}: {e}")))?;
    log::info!("mounted bpffs on {BPFFS_ROOT} (mode 0700)");
    Ok(())
}

/// Remove a pin (or the directory recording a netlink filter); a missing one is not an error.
pub fn unpin(path: &Path) -> Result<(), DatapathError> {
    let removed = if path.is_dir() { std::fs::remove_dir(path) } else { std::fs::remove_file(path) };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Fs { op: "removing pin", path: path.to_path_buf(), source }),
    }
}
