"""Provision a fresh local Keystone + Neutron for veth-route tests.

Run with the OpenStack venv's python. Reads one JSON object on stdin (URLs and
passwords, so no secret appears on a command line) and prints one JSON object with
the ids it created. Uses only `requests`, which the venv has.

Steps: admin token -> `service` project, `neutron` service user (admin role) ->
`network` service and its public/internal/admin endpoints -> (waits for Neutron) ->
flat external network `public` + subnet -> tenant network + subnet (gateway .1) ->
router with the external gateway and an interface on the tenant subnet.
"""

import json
import sys
import time

import requests


class Unpooled:
    """requests with a new connection per request. uwsgi closes each connection after its
    answer without saying so, and this client creates things (POST), which it must not
    send twice after meeting such a closed connection."""

    def __init__(self):
        self.headers = {}

    def request(self, method, url, **kw):
        with requests.Session() as s:
            s.headers.update(self.headers)
            return s.request(method, url, **kw)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)


def main():
    cfg = json.load(sys.stdin)
    ks = cfg["auth_url"].rstrip("/")
    s = Unpooled()

    def token():
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": cfg["admin_password"]}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        r = s.post(ks + "/auth/tokens", json=body, timeout=30)
        r.raise_for_status()
        return r.headers["X-Subject-Token"], r.json()["token"]["project"]["id"]

    tok, project_id = token()
    s.headers["X-Auth-Token"] = tok

    def call(method, url, body=None, ok=(200, 201, 204)):
        r = s.request(method, url, json=body, timeout=60)
        if r.status_code == 401:
            # Stacks for expiry tests issue tokens that live only seconds.
            s.headers["X-Auth-Token"] = token()[0]
            r = s.request(method, url, json=body, timeout=60)
        if r.status_code not in ok:
            # The body never holds our secrets; the request body might, so it is not printed.
            sys.exit(f"provision: {method} {url} -> {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def one(url, key, name):
        found = call("GET", f"{url}?name={name}")[key]
        return found[0]["id"] if found else None

    admin_role = one(ks + "/roles", "roles", "admin")
    service_project = one(ks + "/projects", "projects", "service") or call(
        "POST", ks + "/projects", {"project": {"name": "service", "domain_id": "default"}})["project"]["id"]
    neutron_user = one(ks + "/users", "users", "neutron") or call(
        "POST", ks + "/users", {"user": {"name": "neutron", "domain_id": "default",
                                         "password": cfg["neutron_password"]}})["user"]["id"]
    call("PUT", f"{ks}/projects/{service_project}/users/{neutron_user}/roles/{admin_role}")
    service = one(ks + "/services", "services", "neutron") or call(
        "POST", ks + "/services", {"service": {"name": "neutron", "type": "network"}})["service"]["id"]
    existing = call("GET", f"{ks}/endpoints?service_id={service}")["endpoints"]
    for iface in ("public", "internal", "admin"):
        if not any(e["interface"] == iface for e in existing):
            call("POST", ks + "/endpoints", {"endpoint": {
                "service_id": service, "interface": iface, "region_id": cfg["region"],
                "url": cfg["neutron_url"]}})

    nt = cfg["neutron_url"].rstrip("/") + "/v2.0"
    deadline = time.monotonic() + cfg.get("neutron_wait_seconds", 180)
    while True:
        try:
            r = s.get(nt + "/networks?limit=1", timeout=10)
            if r.status_code == 200:
                break
            if r.status_code == 401:
                # A short token lifetime (expiry tests) can run out while Neutron starts.
                s.headers["X-Auth-Token"] = token()[0]
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            sys.exit("provision: Neutron did not answer in time")
        time.sleep(0.2)

    public = call("POST", nt + "/networks", {"network": {
        "name": "public", "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "public"}})["network"]
    public_subnet = call("POST", nt + "/subnets", {"subnet": {
        "network_id": public["id"], "name": "public-subnet", "ip_version": 4,
        "cidr": cfg["public_cidr"], "enable_dhcp": False}})["subnet"]
    net = call("POST", nt + "/networks", {"network": {"name": cfg["network_name"]}})["network"]
    subnet = call("POST", nt + "/subnets", {"subnet": {
        "network_id": net["id"], "name": cfg["network_name"] + "-subnet", "ip_version": 4,
        "cidr": cfg["cidr"], "gateway_ip": cfg["gateway"], "enable_dhcp": False}})["subnet"]
    router = call("POST", nt + "/routers", {"router": {
        "name": "vrouter", "external_gateway_info": {"network_id": public["id"]}}})["router"]
    call("PUT", f"{nt}/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})

    json.dump({
        "project_id": project_id,
        "public_network_id": public["id"],
        "public_subnet_id": public_subnet["id"],
        "network_id": net["id"],
        "subnet_id": subnet["id"],
        "router_id": router["id"],
    }, sys.stdout)


if __name__ == "__main__":
    main()
