//! The pinned maps (BTF-typed, so `bpftool map dump` prints field names) and lookups.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
};
use veth_route_common::{Counters, Endpoint, EndpointKey, PodSource, Settings, COUNTER_SLOTS, MODE_ALWAYS};

/// Upper bound on pods per host; a kubelet allows 110 by default, this leaves room.
const MAX_ENDPOINTS: usize = 4096;

#[btf_map(name = "endpoints")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, MAX_ENDPOINTS> = HashMap::new();

#[btf_map(name = "sources")]
pub static SOURCES: HashMap<u32, PodSource, MAX_ENDPOINTS> = HashMap::new();

#[btf_map(name = "settings")]
pub static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counters, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

/// Where to deliver packets for `ip`, if it is a pod of this host.
#[inline(always)]
pub fn endpoint(ip: [u8; 4]) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; userspace replaces entries atomically.
    unsafe { ENDPOINTS.get(EndpointKey { ip }).copied() }
}

/// The source address expected from the pod behind host veth `ifindex`.
#[inline(always)]
pub fn pod_source(ifindex: u32) -> Option<PodSource> {
    // SAFETY: as above, copied out at once.
    unsafe { SOURCES.get(ifindex).copied() }
}

/// `true` unless the host is configured for `always` (unset means `auto`: the safe choice).
#[inline(always)]
pub fn mode_is_auto() -> bool {
    match SETTINGS.get(0) {
        Some(s) => s.mode != MODE_ALWAYS,
        None => true,
    }
}
