//! The placement view of a cluster's container instances: one
//! [`Candidate`] per non-INACTIVE instance, kept in step with the model
//! instead of rebuilt for every RunTask.
//!
//! **Architecture Invariant:** the index is a cache, never a source of
//! truth. [`Index::sync`] makes it equal to what [`derive`] computes from
//! the model it is given, by walking only what changed since the model it
//! last saw (`OrdMap::diff` skips the subtrees both versions share, and
//! `Arc<Instance>`/`Arc<ActiveOn>` compare by pointer first), so the
//! candidates RunTask places over are exactly those a full rebuild would
//! give, in the same order (instance id), whatever model it is handed.
//!
//! What a request adds (agent connection now, tasks of the request's group
//! per instance) is written into the slots by [`Index::candidates`] on
//! every call; nothing else in a slot depends on the request. Liveness is
//! asked only of agents whose last answer has run out (an answer is an
//! instant the agent stays connected until, and polls only move it later).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use imbl::ordmap::DiffItem;

use crate::cql;
use crate::model::{ActiveOn, Instance, Model, PMap};
use crate::scheduler::Candidate;
use crate::state::Liveness;

/// One cluster's candidates, in instance-id order.
#[derive(Default)]
struct Slots {
    cands: Vec<Candidate>,
    /// The active-task summary each candidate was derived from (for the
    /// per-request group counts).
    active: Vec<Option<Arc<ActiveOn>>>,
    /// The last `alive_until` answer per candidate. Liveness only moves
    /// later, so before that instant the agent is connected without asking.
    alive: Vec<Option<Instant>>,
}

/// Candidates per cluster, and the model maps they reflect.
#[derive(Default)]
pub struct Index {
    /// The liveness source the cached `alive` answers came from.
    source: u64,
    instances: PMap<String, Arc<Instance>>,
    active: PMap<String, Arc<ActiveOn>>,
    clusters: HashMap<String, Slots>,
}

thread_local! {
    /// Planning runs on the state owner's thread; tests plan on their own.
    static INDEX: std::cell::RefCell<Index> = std::cell::RefCell::new(Index::default());
}

/// Runs `f` with this thread's index brought in step with `m`.
pub fn with_index<R>(m: &Model, f: impl FnOnce(&mut Index) -> R) -> R {
    INDEX.with(|cell| {
        let mut index = cell.borrow_mut();
        index.sync(m);
        f(&mut index)
    })
}

/// The candidate for `inst` from the model alone (connected, no group).
pub fn derive(inst: &Instance, active: Option<&ActiveOn>) -> Candidate {
    let mut tcp_used = inst.resource_ports("PORTS");
    let mut udp_used = inst.resource_ports("PORTS_UDP");
    let (cpu, memory, running) = match active {
        Some(a) => {
            for (udp, port) in a.ports.keys() {
                if *udp {
                    udp_used.insert(*port);
                } else {
                    tcp_used.insert(*port);
                }
            }
            (a.cpu, a.memory, a.running)
        }
        None => (0, 0, 0),
    };
    let facts = cql::Facts {
        agent_connected: true,
        agent_version: inst.agent_version.clone(),
        ec2_instance_id: inst.ec2_instance_id.clone(),
        registered_at: inst.registered_at,
        running_tasks_count: running,
        attributes: inst
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
        // Distinct group names: `task:group` matches if any task's group does.
        task_groups: active
            .map(|a| a.groups.keys().cloned().collect())
            .unwrap_or_default(),
    };
    Candidate {
        id: inst.id.clone(),
        arn: inst.arn.clone(),
        status: inst.status.clone(),
        connected: true,
        cpu_remaining: inst.resource_int("CPU") - cpu,
        memory_remaining: inst.resource_int("MEMORY") - memory,
        tcp_used,
        udp_used,
        facts: Arc::new(facts),
        group_tasks: 0,
    }
}

/// The candidate for one named instance (StartTask), whatever its status.
pub fn one(m: &Model, inst: &Instance, connected: &dyn Fn(&str) -> bool, group: &str) -> Candidate {
    let active = m.active_on(&inst.id);
    let mut c = derive(inst, active);
    patch(&mut c, active, connected(&inst.id), Some(group));
    c
}

/// Sets the per-request parts of `c`.
fn patch(c: &mut Candidate, active: Option<&ActiveOn>, connected: bool, group: Option<&str>) {
    c.connected = connected;
    if c.facts.agent_connected != connected {
        Arc::make_mut(&mut c.facts).agent_connected = connected;
    }
    c.group_tasks = match (group, active) {
        (Some(g), Some(a)) => a.groups.get(g).copied().unwrap_or(0),
        _ => 0,
    };
}

impl Index {
    /// Brings the index in step with `m`.
    pub fn sync(&mut self, m: &Model) {
        let mut dirty: BTreeSet<&str> = BTreeSet::new();
        for d in self.instances.diff(&m.instances) {
            match d {
                DiffItem::Add(id, _) | DiffItem::Remove(id, _) => dirty.insert(id),
                DiffItem::Update { new: (id, _), .. } => dirty.insert(id),
            };
        }
        for d in self.active.diff(&m.active_by_instance) {
            match d {
                DiffItem::Add(id, _) | DiffItem::Remove(id, _) => dirty.insert(id),
                DiffItem::Update { new: (id, _), .. } => dirty.insert(id),
            };
        }
        for id in dirty {
            let now = m.instances.get(id).filter(|i| i.status != "INACTIVE");
            // Out of the cluster it was in unless it stays there (an
            // instance never moves, but the old model may be an unrelated one).
            if let Some(old) = self.instances.get(id) {
                if now.is_none_or(|i| i.cluster != old.cluster) {
                    if let Some(slots) = self.clusters.get_mut(&old.cluster) {
                        slots.remove(id);
                    }
                }
            }
            let Some(inst) = now else {
                continue;
            };
            let active = m.active_by_instance.get(id).cloned();
            let cand = derive(inst, active.as_deref());
            self.clusters
                .entry(inst.cluster.clone())
                .or_default()
                .put(cand, active);
        }
        self.clusters.retain(|_, s| !s.cands.is_empty());
        self.instances = m.instances.clone();
        self.active = m.active_by_instance.clone();
    }

    /// The cluster's candidates for one request: `liveness` says until
    /// when an instance's agent counts as connected;
    /// `group` is the request's task group when a strategy counts its tasks
    /// per instance.
    pub fn candidates(
        &mut self,
        cluster: &str,
        liveness: &dyn Liveness,
        group: Option<&str>,
    ) -> &[Candidate] {
        if self.source != liveness.source() {
            self.source = liveness.source();
            for slots in self.clusters.values_mut() {
                slots.alive.iter_mut().for_each(|a| *a = None);
            }
        }
        let Some(slots) = self.clusters.get_mut(cluster) else {
            return &[];
        };
        let now = Instant::now();
        let Slots {
            cands,
            active,
            alive,
        } = slots;
        for ((c, a), until) in cands.iter_mut().zip(active.iter()).zip(alive.iter_mut()) {
            if until.is_none_or(|u| now >= u) {
                *until = liveness.alive_until(&c.id);
            }
            let connected = until.is_some_and(|u| now < u);
            patch(c, a.as_deref(), connected, group);
        }
        &slots.cands
    }
}

impl Slots {
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.cands.binary_search_by(|c| c.id.as_str().cmp(id))
    }

    fn remove(&mut self, id: &str) {
        if let Ok(k) = self.position(id) {
            self.cands.remove(k);
            self.active.remove(k);
            self.alive.remove(k);
        }
    }

    fn put(&mut self, cand: Candidate, active: Option<Arc<ActiveOn>>) {
        match self.position(&cand.id) {
            Ok(k) => {
                self.cands[k] = cand;
                self.active[k] = active;
                self.alive[k] = None;
            }
            Err(k) => {
                self.cands.insert(k, cand);
                self.active.insert(k, active);
                self.alive.insert(k, None);
            }
        }
    }
}
