//! GC: remove host veths (with their routes), masquerade rules, IPv6 rpfilter rules and datapath entries of
//! this network's attachments that are not in `cni.dev/valid-attachments`, and let IPAM
//! release their addresses (its own GC when it speaks 1.1.0, else DEL per stale attachment).

use std::collections::HashSet;

use cni::{delegate, CniError, ErrorCode, Invocation, Request, Verb, Version};

use crate::config;
use crate::datapath;
use crate::error::{Error, Result};
use crate::netlink;
use crate::netns::Netlink;
use crate::{antispoof6, masq, names, proxy_neigh};

/// Run GC: every step runs even when an earlier one failed, so the IPAM plugin is always
/// reached and addresses are released; the failures are reported together.
pub fn gc(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let valid = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "GC requires \"cni.dev/valid-attachments\""))?;
    let keep: HashSet<(String, String)> = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    let network = conf.name.as_str();
    let mut failures = Failures::default();
    let mut stale: Vec<(String, String)> = Vec::new();

    let nl = match Netlink::open(None) {
        Ok(nl) => Some(nl),
        Err(e) => {
            failures.note("open netlink", e);
            None
        }
    };

    // Host veths carry the attachment in their alias.
    let (keep_ref, failures_ref) = (&keep, &mut failures);
    let removed = nl.as_ref().map(|nl| {
        nl.host(|h| async move {
            let mut removed = Vec::new();
            for link in netlink::links(&h).await? {
                let Some((id, ifname)) = link.alias.as_deref().and_then(|a| names::parse_tag(a, network)) else { continue };
                let key = (id.to_string(), ifname.to_string());
                if keep_ref.contains(&key) {
                    continue;
                }
                log::info!("GC: removing host veth {} of stale attachment {id}/{ifname}", link.name);
                match netlink::delete_link(&h, &link.name).await {
                    Ok(_) => removed.push(key),
                    Err(e) => failures_ref.note(format!("host veth {}", link.name), e),
                }
            }
            Ok::<_, Error>(removed)
        })
    });
    match removed {
        Some(Ok(r)) => stale.extend(r),
        Some(Err(e)) => failures.note("list host veths", e),
        None => {}
    }

    if conf.plugin.ip_masq {
        match masq::attachments(network) {
            Ok(keys) => {
                for key in keys.into_iter().filter(|k| !keep.contains(k)) {
                    log::info!("GC: removing masquerade rules of stale attachment {}/{}", key.0, key.1);
                    let chain = names::masq_chain(network, &key.0, &key.1);
                    if let Err(e) = masq::teardown(&chain, true) {
                        failures.note(format!("masquerade chain {chain}"), e);
                    }
                    if !stale.contains(&key) {
                        stale.push(key);
                    }
                }
                match masq::remove_orphan_chains() {
                    Ok(gone) if !gone.is_empty() => log::info!("GC: removed masquerade chains without rules {gone:?}"),
                    Ok(_) => {}
                    Err(e) => failures.note("orphan masquerade chains", e),
                }
            }
            Err(e) => failures.note("list masquerade chains", e),
        }
    }

    if conf.plugin.datapath.anti_spoof {
        // Only dual-stack pods have one.
        match antispoof6::attachments(network) {
            Ok(keys) => {
                for key in keys.into_iter().filter(|k| !keep.contains(k)) {
                    log::info!("GC: removing the IPv6 rpfilter rule of stale attachment {}/{}", key.0, key.1);
                    if let Err(e) = antispoof6::unguard(&names::tag(network, &key.0, &key.1)) {
                        failures.note(format!("IPv6 rpfilter rule of {}/{}", key.0, key.1), e);
                    }
                    if !stale.contains(&key) {
                        stale.push(key);
                    }
                }
            }
            Err(e) => failures.note("list IPv6 rpfilter rules", e),
        }
    }

    if let (Some(pn), Some(nl)) = (&conf.plugin.proxy_neighbor, &nl) {
        // After the stale veths are gone: entries whose pod route vanished with them.
        match nl.block_on(async move { proxy_neigh::gc(pn).await.map_err(Error::from) }) {
            Ok(released) if !released.is_empty() => log::info!("GC: released proxy neighbour entries {released:?}"),
            Ok(_) => {}
            Err(e) => failures.note("proxy neighbour entries", e),
        }
    }

    if let Err(e) = datapath::gc(&conf.plugin.datapath) {
        failures.note("datapath", Error::from(e));
    }

    if let Some(ipam) = conf.ipam_type() {
        if delegate::supports(ipam, &req.inv, Version::V1_1_0) {
            if let Err(e) = delegate::run(ipam, &req.inv, Verb::Gc, &req.config) {
                failures.note(format!("IPAM {ipam} GC"), Error::from(e));
            }
        } else {
            // An older IPAM has no GC: release what we know is stale, one DEL each.
            for (id, ifname) in &stale {
                let inv = Invocation { verb: Verb::Del, container_id: id.clone(), ifname: ifname.clone(), netns: None, ..req.inv.clone() };
                if let Err(e) = delegate::run(ipam, &inv, Verb::Del, &req.config) {
                    failures.note(format!("IPAM {ipam} DEL of {id}/{ifname}"), Error::from(e));
                }
            }
        }
    }
    failures.into_result()
}

/// What GC could not do, in order; the first failure's code is the answer's code.
#[derive(Default)]
struct Failures(Vec<(String, CniError)>);

impl Failures {
    fn note(&mut self, what: impl Into<String>, e: Error) {
        let what = what.into();
        log::error!("GC: {what}: {e}");
        self.0.push((what, e.into()));
    }

    fn into_result(self) -> Result<()> {
        let Some((_, first)) = self.0.first() else { return Ok(()) };
        let listed: Vec<String> = self.0.iter().map(|(what, e)| format!("{what}: {e}")).collect();
        Err(CniError::new(first.code, format!("GC finished with {} failure(s); everything else was collected", self.0.len()))
            .with_details(listed.join("; "))
            .into())
    }
}
