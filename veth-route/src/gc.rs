//! GC: remove host veths (with their routes), masquerade rules and datapath entries of
//! this network's attachments that are not in `cni.dev/valid-attachments`, and let IPAM
//! release their addresses (its own GC when it speaks 1.1.0, else DEL per stale attachment).

use std::collections::HashSet;

use cni::{delegate, CniError, ErrorCode, Invocation, Request, Verb, Version};

use crate::config;
use crate::datapath;
use crate::error::{Error, Result};
use crate::netlink;
use crate::netns::{block_on, with_netlink};
use crate::{masq, names, proxy_neigh};

/// Run GC.
pub fn gc(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    let valid = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "GC requires \"cni.dev/valid-attachments\""))?;
    let keep: HashSet<(String, String)> = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    let mut stale: Vec<(String, String)> = Vec::new();

    // Host veths carry the attachment in their alias.
    let network = conf.name.clone();
    let (keep_ref, network_ref) = (&keep, &network);
    let removed = with_netlink(|h| async move {
        let mut removed = Vec::new();
        for link in netlink::links(&h).await? {
            let Some((id, ifname)) = link.alias.as_deref().and_then(|a| names::parse_tag(a, network_ref)) else { continue };
            let key = (id.to_string(), ifname.to_string());
            if !keep_ref.contains(&key) {
                log::info!("GC: removing host veth {} of stale attachment {id}/{ifname}", link.name);
                netlink::delete_link(&h, &link.name).await?;
                removed.push(key);
            }
        }
        Ok::<_, Error>(removed)
    })?;
    stale.extend(removed);

    if conf.plugin.ip_masq {
        for key in masq::attachments(&network)? {
            if !keep.contains(&key) {
                log::info!("GC: removing masquerade rules of stale attachment {}/{}", key.0, key.1);
                masq::teardown(&names::masq_chain(&network, &key.0, &key.1))?;
                if !stale.contains(&key) {
                    stale.push(key);
                }
            }
        }
    }

    if let Some(pn) = &conf.plugin.proxy_neighbor {
        // After the stale veths are gone: entries whose pod route vanished with them.
        let released = block_on(async move { proxy_neigh::gc(pn).await.map_err(Error::from) })?;
        if !released.is_empty() {
            log::info!("GC: released proxy neighbour entries {released:?}");
        }
    }

    datapath::gc(&conf.plugin.datapath)?;

    if let Some(ipam) = conf.ipam_type() {
        if delegate::supports(ipam, &req.inv, Version::V1_1_0) {
            delegate::run(ipam, &req.inv, Verb::Gc, &req.config)?;
        } else {
            // An older IPAM has no GC: release what we know is stale, one DEL each.
            for (id, ifname) in &stale {
                let inv = Invocation { verb: Verb::Del, container_id: id.clone(), ifname: ifname.clone(), netns: None, ..req.inv.clone() };
                delegate::run(ipam, &inv, Verb::Del, &req.config)?;
            }
        }
    }
    Ok(())
}
