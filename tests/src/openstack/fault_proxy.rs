//! `FaultProxy`, a FAKE for faults the real Neutron cannot produce on demand: an HTTP relay
//! in front of the real Neutron, inside a VM namespace, that forwards each request and then
//! may lose the answer of a write the way real load balancers and networks do: a 504 after
//! forwarding, a reset after sending, a connection closed without an answer, or an answer
//! withheld until the client gives up. Neutron itself is real: every forwarded write is
//! applied by it, so the client cannot know the outcome. Clients keep their connection to
//! the proxy alive, as with a load balancer; each request gets its own upstream connection.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::HarnessError;
use crate::netns::NetNs;

/// What happens to the answer of one forwarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay the answer.
    Pass,
    /// Answer `504 Gateway Time-out` (as HAProxy and nginx do) instead of Neutron's answer.
    GatewayTimeout,
    /// Reset the client's connection (RST) once Neutron has answered.
    ResetAfterSend,
    /// Close the client's connection without an answer ("connection closed before message completed").
    DropResponse,
    /// Never answer: hold the connection until the client times out and closes it.
    Withhold,
}

/// Which requests get which fault.
#[derive(Default)]
struct Plan {
    /// Faults for the next writes (PUT, POST, DELETE), in order; then `ratio` applies.
    queue: VecDeque<Fault>,
    /// Faults for the next reads (GET), in order.
    reads: VecDeque<Fault>,
    /// Fault each write with this probability (per mille), from a seeded generator.
    ratio: Option<(u32, Vec<Fault>)>,
    rng: u64,
}

impl Plan {
    fn next(&mut self) -> Fault {
        if let Some(f) = self.queue.pop_front() {
            return f;
        }
        let Some((per_mille, kinds)) = &self.ratio else { return Fault::Pass };
        // xorshift64*: deterministic per seed, so a figure can be reproduced.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if (r % 1000) as u32 >= *per_mille || kinds.is_empty() {
            return Fault::Pass;
        }
        kinds[((r / 1000) % kinds.len() as u64) as usize]
    }
}

/// Counters of what went through.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    /// Requests received.
    pub requests: AtomicU64,
    /// Writes (PUT, POST, DELETE) received.
    pub writes: AtomicU64,
    /// Requests whose answer a fault replaced or lost.
    pub faulted: AtomicU64,
}

/// The running proxy; its threads end with the test process (they only serve loopback).
pub struct FaultProxy {
    /// Port on 127.0.0.1 inside the namespace.
    pub port: u16,
    plan: Arc<Mutex<Plan>>,
    /// What went through.
    pub counts: Arc<ProxyCounts>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 inside `ns` and relays to Neutron at `neutron_url` (root namespace).
    pub fn start(ns: &NetNs, neutron_url: &str) -> Result<FaultProxy, HarnessError> {
        let upstream: SocketAddr = neutron_url.trim_start_matches("http://").trim_end_matches('/').parse()?;
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let plan = Arc::new(Mutex::new(Plan { rng: 0x9e37_79b9_7f4a_7c15, ..Plan::default() }));
        let counts = Arc::new(ProxyCounts::default());
        let (p, c) = (plan.clone(), counts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (p, c) = (p.clone(), c.clone());
                std::thread::spawn(move || serve(conn, upstream, &p, &c));
            }
        });
        Ok(FaultProxy { port, plan, counts })
    }

    /// The URL clients use (`openstackConf.neutronUrl`), valid inside the namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next writes get these faults, in order.
    pub fn fail_next_writes(&self, faults: &[Fault]) {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).queue.extend(faults);
    }

    /// The next reads get these faults, in order (e.g. so that a client cannot read the
    /// port back right after a lost write either).
    pub fn fail_next_reads(&self, faults: &[Fault]) {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).reads.extend(faults);
    }

    /// From now on each write gets one of `kinds` with probability `per_mille`/1000
    /// (deterministic for a `seed`).
    pub fn fail_writes_at_random(&self, per_mille: u32, kinds: &[Fault], seed: u64) {
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        plan.ratio = Some((per_mille, kinds.to_vec()));
        plan.rng = seed | 1;
    }

    /// Writes whose answer was lost or replaced so far.
    pub fn faulted(&self) -> u64 {
        self.counts.faulted.load(Ordering::Relaxed)
    }

    /// Faults queued but not yet applied.
    pub fn pending_faults(&self) -> usize {
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        plan.queue.len() + plan.reads.len()
    }
}

/// Reads an HTTP/1.1 message head and its `Content-Length` body; None at EOF or on error.
pub fn read_message(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// `head` without its `Connection` and `Content-Length` headers, with `extra` added.
fn rewrite(head: &str, extra: &[String]) -> String {
    let mut lines: Vec<String> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_string)
        .collect();
    lines.extend(extra.iter().cloned());
    lines.join("\r\n") + "\r\n\r\n"
}

/// Forwards one request on a connection of its own; Neutron's whole answer (head, body).
fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut up = TcpStream::connect(upstream).ok()?;
    let extra = ["Connection: close".to_string(), format!("Content-Length: {}", body.len())];
    up.write_all(rewrite(head, &extra).as_bytes()).ok()?;
    up.write_all(body).ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((String::from_utf8_lossy(&answer[..split]).into_owned(), answer[split..].to_vec()))
}

fn reset(conn: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

fn serve(mut client: TcpStream, upstream: SocketAddr, plan: &Mutex<Plan>, counts: &ProxyCounts) {
    while let Some((head, body)) = read_message(&mut client) {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let write = ["PUT ", "POST ", "DELETE "].iter().any(|m| head.starts_with(m));
        let fault = {
            let mut plan = plan.lock().unwrap_or_else(|p| p.into_inner());
            if write {
                counts.writes.fetch_add(1, Ordering::Relaxed);
                plan.next()
            } else {
                plan.reads.pop_front().unwrap_or(Fault::Pass)
            }
        };
        let Some((rhead, rbody)) = forward(upstream, &head, &body) else { return };
        if fault != Fault::Pass {
            counts.faulted.fetch_add(1, Ordering::Relaxed);
        }
        match fault {
            Fault::Pass => {
                let extra = [format!("Content-Length: {}", rbody.len())];
                if client.write_all(rewrite(&rhead, &extra).as_bytes()).and_then(|_| client.write_all(&rbody)).is_err() {
                    return;
                }
            }
            Fault::GatewayTimeout => {
                let page = "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n";
                let answer =
                    format!("HTTP/1.1 504 Gateway Time-out\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}", page.len());
                if client.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            Fault::ResetAfterSend => return reset(client),
            Fault::DropResponse => return,
            Fault::Withhold => {
                // Until the client gives up (its timeout) and closes: reads return 0 then.
                let mut sink = [0u8; 512];
                while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}
