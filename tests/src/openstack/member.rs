//! A non-admin project for tests of the programs as operators run them: a `member` user of
//! its own project, an application credential of that user, and a network with a subnet
//! (`10.94.0.0/24`) owned by the project. Created through the real Keystone and Neutron.

use serde_json::{json, Value};

use super::{block_on, Stack};
use crate::netns::unique;

/// A project with a `member` user, an application credential of that user, and a network
/// with a subnet owned by the project.
pub struct Member {
    /// The project's id.
    pub project_id: String,
    /// The project's name (domain `default`).
    pub project: String,
    /// The member user's name (domain `default`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Its application credential's id.
    pub app_id: String,
    /// And secret.
    pub app_secret: String,
    /// The project's network.
    pub network_id: String,
    /// Its subnet (`10.94.0.0/24`, gateway `.1`).
    pub subnet_id: String,
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

pub fn member(stack: &Stack) -> Member {
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
    let (network_id, subnet_id) = block_on(async {
        let net = neutron.create_network(&net_name, json!({ "project_id": project_id })).await.unwrap();
        let subnet = neutron
            .create_subnet(&net.id, "10.94.0.0/24".parse().unwrap(), json!({ "project_id": project_id, "enable_dhcp": false }))
            .await
            .unwrap();
        (net.id, subnet.id)
    });
    Member {
        project_id,
        project: name,
        user,
        password,
        app_id: app["application_credential"]["id"].as_str().unwrap().to_string(),
        app_secret: app["application_credential"]["secret"].as_str().unwrap().to_string(),
        network_id,
        subnet_id,
    }
}
