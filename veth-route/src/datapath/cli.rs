//! Operator commands on the pinned maps: `veth-route stats`, `veth-route endpoints` and
//! `veth-route trace`.

use std::io::Write;
use std::path::PathBuf;

use aya::programs::TcAttachType;
use veth_route_common::{Counters, Endpoint, PodSource, MODE_ALWAYS, SOURCE_F_ANTI_SPOOF, SOURCE_F_MODE_ALWAYS, SOURCE_F_MODE_AUTO};

use super::loader::Prog;
use super::maps::PinnedMaps;
use super::pins::PinLayout;
use super::tc::{programs_on, AttachMode};
use super::{ifname, DatapathError};

const USAGE: &str = "usage: veth-route stats|endpoints|trace [--pin-dir DIR] [--json]
  stats       packet counters of the eBPF fast path (redirected / passed to the kernel / dropped),
              and what guards each pod's sources (from_pod, the kernel's rp_filter / IPv6 block)
  endpoints   pods in the fast path's endpoint map
  trace       follow the programs' log records (enable with VETH_ROUTE_BPF_LOG=debug at load)
  --pin-dir   the network config's bpfPinDir (default /sys/fs/bpf/veth-route)
  --json      machine-readable output";

/// Whether `arg` (argv[1]) is one of the operator commands handled by [`run`].
pub fn is_command(arg: &str) -> bool {
    matches!(arg, "stats" | "endpoints" | "trace")
}

/// What an operator command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    /// `-h`/`--help` anywhere: print the usage, succeed.
    Help,
    /// `command` on the fast path pinned under `pin_dir`.
    Run { command: Command, pin_dir: PathBuf, json: bool },
}

/// The operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Stats,
    Endpoints,
    Trace,
}

/// Parses `args` (command name first); `Err` is the message for a usage error.
fn parse(args: &[String]) -> Result<Invocation, String> {
    let first = args.first().map(String::as_str);
    // A person's first try is `veth-route --help`: that is not an unknown command.
    if matches!(first, Some("-h" | "--help")) {
        return Ok(Invocation::Help);
    }
    let mut pin_dir = PathBuf::from("/sys/fs/bpf/veth-route");
    let mut json = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pin-dir" => match it.next() {
                Some(d) => pin_dir = PathBuf::from(d),
                None => return Err("--pin-dir needs a value".into()),
            },
            "--json" => json = true,
            "-h" | "--help" => return Ok(Invocation::Help),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let command = match first {
        Some("stats") => Command::Stats,
        Some("endpoints") => Command::Endpoints,
        Some("trace") => Command::Trace,
        _ => return Err("unknown command".into()),
    };
    Ok(Invocation::Run { command, pin_dir, json })
}

/// Run an operator command; `args` starts with the command name. Returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let (command, pin_dir, json) = match parse(args) {
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return 0;
        }
        Ok(Invocation::Run { command, pin_dir, json }) => (command, pin_dir, json),
        Err(msg) => return usage_error(&msg),
    };
    let layout = PinLayout::new(&pin_dir);
    let out = match command {
        Command::Stats if json => stats_json(&layout),
        Command::Stats => stats(&layout),
        Command::Endpoints if json => endpoints_json(&layout),
        Command::Endpoints => endpoints(&layout),
        Command::Trace => super::trace::follow(&layout).map(|()| String::new()),
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
        return Err(DatapathError::NotPinned(layout.root().to_path_buf()));
    }
    PinnedMaps::open(layout)
}

/// Counters table, one column per program, then what guards each pod's sources.
pub fn stats(layout: &PinLayout) -> Result<String, DatapathError> {
    let mut s = match layout.exists() {
        true => counters_table(layout)?,
        false => format!("fast path: nothing pinned at {} (kernel path only)\n", layout.root().display()),
    };
    s += "anti-spoofing per host veth:\n";
    for g in guards(layout)? {
        let ebpf = match (g.from_pod, g.ipv6) {
            (true, None) => "from_pod (eBPF: IPv4 source, IPv6 link-local ND/MLD only)".to_string(),
            (true, Some(ip6)) => format!("from_pod (eBPF: IPv4 source, IPv6 source {ip6} and link-local)"),
            (false, _) => "no eBPF".to_string(),
        };
        let kernel = g.kernel.map(|k| k.to_string()).unwrap_or_else(|| "unreadable".into());
        let rule = if g.ipv6_rpfilter { ", ip6tables rpfilter rule" } else { "" };
        s += &format!("  {:<14} {ebpf}; kernel: {kernel}{rule}\n", g.host_veth);
    }
    Ok(s)
}

fn counters_table(layout: &PinLayout) -> Result<String, DatapathError> {
    let maps = open(layout)?;
    let c = counters_by_program(&maps)?;
    let flows = maps.flow_counts()?;
    let mut s = format!(
        "fast path pins: {}  mode: per pod (endpoints), else {}  attach: pods {}, uplinks {}\n",
        layout.root().display(),
        redirect_mode(&maps)?,
        AttachMode::for_pod_veth().as_str(),
        AttachMode::for_uplink().as_str()
    );
    s += &format!("flows: {} verified, {} pending (directions)\n", flows.verified, flows.pending);
    s += &format!("{:<22}", "counter");
    for (p, _) in &c {
        s += &format!(" {:>12}", p.name());
    }
    s.push('\n');
    let rows = c[0].1.fields().len();
    for i in 0..rows {
        s += &format!("{:<22}", c[0].1.fields()[i].0);
        for (_, counters) in &c {
            s += &format!(" {:>12}", counters.fields()[i].1);
        }
        s.push('\n');
    }
    for (label, f) in [("passed (total)", Counters::passed as fn(&Counters) -> u64), ("dropped (total)", Counters::dropped)] {
        s += &format!("{label:<22}");
        for (_, counters) in &c {
            s += &format!(" {:>12}", f(counters));
        }
        s.push('\n');
    }
    for u in uplink_names(layout) {
        s += &format!(
            "uplink {u}: ingress {:?} egress {:?}\n",
            programs_on(&u, TcAttachType::Ingress),
            programs_on(&u, TcAttachType::Egress)
        );
    }
    Ok(s)
}

/// What stops one pod's forged packets: `from_pod`, the kernel's settings, or both.
#[derive(serde::Serialize)]
struct SourceGuard {
    host_veth: String,
    /// `from_pod` is attached to the veth (it polices IPv4 and IPv6).
    from_pod: bool,
    /// The kernel's anti-spoofing on the veth (strict rp_filter, IPv6 intake).
    kernel: Option<crate::antispoof::KernelGuard>,
    /// A dual-stack pod's IPv6 address, as `from_pod` knows it (`sources6`).
    ipv6: Option<std::net::Ipv6Addr>,
    /// The ip6tables rpfilter rule polices the veth's IPv6 (dual-stack pods).
    ipv6_rpfilter: bool,
}

/// Every host veth of veth-route (any network: they carry its alias tag) in this namespace.
fn guards(layout: &PinLayout) -> Result<Vec<SourceGuard>, DatapathError> {
    let links = crate::netns::with_netlink(|h| async move { crate::netlink::links(&h).await })
        .map_err(|e| DatapathError::Netlink { op: "listing interfaces", source: Box::new(e) })?;
    let maps = if layout.exists() { PinnedMaps::open(layout).ok() } else { None };
    // Unreadable (no ip6tables, no permission): shown as no rule.
    let ruled = crate::antispoof6::guarded_veths().unwrap_or_default();
    let mut out: Vec<SourceGuard> = links
        .into_iter()
        .filter(|l| l.alias.as_deref().is_some_and(crate::names::is_tag))
        .map(|l| SourceGuard {
            from_pod: layout.link(Prog::FromPod, &l.name).exists()
                && programs_on(&l.name, TcAttachType::Ingress).iter().any(|p| p == Prog::FromPod.name()),
            kernel: crate::antispoof::in_force(&l.name).ok().flatten(),
            ipv6: maps.as_ref().and_then(|m| m.source6(l.index).ok().flatten()),
            ipv6_rpfilter: ruled.contains(&l.name),
            host_veth: l.name,
        })
        .collect();
    out.sort_by(|a, b| a.host_veth.cmp(&b.host_veth));
    Ok(out)
}

/// Counters of every program, summed over CPUs, in [`Prog::ALL`] order.
fn counters_by_program(maps: &PinnedMaps) -> Result<Vec<(Prog, Counters)>, DatapathError> {
    let c = maps.counters()?;
    Ok(Prog::ALL.iter().map(|p| (*p, c.get(p.counter_slot() as usize).copied().unwrap_or_default())).collect())
}

/// The pin directory's mode: what pods without a mode of their own (added by an older
/// build) get.
fn redirect_mode(maps: &PinnedMaps) -> Result<&'static str, DatapathError> {
    Ok(if maps.mode()? == MODE_ALWAYS { "always" } else { "auto" })
}

/// The redirect mode of the pod whose `sources` entry is `src` (its network's `fastPath`).
fn pod_mode(src: Option<PodSource>, maps: &PinnedMaps) -> Result<&'static str, DatapathError> {
    match src.map(|s| s.flags) {
        Some(f) if f & SOURCE_F_MODE_ALWAYS != 0 => Ok("always"),
        Some(f) if f & SOURCE_F_MODE_AUTO != 0 => Ok("auto"),
        _ => redirect_mode(maps),
    }
}

/// Endpoint table.
pub fn endpoints(layout: &PinLayout) -> Result<String, DatapathError> {
    let maps = open(layout)?;
    let mut s = format!(
        "{:<16} {:<18} {:<18} {:<18} {:<10} {:<6} {}\n",
        "POD IP", "HOST VETH", "POD MAC", "HOST MAC", "ANTI-SPOOF", "MODE", "IPV6"
    );
    let ipv6 = ipv6_by_ifindex(&maps)?;
    for (ip, ep) in maps.all_endpoints()? {
        let veth = format!("{}({})", ifname(ep.ifindex).unwrap_or_else(|| "?".into()), ep.ifindex);
        let src = maps.source(ep.ifindex)?;
        let spoof = match src {
            Some(src) if src.ip == ip.octets() && src.flags & SOURCE_F_ANTI_SPOOF != 0 => "on",
            Some(src) if src.ip == ip.octets() => "off",
            Some(_) => "other-ip",
            None => "none",
        };
        let mode = pod_mode(src, &maps)?;
        let ip6 = ipv6.get(&ep.ifindex).map_or("-".to_string(), |a| a.to_string());
        s += &format!(
            "{:<16} {:<18} {:<18} {:<18} {spoof:<10} {mode:<6} {ip6}\n",
            ip.to_string(),
            veth,
            mac(&ep.pod_mac),
            mac(&ep.host_mac)
        );
    }
    Ok(s)
}

/// The IPv6 endpoints by host veth: a dual-stack pod's second address.
fn ipv6_by_ifindex(maps: &PinnedMaps) -> Result<std::collections::HashMap<u32, std::net::Ipv6Addr>, DatapathError> {
    Ok(maps.all_endpoints6()?.into_iter().map(|(ip, ep)| (ep.ifindex, ip)).collect())
}

/// `{"pinned": true, "anti_spoofing": [..], "default_mode": "auto", "attach": {"pods": "netlink", "uplinks": "tcx"},
/// "flows": {..},
/// "from_pod": {"redirected": n, ...}, "to_pod": {..}, ...}`; without pins only the first two.
pub fn stats_json(layout: &PinLayout) -> Result<String, DatapathError> {
    let guards = serde_json::to_value(guards(layout)?)?;
    if !layout.exists() {
        return Ok(format!("{}\n", serde_json::json!({ "pinned": false, "anti_spoofing": guards })));
    }
    let maps = open(layout)?;
    let flows = maps.flow_counts()?;
    let mut v = serde_json::json!({
        "pinned": true,
        "anti_spoofing": guards,
        "default_mode": redirect_mode(&maps)?,
        // How this build attaches new pods and uplinks; each pod's own: `endpoints --json`.
        "attach": { "pods": AttachMode::for_pod_veth().as_str(), "uplinks": AttachMode::for_uplink().as_str() },
        "flows": { "verified": flows.verified, "pending": flows.pending },
    });
    for (p, c) in counters_by_program(&maps)? {
        let mut m: serde_json::Map<String, serde_json::Value> = c.fields().iter().map(|(k, v)| ((*k).to_string(), (*v).into())).collect();
        m.insert("passed".into(), c.passed().into());
        m.insert("dropped".into(), c.dropped().into());
        v[p.name()] = serde_json::Value::Object(m);
    }
    let uplinks: serde_json::Map<String, serde_json::Value> = uplink_names(layout)
        .into_iter()
        .map(|u| {
            let progs = serde_json::json!({
                "ingress_programs": programs_on(&u, TcAttachType::Ingress),
                "egress_programs": programs_on(&u, TcAttachType::Egress),
            });
            (u, progs)
        })
        .collect();
    v["uplinks"] = uplinks.into();
    Ok(format!("{v}\n"))
}

/// `[{"ip": "10.10.10.19", "ip6": "fd00::13" or null, "ifindex": 7, "ifname": "veth...", "pod_mac": "..", "host_mac": "..", "anti_spoof": true,
/// "mode": "auto", ...}]`.
pub fn endpoints_json(layout: &PinLayout) -> Result<String, DatapathError> {
    let maps = open(layout)?;
    let ipv6 = ipv6_by_ifindex(&maps)?;
    let mut list = Vec::new();
    for (ip, ep) in maps.all_endpoints()? {
        let src = maps.source(ep.ifindex)?;
        list.push(serde_json::json!({
            "ip": ip.to_string(),
            "ip6": ipv6.get(&ep.ifindex).map(|a| a.to_string()),
            "ifindex": ep.ifindex,
            "ifname": ifname(ep.ifindex),
            "pod_mac": mac(&ep.pod_mac),
            "host_mac": mac(&ep.host_mac),
            "anti_spoof": src.is_some_and(|s| s.ip == ip.octets() && s.flags & SOURCE_F_ANTI_SPOOF != 0),
            "mode": pod_mode(src, &maps)?,
            "ingress_programs": ifname(ep.ifindex).map(|n| programs_on(&n, TcAttachType::Ingress)).unwrap_or_default(),
            "egress_programs": ifname(ep.ifindex).map(|n| programs_on(&n, TcAttachType::Egress)).unwrap_or_default(),
        }));
    }
    Ok(format!("{}\n", serde_json::Value::Array(list)))
}

/// One-line description of an endpoint value.
pub fn describe(ep: &Endpoint) -> String {
    format!("ifindex {} pod_mac {} host_mac {}", ep.ifindex, mac(&ep.pod_mac), mac(&ep.host_mac))
}

/// Uplinks with a pinned link.
fn uplink_names(layout: &PinLayout) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.links(Prog::FromUplink))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_as_the_first_argument_is_help_not_an_unknown_command() {
        for a in [&["--help"][..], &["-h"], &["stats", "--help"], &["trace", "-h", "--bogus"]] {
            assert_eq!(parse(&args(a)), Ok(Invocation::Help), "{a:?}");
        }
        assert_eq!(run(&args(&["--help"])), 0);
        assert_eq!(run(&args(&["-h"])), 0);
    }

    #[test]
    fn commands_and_options_parse_and_mistakes_are_usage_errors() {
        let ok = |command, pin_dir: &str, json| Ok(Invocation::Run { command, pin_dir: PathBuf::from(pin_dir), json });
        assert_eq!(parse(&args(&["stats"])), ok(Command::Stats, "/sys/fs/bpf/veth-route", false));
        assert_eq!(parse(&args(&["endpoints", "--json", "--pin-dir", "/p"])), ok(Command::Endpoints, "/p", true));
        assert_eq!(parse(&args(&["trace"])), ok(Command::Trace, "/sys/fs/bpf/veth-route", false));
        assert_eq!(parse(&args(&["bogus"])), Err("unknown command".to_string()));
        assert_eq!(parse(&args(&[])), Err("unknown command".to_string()));
        assert_eq!(parse(&args(&["stats", "--pin-dir"])), Err("--pin-dir needs a value".to_string()));
        assert_eq!(parse(&args(&["stats", "extra"])), Err("unexpected argument extra".to_string()));
        assert_eq!(run(&args(&["bogus"])), 2);
    }

    #[test]
    fn usage_lists_every_command() {
        for c in ["stats", "endpoints", "trace"] {
            assert!(is_command(c) && USAGE.contains(&format!("\n  {c} ")), "{c}");
        }
    }
}
