//! tcnp-ipam as operators run it: not as admin but as a `member` of the project that owns
//! the VM and its network (Neutron's default policy, see tcnp-ipam/README.md "Neutron
//! policy"), authenticated by password with separate user and project domains, by an
//! application credential, and through `clouds.yaml` named by `OS_CLOUD` in the runtime's
//! environment (no `openstackConf` at all). Real Keystone and Neutron.

mod ipam_support;

use ipam_support::{address_of, Node};
use serde_json::{json, Value};
use testbed::netns::{unique, TempDir};
use testbed::openstack::{block_on, member, shared, write_private};

fn round_trip(node: &Node, conf: &Value, env: &[(&str, &str)], how: &str) {
    let cid = unique("c");
    let out = node.run_env("ADD", &cid, conf, env);
    assert_eq!(out.exit, 0, "{how}: {}\n{}", out.stdout, node.log());
    let ip = address_of(&out.result());
    assert!(node.port_ips().contains(&ip), "{how}: {ip} not on the port");
    let tags = node.port().tags;
    assert!(tags.contains(&"veth-route:managed".to_string()), "{how}: {tags:?}");
    let out = node.run_env("DEL", &cid, conf, env);
    assert_eq!(out.exit, 0, "{how}: {}", out.stdout);
    assert_eq!(node.port_ips(), vec![node.primary], "{how}");
}

#[test]
fn a_project_member_allocates_by_password_application_credential_and_clouds_yaml() {
    let stack = shared();
    let m = member(stack);
    {
        let node = Node::in_project(stack, &m.network_id, Some(&m.project_id));
        let dir = TempDir::new("mcred");

        // Password, user domain by name, project domain by id.
        let mut ipam = node.ipam();
        let pw_file = dir.path().join("password");
        write_private(&pw_file, m.password.as_bytes()).unwrap();
        ipam["openstackConf"] = json!({
            "authUrl": stack.env().auth_url, "username": m.user, "passwordFile": pw_file, "project": m.project,
            "userDomainName": "Default", "projectDomainId": "default", "region": stack.env().region,
        });
        round_trip(&node, &node.conf(ipam.clone()), &[], "password");

        // Application credential (id + secret file).
        let secret_file = dir.path().join("app-secret");
        write_private(&secret_file, m.app_secret.as_bytes()).unwrap();
        ipam["openstackConf"] = json!({
            "authUrl": stack.env().auth_url, "applicationCredentialId": m.app_id,
            "applicationCredentialSecretFile": secret_file,
        });
        let mut conf = node.conf(ipam.clone());
        conf["name"] = json!("ipamtest-appcred");
        round_trip(&node, &conf, &[], "application credential");

        // No openstackConf: OS_CLOUD names a clouds.yaml cloud in the runtime's environment.
        let clouds = dir.path().join("clouds.yaml");
        let yaml = format!(
            "clouds:\n  pods:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      \
             application_credential_id: {}\n      application_credential_secret: {}\n    region_name: {}\n    interface: public\n",
            stack.env().auth_url,
            m.app_id,
            m.app_secret,
            stack.env().region
        );
        write_private(&clouds, yaml.as_bytes()).unwrap();
        ipam.as_object_mut().unwrap().remove("openstackConf");
        let mut conf = node.conf(ipam);
        conf["name"] = json!("ipamtest-cloud");
        let env = [("OS_CLOUD", "pods"), ("OS_CLIENT_CONFIG_FILE", clouds.to_str().unwrap())];
        round_trip(&node, &conf, &env, "clouds.yaml");
        assert!(!node.log().contains(&m.app_secret) && !node.log().contains(&m.password), "a secret leaked into the log");
    }
    block_on(stack.neutron().delete_network(&m.network_id)).unwrap();
}
