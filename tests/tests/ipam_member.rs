//! tcnp-ipam as operators run it: not as admin but as a `member` of the project that owns
//! the VM and its network (Neutron's default policy, see tcnp-ipam/README.md "Neutron
//! policy"), authenticated by password with separate user and project domains, by an
//! application credential, and through `clouds.yaml` named by `OS_CLOUD` in the runtime's
//! environment (no `openstackConf` at all). Real Keystone and Neutron.

mod ipam_support;

use ipam_support::{address_of, Node};
use serde_json::{json, Value};
use testbed::netns::{unique, TempDir};
use testbed::openstack::{block_on, shared, write_private, Stack};

/// A project with a `member` user, an application credential of that user, and a network
/// with a subnet owned by the project.
struct Member {
    project_id: String,
    project: String,
    user: String,
    password: String,
    app_id: String,
    app_secret: String,
    network_id: String,
}

fn keystone(stack: &Stack, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    block_on(async {
        let mut req = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", stack.env().auth_url))
            .header("X-Auth-Token", token)
            .header("Connection", "close");
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    })
}

fn member(stack: &Stack) -> Member {
    let admin = block_on(stack.neutron().session().token()).unwrap().value.expose().to_string();
    let name = unique("proj");
    let project_id =
        keystone(stack, &admin, reqwest::Method::POST, "/projects", json!({ "project": { "name": name, "domain_id": "default" } }))
            ["project"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let user = unique("user");
    let password = unique("pw");
    let user_id = keystone(
        stack,
        &admin,
        reqwest::Method::POST,
        "/users",
        json!({ "user": { "name": user, "domain_id": "default", "password": password, "default_project_id": project_id } }),
    )["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let roles = keystone(stack, &admin, reqwest::Method::GET, "/roles?name=member", Value::Null);
    let role = roles["roles"][0]["id"].as_str().expect("member role").to_string();
    keystone(stack, &admin, reqwest::Method::PUT, &format!("/projects/{project_id}/users/{user_id}/roles/{role}"), Value::Null);
    // The user's own token creates its application credential.
    let creds = openstack::Credentials {
        auth_url: stack.env().auth_url.clone(),
        username: user.clone(),
        password: openstack::Secret::new(password.clone()),
        user_domain: openstack::DomainRef::Name("Default".into()),
        project: name.clone(),
        project_domain: openstack::DomainRef::Id("default".into()),
    };
    let token = block_on(openstack::keystone::authenticate(&reqwest::Client::new(), &creds)).expect("member token");
    let app = keystone(
        stack,
        token.value.expose(),
        reqwest::Method::POST,
        &format!("/users/{user_id}/application_credentials"),
        json!({ "application_credential": { "name": unique("cni") } }),
    );
    let net_name = unique("mnet");
    let neutron = stack.neutron();
    let network_id = block_on(async {
        let net = neutron.create_network(&net_name, json!({ "project_id": project_id })).await.unwrap();
        neutron
            .create_subnet(&net.id, "10.94.0.0/24".parse().unwrap(), json!({ "project_id": project_id, "enable_dhcp": false }))
            .await
            .unwrap();
        net.id
    });
    Member {
        project_id,
        project: name,
        user,
        password,
        app_id: app["application_credential"]["id"].as_str().unwrap().to_string(),
        app_secret: app["application_credential"]["secret"].as_str().unwrap().to_string(),
        network_id,
    }
}

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
