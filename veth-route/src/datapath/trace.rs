//! `veth-route trace`: stream the kernel programs' aya-log records (e.g. each spoofed
//! packet dropped, with its source and interface).
//!
//! Logging is compiled into the programs but costs nothing unless enabled: its level is a
//! frozen global set when the programs are loaded (`VETH_ROUTE_BPF_LOG=debug` on the ADD
//! that loads them), so the verifier removes disabled log statements.

use std::os::fd::AsRawFd;

use aya::programs::SchedClassifier;
use aya_log::EbpfLogger;

use super::loader::{pinned_program, Prog};
use super::pins::PinLayout;
use super::DatapathError;

/// Prints each record as `<level> <message>` on stdout.
struct StdoutLog;

impl log::Log for StdoutLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        println!("{} {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

/// Follow the log ring buffer of the programs pinned under `layout` until interrupted.
pub fn follow(layout: &PinLayout) -> Result<(), DatapathError> {
    let pin = pinned_program(layout, Prog::FromPod).ok_or_else(|| DatapathError::NotPinned(layout.root().to_path_buf()))?;
    let prog =
        SchedClassifier::from_pin(&pin).map_err(|source| DatapathError::Program { op: format!("opening {}", pin.display()), source })?;
    let id = prog.info().map_err(|source| DatapathError::Program { op: "program info".into(), source })?.id();
    let mut logger = EbpfLogger::init_from_id_with_logger(id, StdoutLog).map_err(DatapathError::Log)?;
    eprintln!("following eBPF program logs (records appear only if the programs were loaded with VETH_ROUTE_BPF_LOG set)");
    loop {
        let mut pfd = libc::pollfd { fd: logger.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one valid fd.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(DatapathError::Fs { op: "polling the log buffer of", path: pin, source: e });
            }
        }
        logger.flush();
    }
}
