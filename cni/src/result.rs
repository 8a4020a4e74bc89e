//! The ADD result: parsed from any supported version, rendered in the requested one.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{from_json_error, CniError};
use crate::version::Version;

/// A plugin's result (also what `prevResult` holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or used.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// MTU (rendered from 1.1.0 on).
    pub mtu: Option<u32>,
    /// Netns path for container interfaces; absent for host interfaces.
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway for this subnet.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means "the default gateway".
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Route priority/metric (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    pub scope: Option<u8>,
}

impl Route {
    /// A route with only destination and gateway.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

/// DNS settings of a result or config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// The first IPv4 address, if any.
    pub fn first_ipv4(&self) -> Option<&IpConfig> {
        self.ips.iter().find(|ip| ip.address.addr().is_ipv4())
    }

    /// Render as the JSON object of `version` (including `cniVersion`).
    pub fn render(&self, version: Version) -> Value {
        let v11 = version >= Version::V1_1_0;
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if let (true, Some(mtu)) = (v11, i.mtu) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if let Some(sb) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sb));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_carry_version() {
                    o.insert("version".into(), json!(if ip.address.addr().is_ipv4() { "4" } else { "6" }));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(idx) = ip.interface {
                    o.insert("interface".into(), json!(idx));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                if v11 {
                    for (k, val) in [("mtu", r.mtu), ("advmss", r.advmss), ("priority", r.priority), ("table", r.table)] {
                        if let Some(val) = val {
                            o.insert(k.into(), json!(val));
                        }
                    }
                    if let Some(s) = r.scope {
                        o.insert("scope".into(), json!(s));
                    }
                }
                Value::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        out.insert("ips".into(), Value::Array(ips));
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), serde_json::to_value(&self.dns).unwrap_or_else(|_| json!({})));
        Value::Object(out)
    }

    /// Parse a result of any supported version (and the legacy 0.1/0.2 `ip4`/`ip6` form).
    pub fn parse(value: &Value) -> Result<CniResult, CniError> {
        let wire: WireResult = serde_json::from_value(value.clone()).map_err(|e| from_json_error("CNI result", &e))?;
        let mut res = CniResult {
            interfaces: wire
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac.filter(|m| !m.is_empty()),
                    mtu: i.mtu,
                    sandbox: i.sandbox.filter(|s| !s.is_empty()),
                })
                .collect(),
            ips: wire.ips.into_iter().map(|ip| IpConfig { address: ip.address, gateway: ip.gateway, interface: ip.interface }).collect(),
            routes: wire.routes.into_iter().map(WireRoute::into_route).collect(),
            dns: wire.dns.unwrap_or_default(),
        };
        for legacy in [wire.ip4, wire.ip6].into_iter().flatten() {
            res.ips.push(IpConfig { address: legacy.ip, gateway: legacy.gateway, interface: None });
            res.routes.extend(legacy.routes.into_iter().map(WireRoute::into_route));
        }
        Ok(res)
    }

    /// Parse result bytes (e.g. an IPAM plugin's stdout).
    pub fn parse_bytes(bytes: &[u8]) -> Result<CniResult, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| from_json_error("CNI result", &e))?;
        CniResult::parse(&v)
    }
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(default)]
    interfaces: Vec<WireInterface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    ip4: Option<WireLegacyIp>,
    #[serde(default)]
    ip6: Option<WireLegacyIp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

impl WireRoute {
    fn into_route(self) -> Route {
        Route {
            dst: self.dst,
            gw: self.gw,
            mtu: self.mtu,
            advmss: self.advmss,
            priority: self.priority,
            table: self.table,
            scope: self.scope,
        }
    }
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<WireRoute>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface { name: "veth1234abcd".into(), mac: Some("0e:12:32:5b:a7:f9".into()), mtu: Some(1500), sandbox: None },
                Interface {
                    name: "eth0".into(),
                    mac: Some("72:96:91:d4:58:36".into()),
                    mtu: Some(1500),
                    sandbox: Some("/var/run/netns/test".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.10.10.19/24".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route { priority: Some(10), ..Route::new("0.0.0.0/0".parse().unwrap(), Some("169.254.1.1".parse().unwrap())) }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn legacy_versions_carry_ip_version() {
        for v in [Version::V0_3_0, Version::V0_3_1, Version::V0_4_0] {
            let out = sample().render(v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][0]["address"], "10.10.10.19/24");
            assert_eq!(out["ips"][0]["interface"], 1);
            assert!(out["interfaces"][0].get("mtu").is_none());
            assert!(out["routes"][0].get("priority").is_none());
        }
    }

    #[test]
    fn v1_has_no_ip_version() {
        let out = sample().render(Version::V1_0_0);
        assert!(out["ips"][0].get("version").is_none());
        assert!(out["interfaces"][1].get("mtu").is_none());
        let out = sample().render(Version::V1_1_0);
        assert!(out["ips"][0].get("version").is_none());
        assert_eq!(out["interfaces"][1]["mtu"], 1500);
        assert_eq!(out["routes"][0]["priority"], 10);
        assert_eq!(out["interfaces"][1]["sandbox"], "/var/run/netns/test");
    }

    #[test]
    fn round_trips_every_version() {
        for v in Version::ALL {
            let parsed = CniResult::parse(&sample().render(v)).unwrap();
            assert_eq!(parsed.ips, sample().ips, "{v}");
            assert_eq!(parsed.interfaces.len(), 2);
            assert_eq!(parsed.routes[0].dst, sample().routes[0].dst);
        }
    }

    #[test]
    fn parses_host_local_output_and_legacy() {
        let hl = br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.2.3/24","gateway":"10.1.2.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let r = CniResult::parse_bytes(hl).unwrap();
        assert_eq!(r.first_ipv4().unwrap().address, "10.1.2.3/24".parse::<IpNet>().unwrap());
        assert_eq!(r.routes[0].gw, None);
        let legacy = br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.5/16","gateway":"10.0.0.1","routes":[{"dst":"10.9.0.0/16"}]}}"#;
        let r = CniResult::parse_bytes(legacy).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.routes.len(), 1);
        assert!(CniResult::parse_bytes(br#"{"ips":[{"address":"nope"}]}"#).is_err());
    }
}
