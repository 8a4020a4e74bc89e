//! What the controller tells the outside: readiness, a JSON status and Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cloud::CloudError;
use crate::reconcile::{Report, RouterReport};

/// Shared state, updated by the loop and read by the HTTP server.
#[derive(Debug, Default)]
pub struct Status {
    routers: Vec<RouterReport>,
    last_success_unix: Option<u64>,
    last_error: Option<String>,
    reconciles_ok: u64,
    reconciles_failed: u64,
    neutron_errors: BTreeMap<&'static str, u64>,
    routes_added: u64,
    routes_removed: u64,
    duration_sum: f64,
    duration_last: f64,
    heartbeat: Option<Instant>,
}

impl Status {
    /// Records a finished pass.
    pub fn success(&mut self, report: &Report, took: Duration) {
        self.reconciles_ok += 1;
        self.record_duration(took);
        self.routes_added += report.routers.iter().map(|r| r.added as u64).sum::<u64>();
        self.routes_removed += report.routers.iter().map(|r| r.removed as u64).sum::<u64>();
        for _ in 0..report.routers.iter().map(|r| r.limit_errors).sum::<usize>() {
            self.count_error("route_limit");
        }
        for _ in 0..report.conflicts {
            self.count_error("conflict");
        }
        self.routers = report.routers.clone();
        self.last_success_unix = Some(openstack::time::now_unix());
        self.last_error = None;
    }

    /// Records a failed pass (routes stay as they were).
    pub fn failure(&mut self, err: &CloudError, took: Duration) {
        self.reconciles_failed += 1;
        self.record_duration(took);
        self.neutron_error(err);
        self.last_error = Some(err.to_string());
    }

    /// Counts a Neutron error seen outside a pass (e.g. the change check).
    pub fn neutron_error(&mut self, err: &CloudError) {
        self.count_error(match err {
            CloudError::RouteLimit(_) => "route_limit",
            CloudError::Unavailable(_) => "unavailable",
            CloudError::Conflict(_) => "conflict",
            CloudError::Failed(_) => "failed",
        });
    }

    fn count_error(&mut self, kind: &'static str) {
        *self.neutron_errors.entry(kind).or_default() += 1;
    }

    fn record_duration(&mut self, took: Duration) {
        self.duration_last = took.as_secs_f64();
        self.duration_sum += self.duration_last;
    }

    /// The loop is alive.
    pub fn beat(&mut self) {
        self.heartbeat = Some(Instant::now());
    }

    /// Alive: the loop beat within `max_age`.
    pub fn live(&self, max_age: Duration) -> bool {
        self.heartbeat.is_none_or(|t| t.elapsed() <= max_age)
    }

    /// Ready: the last pass succeeded. Returns the reason when not.
    pub fn ready(&self) -> Result<(), String> {
        match (&self.last_error, self.last_success_unix) {
            (Some(e), _) => Err(format!("last reconcile failed: {e}")),
            (None, None) => Err("no reconcile has completed yet".into()),
            (None, Some(_)) => Ok(()),
        }
    }

    /// Routes refused anywhere (for `--once`'s exit code).
    pub fn refused(&self) -> usize {
        self.routers.iter().map(|r| r.refused.len()).sum()
    }

    /// The JSON status document.
    pub fn json(&self) -> Value {
        json!({
            "ready": self.ready().is_ok(),
            "lastError": self.last_error,
            "lastSuccessUnix": self.last_success_unix,
            "routers": self.routers.iter().map(|r| json!({
                "id": r.router,
                "desired": r.desired,
                "applied": r.applied,
                "limit": r.limit,
                "refused": r.refused.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                "message": (!r.refused.is_empty()).then(|| format!(
                    "route limit reached: {} of {} desired route(s) applied, {} refused; use node-affine blocks in tcnp-ipam, raise the router_route quota, or use proxyNeighbor mode",
                    r.applied, r.desired, r.refused.len())),
            })).collect::<Vec<_>>(),
        })
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut m = String::new();
        let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in rows {
                let _ = writeln!(m, "{name}{labels} {v}");
            }
        };
        let per = |f: &dyn Fn(&RouterReport) -> Option<usize>| -> Vec<(String, f64)> {
            self.routers.iter().filter_map(|r| f(r).map(|v| (format!("{{router=\"{}\"}}", r.router), v as f64))).collect()
        };
        gauge("vrouter_routes_desired", "Routes the router should carry.", per(&|r| Some(r.desired)));
        gauge("vrouter_routes_applied", "Desired routes present on the router.", per(&|r| Some(r.applied)));
        gauge(
            "vrouter_routes_refused",
            "Desired routes left out because the router's route limit is reached.",
            per(&|r| Some(r.refused.len())),
        );
        gauge("vrouter_route_limit", "Routes the router accepts (quota or learned from a refusal).", per(&|r| r.limit));
        gauge("vrouter_ready", "1 when the last reconcile succeeded.", vec![(String::new(), f64::from(u8::from(self.ready().is_ok())))]);
        gauge(
            "vrouter_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile.",
            self.last_success_unix.map(|t| (String::new(), t as f64)).into_iter().collect(),
        );
        gauge("vrouter_reconcile_last_duration_seconds", "Duration of the last reconcile.", vec![(String::new(), self.duration_last)]);
        let _ = writeln!(
            m,
            "# HELP vrouter_reconcile_duration_seconds Reconcile durations.\n# TYPE vrouter_reconcile_duration_seconds summary\n\
             vrouter_reconcile_duration_seconds_sum {}\nvrouter_reconcile_duration_seconds_count {}",
            self.duration_sum,
            self.reconciles_ok + self.reconciles_failed
        );
        let _ = writeln!(m, "# HELP vrouter_reconciles_total Reconcile passes by result.\n# TYPE vrouter_reconciles_total counter");
        let _ = writeln!(m, "vrouter_reconciles_total{{result=\"ok\"}} {}", self.reconciles_ok);
        let _ = writeln!(m, "vrouter_reconciles_total{{result=\"error\"}} {}", self.reconciles_failed);
        let _ = writeln!(m, "# HELP vrouter_neutron_errors_total Neutron errors by kind.\n# TYPE vrouter_neutron_errors_total counter");
        for kind in ["unavailable", "route_limit", "conflict", "failed"] {
            let _ = writeln!(m, "vrouter_neutron_errors_total{{kind=\"{kind}\"}} {}", self.neutron_errors.get(kind).copied().unwrap_or(0));
        }
        let _ = writeln!(
            m,
            "# HELP vrouter_routes_added_total Routes added.\n# TYPE vrouter_routes_added_total counter\nvrouter_routes_added_total {}",
            self.routes_added
        );
        let _ = writeln!(m, "# HELP vrouter_routes_removed_total Routes removed.\n# TYPE vrouter_routes_removed_total counter\nvrouter_routes_removed_total {}", self.routes_removed);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Route;

    #[test]
    fn refusals_show_in_status_and_metrics() {
        let mut s = Status::default();
        assert!(s.ready().is_err());
        let refused = vec![Route::host("10.0.0.9".parse::<std::net::Ipv4Addr>().unwrap(), "10.0.0.2".parse().unwrap())];
        let r = RouterReport {
            router: "r1".into(),
            desired: 31,
            applied: 30,
            refused,
            limit: Some(30),
            added: 30,
            removed: 0,
            limit_errors: 1,
        };
        s.success(&Report { routers: vec![r], router_ids: vec!["r1".into()], conflicts: 0 }, Duration::from_millis(250));
        assert!(s.ready().is_ok());
        let m = s.metrics();
        assert!(m.contains("vrouter_routes_refused{router=\"r1\"} 1"), "{m}");
        assert!(m.contains("vrouter_route_limit{router=\"r1\"} 30"), "{m}");
        assert!(m.contains("vrouter_neutron_errors_total{kind=\"route_limit\"} 1"), "{m}");
        assert!(s.json()["routers"][0]["message"].as_str().unwrap().contains("route limit reached"));
    }

    #[test]
    fn failure_makes_unready_but_keeps_last_routers() {
        let mut s = Status::default();
        s.success(&Report::default(), Duration::ZERO);
        s.failure(&CloudError::Unavailable("Neutron at x is unreachable".into()), Duration::ZERO);
        assert!(s.ready().unwrap_err().contains("unreachable"));
        assert!(s.metrics().contains("vrouter_neutron_errors_total{kind=\"unavailable\"} 1"));
    }
}
