//! The reconciler's model and its pure decisions: what the agent knows about
//! each task ([`TaskRecord`]), how desired state and observed state differ
//! ([`diff`] → [`Action`]s), what a task looks like to the coordinator
//! ([`task_report`]), and how observed state is rebuilt after a restart from
//! containerd's containers plus the persisted records ([`adopt`]).
//!
//! The [`driver`] applies the actions through the `Runtime` and feeds events
//! back; nothing in this file does I/O.
//!
//! **Architecture Invariant:** `diff` is idempotent: an action already under
//! way (a job recorded on the task) is never emitted again, so running the
//! diff after every event never duplicates a pull, a container or a stop.

pub mod driver;
pub mod health;

use std::collections::{BTreeMap, HashMap};

use berth_api::{
    ContainerReport, ContainerStatus, DesiredStatus, HealthStatus, StopCode, TaskReport, TaskSpec,
    TaskStatus,
};
use serde::{Deserialize, Serialize};

use crate::network::plan;
use crate::procspec;
use crate::runtime::{ObservedContainer, ObservedState, LABEL_CONTAINER_NAME, LABEL_TASK_ARN};

/// Reason ECS gives when an essential container's exit stops the task.
pub const ESSENTIAL_EXITED_REASON: &str = "Essential container in task exited";
/// Reason when the coordinator no longer lists a task the agent still runs.
pub const NOT_WANTED_REASON: &str =
    "Task is no longer assigned to this container instance by the coordinator";
/// Reason when the coordinator asks for STOPPED without giving one.
pub const DEFAULT_STOP_REASON: &str = "Task stopped by user";

/// State of one container as the agent knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ContainerState {
    /// Not created yet.
    Absent,
    /// Created in containerd, not started.
    Created,
    Running {
        pid: u32,
    },
    /// Exited; the code is unknown when the process vanished unobserved.
    Exited {
        exit_code: Option<i32>,
    },
    /// Could not be pulled, created or started; never ran.
    Failed,
}

impl ContainerState {
    pub fn is_running(self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
    /// Has the container finished (exited, or failed to ever run)?
    pub fn is_done(self) -> bool {
        matches!(self, ContainerState::Exited { .. } | ContainerState::Failed)
    }
    /// Does a containerd container exist (or may exist) for it?
    pub fn has_runtime_container(self) -> bool {
        matches!(
            self,
            ContainerState::Created
                | ContainerState::Running { .. }
                | ContainerState::Exited { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub name: String,
    /// containerd container id.
    pub runtime_id: String,
    pub essential: bool,
    pub state: ContainerState,
    #[serde(default)]
    pub image_digest: Option<String>,
    /// Why the container stopped or failed (ECS container `reason`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Health from its checker (containers with a health check only; the
    /// last result is kept after the container exits).
    #[serde(default)]
    pub health: Option<HealthStatus>,
}

/// Why a task is stopping; the first decision wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopDecision {
    pub code: Option<StopCode>,
    pub reason: String,
}

impl StopDecision {
    pub fn new(code: StopCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }
}

/// Work in flight for a task; while one is recorded the diff leaves the task alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Starting,
    Stopping,
    Deleting,
}

/// Everything the agent knows about one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub task_arn: String,
    /// The desired spec, when known (an adopted task the coordinator no longer
    /// lists has none).
    #[serde(default)]
    pub spec: Option<TaskSpec>,
    /// In definition order.
    pub containers: Vec<ContainerRecord>,
    #[serde(default)]
    pub stop: Option<StopDecision>,
    #[serde(default)]
    pub pull_started_at: Option<f64>,
    #[serde(default)]
    pub pull_stopped_at: Option<f64>,
    /// Set when every container has been started: the task is RUNNING.
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub stopping_at: Option<f64>,
    #[serde(default)]
    pub execution_stopped_at: Option<f64>,
    /// Set when the task is STOPPED (final).
    #[serde(default)]
    pub stopped_at: Option<f64>,
    /// The task's containers have been removed from containerd.
    #[serde(default)]
    pub deleted: bool,
    /// The last report the coordinator acknowledged for this task.
    #[serde(default)]
    pub acked: Option<TaskReport>,
    #[serde(skip)]
    pub job: Option<JobKind>,
    #[serde(skip)]
    pub cancel_requested: bool,
    /// The last job failed; wait for the periodic timer before retrying.
    #[serde(skip)]
    pub backoff: bool,
    /// The last report handed to the reporter (acked or not).
    #[serde(skip)]
    pub last_sent: Option<TaskReport>,
}

impl TaskRecord {
    /// A fresh record for a task about to start: every container absent.
    pub fn from_spec(spec: &TaskSpec) -> Self {
        let mut record = TaskRecord {
            task_arn: spec.task_arn.clone(),
            ..Default::default()
        };
        absorb_spec(&mut record, spec);
        record
    }

    pub fn container(&self, name: &str) -> Option<&ContainerRecord> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    pub fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.state.is_running())
    }

    pub fn status(&self) -> TaskStatus {
        if self.stopped_at.is_some() {
            TaskStatus::Stopped
        } else if self.started_at.is_some() {
            TaskStatus::Running
        } else {
            TaskStatus::Pending
        }
    }

    /// Stop timeout of a container (ECS default 30 s).
    pub fn stop_timeout_secs(&self, container: &str) -> u64 {
        self.spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container))
            .and_then(|c| c.stop_timeout)
            .map_or(30, u64::from)
    }
}

/// Bring a record up to date with the desired spec: remember the spec, and add
/// (as absent) containers the record does not know yet.
pub fn absorb_spec(record: &mut TaskRecord, spec: &TaskSpec) {
    for c in &spec.containers {
        match record.container_mut(&c.name) {
            Some(existing) => existing.essential = c.essential,
            None => record.containers.push(ContainerRecord {
                name: c.name.clone(),
                runtime_id: procspec::container_id(&spec.task_arn, &c.name),
                essential: c.essential,
                state: ContainerState::Absent,
                image_digest: None,
                reason: None,
                health: None,
            }),
        }
    }
    // Keep definition order; containers only containerd knew about go last.
    let order: HashMap<&str, usize> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    record
        .containers
        .sort_by_key(|c| order.get(c.name.as_str()).copied().unwrap_or(usize::MAX));
    record.spec = Some(spec.clone());
}

/// What the reconciler observes: its records and tombstones.
#[derive(Debug, Clone, Copy)]
pub struct ObservedTasks<'a> {
    pub tasks: &'a BTreeMap<String, TaskRecord>,
    pub tombstones: &'a BTreeMap<String, f64>,
    /// The instance was deregistered: every task stops, nothing new starts,
    /// and cleanup does not wait for acknowledgements.
    pub deregistered: bool,
}

/// One step toward desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull, create and start the task's containers (or resume a start that
    /// was interrupted: containers already created or running are kept).
    Start { task_arn: String },
    /// Record the task as STOPPED without running anything.
    Reject {
        task_arn: String,
        stop: StopDecision,
    },
    /// Ask the in-flight start to give up; the stop follows when it has.
    CancelStart {
        task_arn: String,
        stop: StopDecision,
    },
    /// SIGTERM the running containers, SIGKILL after their stop timeout.
    Stop {
        task_arn: String,
        stop: StopDecision,
    },
    /// Nothing runs any more: the task is STOPPED.
    Finalize {
        task_arn: String,
        stop: StopDecision,
    },
    /// The STOPPED task has been reported: remove its containers.
    Delete { task_arn: String },
    /// The coordinator no longer lists the finished task: drop the record.
    Forget { task_arn: String },
}

/// Why (if at all) a task that is not yet STOPPED must stop.
pub fn stop_wanted(desired: Option<&TaskSpec>, record: &TaskRecord) -> Option<StopDecision> {
    if let Some(stop) = &record.stop {
        return Some(stop.clone());
    }
    match desired {
        None => {
            return Some(StopDecision {
                code: record.spec.as_ref().and_then(|s| s.stop_code),
                reason: NOT_WANTED_REASON.to_string(),
            })
        }
        Some(spec) if spec.desired_status == DesiredStatus::Stopped => {
            return Some(StopDecision {
                code: Some(spec.stop_code.unwrap_or(StopCode::UserInitiated)),
                reason: spec
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| DEFAULT_STOP_REASON.to_string()),
            })
        }
        Some(_) => {}
    }
    let essential_done = record
        .containers
        .iter()
        .any(|c| c.essential && c.state.is_done());
    let all_done = record.started_at.is_some()
        && !record.containers.is_empty()
        && record.containers.iter().all(|c| c.state.is_done());
    if essential_done || all_done {
        return Some(StopDecision::new(
            StopCode::EssentialContainerExited,
            ESSENTIAL_EXITED_REASON,
        ));
    }
    None
}

/// The pure diff: the actions that move observed state toward desired state.
pub fn diff(desired: &[TaskSpec], observed: &ObservedTasks<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    let wanted: BTreeMap<&str, &TaskSpec> = if observed.deregistered {
        BTreeMap::new()
    } else {
        desired.iter().map(|t| (t.task_arn.as_str(), t)).collect()
    };
    for (arn, spec) in &wanted {
        if observed.tasks.contains_key(*arn) || observed.tombstones.contains_key(*arn) {
            continue;
        }
        let task_arn = arn.to_string();
        match spec.desired_status {
            DesiredStatus::Running => match plan::check_mode(&spec.network_mode) {
                Ok(()) => actions.push(Action::Start { task_arn }),
                Err(e) => actions.push(Action::Reject {
                    task_arn,
                    stop: StopDecision::new(
                        StopCode::TaskFailedToStart,
                        format!("CannotStartContainerError: {e}"),
                    ),
                }),
            },
            DesiredStatus::Stopped => actions.push(Action::Reject {
                task_arn,
                stop: StopDecision {
                    code: Some(spec.stop_code.unwrap_or(StopCode::UserInitiated)),
                    reason: spec
                        .stop_reason
                        .clone()
                        .unwrap_or_else(|| DEFAULT_STOP_REASON.to_string()),
                },
            }),
        }
    }
    for (arn, record) in observed.tasks {
        let task_arn = arn.clone();
        let desired = wanted.get(arn.as_str()).copied();
        if record.job.is_some() && record.job != Some(JobKind::Starting) {
            continue;
        }
        if record.stopped_at.is_some() {
            if record.job.is_some() || record.backoff {
                continue;
            }
            let reported =
                observed.deregistered || record.acked.as_ref() == Some(&task_report(record));
            if !reported {
                continue;
            }
            if !record.deleted {
                actions.push(Action::Delete { task_arn });
            } else if desired.is_none() {
                actions.push(Action::Forget { task_arn });
            }
            continue;
        }
        let stop = stop_wanted(desired, record);
        match (record.job, stop) {
            (Some(_), Some(stop)) => {
                if !record.cancel_requested {
                    actions.push(Action::CancelStart { task_arn, stop });
                }
            }
            (Some(_), None) => {}
            (None, _) if record.backoff => {}
            (None, Some(stop)) => {
                if record.any_running() {
                    actions.push(Action::Stop { task_arn, stop });
                } else {
                    actions.push(Action::Finalize { task_arn, stop });
                }
            }
            (None, None) => {
                if record.started_at.is_none() && record.spec.is_some() {
                    actions.push(Action::Start { task_arn });
                }
            }
        }
    }
    actions
}

fn container_status(task: TaskStatus, state: ContainerState) -> ContainerStatus {
    if task == TaskStatus::Stopped {
        return ContainerStatus::Stopped;
    }
    match state {
        ContainerState::Absent | ContainerState::Created => ContainerStatus::Pending,
        ContainerState::Running { .. } => ContainerStatus::Running,
        ContainerState::Exited { .. } | ContainerState::Failed => ContainerStatus::Stopped,
    }
}

/// The task as the coordinator should see it.
pub fn task_report(record: &TaskRecord) -> TaskReport {
    let status = record.status();
    let containers = record
        .containers
        .iter()
        .map(|c| {
            let ran = matches!(
                c.state,
                ContainerState::Running { .. } | ContainerState::Exited { .. }
            );
            ContainerReport {
                name: c.name.clone(),
                last_status: container_status(status, c.state),
                runtime_id: c
                    .state
                    .has_runtime_container()
                    .then(|| c.runtime_id.clone()),
                image_digest: c.image_digest.clone(),
                exit_code: match c.state {
                    ContainerState::Exited { exit_code } => exit_code,
                    _ => None,
                },
                reason: c.reason.clone(),
                network_bindings: if ran {
                    record
                        .spec
                        .as_ref()
                        .map(|s| plan::network_bindings(s, &c.name))
                        .unwrap_or_default()
                } else {
                    vec![]
                },
                health_status: c.health,
            }
        })
        .collect();
    TaskReport {
        task_arn: record.task_arn.clone(),
        last_status: status,
        stop_code: record.stop.as_ref().and_then(|s| s.code),
        stopped_reason: record.stop.as_ref().map(|s| s.reason.clone()),
        pull_started_at: record.pull_started_at,
        pull_stopped_at: record.pull_stopped_at,
        started_at: record.started_at,
        stopping_at: record.stopping_at,
        execution_stopped_at: record.execution_stopped_at,
        stopped_at: record.stopped_at,
        containers,
    }
}

/// Whether a task's `current` report must be sent, given the one last sent.
/// While a task is not STOPPED, only changes the coordinator acts on are sent
/// (task status, stop code and reason, container status, exit code, reason,
/// health);
/// timestamps, runtime ids and digests ride along with the next such change.
/// Once STOPPED, every difference is sent, so the acknowledged report
/// converges on the final one (cleanup waits for that).
pub fn report_due(last_sent: Option<&TaskReport>, current: &TaskReport) -> bool {
    let Some(last) = last_sent else {
        return true;
    };
    if last == current {
        return false;
    }
    if current.last_status == TaskStatus::Stopped {
        return true;
    }
    let key = |r: &TaskReport| {
        (
            r.last_status,
            r.stop_code,
            r.stopped_reason.clone(),
            r.containers
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        c.last_status,
                        c.exit_code,
                        c.reason.clone(),
                        c.health_status,
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    key(last) != key(current)
}

/// Reason recorded for a container whose process vanished while the agent was
/// not watching (containerd restarted, or someone deleted it).
pub const VANISHED_REASON: &str =
    "Container's process disappeared while the agent was not running; exit code unknown";

/// Rebuild the records after a restart: containerd says what exists and runs,
/// the persisted records say what was already observed and reported. Returns
/// the records and the ids of containers in the namespace that carry no task
/// label (left alone).
pub fn adopt(
    persisted: BTreeMap<String, TaskRecord>,
    observed: &[ObservedContainer],
) -> (BTreeMap<String, TaskRecord>, Vec<String>) {
    let mut records = persisted;
    let mut unmanaged = Vec::new();
    let mut by_task: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in observed {
        match c.labels.get(LABEL_TASK_ARN) {
            Some(arn) => by_task.entry(arn.as_str()).or_default().push(c),
            None => unmanaged.push(c.id.clone()),
        }
    }
    for record in records.values_mut() {
        record.job = None;
        record.cancel_requested = false;
        record.backoff = false;
        record.last_sent = record.acked.clone();
        let present = by_task.remove(record.task_arn.as_str()).unwrap_or_default();
        for c in record.containers.iter_mut() {
            // Checkers start afresh: UNKNOWN until their next result.
            if c.state.is_running() {
                c.health = None;
            }
            let found = present.iter().find(|o| {
                o.id == c.runtime_id
                    || o.labels.get(LABEL_CONTAINER_NAME).map(String::as_str) == Some(&c.name)
            });
            match found {
                Some(o) => {
                    c.runtime_id = o.id.clone();
                    c.state = match (o.state, c.state) {
                        (ObservedState::Running { pid }, _) => ContainerState::Running { pid },
                        (ObservedState::Exited { exit_code }, _) => ContainerState::Exited {
                            exit_code: Some(exit_code),
                        },
                        // Already seen exiting: keep the code we recorded.
                        (ObservedState::Created, s @ ContainerState::Exited { .. }) => s,
                        (ObservedState::Created, ContainerState::Running { .. }) => {
                            c.reason.get_or_insert_with(|| VANISHED_REASON.to_string());
                            ContainerState::Exited { exit_code: None }
                        }
                        (ObservedState::Created, _) => ContainerState::Created,
                    };
                    if record.deleted {
                        // It exists after all (a delete was interrupted): delete again.
                        record.deleted = false;
                    }
                }
                None => {
                    if matches!(
                        c.state,
                        ContainerState::Running { .. } | ContainerState::Created
                    ) && !record.deleted
                    {
                        if c.state.is_running() {
                            c.reason.get_or_insert_with(|| VANISHED_REASON.to_string());
                            c.state = ContainerState::Exited { exit_code: None };
                        } else {
                            c.state = ContainerState::Absent;
                        }
                    }
                }
            }
        }
        // Containers of this task that the record does not know (e.g. created
        // just before a crash that lost the last state write).
        for o in present {
            let name = o
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_else(|| o.id.clone());
            if record.container(&name).is_none() {
                record.containers.push(observed_record(&name, o));
                record.deleted = false;
            }
        }
    }
    for (arn, containers) in by_task {
        let mut record = TaskRecord {
            task_arn: arn.to_string(),
            ..Default::default()
        };
        for o in containers {
            let name = o
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_else(|| o.id.clone());
            record.containers.push(observed_record(&name, o));
        }
        records.insert(arn.to_string(), record);
    }
    (records, unmanaged)
}

fn observed_record(name: &str, o: &ObservedContainer) -> ContainerRecord {
    ContainerRecord {
        name: name.to_string(),
        runtime_id: o.id.clone(),
        // Unknown without the spec; assume essential, as ECS's default is.
        essential: true,
        state: match o.state {
            ObservedState::Created => ContainerState::Created,
            ObservedState::Running { pid } => ContainerState::Running { pid },
            ObservedState::Exited { exit_code } => ContainerState::Exited {
                exit_code: Some(exit_code),
            },
        },
        image_digest: None,
        reason: None,
        health: None,
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests;
