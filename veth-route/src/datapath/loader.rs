//! Load the kernel programs once per host and pin them; later plugin runs reuse the pins,
//! so no ADD after the first pays for the verifier.

use aya::programs::{SchedClassifier, TcAttachType};
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

/// Reopen the pinned programs, loading and pinning them first if this host has none.
/// Caller holds the pin-dir lock.
pub fn load_or_reuse(layout: &PinLayout) -> Result<Programs, DatapathError> {
    if let Some(progs) = reuse(layout)? {
        return Ok(progs);
    }
    load_and_pin(layout)?;
    reuse(layout)?.ok_or_else(|| DatapathError::Other("programs vanished right after pinning".into()))
}

/// The pinned programs, if a complete set (programs and maps) is pinned.
fn reuse(layout: &PinLayout) -> Result<Option<Programs>, DatapathError> {
    let complete = [FROM_POD, FROM_UPLINK].iter().all(|p| layout.program(p).exists())
        && MAPS.iter().all(|m| layout.map(m).exists());
    if !complete {
        return Ok(None);
    }
    let open = |name: &str| {
        SchedClassifier::from_pin(layout.program(name))
            .map_err(|e| DatapathError::Other(format!("opening pinned program {name}: {e}")))
    };
    Ok(Some(Programs { from_pod: open(FROM_POD)?, from_uplink: open(FROM_UPLINK)? }))
}

/// Verify and load both programs; maps are pinned by aya (and reused if already pinned),
/// programs are pinned last so their pins mean "the set is complete".
fn load_and_pin(layout: &PinLayout) -> Result<(), DatapathError> {
    for p in [FROM_POD, FROM_UPLINK] {
        unpin(&layout.program(p))?;
    }
    let object = patch_kfunc_calls(OBJECT)?;
    let mut loader = EbpfLoader::new();
    for m in MAPS {
        loader.map_pin_path(m, layout.map(m));
    }
    // aya-log: off unless asked for; the level is a frozen global, so the verifier removes
    // the disabled logging code entirely.
    let log_level = log_level_from_env();
    loader.override_global("AYA_LOG_LEVEL", &log_level, false);
    let mut ebpf: Ebpf = loader.load(&object).map_err(|e| load_error(&e))?;
    for name in [FROM_POD, FROM_UPLINK] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Other(format!("program {name} missing from object")))?
            .try_into()
            .map_err(|e| DatapathError::Other(format!("program {name}: {e}")))?;
        prog.load().map_err(|e| DatapathError::Unavailable(format!("verifier rejected {name}: {}", error_chain(&e))))?;
        prog.pin(layout.program(name))
            .map_err(|e| DatapathError::Other(format!("pinning program {name}: {e}")))?;
    }
    log::info!("loaded eBPF fast path programs and pinned them under {}", layout.root().display());
    Ok(())
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
