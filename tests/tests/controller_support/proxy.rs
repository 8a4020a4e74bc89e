//! HTTP relays in front of the REAL Neutron, for faults and interleavings it cannot produce
//! on demand: the relaying itself, shared by the fakes, and [`HoldProxy`].
//!
//! `HoldProxy`, a fake named as such: an HTTP relay in front of the REAL Neutron that
//! holds back one chosen request until the test releases it. The real Neutron answers
//! everything; the proxy only decides when one request reaches it, which is how a test
//! puts another writer's calls in between two calls of a controller, on demand and
//! without sleeps. One request per connection (`Connection: close` both ways).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Rule = Box<dyn Fn(&str) -> bool + Send>;

#[derive(Default)]
struct State {
    /// Holds the first request whose request line matches, then is cleared.
    rule: Option<Rule>,
    held: bool,
    released: bool,
}

/// The relay; see the module docs.
pub struct HoldProxy {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

const PATIENCE: Duration = Duration::from_secs(120);

impl HoldProxy {
    /// Relays to `upstream` (host:port of the real Neutron).
    pub fn start(upstream: SocketAddr) -> HoldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let s = state.clone();
        // The threads end with the test process; they only ever talk to loopback.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || relay(conn, upstream, &s));
            }
        });
        HoldProxy { addr, state }
    }

    /// `http://addr`, for `--neutron-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds the next request whose request line (`PUT /v2.0/... HTTP/1.1`) matches.
    pub fn hold_next(&self, rule: impl Fn(&str) -> bool + Send + 'static) {
        *self.state.0.lock().unwrap() = State { rule: Some(Box::new(rule)), held: false, released: false };
    }

    /// Waits until the request is being held (bounded: the controller gets there by itself).
    pub fn wait_held(&self) {
        let (m, cv) = &*self.state;
        let (g, timeout) = cv.wait_timeout_while(m.lock().unwrap(), PATIENCE, |s| !s.held).unwrap();
        assert!(!timeout.timed_out() || g.held, "no matching request arrived at the proxy");
    }

    /// Lets the held request go on to Neutron.
    pub fn release(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().released = true;
        cv.notify_all();
    }
}

/// One HTTP message (head and `Content-Length` body), as the fault proxy reads it.
pub use testbed::openstack::read_message;

/// The head with `Connection: close` instead of whatever it said.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head.trim_end().split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.push("Connection: close");
    lines.join("\r\n") + "\r\n\r\n"
}

fn relay(mut client: TcpStream, upstream: SocketAddr, state: &(Mutex<State>, Condvar)) {
    let Some((head, body)) = read_message(&mut client) else { return };
    let line = head.lines().next().unwrap_or("").to_string();
    {
        let (m, cv) = state;
        let mut g = m.lock().unwrap();
        if g.rule.as_ref().is_some_and(|r| r(&line)) {
            g.rule = None;
            g.held = true;
            cv.notify_all();
            let deadline = Instant::now() + PATIENCE;
            while !g.released && Instant::now() < deadline {
                g = cv.wait_timeout(g, Duration::from_secs(1)).unwrap().0;
            }
        }
    }
    forward(client, &head, &body, upstream);
}

/// Sends a request read from `client` on to `upstream` and its answer back, one request
/// per connection both ways.
pub fn forward(mut client: TcpStream, head: &str, body: &[u8], upstream: SocketAddr) {
    let Ok(mut up) = TcpStream::connect(upstream) else { return };
    let _ = up.write_all(closing(head).as_bytes());
    let _ = up.write_all(body);
    let Some((rhead, rbody)) = read_message(&mut up) else { return };
    let mut rest = Vec::new();
    let _ = up.read_to_end(&mut rest);
    let _ = client.write_all(closing(&rhead).as_bytes());
    let _ = client.write_all(&rbody);
    let _ = client.write_all(&rest);
}
