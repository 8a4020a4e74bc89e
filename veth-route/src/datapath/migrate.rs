//! Migrating an older pin layout generation (`<bpfPinDir>/v<k>`, k below this build's) to
//! the current one, on the first ADD after an upgrade that changed the layout.
//!
//! Left alone, the old generation's programs stay attached (its `from_uplink` first on the
//! uplink) and its endpoints survive every DEL, so a new pod reusing an old address would
//! be sent to a veth that is gone. So, under both generations' locks:
//! 1. the old maps' entries are carried over, when their formats are this build's
//!    (anti-spoof entries first, so a moved `from_pod` never meets a pod without one);
//! 2. every attachment of the old generation is moved to this build's programs, atomically:
//!    a TCX link by `bpf_link_update` (then its pin moves), a netlink filter by swapping its
//!    program in place.
//!    Where the entries could not be carried, the old pod programs are only detached: those
//!    pods keep the kernel path (and the kernel's anti-spoofing) until they are re-created,
//!    instead of meeting a `from_pod` that knows nothing of them and drops all they send;
//! 3. the old directory is removed, and with it the last reference to its programs and maps.
//!
//! A build can also add a map to the same generation. aya pins it empty at the first load,
//! so entries that older builds kept elsewhere are derived then ([`fill_ipv6_endpoints`]).

use std::net::Ipv4Addr;
use std::path::Path;

use super::loader::{relink, Prog, Programs};
use super::maps::PinnedMaps;
use super::pins::{unpin, PinLayout};
use super::tc::{self, AttachMode};
use super::DatapathError;

/// Migrate every older generation next to `layout` into it. Caller holds `layout`'s lock.
pub fn migrate(layout: &PinLayout, progs: &mut Programs, maps: &mut PinnedMaps) -> Result<(), DatapathError> {
    for root in layout.older_generations() {
        let old = PinLayout::at(root);
        // A plugin of the old build may still be running an ADD or DEL there.
        let _lock = old.lock()?;
        let carried = match PinnedMaps::open(&old) {
            Ok(old_maps) => carry(&old_maps, maps).map(Some)?,
            Err(e) => {
                log::warn!(
                    "{}: its maps are not in this build's format ({e}); its pods keep the kernel path until re-created",
                    old.root().display()
                );
                None
            }
        };
        for p in Prog::ALL {
            let Ok(entries) = std::fs::read_dir(old.links(p)) else { continue };
            for pin in entries.flatten().map(|e| e.path()) {
                let ifname = pin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let keep = carried.is_some() || Prog::UPLINK.contains(&p);
                if let Err(e) = move_attachment(progs, p, &ifname, &pin, &layout.link(p, &ifname), keep) {
                    log::warn!("migrating {}: {e}", pin.display());
                }
            }
        }
        std::fs::remove_dir_all(old.root()).map_err(|source| DatapathError::Fs {
            op: "removing the old pin generation",
            path: old.root().to_path_buf(),
            source,
        })?;
        log::info!(
            "migrated the pin layout {} to {} ({} entries carried)",
            old.root().display(),
            layout.root().display(),
            carried.map_or("no".into(), |n| n.to_string())
        );
    }
    Ok(())
}

/// Copy the old generation's entries (anti-spoof, endpoints and flows of both families) into `maps`, keeping
/// what the current generation already has. Returns how many were copied.
fn carry(old: &PinnedMaps, maps: &mut PinnedMaps) -> Result<usize, DatapathError> {
    let mut n = 0;
    for (idx, src) in old.all_sources()? {
        if maps.source(idx)?.is_none() {
            maps.put_source(idx, src)?;
            n += 1;
        }
    }
    for (idx, ip) in old.all_sources6()? {
        if maps.source6(idx)?.is_none() {
            maps.put_source6(idx, ip)?;
            n += 1;
        }
    }
    for (ip, ep) in old.all_endpoints()? {
        if maps.endpoint(ip)?.is_none() {
            maps.put_endpoint(ip, ep)?;
            n += 1;
        }
    }
    for (ip, ep) in old.all_endpoints6()? {
        if maps.endpoint6(ip)?.is_none() {
            maps.put_endpoint6(ip, ep)?;
            n += 1;
        }
    }
    // Verified flows stay verified: else they would drop to the kernel path mid-stream.
    for (key, state) in old.all_flows() {
        maps.put_flow(key, state)?;
        n += 1;
    }
    for (key, state) in old.all_flows6() {
        maps.put_flow6(key, state)?;
        n += 1;
    }
    // An old generation without IPv6 endpoints carried only its pods' `sources6`.
    Ok(n + fill_ipv6_endpoints(maps)?)
}

/// Give each dual-stack pod that has an IPv6 address in `sources6` but no IPv6 endpoint
/// the endpoint this build's ADD writes: its IPv4 one (one veth, one pair of MACs). Builds
/// before IPv6 endpoints wrote only `sources6`, so without this their pods' IPv6 would
/// stay on the kernel path and fail CHECK until re-created. Idempotent: this build writes
/// both entries under the lock the caller holds, so a pod lacking one is an older build's.
/// Returns how many were written.
pub fn fill_ipv6_endpoints(maps: &mut PinnedMaps) -> Result<usize, DatapathError> {
    let mut n = 0;
    for (idx, ip6) in maps.all_sources6()? {
        if maps.endpoint6(ip6)?.is_some() {
            continue;
        }
        // The pod's own IPv4 endpoint: under the address its `sources` entry names, on its veth.
        let Some(ip4) = maps.source(idx)?.map(|s| Ipv4Addr::from(s.ip)) else { continue };
        let Some(ep) = maps.endpoint(ip4)?.filter(|ep| ep.ifindex == idx) else { continue };
        maps.put_endpoint6(ip6, ep)?;
        log::info!("IPv6 endpoint {ip6} added for the dual-stack pod on ifindex {idx} (an older build had only its source)");
        n += 1;
    }
    Ok(n)
}

/// Move one attachment of the old generation (`old_pin`) to this build's program `p`, or
/// with `keep` false only detach it.
fn move_attachment(progs: &mut Programs, p: Prog, ifname: &str, old_pin: &Path, new_pin: &Path, keep: bool) -> Result<(), DatapathError> {
    if new_pin.exists() {
        // Already attached in this generation (netlink: under the same filter name, which
        // replaced the old one's program).
        return unpin(old_pin);
    }
    if !keep {
        return tc::detach(p, ifname, old_pin);
    }
    if AttachMode::recorded(old_pin) == Some(AttachMode::Netlink) {
        tc::attach(progs.get_mut(p), p, ifname, new_pin, AttachMode::Netlink)?;
        return unpin(old_pin);
    }
    relink(progs.get_mut(p), old_pin)?;
    std::fs::rename(old_pin, new_pin).map_err(|source| DatapathError::Fs {
        op: "moving the old generation's link to",
        path: new_pin.to_path_buf(),
        source,
    })
}
