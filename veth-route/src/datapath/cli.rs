//! Operator commands on the pinned maps: `veth-route stats` and `veth-route endpoints`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use veth_route_common::{Counters, Endpoint, MODE_ALWAYS, SOURCE_F_ANTI_SPOOF};

use super::maps::PinnedMaps;
use super::pins::PinLayout;
use super::{ifname, DatapathError};

const USAGE: &str = "usage: veth-route stats|endpoints [--pin-dir DIR]
  stats       packet counters of the eBPF fast path (redirected / passed to the kernel / dropped)
  endpoints   pods in the fast path's endpoint map
  --pin-dir   the network config's bpfPinDir (default /sys/fs/bpf/veth-route)";

/// Whether `arg` (argv[1]) is one of the operator commands handled by [`run`].
pub fn is_command(arg: &str) -> bool {
    matches!(arg, "stats" | "endpoints")
}

/// Run an operator command; `args` starts with the command name. Returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let mut pin_dir = PathBuf::from("/sys/fs/bpf/veth-route");
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pin-dir" => match it.next() {
                Some(d) => pin_dir = PathBuf::from(d),
                None => return usage_error("--pin-dir needs a value"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => return usage_error(&format!("unexpected argument {other}")),
        }
    }
    let layout = PinLayout::new(&pin_dir);
    let out = match args.first().map(String::as_str) {
        Some("stats") => stats(&layout),
        Some("endpoints") => endpoints(&layout),
        _ => return usage_error("unknown command"),
    };
    match out {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("veth-route: {e}");
            1
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("veth-route: {msg}\n{USAGE}");
    2
}

fn open(layout: &PinLayout) -> Result<PinnedMaps, DatapathError> {
    if !layout.exists() {
        return Err(DatapathError::Other(format!(
            "no fast path pinned at {} (no pod added with eBPF yet, or another bpfPinDir)",
            layout.root().display()
        )));
    }
    PinnedMaps::open(layout)
}

/// Counters table, one column per program.
pub fn stats(layout: &PinLayout) -> Result<String, DatapathError> {
    let maps = open(layout)?;
    let mode = if maps.mode()? == MODE_ALWAYS { "always" } else { "auto" };
    let c = maps.counters()?;
    let (pod, up) = (c.first().copied().unwrap_or_default(), c.get(1).copied().unwrap_or_default());
    let mut s = format!("fast path pins: {}  mode: {mode}\n", layout.root().display());
    s += &format!("{:<22} {:>14} {:>14}\n", "counter", "from_pod", "from_uplink");
    for ((name, a), (_, b)) in pod.fields().iter().zip(up.fields().iter()) {
        s += &format!("{name:<22} {a:>14} {b:>14}\n");
    }
    s += &format!("{:<22} {:>14} {:>14}\n", "passed (total)", pod.passed(), up.passed());
    Ok(s)
}

/// Endpoint table.
pub fn endpoints(layout: &PinLayout) -> Result<String, DatapathError> {
    let maps = open(layout)?;
    let mut s = format!("{:<16} {:<18} {:<18} {:<18} {}\n", "POD IP", "HOST VETH", "POD MAC", "HOST MAC", "ANTI-SPOOF");
    for (ip, ep) in maps.all_endpoints()? {
        let veth = format!("{}({})", ifname(ep.ifindex).unwrap_or_else(|| "?".into()), ep.ifindex);
        let spoof = match maps.source(ep.ifindex)? {
            Some(src) if src.ip == ip.octets() && src.flags & SOURCE_F_ANTI_SPOOF != 0 => "on",
            Some(src) if src.ip == ip.octets() => "off",
            Some(_) => "other-ip",
            None => "none",
        };
        s += &format!("{:<16} {:<18} {:<18} {:<18} {spoof}\n", ip.to_string(), veth, mac(&ep.pod_mac), mac(&ep.host_mac));
    }
    Ok(s)
}

/// Counters of both programs, summed over CPUs (for tests and benchmarks).
pub fn read_counters(pin_dir: &std::path::Path) -> Result<[Counters; 2], DatapathError> {
    let c = open(&PinLayout::new(pin_dir))?.counters()?;
    Ok([c.first().copied().unwrap_or_default(), c.get(1).copied().unwrap_or_default()])
}

/// Endpoints in the map (for tests).
pub fn read_endpoints(pin_dir: &std::path::Path) -> Result<Vec<(Ipv4Addr, Endpoint)>, DatapathError> {
    open(&PinLayout::new(pin_dir))?.all_endpoints()
}

/// One-line description of an endpoint value.
pub fn describe(ep: &Endpoint) -> String {
    format!("ifindex {} pod_mac {} host_mac {}", ep.ifindex, mac(&ep.pod_mac), mac(&ep.host_mac))
}

fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
