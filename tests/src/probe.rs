//! Traffic probes run from inside a namespace: ICMP echo (no `ping` binary needed) and a
//! one-shot TCP server/client. Timeouts bound a lost packet; they are not assertions on speed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::netns::NetNs;

const ATTEMPTS: u16 = 5;
const WAIT: Duration = Duration::from_secs(1);

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Send ICMP echo requests from `ns` to `dst` until one is answered (up to 5 tries).
pub fn ping(ns: &NetNs, dst: Ipv4Addr) -> Result<(), String> {
    ns.run(|| ping_here(dst)).map_err(|e| format!("ping {dst} from {}: {e}", ns.name()))
}

fn ping_here(dst: Ipv4Addr) -> Result<(), String> {
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    // Raw ICMP sockets see every reply in the namespace: tell ours apart by id.
    let id = (std::process::id() as u16).wrapping_mul(31).wrapping_add(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    // SAFETY: raw socket syscalls on a descriptor owned by this function.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let tv = libc::timeval { tv_sec: WAIT.as_secs() as i64, tv_usec: 0 };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
        let result = (|| {
            for seq in 0..ATTEMPTS {
                let mut pkt = [0u8; 16];
                pkt[0] = 8;
                pkt[4..6].copy_from_slice(&id.to_be_bytes());
                pkt[6..8].copy_from_slice(&seq.to_be_bytes());
                pkt[8..16].copy_from_slice(b"vethrout");
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
                let sent = libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                if sent < 0 {
                    return Err(format!("send: {}", std::io::Error::last_os_error()));
                }
                let mut buf = [0u8; 1500];
                loop {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 0 {
                        break; // timeout: next attempt
                    }
                    let n = n as usize;
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if n < ihl + 8 {
                        continue;
                    }
                    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    let icmp = &buf[ihl..n];
                    if icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id && src == dst {
                        return Ok(());
                    }
                }
            }
            Err(format!("no echo reply after {ATTEMPTS} attempts"))
        })();
        libc::close(fd);
        result
    }
}

/// A TCP listener inside a namespace that answers each connection with `reply`.
pub struct TcpServer {
    fd: std::os::fd::RawFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    /// Listen on 0.0.0.0:`port` inside `ns`; serves until dropped.
    pub fn start(ns: &NetNs, port: u16, reply: &'static str) -> TcpServer {
        Self::start_on(ns, IpAddr::V4(Ipv4Addr::UNSPECIFIED), port, reply)
    }

    /// Listen on `addr`:`port` inside `ns` (`::` takes both families); serves until dropped.
    pub fn start_on(ns: &NetNs, addr: IpAddr, port: u16, reply: &'static str) -> TcpServer {
        use std::os::fd::AsRawFd;
        // The socket is created in the namespace; accepting can happen on any thread.
        let listener = ns.run(|| TcpListener::bind(SocketAddr::new(addr, port)).expect("bind in netns"));
        let fd = listener.as_raw_fd();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(mut c) => {
                        let _ = c.write_all(reply.as_bytes());
                    }
                    Err(_) => return, // shut down
                }
            }
        });
        TcpServer { fd, thread: Some(thread) }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        // SAFETY: the listener is still open (owned by the thread until it returns);
        // shutdown wakes its accept() with an error.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connect from `ns` to `dst:port` (either family) and read what the server says.
pub fn tcp_read(ns: &NetNs, dst: impl Into<IpAddr>, port: u16) -> Result<String, String> {
    let dst = dst.into();
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))
            .map_err(|e| format!("connect {dst}:{port}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| format!("read from {dst}:{port}: {e}"))?;
        Ok(out)
    })
}

/// Captures ARP frames on every interface of a namespace (to see gratuitous ARPs).
pub struct ArpWatch {
    fd: std::os::fd::OwnedFd,
}

impl ArpWatch {
    /// Start capturing in `ns` (before the interfaces of interest even exist).
    pub fn start(ns: &NetNs) -> ArpWatch {
        use std::os::fd::FromRawFd;
        let fd = ns.run(|| {
            // SAFETY: socket(2); the descriptor is owned right away.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(0x0806u16.to_be())) };
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        });
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: setsockopt with a valid timeval.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        ArpWatch { fd }
    }

    /// Whether a gratuitous ARP (sender = target = `ip`) arrives (waits up to 2 s per frame).
    pub fn saw_gratuitous(&self, ip: Ipv4Addr) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 1514];
        loop {
            // SAFETY: recv into a buffer we own.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return false;
            }
            let f = &buf[..n as usize];
            if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == ip.octets() && f[38..42] == ip.octets() {
                return true;
            }
        }
    }
}

/// The kernel counter `name` of `ns` from `/proc/net/netstat` or `/proc/net/snmp` (e.g.
/// `IPReversePathFilter`, which counts packets strict or loose rp_filter dropped).
pub fn netstat(ns: &NetNs, name: &str) -> u64 {
    for file in ["/proc/net/netstat", "/proc/net/snmp"] {
        // /proc/net shows the namespace of the reading process: `cat` runs inside `ns`.
        let text = ns.sh("cat", &[file]);
        let lines: Vec<&str> = text.lines().collect();
        // Pairs of lines: "Group: Name1 Name2 ..." then "Group: v1 v2 ...".
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            if let Some(i) = names.split_whitespace().position(|n| n == name) {
                return values
                    .split_whitespace()
                    .nth(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{file}: bad value for {name}"));
            }
        }
    }
    panic!("no kernel counter {name} in {}", ns.name())
}
