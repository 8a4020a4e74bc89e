//! Load the kernel programs once per host and pin them; later plugin runs reuse the pins,
//! so no ADD after the first pays for the verifier.
//!
//! Program pins are keyed by a hash of the embedded object: after a plugin upgrade the
//! first ADD loads the new programs, moves every attachment onto them atomically (a pinned
//! TCX link by `bpf_link_update`, a netlink filter by replacing its program in place) and
//! unpins the old ones. Maps are shared across builds (their layout is versioned by the
//! `v<N>` directory).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use veth_route_common::{map_names, CounterSlot};

use super::maps::PinnedMaps;
use super::migrate;
use super::pins::{unpin, PinLayout};
use super::tc::{self, AttachMode};
use super::DatapathError;

/// The eBPF object built by `cargo xtask build-ebpf`, embedded by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VETH_ROUTE_EBPF_OBJECT"));

/// The programs of the object, each with the hook it is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// tc ingress of every host veth: anti-spoofing and forwarding of pod traffic.
    FromPod,
    /// tc egress of every host veth: watches what the kernel delivers to pods.
    ToPod,
    /// tc ingress of every uplink: forwarding to local pods.
    FromUplink,
    /// tc egress of every uplink: watches what the kernel sends out.
    ToUplink,
}

impl Prog {
    pub const ALL: [Prog; 4] = [Prog::FromPod, Prog::ToPod, Prog::FromUplink, Prog::ToUplink];
    /// Attached to each pod's host veth.
    pub const POD: [Prog; 2] = [Prog::FromPod, Prog::ToPod];
    /// Attached to each uplink.
    pub const UPLINK: [Prog; 2] = [Prog::FromUplink, Prog::ToUplink];

    /// The program's function name in the object (also its pin and netlink filter name).
    pub const fn name(self) -> &'static str {
        match self {
            Prog::FromPod => "from_pod",
            Prog::ToPod => "to_pod",
            Prog::FromUplink => "from_uplink",
            Prog::ToUplink => "to_uplink",
        }
    }

    /// The program's slot in the `counters` map.
    pub const fn counter_slot(self) -> CounterSlot {
        match self {
            Prog::FromPod => CounterSlot::FromPod,
            Prog::ToPod => CounterSlot::ToPod,
            Prog::FromUplink => CounterSlot::FromUplink,
            Prog::ToUplink => CounterSlot::ToUplink,
        }
    }

    /// The tc hook the program is written for.
    pub const fn attach_type(self) -> TcAttachType {
        match self {
            Prog::FromPod | Prog::FromUplink => TcAttachType::Ingress,
            Prog::ToPod | Prog::ToUplink => TcAttachType::Egress,
        }
    }
}

const MAPS: [&str; 8] = [
    map_names::ENDPOINTS,
    map_names::SOURCES,
    map_names::SOURCES6,
    map_names::ENDPOINTS6,
    map_names::SETTINGS,
    map_names::COUNTERS,
    map_names::FLOWS,
    map_names::FLOWS6,
];

/// The programs, loaded (or reopened from their pins), in [`Prog::ALL`] order.
pub struct Programs {
    progs: [SchedClassifier; 4],
}

impl Programs {
    pub fn get_mut(&mut self, p: Prog) -> &mut SchedClassifier {
        &mut self.progs[p as usize]
    }
}

/// Identity of the embedded object (FNV-1a of its bytes), naming its program pins.
pub fn object_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", crate::names::fnv1a(&[OBJECT])))
}

/// Reopen the pinned programs, loading and pinning them first if this host has none from
/// this build. Caller holds the pin-dir lock.
pub fn load_or_reuse(layout: &PinLayout) -> Result<Programs, DatapathError> {
    let id = object_id();
    if let Some(progs) = reuse(layout, id)? {
        return Ok(progs);
    }
    load_and_pin(layout, id)?;
    let mut progs = reuse(layout, id)?.ok_or_else(|| DatapathError::Internal("programs vanished right after pinning".into()))?;
    upgrade_links(layout, &mut progs);
    remove_other_builds(layout, id);
    Ok(progs)
}

/// Path of the pinned program `name`: this build's, else any build's (links may still use
/// an older build until the next ADD upgrades them).
pub fn pinned_program(layout: &PinLayout, prog: Prog) -> Option<PathBuf> {
    let current = layout.program(object_id(), prog.name());
    if current.exists() {
        return Some(current);
    }
    std::fs::read_dir(layout.programs()).ok()?.flatten().map(|e| e.path().join(prog.name())).find(|p| p.exists())
}

/// The pinned programs of build `id`, if a complete set (programs and maps) is pinned.
fn reuse(layout: &PinLayout, id: &str) -> Result<Option<Programs>, DatapathError> {
    let complete = Prog::ALL.iter().all(|p| layout.program(id, p.name()).exists()) && MAPS.iter().all(|m| layout.map(m).exists());
    if !complete {
        return Ok(None);
    }
    let [a, b, c, d] = Prog::ALL.map(|p| open_pinned(&layout.program(id, p.name()), p.name()));
    Ok(Some(Programs { progs: [a?, b?, c?, d?] }))
}

/// Open the program pinned at `pin` as `name`.
///
/// Not `SchedClassifier::from_pin`: it reads the name through aya's kernel feature probe,
/// which loads a dozen throwaway programs and maps (milliseconds on every ADD).
pub fn open_pinned(pin: &Path, name: &'static str) -> Result<SchedClassifier, DatapathError> {
    ProgramInfo::from_pin(pin)
        .and_then(|info| SchedClassifier::from_program_info(info, name.into()))
        .map_err(|source| DatapathError::Program { op: format!("opening pinned program {name}"), source })
}

/// Verify and load every program; maps are pinned by aya (and reused if already pinned),
/// programs are pinned last so their pins mean "the set is complete".
fn load_and_pin(layout: &PinLayout, id: &str) -> Result<(), DatapathError> {
    for p in Prog::ALL {
        unpin(&layout.program(id, p.name()))?;
    }
    let dir = layout.programs().join(id);
    std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Fs { op: "creating", path: dir.clone(), source })?;
    let mut loader = EbpfLoader::new();
    for m in MAPS {
        loader.map_pin_path(m, layout.map(m));
    }
    // aya-log: off unless asked for; the level is a frozen global, so the verifier removes
    // the disabled logging code entirely.
    let log_level = log_level_from_env();
    loader.override_global("AYA_LOG_LEVEL", &log_level, true);
    let mut ebpf: Ebpf = loader.load(OBJECT).map_err(load_error)?;
    // The maps are pinned now, a map this build added among them (empty). Fill it before
    // the program pins mark the set complete, so a failure here is retried by the next ADD.
    migrate::fill_ipv6_endpoints(&mut PinnedMaps::open(layout)?)?;
    for name in Prog::ALL.map(Prog::name) {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Internal(format!("program {name} missing from the embedded object")))?
            .try_into()
            .map_err(|source| DatapathError::Program { op: format!("program {name}"), source })?;
        prog.load().map_err(|e| DatapathError::Unavailable(format!("verifier rejected {name}: {}", error_chain(&e))))?;
        prog.pin(layout.program(id, name)).map_err(|source| DatapathError::Pin { op: format!("pinning program {name}"), source })?;
    }
    log::info!("loaded eBPF fast path programs (build {id}) and pinned them under {}", layout.root().display());
    Ok(())
}

/// Move every attachment to the freshly loaded programs, so no program of an older build
/// keeps running, each the way its pin records it: a TCX link by `bpf_link_update`, a
/// netlink filter by swapping its program in place; both atomic. Best effort: an
/// attachment whose interface is gone is skipped (its pod's DEL removes it).
pub fn upgrade_links(layout: &PinLayout, progs: &mut Programs) {
    for p in Prog::ALL {
        let Ok(entries) = std::fs::read_dir(layout.links(p)) else { continue };
        for pin in entries.flatten().map(|e| e.path()) {
            let moved = match AttachMode::recorded(&pin) {
                Some(AttachMode::Netlink) => {
                    let ifname = pin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    tc::attach(progs.get_mut(p), p, &ifname, &pin, AttachMode::Netlink)
                }
                _ => relink(progs.get_mut(p), &pin),
            };
            if let Err(e) = moved {
                log::warn!("keeping {} on the previous program build: {e}", pin.display());
            }
        }
    }
}

/// Move the TCX link pinned at `pin` to `prog` (atomic) and pin it there again.
pub fn relink(prog: &mut SchedClassifier, pin: &Path) -> Result<(), DatapathError> {
    let at = || pin.display().to_string();
    let pinned = PinnedLink::from_pin(pin).map_err(|source| DatapathError::Link { op: format!("opening link {}", at()), source })?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|source| DatapathError::Link { op: format!("link {}", at()), source })?;
    let moved = |source| DatapathError::Program { op: format!("moving link {}", at()), source };
    let id = prog.attach_to_link(link).map_err(moved)?;
    let link: FdLink =
        prog.take_link(id).map_err(moved)?.try_into().map_err(|source| DatapathError::Link { op: format!("link {}", at()), source })?;
    // The fd keeps the link alive between unpinning and pinning it again.
    unpin(pin)?;
    link.pin(pin).map_err(|source| DatapathError::Pin { op: format!("pinning link {}", at()), source })?;
    Ok(())
}

/// Unpin programs of other builds (once [`upgrade_links`] moved everything off them, the
/// kernel frees them).
fn remove_other_builds(layout: &PinLayout, id: &str) {
    let Ok(entries) = std::fs::read_dir(layout.programs()) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str() != Some(id) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `VETH_ROUTE_BPF_LOG=error|warn|info|debug|trace` at first load enables aya-log output.
fn log_level_from_env() -> u8 {
    match std::env::var("VETH_ROUTE_BPF_LOG").as_deref() {
        Ok("error") => 1,
        Ok("warn") => 2,
        Ok("info") => 3,
        Ok("debug") => 4,
        Ok("trace") => 5,
        _ => 0,
    }
}

fn load_error(e: aya::EbpfError) -> DatapathError {
    // No privilege, or a kernel without the program/map types: "no eBPF here", not a bug.
    match errno_in_chain(&e) {
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS | libc::EOPNOTSUPP) => {
            DatapathError::Unavailable(format!("loading eBPF object: {}", error_chain(&e)))
        }
        _ => DatapathError::Object(e),
    }
}

/// The errno behind a program operation: tc errors are `transparent` wrappers in aya, which
/// hide the inner `io::Error` from the source chain, so they are matched by variant.
pub fn program_errno(e: &aya::programs::ProgramError) -> Option<i32> {
    use aya::programs::{tc::TcError, ProgramError};
    match e {
        ProgramError::TcError(TcError::IoError(io)) => io.raw_os_error(),
        ProgramError::TcError(TcError::NetlinkError(nl)) => nl.raw_os_error(),
        other => errno_in_chain(other),
    }
}

/// The errno of the first `io::Error` in `e`'s source chain (aya keeps the syscall's there).
pub fn errno_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

/// `e` and its sources, joined; aya's errors keep the useful part in the source chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
