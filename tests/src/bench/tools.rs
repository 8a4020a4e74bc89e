//! The measuring tools of the datapath benchmark, each side pinned to its own CPU with
//! `taskset`: sockperf TCP ping-pong (qperf's over IPv6), iperf3 TCP streams.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{run_ok, NetNs};

/// The CPU every client runs on, and the one every server runs on.
pub const CLIENT_CPU: usize = 0;
pub const SERVER_CPU: usize = 1;

/// `prog args...` in `ns`, pinned to `cpu`.
fn pinned(ns: &NetNs, cpu: usize, prog: &str, args: &[&str]) -> Command {
    let mut c = ns.command("taskset");
    c.args(["-c", &cpu.to_string(), prog]).args(args);
    c
}

/// A server process in a namespace, killed on drop; `start` returns once it listens.
struct Server(Child);

impl Server {
    fn start(ns: &NetNs, port: u16, prog: &str, args: &[&str]) -> Server {
        let child = pinned(ns, SERVER_CPU, prog, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start server");
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while run_ok(ns.command("ss").args(["-Hltn", &format!("sport = :{port}")])).trim().is_empty() {
            assert!(Instant::now() < deadline, "{prog} never listened on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One ping-pong run.
pub struct PingPong {
    /// Half the round trip, microseconds: sockperf's p50, qperf's mean.
    pub latency_us: f64,
    /// Round trips completed per second in the measured interval (after sockperf's warm-up;
    /// qperf: derived from its mean).
    pub tps: f64,
}

/// TCP ping-pong for `seconds` from `client` to `ip` in `server`: sockperf, or over IPv6
/// qperf, because Debian 12's sockperf (3.7) takes no IPv6 address.
pub fn ping_pong(client: &NetNs, server: &NetNs, ip: IpAddr, seconds: u32) -> PingPong {
    match ip {
        IpAddr::V4(_) => sockperf(client, server, ip, seconds),
        IpAddr::V6(_) => qperf(client, server, ip, seconds),
    }
}

/// sockperf TCP ping-pong for `seconds` from `client` to `ip` in `server`.
fn sockperf(client: &NetNs, server: &NetNs, ip: IpAddr, seconds: u32) -> PingPong {
    let ip = ip.to_string();
    let _srv = Server::start(server, 11111, "sockperf", &["sr", "--tcp", "-i", &ip, "-p", "11111"]);
    let out = pinned(client, CLIENT_CPU, "sockperf", &["pp", "--tcp", "-i", &ip, "-p", "11111", "-t", &seconds.to_string()])
        .output()
        .expect("sockperf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_sockperf(&text).unwrap_or_else(|| panic!("no p50 or message count in sockperf output: {text}"))
}

fn parse_sockperf(text: &str) -> Option<PingPong> {
    let latency_us = text.lines().find(|l| l.contains("percentile 50.000"))?.rsplit('=').next()?.trim().parse().ok()?;
    // "[Valid Duration] RunTime=0.552 sec; SentMessages=1843; ReceivedMessages=1843"
    let valid = text.lines().find(|l| l.contains("[Valid Duration]"))?;
    let field = |name: &str| -> Option<f64> {
        let rest = &valid[valid.find(name)? + name.len()..];
        rest.split(|c: char| c != '.' && !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some(PingPong { latency_us, tps: field("ReceivedMessages=")? / field("RunTime=")? })
}

/// qperf `tcp_lat` (1-byte messages, one at a time) for `seconds` from `client` to `ip` in
/// `server`. qperf reports the mean half round trip only, so the rate is derived from it.
fn qperf(client: &NetNs, server: &NetNs, ip: IpAddr, seconds: u32) -> PingPong {
    let _srv = Server::start(server, QPERF_PORT, "qperf", &["--listen_port", &QPERF_PORT.to_string()]);
    let out = run_ok(&mut pinned(
        client,
        CLIENT_CPU,
        "qperf",
        &["--listen_port", &QPERF_PORT.to_string(), "-t", &seconds.to_string(), "-uu", &ip.to_string(), "tcp_lat"],
    ));
    let latency_us = parse_qperf(&out).unwrap_or_else(|| panic!("no latency in qperf output: {out}"));
    PingPong { latency_us, tps: 1e6 / (2.0 * latency_us) }
}

/// qperf's control port (its default).
const QPERF_PORT: u16 = 19765;

/// The latency of qperf's `tcp_lat` output ("latency = 6587 ns"), in microseconds.
fn parse_qperf(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with("latency"))?;
    let mut words = line.split('=').nth(1)?.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let scale = match words.next()? {
        "ns" => 1e-3,
        "us" => 1.0,
        "ms" => 1e3,
        "sec" => 1e6,
        _ => return None,
    };
    Some(value * scale)
}

/// iperf3 TCP throughput with `streams` parallel streams (receiver side), Gbit/s.
pub fn iperf3(client: &NetNs, server: &NetNs, ip: IpAddr, seconds: u32, streams: u32) -> f64 {
    let ip = ip.to_string();
    let _srv = Server::start(server, 5201, "iperf3", &["-s", "-1", "-B", &ip, "-p", "5201"]);
    let out = run_ok(&mut pinned(
        client,
        CLIENT_CPU,
        "iperf3",
        &["-c", &ip, "-p", "5201", "-t", &seconds.to_string(), "-P", &streams.to_string(), "-J"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"].as_f64().expect("bits_per_second") / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_summary_gives_p50_and_the_measured_rate() {
        let text = "sockperf: [Total Run] RunTime=1.001 sec; Warm up time=400 msec; SentMessages=3387; ReceivedMessages=3386\n\
                    sockperf: [Valid Duration] RunTime=0.500 sec; SentMessages=1843; ReceivedMessages=1840\n\
                    sockperf: ---> percentile 90.000 =   41.897\n\
                    sockperf: ---> percentile 50.000 =   31.685\n";
        let pp = parse_sockperf(text).unwrap();
        assert_eq!(pp.latency_us, 31.685);
        assert_eq!(pp.tps, 3680.0);
        assert!(parse_sockperf("sockperf: ---> percentile 50.000 = 1.0\n").is_none());
    }

    #[test]
    fn qperf_latency_is_read_in_its_unit() {
        assert_eq!(parse_qperf("tcp_lat:\n    latency  =  6587 ns\n"), Some(6.587));
        assert_eq!(parse_qperf("tcp_lat:\n    latency  =  7.14 us\n"), Some(7.14));
        assert_eq!(parse_qperf("tcp_lat:\n    latency  =  1.5 ms\n"), Some(1500.0));
        assert_eq!(parse_qperf("tcp_lat:\n    latency  =  1.5 parsecs\n"), None);
        assert_eq!(parse_qperf("tcp_lat:\nfailed to connect\n"), None);
    }
}
