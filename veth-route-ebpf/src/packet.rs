//! Parsing: Ethernet, then IPv4 or IPv6, by direct packet access, with the bounds check the
//! verifier needs right next to each access.
//!
//! Header structs are byte arrays only (alignment 1): the kernel guarantees no alignment for
//! packet data, so a `u16`/`u32` field read through a packet pointer could be misaligned.

use aya_ebpf::programs::TcContext;
use veth_route_common::{FlowKey, FlowKey6};

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
/// Bytes we want in the linear area: Ethernet + IPv4 without options + TCP through its flags.
const WANT_LINEAR: usize = ETH_HLEN + IPV4_HLEN + 14;
/// The same for IPv6 without extension headers.
const WANT_LINEAR6: usize = ETH_HLEN + IPV6_HLEN + 14;
/// IPv6 next header: a fragment header.
const IPPROTO_FRAGMENT: u8 = 44;
/// More-fragments flag and fragment offset.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    /// As on the wire (network order).
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The start of a TCP or UDP header: both begin with the ports.
#[repr(C)]
pub struct L4Ports {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

/// TCP header through the flags byte.
#[repr(C)]
struct TcpHead {
    ports: L4Ports,
    seq: [u8; 4],
    ack_seq: [u8; 4],
    data_offset: u8,
    flags: u8,
}

/// Where an ICMP error quotes the offending packet: behind the 8-byte ICMP header.
const ICMP_QUOTE: usize = ETH_HLEN + IPV4_HLEN + 8;

/// The start of the packet an ICMP error quotes: its IPv4 header and its ports.
#[repr(C)]
struct Quoted {
    ip: Ipv4Hdr,
    ports: L4Ports,
}

/// Where an ICMPv6 error quotes the offending packet: behind the 8-byte ICMPv6 header.
const ICMPV6_QUOTE: usize = ETH_HLEN + IPV6_HLEN + 8;

/// The start of the packet an ICMPv6 error quotes.
#[repr(C)]
struct Quoted6 {
    ip: Ipv6Hdr,
    ports: L4Ports,
}

/// What a frame carries, as far as the programs care.
pub enum Frame {
    Ipv4(Ipv4Packet),
    Ipv6(Ipv6Packet),
    Arp,
    /// Any other EtherType (VLAN tags, LLDP...).
    Other,
}

/// An IPv4 packet whose Ethernet and IPv4 (fixed part) headers are in bounds.
pub struct Ipv4Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
}

/// An IPv6 packet whose Ethernet and IPv6 fixed headers are in bounds.
pub struct Ipv6Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv6Hdr,
}

/// Pointer to a `T` at `offset` into the packet, if it lies entirely before `data_end`.
#[inline(always)]
pub fn header<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

/// Whether the frame came with a VLAN tag (802.1Q or 802.1ad). The kernel moves the outer
/// tag out of the packet data into the skb before tc ingress, so the data looks untagged:
/// only this says the frame belongs to another network (a trunk's subport).
#[inline(always)]
pub fn vlan_tagged(ctx: &TcContext) -> bool {
    // SAFETY: reading a field of the context the kernel passed in.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// Parse the frame; `None` when its headers are truncated or not what they claim.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Frame> {
    // Headers may sit in paged data (e.g. GRO'd skbs); make them direct-accessible (the
    // pull invalidates packet pointers, so the EtherType is copied out first). A frame
    // shorter than that fails the pull, and the bounds checks below decide.
    let proto: [u8; 2] = ctx.load(12).ok()?;
    let want = if proto == ETH_P_IPV6 { WANT_LINEAR6 } else { WANT_LINEAR };
    if ctx.data() + want > ctx.data_end() {
        let _ = ctx.pull_data(want as u32);
    }
    let eth: *mut EthHdr = header(ctx, 0)?;
    if proto == ETH_P_IP {
        let ip: *mut Ipv4Hdr = header(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by `header`; all fields are bytes (alignment 1).
        if unsafe { (*ip).ver_ihl } >> 4 != 4 {
            return None;
        }
        Some(Frame::Ipv4(Ipv4Packet { eth, ip }))
    } else if proto == ETH_P_IPV6 {
        let ip: *mut Ipv6Hdr = header(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        if unsafe { (*ip).ver_tc_flow[0] } >> 4 != 6 {
            return None;
        }
        Some(Frame::Ipv6(Ipv6Packet { eth, ip }))
    } else if proto == ETH_P_ARP {
        Some(Frame::Arp)
    } else {
        Some(Frame::Other)
    }
}

/// Why a packet cannot be forwarded by the programs (the kernel must see it).
pub enum NotForwardable {
    Options,
    Fragment,
    Ttl,
    /// IPv6 that is not plain TCP or UDP between routable addresses: ICMPv6 (neighbour
    /// discovery, MLD, errors), extension headers, link-scope or multicast addresses.
    Ipv6KernelOnly,
}

impl Ipv4Packet {
    #[inline(always)]
    pub fn saddr(&self) -> [u8; 4] {
        // SAFETY: in bounds since `parse`; no helper that moves packet data ran since.
        unsafe { (*self.ip).saddr }
    }

    #[inline(always)]
    pub fn daddr(&self) -> [u8; 4] {
        // SAFETY: as in `saddr`.
        unsafe { (*self.ip).daddr }
    }

    #[inline(always)]
    pub fn proto(&self) -> u8 {
        // SAFETY: as in `saddr`.
        unsafe { (*self.ip).proto }
    }

    /// Whether a router may forward this packet without the kernel's help: [`Self::plain`],
    /// and a TTL that survives the decrement (else the kernel must answer with ICMP time
    /// exceeded).
    #[inline(always)]
    pub fn forwardable(&self) -> Result<(), NotForwardable> {
        self.plain()?;
        // SAFETY: as in `saddr`.
        if unsafe { (*self.ip).ttl } <= 1 {
            return Err(NotForwardable::Ttl);
        }
        Ok(())
    }

    /// No IP options and not a fragment: the ports sit right behind the 20-byte header.
    #[inline(always)]
    pub fn plain(&self) -> Result<(), NotForwardable> {
        // SAFETY: as in `saddr`.
        let ip = unsafe { &*self.ip };
        if ip.ver_ihl & 0x0f != 5 {
            return Err(NotForwardable::Options);
        }
        if u16::from_be_bytes(ip.frag_off) & IP_MF_OFFSET_MASK != 0 {
            return Err(NotForwardable::Fragment);
        }
        Ok(())
    }

    /// For an ICMP error (destination unreachable, time exceeded, parameter problem) about a
    /// TCP or UDP packet that this packet's destination sent: that packet's flow. The quote is read with `bpf_skb_load_bytes` (it may lie beyond the linear
    /// area); a quote with IP options or of a non-first fragment carries no ports here.
    #[inline(always)]
    pub fn icmp_error_quote(&self, ctx: &TcContext) -> Option<FlowKey> {
        if self.proto() != IPPROTO_ICMP {
            return None;
        }
        let ty: u8 = ctx.load(ETH_HLEN + IPV4_HLEN).ok()?;
        // Destination unreachable (with "fragmentation needed"), time exceeded, parameter
        // problem: the errors that quote the packet they are about.
        if !matches!(ty, 3 | 11 | 12) {
            return None;
        }
        let q: Quoted = ctx.load(ICMP_QUOTE).ok()?;
        let plain = q.ip.ver_ihl == 0x45 && u16::from_be_bytes(q.ip.frag_off) & 0x1fff == 0;
        // An error goes back to whoever sent the quoted packet; anything else is not about
        // one of that host's flows.
        if !plain || (q.ip.proto != IPPROTO_TCP && q.ip.proto != IPPROTO_UDP) || q.ip.saddr != self.daddr() {
            return None;
        }
        Some(FlowKey { saddr: q.ip.saddr, daddr: q.ip.daddr, sport: q.ports.sport, dport: q.ports.dport, proto: q.ip.proto, pad: [0; 3] })
    }

    /// TTL - 1 with the incremental checksum update of RFC 1141, as `ip_decrease_ttl` does:
    /// the TTL is the high byte of its 16-bit word, so the sum grows by 0x0100.
    #[inline(always)]
    pub fn decrement_ttl(&self) {
        // SAFETY: in bounds since `parse`; byte fields only.
        unsafe {
            let ip = &mut *self.ip;
            let mut check = u16::from_ne_bytes(ip.check) as u32;
            check += (0x0100u16).to_be() as u32;
            ip.check = ((check + (check >= 0xffff) as u32) as u16).to_ne_bytes();
            ip.ttl -= 1;
        }
    }

    /// TCP flags, for a TCP packet whose IPv4 header has no options.
    #[inline(always)]
    pub fn tcp_flags(&self, ctx: &TcContext) -> Option<u8> {
        tcp_flags_at(ctx, ETH_HLEN + IPV4_HLEN)
    }

    /// TCP/UDP ports as on the wire, for a header without options.
    #[inline(always)]
    pub fn ports(&self, ctx: &TcContext) -> Option<([u8; 2], [u8; 2])> {
        ports_at(ctx, ETH_HLEN + IPV4_HLEN)
    }
}

/// TCP/UDP ports as on the wire, of a transport header at `offset`.
#[inline(always)]
fn ports_at(ctx: &TcContext, offset: usize) -> Option<([u8; 2], [u8; 2])> {
    let p: *const L4Ports = header(ctx, offset)?;
    // SAFETY: bounds checked by `header`; byte fields only.
    Some(unsafe { ((*p).sport, (*p).dport) })
}

/// TCP flags, of a TCP header at `offset`.
#[inline(always)]
fn tcp_flags_at(ctx: &TcContext, offset: usize) -> Option<u8> {
    let t: *const TcpHead = header(ctx, offset)?;
    // SAFETY: bounds checked by `header`; byte fields only.
    Some(unsafe { (*t).flags })
}

/// ICMPv6 types an IPv4-only pod may send: MLD query/report/done (130-132), router and
/// neighbour solicitation (133, 135), neighbour advertisement (136), MLDv2 report (143).
const ICMPV6_LINK_LOCAL_TYPES: [u8; 7] = [130, 131, 132, 133, 135, 136, 143];
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMPV6: u8 = 58;

/// Whether the ICMPv6 message behind a fixed IPv6 header is an error that quotes a packet:
/// destination unreachable, packet too big, time exceeded, parameter problem (types 1-4).
#[inline(always)]
fn icmpv6_error(ctx: &TcContext) -> bool {
    matches!(ctx.load::<u8>(ETH_HLEN + IPV6_HLEN), Ok(1..=4))
}

/// Whether two IPv6 addresses are equal, byte by byte (no memcmp in a BPF program).
#[inline(always)]
pub fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// fe80::/10.
#[inline(always)]
fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// A destination that never leaves the link: link-local unicast, or multicast of
/// link-local scope (ffx2::/16).
#[inline(always)]
fn is_link_scope(a: &[u8; 16]) -> bool {
    is_link_local(a) || (a[0] == 0xff && a[1] & 0x0f == 0x02)
}

impl Ipv6Packet {
    #[inline(always)]
    pub fn saddr(&self) -> [u8; 16] {
        // SAFETY: in bounds since `parse`; no helper that moves packet data ran since.
        unsafe { (*self.ip).saddr }
    }

    #[inline(always)]
    pub fn daddr(&self) -> [u8; 16] {
        // SAFETY: as in `saddr`.
        unsafe { (*self.ip).daddr }
    }

    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        // SAFETY: as in `saddr`.
        unsafe { (*self.ip).next_header }
    }

    /// As [`Ipv4Packet::forwardable`]: [`Self::plain`], and a hop limit that survives the
    /// decrement.
    #[inline(always)]
    pub fn forwardable(&self, ctx: &TcContext) -> Result<(), NotForwardable> {
        self.plain(ctx)?;
        // SAFETY: as in `saddr`.
        if unsafe { (*self.ip).hop_limit } <= 1 {
            return Err(NotForwardable::Ttl);
        }
        Ok(())
    }

    /// TCP, UDP or an ICMPv6 error right behind the fixed header, between addresses a
    /// router forwards. Other ICMPv6 (neighbour discovery, MLD, echo) stays the kernel's:
    /// neighbour discovery must reach the host's stack.
    #[inline(always)]
    pub fn plain(&self, ctx: &TcContext) -> Result<(), NotForwardable> {
        // SAFETY: as in `saddr`.
        let ip = unsafe { &*self.ip };
        match ip.next_header {
            IPPROTO_TCP | IPPROTO_UDP => {}
            IPPROTO_ICMPV6 if icmpv6_error(ctx) => {}
            IPPROTO_FRAGMENT => return Err(NotForwardable::Fragment),
            _ => return Err(NotForwardable::Ipv6KernelOnly),
        }
        let routable = |a: &[u8; 16]| !is_link_local(a) && a[0] != 0xff;
        if !routable(&ip.saddr) || !routable(&ip.daddr) || same_address(&ip.saddr, &[0; 16]) {
            return Err(NotForwardable::Ipv6KernelOnly);
        }
        Ok(())
    }

    /// For an ICMPv6 error about a TCP or UDP packet that this packet's destination sent:
    /// that packet's flow (see [`Ipv4Packet::icmp_error_quote`]). Only the fixed header is
    /// read: a quote with extension headers carries no ports here.
    #[inline(always)]
    pub fn icmp_error_quote(&self, ctx: &TcContext) -> Option<FlowKey6> {
        if self.next_header() != IPPROTO_ICMPV6 || !icmpv6_error(ctx) {
            return None;
        }
        let q: Quoted6 = ctx.load(ICMPV6_QUOTE).ok()?;
        let proto = q.ip.next_header;
        if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || !same_address(&q.ip.saddr, &self.daddr()) {
            return None;
        }
        Some(FlowKey6 { saddr: q.ip.saddr, daddr: q.ip.daddr, sport: q.ports.sport, dport: q.ports.dport, proto, pad: [0; 3] })
    }

    /// Hop limit - 1 (IPv6 has no header checksum).
    #[inline(always)]
    pub fn decrement_hop_limit(&self) {
        // SAFETY: as in `saddr`.
        unsafe { (*self.ip).hop_limit -= 1 };
    }

    /// TCP/UDP ports as on the wire, behind a fixed header.
    #[inline(always)]
    pub fn ports(&self, ctx: &TcContext) -> Option<([u8; 2], [u8; 2])> {
        ports_at(ctx, ETH_HLEN + IPV6_HLEN)
    }

    /// TCP flags, for a TCP packet behind a fixed header.
    #[inline(always)]
    pub fn tcp_flags(&self, ctx: &TcContext) -> Option<u8> {
        tcp_flags_at(ctx, ETH_HLEN + IPV6_HLEN)
    }

    /// Whether the source is `own`.
    #[inline(always)]
    pub fn from_address(&self, own: &[u8; 16]) -> bool {
        // SAFETY: in bounds since `parse`; byte fields only.
        same_address(unsafe { &(*self.ip).saddr }, own)
    }

    /// Whether both ends are on the link: a link-local source to a link-scope destination.
    /// The kernel never forwards such a packet, so any pod may send it.
    #[inline(always)]
    pub fn stays_on_the_link(&self) -> bool {
        // SAFETY: in bounds since `parse`; byte fields only.
        let ip = unsafe { &*self.ip };
        is_link_local(&ip.saddr) && is_link_scope(&ip.daddr)
    }

    /// Whether this is link-local neighbour discovery or MLD: source link-local or
    /// unspecified (DAD), destination link-local or link-scope multicast, ICMPv6 of an
    /// allowed type (MLD reports come behind one hop-by-hop header, the router alert).
    #[inline(always)]
    pub fn is_link_local_control(&self, ctx: &TcContext) -> bool {
        // SAFETY: in bounds since `parse`; byte fields only.
        let ip = unsafe { &*self.ip };
        let src_ok = is_link_local(&ip.saddr) || ip.saddr == [0; 16];
        if !src_ok || !is_link_scope(&ip.daddr) {
            return false;
        }
        // Behind the fixed header offsets vary: bpf_skb_load_bytes instead of packet
        // pointers, whose variable-offset bounds the verifier cannot always follow.
        let mut offset = ETH_HLEN + IPV6_HLEN;
        let mut next = ip.next_header;
        if next == IPPROTO_HOPOPTS {
            let Ok([nh, len]) = ctx.load::<[u8; 2]>(offset) else { return false };
            next = nh;
            offset += (len as usize + 1) * 8;
        }
        if next != IPPROTO_ICMPV6 {
            return false;
        }
        let Ok(ty) = ctx.load::<u8>(offset) else { return false };
        let mut i = 0;
        while i < ICMPV6_LINK_LOCAL_TYPES.len() {
            if ICMPV6_LINK_LOCAL_TYPES[i] == ty {
                return true;
            }
            i += 1;
        }
        false
    }
}
