//! Map key/value types shared by the kernel programs and the userspace loader.
//!
//! Every type is `#[repr(C)]` without padding so the kernel, `bpftool` (through BTF) and
//! userspace agree byte for byte. Addresses are stored in network byte order.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Version of the pinned layout; part of the pin path (`<bpfPinDir>/v1/`), bumped whenever a
/// map's key or value changes, because aya reuses pinned maps by name without checking sizes.
pub const PIN_LAYOUT_VERSION: u32 = 1;

/// Pinned map names, shared by the programs' BTF and the userspace pins.
pub mod map_names {
    /// Pod IPv4 address -> where and how to deliver it.
    pub const ENDPOINTS: &str = "endpoints";
    /// Host veth ifindex -> the only source address its pod may use.
    pub const SOURCES: &str = "sources";
    /// Host-wide settings (index 0).
    pub const SETTINGS: &str = "settings";
    /// Per-CPU counters, one slot per program (see [`super::CounterSlot`]).
    pub const COUNTERS: &str = "counters";
}

/// Key of the `endpoints` map: a pod's IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct EndpointKey {
    /// IPv4 address, network byte order (the packet's bytes).
    pub ip: [u8; 4],
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

/// Value of the `sources` map (key: host veth ifindex, `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PodSource {
    /// The pod's IPv4 address, network byte order.
    pub ip: [u8; 4],
    /// `SOURCE_F_*` bits.
    pub flags: u32,
}

/// Drop IPv4 packets from this pod whose source is not [`PodSource::ip`].
pub const SOURCE_F_ANTI_SPOOF: u32 = 1;

/// Value of the `settings` map (single entry, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Settings {
    /// One of the `MODE_*` constants; 0 (unset) behaves as [`MODE_AUTO`].
    pub mode: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Redirect only flows conntrack does not NAT.
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
}

/// Number of slots in the `counters` map.
pub const COUNTER_SLOTS: u32 = 2;

/// Per-CPU packet counters; `pass_*` went to the kernel path, `drop_*` were dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    /// Redirected straight into a pod with `bpf_redirect_peer`.
    pub redirected: u64,
    /// `from_pod`, `auto`: reply of a flow whose other direction bypassed the kernel, sent
    /// out of the VM after a FIB lookup (`bpf_redirect`), so conntrack never sees half a flow.
    pub redirected_out: u64,
    /// Not IPv4 (ARP, IPv6, VLAN...).
    pub pass_not_ipv4: u64,
    /// Truncated or malformed IPv4 header.
    pub pass_malformed: u64,
    /// IPv4 header with options.
    pub pass_ip_options: u64,
    /// IPv4 fragment.
    pub pass_fragment: u64,
    /// TTL <= 1: the kernel sends the ICMP time-exceeded.
    pub pass_ttl: u64,
    /// Destination is not a pod of this host.
    pub pass_not_local: u64,
    /// `auto`: conntrack has a NATed connection for the flow.
    pub pass_nat: u64,
    /// `auto`: conntrack tracks this TCP connection (the kernel saw it first), so both
    /// directions stay with the kernel.
    pub pass_tracked: u64,
    /// `auto`: first UDP packet of a flow from outside; left to conntrack so the pod's
    /// replies match it (and are not masqueraded as new flows).
    pub pass_new_flow: u64,
    /// `auto`: protocol conntrack lookups cannot cover (ICMP...), kernel decides.
    pub pass_untracked_proto: u64,
    /// `bpf_redirect_peer` refused the packet.
    pub pass_redirect_failed: u64,
    /// Source address is not the sending pod's.
    pub drop_spoofed: u64,
}

impl Counters {
    /// Sum of all `pass_*` counters.
    pub fn passed(&self) -> u64 {
        self.pass_not_ipv4
            + self.pass_malformed
            + self.pass_ip_options
            + self.pass_fragment
            + self.pass_ttl
            + self.pass_not_local
            + self.pass_nat
            + self.pass_tracked
            + self.pass_new_flow
            + self.pass_untracked_proto
            + self.pass_redirect_failed
    }

    /// Field-wise sum, used to fold the per-CPU values.
    pub fn add(&mut self, o: &Counters) {
        self.redirected += o.redirected;
        self.redirected_out += o.redirected_out;
        self.pass_not_ipv4 += o.pass_not_ipv4;
        self.pass_malformed += o.pass_malformed;
        self.pass_ip_options += o.pass_ip_options;
        self.pass_fragment += o.pass_fragment;
        self.pass_ttl += o.pass_ttl;
        self.pass_not_local += o.pass_not_local;
        self.pass_nat += o.pass_nat;
        self.pass_tracked += o.pass_tracked;
        self.pass_new_flow += o.pass_new_flow;
        self.pass_untracked_proto += o.pass_untracked_proto;
        self.pass_redirect_failed += o.pass_redirect_failed;
        self.drop_spoofed += o.drop_spoofed;
    }

    /// `(name, value)` pairs in declaration order, for printing.
    pub fn fields(&self) -> [(&'static str, u64); 14] {
        [
            ("redirected", self.redirected),
            ("redirected_out", self.redirected_out),
            ("pass_not_ipv4", self.pass_not_ipv4),
            ("pass_malformed", self.pass_malformed),
            ("pass_ip_options", self.pass_ip_options),
            ("pass_fragment", self.pass_fragment),
            ("pass_ttl", self.pass_ttl),
            ("pass_not_local", self.pass_not_local),
            ("pass_nat", self.pass_nat),
            ("pass_tracked", self.pass_tracked),
            ("pass_new_flow", self.pass_new_flow),
            ("pass_untracked_proto", self.pass_untracked_proto),
            ("pass_redirect_failed", self.pass_redirect_failed),
            ("drop_spoofed", self.drop_spoofed),
        ]
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), padding-free and valid for any bit pattern (bytemuck::Pod).
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::PodSource {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counters {}
}

/// Placeholders for kfunc calls the loader patches (aya 0.14 cannot relocate kfunc calls).
///
/// The programs emit each kfunc call as `BPF_JMP|BPF_CALL` (0x85) with
/// `src_reg = BPF_PSEUDO_KFUNC_CALL` (regs byte 0x20), `off = 0` and `imm` = the placeholder;
/// userspace rewrites `imm` to the kfunc's BTF id in `/sys/kernel/btf/vmlinux`.
pub mod kfunc {
    /// `bpf_skb_ct_lookup`.
    pub const CT_LOOKUP_PLACEHOLDER: i32 = 0x7e57_c701;
    /// `bpf_ct_release`.
    pub const CT_RELEASE_PLACEHOLDER: i32 = 0x7e57_c702;

    /// The 8 bytes of a placeholder call instruction (little-endian BPF).
    pub const fn call_insn(placeholder: i32) -> [u8; 8] {
        let imm = placeholder.to_le_bytes();
        [0x85, 0x20, 0x00, 0x00, imm[0], imm[1], imm[2], imm[3]]
    }
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
        assert_eq!(c.passed() + c.redirected + c.redirected_out + c.drop_spoofed, listed, "passed() must sum every pass_*");
        let mut total = Counters::default();
        total.add(&c);
        total.add(&c);
        assert_eq!(total.fields().iter().map(|(_, v)| v).sum::<u64>(), 2 * listed, "add() must fold every counter");
    }

    #[test]
    fn map_values_have_the_sizes_the_kernel_sees() {
        assert_eq!(core::mem::size_of::<EndpointKey>(), 4);
        assert_eq!(core::mem::size_of::<Endpoint>(), 16);
        assert_eq!(core::mem::size_of::<PodSource>(), 8);
        assert_eq!(core::mem::size_of::<Settings>(), 8);
    }
}
