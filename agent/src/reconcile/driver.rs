//! The reconciler's driver: an event loop that owns the task records, runs the
//! pure [`diff`](super::diff) after every batch of events, and applies the
//! resulting actions through the [`Runtime`] as spawned jobs (so one slow pull
//! never blocks other tasks). Jobs and container waiters report back over an
//! mpsc channel; the driver is the only writer of the records and of
//! `state.json`.
//!
//! Inputs: new desired state and report acknowledgements (from the channel
//! client), job, container-exit and health events, a periodic timer, shutdown.
//!
//! Health checks: every running container with a `healthCheck` has one
//! checker task (started with the container, or on re-adoption after an
//! agent restart) that execs the check every interval and sends
//! [`JobEvent::Health`] when the status changes; the driver aborts checkers
//! whose container no longer runs. A start waiting on a `HEALTHY`
//! dependency watches the task's health map.
//! Output: batches of [`TaskReport`]s for the reporter.
//!
//! **Architecture Invariant:** no lock is held across `.await`; the records
//! live in the loop's own task and jobs only see snapshots.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_api::{AwsvpcNetwork, HealthStatus, StopCode, TaskReport, TaskSpec};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::health::{self, CheckResult, HealthConfig, HealthState};
use super::{
    absorb_spec, adopt, diff, report_due, task_report, Action, ContainerRecord, ContainerState,
    JobKind, ObservedTasks, StopDecision, TaskRecord, VANISHED_REASON,
};
use crate::backoff::Backoff;
use crate::config::PullBehavior;
use crate::logs::{self, RotationPolicy};
use crate::network::{RuncNetworks, TaskNetworks};
use crate::procspec::{self, Condition};
use crate::runtime::{ExecOutcome, ImageConfig, Runtime, RuntimeError};
use crate::state::{AgentState, StateError, StateStore};

/// How long after SIGKILL the agent waits for an exit before giving up on
/// this attempt (and retrying the stop on the next timer tick).
const KILL_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("agent state: {0}")]
    State(#[from] StateError),
}

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub data_dir: PathBuf,
    /// Where container stdout/stderr files go (`DATA_DIR/logs`).
    pub logs_dir: PathBuf,
    /// Period of the timer that retries failed jobs and prunes tombstones.
    pub tick: Duration,
    /// How long a finished task's tombstone is kept after it left desired
    /// state; its log directory is removed with it.
    pub tombstone_ttl: Duration,
    /// Size-based rotation of running containers' log files.
    pub log_rotation: RotationPolicy,
    pub pull_behavior: PullBehavior,
    /// Task namespaces and CNI chains (the runc-only modes by default).
    pub networks: Arc<dyn TaskNetworks>,
}

impl DriverConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            logs_dir: data_dir.join("logs"),
            data_dir,
            tick: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(3600),
            log_rotation: RotationPolicy::default(),
            pull_behavior: PullBehavior::Default,
            networks: Arc::new(RuncNetworks),
        }
    }
}

/// Events the driver consumes. The channel client sends `Desired` and `Acked`;
/// jobs and waiters send `Job`.
#[derive(Debug, Clone)]
pub enum Event {
    Desired {
        version: u64,
        tasks: Vec<TaskSpec>,
        deregistered: bool,
        /// The cluster's awsvpc membership, when the coordinator sent it.
        awsvpc_network: Option<AwsvpcNetwork>,
    },
    /// The coordinator acknowledged these reports.
    Acked(Vec<TaskReport>),
    Job(JobEvent),
}

/// Progress of a job, or a container's exit seen by its waiter.
#[derive(Debug, Clone)]
pub enum JobEvent {
    PullStarted {
        task_arn: String,
        at: f64,
    },
    PullStopped {
        task_arn: String,
        at: f64,
    },
    Created {
        task_arn: String,
        name: String,
        image_digest: String,
    },
    Started {
        task_arn: String,
        name: String,
        pid: u32,
    },
    Exited {
        task_arn: String,
        name: String,
        exit_code: Option<i32>,
        reason: Option<String>,
    },
    /// A container could not be pulled, created or started.
    ContainerFailed {
        task_arn: String,
        name: String,
        reason: String,
    },
    /// The task cannot start for a reason not tied to one container.
    TaskFailed {
        task_arn: String,
        reason: String,
    },
    StartDone {
        task_arn: String,
        all_started: bool,
    },
    StopDone {
        task_arn: String,
        exits: Vec<(String, Option<i32>)>,
        ok: bool,
    },
    DeleteDone {
        task_arn: String,
        ok: bool,
    },
    /// A container's health check changed its verdict.
    Health {
        task_arn: String,
        name: String,
        status: HealthStatus,
    },
}

/// Health of a task's containers, as a start waiting on `HEALTHY` sees it.
type HealthMap = BTreeMap<String, HealthStatus>;

/// Why the driver's loop returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Shutdown,
    /// The instance was deregistered and every task has been stopped and removed.
    Deregistered,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Driver<R: Runtime> {
    runtime: Arc<R>,
    cfg: DriverConfig,
    store: StateStore,
    state: AgentState,
    deregistered: bool,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    reports_tx: mpsc::UnboundedSender<Vec<TaskReport>>,
    cancels: HashMap<String, watch::Sender<bool>>,
    dirty: bool,
    /// The latest overlay membership, for the overlay task (latest wins).
    overlay_tx: watch::Sender<Option<AwsvpcNetwork>>,
    /// Running health checkers by (task ARN, container name).
    checkers: HashMap<(String, String), tokio::task::AbortHandle>,
    /// Per task: its containers' health, for starts waiting on `HEALTHY`.
    health_watches: HashMap<String, watch::Sender<HealthMap>>,
}

impl<R: Runtime> Driver<R> {
    /// Load the persisted state; returns the driver and the sender for its events.
    pub fn new(
        runtime: Arc<R>,
        cfg: DriverConfig,
        reports_tx: mpsc::UnboundedSender<Vec<TaskReport>>,
    ) -> Result<(Self, mpsc::UnboundedSender<Event>), DriverError> {
        let store = StateStore::new(&cfg.data_dir);
        let state = store.load()?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            runtime,
            cfg,
            store,
            state,
            deregistered: false,
            events_tx: events_tx.clone(),
            events_rx,
            reports_tx,
            cancels: HashMap::new(),
            dirty: false,
            overlay_tx: watch::channel(None).0,
            checkers: HashMap::new(),
            health_watches: HashMap::new(),
        };
        Ok((driver, events_tx))
    }

    /// Version of the desired state already held (for the first poll).
    pub fn known_version(&self) -> u64 {
        self.state.desired_version
    }

    /// Re-adopt what containerd runs, call `on_ready`, then reconcile until
    /// `shutdown` resolves (tasks keep running) or the instance is deregistered
    /// and empty.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
        on_ready: impl FnOnce() + Send,
    ) -> Result<Outcome, DriverError> {
        tokio::pin!(shutdown);
        let observed = {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                let listed = tokio::select! {
                    res = self.runtime.list() => res,
                    _ = &mut shutdown => return Ok(Outcome::Shutdown),
                };
                match listed {
                    Ok(list) => break list,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(error = %e, retry_in = ?delay, "cannot list containers");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = &mut shutdown => return Ok(Outcome::Shutdown),
                        }
                    }
                }
            }
        };
        let persisted = std::mem::take(&mut self.state.tasks);
        let (tasks, unmanaged) = adopt(persisted, &observed);
        for id in unmanaged {
            warn!(container = %id, "container without a task label in the agent's namespace; leaving it alone");
        }
        self.state.tasks = tasks;
        if let Some(desired) = self.state.desired.clone() {
            self.absorb_desired(&desired);
        }
        let mut readopted = Vec::new();
        for record in self.state.tasks.values() {
            for c in &record.containers {
                if c.state.is_running() {
                    info!(task = %record.task_arn, container = %c.name, "re-adopted running container");
                    spawn_waiter(
                        self.runtime.clone(),
                        self.events_tx.clone(),
                        record.task_arn.clone(),
                        c.name.clone(),
                        c.runtime_id.clone(),
                    );
                    readopted.push((record.task_arn.clone(), c.name.clone()));
                }
            }
        }
        for (arn, name) in readopted {
            self.ensure_checker(&arn, &name);
        }
        let live: HashSet<String> = self
            .state
            .tasks
            .values()
            .filter(|r| !r.deleted)
            .map(|r| r.task_arn.clone())
            .collect();
        let networks = self.cfg.networks.clone();
        match tokio::task::spawn_blocking(move || networks.gc(&live)).await {
            Ok(Ok(cleaned)) if !cleaned.is_empty() => {
                info!(tasks = ?cleaned, "removed networks of tasks that no longer exist");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "network garbage collection"),
            Err(e) => warn!(error = %e, "network garbage collection panicked"),
        }
        let overlay = tokio::spawn(overlay_loop(
            self.cfg.networks.clone(),
            self.overlay_tx.subscribe(),
            self.cfg.tick,
        ));
        self.dirty = true;
        self.persist();
        on_ready();
        let outcome = self.event_loop(shutdown).await;
        overlay.abort();
        for (_, checker) in self.checkers.drain() {
            checker.abort();
        }
        outcome
    }

    async fn event_loop(
        &mut self,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Outcome, DriverError> {
        let mut shutdown = shutdown;

        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.step();
            if self.deregistered && self.state.tasks.is_empty() {
                info!("instance deregistered and all tasks removed");
                return Ok(Outcome::Deregistered);
            }
            tokio::select! {
                _ = shutdown.as_mut() => {
                    self.dirty = true;
                    self.persist();
                    return Ok(Outcome::Shutdown);
                }
                Some(event) = self.events_rx.recv() => {
                    self.apply(event);
                    while let Ok(event) = self.events_rx.try_recv() {
                        self.apply(event);
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        match self.store.save(&self.state) {
            Ok(()) => self.dirty = false,
            Err(e) => error!(error = %e, "cannot persist agent state"),
        }
    }

    /// Diff, act, report, persist.
    fn step(&mut self) {
        if let Some(desired) = self.state.desired.clone() {
            for _ in 0..16 {
                let actions = diff(
                    &desired,
                    &ObservedTasks {
                        tasks: &self.state.tasks,
                        tombstones: &self.state.tombstones,
                        deregistered: self.deregistered,
                    },
                );
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    self.execute(action, &desired);
                }
            }
        }
        let mut batch = Vec::new();
        for record in self.state.tasks.values_mut() {
            let report = task_report(record);
            if report_due(record.last_sent.as_ref(), &report) {
                record.last_sent = Some(report.clone());
                batch.push(report);
            }
        }
        if !batch.is_empty() {
            debug!(reports = batch.len(), "queueing task reports");
            // The reporter is gone only while shutting down; the reports are
            // re-sent from the persisted acks after a restart.
            let _ = self.reports_tx.send(batch);
        }
        self.persist();
    }

    fn absorb_desired(&mut self, desired: &[TaskSpec]) {
        for spec in desired {
            if let Some(record) = self.state.tasks.get_mut(&spec.task_arn) {
                if record.stopped_at.is_none() && record.spec.as_ref() != Some(spec) {
                    absorb_spec(record, spec);
                }
            }
        }
    }

    fn apply(&mut self, event: Event) {
        self.dirty = true;
        match event {
            Event::Desired {
                version,
                tasks,
                deregistered,
                awsvpc_network,
            } => {
                if let Some(network) = awsvpc_network {
                    self.overlay_tx.send_replace(Some(network));
                }
                info!(
                    version,
                    tasks = tasks.len(),
                    deregistered,
                    "new desired state"
                );
                self.absorb_desired(&tasks);
                self.state.desired_version = version;
                self.state.desired = Some(tasks);
                if deregistered {
                    self.deregistered = true;
                    // Nothing is desired any more: every task stops.
                    self.state.desired = Some(Vec::new());
                }
            }
            Event::Acked(reports) => {
                for report in reports {
                    if let Some(record) = self.state.tasks.get_mut(&report.task_arn) {
                        record.acked = Some(report);
                    }
                }
            }
            Event::Job(job) => {
                let started = match &job {
                    JobEvent::Started { task_arn, name, .. } => {
                        Some((task_arn.clone(), name.clone()))
                    }
                    _ => None,
                };
                self.apply_job(job);
                if let Some((arn, name)) = started {
                    self.ensure_checker(&arn, &name);
                }
                self.reap_checkers();
            }
        }
    }

    /// Start the health checker of a running container that has a health
    /// check (once); its health is UNKNOWN until the checker's first verdict.
    fn ensure_checker(&mut self, arn: &str, name: &str) {
        let key = (arn.to_string(), name.to_string());
        if self.checkers.contains_key(&key) {
            return;
        }
        let Some(record) = self.state.tasks.get_mut(arn) else {
            return;
        };
        let Some(check) = record
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .and_then(|c| c.health_check.clone())
        else {
            return;
        };
        let Some(c) = record.container_mut(name) else {
            return;
        };
        if !c.state.is_running() {
            return;
        }
        let cfg = match HealthConfig::from_check(&check) {
            Ok(Some(cfg)) => cfg,
            Ok(None) => return,
            Err(e) => {
                warn!(task = %arn, container = %name, error = %e, "health check not run");
                return;
            }
        };
        c.health = Some(HealthStatus::Unknown);
        let id = c.runtime_id.clone();
        self.health_watches
            .entry(arn.to_string())
            .or_insert_with(|| watch::channel(HealthMap::new()).0)
            .send_modify(|m| {
                m.insert(name.to_string(), HealthStatus::Unknown);
            });
        debug!(task = %arn, container = %name, argv = ?cfg.argv, "starting health checker");
        let handle = tokio::spawn(health_checker(
            self.runtime.clone(),
            self.events_tx.clone(),
            arn.to_string(),
            name.to_string(),
            id,
            cfg,
        ));
        self.checkers.insert(key, handle.abort_handle());
        self.dirty = true;
    }

    /// Abort the checkers of containers that no longer run.
    fn reap_checkers(&mut self) {
        let tasks = &self.state.tasks;
        self.checkers.retain(|(arn, name), checker| {
            let running = tasks
                .get(arn)
                .and_then(|r| r.container(name))
                .is_some_and(|c| c.state.is_running());
            if !running {
                checker.abort();
            }
            running
        });
    }

    fn apply_job(&mut self, job: JobEvent) {
        let arn = match &job {
            JobEvent::PullStarted { task_arn, .. }
            | JobEvent::PullStopped { task_arn, .. }
            | JobEvent::Created { task_arn, .. }
            | JobEvent::Started { task_arn, .. }
            | JobEvent::Exited { task_arn, .. }
            | JobEvent::ContainerFailed { task_arn, .. }
            | JobEvent::TaskFailed { task_arn, .. }
            | JobEvent::StartDone { task_arn, .. }
            | JobEvent::StopDone { task_arn, .. }
            | JobEvent::DeleteDone { task_arn, .. }
            | JobEvent::Health { task_arn, .. } => task_arn.clone(),
        };
        let Some(record) = self.state.tasks.get_mut(&arn) else {
            debug!(task = %arn, ?job, "event for a forgotten task");
            return;
        };
        match job {
            JobEvent::PullStarted { at, .. } => {
                record.pull_started_at.get_or_insert(at);
            }
            JobEvent::PullStopped { at, .. } => record.pull_stopped_at = Some(at),
            JobEvent::Created {
                name, image_digest, ..
            } => {
                if let Some(c) = record.container_mut(&name) {
                    if c.state == ContainerState::Absent {
                        c.state = ContainerState::Created;
                    }
                    if !image_digest.is_empty() {
                        c.image_digest = Some(image_digest);
                    }
                }
            }
            JobEvent::Started { name, pid, .. } => {
                if let Some(c) = record.container_mut(&name) {
                    if !c.state.is_done() {
                        c.state = ContainerState::Running { pid };
                    }
                }
                info!(task = %arn, container = %name, pid, "container started");
                // The last container started: RUNNING now, in the same report
                // as the container (the job's StartDone follows at once).
                let all_up = record.containers.iter().all(|c| {
                    matches!(
                        c.state,
                        ContainerState::Running { .. } | ContainerState::Exited { .. }
                    )
                });
                if all_up && record.stop.is_none() && record.started_at.is_none() {
                    record.started_at = Some(now());
                    info!(task = %arn, "task running");
                }
            }
            JobEvent::Exited {
                name,
                exit_code,
                reason,
                ..
            } => mark_exited(record, &name, exit_code, reason),
            JobEvent::ContainerFailed { name, reason, .. } => {
                warn!(task = %arn, container = %name, %reason, "container failed to start");
                if let Some(c) = record.container_mut(&name) {
                    if !c.state.has_runtime_container() || c.state == ContainerState::Created {
                        c.state = ContainerState::Failed;
                    }
                    c.reason.get_or_insert_with(|| reason.clone());
                }
                record
                    .stop
                    .get_or_insert_with(|| StopDecision::new(StopCode::TaskFailedToStart, reason));
            }
            JobEvent::TaskFailed { reason, .. } => {
                warn!(task = %arn, %reason, "task failed to start");
                for c in record.containers.iter_mut() {
                    if c.state == ContainerState::Absent {
                        c.reason.get_or_insert_with(|| reason.clone());
                    }
                }
                record
                    .stop
                    .get_or_insert_with(|| StopDecision::new(StopCode::TaskFailedToStart, reason));
            }
            JobEvent::StartDone { all_started, .. } => {
                record.job = None;
                self.cancels.remove(&arn);
                if all_started {
                    if record.started_at.is_none() {
                        record.started_at = Some(now());
                        info!(task = %arn, "task running");
                    }
                } else if record.stop.is_none() && !record.cancel_requested {
                    // Nothing explains the incomplete start; retry on the timer.
                    record.backoff = true;
                }
                record.cancel_requested = false;
            }
            JobEvent::StopDone { exits, ok, .. } => {
                record.job = None;
                for (name, code) in exits {
                    match code {
                        Some(code) => mark_exited(record, &name, Some(code), None),
                        None => {
                            if record
                                .container(&name)
                                .is_some_and(|c| c.state.is_running())
                            {
                                mark_exited(record, &name, None, Some(VANISHED_REASON.into()));
                            }
                        }
                    }
                }
                if !ok {
                    record.backoff = true;
                }
            }
            JobEvent::DeleteDone { ok, .. } => {
                record.job = None;
                if ok {
                    record.deleted = true;
                    info!(task = %arn, "task containers deleted");
                } else {
                    record.backoff = true;
                }
            }
            JobEvent::Health { name, status, .. } => {
                // A verdict racing the container's exit is dropped.
                if let Some(c) = record.container_mut(&name) {
                    if c.state.is_running() && c.health != Some(status) {
                        info!(task = %arn, container = %name, health = status.as_str(), "container health");
                        c.health = Some(status);
                        if let Some(tx) = self.health_watches.get(&arn) {
                            tx.send_modify(|m| {
                                m.insert(name.clone(), status);
                            });
                        }
                    }
                }
            }
        }
    }

    fn on_tick(&mut self) {
        for record in self.state.tasks.values_mut() {
            if record.backoff {
                record.backoff = false;
                self.dirty = true;
            }
        }
        let ttl = self.cfg.tombstone_ttl.as_secs_f64();
        let cutoff = now() - ttl;
        let desired: HashSet<&str> = self
            .state
            .desired
            .iter()
            .flatten()
            .map(|t| t.task_arn.as_str())
            .collect();
        let pruned: Vec<String> = self
            .state
            .tombstones
            .iter()
            .filter(|(arn, at)| **at < cutoff && !desired.contains(arn.as_str()))
            .map(|(arn, _)| arn.clone())
            .collect();
        for arn in &pruned {
            self.state.tombstones.remove(arn);
            self.dirty = true;
        }
        // File work (copying logs) runs off the event loop.
        let running: Vec<String> = self
            .state
            .tasks
            .values()
            .filter(|r| r.any_running())
            .map(|r| procspec::log_dir_name(&r.task_arn))
            .collect();
        if running.is_empty() && pruned.is_empty() {
            return;
        }
        let logs_dir = self.cfg.logs_dir.clone();
        let policy = self.cfg.log_rotation;
        tokio::task::spawn_blocking(move || {
            for e in logs::rotate_tasks(&logs_dir, &running, policy) {
                warn!(error = %e, "log rotation failed");
            }
            for arn in pruned {
                if let Err(e) = logs::remove_task_logs(&logs_dir, &procspec::log_dir_name(&arn)) {
                    warn!(error = %e, "removing a finished task's logs failed");
                }
            }
        });
    }

    fn execute(&mut self, action: Action, desired: &[TaskSpec]) {
        let spec_of = |arn: &str| desired.iter().find(|t| t.task_arn == arn);
        match action {
            Action::Start { task_arn } => {
                let Some(spec) = spec_of(&task_arn).cloned() else {
                    return;
                };
                let record = self
                    .state
                    .tasks
                    .entry(task_arn.clone())
                    .or_insert_with(|| TaskRecord::from_spec(&spec));
                absorb_spec(record, &spec);
                record.job = Some(JobKind::Starting);
                record.cancel_requested = false;
                let (cancel_tx, cancel_rx) = watch::channel(false);
                self.cancels.insert(task_arn.clone(), cancel_tx);
                let known: HealthMap = record
                    .containers
                    .iter()
                    .filter_map(|c| Some((c.name.clone(), c.health?)))
                    .collect();
                let health_rx = self
                    .health_watches
                    .entry(task_arn.clone())
                    .or_insert_with(|| watch::channel(known).0)
                    .subscribe();
                info!(task = %task_arn, "starting task");
                tokio::spawn(start_job(
                    self.runtime.clone(),
                    spec,
                    record.containers.clone(),
                    self.cfg.clone(),
                    self.events_tx.clone(),
                    StartSignals {
                        cancel: cancel_rx,
                        health: health_rx,
                    },
                ));
            }
            Action::Reject { task_arn, stop } => {
                let Some(spec) = spec_of(&task_arn) else {
                    return;
                };
                info!(task = %task_arn, reason = %stop.reason, "task stopped without running");
                let mut record = TaskRecord::from_spec(spec);
                if stop.code == Some(StopCode::TaskFailedToStart) {
                    for c in record.containers.iter_mut() {
                        c.reason = Some(stop.reason.clone());
                    }
                }
                let at = now();
                record.stop = Some(stop);
                record.execution_stopped_at = Some(at);
                record.stopped_at = Some(at);
                record.deleted = true;
                self.state.tasks.insert(task_arn, record);
            }
            Action::CancelStart { task_arn, stop } => {
                if let Some(record) = self.state.tasks.get_mut(&task_arn) {
                    info!(task = %task_arn, reason = %stop.reason, "cancelling task start");
                    record.stop.get_or_insert(stop);
                    record.stopping_at.get_or_insert_with(now);
                    record.cancel_requested = true;
                }
                if let Some(cancel) = self.cancels.get(&task_arn) {
                    let _ = cancel.send(true);
                }
            }
            Action::Stop { task_arn, stop } => {
                let Some(record) = self.state.tasks.get_mut(&task_arn) else {
                    return;
                };
                info!(task = %task_arn, reason = %stop.reason, "stopping task");
                record.stop.get_or_insert(stop);
                record.stopping_at.get_or_insert_with(now);
                record.job = Some(JobKind::Stopping);
                let targets: Vec<StopTarget> = record
                    .containers
                    .iter()
                    .filter(|c| c.state.is_running())
                    .map(|c| StopTarget {
                        name: c.name.clone(),
                        id: c.runtime_id.clone(),
                        timeout: Duration::from_secs(record.stop_timeout_secs(&c.name)),
                    })
                    .collect();
                tokio::spawn(stop_job(
                    self.runtime.clone(),
                    task_arn,
                    targets,
                    self.events_tx.clone(),
                ));
            }
            Action::Finalize { task_arn, stop } => {
                if let Some(record) = self.state.tasks.get_mut(&task_arn) {
                    let at = now();
                    record.stop.get_or_insert(stop);
                    record.execution_stopped_at.get_or_insert(at);
                    record.stopped_at = Some(at);
                    info!(
                        task = %task_arn,
                        reason = record.stop.as_ref().map_or("", |s| s.reason.as_str()),
                        "task stopped"
                    );
                }
            }
            Action::Delete { task_arn } => {
                let Some(record) = self.state.tasks.get_mut(&task_arn) else {
                    return;
                };
                record.job = Some(JobKind::Deleting);
                let ids: Vec<String> = record
                    .containers
                    .iter()
                    .filter(|c| c.state != ContainerState::Absent)
                    .map(|c| c.runtime_id.clone())
                    .collect();
                tokio::spawn(delete_job(
                    self.runtime.clone(),
                    self.cfg.networks.clone(),
                    task_arn,
                    ids,
                    self.events_tx.clone(),
                ));
            }
            Action::Forget { task_arn } => {
                debug!(task = %task_arn, "forgetting finished task");
                self.state.tasks.remove(&task_arn);
                self.cancels.remove(&task_arn);
                self.health_watches.remove(&task_arn);
                self.state.tombstones.insert(task_arn, now());
            }
        }
        self.dirty = true;
    }
}

fn mark_exited(
    record: &mut TaskRecord,
    name: &str,
    exit_code: Option<i32>,
    reason: Option<String>,
) {
    let task_arn = record.task_arn.clone();
    if let Some(c) = record.container_mut(name) {
        if !c.state.is_done() {
            info!(task = %task_arn, container = %name, ?exit_code, "container exited");
            c.state = ContainerState::Exited { exit_code };
            if let Some(reason) = reason {
                c.reason.get_or_insert(reason);
            }
        }
    }
    if record.containers.iter().all(|c| !c.state.is_running()) && record.stopping_at.is_some() {
        record.execution_stopped_at.get_or_insert_with(now);
    }
}

/// Programs the awsvpc overlay from the latest membership; a failed sync is
/// retried after `retry` unless newer membership arrives first.
async fn overlay_loop(
    networks: Arc<dyn TaskNetworks>,
    mut rx: watch::Receiver<Option<AwsvpcNetwork>>,
    retry: Duration,
) {
    loop {
        let current = rx.borrow_and_update().clone();
        let mut failed = false;
        if let Some(network) = current {
            let networks = networks.clone();
            match tokio::task::spawn_blocking(move || networks.sync_overlay(&network)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed = true;
                    warn!(error = %e, "awsvpc overlay sync failed");
                }
                Err(e) => {
                    failed = true;
                    warn!(error = %e, "awsvpc overlay sync panicked");
                }
            }
        }
        if failed {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(retry) => {}
            }
        } else if rx.changed().await.is_err() {
            return;
        }
    }
}

fn send(tx: &mpsc::UnboundedSender<Event>, job: JobEvent) {
    // A closed channel means the driver has stopped; the result is re-derived
    // from containerd on the next start.
    let _ = tx.send(Event::Job(job));
}

/// Wait for a container's exit and report it; retries while containerd is
/// unreachable.
fn spawn_waiter<R: Runtime>(
    runtime: Arc<R>,
    tx: mpsc::UnboundedSender<Event>,
    task_arn: String,
    name: String,
    id: String,
) {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match runtime.wait(&id).await {
                Ok(code) => {
                    send(
                        &tx,
                        JobEvent::Exited {
                            task_arn,
                            name,
                            exit_code: Some(code),
                            reason: None,
                        },
                    );
                    return;
                }
                Err(RuntimeError::NotFound(_)) => {
                    send(
                        &tx,
                        JobEvent::Exited {
                            task_arn,
                            name,
                            exit_code: None,
                            reason: Some(VANISHED_REASON.into()),
                        },
                    );
                    return;
                }
                Err(e) => {
                    if tx.is_closed() {
                        return;
                    }
                    let delay = backoff.next_delay();
                    warn!(container = %id, error = %e, retry_in = ?delay, "waiting for container failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
}

/// Resolves when container `name` has a verdict (HEALTHY or UNHEALTHY);
/// `None` if the driver dropped the watch (it forgot the task).
async fn healthy_or_not(rx: &mut watch::Receiver<HealthMap>, name: &str) -> Option<HealthStatus> {
    let verdict = rx
        .wait_for(|m| {
            matches!(
                m.get(name),
                Some(HealthStatus::Healthy | HealthStatus::Unhealthy)
            )
        })
        .await
        .map(|m| m.get(name).copied());
    verdict.unwrap_or_default()
}

/// Run a container's health check every interval until aborted (the driver
/// aborts it when the container stops) or the container is gone; report
/// each change of verdict.
async fn health_checker<R: Runtime>(
    runtime: Arc<R>,
    tx: mpsc::UnboundedSender<Event>,
    task_arn: String,
    name: String,
    id: String,
    cfg: HealthConfig,
) {
    let started = tokio::time::Instant::now();
    let mut state = HealthState::default();
    loop {
        tokio::time::sleep(cfg.interval).await;
        if tx.is_closed() {
            return;
        }
        let result = match runtime.exec(&id, cfg.argv.clone(), cfg.timeout).await {
            Ok(ExecOutcome::Exited(0)) => CheckResult::Pass,
            Ok(ExecOutcome::Exited(code)) => {
                debug!(container = %id, code, "health check failed");
                CheckResult::Fail
            }
            Ok(ExecOutcome::TimedOut) => {
                debug!(container = %id, timeout = ?cfg.timeout, "health check timed out");
                CheckResult::Fail
            }
            Err(RuntimeError::NotFound(_)) => {
                debug!(container = %id, "container gone; health checker ends");
                return;
            }
            Err(RuntimeError::Start(e)) => {
                debug!(container = %id, error = %e, "health check could not start");
                CheckResult::Fail
            }
            Err(e) => {
                warn!(container = %id, error = %e, "health check could not be run");
                CheckResult::Skipped
            }
        };
        let next = health::next(state, result, started.elapsed(), &cfg);
        if next.status != state.status {
            send(
                &tx,
                JobEvent::Health {
                    task_arn: task_arn.clone(),
                    name: name.clone(),
                    status: next.status,
                },
            );
        }
        state = next;
    }
}

/// Resolves once the start has been cancelled (or the driver dropped the sender).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

fn is_cancelled(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}

/// What a start job listens to while it runs.
struct StartSignals {
    /// Set when the start must give up.
    cancel: watch::Receiver<bool>,
    /// The task's containers' health (for `HEALTHY` dependencies).
    health: watch::Receiver<HealthMap>,
}

async fn start_job<R: Runtime>(
    runtime: Arc<R>,
    spec: TaskSpec,
    containers: Vec<ContainerRecord>,
    cfg: DriverConfig,
    tx: mpsc::UnboundedSender<Event>,
    signals: StartSignals,
) {
    let StartSignals {
        mut cancel,
        mut health,
    } = signals;
    let all_started = run_start(
        &runtime,
        &spec,
        &containers,
        &cfg,
        &tx,
        &mut cancel,
        &mut health,
    )
    .await;
    send(
        &tx,
        JobEvent::StartDone {
            task_arn: spec.task_arn.clone(),
            all_started,
        },
    );
}

/// Pull (each image once), then create and start containers in dependency
/// order. Returns whether every container has been started.
async fn run_start<R: Runtime>(
    runtime: &Arc<R>,
    spec: &TaskSpec,
    containers: &[ContainerRecord],
    cfg: &DriverConfig,
    tx: &mpsc::UnboundedSender<Event>,
    cancel: &mut watch::Receiver<bool>,
    health: &mut watch::Receiver<HealthMap>,
) -> bool {
    let logs_dir = cfg.logs_dir.as_path();
    let task_arn = spec.task_arn.clone();
    let fail_task = |reason: String| {
        send(
            tx,
            JobEvent::TaskFailed {
                task_arn: task_arn.clone(),
                reason,
            },
        )
    };
    let fail = |name: &str, reason: String| {
        send(
            tx,
            JobEvent::ContainerFailed {
                task_arn: task_arn.clone(),
                name: name.to_string(),
                reason,
            },
        )
    };
    if spec.containers.is_empty() {
        fail_task("CannotStartContainerError: the task has no containers".to_string());
        return false;
    }
    let order = match procspec::start_order(&spec.containers) {
        Ok(order) => order,
        Err(e) => {
            fail_task(e.to_string());
            return false;
        }
    };
    let state_of = |name: &str| {
        containers
            .iter()
            .find(|c| c.name == name)
            .map_or(ContainerState::Absent, |c| c.state)
    };
    let id_of = |name: &str| {
        containers.iter().find(|c| c.name == name).map_or_else(
            || procspec::container_id(&task_arn, name),
            |c| c.runtime_id.clone(),
        )
    };

    // Pull every image a container still to be created needs, once each.
    let to_create: Vec<&berth_api::ContainerSpec> = order
        .iter()
        .map(|&i| &spec.containers[i])
        .filter(|c| state_of(&c.name) == ContainerState::Absent)
        .collect();
    let mut images: HashMap<String, ImageConfig> = HashMap::new();
    if !to_create.is_empty() {
        send(
            tx,
            JobEvent::PullStarted {
                task_arn: task_arn.clone(),
                at: now(),
            },
        );
        for def in &to_create {
            if images.contains_key(&def.image) {
                continue;
            }
            if is_cancelled(cancel) {
                return false;
            }
            debug!(task = %task_arn, image = %def.image, "pulling");
            let pulled = tokio::select! {
                res = async {
                    match cfg.pull_behavior {
                        PullBehavior::Default => runtime.pull(&def.image).await,
                        PullBehavior::PreferCached => runtime.pull_if_missing(&def.image).await,
                    }
                } => res,
                _ = cancelled(cancel) => return false,
            };
            match pulled {
                Ok(config) => {
                    images.insert(def.image.clone(), config);
                }
                Err(e) => {
                    let reason = e.to_string();
                    for other in to_create.iter().filter(|c| c.image == def.image) {
                        fail(&other.name, reason.clone());
                    }
                    send(
                        tx,
                        JobEvent::PullStopped {
                            task_arn: task_arn.clone(),
                            at: now(),
                        },
                    );
                    return false;
                }
            }
        }
        send(
            tx,
            JobEvent::PullStopped {
                task_arn: task_arn.clone(),
                at: now(),
            },
        );
    }

    // The task's namespace, once images are here (ECS sets up the network
    // after the pull too); idempotent for a start resumed after a restart.
    let network = {
        let networks = cfg.networks.clone();
        let spec = spec.clone();
        // Not raced against cancellation: a teardown must never overlap a
        // setup still in flight for the same task.
        match tokio::task::spawn_blocking(move || networks.setup(&spec)).await {
            Ok(Ok(ns)) => ns,
            Ok(Err(e)) => {
                fail_task(format!("CannotStartContainerError: task network: {e}"));
                return false;
            }
            Err(e) => {
                fail_task(format!(
                    "CannotStartContainerError: task network setup panicked: {e}"
                ));
                return false;
            }
        }
    };

    let mut exited: HashMap<String, Option<i32>> = containers
        .iter()
        .filter_map(|c| match c.state {
            ContainerState::Exited { exit_code } => Some((c.name.clone(), exit_code)),
            _ => None,
        })
        .collect();
    for &i in &order {
        let def = &spec.containers[i];
        let id = id_of(&def.name);
        match state_of(&def.name) {
            ContainerState::Running { .. } | ContainerState::Exited { .. } => continue,
            ContainerState::Failed => return false,
            ContainerState::Absent | ContainerState::Created => {}
        }
        for dep in &def.depends_on {
            let condition = match procspec::parse_condition(&def.name, &dep.condition) {
                Ok(c) => c,
                Err(e) => {
                    fail(&def.name, e.to_string());
                    return false;
                }
            };
            if condition == Condition::Start {
                continue; // the order already started it
            }
            if condition == Condition::Healthy {
                let dep_id = id_of(&dep.container_name);
                let checked = spec
                    .containers
                    .iter()
                    .find(|c| c.name == dep.container_name)
                    .and_then(|c| c.health_check.as_ref())
                    .map(HealthConfig::from_check);
                let failure = match checked {
                    None | Some(Ok(None)) => Some(format!(
                        "dependency {} has no health check to become HEALTHY",
                        dep.container_name
                    )),
                    Some(Err(e)) => Some(format!("dependency {}: {e}", dep.container_name)),
                    Some(Ok(Some(_))) if exited.contains_key(&dep.container_name) => Some(format!(
                        "dependency {} exited before becoming HEALTHY",
                        dep.container_name
                    )),
                    Some(Ok(Some(_))) => {
                        let verdict = tokio::select! {
                            status = healthy_or_not(health, &dep.container_name) => status,
                            res = runtime.wait(&dep_id) => {
                                let code = res.ok();
                                exited.insert(dep.container_name.clone(), code);
                                None
                            }
                            _ = cancelled(cancel) => return false,
                        };
                        match verdict {
                            Some(HealthStatus::Healthy) => None,
                            Some(status) => Some(format!(
                                "dependency {} is {}",
                                dep.container_name,
                                status.as_str()
                            )),
                            None => Some(format!(
                                "dependency {} exited before becoming HEALTHY",
                                dep.container_name
                            )),
                        }
                    }
                };
                if let Some(why) = failure {
                    fail(
                        &def.name,
                        format!(
                            "CannotStartContainerError: container {} cannot start: {why}",
                            def.name
                        ),
                    );
                    return false;
                }
                continue;
            }
            let code = match exited.get(&dep.container_name) {
                Some(code) => *code,
                None => {
                    let dep_id = id_of(&dep.container_name);
                    let waited = tokio::select! {
                        res = runtime.wait(&dep_id) => res,
                        _ = cancelled(cancel) => return false,
                    };
                    match waited {
                        Ok(code) => Some(code),
                        Err(RuntimeError::NotFound(_)) => None,
                        Err(e) => {
                            fail(
                                &def.name,
                                format!(
                                    "CannotStartContainerError: waiting for dependency {}: {e}",
                                    dep.container_name
                                ),
                            );
                            return false;
                        }
                    }
                }
            };
            exited.insert(dep.container_name.clone(), code);
            if condition == Condition::Success && code != Some(0) {
                fail(
                    &def.name,
                    format!(
                        "CannotStartContainerError: dependency {} of container {} did not succeed (exit code {})",
                        dep.container_name,
                        def.name,
                        code.map_or_else(|| "unknown".to_string(), |c| c.to_string())
                    ),
                );
                return false;
            }
        }
        if is_cancelled(cancel) {
            return false;
        }
        if state_of(&def.name) == ContainerState::Absent {
            let Some(image) = images.get(&def.image) else {
                fail(
                    &def.name,
                    format!(
                        "CannotCreateContainerError: image {} was not pulled",
                        def.image
                    ),
                );
                return false;
            };
            let req = match procspec::create_request(spec, def, image, logs_dir, network.clone()) {
                Ok(req) => req,
                Err(e) => {
                    fail(&def.name, e.to_string());
                    return false;
                }
            };
            if let Some(dir) = req.stdout_path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    fail(
                        &def.name,
                        format!(
                            "CannotCreateContainerError: log directory {}: {e}",
                            dir.display()
                        ),
                    );
                    return false;
                }
            }
            if let Err(e) = runtime.create(&req).await {
                fail(&def.name, e.to_string());
                return false;
            }
            send(
                tx,
                JobEvent::Created {
                    task_arn: task_arn.clone(),
                    name: def.name.clone(),
                    image_digest: image.digest.clone(),
                },
            );
        }
        if is_cancelled(cancel) {
            return false;
        }
        match runtime.start(&id).await {
            Ok(pid) => {
                send(
                    tx,
                    JobEvent::Started {
                        task_arn: task_arn.clone(),
                        name: def.name.clone(),
                        pid,
                    },
                );
                spawn_waiter(
                    runtime.clone(),
                    tx.clone(),
                    task_arn.clone(),
                    def.name.clone(),
                    id,
                );
            }
            Err(e) => {
                fail(&def.name, e.to_string());
                return false;
            }
        }
    }
    true
}

struct StopTarget {
    name: String,
    id: String,
    timeout: Duration,
}

async fn stop_job<R: Runtime>(
    runtime: Arc<R>,
    task_arn: String,
    targets: Vec<StopTarget>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let results = futures::future::join_all(targets.iter().map(|t| stop_one(&runtime, t))).await;
    let mut ok = true;
    let mut exits = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        match result {
            Ok(code) => exits.push((target.name.clone(), code)),
            Err(e) => {
                ok = false;
                warn!(task = %task_arn, container = %target.name, error = %e, "could not stop container");
            }
        }
    }
    send(
        &tx,
        JobEvent::StopDone {
            task_arn,
            exits,
            ok,
        },
    );
}

/// SIGTERM, wait up to the stop timeout, then SIGKILL. `Ok(None)`: the
/// container is gone and its exit code unknown.
async fn stop_one<R: Runtime>(
    runtime: &Arc<R>,
    target: &StopTarget,
) -> Result<Option<i32>, RuntimeError> {
    match runtime.kill(&target.id, libc::SIGTERM as u32).await {
        Ok(()) => {}
        Err(RuntimeError::NotFound(_)) => return Ok(None),
        Err(e) => warn!(container = %target.id, error = %e, "SIGTERM failed"),
    }
    match tokio::time::timeout(target.timeout, runtime.wait(&target.id)).await {
        Ok(Ok(code)) => return Ok(Some(code)),
        Ok(Err(RuntimeError::NotFound(_))) => return Ok(None),
        Ok(Err(e)) => warn!(container = %target.id, error = %e, "waiting after SIGTERM failed"),
        Err(_) => {
            info!(container = %target.id, timeout = ?target.timeout, "stop timeout elapsed; sending SIGKILL")
        }
    }
    match runtime.kill(&target.id, libc::SIGKILL as u32).await {
        Ok(()) => {}
        Err(RuntimeError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    match tokio::time::timeout(KILL_GRACE, runtime.wait(&target.id)).await {
        Ok(Ok(code)) => Ok(Some(code)),
        Ok(Err(RuntimeError::NotFound(_))) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RuntimeError::Containerd(format!(
            "container {} did not exit {KILL_GRACE:?} after SIGKILL",
            target.id
        ))),
    }
}

async fn delete_job<R: Runtime>(
    runtime: Arc<R>,
    networks: Arc<dyn TaskNetworks>,
    task_arn: String,
    ids: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
) {
    // Keep deleting after a failure: each container is independent.
    let mut ok = true;
    for id in &ids {
        if let Err(e) = runtime.delete(id).await {
            ok = false;
            warn!(task = %task_arn, container = %id, error = %e, "could not delete container");
        }
    }
    // The network goes only once no container can be using it.
    if ok {
        let arn = task_arn.clone();
        match tokio::task::spawn_blocking(move || networks.teardown(&arn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ok = false;
                warn!(task = %task_arn, error = %e, "could not remove the task network");
            }
            Err(e) => {
                ok = false;
                warn!(task = %task_arn, error = %e, "task network teardown panicked");
            }
        }
    }
    send(&tx, JobEvent::DeleteDone { task_arn, ok });
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
