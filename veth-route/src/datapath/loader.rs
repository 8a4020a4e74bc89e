//! Load the kernel programs once per host and pin them; later plugin runs reuse the pins,
//! so no ADD after the first pays for the verifier.
//!
//! Program pins are keyed by a hash of the embedded object: after a plugin upgrade the
//! first ADD loads the new programs, moves every pinned TCX link onto them atomically
//! (`bpf_link_update`) and unpins the old ones. Maps are shared across builds (their
//! layout is versioned by the `v1` directory).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use veth_route_common::map_names;

use super::kfunc::patch_kfunc_calls;
use super::pins::{unpin, PinLayout};
use super::DatapathError;

/// The eBPF object built by `cargo xtask build-ebpf`, embedded by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VETH_ROUTE_EBPF_OBJECT"));

/// Program attached to tc ingress of every host veth.
pub const FROM_POD: &str = "from_pod";
/// Program attached to tc ingress of every uplink.
pub const FROM_UPLINK: &str = "from_uplink";

const MAPS: [&str; 4] = [map_names::ENDPOINTS, map_names::SOURCES, map_names::SETTINGS, map_names::COUNTERS];

/// The two programs, loaded (or reopened from their pins).
pub struct Programs {
    pub from_pod: SchedClassifier,
    pub from_uplink: SchedClassifier,
}

/// Identity of the embedded object (FNV-1a of its bytes), naming its program pins.
pub fn object_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let h = OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        format!("{h:016x}")
    })
}

/// Reopen the pinned programs, loading and pinning them first if this host has none from
/// this build. `needs_conntrack`: refuse to load without the conntrack kfuncs (`auto`).
/// Caller holds the pin-dir lock.
pub fn load_or_reuse(layout: &PinLayout, needs_conntrack: bool) -> Result<Programs, DatapathError> {
    let id = object_id();
    if let Some(progs) = reuse(layout, id)? {
        return Ok(progs);
    }
    load_and_pin(layout, id, needs_conntrack)?;
    let mut progs = reuse(layout, id)?.ok_or_else(|| DatapathError::Other("programs vanished right after pinning".into()))?;
    upgrade_links(layout, &mut progs);
    remove_other_builds(layout, id);
    Ok(progs)
}

/// Path of the pinned program `name`: this build's, else any build's (links may still use
/// an older build until the next ADD upgrades them).
pub fn pinned_program(layout: &PinLayout, name: &str) -> Option<PathBuf> {
    let current = layout.program(object_id(), name);
    if current.exists() {
        return Some(current);
    }
    std::fs::read_dir(layout.programs()).ok()?.flatten().map(|e| e.path().join(name)).find(|p| p.exists())
}

/// The pinned programs of build `id`, if a complete set (programs and maps) is pinned.
fn reuse(layout: &PinLayout, id: &str) -> Result<Option<Programs>, DatapathError> {
    let complete = [FROM_POD, FROM_UPLINK].iter().all(|p| layout.program(id, p).exists()) && MAPS.iter().all(|m| layout.map(m).exists());
    if !complete {
        return Ok(None);
    }
    Ok(Some(Programs {
        from_pod: open_pinned(&layout.program(id, FROM_POD), FROM_POD)?,
        from_uplink: open_pinned(&layout.program(id, FROM_UPLINK), FROM_UPLINK)?,
    }))
}

/// Open the program pinned at `pin` as `name`.
///
/// Not `SchedClassifier::from_pin`: it reads the name through aya's kernel feature probe,
/// which loads a dozen throwaway programs and maps (milliseconds on every ADD).
pub fn open_pinned(pin: &Path, name: &'static str) -> Result<SchedClassifier, DatapathError> {
    ProgramInfo::from_pin(pin)
        .and_then(|info| SchedClassifier::from_program_info(info, name.into()))
        .map_err(|e| DatapathError::Other(format!("opening pinned program {name}: {}", error_chain(&e))))
}

/// Verify and load both programs; maps are pinned by aya (and reused if already pinned),
/// programs are pinned last so their pins mean "the set is complete".
fn load_and_pin(layout: &PinLayout, id: &str, needs_conntrack: bool) -> Result<(), DatapathError> {
    let (object, conntrack) = patch_kfunc_calls(OBJECT);
    if let Err(reason) = &conntrack {
        if needs_conntrack {
            return Err(DatapathError::Unavailable(format!(
                "fastPath auto must consult conntrack before bypassing NAT, but {reason}; \
                 use fastPath always if this host runs no Service NAT"
            )));
        }
        log::warn!("{reason}: programs never consult conntrack (fastPath always only; auto pods stay on the kernel path for TCP/UDP)");
    }
    for p in [FROM_POD, FROM_UPLINK] {
        unpin(&layout.program(id, p))?;
    }
    let dir = layout.programs().join(id);
    std::fs::create_dir_all(&dir).map_err(|e| DatapathError::Other(format!("creating {}: {e}", dir.display())))?;
    let mut loader = EbpfLoader::new();
    for m in MAPS {
        loader.map_pin_path(m, layout.map(m));
    }
    // aya-log: off unless asked for; the level is a frozen global, so the verifier removes
    // the disabled logging code entirely.
    let log_level = log_level_from_env();
    loader.override_global("AYA_LOG_LEVEL", &log_level, true);
    let mut ebpf: Ebpf = loader.load(&object).map_err(|e| load_error(&e))?;
    for name in [FROM_POD, FROM_UPLINK] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Other(format!("program {name} missing from object")))?
            .try_into()
            .map_err(|e| DatapathError::Other(format!("program {name}: {e}")))?;
        prog.load().map_err(|e| DatapathError::Unavailable(format!("verifier rejected {name}: {}", error_chain(&e))))?;
        prog.pin(layout.program(id, name)).map_err(|e| DatapathError::Other(format!("pinning program {name}: {e}")))?;
    }
    log::info!("loaded eBPF fast path programs (build {id}) and pinned them under {}", layout.root().display());
    Ok(())
}

/// Move every pinned TCX link to the freshly loaded programs (atomic `bpf_link_update`).
/// Best effort: a link whose interface is gone is skipped (its pod's DEL removes it).
fn upgrade_links(layout: &PinLayout, progs: &mut Programs) {
    for (dir, prog) in [(layout.pod_links(), &mut progs.from_pod), (layout.uplink_links(), &mut progs.from_uplink)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for pin in entries.flatten().map(|e| e.path()) {
            if let Err(e) = relink(prog, &pin) {
                log::warn!("keeping {} on the previous program build: {e}", pin.display());
            }
        }
    }
}

fn relink(prog: &mut SchedClassifier, pin: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(pin).map_err(|e| e.to_string())?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    let id = prog.attach_to_link(link).map_err(|e| error_chain(&e))?;
    let link: FdLink =
        prog.take_link(id).map_err(|e| e.to_string())?.try_into().map_err(|e: aya::programs::links::LinkError| e.to_string())?;
    // The fd keeps the link alive between unpinning and pinning it again.
    unpin(pin).map_err(|e| e.to_string())?;
    link.pin(pin).map_err(|e| e.to_string())?;
    Ok(())
}

/// Unpin programs of other builds (still-attached netlink filters keep theirs alive).
fn remove_other_builds(layout: &PinLayout, id: &str) {
    let Ok(entries) = std::fs::read_dir(layout.programs()) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str() != Some(id) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Attach type the programs were written for.
pub const ATTACH: TcAttachType = TcAttachType::Ingress;

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

fn load_error(e: &aya::EbpfError) -> DatapathError {
    let msg = error_chain(e);
    // Permission problems and missing kernel features mean "no eBPF here", not a bug.
    if msg.contains("Operation not permitted") || msg.contains("permission") || msg.contains("not supported") {
        DatapathError::Unavailable(format!("loading eBPF object: {msg}"))
    } else {
        DatapathError::Other(format!("loading eBPF object: {msg}"))
    }
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
