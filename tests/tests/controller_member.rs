//! vrouter-route-controller as operators run it: not as admin but as a `member` of the
//! project that owns the router and the VM ports (the Neutron policy in
//! vrouter-route-controller/README.md), authenticated through `clouds.yaml` named by
//! `OS_CLOUD` with an application credential, and by password with separate user and
//! project domains. Real Keystone and Neutron.

mod controller_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output};

use controller_support::{bin, MANAGED_TAG, PRIMARY_PREFIX};
use ipnet::{IpNet, Ipv4Net};
use openstack::{FixedIp, FixedIpRequest};
use serde_json::json;
use testbed::netns::{unique, TempDir};
use testbed::openstack::{block_on, member, shared, write_private, Member, Stack};

/// The member's router and VM ports (created by admin in the member's project, as Nova and
/// Heat would), removed on drop with the member's network.
struct Project<'a> {
    stack: &'a Stack,
    m: Member,
    router_id: String,
    ports: Vec<String>,
}

impl<'a> Project<'a> {
    fn new(stack: &'a Stack) -> Project<'a> {
        let m = member(stack);
        let n = stack.neutron();
        let router_id = block_on(async {
            let id = n.create_router(&unique("mrouter"), json!({ "project_id": m.project_id })).await.expect("router").id;
            n.add_router_interface(&id, &m.subnet_id).await.expect("router interface");
            id
        });
        Project { stack, m, router_id, ports: Vec::new() }
    }

    /// A VM port of the member's project (of admin's when `foreign`), marked as tcnp-ipam
    /// marks it, with own address 10.94.0.`own` and these pod addresses.
    fn vm(&mut self, foreign: bool, own: u8, pods: &[u8]) -> String {
        let n = self.stack.neutron();
        let mut fields = json!({ "name": unique("mvm"), "device_owner": "compute:nova" });
        if !foreign {
            fields["project_id"] = json!(self.m.project_id);
        }
        let port = block_on(n.create_port(&self.m.network_id, fields)).expect("VM port");
        self.ports.push(port.id.clone());
        block_on(n.set_port_tags(&port.id, &[MANAGED_TAG.to_string(), format!("{PRIMARY_PREFIX}{}", ip(own))])).expect("tags");
        self.set_pods(&port.id, own, pods);
        port.id
    }

    fn set_pods(&self, port_id: &str, own: u8, pods: &[u8]) {
        let ips: Vec<FixedIpRequest> = std::iter::once(own)
            .chain(pods.iter().copied())
            .map(|i| FixedIpRequest::Address(FixedIp { subnet_id: self.m.subnet_id.clone(), ip_address: IpAddr::V4(ip(i)) }))
            .collect();
        block_on(self.stack.neutron().update_port_fixed_ips(port_id, &ips, json!({}), None)).expect("pod addresses");
    }

    fn routes(&self) -> BTreeSet<(IpNet, IpAddr)> {
        let r = block_on(self.stack.neutron().get_router(&self.router_id)).expect("router");
        r.routes.iter().map(|r| (r.destination, r.nexthop)).collect()
    }

    /// `--once` with only `env` in the environment (no admin credentials anywhere).
    fn controller_once(&self, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin("vrouter-route-controller"));
        c.args(["--once", "--cluster-id", "member", "--network", &self.m.network_id, "--router", &self.router_id]).env_clear();
        c.envs(env.iter().copied());
        c.output().expect("run controller")
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        let n = self.stack.neutron();
        let (router, subnet, network, ports) =
            (self.router_id.clone(), self.m.subnet_id.clone(), self.m.network_id.clone(), self.ports.clone());
        block_on(async move {
            let _ = n.update_router(&router, json!({ "routes": [] })).await;
            let _ = n.remove_router_interface(&router, &subnet).await;
            let _ = n.delete_router(&router).await;
            for p in &ports {
                let _ = n.delete_port(p).await;
            }
            let _ = n.delete_network(&network).await;
        });
    }
}

fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 94, 0, i)
}

fn host_route(pod: u8, via: u8) -> (IpNet, IpAddr) {
    (IpNet::V4(Ipv4Net::new(ip(pod), 32).unwrap()), IpAddr::V4(ip(via)))
}

fn assert_ran(out: &Output, how: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{how}: controller failed\nstdout: {}\nstderr: {stderr}", String::from_utf8_lossy(&out.stdout));
    stderr
}

#[test]
fn a_project_member_routes_its_pods_by_application_credential_and_by_password() {
    let stack = shared();
    let mut p = Project::new(stack);
    // Pods .20 and .23 cannot aggregate: each gets a /32.
    let vm = p.vm(false, 8, &[20, 23]);
    // A VM of another project (admin's) on the member's network: Neutron's `get_port` lets
    // the network's owner read it, so it is routed too.
    p.vm(true, 9, &[30]);
    let dir = TempDir::new("mctl");

    // clouds.yaml named by OS_CLOUD, with the member's application credential.
    let clouds = dir.path().join("clouds.yaml");
    let yaml = format!(
        "clouds:\n  routes:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      \
         application_credential_id: {}\n      application_credential_secret: {}\n    region_name: {}\n    interface: public\n",
        stack.env().auth_url,
        p.m.app_id,
        p.m.app_secret,
        stack.env().region
    );
    write_private(&clouds, yaml.as_bytes()).unwrap();
    let out = p.controller_once(&[("OS_CLOUD", "routes"), ("OS_CLIENT_CONFIG_FILE", clouds.to_str().unwrap())]);
    let log = assert_ran(&out, "application credential");
    assert_eq!(p.routes(), BTreeSet::from([host_route(20, 8), host_route(23, 8), host_route(30, 9)]), "{log}");
    assert!(!log.contains(&p.m.app_secret), "the secret leaked into the log");

    // A pod goes; the member's password, user domain by name and project domain by id.
    p.set_pods(&vm, 8, &[20]);
    let pw_file = dir.path().join("password");
    write_private(&pw_file, p.m.password.as_bytes()).unwrap();
    let env = [
        ("OS_AUTH_URL", stack.env().auth_url.as_str()),
        ("OS_USERNAME", p.m.user.as_str()),
        ("OS_PASSWORD_FILE", pw_file.to_str().unwrap()),
        ("OS_PROJECT_NAME", p.m.project.as_str()),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "default"),
        ("OS_REGION_NAME", stack.env().region.as_str()),
    ];
    let log = assert_ran(&p.controller_once(&env), "password");
    assert_eq!(p.routes(), BTreeSet::from([host_route(20, 8), host_route(30, 9)]), "{log}");
    assert!(!log.contains(&p.m.password), "the password leaked into the log");
}
