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
    /// Verdicts of recently used `memberOf` lists per candidate, newest
    /// last; a verdict is forgotten when its candidate's facts change.
    memos: Vec<Memo>,
}

/// One `memberOf` list's verdict per candidate, with the agent connection
/// it was reached under (`agentConnected` may be among the subjects);
/// `None`: not yet evaluated.
struct Memo {
    exprs: Vec<cql::Expr>,
    verdicts: Vec<Option<(bool, bool)>>,
}

/// How many distinct `memberOf` lists a cluster remembers verdicts for.
const MEMOS: usize = 8;

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
        member_ok: None,
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
    /// when an instance's agent counts as connected; `group` is the
    /// request's task group when a strategy counts its tasks per instance;
    /// `member_of` is the request's `memberOf` list, whose verdict each
    /// candidate carries (`Candidate::member_ok`).
    pub fn candidates(
        &mut self,
        cluster: &str,
        liveness: &dyn Liveness,
        group: Option<&str>,
        member_of: &[cql::Expr],
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
        let memo = slots.memo(member_of);
        let Slots {
            cands,
            active,
            alive,
            memos,
        } = slots;
        let verdicts = memo.map(|k| &mut memos[k].verdicts);
        let mut verdicts = verdicts.map(|v| v.iter_mut());
        for ((c, a), until) in cands.iter_mut().zip(active.iter()).zip(alive.iter_mut()) {
            if until.is_none_or(|u| now >= u) {
                *until = liveness.alive_until(&c.id);
            }
            let connected = until.is_some_and(|u| now < u);
            patch(c, a.as_deref(), connected, group);
            c.member_ok = verdicts.as_mut().and_then(|v| v.next()).map(|v| match *v {
                Some((under, verdict)) if under == connected => verdict,
                _ => {
                    let verdict = member_of.iter().all(|e| cql::eval(e, &c.facts));
                    *v = Some((connected, verdict));
                    verdict
                }
            });
        }
        &slots.cands
    }
}

impl Slots {
    /// The memo for `exprs` (made, evicting the oldest, if new); `None`
    /// when there is nothing to evaluate.
    fn memo(&mut self, exprs: &[cql::Expr]) -> Option<usize> {
        if exprs.is_empty() {
            return None;
        }
        if let Some(k) = self.memos.iter().position(|m| m.exprs == exprs) {
            return Some(k);
        }
        if self.memos.len() >= MEMOS {
            self.memos.remove(0);
        }
        self.memos.push(Memo {
            exprs: exprs.to_vec(),
            verdicts: vec![None; self.cands.len()],
        });
        Some(self.memos.len() - 1)
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.cands.binary_search_by(|c| c.id.as_str().cmp(id))
    }

    fn remove(&mut self, id: &str) {
        if let Ok(k) = self.position(id) {
            self.cands.remove(k);
            self.active.remove(k);
            self.alive.remove(k);
            for m in &mut self.memos {
                m.verdicts.remove(k);
            }
        }
    }

    fn put(&mut self, cand: Candidate, active: Option<Arc<ActiveOn>>) {
        match self.position(&cand.id) {
            Ok(k) => {
                self.cands[k] = cand;
                self.active[k] = active;
                self.alive[k] = None;
                for m in &mut self.memos {
                    m.verdicts[k] = None;
                }
            }
            Err(k) => {
                self.cands.insert(k, cand);
                self.active.insert(k, active);
                self.alive.insert(k, None);
                for m in &mut self.memos {
                    m.verdicts.insert(k, None);
                }
            }
        }
    }
}

/// What [`Index::candidates`] answers, computed from scratch: the reference
/// the index is tested against.
#[cfg(test)]
pub(crate) fn rebuilt(
    m: &Model,
    cluster: &str,
    liveness: &dyn Liveness,
    group: Option<&str>,
    member_of: &[cql::Expr],
) -> Vec<Candidate> {
    let now = Instant::now();
    m.instances
        .values()
        .filter(|i| i.cluster == cluster && i.status != "INACTIVE")
        .map(|i| {
            let active = m.active_on(&i.id);
            let mut c = derive(i, active);
            let connected = liveness.alive_until(&i.id).is_some_and(|u| now < u);
            patch(&mut c, active, connected, group);
            if !member_of.is_empty() {
                c.member_ok = Some(member_of.iter().all(|e| cql::eval(e, &c.facts)));
            }
            c
        })
        .collect()
}
