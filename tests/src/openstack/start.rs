//! Starting a stack: configuration, schema, keys, bootstrap, the two uwsgi services and
//! provisioning (`provision.py`), with every failure reported with its log excerpt.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use openstack::Secret;
use serde_json::json;

use super::{assets_dir, config, process, random_hex, venv_dir, write_private, HarnessError, Stack, StackEnv, StackOptions};

fn run_step(what: &str, cmd: &mut Command, log: &Path) -> Result<(), HarnessError> {
    let out = fs::File::options().create(true).append(true).open(log)?;
    let status = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).status()?;
    if !status.success() {
        return Err(format!("{what} failed ({status}):\n{}", process::tail(log)).into());
    }
    Ok(())
}

impl Stack {
    /// Starts and provisions a new stack (about 15-30 s).
    pub fn start(opts: StackOptions) -> Result<Stack, HarnessError> {
        let venv = venv_dir();
        let bin = venv.join("bin");
        if !bin.join("uwsgi").exists() || !bin.join("keystone-manage").exists() {
            return Err(format!("no OpenStack venv at {}: run `cargo xtask setup`", venv.display()).into());
        }
        let dir = match &opts.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("veth-route-os-{}-{}", std::process::id(), random_hex(4)?)),
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let mut reaper = if opts.detached { None } else { Some(process::Reaper::start(&dir)?) };
        let result = Self::provision(&opts, &venv, &dir, reaper.as_mut());
        match result {
            Ok((env, children)) => Ok(Stack {
                env,
                owned: !opts.detached,
                reaper: Mutex::new(reaper),
                children: Mutex::new(children),
                session: OnceLock::new(),
            }),
            Err(e) => {
                // The reaper (or, detached, nobody) would clean up; do it now so failures leave nothing.
                if let Some(r) = reaper {
                    drop(r); // closing its stdin triggers the cleanup
                }
                Err(e)
            }
        }
    }

    fn provision(
        opts: &StackOptions,
        venv: &Path,
        dir: &Path,
        mut reaper: Option<&mut process::Reaper>,
    ) -> Result<(StackEnv, Vec<(i32, Child)>), HarnessError> {
        let bin = venv.join("bin");
        let admin_password = random_hex(16)?;
        let neutron_password = random_hex(16)?;
        let region = "RegionOne".to_string();
        let ks_port = process::free_port()?;
        let nt_port = process::free_port()?;
        let auth_url = format!("http://127.0.0.1:{ks_port}/v3");
        let neutron_url = format!("http://127.0.0.1:{nt_port}");
        let setup_log = dir.join("setup.log");

        // Keystone: config, schema, keys, bootstrap (password via environment, not argv).
        let ks_dir = dir.join("keystone");
        fs::DirBuilder::new().mode(0o700).create(&ks_dir)?;
        write_private(&ks_dir.join("keystone.conf"), config::keystone_conf(dir, opts.token_expiration).as_bytes())?;
        let ks_conf = ks_dir.join("keystone.conf");
        let manage = |args: &[&str]| {
            let mut c = Command::new(bin.join("keystone-manage"));
            c.arg("--config-file").arg(&ks_conf).args(args);
            c
        };
        run_step("keystone-manage db_sync", &mut manage(&["db_sync"]), &setup_log)?;
        for step in ["fernet_setup", "credential_setup"] {
            run_step(step, &mut manage(&[step, "--keystone-user", "root", "--keystone-group", "root"]), &setup_log)?;
        }
        let mut bootstrap = manage(&[
            "bootstrap",
            "--bootstrap-region-id",
            &region,
            "--bootstrap-admin-url",
            &auth_url,
            "--bootstrap-internal-url",
            &auth_url,
            "--bootstrap-public-url",
            &auth_url,
        ]);
        bootstrap.env("OS_BOOTSTRAP_PASSWORD", &admin_password);
        run_step("keystone-manage bootstrap", &mut bootstrap, &setup_log)?;

        // Neutron: config and schema from the models.
        let nt_dir = dir.join("neutron");
        fs::DirBuilder::new().mode(0o700).create(&nt_dir)?;
        fs::DirBuilder::new().mode(0o700).create(dir.join("locks"))?;
        write_private(
            &nt_dir.join("neutron.conf"),
            config::neutron_conf(dir, venv, &auth_url, &neutron_password, opts.validate_every_request).as_bytes(),
        )?;
        let db_url = format!("sqlite:///{}/neutron.db", dir.display());
        run_step("neutron schema", Command::new(bin.join("python")).arg("-c").arg(config::NEUTRON_SCHEMA_PY).arg(&db_url), &setup_log)?;

        // Serve both; Neutron loads slowly (10-20 s), so it starts while Keystone does.
        let uwsgi = |port: u16, module: &str, threads: &str, announce_close: bool| {
            let mut c = Command::new(bin.join("uwsgi"));
            // uwsgi's plain http-socket closes each connection after its response without
            // saying so (as load balancers close idle keep-alive connections). Neutron does
            // not announce it: the programs under test must cope with that. Keystone does,
            // because its other client, Neutron's keystonemiddleware, pools connections and
            // answers 503 when one turns out closed (a test bed matter, not the product's).
            c.args(["--http-socket", &format!("127.0.0.1:{port}")]);
            if announce_close {
                c.args(["--add-header", "Connection: close"]);
            }
            c.args(["--module", module])
                .args(["--master", "--processes", "1", "--threads", threads, "--die-on-term", "--need-app"])
                .args(["--home"])
                .arg(venv);
            c
        };
        let mut ks_cmd = uwsgi(ks_port, "keystone.wsgi.api:application", "2", true);
        ks_cmd.env("OS_KEYSTONE_CONFIG_DIR", &ks_dir).env("OS_KEYSTONE_CONFIG_FILES", "keystone.conf");
        let ks_log = dir.join("keystone-uwsgi.log");
        let mut keystone = process::spawn_group(&mut ks_cmd, &ks_log)?;
        let keystone_pgid = keystone.id() as i32;
        if let Some(r) = reaper.as_deref_mut() {
            r.watch(keystone_pgid)?;
        }
        let mut nt_cmd = uwsgi(nt_port, "neutron.wsgi.api:application", "1", false);
        nt_cmd.env("OS_NEUTRON_CONFIG_DIR", &nt_dir).env("OS_NEUTRON_CONFIG_FILES", "neutron.conf");
        let nt_log = dir.join("neutron-uwsgi.log");
        let mut neutron = process::spawn_group(&mut nt_cmd, &nt_log)?;
        let neutron_pgid = neutron.id() as i32;
        if let Some(r) = reaper {
            r.watch(neutron_pgid)?;
        }
        fn stop_both(ks: (i32, &mut Child), nt: (i32, &mut Child)) {
            process::stop_group(ks.0, Some(ks.1), Duration::from_secs(3));
            process::stop_group(nt.0, Some(nt.1), Duration::from_secs(3));
        }
        if let Err(e) = process::wait_http(ks_port, "/v3", &mut keystone, &ks_log, Duration::from_secs(120)) {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!("Keystone did not start: {e}").into());
        }

        // Neutron's version document needs no token; waiting here notices a crash at once.
        if let Err(e) = process::wait_http(nt_port, "/", &mut neutron, &nt_log, Duration::from_secs(180)) {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!("Neutron did not start: {e}").into());
        }

        let cidr = opts.cidr;
        let gateway = cidr.hosts().next().ok_or("subnet has no host addresses")?;
        let input = json!({
            "auth_url": auth_url,
            "neutron_url": neutron_url,
            "region": region,
            "admin_password": admin_password,
            "neutron_password": neutron_password,
            "network_name": "tenant",
            "cidr": cidr.to_string(),
            "gateway": gateway.to_string(),
            "public_cidr": "172.24.4.0/24",
        });
        let mut prov = Command::new(bin.join("python"))
            .arg(assets_dir().join("provision.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::options().create(true).append(true).open(&setup_log)?)
            .spawn()?;
        prov.stdin.take().ok_or("no stdin")?.write_all(input.to_string().as_bytes())?;
        let out = prov.wait_with_output()?;
        if !out.status.success() {
            stop_both((keystone_pgid, &mut keystone), (neutron_pgid, &mut neutron));
            return Err(format!("provisioning failed:\n{}\n-- neutron log:\n{}", process::tail(&setup_log), process::tail(&nt_log)).into());
        }
        let ids: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let id = |k: &str| ids[k].as_str().map(str::to_string).ok_or_else(|| format!("provision output lacks {k}"));

        let password_file = dir.join("admin-password");
        write_private(&password_file, admin_password.as_bytes())?;
        let env = StackEnv {
            dir: dir.to_path_buf(),
            auth_url,
            neutron_url,
            region,
            username: "admin".into(),
            password: Secret::new(admin_password),
            password_file,
            project: "admin".into(),
            project_id: id("project_id")?,
            token_expiration: opts.token_expiration,
            network_id: id("network_id")?,
            subnet_id: id("subnet_id")?,
            cidr,
            gateway,
            public_network_id: id("public_network_id")?,
            router_id: id("router_id")?,
            keystone_pgid,
            neutron_pgid,
        };
        write_private(&dir.join("stack.json"), serde_json::to_string_pretty(&env)?.as_bytes())?;
        write_private(&dir.join("clouds.yaml"), clouds_yaml(&env).as_bytes())?;
        Ok((env, vec![(keystone_pgid, keystone), (neutron_pgid, neutron)]))
    }
}

fn clouds_yaml(env: &StackEnv) -> String {
    format!(
        "clouds:\n  veth-route:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      \
         project_name: {}\n      user_domain_id: default\n      project_domain_id: default\n    region_name: {}\n",
        env.auth_url,
        env.username,
        env.password.expose(),
        env.project,
        env.region
    )
}
