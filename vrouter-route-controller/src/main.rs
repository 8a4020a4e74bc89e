//! vrouter-route-controller: see the crate docs and `--help`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use openstack::{Neutron, Session};
use vrouter_route_controller::cloud::CloudError;
use vrouter_route_controller::config::{Args, Config, EnvSecrets};
use vrouter_route_controller::daemon::{self, Timing};
use vrouter_route_controller::http;
use vrouter_route_controller::neutron::NeutronCloud;
use vrouter_route_controller::reconcile::Reconciler;
use vrouter_route_controller::status::Status;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args, EnvSecrets::from_env()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vrouter-route-controller: {e}");
            return ExitCode::from(2);
        }
    };
    cni::logging::init("vrouter-route-controller", None, config.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let http_client = match config.http.build() {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let session = Arc::new(Session::new(http_client, config.auth.clone()));
    let status = Arc::new(Mutex::new(Status::default()));
    // The probes answer from the start: waiting for Keystone is "alive, not ready".
    let server = if config.once {
        None
    } else {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        log::info!("health and metrics on http://{}/ (healthz, readyz, status, metrics)", config.listen);
        let liveness = config.resync_interval * 3 + config.http.timeout * 10;
        Some(tokio::spawn(http::serve(listener, status.clone(), liveness)))
    };
    let mut backoff = daemon::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // Keystone may be down at start: the catalog lookup retries like everything else.
    let neutron = loop {
        let found = match &config.neutron_url {
            Some(url) => Ok(Neutron::new(session.clone(), url)),
            None => Neutron::from_catalog(session.clone(), &config.interface, config.region.as_deref()).await,
        };
        match found {
            Ok(n) => break n,
            Err(e) if config.once || !e.is_transient() => {
                log::error!("cannot find Neutron: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                let d = backoff.next_delay();
                status.lock().expect("status lock").failure(&CloudError::Unavailable(e.to_string()), Duration::ZERO);
                log::warn!("cannot reach Keystone yet, retrying in {:.1}s: {e}", d.as_secs_f64());
                tokio::time::sleep(d).await;
            }
        }
    };
    log::info!("managing routes for networks {:?} via {}", config.networks, neutron.base_url());
    let cloud = NeutronCloud::new(neutron, config.networks.clone(), config.routers.clone());
    let mut rec = Reconciler::new(config.reconcile);

    if config.once {
        let started = Instant::now();
        return match rec.run(&cloud).await {
            Ok(report) => {
                let mut s = status.lock().expect("status lock");
                s.success(&report, started.elapsed());
                println!("{:#}", s.json());
                if s.refused() > 0 {
                    ExitCode::from(3)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                log::error!("reconcile failed: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let timing = Timing {
        poll: config.poll_interval,
        resync: config.resync_interval,
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
    };
    let result = daemon::run(&cloud, rec, status, timing).await;
    if let Some(server) = server {
        server.abort();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
