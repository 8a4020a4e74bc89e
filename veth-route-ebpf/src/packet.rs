//! Parsing: Ethernet + IPv4 headers by direct packet access, with the bounds checks the
//! verifier needs right next to each access.

use aya_ebpf::programs::TcContext;

use crate::PassReason;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const ETH_P_IP: u16 = 0x0800;
/// Bytes we want in the linear area: Ethernet + IPv4 without options + TCP up to its flags.
const WANT_LINEAR: usize = ETH_HLEN + IPV4_HLEN + 14;
/// More-fragments flag and fragment offset, host order.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// The first 14 bytes of a TCP header (through the flags).
#[repr(C)]
pub struct TcpHead {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub data_offset: u8,
    pub flags: u8,
}

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    /// Network byte order.
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    /// Network byte order, as on the wire.
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// An IPv4 packet whose Ethernet and IPv4 (fixed part) headers are in bounds.
pub struct Ipv4Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
}

/// Pointer to a `T` at `offset` into the packet, if it lies entirely before `data_end`.
#[inline(always)]
fn header<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

impl Ipv4Packet {
    /// Ethernet + IPv4 header, or why the packet is not ours to handle.
    #[inline(always)]
    pub fn parse(ctx: &TcContext) -> Result<Self, PassReason> {
        // Headers may sit in paged data (e.g. GRO'd skbs); make them direct-accessible.
        if ctx.data() + WANT_LINEAR > ctx.data_end() {
            let _ = ctx.pull_data(WANT_LINEAR as u32);
        }
        let eth: *mut EthHdr = header(ctx, 0).ok_or(PassReason::Malformed)?;
        // SAFETY: bounds checked by `header`.
        if unsafe { (*eth).proto } != ETH_P_IP.to_be() {
            return Err(PassReason::NotIpv4);
        }
        let ip: *mut Ipv4Hdr = header(ctx, ETH_HLEN).ok_or(PassReason::Malformed)?;
        // SAFETY: bounds checked by `header`.
        if unsafe { (*ip).ver_ihl } >> 4 != 4 {
            return Err(PassReason::Malformed);
        }
        Ok(Self { eth, ip })
    }

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

    /// Whether a router may forward this packet without the kernel's help: no IP options,
    /// not a fragment, and a TTL that survives the decrement (else the kernel must answer
    /// with ICMP time exceeded).
    #[inline(always)]
    pub fn forwardable(&self) -> Result<(), PassReason> {
        // SAFETY: as in `saddr`.
        let ip = unsafe { &*self.ip };
        if ip.ver_ihl & 0x0f != 5 {
            return Err(PassReason::IpOptions);
        }
        if u16::from_be(ip.frag_off) & IP_MF_OFFSET_MASK != 0 {
            return Err(PassReason::Fragment);
        }
        if ip.ttl <= 1 {
            return Err(PassReason::Ttl);
        }
        Ok(())
    }

    /// TCP flags, for a TCP packet whose IPv4 header has no options.
    #[inline(always)]
    pub fn tcp_flags(&self, ctx: &TcContext) -> Option<u8> {
        let t: *const TcpHead = header(ctx, ETH_HLEN + IPV4_HLEN)?;
        // SAFETY: bounds checked by `header`.
        Some(unsafe { (*t).flags })
    }

    /// TCP/UDP source and destination port, raw (network order), for a header without options.
    #[inline(always)]
    pub fn ports(&self, ctx: &TcContext) -> Option<[u16; 2]> {
        let p: *const [u16; 2] = header(ctx, ETH_HLEN + IPV4_HLEN)?;
        // SAFETY: bounds checked by `header`.
        Some(unsafe { *p })
    }
}
