//! Network sysctls of the calling thread's namespace (see `netns` for why threads matter).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Keys are written with slashes (`net/ipv4/conf/eth0.100/arp_notify`): interface names
/// may contain dots.
fn path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}

/// Read a sysctl such as `net/ipv4/ip_forward`; `None` when it does not exist.
pub fn read(key: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path(key)) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read sysctl {key}"))(e)),
    }
}

/// Write a sysctl unless it already has `value` (avoids needless writes on every ADD).
pub fn ensure(key: &str, value: &str) -> Result<()> {
    if read(key)?.as_deref() == Some(value) {
        return Ok(());
    }
    std::fs::write(path(key), value).map_err(Error::io(format!("set sysctl {key}={value}")))
}

/// The per-interface IPv6 key, tolerating kernels or namespaces without IPv6.
pub fn ensure_if_present(key: &str, value: &str) -> Result<()> {
    match read(key)? {
        None => Ok(()),
        Some(v) if v == value => Ok(()),
        Some(_) => ensure(key, value),
    }
}

/// Write the IPv6 settings `net/ipv6/conf/<ifname>/<key>` in order; a clear error instead
/// of a missing file when the interface has no IPv6 at all (a kernel booted with
/// `ipv6.disable=1`).
pub fn ensure_ipv6_conf(ifname: &str, settings: &[(&str, &str)]) -> Result<()> {
    let key = |k: &str| format!("net/ipv6/conf/{ifname}/{k}");
    if read(&key("disable_ipv6"))?.is_none() {
        return Err(Error::Command(format!("the pod has an IPv6 address but {ifname} has no IPv6 (kernel booted with ipv6.disable=1?)")));
    }
    settings.iter().try_for_each(|(k, v)| ensure(&key(k), v))
}
