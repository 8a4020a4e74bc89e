//! tcnp-ipam test fixtures: a "node" is a namespace playing the VM, whose uplink `eth0`
//! carries the MAC and primary address of its own Neutron port, with the local OpenStack
//! relayed into it ([`StackVm`]), a private IPAM data directory, and the plugin run as a
//! runtime would.

#![allow(dead_code)]

use std::net::IpAddr;

use serde_json::{json, Value};
use testbed::cni_runner::{self, Attachment, Outcome};
use testbed::netns::{NetNs, TempDir};
pub use testbed::openstack::ipam_binary;
use testbed::openstack::{block_on, Stack, StackVm};

/// A simulated VM node with its Neutron port and IPAM data directory.
pub struct Node<'a> {
    /// The stack.
    pub stack: &'a Stack,
    /// The VM namespace and port (the port is deleted on drop).
    pub vm: StackVm<'a>,
    /// The VM's Neutron port id.
    pub port_id: String,
    /// The port's MAC (= eth0's).
    pub mac: String,
    /// The VM's own address.
    pub primary: IpAddr,
    /// The network.
    pub network_id: String,
    /// The IPAM data directory (the node's state).
    pub data: TempDir,
}

impl<'a> Node<'a> {
    /// A node on the stack's tenant network.
    pub fn new(stack: &'a Stack) -> Node<'a> {
        Self::on(stack, &stack.env().network_id.clone())
    }

    /// A node on `network_id`.
    pub fn on(stack: &'a Stack, network_id: &str) -> Node<'a> {
        Self::in_project(stack, network_id, None)
    }

    /// A node whose port belongs to `project_id` (the admin project when None).
    pub fn in_project(stack: &'a Stack, network_id: &str, project_id: Option<&str>) -> Node<'a> {
        let vm = StackVm::in_project(stack, network_id, project_id).expect("VM namespace and port");
        Node {
            stack,
            port_id: vm.port.id.clone(),
            mac: vm.mac.clone(),
            primary: vm.primary,
            network_id: network_id.to_string(),
            data: TempDir::new("ipd"),
            vm,
        }
    }

    /// The namespace playing the VM (the plugin runs here).
    pub fn ns(&self) -> &NetNs {
        &self.vm.ns
    }

    /// The `ipam` section for this node (password from the stack's 0600 file), in the plain
    /// mode (`"pool": {"max": 0}`): these tests account for every address on the port, which
    /// the default pool's spares would blur. The defaults as users get them:
    /// [`Node::default_ipam`].
    pub fn ipam(&self) -> Value {
        let mut ipam = self.default_ipam();
        ipam["pool"] = json!({ "max": 0 });
        ipam
    }

    /// The `ipam` section with tcnp-ipam's defaults (a small warm pool).
    pub fn default_ipam(&self) -> Value {
        let mut ipam = self.stack.ipam_config(&self.network_id);
        ipam["dataDir"] = json!(self.data.path());
        ipam["logFile"] = json!(self.data.path().join("tcnp-ipam.log"));
        ipam["logLevel"] = json!("debug");
        ipam
    }

    /// A network config around `ipam`.
    pub fn conf(&self, ipam: Value) -> Value {
        json!({ "cniVersion": "1.0.0", "name": "ipamtest", "type": "veth-route", "ipam": ipam })
    }

    /// Runs the plugin for `command` and container `cid` (ifname eth0) with `conf`.
    pub fn run(&self, command: &str, cid: &str, conf: &Value) -> Outcome {
        self.run_env(command, cid, conf, &[])
    }

    /// As [`Node::run`], with extra environment variables (as a runtime passes its own).
    pub fn run_env(&self, command: &str, cid: &str, conf: &Value, env: &[(&str, &str)]) -> Outcome {
        let att = Attachment { container_id: cid.to_string(), netns: Some(self.vm.ns.path().to_path_buf()), ifname: "eth0".into() };
        let att = (!cid.is_empty()).then_some(att);
        cni_runner::exec(ipam_binary(), &self.vm.ns, command, att.as_ref(), env, conf.to_string().as_bytes())
    }

    /// ADD with the default config; returns the allocated address.
    pub fn add(&self, cid: &str) -> IpAddr {
        let out = self.run("ADD", cid, &self.conf(self.ipam()));
        address_of(&out.result())
    }

    /// DEL with the default config; asserts success.
    pub fn del(&self, cid: &str) {
        self.run("DEL", cid, &self.conf(self.ipam())).assert_ok();
    }

    /// The port's addresses now.
    pub fn port_ips(&self) -> Vec<IpAddr> {
        self.port().fixed_ips.iter().map(|f| f.ip_address).collect()
    }

    /// The port now.
    pub fn port(&self) -> openstack::Port {
        block_on(self.stack.neutron().get_port(&self.port_id)).expect("get port")
    }

    /// The node's state file.
    pub fn state(&self) -> Value {
        let path = self.data.path().join("ipamtest/state.json");
        std::fs::read(&path).map(|b| serde_json::from_slice(&b).expect("state JSON")).unwrap_or(Value::Null)
    }

    /// The attachments recorded in the node's state.
    pub fn recorded(&self) -> usize {
        self.state()["attachments"].as_object().map_or(0, |m| m.len())
    }

    /// The log file (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("tcnp-ipam.log")).unwrap_or_default()
    }
}

/// The address (without prefix) of a result's first IP.
pub fn address_of(result: &Value) -> IpAddr {
    let cidr = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("result has no IP: {result}"));
    cidr.split('/').next().unwrap().parse().expect("address")
}
