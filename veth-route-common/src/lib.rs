//! Map key/value types shared by the kernel programs and the userspace loader.
//!
//! Every type is `#[repr(C)]` without padding so the kernel, `bpftool` (through BTF) and
//! userspace agree byte for byte. Addresses are stored in network byte order.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Version of the pinned layout; part of the pin path (`<bpfPinDir>/v2/`), bumped whenever a
/// map's key or value changes, because aya reuses pinned maps by name without checking sizes.
/// v2: the `flows` map, egress programs, four counter slots.
pub const PIN_LAYOUT_VERSION: u32 = 2;

/// Pinned map names, shared by the programs' BTF and the userspace pins.
pub mod map_names {
    /// Pod IPv4 address -> where and how to deliver it.
    pub const ENDPOINTS: &str = "endpoints";
    /// Host veth ifindex -> the only source address its pod may use.
    pub const SOURCES: &str = "sources";
    /// Host veth ifindex -> the IPv6 address of its dual-stack pod (no entry: IPv4-only).
    pub const SOURCES6: &str = "sources6";
    /// Host-wide settings (index 0).
    pub const SETTINGS: &str = "settings";
    /// Per-CPU counters, one slot per program (see [`super::CounterSlot`]).
    pub const COUNTERS: &str = "counters";
    /// Flow 5-tuple -> whether the kernel delivered it untranslated (see [`super::FlowKey`]).
    pub const FLOWS: &str = "flows";
    /// Pod IPv6 address -> where to deliver it (the [`super::Endpoint`] of its pod).
    pub const ENDPOINTS6: &str = "endpoints6";
    /// IPv6 flow 5-tuple -> as `flows` (see [`super::FlowKey6`]).
    pub const FLOWS6: &str = "flows6";
}

/// Key of the `endpoints` map: a pod's IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct EndpointKey {
    /// IPv4 address, network byte order (the packet's bytes).
    pub ip: [u8; 4],
}

/// Key of the `endpoints6` map: a dual-stack pod's IPv6 address. The value is the same
/// [`Endpoint`] as under the pod's IPv4 address. Maps of their own (as `sources6`), so the
/// pinned maps of older builds keep their sizes and only gain new ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct EndpointKey6 {
    /// IPv6 address, network byte order (the packet's bytes).
    pub ip: [u8; 16],
}

/// Value of the `endpoints` map: everything the redirect needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    /// Host-side veth; `bpf_redirect_peer` delivers into its pod-side peer.
    pub ifindex: u32,
    /// MAC of the pod's interface (new destination MAC).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (new source MAC, as if the host had routed it).
    pub host_mac: [u8; 6],
}

/// Value of the `sources` map (key: host veth ifindex, `u32`): the pod behind that host veth.
/// Also what a redirect checks before it delivers to the veth: the entry must name the
/// destination, so an endpoint whose veth is gone or reused is never delivered to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PodSource {
    /// The pod's IPv4 address, network byte order.
    pub ip: [u8; 4],
    /// `SOURCE_F_*` bits.
    pub flags: u32,
}

/// Value of the `sources6` map (key: host veth ifindex, `u32`): the IPv6 address of the
/// dual-stack pod behind that host veth. A map of its own rather than a field of
/// [`PodSource`], whose size older builds' pinned maps fix: an IPv4-only pod has no entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PodSource6 {
    /// The pod's IPv6 address, network byte order.
    pub ip: [u8; 16],
}

/// Drop packets from this pod whose source is not [`PodSource::ip`], and IPv6 other than
/// link-local neighbour discovery and MLD unless it comes from the address in its
/// [`PodSource6`] entry (a dual-stack pod) or stays between link-local addresses.
pub const SOURCE_F_ANTI_SPOOF: u32 = 1;
/// This pod's network redirects only verified flows (`fastPath: auto`).
pub const SOURCE_F_MODE_AUTO: u32 = 2;
/// This pod's network redirects every endpoint hit (`fastPath: always`).
/// Neither mode bit (an entry written before modes were per network): the `settings` map's.
pub const SOURCE_F_MODE_ALWAYS: u32 = 4;

/// Key of the `flows` map: one direction of a TCP or UDP flow, as the packet carries it.
///
/// Bytes in network order; `proto` is the IP protocol number, `pad` is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

impl FlowKey {
    /// The other direction of the same flow.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey { saddr: self.daddr, daddr: self.saddr, sport: self.dport, dport: self.sport, proto: self.proto, pad: [0; 3] }
    }
}

/// Key of the `flows6` map: one direction of a TCP or UDP flow over IPv6, as [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

impl FlowKey6 {
    /// The other direction of the same flow.
    pub const fn reversed(&self) -> FlowKey6 {
        FlowKey6 { saddr: self.daddr, daddr: self.saddr, sport: self.dport, dport: self.sport, proto: self.proto, pad: [0; 3] }
    }
}

/// Value of the `flows` and `flows6` maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowState {
    /// `FLOW_PENDING` or `FLOW_VERIFIED`.
    pub state: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// An ingress program handed a packet of this direction to the kernel and waits to see it
/// come out at an egress program unchanged.
pub const FLOW_PENDING: u32 = 1;
/// The kernel delivered this flow untranslated (no NAT): both directions may bypass it.
pub const FLOW_VERIFIED: u32 = 2;

/// Bit of `skb->mark` that `route_out` sets on packets it redirects to an uplink, so the
/// uplink's egress program can tell them from packets the kernel forwarded (it clears it).
pub const MARK_REDIRECTED: u32 = 0x0080_0000;

/// Value of the `settings` map (single entry, index 0): the redirect mode of pods whose
/// `sources` entry carries no mode bit (written by an older build, which kept one mode per
/// pin directory). Current builds never write it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Settings {
    /// One of the `MODE_*` constants; 0 (unset) behaves as [`MODE_AUTO`].
    pub mode: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Redirect only flows the kernel was seen to deliver untranslated.
pub const MODE_AUTO: u32 = 1;
/// Redirect every endpoint-map hit.
pub const MODE_ALWAYS: u32 = 2;

/// Index into the `counters` map: which program counted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterSlot {
    /// tc ingress of a host veth (packets leaving a pod).
    FromPod = 0,
    /// tc ingress of an uplink (packets arriving from the network).
    FromUplink = 1,
    /// tc egress of a host veth (packets the kernel delivers to a pod).
    ToPod = 2,
    /// tc egress of an uplink (packets leaving the VM).
    ToUplink = 3,
}

/// Number of slots in the `counters` map.
pub const COUNTER_SLOTS: u32 = 4;

/// Per-CPU packet counters; `pass_*` went to the kernel path, `drop_*` were dropped.
/// Ingress programs count verdicts; egress programs count `flows_*` only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    /// Redirected straight into a pod with `bpf_redirect_peer`.
    pub redirected: u64,
    /// `from_pod`: packet of a verified flow sent out of the VM after a FIB lookup.
    pub redirected_out: u64,
    /// Neither IPv4 nor IPv6 (ARP...), or a VLAN-tagged frame (802.1Q/802.1ad: the tag
    /// names another network, so the frame is the kernel's).
    pub pass_not_ip: u64,
    /// IPv6 the fast path leaves to the kernel: ICMPv6 (neighbour discovery, MLD, errors),
    /// extension headers, link-scope or multicast addresses.
    pub pass_ipv6: u64,
    /// Truncated or malformed IPv4 header (from an uplink; from a pod that is a drop).
    pub pass_malformed: u64,
    /// IPv4 header with options.
    pub pass_ip_options: u64,
    /// IPv4 fragment, or IPv6 with a fragment header.
    pub pass_fragment: u64,
    /// TTL (IPv6: hop limit) <= 1: the kernel sends the ICMP time-exceeded.
    pub pass_ttl: u64,
    /// Destination is neither a pod of this host nor part of a verified flow.
    pub pass_not_local: u64,
    /// `auto`: first packet of a flow; the kernel routes it (policy, NAT) and the egress
    /// programs watch whether it comes out untranslated.
    pub pass_new_flow: u64,
    /// `auto`: a flow the kernel owns (it translated it, or has not delivered it yet).
    pub pass_kernel_flow: u64,
    /// `auto`: not TCP or UDP (ICMP...): the kernel decides.
    pub pass_untracked_proto: u64,
    /// The redirect could not be done; the kernel routes the packet: the FIB lookup or the
    /// helper failed, the target host veth is gone or now another pod's, or the packet is
    /// larger than the target's MTU (the kernel sends the ICMP "fragmentation needed").
    pub pass_redirect_failed: u64,
    /// Source is not the sending pod's (IPv4, or IPv6 of a dual-stack pod).
    pub drop_spoofed: u64,
    /// IPv6 from an IPv4-only pod other than link-local neighbour discovery and MLD.
    pub drop_ipv6: u64,
    /// From a pod: a frame whose headers cannot be checked (truncated, not ARP/IPv4/IPv6).
    pub drop_malformed: u64,
    /// Egress: a pending flow came out untranslated and became verified (both directions).
    pub flows_verified: u64,
    /// Egress: the kernel delivered a verified flow's tuple the fast path did not send
    /// (the tuple was reused by a translated flow); its state was removed.
    pub flows_demoted: u64,
}

impl Counters {
    /// Sum of all `pass_*` counters.
    pub fn passed(&self) -> u64 {
        self.pass_not_ip
            + self.pass_ipv6
            + self.pass_malformed
            + self.pass_ip_options
            + self.pass_fragment
            + self.pass_ttl
            + self.pass_not_local
            + self.pass_new_flow
            + self.pass_kernel_flow
            + self.pass_untracked_proto
            + self.pass_redirect_failed
    }

    /// Sum of all `drop_*` counters.
    pub fn dropped(&self) -> u64 {
        self.drop_spoofed + self.drop_ipv6 + self.drop_malformed
    }

    /// Field-wise sum, used to fold the per-CPU values.
    pub fn add(&mut self, o: &Counters) {
        let mine: &mut [u64] = bytemuck::cast_slice_mut(core::slice::from_mut(self));
        let theirs: &[u64] = bytemuck::cast_slice(core::slice::from_ref(o));
        for (m, t) in mine.iter_mut().zip(theirs) {
            *m += t;
        }
    }

    /// `(name, value)` pairs in declaration order, for printing.
    pub fn fields(&self) -> [(&'static str, u64); 18] {
        [
            ("redirected", self.redirected),
            ("redirected_out", self.redirected_out),
            ("pass_not_ip", self.pass_not_ip),
            ("pass_ipv6", self.pass_ipv6),
            ("pass_malformed", self.pass_malformed),
            ("pass_ip_options", self.pass_ip_options),
            ("pass_fragment", self.pass_fragment),
            ("pass_ttl", self.pass_ttl),
            ("pass_not_local", self.pass_not_local),
            ("pass_new_flow", self.pass_new_flow),
            ("pass_kernel_flow", self.pass_kernel_flow),
            ("pass_untracked_proto", self.pass_untracked_proto),
            ("pass_redirect_failed", self.pass_redirect_failed),
            ("drop_spoofed", self.drop_spoofed),
            ("drop_ipv6", self.drop_ipv6),
            ("drop_malformed", self.drop_malformed),
            ("flows_verified", self.flows_verified),
            ("flows_demoted", self.flows_demoted),
        ]
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), padding-free and valid for any bit pattern (bytemuck::Pod).
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::PodSource {}
    unsafe impl aya::Pod for super::PodSource6 {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::EndpointKey6 {}
    unsafe impl aya::Pod for super::FlowKey6 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_summed_and_folded() {
        let n = core::mem::size_of::<Counters>() / 8;
        let mut c = Counters::default();
        // Set each u64 to a distinct power of two through the raw bytes.
        let words: &mut [u64] = bytemuck::cast_slice_mut(core::slice::from_mut(&mut c));
        for (i, w) in words.iter_mut().enumerate() {
            *w = 1 << i;
        }
        assert_eq!(c.fields().len(), n, "fields() must list every counter");
        let listed: u64 = c.fields().iter().map(|(_, v)| v).sum();
        assert_eq!(listed, (1u64 << n) - 1, "fields() must list each counter once");
        assert_eq!(
            c.passed() + c.dropped() + c.redirected + c.redirected_out + c.flows_verified + c.flows_demoted,
            listed,
            "passed() and dropped() must sum every pass_* and drop_*"
        );
        let mut total = Counters::default();
        total.add(&c);
        total.add(&c);
        assert_eq!(total.fields().iter().map(|(_, v)| v).sum::<u64>(), 2 * listed, "add() must fold every counter");
    }

    #[test]
    fn reversing_a_flow_twice_is_the_flow() {
        let k = FlowKey { saddr: [10, 0, 0, 1], daddr: [10, 0, 0, 2], sport: [0x1f, 0x90], dport: [0, 80], proto: 6, pad: [0; 3] };
        assert_eq!(k.reversed().saddr, k.daddr);
        assert_eq!(k.reversed().sport, k.dport);
        assert_eq!(k.reversed().reversed(), k);
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        let k6 = FlowKey6 { saddr: a, daddr: [1; 16], sport: [0x1f, 0x90], dport: [0, 80], proto: 17, pad: [0; 3] };
        assert_eq!(k6.reversed().saddr, k6.daddr);
        assert_eq!(k6.reversed().dport, k6.sport);
        assert_eq!(k6.reversed().reversed(), k6);
    }

    #[test]
    fn map_values_have_the_sizes_the_kernel_sees() {
        assert_eq!(core::mem::size_of::<EndpointKey>(), 4);
        assert_eq!(core::mem::size_of::<Endpoint>(), 16);
        assert_eq!(core::mem::size_of::<PodSource>(), 8);
        assert_eq!(core::mem::size_of::<PodSource6>(), 16);
        assert_eq!(core::mem::size_of::<Settings>(), 8);
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::size_of::<FlowState>(), 8);
        assert_eq!(core::mem::size_of::<EndpointKey6>(), 16);
        assert_eq!(core::mem::size_of::<FlowKey6>(), 40);
        assert_eq!(core::mem::size_of::<Counters>(), 18 * 8);
    }
}
