//! The pinned maps (BTF-typed, so `bpftool map dump` prints field names) and lookups.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use veth_route_common::{
    Counters, Endpoint, EndpointKey, FlowKey, FlowState, PodSource, PodSource6, Settings, COUNTER_SLOTS, MODE_ALWAYS, SOURCE_F_MODE_ALWAYS,
    SOURCE_F_MODE_AUTO,
};

/// Upper bound on pods per host; a kubelet allows 110 by default, this leaves room.
const MAX_ENDPOINTS: usize = 4096;
/// Flow directions tracked at once (16-byte key, 8-byte value). An evicted flow falls
/// back to the kernel path and re-verifies, so this bounds memory, not correctness. LRU maps
/// are always preallocated; their value is one `u32` state, read in one load.
const MAX_FLOWS: usize = 65536;

/// `BPF_F_NO_PREALLOC`: an update allocates a new element and frees the old one only after
/// an RCU grace period. A preallocated map hands the old element to the next update at
/// once, so a program still copying it could read half of another pod's entry.
const NO_PREALLOC: usize = aya_ebpf::bindings::BPF_F_NO_PREALLOC as usize;

#[btf_map(name = "endpoints")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, MAX_ENDPOINTS, NO_PREALLOC> = HashMap::new();

#[btf_map(name = "sources")]
pub static SOURCES: HashMap<u32, PodSource, MAX_ENDPOINTS, NO_PREALLOC> = HashMap::new();

#[btf_map(name = "sources6")]
pub static SOURCES6: HashMap<u32, PodSource6, MAX_ENDPOINTS, NO_PREALLOC> = HashMap::new();

#[btf_map(name = "settings")]
pub static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counters, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[btf_map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, FlowState, MAX_FLOWS> = LruHashMap::new();

/// Where to deliver packets for `ip`, if it is a pod of this host.
#[inline(always)]
pub fn endpoint(ip: [u8; 4]) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once, inside the program's RCU read section, from
    // an element that is not reused before the section ends (NO_PREALLOC).
    unsafe { ENDPOINTS.get(EndpointKey { ip }).copied() }
}

/// A pod of this host that a packet is addressed to: its endpoint, and the `sources` entry
/// of the host veth the endpoint names (whether the veth is still this pod's; its mode).
/// Plain values (no entry: address 0.0.0.0, no flags), see `from_pod_verdict`.
pub struct LocalPod {
    pub ep: Endpoint,
    pub owner_ip: [u8; 4],
    pub owner_flags: u32,
}

/// The local pod with address `ip`, if the endpoint map has one.
#[inline(always)]
pub fn local_pod(ip: [u8; 4]) -> Option<LocalPod> {
    let ep = endpoint(ip)?;
    let (owner_ip, owner_flags) = match pod_source(ep.ifindex) {
        Some(s) => (s.ip, s.flags),
        None => ([0; 4], 0),
    };
    Some(LocalPod { ep, owner_ip, owner_flags })
}

/// The source address expected from the pod behind host veth `ifindex`.
#[inline(always)]
pub fn pod_source(ifindex: u32) -> Option<PodSource> {
    // SAFETY: as above, copied out at once.
    unsafe { SOURCES.get(ifindex).copied() }
}

/// The IPv6 address of the dual-stack pod behind host veth `ifindex`; `None`: IPv4-only.
#[inline(always)]
pub fn pod_source6(ifindex: u32) -> Option<PodSource6> {
    // SAFETY: as above, copied out at once.
    unsafe { SOURCES6.get(ifindex).copied() }
}

/// Whether a pod whose `sources` entry has `flags` redirects only verified flows: its own
/// mode bit, else (an entry of an older build, or no entry) the pin directory's
/// `settings`, unset meaning `auto` (the safe choice).
#[inline(always)]
pub fn mode_is_auto(flags: u32) -> bool {
    if flags & SOURCE_F_MODE_ALWAYS != 0 {
        return false;
    }
    if flags & SOURCE_F_MODE_AUTO != 0 {
        return true;
    }
    match SETTINGS.get(0) {
        Some(s) => s.mode != MODE_ALWAYS,
        None => true,
    }
}
