//! Typed access to the pinned maps.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use veth_route_common::{
    map_names, Counters, Endpoint, EndpointKey, EndpointKey6, FlowKey, FlowKey6, FlowState, PodSource, PodSource6, Settings, COUNTER_SLOTS,
    FLOW_VERIFIED,
};

use super::pins::PinLayout;
use super::DatapathError;

/// The pinned maps of one host (one pin directory).
pub struct PinnedMaps {
    pub endpoints: HashMap<MapData, EndpointKey, Endpoint>,
    pub sources: HashMap<MapData, u32, PodSource>,
    /// `None` in a pin directory of a build from before dual-stack pods: none of its
    /// pods has IPv6 (the first ADD of this build pins the map).
    pub sources6: Option<HashMap<MapData, u32, PodSource6>>,
    /// `None` as `sources6`.
    pub endpoints6: Option<HashMap<MapData, EndpointKey6, Endpoint>>,
    pub settings: Array<MapData, Settings>,
    pub counters: PerCpuArray<MapData, Counters>,
    pub flows: HashMap<MapData, FlowKey, FlowState>,
    /// `None` as `sources6`.
    pub flows6: Option<HashMap<MapData, FlowKey6, FlowState>>,
}

/// How many flow directions the `flows` map holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub pending: u64,
    pub verified: u64,
}

fn open(layout: &PinLayout, name: &str) -> Result<Map, DatapathError> {
    let path = layout.map(name);
    let data =
        MapData::from_pin(&path).map_err(|source| DatapathError::Map { op: format!("opening pinned map {}", path.display()), source })?;
    Map::from_map_data(data).map_err(|source| DatapathError::Map { op: format!("pinned map {name}"), source })
}

fn typed<T: TryFrom<Map, Error = MapError>>(layout: &PinLayout, name: &str) -> Result<T, DatapathError> {
    // A wrong key/value size here means the pins are from another layout version.
    T::try_from(open(layout, name)?).map_err(|source| DatapathError::Map { op: format!("pinned map {name}"), source })
}

/// A map that a pin directory of an older build may not have (see `sources6`).
fn optional<T: TryFrom<Map, Error = MapError>>(layout: &PinLayout, name: &str) -> Result<Option<T>, DatapathError> {
    if layout.map(name).exists() {
        typed(layout, name).map(Some)
    } else {
        Ok(None)
    }
}

/// The value under `key`, if present.
fn lookup<K: aya::Pod, V: aya::Pod>(m: &HashMap<MapData, K, V>, key: &K, what: &str) -> Result<Option<V>, DatapathError> {
    match m.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_err(what, e)),
    }
}

/// A map of this build that an older build's pin directory lacks, for writing.
fn present<'a, T>(m: &'a mut Option<T>, name: &str) -> Result<&'a mut T, DatapathError> {
    m.as_mut().ok_or_else(|| DatapathError::Internal(format!("no {name} map pinned")))
}

impl PinnedMaps {
    /// Open all maps pinned under `layout`.
    pub fn open(layout: &PinLayout) -> Result<Self, DatapathError> {
        Ok(Self {
            endpoints: typed(layout, map_names::ENDPOINTS)?,
            sources: typed(layout, map_names::SOURCES)?,
            sources6: optional(layout, map_names::SOURCES6)?,
            endpoints6: optional(layout, map_names::ENDPOINTS6)?,
            settings: typed(layout, map_names::SETTINGS)?,
            counters: typed(layout, map_names::COUNTERS)?,
            flows: typed(layout, map_names::FLOWS)?,
            flows6: optional(layout, map_names::FLOWS6)?,
        })
    }

    /// The endpoint for `ip`, if present.
    pub fn endpoint(&self, ip: Ipv4Addr) -> Result<Option<Endpoint>, DatapathError> {
        lookup(&self.endpoints, &key(ip), "reading endpoint")
    }

    /// The endpoint for IPv6 address `ip`, if present.
    pub fn endpoint6(&self, ip: Ipv6Addr) -> Result<Option<Endpoint>, DatapathError> {
        let Some(m) = &self.endpoints6 else { return Ok(None) };
        lookup(m, &EndpointKey6 { ip: ip.octets() }, "reading IPv6 endpoint")
    }

    /// The anti-spoof entry of host veth `ifindex`, if present.
    pub fn source(&self, ifindex: u32) -> Result<Option<PodSource>, DatapathError> {
        lookup(&self.sources, &ifindex, "reading source")
    }

    /// Every endpoint, sorted by address.
    pub fn all_endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>, DatapathError> {
        let mut v = Vec::new();
        for item in self.endpoints.iter() {
            let (k, ep) = item.map_err(|e| map_err("listing endpoints", e))?;
            v.push((Ipv4Addr::from(k.ip), ep));
        }
        v.sort_by_key(|(ip, _)| *ip);
        Ok(v)
    }

    /// Every IPv6 endpoint, sorted by address.
    pub fn all_endpoints6(&self) -> Result<Vec<(Ipv6Addr, Endpoint)>, DatapathError> {
        let Some(m) = &self.endpoints6 else { return Ok(Vec::new()) };
        let mut v: Vec<(Ipv6Addr, Endpoint)> = m
            .iter()
            .map(|item| item.map(|(k, ep)| (Ipv6Addr::from(k.ip), ep)).map_err(|e| map_err("listing IPv6 endpoints", e)))
            .collect::<Result<_, _>>()?;
        v.sort_by_key(|(ip, _)| *ip);
        Ok(v)
    }

    /// The IPv6 address of the dual-stack pod behind `ifindex`, if it has one.
    pub fn source6(&self, ifindex: u32) -> Result<Option<Ipv6Addr>, DatapathError> {
        let Some(m) = &self.sources6 else { return Ok(None) };
        Ok(lookup(m, &ifindex, "reading IPv6 source")?.map(|s| Ipv6Addr::from(s.ip)))
    }

    /// Every IPv6 anti-spoof entry.
    pub fn all_sources6(&self) -> Result<Vec<(u32, Ipv6Addr)>, DatapathError> {
        let Some(m) = &self.sources6 else { return Ok(Vec::new()) };
        m.iter().map(|item| item.map(|(k, s)| (k, Ipv6Addr::from(s.ip))).map_err(|e| map_err("listing IPv6 sources", e))).collect()
    }

    /// Every anti-spoof entry.
    pub fn all_sources(&self) -> Result<Vec<(u32, PodSource)>, DatapathError> {
        let mut v = Vec::new();
        for item in self.sources.iter() {
            v.push(item.map_err(|e| map_err("listing sources", e))?);
        }
        Ok(v)
    }

    /// Every flow direction (entries evicted while we walk are left out).
    pub fn all_flows(&self) -> Vec<(FlowKey, FlowState)> {
        self.flows.iter().flatten().collect()
    }

    /// Every IPv6 flow direction, as [`Self::all_flows`].
    pub fn all_flows6(&self) -> Vec<(FlowKey6, FlowState)> {
        self.flows6.as_ref().map(|m| m.iter().flatten().collect()).unwrap_or_default()
    }

    /// Insert or replace the state of one flow direction.
    pub fn put_flow(&mut self, key: FlowKey, state: FlowState) -> Result<(), DatapathError> {
        self.flows.insert(key, state, 0).map_err(|e| map_err("writing flow", e))
    }

    /// Insert or replace the state of one IPv6 flow direction.
    pub fn put_flow6(&mut self, key: FlowKey6, state: FlowState) -> Result<(), DatapathError> {
        present(&mut self.flows6, map_names::FLOWS6)?.insert(key, state, 0).map_err(|e| map_err("writing IPv6 flow", e))
    }

    /// Insert or replace the endpoint for `ip`.
    pub fn put_endpoint(&mut self, ip: Ipv4Addr, ep: Endpoint) -> Result<(), DatapathError> {
        self.endpoints.insert(key(ip), ep, 0).map_err(|e| map_err("writing endpoint", e))
    }

    /// Insert or replace the anti-spoof entry of `ifindex`.
    pub fn put_source(&mut self, ifindex: u32, src: PodSource) -> Result<(), DatapathError> {
        self.sources.insert(ifindex, src, 0).map_err(|e| map_err("writing source", e))
    }

    /// Insert or replace the endpoint for IPv6 address `ip`.
    pub fn put_endpoint6(&mut self, ip: Ipv6Addr, ep: Endpoint) -> Result<(), DatapathError> {
        let m = present(&mut self.endpoints6, map_names::ENDPOINTS6)?;
        m.insert(EndpointKey6 { ip: ip.octets() }, ep, 0).map_err(|e| map_err("writing IPv6 endpoint", e))
    }

    /// Remove the endpoint for IPv6 address `ip`; absent is fine.
    pub fn remove_endpoint6(&mut self, ip: Ipv6Addr) -> Result<(), DatapathError> {
        match self.endpoints6.as_mut() {
            Some(m) => ignore_missing(m.remove(&EndpointKey6 { ip: ip.octets() }), "removing IPv6 endpoint"),
            None => Ok(()),
        }
    }

    /// Insert or replace the IPv6 address of the dual-stack pod behind `ifindex`.
    pub fn put_source6(&mut self, ifindex: u32, ip: Ipv6Addr) -> Result<(), DatapathError> {
        let m = present(&mut self.sources6, map_names::SOURCES6)?;
        m.insert(ifindex, PodSource6 { ip: ip.octets() }, 0).map_err(|e| map_err("writing IPv6 source", e))
    }

    /// Remove the IPv6 anti-spoof entry of `ifindex`; absent is fine.
    pub fn remove_source6(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.sources6.as_mut() {
            Some(m) => ignore_missing(m.remove(&ifindex), "removing IPv6 source"),
            None => Ok(()),
        }
    }

    /// Remove the endpoint for `ip`; absent is fine.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        ignore_missing(self.endpoints.remove(&key(ip)), "removing endpoint")
    }

    /// Remove the anti-spoof entry of `ifindex`; absent is fine.
    pub fn remove_source(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        ignore_missing(self.sources.remove(&ifindex), "removing source")
    }

    /// The pin directory's redirect mode, for pods whose `sources` entry has no mode bit
    /// (written by a build that kept one mode per pin directory).
    pub fn mode(&self) -> Result<u32, DatapathError> {
        Ok(self.settings.get(&0, 0).map_err(|e| map_err("reading settings", e))?.mode)
    }

    /// Flow directions of both families by state (walks the maps: for operators, not for
    /// every ADD). Entries evicted while we walk are simply not counted.
    pub fn flow_counts(&self) -> Result<FlowCounts, DatapathError> {
        let mut c = FlowCounts::default();
        let states = self.all_flows().into_iter().map(|(_, s)| s).chain(self.all_flows6().into_iter().map(|(_, s)| s));
        for state in states {
            if state.state == FLOW_VERIFIED {
                c.verified += 1;
            } else {
                c.pending += 1;
            }
        }
        Ok(c)
    }

    /// Counters per slot, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<Counters>, DatapathError> {
        (0..COUNTER_SLOTS)
            .map(|slot| {
                let per_cpu = self.counters.get(&slot, 0).map_err(|e| map_err("reading counters", e))?;
                let mut total = Counters::default();
                for c in per_cpu.iter() {
                    total.add(c);
                }
                Ok(total)
            })
            .collect()
    }
}

fn key(ip: Ipv4Addr) -> EndpointKey {
    EndpointKey { ip: ip.octets() }
}

fn ignore_missing(r: Result<(), MapError>, what: &str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        // aya reports a delete of a missing key as the raw syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(what, e)),
    }
}

fn map_err(what: &str, e: MapError) -> DatapathError {
    DatapathError::Map { op: what.to_string(), source: e }
}
