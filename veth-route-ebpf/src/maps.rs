//! The pinned maps (BTF-typed, so `bpftool map dump` prints field names) and lookups.

use crate::packet::same_address;
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use veth_route_common::{
    Counters, Endpoint, EndpointKey, EndpointKey6, FlowKey, FlowKey6, FlowState, PodSource, PodSource6, Settings, COUNTER_SLOTS,
    MODE_ALWAYS, SOURCE_F_MODE_ALWAYS, SOURCE_F_MODE_AUTO,
};

/// Upper bound on pods per host; a kubelet allows 110 by default, this leaves room.
const MAX_ENDPOINTS: usize = 4096;
/// Flow directions tracked at once (16-byte key, 8-byte value). An evicted flow falls
/// back to the kernel path and re-verifies, so this bounds memory, not correctness. LRU maps
/// are always preallocated; their value is one `u32` state, read in one load.
const MAX_FLOWS: usize = 65536;
/// The same for IPv6 (40-byte key): fewer, so a dual-stack host's flow state stays near
/// the IPv4 map's memory.
const MAX_FLOWS6: usize = 32768;

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

#[btf_map(name = "endpoints6")]
pub static ENDPOINTS6: HashMap<EndpointKey6, Endpoint, MAX_ENDPOINTS, NO_PREALLOC> = HashMap::new();

#[btf_map(name = "settings")]
pub static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counters, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[btf_map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, FlowState, MAX_FLOWS> = LruHashMap::new();

#[btf_map(name = "flows6")]
pub static FLOWS6: LruHashMap<FlowKey6, FlowState, MAX_FLOWS6> = LruHashMap::new();

/// Where to deliver packets for `ip`, if it is a pod of this host.
#[inline(always)]
pub fn endpoint(ip: [u8; 4]) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once, inside the program's RCU read section, from
    // an element that is not reused before the section ends (NO_PREALLOC).
    unsafe { ENDPOINTS.get(EndpointKey { ip }).copied() }
}

/// A pod of this host that a packet is addressed to: its endpoint, whether the host veth
/// the endpoint names is still this pod's (its `sources` or `sources6` entry names the
/// address), and that veth's mode flags. Plain values (no entry: not current, no flags),
/// see `from_pod_verdict`.
pub struct LocalPod {
    pub ep: Endpoint,
    pub current: bool,
    pub owner_flags: u32,
}

/// The local pod with IPv4 address `ip`, if the endpoint map has one.
#[inline(always)]
pub fn local_pod(ip: [u8; 4]) -> Option<LocalPod> {
    let ep = endpoint(ip)?;
    let (owner, present) = pod_source(ep.ifindex);
    Some(LocalPod { ep, current: present && owner.ip == ip, owner_flags: owner.flags })
}

/// The local pod with IPv6 address `ip`, if the `endpoints6` map has one. Its mode flags
/// are those of its `sources` entry, which every pod has.
#[inline(always)]
pub fn local_pod6(ip: [u8; 16]) -> Option<LocalPod> {
    // SAFETY: as in `endpoint`.
    let ep = unsafe { ENDPOINTS6.get(EndpointKey6 { ip }).copied() }?;
    let current = pod_source6(ep.ifindex).is_some_and(|s| same_address(&s.ip, &ip));
    let (owner, _) = pod_source(ep.ifindex);
    Some(LocalPod { ep, current, owner_flags: owner.flags })
}

/// The `sources` entry of host veth `ifindex` and whether there is one (no entry: zeros).
///
/// Plain values, not an `Option` kept alive across the pipeline: LLVM may fill a `None`'s
/// payload with an undefined register and merge it into later code, which the verifier
/// rejects (reading an uninitialised register). The volatile read keeps the load on the
/// path where the entry exists.
#[inline(always)]
pub fn pod_source(ifindex: u32) -> (PodSource, bool) {
    match SOURCES.get_ptr(ifindex) {
        // SAFETY: a map value the lookup just returned, copied out at once, inside the
        // program's RCU read section (NO_PREALLOC, see `endpoint`).
        Some(p) => (unsafe { core::ptr::read_volatile(p) }, true),
        None => (PodSource { ip: [0; 4], flags: 0 }, false),
    }
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
