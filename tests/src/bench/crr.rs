//! Connection rate, the equivalent of netperf's TCP_CRR (Debian has no netperf): each
//! transaction opens a TCP connection, sends a request, reads the answer and closes. The
//! server answers and closes first, as an HTTP server answering `Connection: close` does,
//! so the client holds no TIME_WAIT and never runs out of ports at a few thousand
//! connections a second (a reused port meets the server's TIME_WAIT, which accepts a
//! fresh SYN). One connection at a time, client and server each pinned to its own CPU.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::NetNs;

/// What the client sends and the server answers (netperf's 1-byte defaults, made
/// recognisable).
const REQUEST: &[u8] = b"GET";
const RESPONSE: &[u8] = b"200";
/// Thread names (what `perf report --comm` selects, see `bench::profile`).
pub const CLIENT_THREAD: &str = "crr-client";
pub const SERVER_THREAD: &str = "crr-server";
/// Only so a broken path fails instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A CRR server in a namespace, stopped and joined on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Server {
    /// Listen on `ip:port` in `ns`, on a thread pinned to `cpu`; returns once it listens.
    pub fn start(ns: &NetNs, ip: IpAddr, port: u16, cpu: usize) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = ns.run(|| TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}")));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(SERVER_THREAD.into()).spawn(move || {
            pin_to_cpu(cpu);
            let mut served = 0;
            while !flag.load(Ordering::Relaxed) {
                // poll with a timeout, so a stop request ends the loop without a connection.
                let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll on one valid fd.
                if unsafe { libc::poll(&mut pfd, 1, 50) } != 1 {
                    continue;
                }
                let Ok((mut conn, _)) = listener.accept() else { continue };
                let mut req = [0u8; REQUEST.len()];
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                if conn.read_exact(&mut req).is_ok() && req == REQUEST && conn.write_all(RESPONSE).is_ok() {
                    served += 1;
                }
            }
            served
        });
        Server { stop, thread: Some(thread.expect("spawn the CRR server")) }
    }

    /// Stop and return how many transactions it answered.
    pub fn finish(mut self) -> u64 {
        self.join()
    }

    fn join(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("CRR server panicked")).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.join();
    }
}

/// When the client stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Transactions(u64),
    Time(Duration),
}

/// What one client run did.
#[derive(Debug)]
pub struct Outcome {
    pub transactions: u64,
    pub elapsed: Duration,
}

impl Outcome {
    /// Transactions (connections) per second.
    pub fn rate(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run transactions against `server` from `ns`, on a thread pinned to `cpu`, until `limit`.
/// Panics on a failed transaction: a benchmark must not count a broken path as slow.
pub fn client(ns: &NetNs, server: SocketAddr, cpu: usize, limit: Limit) -> Outcome {
    ns.run(|| {
        pin_to_cpu(cpu);
        name_this_thread(CLIENT_THREAD);
        let start = Instant::now();
        let mut transactions = 0;
        loop {
            match limit {
                Limit::Transactions(n) if transactions >= n => break,
                Limit::Time(d) if start.elapsed() >= d => break,
                _ => {}
            }
            transaction(server).unwrap_or_else(|e| panic!("CRR transaction {transactions} to {server}: {e}"));
            transactions += 1;
        }
        Outcome { transactions, elapsed: start.elapsed() }
    })
}

fn transaction(server: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&server, IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(REQUEST)?;
    let mut answer = Vec::with_capacity(RESPONSE.len());
    // To EOF: the server closes after its answer.
    conn.read_to_end(&mut answer)?;
    if answer != RESPONSE {
        return Err(std::io::Error::other(format!("answer {answer:?}")));
    }
    Ok(())
}

fn name_this_thread(name: &str) {
    let name = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string we own.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Pin the calling thread to `cpu` (the benchmark keeps client and server apart, the same
/// CPUs for every datapath).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: sched_setaffinity on the calling thread with a cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity({cpu}): {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn every_transaction_is_a_connection_the_server_answered() {
        let ns = NetNs::new("crr");
        let last_cpu = std::thread::available_parallelism().map(|n| n.get() - 1).unwrap_or(0);
        let server = Server::start(&ns, Ipv4Addr::LOCALHOST.into(), 18080, last_cpu);
        let out = client(&ns, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 18080), 0, Limit::Transactions(200));
        assert_eq!(out.transactions, 200);
        assert_eq!(server.finish(), 200, "one answered request per connection");
        // The server closed first: its sockets wait in TIME_WAIT, the client's ports are free.
        let tw = ns.sh("ss", &["-Htan", "state", "time-wait"]);
        let server_side = tw.lines().filter(|l| l.split_whitespace().nth(2).is_some_and(|a| a.ends_with(":18080"))).count();
        assert_eq!(server_side, 200, "{tw}");
    }
}
