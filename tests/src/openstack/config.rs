//! Configuration files of the local Keystone and Neutron (SQLite, no agents).

use std::path::Path;

/// keystone.conf: SQLite, fernet tokens with the requested lifetime.
pub fn keystone_conf(dir: &Path, token_expiration: u64) -> String {
    let d = dir.display();
    format!(
        "[DEFAULT]\nlog_file = {d}/keystone.log\n\
         [database]\nconnection = sqlite:///{d}/keystone.db\n\
         [token]\nprovider = fernet\nexpiration = {token_expiration}\n\
         [fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
         [fernet_receipts]\nkey_repository = {d}/fernet-receipts\n\
         [credential]\nkey_repository = {d}/credential-keys\n"
    )
}

/// neutron.conf: ML2 without mechanism drivers, router plugin, Keystone auth.
///
/// keystonemiddleware keeps a validated token for its default 300 s (in process, as
/// without memcached), unless `validate_every_request`: asking Keystone about every request
/// cost each one a quarter of a second here and serialised the test suite on Keystone.
/// Lists come in pages of [`PAGINATION_MAX_LIMIT`], as in many clouds, so every client must
/// follow the `next` links.
pub fn neutron_conf(dir: &Path, venv: &Path, auth_url: &str, neutron_password: &str, validate_every_request: bool) -> String {
    let d = dir.display();
    let v = venv.display();
    let base = auth_url.trim_end_matches("/v3");
    let token_cache = if validate_every_request { "token_cache_time = -1\n" } else { "" };
    format!(
        "[DEFAULT]\ncore_plugin = ml2\nservice_plugins = router\nauth_strategy = keystone\n\
         api_paste_config = {v}/etc/neutron/api-paste.ini\ntransport_url = fake:/\n\
         pagination_max_limit = {PAGINATION_MAX_LIMIT}\n\
         notify_nova_on_port_status_changes = false\nnotify_nova_on_port_data_changes = false\n\
         log_file = {d}/neutron-app.log\n\
         [database]\nconnection = sqlite:///{d}/neutron.db\n\
         [oslo_concurrency]\nlock_path = {d}/locks\n\
         [oslo_messaging_notifications]\ndriver = noop\n\
         [ml2]\ntype_drivers = flat,vxlan\ntenant_network_types = vxlan\nmechanism_drivers =\n\
         extension_drivers = port_security\n\
         [ml2_type_vxlan]\nvni_ranges = 1:1000\n\
         [ml2_type_flat]\nflat_networks = public\n\
         [keystone_authtoken]\nwww_authenticate_uri = {base}\nauth_url = {base}\nauth_type = password\n\
         username = neutron\npassword = {neutron_password}\nproject_name = service\n\
         user_domain_id = default\nproject_domain_id = default\n{token_cache}"
    )
}

/// Neutron's page size here: small, so that tests with a handful of ports already span pages.
pub const PAGINATION_MAX_LIMIT: usize = 3;

/// The Python one-liner that creates Neutron's schema from its models
/// (`neutron-db-manage upgrade head` fails on SQLite).
pub const NEUTRON_SCHEMA_PY: &str = "\
import sys
import sqlalchemy
from neutron.db.migration.models import head
engine = sqlalchemy.create_engine(sys.argv[1])
head.get_metadata().create_all(engine)
";
