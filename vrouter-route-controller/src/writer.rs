//! The writes of one pass to one router, each checked against the router being exactly as
//! this controller last saw it.
//!
//! Two writers may run at once: two replicas of one controller (a node partition: the
//! Deployment's `Recreate` and the absence of leader election do not prevent it), or the
//! controllers of two clusters sharing the router. Each plans from what it read, so a write
//! based on a stale read could remove a route the other just added, or drop a record the
//! other relies on, leaving a route that nobody owns and nobody will ever remove.
//!
//! Route writes carry `If-Match: revision_number=N` with the revision of the last read or
//! of our own previous write (the route calls answer with the whole router), and Neutron
//! refuses them (412) when anyone wrote in between; the pass then reads again and plans
//! anew ([`CloudError::Conflict`]). Tag writes cannot be conditional: Neutron 29 answers
//! 500 to `If-Match` on its tag API. They are single-tag calls (never a whole-list
//! replace, which would wipe a concurrent writer's tags), and the router is read back right
//! after them. A tag write moves the router's revision, so:
//! - records are written before routes are added; if another writer dropped one of them
//!   before our read-back, the read-back shows it (conflict); if after, our conditional
//!   route add fails (412). A route is never added on a record that is gone.
//! - records are dropped after their routes were removed. If another writer routed one of
//!   them again meanwhile, its add came before our record drop (later it would have failed
//!   on the revision), so the read-back shows the route: the record is restored.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::cloud::{Cloud, CloudError};
use crate::ledger::{self, Cluster, Rewrite};
use crate::model::{Route, RouterState};

/// One router being written to, and what it looks like after our latest write.
pub struct Writer<'a, C> {
    cloud: &'a C,
    cluster: &'a Cluster,
    /// The router as of our latest read or write.
    pub state: RouterState,
}

fn as_set<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}

impl<'a, C: Cloud> Writer<'a, C> {
    /// Starts from `state`, as read at the beginning of the pass.
    pub fn new(cloud: &'a C, cluster: &'a Cluster, state: RouterState) -> Self {
        Self { cloud, cluster, state }
    }

    fn id(&self) -> &str {
        &self.state.id
    }

    /// The routes this cluster's ledger records.
    pub fn owned(&self) -> BTreeSet<Route> {
        ledger::owned(&self.state.tags, self.cluster)
    }

    /// `add_extraroutes`, conditional.
    pub async fn add_routes(&mut self, routes: &[Route]) -> Result<(), CloudError> {
        self.state = self.cloud.add_routes(&self.state.id, routes, self.state.revision).await?;
        Ok(())
    }

    /// `remove_extraroutes`, conditional.
    pub async fn remove_routes(&mut self, routes: &[Route]) -> Result<(), CloudError> {
        self.state = self.cloud.remove_routes(&self.state.id, routes, self.state.revision).await?;
        Ok(())
    }

    /// Applies `rw` with single-tag calls: new tags first, so a crash never loses a live
    /// record, unless that would exceed Neutron's tag limit (then the old tags go first; a
    /// crash in that window leaves their routes unowned: they stay, like hand-made ones).
    async fn apply(&mut self, rw: &Rewrite) -> Result<Vec<String>, CloudError> {
        let expected = rw.apply(&self.state.tags);
        let new: Vec<&String> = rw.write.iter().filter(|t| !self.state.tags.contains(t)).collect();
        let deleted_first = self.state.tags.len() + new.len() > ledger::MAX_TAGS;
        if deleted_first {
            for t in &rw.delete {
                self.cloud.remove_tag(&self.state.id, t).await?;
            }
        }
        for t in new {
            self.cloud.add_tag(&self.state.id, t).await?;
        }
        if !deleted_first {
            for t in &rw.delete {
                self.cloud.remove_tag(&self.state.id, t).await?;
            }
        }
        Ok(expected)
    }

    /// Reads the router back after our tag writes: it must be what we expect, else
    /// another writer was at work and the pass starts over.
    async fn read_back(&mut self, expected_tags: &[String]) -> Result<(), CloudError> {
        let after = self.cloud.router(&self.state.id).await?;
        if as_set(&after.tags) != as_set(expected_tags) || as_set(&after.routes) != as_set(&self.state.routes) {
            return Err(CloudError::Conflict(format!("router {} was changed by another writer while we wrote its tags", after.id)));
        }
        self.state = after;
        Ok(())
    }

    async fn rewrite(&mut self, rw: &Rewrite) -> Result<(), CloudError> {
        if rw.apply(&self.state.tags) == self.state.tags {
            return Ok(());
        }
        let expected = self.apply(rw).await?;
        self.read_back(&expected).await
    }

    /// Records `routes` (in order) before they are added, as far as Neutron's tag limit
    /// allows; returns how many of them are recorded (a prefix of `routes`).
    pub async fn record(&mut self, routes: &[Route]) -> Result<usize, CloudError> {
        let room = ledger::MAX_TAGS.saturating_sub(self.state.tags.len());
        let packed = ledger::pack(routes, self.cluster);
        let fit = packed.len().min(room);
        if fit < packed.len() {
            log::warn!(
                "router {}: ownership ledger full ({} of Neutron's {} tags per router in use); not adding further routes",
                self.id(),
                self.state.tags.len(),
                ledger::MAX_TAGS
            );
        }
        let recorded = packed[..fit].iter().map(|(_, n)| n).sum();
        let rw = Rewrite { write: packed.into_iter().take(fit).map(|(t, _)| t).collect(), delete: vec![] };
        self.rewrite(&rw).await?;
        Ok(recorded)
    }

    /// Drops `gone` from this cluster's records (after the routes are removed), and
    /// restores the record of any that another writer has routed again meanwhile.
    pub async fn unrecord(&mut self, gone: &BTreeSet<Route>) -> Result<(), CloudError> {
        let rw = ledger::without(&self.state.tags, gone, self.cluster);
        if rw.is_empty() {
            return Ok(());
        }
        let expected = self.apply(&rw).await?;
        let after = self.cloud.router(&self.state.id).await?;
        let owned = ledger::owned(&after.tags, self.cluster);
        // In `Route`'s order (Neutron's may interleave the families): see `ledger::pack`.
        let back: Vec<Route> = gone.iter().filter(|r| after.routes.contains(r) && !owned.contains(r)).copied().collect();
        if !back.is_empty() {
            for (t, _) in ledger::pack(&back, self.cluster) {
                self.cloud.add_tag(&self.state.id, &t).await?;
            }
            return Err(CloudError::Conflict(format!(
                "router {}: another writer routed {} again while we dropped its record; record restored",
                after.id,
                back.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        self.read_back(&expected).await
    }

    /// Migration: takes over the legacy (cluster-less) records of routes to `our_vms`.
    pub async fn adopt_legacy(&mut self, our_vms: &BTreeSet<IpAddr>) -> Result<(), CloudError> {
        let rw = ledger::adopt(&self.state.tags, self.cluster, our_vms);
        if !rw.is_empty() {
            log::info!(
                "router {}: adopting {} legacy ledger tag(s) of our VMs as cluster {}",
                self.id(),
                rw.delete.len(),
                self.cluster.as_str()
            );
        }
        self.rewrite(&rw).await
    }
}
