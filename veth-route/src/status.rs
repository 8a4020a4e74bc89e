//! STATUS: can this node serve ADDs now? Forwarding can be enabled, the gateway can be
//! placed, iptables works when masquerading, the eBPF programs load when `fastPath` is
//! `required`, and the IPAM plugin says it is ready.

use std::fs::OpenOptions;

use cni::{delegate, CniError, ErrorCode, Request, Verb, Version};

use crate::config::{self, GatewayMode};
use crate::error::Result;
use crate::netns::with_netlink;
use crate::{datapath, gateway};

fn unavailable(msg: String, details: String) -> crate::error::Error {
    CniError::new(ErrorCode::PluginNotAvailable, msg).with_details(details).into()
}

/// Run STATUS.
pub fn status(req: &Request) -> Result<()> {
    let conf = config::parse(req)?;
    config::init_logging(&conf);
    if let Err(e) = OpenOptions::new().write(true).open("/proc/sys/net/ipv4/ip_forward") {
        return Err(unavailable("cannot enable IPv4 forwarding".into(), e.to_string()));
    }
    if conf.plugin.gateway_mode == GatewayMode::Device {
        let plugin = &conf.plugin;
        match with_netlink(|h| async move { gateway::ensure_device(&h, plugin).await }) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(unavailable(
                    format!("cannot create gateway device {}", plugin.gateway_device),
                    "kernel has no dummy device type".into(),
                ))
            }
            Err(e) => return Err(unavailable(format!("gateway device {} unusable", plugin.gateway_device), e.to_string())),
        }
    }
    if conf.plugin.ip_masq {
        let ok = std::process::Command::new("iptables").args(["-w", "-t", "nat", "-S", "POSTROUTING"]).output();
        if !ok.as_ref().is_ok_and(|o| o.status.success()) {
            let why = ok.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_else(|e| e.to_string());
            return Err(unavailable("ipMasq is set but iptables does not work".into(), why));
        }
    }
    if let Err(e) = datapath::status(&conf.plugin.datapath) {
        return Err(unavailable("fastPath is required but the eBPF fast path cannot be loaded here".into(), e.to_string()));
    }
    if let Some(ipam) = conf.ipam_type() {
        if delegate::supports(ipam, &req.inv, Version::V1_1_0) {
            delegate::run(ipam, &req.inv, Verb::Status, &req.config)?;
        } else {
            log::debug!("IPAM {ipam} predates CNI 1.1.0: no STATUS to ask");
        }
    }
    Ok(())
}
