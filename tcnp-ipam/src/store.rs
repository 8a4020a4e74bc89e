//! Node-local state under the data directory: which address belongs to which attachment,
//! the warm spares, the VM port facts, and a journal of an in-flight allocation. Every
//! operation holds an exclusive flock on the directory's `lock` file, which serialises
//! plugin processes on this node, and, once it knows the VM port, the node-wide lock of
//! that port ([`PortLock`]); writes are atomic (temp file + rename, mode 0600).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One address on the VM port, with its subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: IpAddr,
    /// Its Neutron subnet.
    pub subnet_id: String,
}

/// The addresses of one attachment: one per IP family, IPv4 first. Stored as a single
/// lease when there is one, the format of the IPv4-only versions (which can still read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases(pub Vec<Lease>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireLeases {
    One(Lease),
    Many(Vec<Lease>),
}

impl Serialize for Leases {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Leases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match WireLeases::deserialize(d)? {
            WireLeases::One(l) => Leases(vec![l]),
            WireLeases::Many(v) => Leases(v),
        })
    }
}

/// The subnet pod addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetInfo {
    /// Subnet id.
    pub id: String,
    /// CIDR (prefix length for results).
    pub cidr: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
}

/// The VM's own port, as found once on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Port id.
    pub id: String,
    /// MAC it was found by (or read from Neutron).
    pub mac: String,
    /// Network id.
    pub network_id: String,
    /// The VM's own address on it.
    pub primary: IpAddr,
    /// Subnet for pod addresses (the primary's).
    pub subnet: SubnetInfo,
    /// IPv6 subnet for pod addresses, on a dual-stack network (absent in states of
    /// IPv4-only versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<SubnetInfo>,
    /// The VM's own IPv6 address on the port, if it has one in `subnet6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary6: Option<IpAddr>,
    /// Whether the managed/primary tags are on the port.
    pub marked: bool,
    /// The Neutron network's MTU (what pod interfaces should use).
    #[serde(default)]
    pub network_mtu: Option<u32>,
}

/// A port update whose outcome is not yet recorded: the port's addresses before it and the
/// nonce it writes into the port description. Kept until the outcome is settled (the
/// answer arrived, Neutron refused it, or a later read of the port showed what happened),
/// across runs if need be: an address added by it is never left on the port unrecorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Addresses on the port before the PUT.
    pub before: Vec<IpAddr>,
    /// The PUT's description nonce (absent in journals of older versions).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Everything this node remembers for one CNI network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The VM port.
    #[serde(default)]
    pub port: Option<PortInfo>,
    /// `containerID/ifname` -> its addresses.
    #[serde(default)]
    pub attachments: BTreeMap<String, Leases>,
    /// Spare addresses already on the port (warm pool).
    #[serde(default)]
    pub spares: Vec<Lease>,
    /// Node-affine blocks this node holds on the port.
    #[serde(default)]
    pub blocks: Vec<IpNet>,
    /// Journal of an unfinished allocation.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Released addresses held on the port until their quarantine ends.
    #[serde(default)]
    pub quarantine: Vec<Quarantined>,
}

/// An address a pod no longer uses, kept on the port (so Neutron gives it to nobody else)
/// and tagged released (so vrouter-route-controller withdraws its route) until `since` +
/// the configured quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The address.
    #[serde(flatten)]
    pub lease: Lease,
    /// When it was released, Unix seconds.
    pub since: u64,
}

impl State {
    /// Every address this node hands out or holds (attachments, spares, quarantine).
    pub fn held(&self) -> impl Iterator<Item = &Lease> {
        self.attachments.values().flat_map(|a| a.0.iter()).chain(self.spares.iter()).chain(self.quarantine.iter().map(|q| &q.lease))
    }
}

/// Key of an attachment in [`State::attachments`].
pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// The locked state directory of one network.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Creates the directory (0700) if needed and takes the node lock (blocks until free).
    pub fn lock(dir: &Path) -> std::io::Result<Store> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(dir.join("lock"))?;
        flock(&lock)?;
        Ok(Store { dir: dir.to_path_buf(), _lock: lock })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the state (empty when none was saved yet).
    pub fn load(&self) -> std::io::Result<State> {
        match fs::read(self.dir.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", self.dir.join("state.json").display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves the state atomically.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("state.json"), &bytes)
    }
}

/// Blocks until `file` is locked exclusively (released when it closes).
fn flock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on an fd we own; released when the file closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Node-wide directory of the per-port locks: fixed, so that every CNI network of this node
/// finds the same lock for one VM port whatever its `dataDir`.
pub const PORT_LOCK_DIR: &str = "/run/tcnp-ipam";

/// An exclusive lock on one VM port, shared by every CNI network (lock domain) of the node
/// that puts addresses on it: a lost answer is then read back before another network can
/// change the port. Taken after the data directory's lock, always in that order, so two
/// operations never wait for each other in a cycle. Its file is removed on drop.
pub struct PortLock {
    path: PathBuf,
    _file: File,
}

impl PortLock {
    /// Takes the lock of `port_id` in `dir` (created 0700; blocks until free).
    pub fn take(dir: &Path, port_id: &str) -> std::io::Result<PortLock> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // A configured portId is text: keep only what a Neutron id is made of.
        let name: String = port_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let path = dir.join(format!("port-{name}.lock"));
        loop {
            let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path)?;
            flock(&file)?;
            // The holder before us may have removed the file after we opened it: then this
            // lock guards nothing, and the file at the path (if any) is the one to lock.
            let held = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
            match fs::metadata(&path) {
                Ok(m) if std::os::unix::fs::MetadataExt::ino(&m) == held => return Ok(PortLock { path, _file: file }),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiter that opened it re-checks and opens anew.
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl PortInfo {
    /// The subnets pods get an address of, IPv4 first.
    pub fn pod_subnets(&self) -> impl Iterator<Item = &SubnetInfo> {
        std::iter::once(&self.subnet).chain(self.subnet6.as_ref())
    }

    /// The VM's own addresses on the port (never a pod's).
    pub fn own(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(self.primary).chain(self.primary6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_family_attachments_keep_the_ipv4_only_format() {
        let v4 = Lease { ip: "10.0.0.9".parse().unwrap(), subnet_id: "s4".into() };
        let v6 = Lease { ip: "fd00::9".parse().unwrap(), subnet_id: "s6".into() };
        let one = serde_json::to_value(Leases(vec![v4.clone()])).unwrap();
        assert_eq!(one, serde_json::json!({"ip": "10.0.0.9", "subnet_id": "s4"}));
        assert_eq!(serde_json::from_value::<Leases>(one).unwrap(), Leases(vec![v4.clone()]));
        let both = serde_json::to_value(Leases(vec![v4.clone(), v6.clone()])).unwrap();
        assert_eq!(serde_json::from_value::<Leases>(both).unwrap(), Leases(vec![v4, v6]));
    }

    #[test]
    fn a_port_lock_excludes_other_holders_and_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("tcnp-portlock-{}", std::process::id()));
        let lock = PortLock::take(&dir, "0f1e/../x").unwrap();
        // The id cannot climb out of the directory.
        let path = dir.join("port-0f1ex.lock");
        assert!(path.exists());
        let other = File::open(&path).unwrap();
        // SAFETY: flock on an fd we own.
        let busy = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!((busy, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EWOULDBLOCK)));
        drop(lock);
        assert!(!path.exists(), "the lock file must go with the lock");
        drop(PortLock::take(&dir, "0f1e/../x").unwrap());
        fs::remove_dir(&dir).unwrap();
    }
}
