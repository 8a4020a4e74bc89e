//! Makes the stack reachable from inside a test namespace at the very same URLs.
//!
//! Keystone and Neutron listen on 127.0.0.1 of the root namespace, but plugins run inside a
//! namespace playing the VM. A [`Forwarder`] listens on 127.0.0.1:<same port> inside that
//! namespace and relays each connection to the root namespace's loopback, so the catalog's
//! URLs work unchanged and all traffic stays on loopback.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::HarnessError;

/// Relays loopback ports from a namespace to the root namespace until dropped.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn setns(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: setns on a namespace fd we hold; affects only the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn relay(inner: TcpStream, port: u16, root: Arc<OwnedFd>) {
    std::thread::spawn(move || {
        // This thread was born in the test namespace: connect from the root namespace.
        if setns(&*root).is_err() {
            return;
        }
        let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) else { return };
        let (Ok(mut a_in), Ok(mut b_out)) = (inner.try_clone(), outer.try_clone()) else { return };
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut a_in, &mut b_out);
            let _ = b_out.shutdown(Shutdown::Write);
        });
        let (mut b_in, mut a_out) = (outer, inner);
        let _ = std::io::copy(&mut b_in, &mut a_out);
        let _ = a_out.shutdown(Shutdown::Write);
        let _ = up.join();
    });
}

impl Forwarder {
    /// Listens on 127.0.0.1:`port` inside the namespace at `netns` for each of `ports`.
    pub fn start(netns: &Path, ports: &[u16]) -> Result<Forwarder, HarnessError> {
        let root: Arc<OwnedFd> = Arc::new(File::open("/proc/self/ns/net")?.into());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let ns = File::open(netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
            let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
            let (stop, root) = (stop.clone(), root.clone());
            threads.push(std::thread::spawn(move || {
                let listener = setns(&ns)
                    .map_err(|e| format!("setns: {e}"))
                    .and_then(|_| TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("bind 127.0.0.1:{port}: {e}")))
                    .and_then(|l| l.set_nonblocking(true).map(|_| l).map_err(|e| e.to_string()));
                let listener = match listener {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            relay(conn, port, root.clone());
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                        Err(_) => break,
                    }
                }
            }));
            rx.recv().map_err(|_| "forwarder thread died")?.map_err(|e| format!("forwarder in {}: {e}", netns.display()))?;
        }
        Ok(Forwarder { stop, threads })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
