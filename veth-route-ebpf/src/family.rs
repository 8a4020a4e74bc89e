//! What differs between IPv4 and IPv6 when a packet is forwarded: the header it is checked
//! by, the maps its destination pod and its flow are found in, the hop count and the FIB
//! query. `forward`, `flows` and `redirect` are written once, for any [`Family`].

use aya_ebpf::{
    bindings::{bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    programs::TcContext,
};
use veth_route_common::{FlowKey, FlowKey6};

use crate::{
    flows,
    maps::{self, LocalPod},
    packet::{EthHdr, Ipv4Packet, Ipv6Packet, NotForwardable, IPPROTO_TCP, IPPROTO_UDP},
    redirect::FibLookup,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A parsed packet of one IP family, as the forwarding steps need it.
pub trait Family {
    /// Its key in the family's flow map.
    type Flow: flows::Flow;

    fn eth(&self) -> *mut EthHdr;
    /// Whether a router may forward it without the kernel's help.
    fn forwardable(&self, ctx: &TcContext) -> Result<(), NotForwardable>;
    /// Whether the transport header sits right behind the fixed IP header.
    fn plain(&self, ctx: &TcContext) -> Result<(), NotForwardable>;
    /// The local pod it is addressed to.
    fn local_pod(&self) -> Option<LocalPod>;
    /// The flow of a TCP or UDP packet.
    fn flow(&self, ctx: &TcContext) -> Option<Self::Flow>;
    /// TCP flags, for a plain TCP packet.
    fn tcp_flags(&self, ctx: &TcContext) -> Option<u8>;
    /// Whether this is an ICMP error about a verified flow (see `flows`).
    fn quotes_verified_flow(&self, ctx: &TcContext) -> bool;
    /// TTL or hop limit - 1 (after [`Self::forwardable`]).
    fn decrement_hop(&self);
    /// The FIB query for its destination, entering on `ifindex`.
    fn fib_query(&self, ifindex: u32) -> FibLookup;
    /// The next hop a FIB answer names, for `bpf_redirect_neigh`.
    fn next_hop(fib: &FibLookup) -> bpf_redir_neigh;
}

impl Family for Ipv4Packet {
    type Flow = FlowKey;

    #[inline(always)]
    fn eth(&self) -> *mut EthHdr {
        self.eth
    }
    #[inline(always)]
    fn forwardable(&self, _ctx: &TcContext) -> Result<(), NotForwardable> {
        Ipv4Packet::forwardable(self)
    }
    #[inline(always)]
    fn plain(&self, _ctx: &TcContext) -> Result<(), NotForwardable> {
        Ipv4Packet::plain(self)
    }
    #[inline(always)]
    fn local_pod(&self) -> Option<LocalPod> {
        maps::local_pod(self.daddr())
    }
    #[inline(always)]
    fn flow(&self, ctx: &TcContext) -> Option<FlowKey> {
        let proto = self.proto();
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return None;
        }
        let (sport, dport) = self.ports(ctx)?;
        Some(FlowKey { saddr: self.saddr(), daddr: self.daddr(), sport, dport, proto, pad: [0; 3] })
    }
    #[inline(always)]
    fn tcp_flags(&self, ctx: &TcContext) -> Option<u8> {
        Ipv4Packet::tcp_flags(self, ctx)
    }
    #[inline(always)]
    fn quotes_verified_flow(&self, ctx: &TcContext) -> bool {
        self.icmp_error_quote(ctx).is_some_and(|q| flows::quoted_flow_verified(&q))
    }
    #[inline(always)]
    fn decrement_hop(&self) {
        self.decrement_ttl();
    }
    #[inline(always)]
    fn fib_query(&self, ifindex: u32) -> FibLookup {
        let (mut src, mut dst) = ([0; 16], [0; 16]);
        src[..4].copy_from_slice(&self.saddr());
        dst[..4].copy_from_slice(&self.daddr());
        FibLookup::new(AF_INET, self.proto(), ifindex, src, dst)
    }
    #[inline(always)]
    fn next_hop(fib: &FibLookup) -> bpf_redir_neigh {
        let nh = [fib.dst[0], fib.dst[1], fib.dst[2], fib.dst[3]];
        bpf_redir_neigh { nh_family: AF_INET as u32, __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: u32::from_ne_bytes(nh) } }
    }
}

impl Family for Ipv6Packet {
    type Flow = FlowKey6;

    #[inline(always)]
    fn eth(&self) -> *mut EthHdr {
        self.eth
    }
    #[inline(always)]
    fn forwardable(&self, ctx: &TcContext) -> Result<(), NotForwardable> {
        Ipv6Packet::forwardable(self, ctx)
    }
    #[inline(always)]
    fn plain(&self, ctx: &TcContext) -> Result<(), NotForwardable> {
        Ipv6Packet::plain(self, ctx)
    }
    #[inline(always)]
    fn local_pod(&self) -> Option<LocalPod> {
        maps::local_pod6(self.daddr())
    }
    #[inline(always)]
    fn flow(&self, ctx: &TcContext) -> Option<FlowKey6> {
        // `plain` is checked first by every caller: no extension header in front.
        let proto = self.next_header();
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return None;
        }
        let (sport, dport) = self.ports(ctx)?;
        Some(FlowKey6 { saddr: self.saddr(), daddr: self.daddr(), sport, dport, proto, pad: [0; 3] })
    }
    #[inline(always)]
    fn tcp_flags(&self, ctx: &TcContext) -> Option<u8> {
        Ipv6Packet::tcp_flags(self, ctx)
    }
    #[inline(always)]
    fn quotes_verified_flow(&self, ctx: &TcContext) -> bool {
        self.icmp_error_quote(ctx).is_some_and(|q| flows::quoted_flow_verified(&q))
    }
    #[inline(always)]
    fn decrement_hop(&self) {
        self.decrement_hop_limit();
    }
    #[inline(always)]
    fn fib_query(&self, ifindex: u32) -> FibLookup {
        FibLookup::new(AF_INET6, self.next_header(), ifindex, self.saddr(), self.daddr())
    }
    #[inline(always)]
    fn next_hop(fib: &FibLookup) -> bpf_redir_neigh {
        let d = &fib.dst;
        let word = |i: usize| u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        bpf_redir_neigh {
            nh_family: AF_INET6 as u32,
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv6_nh: [word(0), word(4), word(8), word(12)] },
        }
    }
}
