//! The CNI verbs. Each holds the node lock for the whole operation; Neutron is contacted
//! only when needed (a warm-pool ADD with known port facts makes no call at all).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use cni::{CniError, CniResult, ErrorCode, IpConfig, NetConf, Plugin, Request};
use ipnet::IpNet;
use openstack::{Neutron, Port, Session};

use crate::blocks;
use crate::config::{Ipv6, Settings};
use crate::error::{state_err, IpamError};
use crate::port;
use crate::quarantine;
use crate::store::{attachment_key, Lease, Leases, PortInfo, PortLock, State, Store, SubnetInfo, PORT_LOCK_DIR};
use crate::token_cache::FileTokenStore;

/// The tcnp-ipam plugin.
pub struct Ipam;

/// One verb's working set: settings, locked store and state, and a lazily built client.
struct Op {
    verb: &'static str,
    settings: Settings,
    store: Store,
    state: State,
    neutron: Option<Neutron>,
    /// The VM port's node-wide lock, taken once the port is known.
    port_lock: Option<PortLock>,
}

fn settings_of(req: &Request) -> Result<(NetConf<serde_json::Value>, Settings), CniError> {
    let conf: NetConf<serde_json::Value> = req.parse_config()?;
    let ipam =
        conf.ipam.clone().ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "network configuration has no \"ipam\" section"))?;
    let settings = Settings::parse(&conf.name, &ipam)?;
    cni::logging::init("tcnp-ipam", settings.log_file.as_deref(), settings.log_level);
    Ok((conf, settings))
}

fn block_on<T>(fut: impl std::future::Future<Output = Result<T, IpamError>>) -> Result<T, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(fut).map_err(CniError::from)
}

async fn client(settings: &Settings) -> Result<Neutron, IpamError> {
    let http = settings.http.build()?;
    let store = FileTokenStore::new(&settings.data_dir, &settings.auth);
    let session = Arc::new(Session::new(http, settings.auth.clone()).with_token_store(Box::new(store)));
    Ok(match &settings.neutron_url {
        Some(url) => Neutron::new(session, url),
        None => Neutron::from_catalog(session, &settings.interface, settings.region.as_deref()).await?,
    })
}

impl Drop for Op {
    fn drop(&mut self) {
        // One line per operation, for `cargo xtask bench` and operators counting API load.
        let counts = self.neutron.as_ref().map(|n| n.session().counts()).unwrap_or_default();
        log::info!(
            "api calls for {}: keystone_auths={} neutron_requests={} neutron_writes={}",
            self.verb,
            counts.keystone_auths,
            counts.service_requests,
            counts.service_writes
        );
    }
}

impl Op {
    fn open(verb: &'static str, settings: Settings) -> Result<Op, IpamError> {
        let dir = settings.data_dir.clone();
        let store = Store::lock(&dir).map_err(state_err(&dir))?;
        let state = store.load().map_err(state_err(&dir))?;
        Ok(Op { verb, settings, store, state, neutron: None, port_lock: None })
    }

    async fn neutron(&mut self) -> Result<Neutron, IpamError> {
        if self.neutron.is_none() {
            self.neutron = Some(client(&self.settings).await?);
        }
        Ok(self.neutron.clone().expect("just set"))
    }

    fn save(&self) -> Result<(), IpamError> {
        self.store.save(&self.state).map_err(state_err(self.store.dir()))
    }

    /// The VM port, found once per node (ADD marks it: [`Op::verify`]), and its node-wide
    /// lock, held from here to the end of the operation: every Neutron write and read-back
    /// of the port comes after this.
    async fn port(&mut self) -> Result<PortInfo, IpamError> {
        // Found before IPv6 was asked for (or by a version without it): look again.
        if self.settings.ipv6 == Ipv6::Required && self.state.port.as_ref().is_some_and(|p| p.subnet6.is_none()) {
            self.state.port = None;
        }
        if self.state.port.is_none() {
            let neutron = self.neutron().await?;
            let info = port::find(&neutron, &self.settings).await?;
            log::info!("VM port {} (MAC {}, primary {}) on network {}", info.id, info.mac, info.primary, info.network_id);
            self.state.port = Some(info);
            self.save()?;
        }
        let info = self.state.port.clone().expect("just set");
        if self.port_lock.is_none() {
            let dir = Path::new(PORT_LOCK_DIR);
            self.port_lock = Some(PortLock::take(dir, &info.id).map_err(state_err(dir))?);
        }
        Ok(info)
    }

    /// Addresses this node knows on the port: its attachments, spares and the VM's own.
    fn known(&self, info: &PortInfo) -> HashSet<IpAddr> {
        self.state.held().map(|l| l.ip).chain(info.own()).collect()
    }

    /// Spares of the family of `subnet` (each family has one pod subnet).
    fn spares_of(&self, subnet: &SubnetInfo) -> usize {
        self.state.spares.iter().filter(|l| same_family(l.ip, subnet.cidr.addr())).count()
    }

    /// Settles a port update whose outcome was never recorded (the process died after the
    /// PUT, or its answer was lost and the port could not be read then): addresses it
    /// added become spares, so the next ADD uses them and GC trims them.
    async fn recover(&mut self) -> Result<(), IpamError> {
        let Some(pending) = self.state.pending.clone() else { return Ok(()) };
        let info = self.port().await?;
        let current = self.neutron().await?.get_port(&info.id).await?;
        if let port::Settled::Applied(leases) = port::settle(&pending, &current, &self.known(&info)) {
            if !leases.is_empty() {
                log::warn!("port {}: an earlier unanswered update added {leases:?}; keeping them as spares", info.id);
                self.state.spares.extend(leases);
            }
        }
        self.state.pending = None;
        self.save()
    }

    /// Re-checks the cached node facts against the port as read now, and repairs them: the
    /// VM's own address (the uplink's, when it moved), the managed/primary tags (stripped by
    /// Terraform or Heat), and spares that are no longer on the port.
    async fn verify(&mut self, current: &Port) -> Result<(), IpamError> {
        let Some(info) = self.state.port.as_mut() else { return Ok(()) };
        let recorded = info.clone();
        let on_port = |ip: IpAddr| current.fixed_ips.iter().any(|f| f.ip_address == ip);
        if let Some(ip) = port::uplink_address(&self.settings).filter(|ip| *ip != info.primary && on_port(*ip)) {
            log::warn!("port {}: the VM's address is {ip} (uplink), not {} as recorded; correcting", info.id, info.primary);
            info.primary = ip;
            info.marked = false;
        }
        if !port::is_marked(current, info) {
            info.marked = false;
        }
        let before = self.state.spares.len();
        self.state.spares.retain(|l| on_port(l.ip));
        if self.state.spares.len() != before {
            log::warn!(
                "port {}: {} spare address(es) were removed from the port by someone else; forgetting them",
                current.id,
                before - self.state.spares.len()
            );
        }
        let info = info.clone();
        if !info.marked {
            let neutron = self.neutron().await?;
            port::mark(&neutron, &info, current).await?;
            if let Some(p) = self.state.port.as_mut() {
                p.marked = true;
            }
        }
        // Saved only when something was repaired: most ADDs change nothing here.
        if self.state.port.as_ref() != Some(&recorded) || self.state.spares.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Adds addresses to the port in one PUT, journalled so that neither a crash nor a lost
    /// answer can leak them. `first`: the port as just read.
    async fn allocate(&mut self, add: &port::Add, first: Option<Port>) -> Result<Vec<Lease>, IpamError> {
        let info = self.port().await?;
        let neutron = self.neutron().await?;
        let known = self.known(&info);
        let store = &self.store;
        let state = &mut self.state;
        let added = port::change_ips(&neutron, &info.id, add, &HashSet::new(), &known, first, |pending| {
            state.pending = Some(pending.clone());
            store.save(state).map_err(state_err(store.dir()))
        })
        .await;
        // The outcome is known now, unless the PUT went unanswered and the port could not be
        // read: then the journal stays for the next run. On success the caller saves the
        // leases together with the cleared journal.
        if !matches!(added, Err(IpamError::Unsettled(_))) {
            self.state.pending = None;
        }
        if added.is_err() {
            let _ = self.save();
        }
        added
    }

    /// Claims a free aligned block of `/prefix` of `subnet` on the port; its addresses
    /// become spares.
    async fn claim_block(&mut self, subnet: &SubnetInfo, prefix: u8) -> Result<(), IpamError> {
        let info = self.port().await?;
        for _ in 0..5 {
            let neutron = self.neutron().await?;
            let Some(block) = blocks::pick_free(&neutron, &subnet.id, prefix, &info.id).await? else {
                return Err(IpamError::Exhausted(format!(
                    "subnet {} ({}) has no free /{prefix} block left for this node",
                    subnet.id, subnet.cidr
                )));
            };
            match self.allocate(&port::Add::Exact(subnet.id.clone(), blocks::addresses(&block).collect()), None).await {
                Ok(leases) => {
                    log::info!("claimed block {block} on port {}", info.id);
                    self.state.blocks.push(block);
                    self.state.spares.extend(leases);
                    return self.save();
                }
                // Another node took an address of it meanwhile: look again.
                Err(IpamError::Cloud(e)) if e.kind() == Some("IpAddressAlreadyAllocated") => {
                    log::info!("block {block} was taken meanwhile: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::Contention("every free block was taken by other nodes while claiming; try again".into()))
    }

    /// Spares of blocks that no attachment uses any more: (blocks, their addresses).
    fn unused_blocks(&self) -> (Vec<IpNet>, Vec<IpAddr>) {
        let used: HashSet<IpAddr> = self.state.attachments.values().flat_map(|a| a.0.iter().map(|l| l.ip)).collect();
        let idle: Vec<IpNet> = self.state.blocks.iter().filter(|b| !used.iter().any(|ip| b.contains(ip))).copied().collect();
        let ips = self.state.spares.iter().map(|l| l.ip).filter(|ip| idle.iter().any(|b| b.contains(ip))).collect();
        (idle, ips)
    }

    /// Addresses no pod uses any more: into quarantine when it is configured, else (and
    /// beyond what the quarantine holds) off the port at once.
    async fn retire(&mut self, leases: Vec<Lease>) -> Result<(), IpamError> {
        if self.settings.quarantine_seconds == 0 || leases.is_empty() {
            let ips: Vec<IpAddr> = leases.iter().map(|l| l.ip).collect();
            return self.release(&ips).await;
        }
        let info = self.port().await?;
        let neutron = self.neutron().await?;
        let overflow = quarantine::enter(&neutron, &info.id, &mut self.state, leases, openstack::time::now_unix()).await?;
        self.save()?;
        self.release(&overflow).await
    }

    /// Releases the addresses whose quarantine is over (one PUT for all of them).
    async fn expire_quarantine(&mut self) -> Result<(), IpamError> {
        let done = quarantine::expired(&self.state, self.settings.quarantine_seconds, openstack::time::now_unix());
        if done.is_empty() {
            return Ok(());
        }
        self.release(&done).await?;
        let info = self.port().await?;
        let neutron = self.neutron().await?;
        quarantine::leave(&neutron, &info.id, &mut self.state, &done).await?;
        self.save()
    }

    /// Removes addresses from the port (those already gone are fine).
    async fn release(&mut self, ips: &[IpAddr]) -> Result<(), IpamError> {
        if ips.is_empty() {
            return Ok(());
        }
        let info = self.port().await?;
        let neutron = self.neutron().await?;
        let remove: HashSet<IpAddr> = ips.iter().copied().collect();
        let known = self.known(&info);
        port::change_ips(&neutron, &info.id, &port::Add::Nothing, &remove, &known, None, |_| Ok(())).await?;
        log::info!("released {ips:?} from port {}", info.id);
        Ok(())
    }

    /// The result: each address with its subnet's prefix and gateway, IPv4 first.
    fn result(&self, leases: &Leases) -> Result<CniResult, IpamError> {
        let info = self.state.port.as_ref().ok_or_else(|| IpamError::Config("no VM port recorded".into()))?;
        let ips = leases
            .0
            .iter()
            .map(|lease| {
                let subnet = info.pod_subnets().find(|s| same_family(s.cidr.addr(), lease.ip)).unwrap_or(&info.subnet);
                let address = IpNet::new(lease.ip, subnet.cidr.prefix_len()).map_err(|e| IpamError::Config(e.to_string()))?;
                Ok(IpConfig { address, gateway: subnet.gateway, interface: None })
            })
            .collect::<Result<_, IpamError>>()?;
        Ok(CniResult { ips, routes: self.settings.routes.clone(), ..Default::default() })
    }

    async fn add(&mut self, key: &str) -> Result<CniResult, IpamError> {
        if let Some(leases) = self.state.attachments.get(key).cloned() {
            log::info!("{key} already has {:?}", ips_of(&leases.0));
            return self.result(&leases);
        }
        self.recover().await?;
        self.expire_quarantine().await?;
        // One read of the port per ADD re-verifies the node's facts (and serves the PUT).
        let info = self.port().await?;
        let current = self.neutron().await?.get_port(&info.id).await?;
        self.verify(&current).await?;
        let mut first = Some(current);
        let pool = self.settings.pool;
        // IPv6 as found with the port, unless the config turned it off since.
        let ipv6 = self.settings.ipv6 == Ipv6::Required;
        let subnets: Vec<SubnetInfo> = info.pod_subnets().filter(|s| ipv6 || s.cidr.addr().is_ipv4()).cloned().collect();
        // With node blocks, each family without a spare claims a block of its own.
        if let Some(b) = self.settings.node_blocks {
            for subnet in &subnets {
                if self.spares_of(subnet) == 0 {
                    self.claim_block(subnet, b.prefix_for(&subnet.cidr)).await?;
                }
            }
        }
        // One PUT for every family without a spare: this attachment's address plus a full
        // pool of each; if a subnet cannot give that many, settle for the one address of
        // each family this ADD needs.
        let empty: Vec<String> = subnets.iter().filter(|s| self.spares_of(s) == 0).map(|s| s.id.clone()).collect();
        if self.settings.node_blocks.is_none() && !empty.is_empty() {
            let want = 1 + pool.map_or(0, |p| p.max);
            let each = |n: usize| port::Add::Any(empty.iter().map(|id| (id.clone(), n)).collect());
            let added = match self.allocate(&each(want), first.take()).await {
                Err(IpamError::Cloud(e)) if want > 1 && e.kind() == Some("IpAddressGenerationFailure") => {
                    log::warn!("subnet cannot fill the pool ({e}); allocating one address");
                    self.allocate(&each(1), None).await?
                }
                other => other?,
            };
            self.state.spares.extend(added);
        }
        // Lowest spare first: keeps a node's addresses dense and predictable.
        self.state.spares.sort_by_key(|l| l.ip);
        let mut leases = Vec::new();
        for subnet in &subnets {
            match self.state.spares.iter().position(|l| same_family(l.ip, subnet.cidr.addr())) {
                Some(i) => leases.push(self.state.spares.remove(i)),
                None => {
                    // What Neutron did add stays recorded as spares (GC trims them).
                    self.state.spares.extend(leases);
                    self.save()?;
                    return Err(IpamError::Contention(format!("Neutron added no address of subnet {} to the port", subnet.id)));
                }
            }
        }
        let leases = Leases(leases);
        self.state.attachments.insert(key.to_string(), leases.clone());
        if let Err(e) = self.save() {
            // Cannot record it: give it back rather than leak it.
            let _ = self.release(&ips_of(&leases.0)).await;
            return Err(e);
        }
        log::info!("{key} -> {:?}", ips_of(&leases.0));
        if let Some(p) = pool {
            let refill: Vec<(String, usize)> = subnets
                .iter()
                .map(|s| (s.id.clone(), self.spares_of(s)))
                .filter(|(_, n)| *n < p.min)
                .map(|(id, n)| (id, p.max - n))
                .collect();
            if !refill.is_empty() {
                match self.allocate(&port::Add::Any(refill.clone()), None).await {
                    Ok(added) => {
                        self.state.spares.extend(added);
                        self.save()?;
                    }
                    // The ADD itself succeeded; the next one refills.
                    Err(e) => log::warn!("pool refill of {refill:?} failed: {e}"),
                }
            }
        }
        self.result(&leases)
    }

    /// veth-route sets the pod MTU before IPAM runs, from its own `mtu` or else the uplink's
    /// (which Neutron set): say when a configured one is larger than what the network
    /// carries (packets would be dropped).
    fn warn_mtu(&self, configured: Option<u64>) {
        let Some(net) = self.state.port.as_ref().and_then(|p| p.network_mtu) else { return };
        if let Some(m) = configured.filter(|m| *m > u64::from(net)) {
            log::warn!("\"mtu\": {m} is larger than the network's MTU {net}: set \"mtu\": {net}, or leave it out to take the uplink's");
        }
    }

    async fn del(&mut self, key: &str, prev: &[IpAddr]) -> Result<(), IpamError> {
        self.recover().await?;
        let Some(leases) = self.state.attachments.get(key).cloned() else {
            return self.del_unrecorded(key, prev).await;
        };
        self.expire_quarantine().await?;
        let mut retired = Vec::new();
        for lease in &leases.0 {
            let family_spares = self.state.spares.iter().filter(|l| same_family(l.ip, lease.ip)).count();
            match (self.settings.node_blocks, self.settings.pool) {
                // A block's addresses stay on the port (GC releases idle blocks).
                (Some(_), _) => self.state.spares.push(lease.clone()),
                (None, Some(p)) if family_spares < p.max => self.state.spares.push(lease.clone()),
                _ => retired.push(lease.clone()),
            }
        }
        // Forgotten first, so that the state `retire` saves never holds an address twice;
        // on failure nothing is saved and the runtime's retry repeats the DEL. All
        // families go in one PUT.
        self.state.attachments.remove(key);
        if !retired.is_empty() {
            self.retire(retired).await?;
        }
        self.save()?;
        log::info!("{key}: released {:?}", ips_of(&leases.0));
        Ok(())
    }

    /// DEL of an attachment this node has no record of (already released, or the state was
    /// lost): the runtime's prevResult names the address; release it if it is still on our
    /// port and nobody here holds it.
    async fn del_unrecorded(&mut self, key: &str, prev: &[IpAddr]) -> Result<(), IpamError> {
        let held: HashSet<IpAddr> = self.state.held().map(|l| l.ip).collect();
        let candidates: Vec<IpAddr> = prev.iter().copied().filter(|ip| !held.contains(ip)).collect();
        if candidates.is_empty() {
            log::info!("{key}: nothing allocated (already released)");
            return Ok(());
        }
        let info = self.port().await?;
        let current = self.neutron().await?.get_port(&info.id).await?;
        let orphans: Vec<IpAddr> = candidates
            .into_iter()
            .filter(|ip| !info.own().any(|a| a == *ip) && current.fixed_ips.iter().any(|f| f.ip_address == *ip))
            .collect();
        if orphans.is_empty() {
            log::info!("{key}: nothing allocated (already released)");
            return Ok(());
        }
        log::warn!("{key}: no record, but prevResult's {orphans:?} is still on port {}; releasing it", info.id);
        self.release(&orphans).await
    }

    async fn gc(&mut self, valid: &HashSet<String>) -> Result<(), IpamError> {
        self.recover().await?;
        let stale: Vec<String> = self.state.attachments.keys().filter(|k| !valid.contains(*k)).cloned().collect();
        let mut freed = Vec::new();
        for k in &stale {
            if let Some(leases) = self.state.attachments.remove(k) {
                self.state.spares.extend(leases.0);
            }
        }
        let mut idle_blocks = Vec::new();
        if self.settings.node_blocks.is_some() {
            let (idle, ips) = self.unused_blocks();
            idle_blocks = idle;
            freed.extend(ips);
        } else {
            // `max` spares of each family stay.
            let keep = self.settings.pool.map_or(0, |p| p.max);
            self.state.spares.sort_by_key(|l| l.ip);
            for v4 in [true, false] {
                freed.extend(self.state.spares.iter().filter(|l| l.ip.is_ipv4() == v4).skip(keep).map(|l| l.ip));
            }
        }
        self.expire_quarantine().await?;
        let retired: Vec<Lease> = self.state.spares.iter().filter(|l| freed.contains(&l.ip)).cloned().collect();
        self.state.spares.retain(|l| !freed.contains(&l.ip));
        self.retire(retired).await?;
        self.state.blocks.retain(|b| !idle_blocks.contains(b));
        self.save()?;
        log::info!("GC: {} stale attachment(s), released {freed:?}", stale.len());
        Ok(())
    }
}

impl Plugin for Ipam {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let (conf, settings) = settings_of(req)?;
        let key = attachment_key(&req.inv.container_id, &req.inv.ifname);
        let mtu = conf.plugin.get("mtu").and_then(serde_json::Value::as_u64);
        block_on(async {
            let mut op = Op::open("ADD", settings)?;
            let result = op.add(&key).await?;
            op.warn_mtu(mtu);
            Ok(result)
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let (conf, settings) = settings_of(req)?;
        let key = attachment_key(&req.inv.container_id, &req.inv.ifname);
        // A malformed prevResult does not block a DEL (parse_config drops it): it only
        // helps when our state is gone.
        let prev: Vec<IpAddr> = conf.prev_result.as_ref().map(|r| r.ips.iter().map(|c| c.address.addr()).collect()).unwrap_or_default();
        block_on(async {
            let mut op = Op::open("DEL", settings)?;
            op.del(&key, &prev).await
        })
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let (_, settings) = settings_of(req)?;
        let key = attachment_key(&req.inv.container_id, &req.inv.ifname);
        block_on(async {
            let mut op = Op::open("CHECK", settings)?;
            let leases =
                op.state.attachments.get(&key).cloned().ok_or_else(|| IpamError::Config(format!("no address recorded for {key}")))?;
            let info = op.port().await?;
            let current = op.neutron().await?.get_port(&info.id).await?;
            if let Some(lease) = leases.0.iter().find(|l| !current.fixed_ips.iter().any(|f| f.ip_address == l.ip)) {
                return Err(IpamError::NoPort(format!("{} of {key} is no longer on port {}", lease.ip, info.id)));
            }
            Ok(())
        })
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let (_, settings) = settings_of(req)?;
        let unavailable = |e: CniError| CniError::new(ErrorCode::PluginNotAvailable, e.msg).with_details(e.details);
        block_on(async {
            let http = settings.http.build()?;
            openstack::keystone::check_reachable(&http, settings.auth.auth_url()).await?;
            let neutron = client(&settings).await?;
            neutron.ping().await?;
            Ok(())
        })
        .map_err(unavailable)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let (conf, settings) = settings_of(req)?;
        let valid: HashSet<String> =
            conf.valid_attachments.unwrap_or_default().iter().map(|a| attachment_key(&a.container_id, &a.ifname)).collect();
        block_on(async {
            let mut op = Op::open("GC", settings)?;
            op.gc(&valid).await
        })
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn ips_of(leases: &[Lease]) -> Vec<IpAddr> {
    leases.iter().map(|l| l.ip).collect()
}
