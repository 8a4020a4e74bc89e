//! Facts about the VM's own uplink, read in the network namespace the plugin runs in
//! (the VM's): `/proc/net/route` and interface ioctls follow the caller's namespace,
//! unlike `/sys/class/net`, which shows the namespace that mounted sysfs.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The uplink: name, MAC (lower case), primary IPv4 address and global IPv6 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Interface name.
    pub name: String,
    /// MAC as `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its primary IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its global-scope IPv6 addresses (none when IPv6 is off).
    pub ipv6: Vec<Ipv6Addr>,
}

/// The interface of the IPv4 default route.
pub fn default_route_interface() -> std::io::Result<String> {
    let table = std::fs::read_to_string("/proc/net/route")?;
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 7 && f[1] == "00000000" && f[7] == "00000000")
        .map(|f| f[0].to_string())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no IPv4 default route"))
}

fn ifreq(name: &str) -> std::io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(name: &str, request: libc::c_ulong) -> std::io::Result<libc::ifreq> {
    let mut req = ifreq(name)?;
    // SAFETY: a datagram socket we close below; the ioctls only fill `req`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, request as _, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(req)
}

/// Global-scope IPv6 addresses of `name`, from `/proc/net/if_inet6` (of the caller's
/// namespace, like `/proc/net/route`). Absent file: IPv6 is disabled, no addresses.
fn ipv6_addresses(name: &str) -> Vec<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    parse_if_inet6(&table, name)
}

/// Lines are `<32 hex digits> <ifindex> <prefix len> <scope> <flags> <name>`; scope 00 is global.
fn parse_if_inet6(table: &str, name: &str) -> Vec<Ipv6Addr> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 6 && f[5] == name && f[3] == "00")
        .filter_map(|f| u128::from_str_radix(f[0], 16).ok().map(Ipv6Addr::from))
        .collect()
}

/// Reads name, MAC, primary IPv4 and global IPv6 addresses of `name`.
pub fn uplink(name: &str) -> std::io::Result<Uplink> {
    let hw = ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member.
    let data = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_data };
    let mac = data[..6].iter().map(|b| format!("{:02x}", *b as u8)).collect::<Vec<_>>().join(":");
    let ipv4 = ioctl(name, libc::SIOCGIFADDR).ok().map(|r| {
        // SAFETY: SIOCGIFADDR filled ifru_addr with a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&r.ifr_ifru.ifru_addr) };
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
    });
    Ok(Uplink { name: name.to_string(), mac, ipv4, ipv6: ipv6_addresses(name) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_addresses_of_the_interface_count() {
        let table = "fd00001000100000000000000000000a 02 40 00 80 eth0\n\
                     fe80000000000000f8163efffe000001 02 40 20 80 eth0\n\
                     fd00001000100000000000000000000b 03 40 00 80 eth1\n";
        assert_eq!(parse_if_inet6(table, "eth0"), vec!["fd00:10:10::a".parse::<Ipv6Addr>().unwrap()]);
        assert!(parse_if_inet6("", "eth0").is_empty());
    }
}
