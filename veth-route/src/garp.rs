//! Gratuitous ARP from the pod's interface, so neighbours drop stale entries for a
//! reused address at once. Must run in the pod's namespace (the socket binds there).

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

const ETH_P_ARP: u16 = 0x0806;

/// Broadcast one gratuitous ARP request for `ip` from interface `ifindex` with `mac`.
pub fn announce(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // ARP: Ethernet/IPv4, request, sender = target = our address.
    frame[14..22].copy_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[32..38].copy_from_slice(&[0; 6]);
    frame[38..42].copy_from_slice(&ip.octets());

    // SAFETY: plain socket syscalls on a descriptor we own; the buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be()));
        if fd < 0 {
            return Err(Error::io("open packet socket for gratuitous ARP")(std::io::Error::last_os_error()));
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(Error::io("send gratuitous ARP")(err));
        }
    }
    Ok(())
}
