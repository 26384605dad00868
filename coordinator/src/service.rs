//! The service scheduler: ECS's deployment arithmetic and the pure
//! [`service_step`] that decides, for one service, which tasks to start and
//! which to stop, and how the service's deployments, counters and events
//! change. [`plan_step`] turns a step into `Command`s for the state owner,
//! placing new tasks through the RunTask path (`state::plan_run`), so
//! placement, dynamic ports and awsvpc addresses are decided in one place.
//!
//! **Architecture Invariant:** nothing here does I/O or reads a clock; time
//! and randomness come from the caller (`now`, a seedable RNG), so a step is
//! reproducible and its result is logged as ordinary commands.
//!
//! Rules, as ECS documents them for the rolling-update (`ECS`) controller:
//! - at most `floor(desired * maximumPercent / 100)` tasks of the service are
//!   active (not STOPPED) at once, and at least
//!   `ceil(desired * minimumHealthyPercent / 100)` stay healthy while old
//!   tasks (other deployments, or on DRAINING instances) are stopped;
//! - a task is healthy when RUNNING and, if an essential container of its
//!   definition has a `healthCheck`, reported HEALTHY; otherwise once it has
//!   been RUNNING for the settle period (ECS waits 40 s);
//! - the circuit breaker fails a deployment after
//!   `min(max(ceil(desired / 2), 3), 200)` of its tasks stopped before
//!   becoming healthy; with rollback it starts a deployment of the last
//!   COMPLETED task definition; a FAILED deployment launches no more tasks;
//! - tasks that keep failing to start are throttled with a growing delay;
//! - scale-in stops unhealthy tasks first, then takes from the availability
//!   zone with the most tasks of the service, oldest first;
//! - DAEMON: one task per ACTIVE instance of the cluster, none on DRAINING.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_api::{DesiredStatus, HealthStatus, StopCode, TaskStatus};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;

use crate::error::ApiError;
use crate::model::{Command, Deployment, Model, Service, ServiceEvent, Task, MAX_SERVICE_EVENTS};
use crate::scheduler::Strategy;
use crate::state::{Ctx, Outcome, RunTask};

/// `ceil(desired * percent / 100)`: tasks that must stay healthy.
pub fn min_healthy(desired: u32, percent: u32) -> u32 {
    let p = u64::from(desired) * u64::from(percent);
    p.div_ceil(100) as u32
}

/// `floor(desired * percent / 100)`: most tasks active at once.
pub fn max_active(desired: u32, percent: u32) -> u32 {
    (u64::from(desired) * u64::from(percent) / 100) as u32
}

/// Failed tasks that trip the deployment circuit breaker:
/// `min(max(ceil(desired / 2), 3), 200)`.
pub fn breaker_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// ECS's `stoppedReason` for a task the scheduler stops because an essential
/// container's health check reports UNHEALTHY (counts as a failed task).
pub const HEALTH_CHECK_FAILED: &str = "Task failed container health checks";

/// Seconds between periodic steps of a settled service (see [`is_settled`]).
pub const SETTLED_TICK_EVERY: u64 = 10;

/// A REPLICA service whose last step found it steady with nothing pending
/// in time: one COMPLETED deployment, no throttling delay running, and its
/// newest event the steady-state one. Only an agent that disconnects can
/// change it without a commit touching it (such commits step it at once).
/// DAEMON services are never settled: an instance's agent connecting (a
/// heartbeat, not a commit) is what gives it a task.
pub fn is_settled(s: &Service, now: f64) -> bool {
    s.status == "ACTIVE"
        && s.scheduling_strategy == "REPLICA"
        && s.deployments.len() == 1
        && s.deployments[0].rollout_state == "COMPLETED"
        && now >= s.next_launch_at
        && s.events
            .first()
            .is_some_and(|e| e.message.ends_with(") has reached a steady state."))
}

/// Services the periodic tick steps at `now`: every live service that is
/// not settled, and every tenth second ([`SETTLED_TICK_EVERY`]) the settled
/// ones too (only a disconnected agent can change those unseen).
pub fn due(m: &Model, now: f64) -> impl Iterator<Item = String> + '_ {
    let full = (now as u64).is_multiple_of(SETTLED_TICK_EVERY);
    m.services
        .values()
        .filter(|s| s.status != "INACTIVE")
        .filter(move |s| full || !is_settled(s, now))
        .map(|s| s.key())
}

/// Consecutive start failures after which launches are throttled.
pub const THROTTLE_AFTER: u32 = 3;

/// Delay before the next launch after `failures` consecutive start failures:
/// none up to [`THROTTLE_AFTER`], then 10 s doubling per failure, at most 15 min.
pub fn throttle_delay(failures: u32) -> f64 {
    if failures <= THROTTLE_AFTER {
        return 0.0;
    }
    let exp = (failures - THROTTLE_AFTER - 1).min(10);
    (10.0 * f64::from(1u32 << exp)).min(900.0)
}

/// What the step sees of one task of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFacts<'a> {
    pub id: &'a str,
    /// `startedBy`: the deployment that started it.
    pub deployment: Option<&'a str>,
    pub instance_id: &'a str,
    pub availability_zone: Option<&'a str>,
    pub created_at: f64,
    /// Not STOPPED (holds resources, counts towards maximumPercent).
    pub active: bool,
    /// Active and desired RUNNING (not yet being stopped).
    pub wanted: bool,
    pub healthy: bool,
    /// An essential container's health check reports UNHEALTHY: replaced.
    pub unhealthy: bool,
    /// Its instance is not ACTIVE (DRAINING) or its agent is disconnected:
    /// to be replaced elsewhere.
    pub on_draining: bool,
    /// STOPPED before becoming healthy, not stopped by a user or the scheduler.
    pub failed: bool,
    /// STOPPED and already counted by an earlier step.
    pub accounted: bool,
    /// The capacity provider it was placed through, if any.
    pub capacity_provider: Option<&'a str>,
}

/// What one step decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    /// The service with its new deployments, counters and events.
    pub service: Service,
    /// REPLICA: tasks of the PRIMARY deployment to start.
    pub start: u32,
    /// DAEMON: instances that each get one task of the PRIMARY deployment.
    pub start_on: Vec<String>,
    /// Tasks to stop.
    pub stop: Vec<String>,
    /// STOPPED tasks counted by this step (marked so they count once).
    pub accounted: Vec<String>,
}

fn event(s: &mut Service, rng: &mut StdRng, now: f64, message: String) {
    if s.events.first().is_some_and(|e| e.message == message) {
        return;
    }
    let id = uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string();
    s.events.insert(
        0,
        ServiceEvent {
            id,
            created_at: now,
            message,
        },
    );
    s.events.truncate(MAX_SERVICE_EVENTS);
}

/// Adds an event unless it repeats the newest one (ECS does not repeat
/// itself either).
pub fn push_event(s: &mut Service, rng: &mut StdRng, now: f64, message: String) {
    event(s, rng, now, message)
}

/// A new deployment id: `ecs-svc/` and 19 digits.
pub fn deployment_id(rng: &mut StdRng) -> String {
    let n: u64 = rng.gen_range(1_000_000_000_000_000_000..10_000_000_000_000_000_000);
    format!("ecs-svc/{n}")
}

pub fn new_deployment(
    id: String,
    task_definition: &str,
    desired: u32,
    network_configuration: Option<Value>,
    now: f64,
) -> Deployment {
    Deployment {
        rollout_state_reason: format!("ECS deployment {id} in progress."),
        id,
        status: "PRIMARY".into(),
        task_definition: task_definition.to_string(),
        desired_count: desired,
        failed_tasks: 0,
        created_at: now,
        updated_at: now,
        rollout_state: "IN_PROGRESS".into(),
        network_configuration,
        capacity_provider_strategy: vec![],
    }
}

fn task_word(id: &str) -> String {
    format!("(task {id})")
}

/// Picks `n` of `cands` to stop: unhealthy first (oldest first), then from
/// the availability zone holding the most of `population`, oldest first.
pub fn pick_to_stop(cands: &[&TaskFacts], population: &[&TaskFacts], n: usize) -> Vec<String> {
    if n == 0 || cands.is_empty() {
        return Vec::new();
    }
    let mut left: Vec<&TaskFacts> = cands.to_vec();
    left.sort_by(|a, b| {
        a.created_at
            .total_cmp(&b.created_at)
            .then_with(|| a.id.cmp(b.id))
    });
    let mut per_az: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for t in population {
        *per_az.entry(t.availability_zone).or_default() += 1;
    }
    let mut out = Vec::new();
    while out.len() < n && !left.is_empty() {
        let idx = match left.iter().position(|t| !t.healthy) {
            Some(i) => i,
            None => {
                let count = |t: &&TaskFacts| per_az.get(&t.availability_zone).copied().unwrap_or(0);
                let most = left.iter().map(count).max().unwrap_or(0);
                left.iter().position(|t| count(t) == most).unwrap_or(0)
            }
        };
        let t = left.remove(idx);
        if let Some(c) = per_az.get_mut(&t.availability_zone) {
            *c = c.saturating_sub(1);
        }
        out.push(t.id.to_string());
    }
    out
}

/// One scheduling step for `svc`, given its tasks (active ones and STOPPED
/// ones still in the model) and, for DAEMON, the ACTIVE instances of its
/// cluster with whether their agent is connected (a disconnected instance
/// keeps its daemon task but gets no new one). Pure: `now` and `rng` are the
/// caller's.
pub fn service_step(
    svc: &Service,
    tasks: &[TaskFacts],
    daemon_targets: &[(String, bool)],
    now: f64,
    rng: &mut StdRng,
) -> Decisions {
    let mut s = svc.clone();
    let name = s.name.clone();
    let mut stop: Vec<String> = Vec::new();

    // 1. Account tasks that stopped since the last step.
    let mut new_failures = 0u32;
    let mut accounted = Vec::new();
    for t in tasks.iter().filter(|t| !t.active && !t.accounted) {
        accounted.push(t.id.to_string());
        if t.failed {
            new_failures += 1;
            if let Some(d) = s
                .deployments
                .iter_mut()
                .find(|d| Some(d.id.as_str()) == t.deployment)
            {
                d.failed_tasks += 1;
                d.updated_at = now;
            }
        }
    }
    if new_failures > 0 {
        s.launch_failures += new_failures;
        if s.launch_failures > THROTTLE_AFTER {
            s.next_launch_at = now + throttle_delay(s.launch_failures);
            event(
                &mut s,
                rng,
                now,
                format!("(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."),
            );
        }
    }

    // 2. Circuit breaker on the PRIMARY deployment.
    let cb = s.deployment_configuration.circuit_breaker;
    if s.status == "ACTIVE" && cb.enable {
        if let Some(pi) = s.deployments.iter().position(|d| d.status == "PRIMARY") {
            let p = &s.deployments[pi];
            if p.rollout_state == "IN_PROGRESS"
                && p.failed_tasks >= breaker_threshold(p.desired_count)
            {
                let failed_id = p.id.clone();
                let failed_td = p.task_definition.clone();
                let d = &mut s.deployments[pi];
                d.rollout_state = "FAILED".into();
                d.rollout_state_reason =
                    "ECS deployment circuit breaker: tasks failed to start.".into();
                d.updated_at = now;
                event(
                    &mut s,
                    rng,
                    now,
                    format!("(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."),
                );
                let target = s.last_completed_task_definition.clone();
                if let Some(td) = target.filter(|td| cb.rollback && *td != failed_td) {
                    let id = deployment_id(rng);
                    for d in s.deployments.iter_mut() {
                        d.status = "ACTIVE".into();
                    }
                    // ECS names the deployment rolled back to: the newest
                    // COMPLETED one of that task definition (kept while it has
                    // tasks; once retired, only the new deployment's id is known).
                    let back_to = s
                        .deployments
                        .iter()
                        .find(|d| d.rollout_state == "COMPLETED" && d.task_definition == td)
                        .map_or_else(|| id.clone(), |d| d.id.clone());
                    let mut nd = new_deployment(
                        id.clone(),
                        &td,
                        s.desired_count,
                        s.network_configuration.clone(),
                        now,
                    );
                    nd.rollout_state_reason = format!(
                        "ECS deployment circuit breaker: rolling back to deploymentId {back_to}."
                    );
                    nd.capacity_provider_strategy = s.capacity_provider_strategy.clone();
                    s.deployments.insert(0, nd);
                    s.task_definition = td;
                    s.launch_failures = 0;
                    s.next_launch_at = 0.0;
                    event(
                        &mut s,
                        rng,
                        now,
                        format!("(service {name}) rolling back to deployment {back_to}."),
                    );
                }
            }
        }
    }

    let primary = s.primary().cloned();
    let active: Vec<&TaskFacts> = tasks.iter().filter(|t| t.active).collect();
    let mut start = 0u32;
    let mut start_on = Vec::new();

    if s.status != "ACTIVE" {
        // DRAINING (deleted): stop everything, then become INACTIVE.
        stop.extend(active.iter().filter(|t| t.wanted).map(|t| t.id.to_string()));
        if active.is_empty() {
            s.status = "INACTIVE".into();
            s.deployments.clear();
        }
    } else if let Some(p) = primary.as_ref() {
        // Tasks whose health checks fail are replaced, whatever their deployment.
        for t in active.iter().filter(|t| t.wanted && t.unhealthy) {
            event(
                &mut s,
                rng,
                now,
                format!(
                    "(service {name}) (task {}) failed container health checks.",
                    t.id
                ),
            );
            stop.push(t.id.to_string());
        }
        let is_primary = |t: &TaskFacts| t.deployment == Some(p.id.as_str());
        let can_launch = p.rollout_state != "FAILED" && now >= s.next_launch_at;
        if s.scheduling_strategy == "DAEMON" {
            let targets: BTreeSet<&str> = daemon_targets.iter().map(|(i, _)| i.as_str()).collect();
            let mut per_instance: BTreeMap<&str, Vec<&TaskFacts>> = BTreeMap::new();
            for t in &active {
                per_instance.entry(t.instance_id).or_default().push(t);
            }
            for (inst, ts) in &per_instance {
                if !targets.contains(inst) {
                    stop.extend(ts.iter().filter(|t| t.wanted).map(|t| t.id.to_string()));
                    continue;
                }
                let mut kept_primary = false;
                for t in ts.iter().filter(|t| t.wanted && !t.unhealthy) {
                    if is_primary(t) && !kept_primary {
                        kept_primary = true;
                    } else {
                        stop.push(t.id.to_string());
                    }
                }
            }
            if can_launch {
                start_on = daemon_targets
                    .iter()
                    .filter(|(i, connected)| *connected && !per_instance.contains_key(i.as_str()))
                    .map(|(i, _)| i.clone())
                    .collect();
            }
            s.desired_count = daemon_targets.len() as u32;
        } else {
            let desired = s.desired_count;
            let cfg = s.deployment_configuration;
            let max_total = max_active(desired, cfg.maximum_percent);
            let min_ok = min_healthy(desired, cfg.minimum_healthy_percent);
            let keep: Vec<&TaskFacts> = active
                .iter()
                .copied()
                .filter(|t| t.wanted && !t.unhealthy && is_primary(t) && !t.on_draining)
                .collect();
            let old: Vec<&TaskFacts> = active
                .iter()
                .copied()
                .filter(|t| t.wanted && !t.unhealthy && (t.on_draining || !is_primary(t)))
                .collect();
            let mut healthy = active.iter().filter(|t| t.wanted && t.healthy).count() as u32;
            // Scale-in of the PRIMARY deployment.
            let excess = (keep.len() as u32).saturating_sub(desired) as usize;
            let population: Vec<&TaskFacts> = active
                .iter()
                .copied()
                .filter(|t| t.wanted && !t.unhealthy)
                .collect();
            let picked = if s.capacity_provider_strategy.is_empty() {
                pick_to_stop(&keep, &population, excess)
            } else {
                crate::capacity::pick_scale_in(
                    &s.capacity_provider_strategy,
                    &keep,
                    &population,
                    excess,
                )
            };
            for id in picked {
                if keep.iter().any(|t| t.id == id && t.healthy) {
                    healthy = healthy.saturating_sub(1);
                }
                stop.push(id);
            }
            // Old tasks: unhealthy ones go at once; healthy ones down to the minimum.
            let mut room_to_stop = healthy.saturating_sub(min_ok) as usize;
            let unhealthy_old: Vec<&TaskFacts> =
                old.iter().copied().filter(|t| !t.healthy).collect();
            stop.extend(unhealthy_old.iter().map(|t| t.id.to_string()));
            let healthy_old: Vec<&TaskFacts> = old.iter().copied().filter(|t| t.healthy).collect();
            room_to_stop = room_to_stop.min(healthy_old.len());
            stop.extend(pick_to_stop(&healthy_old, &population, room_to_stop));
            // Starts within maximumPercent (tasks being stopped still count).
            if can_launch {
                let want = desired.saturating_sub(keep.len() as u32);
                let room = max_total.saturating_sub(active.len() as u32);
                start = want.min(room);
                // Stuck only when nothing is on its way out: tasks already being
                // stopped free room for starts once they are STOPPED.
                let stopping_already = active.iter().any(|t| !t.wanted);
                if want > 0 && room == 0 && stop.is_empty() && !stopping_already && !old.is_empty()
                {
                    event(
                        &mut s,
                        rng,
                        now,
                        format!(
                            "(service {name}) is unable to replace tasks: with minimumHealthyPercent {} and maximumPercent {} of desired count {desired}, no task can be stopped or started.",
                            cfg.minimum_healthy_percent, cfg.maximum_percent
                        ),
                    );
                }
            }
        }
    }

    // 3. Deployments: counts, retirement of drained ones, completion.
    let stopping: BTreeSet<&str> = stop.iter().map(String::as_str).collect();
    let live = |dep: &str| active.iter().filter(|t| t.deployment == Some(dep)).count() as u32;
    s.deployments
        .retain(|d| d.status == "PRIMARY" || live(&d.id) > 0);
    let desired = s.desired_count;
    for d in s.deployments.iter_mut() {
        if d.status == "PRIMARY" {
            if d.desired_count != desired {
                d.desired_count = desired;
                d.updated_at = now;
            }
        } else {
            let n = active
                .iter()
                .filter(|t| t.deployment == Some(d.id.as_str()) && t.wanted)
                .filter(|t| !stopping.contains(t.id))
                .count() as u32;
            if n < d.desired_count {
                d.desired_count = n;
                d.updated_at = now;
            }
        }
    }
    if s.status == "ACTIVE" {
        if let Some(pi) = s.deployments.iter().position(|d| d.status == "PRIMARY") {
            let pid = s.deployments[pi].id.clone();
            let of_primary: Vec<&&TaskFacts> = active
                .iter()
                .filter(|t| t.deployment == Some(pid.as_str()))
                .collect();
            let steady = s.deployments.len() == 1
                && stop.is_empty()
                && start == 0
                && start_on.is_empty()
                && of_primary.len() as u32 == desired
                && of_primary
                    .iter()
                    .all(|t| t.wanted && t.healthy && !t.on_draining);
            if steady {
                let d = &mut s.deployments[pi];
                if d.rollout_state == "IN_PROGRESS" {
                    d.rollout_state = "COMPLETED".into();
                    d.rollout_state_reason = format!("ECS deployment {pid} completed.");
                    d.updated_at = now;
                    let td = d.task_definition.clone();
                    s.last_completed_task_definition = Some(td);
                    s.launch_failures = 0;
                    event(
                        &mut s,
                        rng,
                        now,
                        format!("(service {name}) (deployment {pid}) deployment completed."),
                    );
                }
                if s.deployments[pi].rollout_state == "COMPLETED" {
                    event(
                        &mut s,
                        rng,
                        now,
                        format!("(service {name}) has reached a steady state."),
                    );
                }
            }
        }
    }
    if !stop.is_empty() {
        let words: Vec<String> = stop.iter().map(|id| task_word(id)).collect();
        event(
            &mut s,
            rng,
            now,
            format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stop.len(),
                words.join(" ")
            ),
        );
    }
    Decisions {
        service: s,
        start,
        start_on,
        stop,
        accounted,
    }
}

// ---------------------------------------------------------------------------
// From the model to a step and back to commands.

/// Whether an essential container of the task has a `healthCheck`.
fn has_health_check(t: &Task) -> bool {
    t.containers
        .iter()
        .any(|c| c.spec.essential && c.spec.health_check.is_some())
}

/// The task's `healthStatus` by ECS's rule (essential containers with a
/// check count).
pub fn task_health(t: &Task) -> HealthStatus {
    HealthStatus::of_task(t.containers.iter().map(|c| {
        (
            c.spec.essential,
            c.spec.health_check.is_some(),
            c.health_status,
        )
    }))
}

/// Healthy per ECS: RUNNING and desired RUNNING, and HEALTHY where an
/// essential container has a health check, else RUNNING for `settle` seconds.
pub fn is_healthy(t: &Task, settle: f64, now: f64) -> bool {
    if t.last_status != TaskStatus::Running || t.desired_status != DesiredStatus::Running {
        return false;
    }
    if has_health_check(t) {
        task_health(t) == HealthStatus::Healthy
    } else {
        t.started_at.is_some_and(|s| now - s >= settle)
    }
}

/// Whether a task that stopped had never become healthy (and so counts as
/// failed for the circuit breaker and throttling, unless the scheduler or a
/// user stopped it): with a health check, it was not HEALTHY; without one, it
/// never started or ran for less than the `settle` period that makes it
/// healthy, so a container that crashes right after starting counts too.
pub fn stopped_before_healthy(
    checked: bool,
    health: HealthStatus,
    started_at: Option<f64>,
    stopped_at: Option<f64>,
    settle: f64,
) -> bool {
    if checked {
        return health != HealthStatus::Healthy;
    }
    match (started_at, stopped_at) {
        (None, _) => true,
        (Some(start), Some(stop)) => stop - start < settle,
        (Some(_), None) => false,
    }
}

/// The step's view of a task. A task on an instance that is not ACTIVE
/// (DRAINING) or whose agent is disconnected (no poll within the agent
/// timeout) is to be replaced elsewhere, within the deployment limits.
pub fn facts<'a>(
    m: &Model,
    t: &'a Task,
    settle: f64,
    now: f64,
    connected: &dyn Fn(&str) -> bool,
) -> TaskFacts<'a> {
    let stopped = !t.is_active();
    let by_scheduler = matches!(
        t.stop_code,
        Some(StopCode::ServiceSchedulerInitiated | StopCode::UserInitiated)
    );
    let never_healthy = stopped_before_healthy(
        has_health_check(t),
        task_health(t),
        t.started_at,
        t.execution_stopped_at.or(t.stopped_at),
        settle,
    );
    TaskFacts {
        id: &t.id,
        deployment: t.started_by.as_deref(),
        instance_id: &t.instance_id,
        availability_zone: t.availability_zone.as_deref(),
        created_at: t.created_at,
        active: !stopped,
        wanted: !stopped && t.desired_status == DesiredStatus::Running,
        healthy: is_healthy(t, settle, now),
        unhealthy: !stopped && task_health(t) == HealthStatus::Unhealthy,
        on_draining: m
            .instances
            .get(&t.instance_id)
            .is_none_or(|i| i.status != "ACTIVE")
            || !connected(&t.instance_id),
        accounted: t.service_accounted,
        capacity_provider: t.capacity_provider_name.as_deref(),
        failed: stopped
            && never_healthy
            && (!by_scheduler || t.stopped_reason.as_deref() == Some(HEALTH_CHECK_FAILED)),
    }
}

/// Services a batch of commands may have disturbed: those whose tasks
/// changed, those created or changed, and every service of a cluster whose
/// instances changed.
pub fn affected(m: &Model, cmds: &[Command]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if m.services.is_empty() {
        return out;
    }
    let mut clusters: BTreeSet<String> = BTreeSet::new();
    let task_touch = |t: &Task, out: &mut BTreeSet<String>| {
        if let Some(k) = crate::model::task_service_key(t) {
            out.insert(k);
        }
    };
    for c in cmds {
        match c {
            Command::PutTasks { tasks, .. } | Command::Report { tasks, .. } => {
                for t in tasks {
                    task_touch(t, &mut out);
                }
            }
            Command::DeregisterInstance { id, tasks } => {
                for t in tasks {
                    task_touch(t, &mut out);
                }
                if let Some(i) = m.instances.get(id) {
                    clusters.insert(i.cluster.clone());
                }
            }
            Command::RegisterInstance { instance } => {
                clusters.insert(instance.cluster.clone());
            }
            Command::SetInstanceStatus { ids, .. } => {
                for id in ids {
                    if let Some(i) = m.instances.get(id) {
                        clusters.insert(i.cluster.clone());
                    }
                }
            }
            Command::SetAttributes { instance, .. } => {
                if let Some(i) = m.instances.get(instance) {
                    clusters.insert(i.cluster.clone());
                }
            }
            Command::PutService(s) => {
                out.insert(s.key());
            }
            _ => {}
        }
    }
    for s in m.services.values() {
        if clusters.contains(&s.cluster) {
            out.insert(s.key());
        }
    }
    out.retain(|k| m.services.get(k).is_some_and(|s| s.status != "INACTIVE"));
    out
}

/// Placement rules of a service: `memberOf` expressions, `distinctInstance`,
/// and strategies (ECS's service default when none: spread by availability
/// zone, then by instance).
pub fn placement(s: &Service) -> Result<(Vec<crate::cql::Expr>, bool, Vec<Strategy>), ApiError> {
    let mut member_of = Vec::new();
    let mut distinct = false;
    for c in &s.placement_constraints {
        match c.get("type").and_then(Value::as_str) {
            Some("distinctInstance") => distinct = true,
            Some("memberOf") => {
                if let Some(e) = c.get("expression").and_then(Value::as_str) {
                    member_of
                        .push(crate::cql::parse(e).map_err(|e| ApiError::invalid(e.to_string()))?);
                }
            }
            _ => {}
        }
    }
    let mut strategies = Vec::new();
    for st in &s.placement_strategy {
        let field = st.get("field").and_then(Value::as_str).unwrap_or("");
        let parsed = match st.get("type").and_then(Value::as_str) {
            Some("random") => Some(Strategy::Random),
            Some("spread") if field.eq_ignore_ascii_case("instanceId") || field == "host" => {
                Some(Strategy::SpreadInstance)
            }
            Some("spread") => field
                .strip_prefix("attribute:")
                .map(|a| Strategy::SpreadAttribute(a.to_string())),
            Some("binpack") if field.eq_ignore_ascii_case("cpu") => Some(Strategy::BinpackCpu),
            Some("binpack") if field.eq_ignore_ascii_case("memory") => {
                Some(Strategy::BinpackMemory)
            }
            _ => None,
        };
        strategies.extend(parsed);
    }
    if strategies.is_empty() && s.scheduling_strategy == "REPLICA" {
        strategies = vec![
            Strategy::SpreadAttribute("ecs.availability-zone".into()),
            Strategy::SpreadInstance,
        ];
    }
    Ok((member_of, distinct, strategies))
}

/// ECS's words for the closest matching instance's misfit.
fn misfit(reason: &str) -> String {
    match reason {
        "RESOURCE:MEMORY" => "has insufficient memory available".into(),
        "RESOURCE:CPU" => "has insufficient CPU units available".into(),
        "RESOURCE:PORTS" | "RESOURCE:PORTS_UDP" => {
            "is already using a port required by your task".into()
        }
        "ATTRIBUTE" => "is missing an attribute required by your task".into(),
        other => format!("encountered error \"{other}\""),
    }
}

/// Tasks one service step starts at most. A larger shortfall is made up
/// over the following commits (the state owner steps such a service again
/// at once), so one large service never holds up every other request for
/// the time it takes to place thousands of tasks.
pub const LAUNCHES_PER_STEP: u32 = 100;

/// What one service step decided.
#[derive(Debug, Default)]
pub struct Step {
    pub cmds: Vec<Command>,
    /// Tasks it started.
    pub started: u32,
    /// It started `cap` tasks and wants more: step it again.
    pub more: bool,
}

/// Plans one step of the service `key` against `m`: the task stops, the
/// placements of at most `cap` new tasks, and the service's new state, as
/// commands.
pub fn plan_step(m: &Model, key: &str, ctx: &mut Ctx<'_>, cap: u32) -> Result<Step, ApiError> {
    let Some(svc) = m.services.get(key) else {
        return Ok(Step::default());
    };
    if svc.status == "INACTIVE" {
        return Ok(Step::default());
    }
    let tasks: Vec<&Arc<Task>> = m
        .tasks_by_service
        .get(key)
        .map(|ts| ts.values().collect())
        .unwrap_or_default();
    let now = ctx.now;
    let settle = ctx.settings.service_settle_secs;
    let view: Vec<TaskFacts> = tasks
        .iter()
        .map(|t| facts(m, t, settle, now, &|id| ctx.connected(id)))
        .collect();
    let targets: Vec<(String, bool)> = if svc.scheduling_strategy == "DAEMON" {
        m.instances
            .values()
            .filter(|i| i.cluster == svc.cluster && i.status == "ACTIVE")
            .map(|i| (i.id.clone(), ctx.connected(&i.id)))
            .collect()
    } else {
        vec![]
    };
    let d = service_step(svc, &view, &targets, now, ctx.rng);
    let mut s = d.service;
    let mut cmds = Vec::new();
    let primary_id = s.primary().map(|p| p.id.clone()).unwrap_or_default();
    if !d.stop.is_empty() || !d.accounted.is_empty() {
        let marked = d
            .accounted
            .iter()
            .filter_map(|id| m.tasks.get(id))
            .map(|t| {
                let mut n = (**t).clone();
                n.service_accounted = true;
                n
            });
        let stopped: Vec<Task> = d
            .stop
            .iter()
            .filter_map(|id| m.tasks.get(id))
            .map(|t| {
                let mut n = (**t).clone();
                n.desired_status = DesiredStatus::Stopped;
                n.stop_code = Some(StopCode::ServiceSchedulerInitiated);
                let unhealthy = view.iter().any(|f| f.id == t.id && f.unhealthy);
                n.stopped_reason = Some(if unhealthy {
                    HEALTH_CHECK_FAILED.to_string()
                } else {
                    format!("Scaling activity initiated by (deployment {primary_id})")
                });
                n.stopping_at.get_or_insert(now);
                n.version += 1;
                n
            })
            .chain(marked)
            .collect();
        cmds.push(Command::PutTasks {
            tasks: stopped,
            token: None,
        });
    }
    let mut start_on = d.start_on.clone();
    start_on.truncate(cap as usize);
    let shortfall = if s.scheduling_strategy == "DAEMON" {
        d.start_on.len() as u32
    } else {
        d.start
    };
    let wanted = shortfall.min(cap);
    let mut started = 0;
    if wanted > 0 {
        if let Some(p) = s.primary().cloned() {
            let (member_of, distinct_instance, strategies) = placement(&s)?;
            let network_configuration = p
                .network_configuration
                .as_ref()
                .map(crate::network::parse_network_configuration)
                .transpose()
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let uses_providers = !s.capacity_provider_strategy.is_empty();
            let run = RunTask {
                cluster: Some(s.cluster.clone()),
                task_definition: p.task_definition.clone(),
                count: wanted,
                started_by: Some(p.id.clone()),
                group: Some(s.group()),
                launch_type: (!uses_providers).then(|| s.launch_type.clone()),
                capacity: uses_providers.then(|| {
                    Box::new(crate::capacity::RunCapacity {
                        strategy: Some(s.capacity_provider_strategy.clone()),
                        provider: None,
                        group: None,
                        counts: crate::capacity::counts_of(
                            tasks
                                .iter()
                                .map(|t| t.as_ref())
                                .filter(|t| {
                                    t.is_active() && t.desired_status == DesiredStatus::Running
                                })
                                .filter(|t| t.started_by.as_deref() == Some(p.id.as_str())),
                        ),
                    })
                }),
                tags: if s.propagate_tags == "SERVICE" {
                    s.tags.clone()
                } else {
                    vec![]
                },
                instances: (s.scheduling_strategy == "DAEMON").then_some(start_on),
                member_of,
                distinct_instance,
                strategies,
                propagate_taskdef_tags: s.propagate_tags == "TASK_DEFINITION",
                network_configuration,
                for_service: true,
                ..RunTask::default()
            };
            let name = s.name.clone();
            match crate::capacity::plan_run(m, run, ctx) {
                Ok((run_cmds, Outcome::Tasks { ids, failures })) => {
                    cmds.extend(run_cmds);
                    started = ids.len() as u32;
                    if !ids.is_empty() {
                        let words: Vec<String> = ids.iter().map(|id| task_word(id)).collect();
                        event(
                            &mut s,
                            ctx.rng,
                            now,
                            format!(
                                "(service {name}) has started {} tasks: {}.",
                                ids.len(),
                                words.join(" ")
                            ),
                        );
                    }
                    if (ids.len() as u32) < wanted {
                        let closest = failures.first().map(|f| {
                            let inst = f
                                .arn
                                .as_deref()
                                .and_then(|a| a.rsplit('/').next())
                                .unwrap_or("");
                            format!(
                                "The closest matching (container-instance {inst}) {}.",
                                misfit(&f.reason)
                            )
                        });
                        event(
                            &mut s,
                            ctx.rng,
                            now,
                            format!(
                                "(service {name}) was unable to place a task because no container instance met all of its requirements. {} For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
                                closest.unwrap_or_else(|| "Reason: No Container Instances were found in your cluster.".into())
                            ),
                        );
                    }
                }
                Ok(_) => {}
                Err(e) if e.message.contains("No Container Instances") => {
                    event(
                        &mut s,
                        ctx.rng,
                        now,
                        format!(
                            "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
                        ),
                    );
                }
                Err(e) => {
                    event(
                        &mut s,
                        ctx.rng,
                        now,
                        format!(
                            "(service {name}) failed to launch a task with ({}).",
                            e.message
                        ),
                    );
                }
            }
        }
    }
    if s != **svc {
        cmds.push(Command::PutService(s));
    }
    Ok(Step {
        cmds,
        started,
        more: shortfall > wanted && started == wanted,
    })
}

// ---------------------------------------------------------------------------
// CreateService, UpdateService, DeleteService.

/// `deploymentConfiguration` as given (absent members keep their values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentConfigInput {
    pub minimum_healthy_percent: Option<u32>,
    pub maximum_percent: Option<u32>,
    pub circuit_breaker: Option<crate::model::CircuitBreaker>,
}

/// CreateService, parsed and checked in isolation by the handler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateService {
    pub cluster: Option<String>,
    pub name: String,
    pub task_definition: String,
    pub desired_count: Option<u32>,
    /// `EC2`/`EXTERNAL`, or empty when not given (then the strategy, else
    /// the cluster's default strategy for REPLICA, else `EXTERNAL`).
    pub launch_type: String,
    /// `capacityProviderStrategy` when given (not with a launch type).
    pub capacity_provider_strategy: Option<Vec<crate::capacity::StrategyItem>>,
    /// `REPLICA` or `DAEMON`.
    pub scheduling_strategy: String,
    pub deployment_configuration: DeploymentConfigInput,
    pub placement_constraints: Vec<Value>,
    pub placement_strategy: Vec<Value>,
    pub network_configuration: Option<Value>,
    pub tags: Vec<crate::model::Tag>,
    pub propagate_tags: String,
    pub enable_ecs_managed_tags: bool,
}

/// UpdateService: `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateService {
    pub cluster: Option<String>,
    pub service: String,
    pub desired_count: Option<u32>,
    pub task_definition: Option<String>,
    pub deployment_configuration: Option<DeploymentConfigInput>,
    pub placement_constraints: Option<Vec<Value>>,
    pub placement_strategy: Option<Vec<Value>>,
    pub network_configuration: Option<Value>,
    pub force_new_deployment: bool,
    /// `capacityProviderStrategy`: a changed strategy starts a new
    /// deployment; an empty list means the cluster's default strategy.
    pub capacity_provider_strategy: Option<Vec<crate::capacity::StrategyItem>>,
}

fn service_not_found() -> ApiError {
    ApiError::new(
        crate::error::ErrorKind::ServiceNotFoundException,
        "Service not found.",
    )
}

/// A service of `cluster` by name or ARN.
pub fn find_service<'a>(m: &'a Model, cluster: &str, reference: &str) -> Option<&'a Arc<Service>> {
    let name = if reference.starts_with("arn:") {
        reference.rsplit('/').next().unwrap_or(reference)
    } else {
        reference
    };
    m.services.get(&crate::model::service_key(cluster, name))
}

/// Resolves a task-definition reference for a service: the ARN of an ACTIVE
/// revision (a family means its latest ACTIVE one).
fn resolve_task_def(m: &Model, reference: &str) -> Result<Arc<crate::model::TaskDef>, ApiError> {
    let r = crate::taskdef::parse_reference(reference)?;
    let td = crate::state::find_task_def(m, &r)
        .ok_or_else(|| ApiError::client("TaskDefinition not found."))?;
    if td.status != "ACTIVE" {
        return Err(ApiError::client("TaskDefinition is inactive"));
    }
    Ok(td.clone())
}

/// The definition's network mode against the service's networkConfiguration.
fn check_network(td: &crate::model::TaskDef, network: Option<&Value>) -> Result<(), ApiError> {
    let (_, req) = crate::taskdef::containers_for_run(&td.definition, None)?;
    crate::network::check_mode(&req.network_mode, network.is_some())
        .map_err(|e| ApiError::invalid(e.to_string()))
}

fn merge_config(
    base: crate::model::DeploymentConfig,
    input: &DeploymentConfigInput,
    daemon: bool,
) -> Result<crate::model::DeploymentConfig, ApiError> {
    let c = crate::model::DeploymentConfig {
        minimum_healthy_percent: input
            .minimum_healthy_percent
            .unwrap_or(base.minimum_healthy_percent),
        maximum_percent: input.maximum_percent.unwrap_or(base.maximum_percent),
        circuit_breaker: input.circuit_breaker.unwrap_or(base.circuit_breaker),
    };
    if c.minimum_healthy_percent > 100 {
        return Err(ApiError::invalid(
            "minimumHealthyPercent must be between 0 and 100.",
        ));
    }
    if daemon && c.maximum_percent != 100 {
        return Err(ApiError::invalid(
            "The maximumPercent for a service using the DAEMON scheduling strategy must be 100.",
        ));
    }
    if c.maximum_percent < 100 && !daemon {
        return Err(ApiError::invalid(
            "maximumPercent must be greater than or equal to 100.",
        ));
    }
    Ok(c)
}

pub fn plan_create(
    m: &Model,
    r: CreateService,
    ctx: &mut Ctx<'_>,
) -> Result<(Vec<Command>, Outcome), ApiError> {
    let cluster = crate::state::active_cluster(m, r.cluster.as_deref())?;
    let key = crate::model::service_key(&cluster.name, &r.name);
    let td = resolve_task_def(m, &r.task_definition)?;
    let (launch_type, capacity_provider_strategy) = crate::capacity::service_placement(
        cluster,
        &r.launch_type,
        r.capacity_provider_strategy.as_deref(),
        r.scheduling_strategy == "DAEMON",
    )?;
    match m.services.get(&key) {
        Some(s) if s.status == "ACTIVE" => {
            // ECS: the same request again returns the service; different
            // parameters are refused.
            let same = s.task_definition == td.arn
                && (s.scheduling_strategy == "DAEMON" || Some(s.desired_count) == r.desired_count)
                && s.launch_type == launch_type
                && s.capacity_provider_strategy == capacity_provider_strategy
                && s.scheduling_strategy == r.scheduling_strategy;
            if same {
                return Ok((vec![], Outcome::Service(key)));
            }
            return Err(ApiError::invalid("Creation of service was not idempotent."));
        }
        Some(s) if s.status == "DRAINING" => {
            return Err(ApiError::invalid(
                "Unable to Start a service that is still Draining.",
            ));
        }
        _ => {}
    }
    check_network(&td, r.network_configuration.as_ref())?;
    let daemon = r.scheduling_strategy == "DAEMON";
    let defaults = crate::model::DeploymentConfig {
        minimum_healthy_percent: if daemon { 0 } else { 100 },
        maximum_percent: if daemon { 100 } else { 200 },
        circuit_breaker: crate::model::CircuitBreaker {
            enable: false,
            rollback: false,
        },
    };
    let config = merge_config(defaults, &r.deployment_configuration, daemon)?;
    // Validates the placement rules once more against the parser.
    let account = &ctx.settings.account_id;
    let desired = if daemon {
        0
    } else {
        r.desired_count.unwrap_or(0)
    };
    let id = deployment_id(ctx.rng);
    let mut svc = Service {
        name: r.name.clone(),
        arn: format!(
            "arn:aws:ecs:{}:{account}:service/{}/{}",
            cluster.region, cluster.name, r.name
        ),
        cluster: cluster.name.clone(),
        status: "ACTIVE".into(),
        desired_count: desired,
        launch_type,
        scheduling_strategy: r.scheduling_strategy,
        task_definition: td.arn.clone(),
        deployment_configuration: config,
        placement_constraints: r.placement_constraints,
        placement_strategy: r.placement_strategy,
        network_configuration: r.network_configuration.clone(),
        tags: r.tags,
        propagate_tags: r.propagate_tags,
        enable_ecs_managed_tags: r.enable_ecs_managed_tags,
        created_at: ctx.now,
        created_by: format!("arn:aws:iam::{account}:root"),
        events: vec![],
        deployments: vec![new_deployment(
            id,
            &td.arn,
            desired,
            r.network_configuration,
            ctx.now,
        )],
        last_completed_task_definition: None,
        launch_failures: 0,
        next_launch_at: 0.0,
        capacity_provider_strategy,
    };
    placement(&svc)?;
    for d in svc.deployments.iter_mut() {
        d.capacity_provider_strategy = svc.capacity_provider_strategy.clone();
    }
    if svc.desired_count == 0 && !daemon {
        // Nothing to run: the first deployment is complete at once.
        if let Some(d) = svc.deployments.first_mut() {
            d.rollout_state = "COMPLETED".into();
            d.rollout_state_reason = format!("ECS deployment {} completed.", d.id);
        }
        svc.last_completed_task_definition = Some(td.arn.clone());
    }
    Ok((vec![Command::PutService(svc)], Outcome::Service(key)))
}

pub fn plan_update(
    m: &Model,
    r: UpdateService,
    ctx: &mut Ctx<'_>,
) -> Result<(Vec<Command>, Outcome), ApiError> {
    let cluster = crate::state::active_cluster(m, r.cluster.as_deref())?;
    let svc = find_service(m, &cluster.name, &r.service).ok_or_else(service_not_found)?;
    if svc.status != "ACTIVE" {
        return Err(ApiError::new(
            crate::error::ErrorKind::ServiceNotActiveException,
            "Service was not ACTIVE.",
        ));
    }
    let daemon = svc.scheduling_strategy == "DAEMON";
    let mut s = (**svc).clone();
    if let Some(n) = r.desired_count {
        if daemon {
            return Err(ApiError::invalid(
                "The daemon scheduling strategy does not support a desired count for services.",
            ));
        }
        s.desired_count = n;
    }
    if let Some(c) = &r.deployment_configuration {
        s.deployment_configuration = merge_config(s.deployment_configuration, c, daemon)?;
    }
    if let Some(pc) = r.placement_constraints {
        s.placement_constraints = pc;
    }
    if let Some(ps) = r.placement_strategy {
        if daemon && !ps.is_empty() {
            return Err(ApiError::invalid(
                "Placement strategies are not supported with DAEMON scheduling strategy.",
            ));
        }
        s.placement_strategy = ps;
    }
    placement(&s)?;
    let mut new_deployment_needed = r.force_new_deployment;
    if let Some(given) = &r.capacity_provider_strategy {
        let strategy = crate::capacity::service_update_strategy(cluster, given, daemon)?;
        if strategy != s.capacity_provider_strategy {
            s.capacity_provider_strategy = strategy;
            s.launch_type = String::new();
            new_deployment_needed = true;
        }
    }
    let td_arn = match &r.task_definition {
        Some(reference) => {
            let td = resolve_task_def(m, reference)?;
            check_network(
                &td,
                r.network_configuration
                    .as_ref()
                    .or(s.network_configuration.as_ref()),
            )?;
            if td.arn != s.task_definition {
                new_deployment_needed = true;
            }
            td.arn.clone()
        }
        None => s.task_definition.clone(),
    };
    if let Some(nc) = r.network_configuration {
        if s.network_configuration.as_ref() != Some(&nc) {
            new_deployment_needed = true;
        }
        s.network_configuration = Some(nc);
    }
    if new_deployment_needed {
        for d in s.deployments.iter_mut() {
            d.status = "ACTIVE".into();
            d.updated_at = ctx.now;
        }
        let id = deployment_id(ctx.rng);
        s.deployments.insert(
            0,
            new_deployment(
                id,
                &td_arn,
                s.desired_count,
                s.network_configuration.clone(),
                ctx.now,
            ),
        );
        if let Some(d) = s.deployments.first_mut() {
            d.capacity_provider_strategy = s.capacity_provider_strategy.clone();
        }
        s.task_definition = td_arn;
        s.launch_failures = 0;
        s.next_launch_at = 0.0;
    } else if let Some(p) = s.deployments.iter_mut().find(|d| d.status == "PRIMARY") {
        if p.desired_count != s.desired_count {
            p.desired_count = s.desired_count;
            p.updated_at = ctx.now;
            if p.rollout_state == "COMPLETED" {
                // A scale change is carried out like a deployment step but
                // keeps its completed state, as ECS shows it.
            }
        }
    }
    let key = s.key();
    let cmds = if s == **svc {
        vec![]
    } else {
        vec![Command::PutService(s)]
    };
    Ok((cmds, Outcome::Service(key)))
}

pub fn plan_delete(
    m: &Model,
    cluster: Option<&str>,
    service: &str,
    force: bool,
    ctx: &mut Ctx<'_>,
) -> Result<(Vec<Command>, Outcome), ApiError> {
    let cluster = crate::state::active_cluster(m, cluster)?;
    let svc = find_service(m, &cluster.name, service)
        .filter(|s| s.status != "INACTIVE")
        .ok_or_else(service_not_found)?;
    let key = svc.key();
    if svc.status == "DRAINING" {
        return Ok((vec![], Outcome::Service(key)));
    }
    if svc.scheduling_strategy == "REPLICA" && svc.desired_count > 0 && !force {
        return Err(ApiError::invalid(
            "The service cannot be stopped while it is scaled above 0.",
        ));
    }
    let mut s = (**svc).clone();
    s.status = "DRAINING".into();
    s.desired_count = 0;
    for d in s.deployments.iter_mut() {
        d.desired_count = 0;
        d.updated_at = ctx.now;
    }
    Ok((vec![Command::PutService(s)], Outcome::Service(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CircuitBreaker, DeploymentConfig};
    use rand::SeedableRng;

    #[test]
    fn deployment_arithmetic_table() {
        // (desired, min%, max%, min healthy, max active)
        let table: &[(u32, u32, u32, u32, u32)] = &[
            (6, 50, 200, 3, 12),
            (6, 100, 200, 6, 12),
            (1, 100, 100, 1, 1),
            (1, 50, 200, 1, 2),
            (1, 0, 100, 0, 1),
            (3, 50, 150, 2, 4),
            (3, 33, 133, 1, 3),
            (5, 90, 110, 5, 5),
            (4, 75, 125, 3, 5),
            (7, 10, 110, 1, 7),
            (10, 0, 101, 0, 10),
            (0, 100, 200, 0, 0),
            (2, 1, 199, 1, 3),
        ];
        for &(d, min, max, want_min, want_max) in table {
            assert_eq!(min_healthy(d, min), want_min, "min {d} {min}");
            assert_eq!(max_active(d, max), want_max, "max {d} {max}");
        }
    }

    #[test]
    fn breaker_threshold_table() {
        for (desired, want) in [
            (0, 3),
            (1, 3),
            (5, 3),
            (6, 3),
            (7, 4),
            (10, 5),
            (399, 200),
            (400, 200),
            (1000, 200),
        ] {
            assert_eq!(breaker_threshold(desired), want, "desired {desired}");
        }
    }

    #[test]
    fn throttle_delay_grows_and_caps() {
        let got: Vec<f64> = (0..=12).map(throttle_delay).collect();
        assert_eq!(&got[..6], &[0.0, 0.0, 0.0, 0.0, 10.0, 20.0]);
        assert!(got.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(throttle_delay(40), 900.0);
    }

    fn svc(desired: u32, min: u32, max: u32, cb: bool) -> Service {
        Service {
            name: "web".into(),
            arn: "arn:aws:ecs:r:0:service/c/web".into(),
            cluster: "c".into(),
            status: "ACTIVE".into(),
            desired_count: desired,
            launch_type: "EXTERNAL".into(),
            scheduling_strategy: "REPLICA".into(),
            task_definition: "td:2".into(),
            deployment_configuration: DeploymentConfig {
                minimum_healthy_percent: min,
                maximum_percent: max,
                circuit_breaker: CircuitBreaker {
                    enable: cb,
                    rollback: cb,
                },
            },
            placement_constraints: vec![],
            placement_strategy: vec![],
            network_configuration: None,
            tags: vec![],
            propagate_tags: "NONE".into(),
            enable_ecs_managed_tags: false,
            created_at: 1.0,
            created_by: "me".into(),
            events: vec![],
            deployments: vec![new_deployment(
                "ecs-svc/2".into(),
                "td:2",
                desired,
                None,
                1.0,
            )],
            last_completed_task_definition: Some("td:1".into()),
            launch_failures: 0,
            next_launch_at: 0.0,
            capacity_provider_strategy: vec![],
        }
    }

    /// A service mid-deployment from `ecs-svc/1` (td:1) to `ecs-svc/2` (td:2).
    fn deploying(desired: u32, min: u32, max: u32) -> Service {
        let mut s = svc(desired, min, max, false);
        let mut old = new_deployment("ecs-svc/1".into(), "td:1", desired, None, 0.5);
        old.status = "ACTIVE".into();
        old.rollout_state = "COMPLETED".into();
        s.deployments.push(old);
        s
    }

    /// `n` tasks of deployment `dep`; `kind`: 'h' healthy RUNNING, 'p'
    /// pending, 's' stopped (failed), 'u' unhealthy, 'd' healthy on DRAINING.
    fn tasks(dep: &'static str, spec: &str, az: &[&'static str]) -> Vec<TaskFacts<'static>> {
        spec.chars()
            .enumerate()
            .map(|(i, k)| TaskFacts {
                // Test facts borrow like the real ones; their ids live on.
                id: Box::leak(
                    format!("{}-{i}", dep.trim_start_matches("ecs-svc/")).into_boxed_str(),
                ),
                deployment: Some(dep),
                instance_id: ["i0", "i1", "i2"][i % 3],
                availability_zone: Some(az[i % az.len()]),
                created_at: i as f64,
                active: k != 's',
                wanted: k != 's',
                healthy: k == 'h' || k == 'd',
                unhealthy: k == 'u',
                on_draining: k == 'd',
                failed: k == 's',
                accounted: false,
                capacity_provider: None,
            })
            .collect()
    }

    fn step(s: &Service, ts: &[TaskFacts]) -> Decisions {
        service_step(s, ts, &[], 100.0, &mut StdRng::seed_from_u64(1))
    }

    #[test]
    fn replica_step_table() {
        let az = ["a", "b", "c"];
        // (name, service, tasks, expected starts, expected stop count)
        let cat = |a: Vec<TaskFacts<'static>>,
                   b: Vec<TaskFacts<'static>>|
         -> Vec<TaskFacts<'static>> { a.into_iter().chain(b).collect() };
        let table: Vec<(&str, Service, Vec<TaskFacts>, u32, usize)> = vec![
            (
                "fresh service starts all",
                svc(6, 100, 200, false),
                vec![],
                6,
                0,
            ),
            (
                "steady does nothing",
                svc(6, 100, 200, false),
                tasks("ecs-svc/2", "hhhhhh", &az),
                0,
                0,
            ),
            (
                "replace one stopped",
                svc(6, 100, 200, false),
                tasks("ecs-svc/2", "hhhhhs", &az),
                1,
                0,
            ),
            (
                "scale in by two",
                svc(4, 100, 200, false),
                tasks("ecs-svc/2", "hhhhhh", &az),
                0,
                2,
            ),
            (
                "scale in prefers pending",
                svc(2, 100, 200, false),
                tasks("ecs-svc/2", "hhp", &az),
                0,
                1,
            ),
            // Deployment 50/200 of 6: start 6 new, stop 3 old at once.
            (
                "deploy 50/200",
                deploying(6, 50, 200),
                tasks("ecs-svc/1", "hhhhhh", &az),
                6,
                3,
            ),
            // 100/200: start 6, stop none until new ones are healthy.
            (
                "deploy 100/200",
                deploying(6, 100, 200),
                tasks("ecs-svc/1", "hhhhhh", &az),
                6,
                0,
            ),
            // 50/100: no room to start; stop 3 first.
            (
                "deploy 50/100",
                deploying(6, 50, 100),
                tasks("ecs-svc/1", "hhhhhh", &az),
                0,
                3,
            ),
            // Documented stuck case: desired 1, 100/100.
            (
                "stuck 1 at 100/100",
                deploying(1, 100, 100),
                tasks("ecs-svc/1", "h", &az),
                0,
                0,
            ),
            (
                "1 at 0/100 stops first",
                deploying(1, 0, 100),
                tasks("ecs-svc/1", "h", &az),
                0,
                1,
            ),
            (
                "1 at 100/200 starts first",
                deploying(1, 100, 200),
                tasks("ecs-svc/1", "h", &az),
                1,
                0,
            ),
            // Mid-deployment: 3 new healthy, 3 old healthy, min 3 → stop 3 old.
            (
                "deploy progresses",
                deploying(6, 50, 200),
                cat(
                    tasks("ecs-svc/1", "hhh", &az),
                    tasks("ecs-svc/2", "hhhppp", &az),
                ),
                0,
                3,
            ),
            // Old pending tasks are stopped regardless of the minimum.
            (
                "old pending go",
                deploying(2, 100, 200),
                cat(tasks("ecs-svc/1", "pp", &az), tasks("ecs-svc/2", "hh", &az)),
                0,
                2,
            ),
            // Draining: replace within max (start 2), keep min (stop 0 of 2 healthy).
            (
                "draining replaced",
                svc(2, 100, 200, false),
                tasks("ecs-svc/2", "dd", &az),
                2,
                0,
            ),
            // Unhealthy tasks are stopped and replaced.
            (
                "unhealthy replaced",
                svc(2, 100, 200, false),
                tasks("ecs-svc/2", "hu", &az),
                1,
                1,
            ),
        ];
        for (name, s, ts, starts, stops) in table {
            let d = step(&s, &ts);
            assert_eq!(d.start, starts, "{name}: starts");
            assert_eq!(d.stop.len(), stops, "{name}: stops {:?}", d.stop);
            // Never above max active, never below min healthy by our own stops.
            let cfg = s.deployment_configuration;
            let active = ts.iter().filter(|t| t.active).count() as u32;
            assert!(
                active + d.start <= max_active(s.desired_count, cfg.maximum_percent).max(active),
                "{name}: max"
            );
            let healthy_left = ts
                .iter()
                .filter(|t| t.healthy && !d.stop.iter().any(|s| s == t.id))
                .count() as u32;
            let healthy_before = ts.iter().filter(|t| t.healthy).count() as u32;
            assert!(
                healthy_left
                    >= min_healthy(s.desired_count, cfg.minimum_healthy_percent)
                        .min(healthy_before)
                    || s.desired_count < healthy_before,
                "{name}: min"
            );
        }
    }

    /// Plays a whole rolling deployment through `service_step` with an
    /// instant agent (started tasks are healthy one round later, stopped ones
    /// STOPPED one round later) for every small configuration, checking
    /// ECS's limits at every round and that it completes unless the
    /// configuration leaves no room (floor(d*max) <= d and ceil(d*min) >= d).
    #[test]
    fn rolling_deployment_simulation_respects_limits_and_completes() {
        for desired in 1..=7u32 {
            for min in [0u32, 25, 50, 75, 100] {
                for max in [100u32, 125, 150, 200] {
                    let s0 = deploying(desired, min, max);
                    let old: String = "h".repeat(desired as usize);
                    let mut ts = tasks("ecs-svc/1", &old, &["a", "b"]);
                    let mut s = s0.clone();
                    let mut rng = StdRng::seed_from_u64(3);
                    let stuck =
                        max_active(desired, max) <= desired && min_healthy(desired, min) >= desired;
                    let mut done = false;
                    for round in 0..50 {
                        let d = service_step(&s, &ts, &[], 100.0 + round as f64, &mut rng);
                        s = d.service;
                        let active = ts.iter().filter(|t| t.active).count() as u32;
                        assert!(
                            active + d.start <= max_active(desired, max).max(desired),
                            "{desired} {min}/{max} round {round}: {active} + {}",
                            d.start
                        );
                        // Agent: stops land, starts become healthy next round.
                        for t in ts.iter_mut() {
                            if d.stop.iter().any(|s| s == t.id) {
                                t.wanted = false;
                                t.healthy = false;
                            } else if t.active && !t.wanted {
                                t.active = false;
                            } else if t.active && !t.healthy {
                                t.healthy = true;
                            }
                        }
                        let healthy = ts.iter().filter(|t| t.wanted && t.healthy).count() as u32;
                        assert!(
                            healthy >= min_healthy(desired, min),
                            "{desired} {min}/{max} round {round}: {healthy} healthy"
                        );
                        for k in 0..d.start {
                            ts.push(TaskFacts {
                                id: Box::leak(format!("n{round}-{k}").into_boxed_str()),
                                deployment: Some("ecs-svc/2"),
                                instance_id: "i0",
                                availability_zone: Some("a"),
                                created_at: 100.0 + round as f64,
                                active: true,
                                wanted: true,
                                healthy: false,
                                unhealthy: false,
                                on_draining: false,
                                failed: false,
                                accounted: false,
                                capacity_provider: None,
                            });
                        }
                        if s.deployments.len() == 1 && s.deployments[0].rollout_state == "COMPLETED"
                        {
                            done = true;
                            break;
                        }
                    }
                    assert_eq!(done, !stuck, "{desired} {min}/{max}");
                    if done {
                        let live: Vec<&TaskFacts> = ts.iter().filter(|t| t.active).collect();
                        assert_eq!(live.len() as u32, desired);
                        assert!(live.iter().all(|t| t.deployment == Some("ecs-svc/2")));
                    }
                }
            }
        }
    }

    #[test]
    fn settled_table() {
        let steady_event = |s: &mut Service| {
            s.events.insert(
                0,
                ServiceEvent {
                    id: "e".into(),
                    created_at: 1.0,
                    message: "(service web) has reached a steady state.".into(),
                },
            )
        };
        let mut done = svc(2, 100, 200, false);
        done.deployments[0].rollout_state = "COMPLETED".into();
        steady_event(&mut done);
        let mut throttled = done.clone();
        throttled.next_launch_at = 200.0;
        let mut deploying_now = deploying(2, 100, 200);
        steady_event(&mut deploying_now);
        let mut started = done.clone();
        started.events.insert(
            0,
            ServiceEvent {
                id: "f".into(),
                created_at: 2.0,
                message: "(service web) has started 1 tasks: (task x).".into(),
            },
        );
        let mut draining = done.clone();
        draining.status = "DRAINING".into();
        let mut daemon = done.clone();
        daemon.scheduling_strategy = "DAEMON".into();
        for (name, s, want) in [
            ("steady", done, true),
            ("daemon", daemon, false),
            ("throttled", throttled, false),
            ("two deployments", deploying_now, false),
            ("just started tasks", started, false),
            ("draining", draining, false),
        ] {
            assert_eq!(is_settled(&s, 100.0), want, "{name}");
        }
    }

    #[test]
    fn stopped_before_healthy_table() {
        use HealthStatus::{Healthy, Unhealthy, Unknown};
        // (checked, health, started_at, stopped_at, settle 10 s) -> failed
        let table = [
            (false, Unknown, None, Some(5.0), true),
            (false, Unknown, None, None, true),
            // Crashed 0.2 s after starting (found end to end: an image that
            // exits at once relaunched forever, never tripping the breaker).
            (false, Unknown, Some(1.0), Some(1.2), true),
            (false, Unknown, Some(1.0), Some(10.9), true),
            (false, Unknown, Some(1.0), Some(11.0), false),
            (false, Unknown, Some(1.0), Some(500.0), false),
            (false, Unknown, Some(1.0), None, false),
            (true, Unknown, Some(1.0), Some(500.0), true),
            (true, Unhealthy, Some(1.0), Some(500.0), true),
            (true, Healthy, Some(1.0), Some(1.5), false),
            (true, Healthy, None, None, false),
        ];
        for (checked, health, started, stopped, want) in table {
            assert_eq!(
                stopped_before_healthy(checked, health, started, stopped, 10.0),
                want,
                "{checked} {health:?} {started:?} {stopped:?}"
            );
        }
    }

    #[test]
    fn tasks_being_stopped_are_not_a_stuck_deployment() {
        // Mid-rollback at the limit (found end to end): 3 healthy old tasks, 3
        // new pending, 6 failed ones of the same deployment still stopping.
        // No room to start (12 of 12 active) and nothing more to stop, yet not
        // stuck: the stopping tasks will free the room.
        let s = deploying(6, 50, 200);
        let mut ts = tasks("ecs-svc/1", "hhh", &["a", "b", "c"]);
        ts.extend(tasks("ecs-svc/2", "ppp", &["a", "b", "c"]));
        let mut going = tasks("ecs-svc/2", "uuuuuu", &["a", "b", "c"]);
        for (i, t) in going.iter_mut().enumerate() {
            t.id = Box::leak(format!("going-{i}").into_boxed_str());
            t.wanted = false;
        }
        ts.extend(going);
        let d = step(&s, &ts);
        assert_eq!((d.start, d.stop.len()), (0, 0), "{d:?}");
        assert!(
            !d.service
                .events
                .iter()
                .any(|e| e.message.contains("unable to replace tasks")),
            "{:?}",
            d.service.events
        );
    }

    #[test]
    fn stuck_case_says_so_once() {
        let s = deploying(1, 100, 100);
        let ts = tasks("ecs-svc/1", "h", &["a"]);
        let d = step(&s, &ts);
        assert!(
            d.service.events[0]
                .message
                .contains("unable to replace tasks"),
            "{:?}",
            d.service.events
        );
        let again = step(&d.service, &ts);
        assert_eq!(again.service.events.len(), d.service.events.len());
    }

    #[test]
    fn scale_in_takes_from_the_fullest_zone_oldest_first() {
        let s = svc(3, 100, 200, false);
        // zones a a a b c (tasks 0..5): two must go, both from a, oldest first.
        let ts = tasks("ecs-svc/2", "hhhhh", &["a", "a", "a", "b", "c"]);
        let d = step(&s, &ts);
        assert_eq!(d.stop, vec!["2-0".to_string(), "2-1".to_string()]);
    }

    #[test]
    fn completion_steady_state_and_retirement() {
        let s = deploying(2, 50, 200);
        // Old deployment drained, new healthy: completes, old removed.
        let ts = cat_all(vec![
            tasks("ecs-svc/2", "hh", &["a"]),
            tasks("ecs-svc/1", "ss", &["a"]),
        ]);
        let d = step(&s, &ts);
        assert_eq!(d.service.deployments.len(), 1);
        let p = &d.service.deployments[0];
        assert_eq!(
            (p.status.as_str(), p.rollout_state.as_str()),
            ("PRIMARY", "COMPLETED")
        );
        assert_eq!(
            d.service.last_completed_task_definition.as_deref(),
            Some("td:2")
        );
        let msgs: Vec<&str> = d
            .service
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(
            msgs,
            vec![
                "(service web) has reached a steady state.",
                "(service web) (deployment ecs-svc/2) deployment completed.",
            ]
        );
        // Stopped tasks are accounted once: marked, they are not counted again.
        assert_eq!(d.service.deployments[0].failed_tasks, 0);
        assert_eq!(d.accounted, vec!["1-0".to_string(), "1-1".to_string()]);
        let ts = accounted(ts, &d.accounted);
        let again = step(&d.service, &ts);
        assert_eq!(again.service, d.service, "a steady service does not change");
    }

    fn accounted<'a>(mut ts: Vec<TaskFacts<'a>>, ids: &[String]) -> Vec<TaskFacts<'a>> {
        for t in ts.iter_mut() {
            if ids.iter().any(|i| i == t.id) {
                t.accounted = true;
            }
        }
        ts
    }

    fn cat_all<'a>(v: Vec<Vec<TaskFacts<'a>>>) -> Vec<TaskFacts<'a>> {
        v.into_iter().flatten().collect()
    }

    #[test]
    fn circuit_breaker_trips_at_threshold_and_rolls_back() {
        let s = deploying(6, 100, 200);
        let mut s = s;
        s.deployment_configuration.circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: true,
        };
        let old = tasks("ecs-svc/1", "hhhhhh", &["a"]);
        // Two failures: below the threshold of 3.
        let ts = cat_all(vec![old.clone(), tasks("ecs-svc/2", "ss", &["a"])]);
        let d = step(&s, &ts);
        assert_eq!(d.service.deployments[0].failed_tasks, 2);
        assert_eq!(d.service.deployments[0].rollout_state, "IN_PROGRESS");
        // A third: FAILED, and a rollback deployment of td:1 becomes PRIMARY.
        let first = d.accounted.clone();
        let ts = accounted(
            cat_all(vec![old.clone(), tasks("ecs-svc/2", "sss", &["a"])]),
            &first,
        );
        let d = step(&d.service, &ts);
        assert_eq!(
            d.accounted,
            vec!["2-2".to_string()],
            "only the new one counts"
        );
        let deps = &d.service.deployments;
        assert_eq!(deps[0].status, "PRIMARY");
        assert_eq!(deps[0].task_definition, "td:1");
        assert_eq!(d.service.task_definition, "td:1");
        // The failed deployment has no tasks left, so it is retired.
        assert!(deps.iter().all(|x| x.id != "ecs-svc/2"));
        assert_eq!(deps.len(), 2, "rollback PRIMARY and the old ACTIVE one");
        // The rollback is a deployment like any other: new tasks of td:1.
        assert_eq!(d.start, 6);
        assert!(d.service.events.iter().any(|e| e.message
            == "(service web) (deployment ecs-svc/2) deployment failed: tasks failed to start."));
        // ECS names the COMPLETED deployment it rolls back to, not the new one.
        assert_ne!(deps[0].id, "ecs-svc/1");
        assert_eq!(
            deps[0].rollout_state_reason,
            "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/1."
        );
        assert!(d
            .service
            .events
            .iter()
            .any(|e| e.message == "(service web) rolling back to deployment ecs-svc/1."));
        // Without rollback the failed deployment launches nothing more.
        let mut s2 = deploying(6, 100, 200);
        s2.deployment_configuration.circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: false,
        };
        let ts = cat_all(vec![
            tasks("ecs-svc/1", "hhh", &["a"]),
            tasks("ecs-svc/2", "sss", &["a"]),
        ]);
        let d = step(&s2, &ts);
        assert_eq!(d.service.deployments[0].rollout_state, "FAILED");
        assert_eq!(d.start, 0);
    }

    #[test]
    fn throttling_delays_launches_with_the_ecs_event() {
        let s = svc(1, 100, 200, false);
        let ts = tasks("ecs-svc/2", "ssss", &["a"]);
        let d = step(&s, &ts);
        assert_eq!(d.service.launch_failures, 4);
        assert_eq!(d.service.next_launch_at, 110.0);
        assert_eq!(d.start, 0, "throttled");
        assert!(d.service.events[0]
            .message
            .contains("is unable to consistently start tasks successfully"));
        // After the delay, it tries again.
        let ts = accounted(ts, &d.accounted);
        let later = service_step(&d.service, &ts, &[], 111.0, &mut StdRng::seed_from_u64(1));
        assert_eq!(later.start, 1);
    }

    #[test]
    fn daemon_one_per_active_instance() {
        let mut s = svc(0, 0, 100, false);
        s.scheduling_strategy = "DAEMON".into();
        let mut ts = tasks("ecs-svc/2", "hh", &["a"]);
        ts[0].instance_id = "i1";
        ts[1].instance_id = "i9"; // no longer ACTIVE
                                  // i3's agent is disconnected: counted, but nothing placed there yet.
        let targets = vec![
            ("i1".to_string(), true),
            ("i2".to_string(), true),
            ("i3".to_string(), false),
        ];
        let d = service_step(&s, &ts, &targets, 5.0, &mut StdRng::seed_from_u64(1));
        assert_eq!(d.start_on, vec!["i2".to_string()]);
        assert_eq!(d.stop, vec![ts[1].id]);
        assert_eq!(d.service.desired_count, 3);
    }

    #[test]
    fn draining_service_stops_everything_then_goes_inactive() {
        let mut s = svc(0, 100, 200, false);
        s.status = "DRAINING".into();
        let ts = tasks("ecs-svc/2", "hh", &["a"]);
        let d = step(&s, &ts);
        assert_eq!(d.stop.len(), 2);
        assert_eq!(d.service.status, "DRAINING");
        let gone = tasks("ecs-svc/2", "ss", &["a"]);
        let d = step(&d.service, &gone);
        assert_eq!(d.service.status, "INACTIVE");
        assert!(d.service.deployments.is_empty());
    }
}
