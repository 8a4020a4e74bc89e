//! tcnp-ipam: pod addresses as extra fixed IPs of the VM's own Neutron port ("mix" mode).
//!
//! Modules: [`blocks`] (node-affine blocks), [`config`] (the `ipam` section), [`cloud_config`]
//! (`openstackConf`: credentials, clouds.yaml, `OS_*`), [`host`] (uplink facts in the VM's netns),
//! [`port`] (find/mark the VM port, race-free fixed-IP changes), [`quarantine`] (released
//! addresses held back), [`resend`] (idempotent writes whose answer was lost), [`store`] (node lock and
//! state), [`token_cache`] (0600 Keystone token file), [`ipam`] (the verbs), [`error`]
//! (CNI codes).

mod blocks;
mod cloud_config;
mod config;
mod error;
mod host;
mod ipam;
mod port;
mod quarantine;
mod resend;
mod store;
mod token_cache;

fn main() {
    std::process::exit(cni::plugin::run(&ipam::Ipam));
}
