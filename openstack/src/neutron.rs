//! Neutron v2.0: the calls veth-route needs (ports, subnets, networks, routers, quotas, tags).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result, Service};
use crate::session::Session;

/// One fixed IP of a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedIp {
    /// Subnet of the address.
    pub subnet_id: String,
    /// The address.
    pub ip_address: IpAddr,
}

/// A Neutron port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    /// Port id.
    pub id: String,
    /// Network id.
    pub network_id: String,
    /// MAC address, lower case.
    pub mac_address: String,
    /// Fixed IPs (Neutron sorts them; compare as sets).
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    /// Revision for `If-Match`; one update may raise it by more than one.
    #[serde(default)]
    pub revision_number: u64,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Owning device (Nova server uuid for a VM port).
    #[serde(default)]
    pub device_id: String,
    /// Owning project.
    #[serde(default)]
    pub project_id: String,
}

/// A fixed IP in a port update: an exact address, or any free address of a subnet.
///
/// Neutron matches a subnet-only entry to an existing address of that subnet the request did
/// not list, so an update must list every address it keeps with [`FixedIpRequest::Address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixedIpRequest {
    /// Keep or add this address.
    Address(FixedIp),
    /// Allocate a new address from this subnet.
    AnyIn { subnet_id: String },
}

impl FixedIpRequest {
    fn to_json(&self) -> Value {
        match self {
            FixedIpRequest::Address(ip) => json!({ "subnet_id": ip.subnet_id, "ip_address": ip.ip_address.to_string() }),
            FixedIpRequest::AnyIn { subnet_id } => json!({ "subnet_id": subnet_id }),
        }
    }
}

/// An allocation pool of a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

/// A subnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    /// Subnet id.
    pub id: String,
    /// Network id.
    pub network_id: String,
    /// CIDR.
    pub cidr: IpNet,
    /// Gateway (the router's interface address), if any.
    #[serde(default)]
    pub gateway_ip: Option<IpAddr>,
    /// 4 or 6.
    pub ip_version: u8,
    /// Allocation pools.
    #[serde(default)]
    pub allocation_pools: Vec<AllocationPool>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// IPv6 only: how hosts get their address (`slaac`, `dhcpv6-stateful`,
    /// `dhcpv6-stateless`), or none. Neutron accepts explicit fixed IPs only on a subnet
    /// that is not SLAAC (`dhcpv6-stateful` or none).
    #[serde(default)]
    pub ipv6_address_mode: Option<String>,
}

impl Subnet {
    /// Whether a port may be given fixed IPs of this subnet by request (IPv4, or IPv6
    /// without SLAAC). On `slaac` and `dhcpv6-stateless` subnets Neutron derives the
    /// address from the MAC and refuses others.
    pub fn takes_explicit_fixed_ips(&self) -> bool {
        self.ip_version == 4 || matches!(self.ipv6_address_mode.as_deref(), None | Some("dhcpv6-stateful"))
    }
}

/// A network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    /// Network id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Subnet ids.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// External (floating IP) network.
    #[serde(default, rename = "router:external")]
    pub external: bool,
    /// The largest packet the network carries (e.g. 1450 on VXLAN), if Neutron says.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A static route of a router.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR, kept exactly as Neutron stores it (not normalised).
    pub destination: IpNet,
    /// Next hop on a subnet of the router.
    pub nexthop: IpAddr,
}

/// A router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Router {
    /// Router id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// External gateway, as Neutron returns it.
    #[serde(default)]
    pub external_gateway_info: Option<Value>,
    /// Revision.
    #[serde(default)]
    pub revision_number: u64,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Owning project.
    #[serde(default)]
    pub project_id: String,
}

/// A Neutron v2.0 client on an authenticated [`Session`]. Cheap to clone.
#[derive(Clone)]
pub struct Neutron {
    session: Arc<Session>,
    base: String,
}

fn enc(s: &str) -> String {
    // Ids, MACs, tags and addresses only need these escaped in a query or path segment.
    s.replace('%', "%25")
        .replace(' ', "%20")
        .replace('&', "%26")
        .replace('=', "%3D")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace(',', "%2C")
        .replace('#', "%23")
        .replace('?', "%3F")
}

/// `k1=v1&k2=v2` with both sides escaped; repeated keys are fine (`fields=a&fields=b`).
fn query(filters: &[(&str, &str)]) -> String {
    filters.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn take<T: DeserializeOwned>(mut v: Value, key: &str, endpoint: &str) -> Result<T> {
    let inner = v.get_mut(key).map(Value::take).unwrap_or(Value::Null);
    serde_json::from_value(inner).map_err(|e| Error::Decode {
        service: Service::Neutron,
        endpoint: endpoint.to_string(),
        reason: format!("'{key}': {e}"),
    })
}

impl Neutron {
    /// A client for the Neutron at `url` (with or without the `/v2.0` suffix).
    pub fn new(session: Arc<Session>, url: &str) -> Self {
        let base = url.trim_end_matches('/').trim_end_matches("/v2.0").to_string();
        Self { session, base: format!("{base}/v2.0") }
    }

    /// A client for the `network` endpoint of the session's catalog.
    pub async fn from_catalog(session: Arc<Session>, interface: &str, region: Option<&str>) -> Result<Self> {
        let url = session.token().await?.endpoint("network", interface, region)?;
        Ok(Self::new(session, &url))
    }

    /// The `.../v2.0` base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The underlying session (credentials, counters).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// One request. Every PUT and DELETE here is idempotent (tags, routes, quotas, ports
    /// updated with an explicit list) except a fixed-IP update that asks for any address
    /// of a subnet without `If-Match`: all but that and POST may be sent twice.
    async fn call(&self, method: Method, path: &str, body: Option<Value>, if_match: Option<String>) -> Result<Value> {
        let replayable = method != Method::POST;
        self.call_with(method, path, body, if_match, replayable).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<String>,
        replayable: bool,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.session.request_with(Service::Neutron, method, &url, body.as_ref(), if_match.as_deref(), replayable).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, key: &str) -> Result<T> {
        take(self.call(Method::GET, path, None, None).await?, key, path)
    }

    /// Every item of a collection matching `filters`, following the `next` links of
    /// Neutron's pagination (`pagination_max_limit` caps each page; many clouds set it),
    /// so that a caller never takes a first page for the whole list.
    async fn list<T: DeserializeOwned>(&self, collection: &str, filters: &[(&str, &str)]) -> Result<Vec<T>> {
        let mut path = format!("/{collection}?{}", query(filters));
        let mut items = Vec::new();
        let mut markers = HashSet::new();
        loop {
            let page = self.call(Method::GET, &path, None, None).await?;
            let next = next_page(&page, collection);
            let got: Vec<T> = take(page, collection, &path)?;
            let Some(next_query) = next.filter(|_| !got.is_empty()) else {
                items.extend(got);
                return Ok(items);
            };
            items.extend(got);
            // A server that hands out the same marker twice would keep us here forever.
            if !markers.insert(next_query.clone()) {
                return Err(Error::Decode {
                    service: Service::Neutron,
                    endpoint: format!("GET /{collection}"),
                    reason: "pagination repeats a page".into(),
                });
            }
            path = format!("/{collection}?{next_query}");
        }
    }

    // ---- ports

    /// Ports matching query filters, e.g. `[("mac_address", mac), ("network_id", net)]`.
    pub async fn list_ports(&self, filters: &[(&str, &str)]) -> Result<Vec<Port>> {
        self.list("ports", filters).await
    }

    /// The port with this MAC address on this network, if any.
    pub async fn find_port_by_mac(&self, network_id: &str, mac: &str) -> Result<Option<Port>> {
        let mac = mac.to_ascii_lowercase();
        Ok(self.list_ports(&[("network_id", network_id), ("mac_address", &mac)]).await?.into_iter().next())
    }

    /// One port.
    pub async fn get_port(&self, id: &str) -> Result<Port> {
        self.get(&format!("/ports/{}", enc(id)), "port").await
    }

    /// Creates a port (`fields` is merged into the body, e.g. `{"mac_address": ..}`).
    pub async fn create_port(&self, network_id: &str, fields: Value) -> Result<Port> {
        let mut port = json!({ "network_id": network_id });
        merge(&mut port, fields);
        take(self.call(Method::POST, "/ports", Some(json!({ "port": port })), None).await?, "port", "/ports")
    }

    /// Deletes a port; a missing port is success.
    pub async fn delete_port(&self, id: &str) -> Result<()> {
        ignore_not_found(self.call(Method::DELETE, &format!("/ports/{}", enc(id)), None, None).await)
    }

    /// Replaces the port's fixed IPs, with optional other fields (`extra`, e.g. a
    /// description nonce so that the revision check always applies) and an optional
    /// `If-Match: revision_number=N` precondition (412 [`Error::is_revision_conflict`] when stale).
    pub async fn update_port_fixed_ips(
        &self,
        id: &str,
        fixed_ips: &[FixedIpRequest],
        extra: Value,
        if_revision: Option<u64>,
    ) -> Result<Port> {
        let mut port = json!({ "fixed_ips": fixed_ips.iter().map(FixedIpRequest::to_json).collect::<Vec<_>>() });
        merge(&mut port, extra);
        // Sent twice without If-Match, "any address of S" would allocate twice.
        let explicit = fixed_ips.iter().all(|f| matches!(f, FixedIpRequest::Address(_)));
        self.put_port(id, port, if_revision, explicit || if_revision.is_some()).await
    }

    /// Updates arbitrary port fields (`{"description": ..}`), optionally with `If-Match`.
    /// Use [`Neutron::update_port_fixed_ips`] for fixed IPs.
    pub async fn update_port(&self, id: &str, fields: Value, if_revision: Option<u64>) -> Result<Port> {
        self.put_port(id, fields, if_revision, true).await
    }

    async fn put_port(&self, id: &str, fields: Value, if_revision: Option<u64>, replayable: bool) -> Result<Port> {
        let path = format!("/ports/{}", enc(id));
        let if_match = if_revision.map(|r| format!("revision_number={r}"));
        take(self.call_with(Method::PUT, &path, Some(json!({ "port": fields })), if_match, replayable).await?, "port", &path)
    }

    /// Adds one tag to a port (idempotent).
    pub async fn add_port_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.add_tag("ports", id, tag).await
    }

    /// Removes one tag from a port; a missing tag is success.
    pub async fn remove_port_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.remove_tag("ports", id, tag).await
    }

    /// Replaces all tags of a port.
    pub async fn set_port_tags(&self, id: &str, tags: &[String]) -> Result<()> {
        self.set_tags("ports", id, tags).await
    }

    // ---- networks and subnets

    /// One network.
    pub async fn get_network(&self, id: &str) -> Result<Network> {
        self.get(&format!("/networks/{}", enc(id)), "network").await
    }

    /// Networks matching filters.
    pub async fn list_networks(&self, filters: &[(&str, &str)]) -> Result<Vec<Network>> {
        self.list("networks", filters).await
    }

    /// Creates a network (`fields` merged into the body).
    pub async fn create_network(&self, name: &str, fields: Value) -> Result<Network> {
        let mut net = json!({ "name": name });
        merge(&mut net, fields);
        take(self.call(Method::POST, "/networks", Some(json!({ "network": net })), None).await?, "network", "/networks")
    }

    /// Deletes a network; a missing network is success.
    pub async fn delete_network(&self, id: &str) -> Result<()> {
        ignore_not_found(self.call(Method::DELETE, &format!("/networks/{}", enc(id)), None, None).await)
    }

    /// One subnet.
    pub async fn get_subnet(&self, id: &str) -> Result<Subnet> {
        self.get(&format!("/subnets/{}", enc(id)), "subnet").await
    }

    /// The subnets of a network.
    pub async fn list_subnets(&self, network_id: &str) -> Result<Vec<Subnet>> {
        self.list("subnets", &[("network_id", network_id)]).await
    }

    /// Creates a subnet (`fields` merged into the body, e.g. `allocation_pools`).
    pub async fn create_subnet(&self, network_id: &str, cidr: IpNet, fields: Value) -> Result<Subnet> {
        let version = if cidr.addr().is_ipv4() { 4 } else { 6 };
        let mut subnet = json!({ "network_id": network_id, "cidr": cidr.to_string(), "ip_version": version });
        merge(&mut subnet, fields);
        take(self.call(Method::POST, "/subnets", Some(json!({ "subnet": subnet })), None).await?, "subnet", "/subnets")
    }

    // ---- routers

    /// One router.
    pub async fn get_router(&self, id: &str) -> Result<Router> {
        self.get(&format!("/routers/{}", enc(id)), "router").await
    }

    /// Routers matching filters.
    pub async fn list_routers(&self, filters: &[(&str, &str)]) -> Result<Vec<Router>> {
        self.list("routers", filters).await
    }

    /// One router with only the named `fields` filled in (the rest default), e.g.
    /// `["id", "revision_number"]` for a cheap change check.
    pub async fn get_router_fields(&self, id: &str, fields: &[&str]) -> Result<Router> {
        let filters: Vec<(&str, &str)> = fields.iter().map(|f| ("fields", *f)).collect();
        self.get(&format!("/routers/{}?{}", enc(id), query(&filters)), "router").await
    }

    /// Creates a router (`fields` merged into the body, e.g. `external_gateway_info`).
    pub async fn create_router(&self, name: &str, fields: Value) -> Result<Router> {
        let mut router = json!({ "name": name });
        merge(&mut router, fields);
        take(self.call(Method::POST, "/routers", Some(json!({ "router": router })), None).await?, "router", "/routers")
    }

    /// Updates arbitrary router fields (`{"routes": []}` replaces all static routes).
    pub async fn update_router(&self, id: &str, fields: Value) -> Result<Router> {
        let path = format!("/routers/{}", enc(id));
        take(self.call(Method::PUT, &path, Some(json!({ "router": fields })), None).await?, "router", &path)
    }

    /// Deletes a router (it must have no interfaces left); a missing router is success.
    pub async fn delete_router(&self, id: &str) -> Result<()> {
        ignore_not_found(self.call(Method::DELETE, &format!("/routers/{}", enc(id)), None, None).await)
    }

    /// Attaches the router to a subnet (an interface port at the subnet's gateway address).
    pub async fn add_router_interface(&self, router_id: &str, subnet_id: &str) -> Result<()> {
        let path = format!("/routers/{}/add_router_interface", enc(router_id));
        self.call(Method::PUT, &path, Some(json!({ "subnet_id": subnet_id })), None).await.map(drop)
    }

    /// Detaches the router from a subnet.
    pub async fn remove_router_interface(&self, router_id: &str, subnet_id: &str) -> Result<()> {
        let path = format!("/routers/{}/remove_router_interface", enc(router_id));
        self.call(Method::PUT, &path, Some(json!({ "subnet_id": subnet_id })), None).await.map(drop)
    }

    /// Adds one tag to a router (idempotent); more than Neutron's 50 tags per resource is a 400.
    pub async fn add_router_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.add_tag("routers", id, tag).await
    }

    /// Removes one tag from a router; a missing tag is success.
    pub async fn remove_router_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.remove_tag("routers", id, tag).await
    }

    /// Replaces all tags of a router.
    pub async fn set_router_tags(&self, id: &str, tags: &[String]) -> Result<()> {
        self.set_tags("routers", id, tags).await
    }

    /// Adds static routes atomically (`extraroute-atomic`); returns the whole router.
    pub async fn add_extraroutes(&self, router_id: &str, routes: &[Route]) -> Result<Router> {
        self.extraroutes(router_id, "add_extraroutes", routes).await
    }

    /// Removes static routes atomically (exact destination + nexthop; missing ones are ignored).
    pub async fn remove_extraroutes(&self, router_id: &str, routes: &[Route]) -> Result<Router> {
        self.extraroutes(router_id, "remove_extraroutes", routes).await
    }

    /// [`Neutron::add_extraroutes`], only if the router is still at revision `if_revision`
    /// (`If-Match`; 412 [`Error::is_revision_conflict`] when it changed, unless the call
    /// changes nothing: Neutron checks the revision only when it writes).
    pub async fn add_extraroutes_if(&self, router_id: &str, routes: &[Route], if_revision: u64) -> Result<Router> {
        self.extraroutes_if(router_id, "add_extraroutes", routes, Some(if_revision)).await
    }

    /// [`Neutron::remove_extraroutes`], only if the router is still at revision `if_revision`.
    pub async fn remove_extraroutes_if(&self, router_id: &str, routes: &[Route], if_revision: u64) -> Result<Router> {
        self.extraroutes_if(router_id, "remove_extraroutes", routes, Some(if_revision)).await
    }

    async fn extraroutes(&self, router_id: &str, action: &str, routes: &[Route]) -> Result<Router> {
        self.extraroutes_if(router_id, action, routes, None).await
    }

    async fn extraroutes_if(&self, router_id: &str, action: &str, routes: &[Route], if_revision: Option<u64>) -> Result<Router> {
        let path = format!("/routers/{}/{action}", enc(router_id));
        let if_match = if_revision.map(|r| format!("revision_number={r}"));
        take(self.call(Method::PUT, &path, Some(json!({ "router": { "routes": routes } })), if_match).await?, "router", &path)
    }

    // ---- tags (any taggable resource collection: `ports`, `routers`, ...)

    async fn add_tag(&self, collection: &str, id: &str, tag: &str) -> Result<()> {
        self.call(Method::PUT, &format!("/{collection}/{}/tags/{}", enc(id), enc(tag)), None, None).await.map(drop)
    }

    async fn remove_tag(&self, collection: &str, id: &str, tag: &str) -> Result<()> {
        ignore_not_found(self.call(Method::DELETE, &format!("/{collection}/{}/tags/{}", enc(id), enc(tag)), None, None).await)
    }

    async fn set_tags(&self, collection: &str, id: &str, tags: &[String]) -> Result<()> {
        self.call(Method::PUT, &format!("/{collection}/{}/tags", enc(id)), Some(json!({ "tags": tags })), None).await.map(drop)
    }

    // ---- quotas

    /// A project's quota (`{"port": 50, "router_route": 30, ...}`).
    pub async fn get_quota(&self, project_id: &str) -> Result<Value> {
        self.get(&format!("/quotas/{}", enc(project_id)), "quota").await
    }

    /// Sets quota values, e.g. `{"router_route": 100}`.
    pub async fn update_quota(&self, project_id: &str, quota: Value) -> Result<Value> {
        let path = format!("/quotas/{}", enc(project_id));
        take(self.call(Method::PUT, &path, Some(json!({ "quota": quota })), None).await?, "quota", &path)
    }

    /// `GET /v2.0/` (version document): a cheap reachability check.
    pub async fn ping(&self) -> Result<()> {
        self.call(Method::GET, "/networks?limit=1&fields=id", None, None).await.map(drop)
    }
}

/// The query of the `next` link of a collection page (`{"ports_links": [{"rel": "next",
/// "href": ".../v2.0/ports?limit=2&marker=ID"}]}`). Only the query is used: behind a proxy the
/// link's host is often the server's own, not the one we reach it by.
fn next_page(page: &Value, collection: &str) -> Option<String> {
    page.get(format!("{collection}_links"))?
        .as_array()?
        .iter()
        .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))?
        .get("href")?
        .as_str()?
        .split_once('?')
        .map(|(_, q)| q.to_string())
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

fn ignore_not_found(r: Result<Value>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_tags_and_project_default_when_absent() {
        let full: Router = serde_json::from_value(json!({
            "id": "r1", "routes": [{"destination": "10.0.0.16/28", "nexthop": "10.0.0.5"}],
            "tags": ["a", "b"], "project_id": "p1", "revision_number": 7
        }))
        .unwrap();
        assert_eq!((full.tags, full.project_id.as_str(), full.revision_number), (vec!["a".to_string(), "b".to_string()], "p1", 7));
        // `?fields=id&fields=revision_number` answers carry only those keys.
        let partial: Router = serde_json::from_value(json!({ "id": "r1", "revision_number": 3 })).unwrap();
        assert!(partial.tags.is_empty() && partial.project_id.is_empty() && partial.routes.is_empty());
    }

    #[test]
    fn only_ipv4_and_non_slaac_ipv6_subnets_take_explicit_fixed_ips() {
        let subnet = |version: u8, mode: Value| -> Subnet {
            serde_json::from_value(json!({"id": "s", "network_id": "n", "cidr": if version == 4 { "10.0.0.0/24" } else { "fd00::/64" },
                "ip_version": version, "ipv6_address_mode": mode}))
            .unwrap()
        };
        assert!(subnet(4, Value::Null).takes_explicit_fixed_ips());
        assert!(subnet(6, Value::Null).takes_explicit_fixed_ips());
        assert!(subnet(6, json!("dhcpv6-stateful")).takes_explicit_fixed_ips());
        assert!(!subnet(6, json!("slaac")).takes_explicit_fixed_ips());
        assert!(!subnet(6, json!("dhcpv6-stateless")).takes_explicit_fixed_ips());
    }

    #[test]
    fn next_page_takes_the_query_of_the_next_link_only() {
        let page = json!({ "ports": [], "ports_links": [
            { "rel": "previous", "href": "http://internal:9696/v2.0/ports?limit=2&marker=a&page_reverse=True" },
            { "rel": "next", "href": "http://internal:9696/v2.0/ports?limit=2&marker=b&network_id=n" },
        ]});
        assert_eq!(next_page(&page, "ports").as_deref(), Some("limit=2&marker=b&network_id=n"));
        assert_eq!(next_page(&json!({ "ports": [] }), "ports"), None);
        assert_eq!(next_page(&page, "routers"), None);
    }

    #[test]
    fn tags_are_escaped_as_one_path_segment() {
        // Ledger tags carry `+`, which a server could read as a space if left bare.
        assert_eq!(
            enc("vrouter-route:10.0.0.16_28@10.0.0.5+10.0.0.9_32@10.0.0.5"),
            "vrouter-route:10.0.0.16_28@10.0.0.5%2B10.0.0.9_32@10.0.0.5"
        );
        assert_eq!(query(&[("fields", "id"), ("fields", "revision_number")]), "fields=id&fields=revision_number");
    }
}
