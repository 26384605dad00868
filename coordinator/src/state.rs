//! The single owner of desired state.
//!
//! API handlers and the agent channel send a [`Request`] over a channel to one
//! owner thread. For each request the owner runs the PURE [`plan`] step against
//! the current model: it validates against state and decides everything (ids,
//! timestamps, placements, secrets) into [`Command`]s. The owner then appends
//! the batch's commands to the store durably, applies them with the
//! infallible `Model::apply`, publishes a new immutable snapshot, and only then
//! replies. Requests that arrive together are planned in order against the
//! evolving model and committed in one transaction (group commit).
//!
//! **Architecture Invariant:** only the owner thread writes the model or the
//! store, and planning is serialised there, so concurrent RunTasks can never
//! overcommit an instance. Readers use snapshots and never wait on writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_api::{
    ContainerSpec, ContainerStatus, DesiredStatus, NetworkBinding, PortMapping, RegisterRequest,
    StateReport, StopCode, TaskStatus,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ApiError, ErrorKind};
use crate::model::{
    Activation, Cluster, Command, Failure, Instance, Model, Tag, TagTarget, Task, TaskContainer,
    TaskDef, TokenResult,
};
use crate::network;
use crate::scheduler::{self, Need};
use crate::store::{CommandLog, Store, StoreError};
use crate::taskdef::{self, TaskDefRef};

/// How many commands between snapshots of the model.
const SNAPSHOT_EVERY: u64 = 1000;
/// Most requests planned into one commit.
const MAX_BATCH: usize = 256;

/// Service tasks one commit starts at most (see `Owner::process`).
const SERVICE_LAUNCHES_PER_COMMIT: u32 = crate::service::LAUNCHES_PER_STEP;

/// Services a commit steps for the tick. A step reads all of a service's
/// tasks (some milliseconds for thousands); one per commit bounds what a
/// tick adds to any request's latency.
const TICK_STEPS_PER_COMMIT: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot decode stored record {seq}: {source}")]
    Decode { seq: u64, source: serde_json::Error },
    #[error("state owner thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Fixed facts the planner needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account_id: String,
    /// Region for things created without a signed request (the `default`
    /// cluster an agent registers into).
    pub default_region: String,
    /// The network awsvpc tasks get their addresses from. Not stored itself:
    /// allocations live in the tasks, so a restart with another CIDR keeps
    /// the existing tasks' addresses and allocates new ones from the new CIDR.
    pub awsvpc_cidr: crate::network::Cidr,
    /// Seconds a task without a container health check must have been
    /// RUNNING before a service counts it healthy (ECS waits 40 s).
    pub service_settle_secs: f64,
}

/// Last-poll times of agents. Heartbeats are not desired state: they are kept
/// in memory only and never written to the store.
#[derive(Debug)]
pub struct Heartbeats {
    seen: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
    source: u64,
}

impl Heartbeats {
    pub fn new(timeout: Duration) -> Heartbeats {
        Heartbeats {
            seen: Mutex::new(HashMap::new()),
            timeout,
            source: new_source(),
        }
    }
    pub fn beat(&self, instance: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(instance.to_string(), Instant::now());
        }
    }
    pub fn is_connected(&self, instance: &str) -> bool {
        self.alive_until(instance)
            .is_some_and(|until| Instant::now() < until)
    }
}

impl Liveness for Heartbeats {
    /// The agent's last poll plus the timeout.
    fn alive_until(&self, instance: &str) -> Option<Instant> {
        let m = self.seen.lock().ok()?;
        m.get(instance).map(|t| *t + self.timeout)
    }
    fn source(&self) -> u64 {
        self.source
    }
}

/// A request to change state, already parsed and validated in isolation.
#[derive(Debug, Clone)]
pub enum Request {
    CreateCluster {
        name: String,
        region: String,
        tags: Vec<Tag>,
        settings: Vec<Value>,
    },
    DeleteCluster {
        cluster: String,
    },
    RegisterTaskDef {
        family: String,
        definition: serde_json::Map<String, Value>,
        tags: Vec<Tag>,
        region: String,
    },
    DeregisterTaskDef {
        reference: String,
    },
    RunTask(RunTask),
    StopTask {
        cluster: Option<String>,
        task: String,
        reason: Option<String>,
    },
    DeregisterInstance {
        cluster: Option<String>,
        instance: String,
        force: bool,
    },
    SetInstanceStatus {
        cluster: Option<String>,
        instances: Vec<String>,
        status: String,
    },
    DeleteTaskDefs {
        references: Vec<String>,
    },
    /// PutAttributes (`delete: false`) or DeleteAttributes on container instances:
    /// `(target id or ARN, name, value)`.
    Attributes {
        cluster: Option<String>,
        attributes: Vec<(String, String, Option<String>)>,
        delete: bool,
    },
    TagResource {
        arn: String,
        tags: Vec<Tag>,
    },
    UntagResource {
        arn: String,
        keys: Vec<String>,
    },
    CreateActivation {
        iam_role: String,
        description: Option<String>,
        default_instance_name: Option<String>,
        registration_limit: u32,
        expiration: Option<f64>,
        tags: Vec<Tag>,
    },
    DeleteActivation {
        id: String,
    },
    /// Housekeeping: forget tasks STOPPED for longer than `retention_secs`.
    Prune {
        retention_secs: f64,
    },
    RegisterInstance(RegisterRequest),
    Report {
        instance: String,
        report: StateReport,
    },
    CreateService(Box<crate::service::CreateService>),
    UpdateService(Box<crate::service::UpdateService>),
    DeleteService {
        cluster: Option<String>,
        service: String,
        force: bool,
    },
    /// Capacity providers and cluster associations (`capacity::plan`).
    Capacity(Box<crate::capacity::CapacityRequest>),
    /// Scheduled rules (the EventBridge API) and their firing.
    Rules(Box<crate::rules::RuleRequest>),
}

/// RunTask or (with `instances`) StartTask.
#[derive(Debug, Clone, Default)]
pub struct RunTask {
    pub cluster: Option<String>,
    pub task_definition: String,
    pub count: u32,
    pub overrides: Option<Value>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub client_token: Option<String>,
    pub launch_type: Option<String>,
    pub tags: Vec<Tag>,
    /// StartTask: the explicit container instances (one task on each).
    pub instances: Option<Vec<String>>,
    /// `memberOf` placement constraints (the request's; the task
    /// definition's are added at planning).
    pub member_of: Vec<crate::cql::Expr>,
    pub distinct_instance: bool,
    pub strategies: Vec<scheduler::Strategy>,
    /// `propagateTags: TASK_DEFINITION`: copy the definition's tags (the
    /// request's own tags win on a key clash).
    pub propagate_taskdef_tags: bool,
    /// `networkConfiguration.awsvpcConfiguration`, validated.
    pub network_configuration: Option<crate::network::AwsvpcConfiguration>,
    /// Placed by the service scheduler: the definition may be INACTIVE
    /// (ECS keeps running deregistered revisions in services).
    pub for_service: bool,
    /// Capacity-provider placement (`capacity::plan_run`): the strategy as
    /// given, the provider a share is placed through, a service's tasks per
    /// provider. Boxed: most runs have none.
    pub capacity: Option<Box<crate::capacity::RunCapacity>>,
}

/// What a planned request produced, for the handler to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Cluster(String),
    TaskDef {
        family: String,
        revision: u32,
    },
    Tasks {
        ids: Vec<String>,
        failures: Vec<Failure>,
    },
    Task(String),
    Instance(String),
    /// Instances (ids) and per-reference failures.
    Instances {
        ids: Vec<String>,
        failures: Vec<Failure>,
    },
    /// Task definitions (family, revision) and per-reference failures.
    TaskDefs {
        found: Vec<(String, u32)>,
        failures: Vec<Failure>,
    },
    Registered {
        instance_id: String,
        secret: String,
    },
    Activation {
        id: String,
        code: String,
    },
    Acked(u64),
    /// A service by key (`cluster/name`).
    Service(String),
    /// A capacity provider by name.
    CapacityProvider(String),
    Done,
}

/// Decisions a plan may draw on: the clock, randomness, agent liveness.
pub struct Ctx<'a> {
    pub now: f64,
    pub rng: &'a mut StdRng,
    pub liveness: &'a dyn Liveness,
    pub settings: &'a Settings,
}

impl Ctx<'_> {
    /// Whether the instance's agent is connected now.
    pub fn connected(&self, id: &str) -> bool {
        self.liveness
            .alive_until(id)
            .is_some_and(|until| Instant::now() < until)
    }
}

/// Agent liveness as planning sees it.
pub trait Liveness {
    /// Until when the instance's agent counts as connected on the polls
    /// seen so far (`None`: it never polled). For one [`source`] this only
    /// ever moves later, so an answer holds until the instant it names.
    ///
    /// [`source`]: Liveness::source
    fn alive_until(&self, instance: &str) -> Option<Instant>;
    /// Tells sources apart: a cache of answers is valid for one source only.
    fn source(&self) -> u64;
}

static LIVENESS_SOURCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn new_source() -> u64 {
    LIVENESS_SOURCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Liveness that answers the same for every instance (tests, tools).
pub struct Always {
    until: Option<Instant>,
    source: u64,
}

pub fn always(connected: bool) -> Always {
    Always {
        until: connected.then(|| Instant::now() + Duration::from_secs(365 * 24 * 3600)),
        source: new_source(),
    }
}

impl Liveness for Always {
    fn alive_until(&self, _: &str) -> Option<Instant> {
        self.until
    }
    fn source(&self) -> u64 {
        self.source
    }
}

pub fn now_secs() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Millisecond precision, as ECS returns.
    (d.as_millis() as f64) / 1000.0
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_hex(rng: &mut StdRng, bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
    hex::encode(buf)
}

/// A task id: 32 hex digits like ECS's, time-ordered as UUIDv7 is (48 bits
/// of milliseconds, then 80 random bits). New tasks therefore sort after
/// older ones, so a commit's inserts into the persistent task maps copy the
/// few tree nodes at their right edge instead of one node per task.
fn task_id(now: f64, rng: &mut StdRng) -> String {
    let millis = (now * 1000.0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    rng.fill(&mut bytes[6..]);
    hex::encode(bytes)
}

fn random_uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

// ---------------------------------------------------------------------------
// Lookups shared by planning and the read-only handlers.

/// Last path segment of an ARN-ish reference, or the reference itself.
fn arn_tail(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

/// Cluster name from a name or a cluster ARN.
pub fn cluster_name(reference: &str) -> &str {
    if let Some(rest) = reference.strip_prefix("arn:") {
        match rest.split_once(":cluster/") {
            Some((_, name)) => name,
            None => reference,
        }
    } else {
        reference
    }
}

/// Any cluster (ACTIVE or INACTIVE) by name or ARN; `default` when none given.
pub fn find_cluster<'a>(m: &'a Model, reference: Option<&str>) -> Option<&'a Arc<Cluster>> {
    m.clusters.get(cluster_name(reference.unwrap_or("default")))
}

/// An ACTIVE cluster, or `ClusterNotFoundException`.
pub fn active_cluster<'a>(
    m: &'a Model,
    reference: Option<&str>,
) -> Result<&'a Arc<Cluster>, ApiError> {
    match find_cluster(m, reference) {
        Some(c) if c.status == "ACTIVE" => Ok(c),
        Some(_) => Err(ApiError::new(
            ErrorKind::ClusterNotFoundException,
            "The referenced cluster was inactive.",
        )),
        None => Err(ApiError::cluster_not_found()),
    }
}

/// A task of `cluster` by ARN or id.
pub fn find_task<'a>(m: &'a Model, cluster: &str, reference: &str) -> Option<&'a Arc<Task>> {
    m.tasks
        .get(arn_tail(reference))
        .filter(|t| t.cluster == cluster)
}

/// A container instance of `cluster` by ARN or id.
pub fn find_instance<'a>(
    m: &'a Model,
    cluster: &str,
    reference: &str,
) -> Option<&'a Arc<Instance>> {
    m.instances
        .get(arn_tail(reference))
        .filter(|i| i.cluster == cluster)
}

/// Resolves a task-definition reference: a family means its latest ACTIVE revision.
pub fn find_task_def<'a>(m: &'a Model, reference: &TaskDefRef) -> Option<&'a Arc<TaskDef>> {
    match reference {
        TaskDefRef::Family(f) => m
            .families
            .get(f)?
            .revisions
            .values()
            .rev()
            .find(|td| td.status == "ACTIVE"),
        TaskDefRef::Revision { family, revision } => m.task_def(family, *revision),
    }
}

/// Resources an instance has committed to its active tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
    pub running: u32,
    pub pending: u32,
}

pub fn usage(m: &Model, inst: &Instance) -> Usage {
    let mut u = Usage {
        tcp: inst.resource_ports("PORTS"),
        udp: inst.resource_ports("PORTS_UDP"),
        ..Usage::default()
    };
    // The model keeps each instance's active load summed (`ActiveOn`), so
    // this costs the instance's distinct ports, not its tasks.
    if let Some(a) = m.active_on(&inst.id) {
        u.cpu = a.cpu;
        u.memory = a.memory;
        u.running = a.running;
        u.pending = a.pending;
        for (udp, port) in a.ports.keys() {
            if *udp {
                u.udp.insert(*port);
            } else {
                u.tcp.insert(*port);
            }
        }
    }
    u
}

// ---------------------------------------------------------------------------
// Planning (pure: depends only on the model, the request and the context).

type Planned = (Vec<Command>, Outcome);

/// Decides what `req` does to `m`. Pure apart from what `ctx` supplies.
pub fn plan(m: &Model, req: Request, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    match req {
        Request::CreateCluster {
            name,
            region,
            tags,
            settings,
        } => {
            if let Some(c) = m.clusters.get(&name) {
                if c.status == "ACTIVE" {
                    // Idempotent on name; ECS does not change an existing cluster.
                    return Ok((vec![], Outcome::Cluster(name)));
                }
            }
            let arn = format!(
                "arn:aws:ecs:{region}:{}:cluster/{name}",
                ctx.settings.account_id
            );
            let cluster = Cluster {
                name: name.clone(),
                arn,
                region,
                status: "ACTIVE".into(),
                tags,
                settings,
                created_at: ctx.now,
                capacity_providers: vec![],
                default_capacity_provider_strategy: vec![],
            };
            Ok((vec![Command::PutCluster(cluster)], Outcome::Cluster(name)))
        }
        Request::DeleteCluster { cluster } => {
            let c = find_cluster(m, Some(&cluster)).ok_or_else(ApiError::cluster_not_found)?;
            if c.status != "ACTIVE" {
                return Ok((vec![], Outcome::Cluster(c.name.clone())));
            }
            if m.services
                .values()
                .any(|s| s.cluster == c.name && s.status != "INACTIVE")
            {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsServicesException,
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            if m.instances
                .values()
                .any(|i| i.cluster == c.name && i.status != "INACTIVE")
            {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsContainerInstancesException,
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            if m.tasks
                .values()
                .any(|t| t.cluster == c.name && t.is_active())
            {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsTasksException,
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            Ok((
                vec![Command::DeleteCluster {
                    name: c.name.clone(),
                }],
                Outcome::Cluster(c.name.clone()),
            ))
        }
        Request::RegisterTaskDef {
            family,
            definition,
            tags,
            region,
        } => {
            let revision = m
                .families
                .get(&family)
                .map(|f| f.last_revision)
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| ApiError::client("Too many revisions."))?;
            let account = &ctx.settings.account_id;
            let td = TaskDef {
                family: family.clone(),
                revision,
                arn: format!("arn:aws:ecs:{region}:{account}:task-definition/{family}:{revision}"),
                definition,
                status: "ACTIVE".into(),
                registered_at: ctx.now,
                deregistered_at: None,
                registered_by: format!("arn:aws:iam::{account}:root"),
                tags,
            };
            Ok((
                vec![Command::RegisterTaskDef(td)],
                Outcome::TaskDef { family, revision },
            ))
        }
        Request::DeregisterTaskDef { reference } => {
            let r = taskdef::parse_reference(&reference)?;
            let (family, revision) = match r {
                TaskDefRef::Revision { family, revision } => (family, revision),
                TaskDefRef::Family(_) => {
                    return Err(ApiError::client("Invalid revision number. Number: "))
                }
            };
            let td = m
                .task_def(&family, revision)
                .ok_or_else(|| ApiError::client("The specified task definition does not exist."))?;
            let cmds = if td.status == "ACTIVE" {
                vec![Command::DeregisterTaskDef {
                    family: family.clone(),
                    revision,
                    at: ctx.now,
                }]
            } else {
                vec![]
            };
            Ok((cmds, Outcome::TaskDef { family, revision }))
        }
        Request::RunTask(r) => crate::capacity::plan_run(m, r, ctx),
        Request::Capacity(r) => crate::capacity::plan(m, *r, ctx),
        Request::StopTask {
            cluster,
            task,
            reason,
        } => {
            let c = active_cluster(m, cluster.as_deref())?;
            let t = find_task(m, &c.name, &task)
                .ok_or_else(|| ApiError::invalid("The referenced task was not found."))?;
            if t.desired_status == DesiredStatus::Stopped {
                return Ok((vec![], Outcome::Task(t.id.clone())));
            }
            let mut nt = (**t).clone();
            nt.desired_status = DesiredStatus::Stopped;
            nt.stop_code = Some(StopCode::UserInitiated);
            nt.stopped_reason = Some(reason.unwrap_or_else(|| "Task stopped by user".into()));
            nt.stopping_at = Some(ctx.now);
            nt.version += 1;
            let id = nt.id.clone();
            Ok((
                vec![Command::PutTasks {
                    tasks: vec![nt],
                    token: None,
                }],
                Outcome::Task(id),
            ))
        }
        Request::DeregisterInstance {
            cluster,
            instance,
            force,
        } => {
            let c = active_cluster(m, cluster.as_deref())?;
            let inst = find_instance(m, &c.name, &instance).ok_or_else(|| {
                ApiError::invalid("The referenced container instance was not found.")
            })?;
            if inst.status == "INACTIVE" {
                return Ok((vec![], Outcome::Instance(inst.id.clone())));
            }
            let active: Vec<&Arc<Task>> = m.active_tasks_on(&inst.id).collect();
            if !active.is_empty() && !force {
                return Err(ApiError::invalid(
                    "Found running tasks on the instance. Use force to deregister the instance.",
                ));
            }
            let tasks = active
                .into_iter()
                .map(|t| {
                    let mut nt = (**t).clone();
                    nt.desired_status = DesiredStatus::Stopped;
                    nt.last_status = TaskStatus::Stopped;
                    if nt.stopped_reason.is_none() {
                        nt.stopped_reason = Some("Container instance deregistered".into());
                    }
                    nt.stopping_at.get_or_insert(ctx.now);
                    nt.stopped_at = Some(ctx.now);
                    nt.version += 1;
                    nt
                })
                .collect();
            Ok((
                vec![Command::DeregisterInstance {
                    id: inst.id.clone(),
                    tasks,
                }],
                Outcome::Instance(inst.id.clone()),
            ))
        }
        Request::SetInstanceStatus {
            cluster,
            instances,
            status,
        } => {
            let c = active_cluster(m, cluster.as_deref())?;
            let mut ids = Vec::new();
            let mut failures = Vec::new();
            for r in &instances {
                match find_instance(m, &c.name, r).filter(|i| i.status != "INACTIVE") {
                    Some(i) => ids.push(i.id.clone()),
                    None => failures.push(Failure {
                        arn: Some(r.clone()),
                        reason: "MISSING".into(),
                        detail: None,
                    }),
                }
            }
            let cmds = if ids.is_empty() {
                vec![]
            } else {
                vec![Command::SetInstanceStatus {
                    ids: ids.clone(),
                    status,
                }]
            };
            Ok((cmds, Outcome::Instances { ids, failures }))
        }
        Request::Attributes {
            cluster,
            attributes,
            delete,
        } => {
            let c = active_cluster(m, cluster.as_deref())?;
            let mut lists: BTreeMap<String, Vec<berth_api::Attribute>> = BTreeMap::new();
            for (target, name, value) in &attributes {
                let inst = find_instance(m, &c.name, target)
                    .filter(|i| i.status != "INACTIVE")
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorKind::TargetNotFoundException,
                            format!("Could not find {target}."),
                        )
                    })?;
                let list = lists
                    .entry(inst.id.clone())
                    .or_insert_with(|| inst.attributes.clone());
                list.retain(|a| &a.name != name);
                if !delete {
                    list.push(berth_api::Attribute {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
                // Agent-managed attributes (`ecs.*`, `com.amazonaws.ecs.*`,
                // e.g. the docker-remote-api capabilities) are not custom.
                let custom = list
                    .iter()
                    .filter(|a| {
                        !a.name.starts_with("ecs.") && !a.name.starts_with("com.amazonaws.ecs.")
                    })
                    .count();
                if custom > 10 {
                    return Err(ApiError::new(
                        ErrorKind::AttributeLimitExceededException,
                        "You can apply up to 10 custom attributes per resource.",
                    ));
                }
            }
            let cmds = lists
                .into_iter()
                .map(|(instance, attributes)| Command::SetAttributes {
                    instance,
                    attributes,
                })
                .collect();
            Ok((cmds, Outcome::Done))
        }
        Request::DeleteTaskDefs { references } => {
            let mut cmds = Vec::new();
            let mut found = Vec::new();
            let mut failures = Vec::new();
            for r in &references {
                let parsed = taskdef::parse_reference(r)?;
                let TaskDefRef::Revision { family, revision } = parsed else {
                    return Err(ApiError::client(format!(
                        "The specified task definition identifier is invalid. Specify a valid name or ARN and revision: {r}"
                    )));
                };
                match m.task_def(&family, revision) {
                    None => failures.push(Failure {
                        arn: Some(r.clone()),
                        reason: "TASK_DEFINITION_NOT_FOUND".into(),
                        detail: Some("The specified task definition does not exist.".into()),
                    }),
                    Some(td) if td.status == "ACTIVE" => failures.push(Failure {
                        arn: Some(td.arn.clone()),
                        reason: "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                        detail: None,
                    }),
                    Some(td) => {
                        if td.status == "INACTIVE" {
                            cmds.push(Command::SetTaskDefStatus {
                                family: family.clone(),
                                revision,
                                status: "DELETE_IN_PROGRESS".into(),
                            });
                        }
                        found.push((family, revision));
                    }
                }
            }
            Ok((cmds, Outcome::TaskDefs { found, failures }))
        }
        Request::TagResource { arn, tags } => {
            let (target, current) = tag_target(m, &arn)?;
            let mut merged = current;
            for t in tags {
                match merged.iter_mut().find(|e| e.key == t.key) {
                    Some(e) => e.value = t.value,
                    None => merged.push(t),
                }
            }
            if merged.len() > 50 {
                return Err(ApiError::invalid("The resource can have at most 50 tags."));
            }
            Ok((
                vec![Command::SetTags {
                    target,
                    tags: merged,
                }],
                Outcome::Done,
            ))
        }
        Request::UntagResource { arn, keys } => {
            let (target, current) = tag_target(m, &arn)?;
            let kept: Vec<Tag> = current
                .into_iter()
                .filter(|t| !keys.contains(&t.key))
                .collect();
            Ok((vec![Command::SetTags { target, tags: kept }], Outcome::Done))
        }
        Request::CreateActivation {
            iam_role,
            description,
            default_instance_name,
            registration_limit,
            expiration,
            tags,
        } => {
            let expiration = expiration.unwrap_or(ctx.now + 24.0 * 3600.0);
            if expiration <= ctx.now {
                return Err(ApiError::new(
                    ErrorKind::InvalidParameters,
                    "Expiration date must be in the future.",
                ));
            }
            if expiration > ctx.now + 30.0 * 24.0 * 3600.0 {
                return Err(ApiError::new(
                    ErrorKind::InvalidParameters,
                    "Expiration date cannot be more than 30 days in the future.",
                ));
            }
            let id = random_uuid(ctx.rng);
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let code: String = (0..20)
                .map(|_| ALPHABET[ctx.rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            let act = Activation {
                id: id.clone(),
                code_hash: sha256_hex(&code),
                description,
                default_instance_name,
                iam_role,
                registration_limit,
                registrations_count: 0,
                expiration,
                created: ctx.now,
                tags,
            };
            Ok((
                vec![Command::PutActivation(act)],
                Outcome::Activation { id, code },
            ))
        }
        Request::DeleteActivation { id } => {
            if !m.activations.contains_key(&id) {
                return Err(ApiError::new(
                    ErrorKind::InvalidActivationId,
                    format!("Activation ID {id} is not valid. Verify that you entered the correct ActivationId and try again."),
                ));
            }
            Ok((vec![Command::DeleteActivation { id }], Outcome::Done))
        }
        Request::Prune { retention_secs } => {
            let cutoff = ctx.now - retention_secs;
            let ids: Vec<String> = m
                .tasks
                .values()
                .filter(|t| !t.is_active() && t.stopped_at.unwrap_or(t.created_at) < cutoff)
                .map(|t| t.id.clone())
                .collect();
            let tokens: Vec<String> = m
                .tokens
                .iter()
                .filter(|(_, r)| r.created_at < cutoff)
                .filter(|(_, r)| {
                    r.task_ids
                        .iter()
                        .all(|id| ids.contains(id) || !m.tasks.contains_key(id))
                })
                .map(|(k, _)| k.clone())
                .collect();
            let cmds = if ids.is_empty() && tokens.is_empty() {
                vec![]
            } else {
                vec![Command::PruneTasks { ids, tokens }]
            };
            Ok((cmds, Outcome::Done))
        }
        Request::RegisterInstance(r) => plan_register(m, r, ctx),
        Request::Report { instance, report } => plan_report(m, &instance, report, ctx),
        Request::CreateService(r) => crate::service::plan_create(m, *r, ctx),
        Request::Rules(r) => crate::rules::plan(m, *r, ctx),
        Request::UpdateService(r) => crate::service::plan_update(m, *r, ctx),
        Request::DeleteService {
            cluster,
            service,
            force,
        } => crate::service::plan_delete(m, cluster.as_deref(), &service, force, ctx),
    }
}

/// Current tags of the resource an ECS ARN names.
pub fn tags_of(m: &Model, arn: &str) -> Result<Vec<Tag>, ApiError> {
    tag_target(m, arn).map(|(_, tags)| tags)
}

/// Resolves an ECS ARN to the tagged entity and its current tags.
fn tag_target(m: &Model, arn: &str) -> Result<(TagTarget, Vec<Tag>), ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorKind::ResourceNotFoundException,
            "The specified resource could not be found.",
        )
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "ecs" {
        return Err(ApiError::invalid(format!("Invalid resource ARN: {arn}")));
    }
    let resource = parts[5];
    let (kind, rest) = resource
        .split_once('/')
        .ok_or_else(|| ApiError::invalid(format!("Invalid resource ARN: {arn}")))?;
    match kind {
        "cluster" => {
            let c = m
                .clusters
                .get(rest)
                .filter(|c| c.status == "ACTIVE")
                .ok_or_else(ApiError::cluster_not_found)?;
            Ok((TagTarget::Cluster(c.name.clone()), c.tags.clone()))
        }
        "task-definition" => {
            let r = taskdef::parse_reference(rest)?;
            let td = match r {
                TaskDefRef::Revision { family, revision } => m.task_def(&family, revision),
                TaskDefRef::Family(_) => None,
            }
            .ok_or_else(not_found)?;
            Ok((
                TagTarget::TaskDef(td.family.clone(), td.revision),
                td.tags.clone(),
            ))
        }
        "task" => {
            let id = rest.rsplit('/').next().unwrap_or(rest);
            let t = m.tasks.get(id).ok_or_else(not_found)?;
            Ok((TagTarget::Task(t.id.clone()), t.tags.clone()))
        }
        "container-instance" => {
            let id = rest.rsplit('/').next().unwrap_or(rest);
            let i = m.instances.get(id).ok_or_else(not_found)?;
            Ok((TagTarget::Instance(i.id.clone()), i.tags.clone()))
        }
        "service" => {
            let s = rest
                .split_once('/')
                .and_then(|(c, n)| m.services.get(&crate::model::service_key(c, n)))
                .filter(|s| s.status != "INACTIVE")
                .ok_or_else(not_found)?;
            Ok((TagTarget::Service(s.key()), s.tags.clone()))
        }
        "capacity-provider" => {
            let p = m
                .capacity_providers
                .get(rest)
                .filter(|p| p.status == "ACTIVE")
                .ok_or_else(not_found)?;
            Ok((TagTarget::CapacityProvider(p.name.clone()), p.tags.clone()))
        }
        _ => Err(ApiError::invalid(format!("Invalid resource ARN: {arn}"))),
    }
}

/// Plans a RunTask/StartTask (also the service scheduler's placements).
pub fn plan_run(m: &Model, r: RunTask, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    let cluster = active_cluster(m, r.cluster.as_deref())?;
    let token_key = r
        .client_token
        .as_ref()
        .map(|t| format!("{}\n{}", cluster.name, t));
    if let Some(done) = remembered_run(m, token_key.as_deref()) {
        return Ok(done);
    }
    let reference = taskdef::parse_reference(&r.task_definition)?;
    let td = find_task_def(m, &reference)
        .ok_or_else(|| ApiError::client("TaskDefinition not found."))?;
    if td.status != "ACTIVE" && !r.for_service {
        return Err(ApiError::client("TaskDefinition is inactive"));
    }
    let (specs, req) = taskdef::containers_for_run(&td.definition, r.overrides.as_ref())?;
    network::check_mode(&req.network_mode, r.network_configuration.is_some())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let group = r
        .group
        .clone()
        .unwrap_or_else(|| format!("family:{}", td.family));
    let mut member_of = r.member_of.clone();
    member_of.extend(taskdef_member_of(&td.definition)?);
    // A capacity provider's group is a requirement, kept last (`Need::required`).
    let capacity_group = r.capacity.as_ref().and_then(|c| c.group.as_deref());
    if let Some(g) = capacity_group {
        member_of.push(crate::capacity::member_expr(g)?);
    }
    let need = Need {
        member_of,
        required: usize::from(capacity_group.is_some()),
        distinct_instance: r.distinct_instance,
        strategies: r.strategies.clone(),
        cpu: i64::from(req.cpu),
        memory: i64::from(req.memory_mib),
        tcp_ports: req
            .ports
            .iter()
            .filter(|p| p.protocol() != "udp")
            .filter_map(|p| p.host_port.filter(|h| *h != 0))
            .collect(),
        udp_ports: req
            .ports
            .iter()
            .filter(|p| p.protocol() == "udp")
            .filter_map(|p| p.host_port.filter(|h| *h != 0))
            .collect(),
        dynamic_tcp: dynamic_mappings(&specs, &req.network_mode)
            .iter()
            .filter(|d| !d.udp)
            .count(),
        dynamic_udp: dynamic_mappings(&specs, &req.network_mode)
            .iter()
            .filter(|d| d.udp)
            .count(),
    };

    let mut failures: Vec<Failure> = Vec::new();
    // Only the spread strategies count the group's tasks per instance.
    let counts_group = need.strategies.iter().any(|s| {
        matches!(
            s,
            scheduler::Strategy::SpreadInstance | scheduler::Strategy::SpreadAttribute(_)
        )
    });
    let plan = match &r.instances {
        Some(refs) => {
            let mut cands = Vec::new();
            for reference in refs {
                match find_instance(m, &cluster.name, reference) {
                    Some(i) => cands.push(crate::candidates::one(
                        m,
                        i,
                        &|id| ctx.connected(id),
                        &group,
                    )),
                    None => failures.push(Failure {
                        arn: Some(reference.clone()),
                        reason: "MISSING".into(),
                        detail: None,
                    }),
                }
            }
            scheduler::place_on_each(cands, &need)
        }
        None => crate::candidates::with_index(m, |index| {
            let cands = index.candidates(
                &cluster.name,
                ctx.liveness,
                counts_group.then_some(group.as_str()),
                &need.member_of,
            );
            if cands.is_empty() {
                return Err(ApiError::invalid(
                    "No Container Instances were found in your cluster.",
                ));
            }
            Ok(scheduler::place(cands, &need, r.count as usize, ctx.rng))
        })?,
    };
    failures.extend(plan.failures.iter().map(|(arn, reason)| Failure {
        arn: Some(arn.clone()),
        reason: (*reason).to_string(),
        detail: None,
    }));

    let region = &cluster.region;
    let account = &ctx.settings.account_id;
    let overrides = r.overrides.clone().unwrap_or_else(|| {
        json!({
            "containerOverrides": specs.iter().map(|s| json!({"name": s.name})).collect::<Vec<_>>(),
            "inferenceAcceleratorOverrides": []
        })
    });
    let mut tags = r.tags.clone();
    if r.propagate_taskdef_tags {
        for t in &td.tags {
            if !tags.iter().any(|e| e.key == t.key) {
                tags.push(t.clone());
            }
        }
    }
    if tags.len() > 50 {
        return Err(ApiError::invalid("A task can have at most 50 tags."));
    }
    let mut tasks = Vec::new();
    let empty = scheduler::DynamicPorts::default();
    let cidr = ctx.settings.awsvpc_cidr;
    // Addresses held by tasks that are not STOPPED (a STOPPED task's address
    // is released and may be handed out again). Only awsvpc runs need them:
    // collecting them walks every task in the model.
    let mut used_ips: BTreeSet<Ipv4Addr> =
        if req.network_mode == "awsvpc" && r.network_configuration.is_some() {
            m.tasks
                .values()
                .filter(|t| t.is_active())
                .filter_map(|t| t.awsvpc.as_ref())
                .filter_map(|e| e.attachment.ip.parse().ok())
                .collect()
        } else {
            BTreeSet::new()
        };
    for (k, instance_id) in plan.placements.iter().enumerate() {
        let Some(inst) = m.instances.get(instance_id) else {
            continue;
        };
        let id = task_id(ctx.now, ctx.rng);
        let arn = format!("arn:aws:ecs:{region}:{account}:task/{}/{id}", cluster.name);
        let awsvpc = match (&r.network_configuration, req.network_mode == "awsvpc") {
            (Some(configuration), true) => match network::allocate(&cidr, &used_ips) {
                Some(ip) => {
                    used_ips.insert(ip);
                    Some(network::TaskEni {
                        attachment: network::attachment(&id, random_uuid(ctx.rng), &cidr, ip),
                        configuration: configuration.clone(),
                    })
                }
                None => {
                    failures.push(Failure {
                        arn: Some(inst.arn.clone()),
                        reason: "RESOURCE:ENI".into(),
                        detail: Some(format!("no free address in the awsvpc network {cidr}")),
                    });
                    continue;
                }
            },
            _ => None,
        };
        let placed = assign_host_ports(
            &specs,
            &req.network_mode,
            plan.ports.get(k).unwrap_or(&empty),
        );
        let reserved_ports: Vec<PortMapping> = req
            .ports
            .iter()
            .filter(|p| p.host_port.is_some_and(|h| h != 0))
            .cloned()
            .chain(
                dynamic_mappings(&specs, &req.network_mode)
                    .iter()
                    .filter_map(|d| placed.get(d.container)?.port_mappings.get(d.mapping))
                    .cloned(),
            )
            .collect();
        let containers = placed
            .iter()
            .map(|s| TaskContainer {
                spec: s.clone(),
                arn: format!(
                    "arn:aws:ecs:{region}:{account}:container/{}/{id}/{}",
                    cluster.name,
                    random_uuid(ctx.rng)
                ),
                last_status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                runtime_id: None,
                image_digest: None,
                health_status: None,
                network_bindings: bridge_bindings(s, &req.network_mode),
            })
            .collect();
        tasks.push(Task {
            id,
            arn,
            cluster: cluster.name.clone(),
            cluster_arn: cluster.arn.clone(),
            task_definition_arn: td.arn.clone(),
            family: td.family.clone(),
            revision: td.revision,
            instance_id: inst.id.clone(),
            instance_arn: inst.arn.clone(),
            containers,
            overrides: overrides.clone(),
            cpu: req.cpu,
            memory: req.memory_mib,
            network_mode: req.network_mode.clone(),
            reserved_ports,
            last_status: TaskStatus::Pending,
            desired_status: DesiredStatus::Running,
            stop_code: None,
            stopped_reason: None,
            created_at: ctx.now,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            started_by: r.started_by.clone(),
            group: group.clone(),
            launch_type: r.launch_type.clone().unwrap_or_else(|| "EXTERNAL".into()),
            version: 1,
            tags: tags.clone(),
            availability_zone: inst
                .attributes
                .iter()
                .find(|a| a.name == "ecs.availability-zone")
                .and_then(|a| a.value.clone()),
            awsvpc,
            service_accounted: false,
            capacity_provider_name: r.capacity.as_ref().and_then(|c| c.provider.clone()),
        });
    }
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    Ok(run_outcome(tasks, ids, failures, token_key, ctx.now))
}

/// The answer a run under an idempotency token already gave, if any
/// (replayed without placing anything).
pub(crate) fn remembered_run(m: &Model, token_key: Option<&str>) -> Option<Planned> {
    let prev = m.tokens.get(token_key?)?;
    Some((
        vec![],
        Outcome::Tasks {
            ids: prev.task_ids.clone(),
            failures: prev.failures.clone(),
        },
    ))
}

/// What a run decided: one `PutTasks` carrying the tasks and, under an
/// idempotency token, its remembered result (nothing when there is neither),
/// and the ids and failures to answer with.
pub(crate) fn run_outcome(
    tasks: Vec<Task>,
    ids: Vec<String>,
    failures: Vec<Failure>,
    token_key: Option<String>,
    now: f64,
) -> Planned {
    let token = token_key.map(|k| {
        (
            k,
            TokenResult {
                task_ids: ids.clone(),
                failures: failures.clone(),
                created_at: now,
            },
        )
    });
    let cmds = if tasks.is_empty() && token.is_none() {
        vec![]
    } else {
        vec![Command::PutTasks { tasks, token }]
    };
    (cmds, Outcome::Tasks { ids, failures })
}

/// A bridge-mode port mapping whose host port the scheduler chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicMapping {
    pub container: usize,
    pub mapping: usize,
    pub udp: bool,
}

/// The dynamic mappings of a task, in container then mapping order: in bridge
/// mode, every mapping with a container port and `hostPort` 0 or absent.
pub fn dynamic_mappings(specs: &[ContainerSpec], network_mode: &str) -> Vec<DynamicMapping> {
    if network_mode != "bridge" {
        return vec![];
    }
    let mut out = Vec::new();
    for (ci, c) in specs.iter().enumerate() {
        for (mi, pm) in c.port_mappings.iter().enumerate() {
            if pm.container_port.is_some() && pm.host_port.unwrap_or(0) == 0 {
                out.push(DynamicMapping {
                    container: ci,
                    mapping: mi,
                    udp: pm.protocol() == "udp",
                });
            }
        }
    }
    out
}

/// `specs` with each dynamic mapping's host port set to the scheduler's
/// choice (the i-th dynamic TCP mapping takes `ports.tcp[i]`, likewise UDP),
/// so the agent receives concrete host ports per container.
pub fn assign_host_ports(
    specs: &[ContainerSpec],
    network_mode: &str,
    ports: &scheduler::DynamicPorts,
) -> Vec<ContainerSpec> {
    let mut out = specs.to_vec();
    let (mut tcp, mut udp) = (ports.tcp.iter(), ports.udp.iter());
    for d in dynamic_mappings(specs, network_mode) {
        let next = if d.udp { udp.next() } else { tcp.next() };
        if let Some(pm) = out
            .get_mut(d.container)
            .and_then(|c| c.port_mappings.get_mut(d.mapping))
        {
            pm.host_port = next.copied();
            pm.protocol = Some(pm.protocol().to_string());
        }
    }
    out
}

/// Bridge-mode network bindings of a placed container (every mapping has a
/// host port by now); other modes get theirs from the agent's reports.
fn bridge_bindings(spec: &ContainerSpec, network_mode: &str) -> Vec<NetworkBinding> {
    if network_mode != "bridge" {
        return vec![];
    }
    spec.port_mappings
        .iter()
        .filter_map(|pm| {
            Some(NetworkBinding {
                bind_ip: "0.0.0.0".into(),
                container_port: pm.container_port?,
                host_port: pm.host_port.filter(|h| *h != 0)?,
                protocol: pm.protocol().to_string(),
            })
        })
        .collect()
}

/// `memberOf` constraints stored in a task definition.
fn taskdef_member_of(
    def: &serde_json::Map<String, Value>,
) -> Result<Vec<crate::cql::Expr>, ApiError> {
    let mut out = Vec::new();
    for c in def
        .get("placementConstraints")
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or(&[])
    {
        if c.get("type").and_then(Value::as_str) == Some("memberOf") {
            if let Some(expr) = c.get("expression").and_then(Value::as_str) {
                out.push(crate::cql::parse(expr).map_err(|e| ApiError::invalid(e.to_string()))?);
            }
        }
    }
    Ok(out)
}

fn channel_error(kind: ErrorKind, msg: &str) -> ApiError {
    ApiError::new(kind, msg)
}

fn plan_register(m: &Model, r: RegisterRequest, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    let act = m.activations.get(&r.activation_id).ok_or_else(|| {
        channel_error(
            ErrorKind::InvalidActivation,
            "The activation is not valid: unknown activation id or wrong code.",
        )
    })?;
    let given = sha256_hex(&r.activation_code);
    if !bool::from(given.as_bytes().ct_eq(act.code_hash.as_bytes())) {
        return Err(channel_error(
            ErrorKind::InvalidActivation,
            "The activation is not valid: unknown activation id or wrong code.",
        ));
    }
    if ctx.now >= act.expiration {
        return Err(channel_error(
            ErrorKind::InvalidActivation,
            "The activation has expired.",
        ));
    }
    if act.registrations_count >= act.registration_limit {
        return Err(channel_error(
            ErrorKind::InvalidActivation,
            "The activation has reached its registration limit.",
        ));
    }
    let mut cmds = Vec::new();
    let name = cluster_name(&r.cluster).to_string();
    let cluster: Cluster = match m.clusters.get(&name) {
        Some(c) if c.status == "ACTIVE" => (**c).clone(),
        _ if name == "default" => {
            // As the ECS agent does when no cluster is configured.
            let region = ctx.settings.default_region.clone();
            let c = Cluster {
                name: name.clone(),
                arn: format!(
                    "arn:aws:ecs:{region}:{}:cluster/{name}",
                    ctx.settings.account_id
                ),
                region,
                status: "ACTIVE".into(),
                tags: vec![],
                settings: vec![],
                created_at: ctx.now,
                capacity_providers: vec![],
                default_capacity_provider_strategy: vec![],
            };
            cmds.push(Command::PutCluster(c.clone()));
            c
        }
        _ => return Err(ApiError::cluster_not_found()),
    };
    let id = random_hex(ctx.rng, 16);
    let ec2_id = format!("mi-{}", &random_hex(ctx.rng, 9)[..17]);
    let secret = random_hex(ctx.rng, 32);
    let instance = Instance {
        arn: format!(
            "arn:aws:ecs:{}:{}:container-instance/{}/{id}",
            cluster.region, ctx.settings.account_id, cluster.name
        ),
        id: id.clone(),
        cluster: cluster.name.clone(),
        ec2_instance_id: ec2_id,
        secret_hash: sha256_hex(&secret),
        status: "ACTIVE".into(),
        registered_resources: r.resources,
        attributes: r.attributes,
        registered_at: ctx.now,
        agent_version: r.agent_version,
        hostname: r.hostname,
        activation_id: act.id.clone(),
        tags: vec![],
        version: 1,
        desired_version: 1,
        last_seq: 0,
    };
    cmds.push(Command::RegisterInstance { instance });
    Ok((
        cmds,
        Outcome::Registered {
            instance_id: id,
            secret,
        },
    ))
}

fn container_rank(s: ContainerStatus) -> u8 {
    match s {
        ContainerStatus::Pending => 0,
        ContainerStatus::Running => 1,
        ContainerStatus::Stopped => 2,
    }
}

/// Merges one task report into a task's state; never moves anything backwards.
/// Returns `None` when the report changes nothing.
pub fn merge_report(t: &Task, r: &berth_api::TaskReport, now: f64) -> Option<Task> {
    if t.last_status == TaskStatus::Stopped {
        return None;
    }
    let mut n = t.clone();
    if t.last_status.can_move_to(r.last_status) {
        n.last_status = r.last_status;
    }
    if n.last_status == TaskStatus::Running && r.started_at.is_none() && n.started_at.is_none() {
        n.started_at = Some(now);
    }
    fn first(slot: &mut Option<f64>, v: Option<f64>) {
        if slot.is_none() {
            *slot = v;
        }
    }
    first(&mut n.pull_started_at, r.pull_started_at);
    first(&mut n.pull_stopped_at, r.pull_stopped_at);
    first(&mut n.started_at, r.started_at);
    first(&mut n.stopping_at, r.stopping_at);
    first(&mut n.execution_stopped_at, r.execution_stopped_at);
    first(&mut n.stopped_at, r.stopped_at);
    if n.stop_code.is_none() {
        n.stop_code = r.stop_code;
    }
    if n.stopped_reason.is_none() {
        n.stopped_reason = r.stopped_reason.clone();
    }
    for cr in &r.containers {
        let Some(c) = n.containers.iter_mut().find(|c| c.spec.name == cr.name) else {
            continue;
        };
        if container_rank(cr.last_status) >= container_rank(c.last_status) {
            c.last_status = cr.last_status;
        }
        if cr.runtime_id.is_some() {
            c.runtime_id = cr.runtime_id.clone();
        }
        if cr.image_digest.is_some() {
            c.image_digest = cr.image_digest.clone();
        }
        if cr.exit_code.is_some() {
            c.exit_code = cr.exit_code;
        }
        if cr.reason.is_some() {
            c.reason = cr.reason.clone();
        }
        if !cr.network_bindings.is_empty() {
            c.network_bindings = cr.network_bindings.clone();
        }
        if cr.health_status.is_some() {
            c.health_status = cr.health_status;
        }
    }
    if n.last_status == TaskStatus::Stopped {
        n.desired_status = DesiredStatus::Stopped;
        if n.stopped_at.is_none() {
            n.stopped_at = Some(now);
        }
        if n.execution_stopped_at.is_none() {
            n.execution_stopped_at = n.stopped_at;
        }
        if n.stopping_at.is_none() {
            n.stopping_at = n.stopped_at;
        }
        for c in &mut n.containers {
            c.last_status = ContainerStatus::Stopped;
        }
    }
    if n == *t {
        return None;
    }
    n.version += 1;
    Some(n)
}

fn plan_report(
    m: &Model,
    instance: &str,
    report: StateReport,
    ctx: &mut Ctx<'_>,
) -> Result<Planned, ApiError> {
    let inst = m
        .instances
        .get(instance)
        .ok_or_else(|| ApiError::new(ErrorKind::AccessDeniedException, "Unknown instance."))?;
    if report.seq <= inst.last_seq {
        return Ok((vec![], Outcome::Acked(inst.last_seq)));
    }
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    for r in &report.tasks {
        let id = arn_tail(&r.task_arn);
        let current = match tasks.get(id) {
            Some(t) => Some(t.clone()),
            None => m.tasks.get(id).map(|t| (**t).clone()),
        };
        match current {
            Some(t) if t.instance_id == inst.id => {
                if let Some(n) = merge_report(&t, r, ctx.now) {
                    tasks.insert(n.id.clone(), n);
                }
            }
            Some(_) | None => {
                tracing::warn!(
                    instance = %inst.id,
                    task = %r.task_arn,
                    "ignoring report for a task not placed on this instance"
                );
            }
        }
    }
    Ok((
        vec![Command::Report {
            instance: inst.id.clone(),
            seq: report.seq,
            tasks: tasks.into_values().collect(),
        }],
        Outcome::Acked(report.seq),
    ))
}

// ---------------------------------------------------------------------------
// The owner.

/// What a long-poll waits on.
pub enum InstanceWaker {
    Instance(watch::Receiver<u64>),
    Any(watch::Receiver<Arc<Model>>),
}

impl InstanceWaker {
    /// Marks the current value seen.
    pub fn mark_seen(&mut self) {
        match self {
            InstanceWaker::Instance(rx) => {
                rx.borrow_and_update();
            }
            InstanceWaker::Any(rx) => {
                rx.borrow_and_update();
            }
        }
    }

    /// Resolves on the next signal; `Err` when the owner is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match self {
            InstanceWaker::Instance(rx) => rx.changed().await,
            InstanceWaker::Any(rx) => rx.changed().await,
        }
    }
}

type Reply = oneshot::Sender<Result<(Arc<Model>, Outcome), ApiError>>;

struct Envelope {
    req: Request,
    reply: Reply,
}

enum Msg {
    Req(Box<Envelope>),
    /// The service scheduler's periodic tick: the services due
    /// ([`crate::service::due`]) are stepped over the following commits.
    Tick,
    /// Finish: write a snapshot and end the owner thread.
    Stop,
}

/// Handle to the state owner: send requests, read snapshots.
#[derive(Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Msg>,
    snapshots: watch::Receiver<Arc<Model>>,
    pub heartbeats: Arc<Heartbeats>,
    wakers: Arc<Wakers>,
    /// The awsvpc network (for the poll answer's membership view).
    pub awsvpc_cidr: network::Cidr,
}

/// Per-instance wake-ups: the owner signals only the instances whose desired
/// state changed, so a commit wakes the long-polls that care and no others.
#[derive(Debug, Default)]
pub struct Wakers {
    senders: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Wakers {
    fn subscribe(&self, instance: &str) -> Option<watch::Receiver<u64>> {
        let mut m = self.senders.lock().ok()?;
        Some(
            m.entry(instance.to_string())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
        )
    }

    /// Wakes the pollers of every instance whose poll version differs
    /// between `old` and `new` (its own desired state, or its cluster's
    /// awsvpc membership).
    /// Wakes the pollers whose answer `new` changed. Walks only what differs
    /// between the two models (persistent maps share untouched subtrees).
    fn wake_changed(&self, old: &Model, new: &Model) {
        use imbl::ordmap::DiffItem;
        let Ok(m) = self.senders.lock() else {
            return;
        };
        let wake = |id: &String, inst: &Instance| {
            if let Some(tx) = m.get(id) {
                tx.send_replace(new.poll_version(inst));
            }
        };
        let epochs_changed: Vec<&String> = old
            .awsvpc_epochs
            .diff(&new.awsvpc_epochs)
            .filter_map(|d| match d {
                DiffItem::Add(c, _) | DiffItem::Update { new: (c, _), .. } => Some(c),
                DiffItem::Remove(..) => None,
            })
            .collect();
        if !epochs_changed.is_empty() {
            // A membership change wakes every member of the cluster.
            for (id, inst) in &new.instances {
                if epochs_changed.contains(&&inst.cluster) {
                    wake(id, inst);
                }
            }
        }
        for d in old.instances.diff(&new.instances) {
            match d {
                DiffItem::Add(id, inst) => wake(id, inst),
                DiffItem::Update {
                    old: (_, before),
                    new: (id, inst),
                } => {
                    if epochs_changed.contains(&&inst.cluster) {
                        continue; // woken above
                    }
                    if before.desired_version != inst.desired_version
                        || before.status != inst.status
                    {
                        wake(id, inst);
                    }
                }
                DiffItem::Remove(..) => {}
            }
        }
    }
}

impl StateHandle {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Model> {
        self.snapshots.borrow().clone()
    }

    /// The service scheduler's tick: throttling delays, settle periods and
    /// disconnected agents are noticed without any other change. Returns at
    /// once; the due services are stepped a few per commit, so a tick over
    /// large services never holds a request for long.
    pub async fn tick(&self) -> Result<(), ApiError> {
        self.tx
            .send(Msg::Tick)
            .await
            .map_err(|_| ApiError::server("state owner stopped"))
    }

    /// Asks the owner thread to finish (requests sent later fail).
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    /// A receiver that wakes when this instance's desired state may have
    /// changed (falls back to every snapshot if the registry is unusable).
    pub fn instance_waker(&self, instance: &str) -> InstanceWaker {
        match self.wakers.subscribe(instance) {
            Some(rx) => InstanceWaker::Instance(rx),
            None => InstanceWaker::Any(self.snapshots.clone()),
        }
    }

    /// A receiver that wakes whenever a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Model>> {
        self.snapshots.clone()
    }

    /// Plans, commits and applies `req`; returns the snapshot that includes it.
    pub async fn submit(&self, req: Request) -> Result<(Arc<Model>, Outcome), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Req(Box::new(Envelope { req, reply })))
            .await
            .map_err(|_| ApiError::server("state owner stopped"))?;
        rx.await
            .map_err(|_| ApiError::server("state owner dropped the request"))?
    }
}

/// Opens the store, rebuilds the model (snapshot + log replay) and starts the
/// owner thread. The thread ends when every `StateHandle` is dropped.
pub fn start(
    store_path: &std::path::Path,
    settings: Settings,
    agent_timeout: Duration,
    seed: Option<u64>,
) -> Result<(StateHandle, std::thread::JoinHandle<()>), StateError> {
    let store: Box<dyn CommandLog> = Box::new(Store::open(store_path)?);
    start_with(store, settings, agent_timeout, seed)
}

/// [`start`] over any [`CommandLog`].
pub fn start_with(
    store: Box<dyn CommandLog>,
    settings: Settings,
    agent_timeout: Duration,
    seed: Option<u64>,
) -> Result<(StateHandle, std::thread::JoinHandle<()>), StateError> {
    let recovered = store.recover()?;
    let mut model = match &recovered.snapshot {
        Some((seq, body)) => serde_json::from_slice::<Model>(body)
            .map_err(|source| StateError::Decode { seq: *seq, source })?,
        None => Model::default(),
    };
    model.rebuild_indexes();
    let snapshot_seq = recovered.snapshot.as_ref().map(|(s, _)| *s).unwrap_or(0);
    for (seq, body) in &recovered.records {
        let cmd: Command = serde_json::from_slice(body)
            .map_err(|source| StateError::Decode { seq: *seq, source })?;
        model.apply(&cmd);
    }
    tracing::info!(
        snapshot_seq,
        replayed = recovered.records.len(),
        "state recovered"
    );
    let heartbeats = Arc::new(Heartbeats::new(agent_timeout));
    // Agents that were registered before a restart get one timeout's grace to
    // poll again before they count as disconnected.
    for i in model.instances.values().filter(|i| i.status != "INACTIVE") {
        heartbeats.beat(&i.id);
    }
    let awsvpc_cidr = settings.awsvpc_cidr;
    let (tx, rx) = mpsc::channel(4096);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(model.clone()));
    let hb = heartbeats.clone();
    let wakers = Arc::new(Wakers::default());
    let rng = match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    };
    let owner = Owner {
        store,
        model,
        settings,
        heartbeats: hb,
        rng,
        last_snapshot_seq: snapshot_seq,
        snap_tx,
        wakers: wakers.clone(),
        encoder: SnapshotEncoder::spawn()?,
        encoding: false,
        more: BTreeSet::new(),
        due: DueQueue::default(),
    };
    let join = std::thread::Builder::new()
        .name("berth-state".into())
        .spawn(move || owner.run(rx))?;
    Ok((
        StateHandle {
            tx,
            snapshots: snap_rx,
            heartbeats,
            wakers,
            awsvpc_cidr,
        },
        join,
    ))
}

struct Owner {
    store: Box<dyn CommandLog>,
    model: Model,
    settings: Settings,
    heartbeats: Arc<Heartbeats>,
    rng: StdRng,
    last_snapshot_seq: u64,
    snap_tx: watch::Sender<Arc<Model>>,
    wakers: Arc<Wakers>,
    encoder: SnapshotEncoder,
    /// A snapshot is being encoded off-thread.
    encoding: bool,
    /// Services whose last step wanted more tasks than it could start:
    /// stepped again in the next commit, which does not wait for a request.
    more: BTreeSet<String>,
    /// Services the last tick found due and no commit has stepped since:
    /// [`TICK_STEPS_PER_COMMIT`] of them per commit, which does not wait
    /// for a request either.
    due: DueQueue,
}

/// Services a tick found due, first in first stepped, so each gets its turn
/// however many there are and however often ticks queue the early ones
/// again; a service already waiting is not queued twice.
#[derive(Debug, Default)]
struct DueQueue {
    order: std::collections::VecDeque<String>,
    waiting: std::collections::HashSet<String>,
}

impl DueQueue {
    fn push(&mut self, key: String) {
        if self.waiting.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    /// The service was stepped for another reason: it no longer waits (its
    /// place in the order is skipped when reached).
    fn remove(&mut self, key: &str) {
        self.waiting.remove(key);
    }

    fn pop(&mut self) -> Option<String> {
        while let Some(key) = self.order.pop_front() {
            if self.waiting.remove(&key) {
                return Some(key);
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Encodes model snapshots on its own thread, so a large model's JSON never
/// stalls the owner's commits. The owner hands over an O(1) clone (the
/// model's maps are persistent) and writes the returned body itself, keeping
/// every store write on its thread.
struct SnapshotEncoder {
    to: std::sync::mpsc::Sender<(u64, Model)>,
    from: std::sync::mpsc::Receiver<(u64, Result<Vec<u8>, String>)>,
}

impl SnapshotEncoder {
    fn spawn() -> std::io::Result<SnapshotEncoder> {
        let (to, jobs) = std::sync::mpsc::channel::<(u64, Model)>();
        let (done, from) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("berth-snapshot".into())
            .spawn(move || {
                for (seq, model) in jobs {
                    let body = serde_json::to_vec(&model).map_err(|e| e.to_string());
                    drop(model);
                    if done.send((seq, body)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SnapshotEncoder { to, from })
    }
}

/// Encodes `cmds` as log records and applies them to `working`; when one
/// cannot be encoded, nothing is recorded or applied.
fn record(
    working: &mut Model,
    records: &mut Vec<Vec<u8>>,
    cmds: &[Command],
) -> Result<(), serde_json::Error> {
    let bodies = cmds
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()?;
    for c in cmds {
        working.apply(c);
    }
    records.extend(bodies);
    Ok(())
}

impl Owner {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut stopping = false;
        loop {
            let first = if self.more.is_empty() && self.due.is_empty() {
                rx.blocking_recv()
            } else {
                match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Nothing asked: go on with services' steps.
                        self.process(Vec::new());
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(first) = first else {
                break;
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Req(e) => batch.push(*e),
                    Msg::Tick => {
                        let now = now_secs();
                        for key in crate::service::due(&self.model, now) {
                            if !self.more.contains(&key) {
                                self.due.push(key);
                            }
                        }
                    }
                    Msg::Stop => stopping = true,
                }
                if stopping || batch.len() >= MAX_BATCH {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() || !self.more.is_empty() || !self.due.is_empty() {
                self.process(batch);
            }
            if stopping {
                break;
            }
        }
        // A snapshot at shutdown makes the next start replay nothing.
        if self.store.last_seq() > self.last_snapshot_seq {
            self.write_snapshot();
        }
        tracing::info!("state owner stopped");
    }

    fn process(&mut self, batch: Vec<Envelope>) {
        let mut working = self.model.clone();
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut replies: Vec<(Reply, Result<Outcome, ApiError>)> = Vec::new();
        let hb = self.heartbeats.clone();
        let mut touched: Vec<Command> = Vec::new();
        for env in batch {
            let mut ctx = Ctx {
                now: now_secs(),
                rng: &mut self.rng,
                liveness: hb.as_ref(),
                settings: &self.settings,
            };
            // Last line of defence: a planning bug answers ServerException
            // instead of killing the owner (plan only reads the model).
            let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                plan(&working, env.req, &mut ctx)
            }))
            .unwrap_or_else(|_| {
                tracing::error!("plan panicked; request rejected");
                Err(ApiError::server("internal error"))
            });
            let result = match planned {
                Ok((cmds, outcome)) => match record(&mut working, &mut records, &cmds) {
                    Ok(()) => {
                        if !working.services.is_empty() {
                            touched.extend(cmds);
                        }
                        Ok(outcome)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode command");
                        Err(ApiError::server("internal error"))
                    }
                },
                Err(e) => Err(e),
            };
            replies.push((env.reply, result));
        }
        // The service scheduler reacts in the same commit to what the batch
        // changed (a task stopped, an instance drained or joined), and goes
        // on with services still short of tasks after their last step. A
        // commit starts at most `SERVICE_LAUNCHES_PER_COMMIT` service tasks;
        // services left over wait for the next commit, which follows at once.
        // Then come services the tick found due, `TICK_STEPS_PER_COMMIT` a
        // commit (a service stepped for any other reason leaves that queue).
        let mut affected = crate::service::affected(&working, &touched);
        affected.append(&mut self.more);
        for key in &affected {
            self.due.remove(key);
        }
        let ticked: Vec<String> = std::iter::from_fn(|| self.due.pop())
            .take(TICK_STEPS_PER_COMMIT)
            .collect();
        let mut budget = SERVICE_LAUNCHES_PER_COMMIT;
        for key in affected.into_iter().chain(ticked) {
            if budget == 0 {
                self.more.insert(key);
                continue;
            }
            let mut ctx = Ctx {
                now: now_secs(),
                rng: &mut self.rng,
                liveness: hb.as_ref(),
                settings: &self.settings,
            };
            let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::service::plan_step(&working, &key, &mut ctx, budget)
            }));
            let step = match planned {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    tracing::warn!(service = %key, error = %e, "service step failed");
                    continue;
                }
                Err(_) => {
                    tracing::error!(service = %key, "service step panicked");
                    continue;
                }
            };
            match record(&mut working, &mut records, &step.cmds) {
                Ok(()) => {
                    budget = budget.saturating_sub(step.started);
                    if step.more {
                        self.more.insert(key);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode service step"),
            }
        }
        if !records.is_empty() {
            match self.store.append(&records) {
                Ok(_) => {
                    let old = std::mem::replace(&mut self.model, working);
                    // Publish first, then wake: a woken poller sees the new snapshot.
                    self.snap_tx.send_replace(Arc::new(self.model.clone()));
                    self.wakers.wake_changed(&old, &self.model);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store append failed; batch rejected");
                    for (_, r) in replies.iter_mut() {
                        if r.is_ok() {
                            *r = Err(ApiError::server("internal error"));
                        }
                    }
                }
            }
        }
        let snap = self.snap_tx.borrow().clone();
        for (reply, result) in replies {
            let _ = reply.send(result.map(|o| (snap.clone(), o)));
        }
        self.maybe_snapshot();
    }

    /// Log records a snapshot waits for: at least `SNAPSHOT_EVERY`, and at
    /// least the model's entity count, so the total cost of snapshots stays
    /// proportional to the records written however large the model grows.
    fn snapshot_threshold(&self) -> u64 {
        let size = self.model.tasks.len() + self.model.instances.len() + self.model.services.len();
        SNAPSHOT_EVERY.max(size as u64)
    }

    fn maybe_snapshot(&mut self) {
        if self.encoding {
            match self.encoder.from.try_recv() {
                Ok((seq, body)) => {
                    self.encoding = false;
                    self.store_snapshot(seq, body);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    tracing::error!("snapshot encoder is gone; snapshotting inline");
                    self.encoding = false;
                    self.write_snapshot();
                    return;
                }
            }
        }
        let seq = self.store.last_seq();
        if seq >= self.last_snapshot_seq + self.snapshot_threshold() {
            if self.encoder.to.send((seq, self.model.clone())).is_ok() {
                self.encoding = true;
            } else {
                self.write_snapshot();
            }
        }
    }

    fn store_snapshot(&mut self, seq: u64, body: Result<Vec<u8>, String>) {
        match body {
            Ok(body) => match self.store.write_snapshot(seq, &body) {
                Ok(()) => {
                    self.last_snapshot_seq = seq;
                    tracing::debug!(seq, bytes = body.len(), "snapshot written");
                }
                Err(e) => tracing::error!(error = %e, "snapshot failed"),
            },
            Err(e) => tracing::error!(error = %e, "cannot encode snapshot"),
        }
    }

    /// Encodes and writes a snapshot of the current model on this thread.
    fn write_snapshot(&mut self) {
        let seq = self.store.last_seq();
        let body = serde_json::to_vec(&self.model).map_err(|e| e.to_string());
        self.store_snapshot(seq, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{ContainerReport, Resource, TaskReport};

    fn settings() -> Settings {
        Settings {
            account_id: "000000000000".into(),
            default_region: "us-east-1".into(),
            awsvpc_cidr: crate::network::Cidr::parse("10.199.0.0/16").unwrap(),
            service_settle_secs: 0.0,
        }
    }

    /// Plans and applies `req` on `m` with a fixed clock and seed.
    fn step(
        m: &mut Model,
        req: Request,
        connected: bool,
        rng: &mut StdRng,
    ) -> Result<Outcome, ApiError> {
        step_with(m, req, connected, rng, &settings()).map(|(o, _)| o)
    }

    /// `step` with explicit settings; also answers the applied commands.
    fn step_with(
        m: &mut Model,
        req: Request,
        connected: bool,
        rng: &mut StdRng,
        s: &Settings,
    ) -> Result<(Outcome, Vec<Command>), ApiError> {
        let conn = always(connected);
        let mut ctx = Ctx {
            now: 1000.0,
            rng,
            liveness: &conn,
            settings: s,
        };
        let (cmds, outcome) = plan(m, req, &mut ctx)?;
        for c in &cmds {
            // Every command survives the log's encoding unchanged.
            let bytes = serde_json::to_vec(c).unwrap();
            let back: Command = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(&back, c);
            m.apply(c);
        }
        Ok((outcome, cmds))
    }

    /// What the owner's tick does, at once: steps every due service.
    fn tick(m: &mut Model, rng: &mut StdRng) -> Vec<Command> {
        let conn = always(true);
        let s = settings();
        let mut ctx = Ctx {
            now: 1000.0,
            rng,
            liveness: &conn,
            settings: &s,
        };
        let mut log = Vec::new();
        for key in crate::service::due(m, 1000.0).collect::<Vec<_>>() {
            let step =
                crate::service::plan_step(m, &key, &mut ctx, crate::service::LAUNCHES_PER_STEP)
                    .unwrap();
            for c in &step.cmds {
                m.apply(c);
            }
            log.extend(step.cmds);
        }
        log
    }

    fn register_request(id: &str, code: &str) -> RegisterRequest {
        RegisterRequest {
            activation_id: id.into(),
            activation_code: code.into(),
            cluster: "c".into(),
            hostname: "h".into(),
            resources: vec![
                Resource {
                    name: "CPU".into(),
                    kind: "INTEGER".into(),
                    integer_value: 1024,
                    string_set_value: vec![],
                },
                Resource {
                    name: "MEMORY".into(),
                    kind: "INTEGER".into(),
                    integer_value: 1000,
                    string_set_value: vec![],
                },
            ],
            attributes: vec![],
            agent_version: "t".into(),
        }
    }

    fn world(connected: bool) -> (Model, StdRng) {
        let mut m = Model::default();
        let mut rng = StdRng::seed_from_u64(3);
        step(
            &mut m,
            Request::CreateCluster {
                name: "c".into(),
                region: "eu-west-1".into(),
                tags: vec![],
                settings: vec![],
            },
            connected,
            &mut rng,
        )
        .unwrap();
        let reg = taskdef::validate_register(&json!({
            "family": "f",
            "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 300, "cpu": 100,
                                      "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]
        }))
        .unwrap();
        step(
            &mut m,
            Request::RegisterTaskDef {
                family: reg.family,
                definition: reg.definition,
                tags: vec![],
                region: "eu-west-1".into(),
            },
            connected,
            &mut rng,
        )
        .unwrap();
        let Outcome::Activation { id, code } = step(
            &mut m,
            Request::CreateActivation {
                iam_role: "r".into(),
                description: None,
                default_instance_name: None,
                registration_limit: 1,
                expiration: None,
                tags: vec![],
            },
            connected,
            &mut rng,
        )
        .unwrap() else {
            panic!("no activation");
        };
        let register = register_request(&id, &code);
        step(
            &mut m,
            Request::RegisterInstance(register.clone()),
            connected,
            &mut rng,
        )
        .unwrap();
        // The activation's single registration is used up.
        let again = step(
            &mut m,
            Request::RegisterInstance(register),
            connected,
            &mut rng,
        );
        assert_eq!(again.unwrap_err().kind, ErrorKind::InvalidActivation);
        (m, rng)
    }

    /// Liveness with a given set of instances disconnected.
    struct Down(BTreeSet<String>, u64);

    impl Liveness for Down {
        fn alive_until(&self, id: &str) -> Option<Instant> {
            (!self.0.contains(id)).then(|| Instant::now() + Duration::from_secs(3600))
        }
        fn source(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn candidate_index_matches_a_rebuild_after_every_step() {
        use rand::Rng;
        let (mut m, mut rng) = world(true);
        let Outcome::Activation { id, code } = step(
            &mut m,
            Request::CreateActivation {
                iam_role: "r".into(),
                description: None,
                default_instance_name: None,
                registration_limit: 5,
                expiration: None,
                tags: vec![],
            },
            true,
            &mut rng,
        )
        .unwrap() else {
            panic!("no activation");
        };
        for h in 0..5 {
            let mut r = register_request(&id, &code);
            r.hostname = format!("h{h}");
            step(&mut m, Request::RegisterInstance(r), true, &mut rng).unwrap();
        }
        let exprs: Vec<Vec<crate::cql::Expr>> = [
            vec![],
            vec!["attribute:tier == gold"],
            vec!["agentConnected == true", "runningTasksCount < 1"],
            vec!["task:group == family:f or attribute:tier !exists"],
        ]
        .iter()
        .map(|l| l.iter().map(|e| crate::cql::parse(e).unwrap()).collect())
        .collect();
        let (other, _) = world(false);
        let mut ops = StdRng::seed_from_u64(11);
        for round in 0..300 {
            let ids: Vec<String> = m.instances.keys().cloned().collect();
            let pick = ids[ops.gen_range(0..ids.len())].clone();
            let _ = match ops.gen_range(0..5) {
                0 => step(
                    &mut m,
                    Request::RunTask(RunTask {
                        cluster: Some("c".into()),
                        task_definition: "f".into(),
                        count: ops.gen_range(1..4),
                        member_of: exprs[ops.gen_range(0..exprs.len())].clone(),
                        ..RunTask::default()
                    }),
                    true,
                    &mut rng,
                ),
                1 => {
                    let active: Vec<String> = m
                        .tasks
                        .values()
                        .filter(|t| t.is_active())
                        .map(|t| t.id.clone())
                        .collect();
                    if !active.is_empty() {
                        stop(&mut m, &active[ops.gen_range(0..active.len())]);
                    }
                    Ok(Outcome::Done)
                }
                2 => step(
                    &mut m,
                    Request::SetInstanceStatus {
                        cluster: Some("c".into()),
                        instances: vec![pick],
                        status: if ops.gen_bool(0.5) {
                            "DRAINING"
                        } else {
                            "ACTIVE"
                        }
                        .into(),
                    },
                    true,
                    &mut rng,
                ),
                3 => step(
                    &mut m,
                    Request::Attributes {
                        cluster: Some("c".into()),
                        attributes: vec![(
                            pick,
                            "tier".into(),
                            Some(if ops.gen_bool(0.5) { "gold" } else { "bronze" }.into()),
                        )],
                        delete: ops.gen_bool(0.2),
                    },
                    true,
                    &mut rng,
                ),
                _ if round == 150 => step(
                    &mut m,
                    Request::DeregisterInstance {
                        cluster: Some("c".into()),
                        instance: pick,
                        force: true,
                    },
                    true,
                    &mut rng,
                ),
                _ => Ok(Outcome::Done),
            };
            // Sometimes plan over an unrelated model in between.
            let model = if round % 7 == 3 { &other } else { &m };
            let down = Down(
                ids.iter().filter(|_| ops.gen_bool(0.3)).cloned().collect(),
                new_source(),
            );
            for exprs in &exprs {
                for group in [None, Some("family:f")] {
                    let got = crate::candidates::with_index(model, |ix| {
                        ix.candidates("c", &down, group, exprs).to_vec()
                    });
                    let want = crate::candidates::rebuilt(model, "c", &down, group, exprs);
                    assert_eq!(got, want, "round {round} exprs {exprs:?} group {group:?}");
                }
            }
        }
        assert!(m.tasks.len() > 10, "the steps placed tasks");
    }

    fn run(count: u32) -> Request {
        Request::RunTask(RunTask {
            cluster: Some("c".into()),
            task_definition: "f".into(),
            count,
            ..RunTask::default()
        })
    }

    #[test]
    fn run_task_plans_table() {
        // (connected, count, placed, failure reasons)
        let table: Vec<(bool, u32, usize, Vec<&str>)> = vec![
            (true, 1, 1, vec![]),
            // Port 8080 fits once per instance.
            (true, 2, 1, vec!["RESOURCE:PORTS"]),
            (false, 1, 0, vec!["AGENT"]),
        ];
        for (connected, count, placed, reasons) in table {
            let (mut m, mut rng) = world(connected);
            let Outcome::Tasks { ids, failures } =
                step(&mut m, run(count), connected, &mut rng).unwrap()
            else {
                panic!("not tasks");
            };
            assert_eq!(ids.len(), placed, "connected={connected} count={count}");
            let got: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
            assert_eq!(got, reasons, "connected={connected} count={count}");
            for id in &ids {
                let t = &m.tasks[id];
                assert!(t
                    .arn
                    .starts_with("arn:aws:ecs:eu-west-1:000000000000:task/c/"));
                assert_eq!(t.last_status, TaskStatus::Pending);
                assert_eq!(t.group, "family:f");
                assert_eq!((t.cpu, t.memory), (100, 300));
            }
        }
    }

    fn register_td(m: &mut Model, rng: &mut StdRng, def: Value) {
        let reg = taskdef::validate_register(&def).unwrap();
        step(
            m,
            Request::RegisterTaskDef {
                family: reg.family,
                definition: reg.definition,
                tags: vec![],
                region: "eu-west-1".into(),
            },
            true,
            rng,
        )
        .unwrap();
    }

    #[test]
    fn bridge_dynamic_ports_are_chosen_carried_and_released() {
        let (mut m, mut rng) = world(true);
        register_td(
            &mut m,
            &mut rng,
            json!({
                "family": "dyn", "networkMode": "bridge",
                "containerDefinitions": [
                    {"name": "web", "image": "busybox", "memory": 10,
                     "portMappings": [{"containerPort": 80},
                                      {"containerPort": 81, "hostPort": 0},
                                      {"containerPort": 53, "protocol": "udp"},
                                      {"containerPort": 90, "hostPort": 9090}]}]
            }),
        );
        let req = Request::RunTask(RunTask {
            cluster: Some("c".into()),
            task_definition: "dyn".into(),
            count: 1,
            ..RunTask::default()
        });
        let mut seen_tcp: BTreeSet<u16> = BTreeSet::new();
        let mut ids_all = Vec::new();
        let first = *scheduler::DYNAMIC_PORTS.start();
        // (task number, expected ports: (container port, host port, proto))
        let want: Vec<Vec<(u16, u16, &str)>> = vec![
            vec![
                (90, 9090, "tcp"),
                (80, first, "tcp"),
                (81, first + 1, "tcp"),
                (53, first, "udp"),
            ],
            vec![
                (90, 9090, "tcp"),
                (80, first + 2, "tcp"),
                (81, first + 3, "tcp"),
                (53, first + 1, "udp"),
            ],
        ];
        for (n, expect) in want.iter().enumerate() {
            let out = step(&mut m, req.clone(), true, &mut rng).unwrap();
            let Outcome::Tasks { ids, failures } = out else {
                panic!("not tasks");
            };
            if n == 0 {
                assert!(failures.is_empty(), "{failures:?}");
            }
            let t = &m.tasks[&ids[0]];
            let got: Vec<(u16, u16, &str)> = t
                .reserved_ports
                .iter()
                .map(|p| {
                    (
                        p.container_port.unwrap(),
                        p.host_port.unwrap(),
                        p.protocol(),
                    )
                })
                .collect();
            assert_eq!(&got, expect, "task {n}");
            // The container spec the agent receives carries concrete host ports.
            let hp: Vec<Option<u16>> = t.containers[0]
                .spec
                .port_mappings
                .iter()
                .map(|p| p.host_port)
                .collect();
            assert!(hp.iter().all(|h| h.is_some_and(|h| h != 0)), "{hp:?}");
            assert_eq!(t.containers[0].network_bindings.len(), 4);
            for (_, h, proto) in expect {
                if *proto == "tcp" && *h != 9090 {
                    assert!(seen_tcp.insert(*h), "port {h} handed out twice");
                }
            }
            ids_all.push(ids[0].clone());
            // The second run would conflict on the static 9090: free it by
            // stopping the first task, which also frees its dynamic ports.
            if n == 0 {
                let inst = m.instances.values().next().unwrap().clone();
                let u = usage(&m, &inst);
                assert!(u.tcp.contains(&first) && u.tcp.contains(&9090));
                assert!(u.udp.contains(&first));
                let again = step(&mut m, req.clone(), true, &mut rng).unwrap();
                let Outcome::Tasks { ids, failures } = again else {
                    panic!("not tasks");
                };
                assert!(ids.is_empty());
                assert_eq!(failures[0].reason, "RESOURCE:PORTS");
                let mut stopped = (*m.tasks[&ids_all[0]]).clone();
                stopped.last_status = TaskStatus::Stopped;
                m.apply(&Command::PutTasks {
                    tasks: vec![stopped],
                    token: None,
                });
                // Released ports are free again but the lowest-free choice
                // would reuse them; keep the first task's ports busy with a
                // static reservation so the second task shows fresh ones.
                let inst = m.instances.values().next().unwrap().clone();
                assert!(!usage(&m, &inst).tcp.contains(&first));
                let mut busy = (*m.tasks[&ids_all[0]]).clone();
                busy.id = "busy".into();
                busy.last_status = TaskStatus::Running;
                busy.reserved_ports.retain(|p| p.host_port != Some(9090));
                busy.containers.clear();
                m.apply(&Command::PutTasks {
                    tasks: vec![busy],
                    token: None,
                });
            }
        }
    }

    fn awsvpc_world() -> (Model, StdRng) {
        let (mut m, mut rng) = world(true);
        register_td(
            &mut m,
            &mut rng,
            json!({
                "family": "vpc", "networkMode": "awsvpc",
                "containerDefinitions": [
                    {"name": "web", "image": "busybox", "memory": 6, "cpu": 0,
                     "portMappings": [{"containerPort": 80}]}]
            }),
        );
        (m, rng)
    }

    fn run_vpc(count: u32, subnets: Option<Vec<&str>>) -> Request {
        Request::RunTask(RunTask {
            cluster: Some("c".into()),
            task_definition: "vpc".into(),
            count,
            network_configuration: subnets.map(|s| crate::network::AwsvpcConfiguration {
                subnets: s.into_iter().map(String::from).collect(),
                ..Default::default()
            }),
            ..RunTask::default()
        })
    }

    fn ip_of(m: &Model, id: &str) -> Ipv4Addr {
        m.tasks[id]
            .awsvpc
            .as_ref()
            .unwrap()
            .attachment
            .ip
            .parse()
            .unwrap()
    }

    fn stop(m: &mut Model, id: &str) {
        let mut t = (*m.tasks[id]).clone();
        t.last_status = TaskStatus::Stopped;
        t.desired_status = DesiredStatus::Stopped;
        m.apply(&Command::PutTasks {
            tasks: vec![t],
            token: None,
        });
    }

    #[test]
    fn awsvpc_hundred_tasks_distinct_addresses_released_on_stop_and_replayed() {
        let (mut m, mut rng) = awsvpc_world();
        let mut replay = m.clone();
        let mut ids = Vec::new();
        for _ in 0..10 {
            let (out, cmds) = step_with(
                &mut m,
                run_vpc(10, Some(vec!["subnet-a"])),
                true,
                &mut rng,
                &settings(),
            )
            .unwrap();
            let Outcome::Tasks { ids: got, failures } = out else {
                panic!("not tasks");
            };
            assert!(failures.is_empty(), "{failures:?}");
            ids.extend(got);
            for c in &cmds {
                replay.apply(c);
            }
        }
        assert_eq!(ids.len(), 100);
        let ips: BTreeSet<Ipv4Addr> = ids.iter().map(|id| ip_of(&m, id)).collect();
        assert_eq!(ips.len(), 100, "addresses are unique");
        let macs: BTreeSet<String> = ids
            .iter()
            .map(|id| m.tasks[id].awsvpc.as_ref().unwrap().attachment.mac.clone())
            .collect();
        assert_eq!(macs.len(), 100);
        let cidr = settings().awsvpc_cidr;
        assert!(ips
            .iter()
            .all(|ip| cidr.contains(*ip) && *ip != cidr.gateway()));
        // Replaying the logged commands reproduces every allocation.
        assert_eq!(replay, m);

        // Still running: its address stays taken.
        let victim = ids[5].clone();
        let held = ip_of(&m, &victim);
        let Outcome::Tasks { ids: one, .. } =
            step(&mut m, run_vpc(1, Some(vec!["s"])), true, &mut rng).unwrap()
        else {
            panic!("not tasks");
        };
        assert_ne!(ip_of(&m, &one[0]), held);
        // STOPPED: released, and the lowest-free choice hands it out again.
        stop(&mut m, &victim);
        let Outcome::Tasks { ids: two, .. } =
            step(&mut m, run_vpc(1, Some(vec!["s"])), true, &mut rng).unwrap()
        else {
            panic!("not tasks");
        };
        assert_eq!(ip_of(&m, &two[0]), held);
        // The stopped task still shows the address it had.
        assert_eq!(ip_of(&m, &victim), held);
    }

    #[test]
    fn awsvpc_exhaustion_and_configuration_rules() {
        let (mut m, mut rng) = awsvpc_world();
        let tiny = Settings {
            awsvpc_cidr: crate::network::Cidr::parse("10.9.0.0/29").unwrap(),
            ..settings()
        };
        // A /29 holds 5 task addresses (.2 to .6).
        let (out, _) =
            step_with(&mut m, run_vpc(7, Some(vec!["s"])), true, &mut rng, &tiny).unwrap();
        let Outcome::Tasks { ids, failures } = out else {
            panic!("not tasks");
        };
        assert_eq!(ids.len(), 5);
        let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons, vec!["RESOURCE:ENI", "RESOURCE:ENI"]);
        assert!(failures[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("10.9.0.0/29"));

        // (task definition, networkConfiguration given, error message part)
        let table: Vec<(&str, bool, Option<&str>)> = vec![
            (
                "vpc",
                false,
                Some("must be provided when networkMode 'awsvpc'"),
            ),
            ("f", true, Some("not valid for the given networkMode")),
            ("f", false, None),
        ];
        for (family, given, want) in table {
            let req = Request::RunTask(RunTask {
                cluster: Some("c".into()),
                task_definition: family.into(),
                count: 1,
                network_configuration: given.then(|| crate::network::AwsvpcConfiguration {
                    subnets: vec!["s".into()],
                    ..Default::default()
                }),
                ..RunTask::default()
            });
            let got = step(&mut m, req, true, &mut rng);
            match want {
                Some(msg) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.kind, ErrorKind::InvalidParameterException, "{family}");
                    assert!(e.message.contains(msg), "{}", e.message);
                }
                None => assert!(got.is_ok(), "{family}"),
            }
        }
    }

    #[test]
    fn same_seed_same_plan() {
        let (mut a, mut ra) = world(true);
        let (mut b, mut rb) = world(true);
        step(&mut a, run(1), true, &mut ra).unwrap();
        step(&mut b, run(1), true, &mut rb).unwrap();
        assert_eq!(a, b);
    }

    fn report(status: TaskStatus, container: ContainerStatus, exit: Option<i32>) -> TaskReport {
        TaskReport {
            task_arn: String::new(),
            last_status: status,
            stop_code: None,
            stopped_reason: None,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: Some(5.0),
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            containers: vec![ContainerReport {
                name: "a".into(),
                last_status: container,
                runtime_id: Some("rt".into()),
                image_digest: None,
                exit_code: exit,
                reason: None,
                network_bindings: vec![],
                health_status: None,
            }],
        }
    }

    #[test]
    fn merge_report_moves_only_forward() {
        let (mut m, mut rng) = world(true);
        let Outcome::Tasks { ids, .. } = step(&mut m, run(1), true, &mut rng).unwrap() else {
            panic!("not tasks");
        };
        let pending = (*m.tasks[&ids[0]]).clone();
        let running = merge_report(
            &pending,
            &report(TaskStatus::Running, ContainerStatus::Running, None),
            9.0,
        )
        .unwrap();
        assert_eq!(running.last_status, TaskStatus::Running);
        assert_eq!(running.version, pending.version + 1);
        assert_eq!(running.started_at, Some(5.0));
        // Backwards: nothing changes.
        assert_eq!(
            merge_report(
                &running,
                &report(TaskStatus::Pending, ContainerStatus::Pending, None),
                9.0
            ),
            None
        );
        // Same state again: nothing changes.
        assert_eq!(
            merge_report(
                &running,
                &report(TaskStatus::Running, ContainerStatus::Running, None),
                9.0
            ),
            None
        );
        let stopped = merge_report(
            &running,
            &report(TaskStatus::Stopped, ContainerStatus::Stopped, Some(3)),
            9.0,
        )
        .unwrap();
        assert_eq!(stopped.desired_status, DesiredStatus::Stopped);
        assert_eq!(stopped.stopped_at, Some(9.0));
        assert_eq!(stopped.containers[0].exit_code, Some(3));
        // Nothing moves a STOPPED task.
        assert_eq!(
            merge_report(
                &stopped,
                &report(TaskStatus::Running, ContainerStatus::Running, None),
                9.0
            ),
            None
        );
    }

    #[test]
    fn prune_forgets_only_long_stopped_tasks() {
        let (mut m, mut rng) = world(true);
        let with_token = Request::RunTask(RunTask {
            cluster: Some("c".into()),
            task_definition: "f".into(),
            count: 1,
            client_token: Some("tok".into()),
            ..RunTask::default()
        });
        let Outcome::Tasks { ids, .. } = step(&mut m, with_token, true, &mut rng).unwrap() else {
            panic!("not tasks");
        };
        assert_eq!(m.tokens.len(), 1);
        let prune = |m: &mut Model, rng: &mut StdRng, secs: f64| {
            step(
                m,
                Request::Prune {
                    retention_secs: secs,
                },
                true,
                rng,
            )
            .unwrap()
        };
        // Running: never pruned.
        prune(&mut m, &mut rng, -1.0);
        assert!(m.tasks.contains_key(&ids[0]));
        let mut stopped = (*m.tasks[&ids[0]]).clone();
        stopped.last_status = TaskStatus::Stopped;
        stopped.stopped_at = Some(500.0);
        m.apply(&Command::PutTasks {
            tasks: vec![stopped],
            token: None,
        });
        // Stopped at 500, now 1000: kept with a 3600 s retention, pruned with 100 s.
        prune(&mut m, &mut rng, 3600.0);
        assert!(m.tasks.contains_key(&ids[0]));
        prune(&mut m, &mut rng, 100.0);
        assert!(!m.tasks.contains_key(&ids[0]));
        // The token (used at 1000, after the 900 cutoff) outlives its task
        // until it is itself older than the retention.
        assert_eq!(m.tokens.len(), 1);
        prune(&mut m, &mut rng, -1.0);
        assert!(m.tokens.is_empty());
    }

    /// A log whose appends fail once `fail` is set, and which remembers how
    /// many tasks each commit created.
    #[derive(Default)]
    struct FlakyLog {
        fail: Arc<std::sync::atomic::AtomicBool>,
        created: Arc<Mutex<Vec<usize>>>,
        seq: u64,
    }

    impl CommandLog for FlakyLog {
        fn last_seq(&self) -> u64 {
            self.seq
        }
        fn recover(&self) -> Result<crate::store::Recovered, StoreError> {
            Ok(crate::store::Recovered::default())
        }
        fn append(&mut self, bodies: &[Vec<u8>]) -> Result<u64, StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Corrupt("disk on fire".into()));
            }
            let mut n = 0;
            for b in bodies {
                if let Ok(Command::PutTasks { tasks, .. }) = serde_json::from_slice(b) {
                    n += tasks.iter().filter(|t| t.version == 1).count();
                }
            }
            self.created.lock().unwrap().push(n);
            self.seq += bodies.len() as u64;
            Ok(self.seq)
        }
        fn write_snapshot(&mut self, _: u64, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn nothing_is_acknowledged_or_visible_unless_durable() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = FlakyLog {
            fail: fail.clone(),
            ..FlakyLog::default()
        };
        let (state, owner) =
            start_with(Box::new(log), settings(), Duration::from_secs(60), Some(1)).unwrap();
        let create = |name: &str| Request::CreateCluster {
            name: name.into(),
            region: "us-east-1".into(),
            tags: vec![],
            settings: vec![],
        };
        state.submit(create("kept")).await.unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = state.submit(create("lost")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::ServerException);
        let snap = state.snapshot();
        assert!(snap.clusters.contains_key("kept"));
        assert!(!snap.clusters.contains_key("lost"));
        // Once the log works again, the same request succeeds.
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        state.submit(create("lost")).await.unwrap();
        assert!(state.snapshot().clusters.contains_key("lost"));
        state.stop().await;
        drop(state);
        owner.join().unwrap();
    }

    /// Through `state`: cluster "c", task definition "g" (8 MiB), and
    /// `hosts` registered instances of 1000 MiB, their ids returned (none
    /// has beaten yet).
    async fn small_fleet(state: &StateHandle, hosts: usize) -> Vec<String> {
        let submit = |r: Request| state.submit(r);
        submit(Request::CreateCluster {
            name: "c".into(),
            region: "us-east-1".into(),
            tags: vec![],
            settings: vec![],
        })
        .await
        .unwrap();
        let reg = taskdef::validate_register(&json!({
            "family": "g",
            "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 8, "cpu": 1}]
        }))
        .unwrap();
        submit(Request::RegisterTaskDef {
            family: reg.family,
            definition: reg.definition,
            tags: vec![],
            region: "us-east-1".into(),
        })
        .await
        .unwrap();
        let (_, Outcome::Activation { id, code }) = submit(Request::CreateActivation {
            iam_role: "r".into(),
            description: None,
            default_instance_name: None,
            registration_limit: 5,
            expiration: None,
            tags: vec![],
        })
        .await
        .unwrap() else {
            panic!("no activation");
        };
        let mut ids = Vec::new();
        for h in 0..hosts {
            let mut r = register_request(&id, &code);
            r.hostname = format!("h{h}");
            let (_, out) = submit(Request::RegisterInstance(r)).await.unwrap();
            let Outcome::Registered { instance_id, .. } = out else {
                panic!("not registered: {out:?}");
            };
            ids.push(instance_id);
        }
        ids
    }

    fn replica_service(name: &str, desired: u32) -> Request {
        Request::CreateService(Box::new(crate::service::CreateService {
            cluster: Some("c".into()),
            name: name.into(),
            task_definition: "g".into(),
            desired_count: Some(desired),
            launch_type: "EXTERNAL".into(),
            scheduling_strategy: "REPLICA".into(),
            ..Default::default()
        }))
    }

    /// Waits until the published model holds `n` tasks (at most 10 s).
    async fn wait_for_tasks(state: &StateHandle, n: usize) -> usize {
        let mut snaps = state.subscribe();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let have = snaps.borrow_and_update().tasks.len();
                if have >= n || snaps.changed().await.is_err() {
                    return have;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never {n} tasks"))
    }

    /// Ticks that keep queueing the first services again never starve the
    /// later ones: each waits its turn in the order it was first queued.
    #[test]
    fn due_services_are_stepped_in_turn() {
        let mut q = DueQueue::default();
        for k in ["a", "b", "c"] {
            q.push(k.into());
        }
        assert_eq!(q.pop().as_deref(), Some("a"));
        // The next tick finds all three due again; b was stepped meanwhile
        // for another reason and leaves the queue.
        for k in ["a", "b", "c"] {
            q.push(k.into());
        }
        q.remove("b");
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec!["c".to_string(), "a".to_string()]);
        assert!(q.is_empty());
        // Queued again after leaving: stepped once.
        q.push("b".into());
        q.remove("b");
        q.push("b".into());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec!["b".to_string()]);
    }

    /// An owner (no ticker) over a log that counts the tasks each commit
    /// creates.
    fn counting_owner() -> (
        StateHandle,
        std::thread::JoinHandle<()>,
        Arc<Mutex<Vec<usize>>>,
    ) {
        let created = Arc::new(Mutex::new(Vec::new()));
        let log = FlakyLog {
            created: created.clone(),
            ..FlakyLog::default()
        };
        let (state, owner) =
            start_with(Box::new(log), settings(), Duration::from_secs(60), Some(1)).unwrap();
        (state, owner, created)
    }

    #[tokio::test]
    async fn a_large_service_is_placed_over_commits_that_follow_unasked() {
        let (state, owner, created) = counting_owner();
        for id in small_fleet(&state, 5).await {
            state.heartbeats.beat(&id);
        }
        // 5 instances x 1000 MiB / 8 MiB: room for 625 tasks.
        state.submit(replica_service("wide", 600)).await.unwrap();
        // No request follows (and this owner has no ticker): the owner
        // steps the service again by itself until every task is placed.
        assert_eq!(wait_for_tasks(&state, 600).await, 600);
        let per_commit: Vec<usize> = created.lock().unwrap().clone();
        let cap = crate::service::LAUNCHES_PER_STEP as usize;
        assert!(per_commit.iter().all(|n| *n <= cap), "{per_commit:?}");
        assert_eq!(
            per_commit.iter().filter(|n| **n > 0).count(),
            600_usize.div_ceil(cap),
            "{per_commit:?}"
        );
        state.stop().await;
        drop(state);
        owner.join().unwrap();
    }

    /// A tick queues the due services and the owner steps them one per
    /// commit, without waiting for requests: here three services that could
    /// place nothing while their only agent was away place their tasks once
    /// it is back, in three commits, with no request after the tick.
    #[tokio::test]
    async fn a_tick_steps_due_services_one_per_commit_unasked() {
        let (state, owner, created) = counting_owner();
        let ids = small_fleet(&state, 1).await;
        for name in ["a", "b", "c"] {
            state.submit(replica_service(name, 2)).await.unwrap();
        }
        assert_eq!(state.snapshot().tasks.len(), 0);
        let before = created.lock().unwrap().len();
        // The agent comes back: a heartbeat, not a commit.
        state.heartbeats.beat(&ids[0]);
        state.tick().await.unwrap();
        assert_eq!(wait_for_tasks(&state, 6).await, 6);
        let after: Vec<usize> = created.lock().unwrap()[before..].to_vec();
        assert_eq!(
            after,
            vec![2, 2, 2],
            "tasks created per commit after the tick"
        );
        state.stop().await;
        drop(state);
        owner.join().unwrap();
    }

    #[test]
    fn service_step_is_logged_replayed_and_snapshotted_exactly() {
        let (mut m, mut rng) = world(true);
        let start = m.clone();
        let mut log: Vec<Command> = Vec::new();
        let create = Request::CreateService(Box::new(crate::service::CreateService {
            cluster: Some("c".into()),
            name: "web".into(),
            task_definition: "f".into(),
            desired_count: Some(2),
            launch_type: "EXTERNAL".into(),
            scheduling_strategy: "REPLICA".into(),
            propagate_tags: "NONE".into(),
            ..Default::default()
        }));
        let (out, cmds) = step_with(&mut m, create, true, &mut rng, &settings()).unwrap();
        assert_eq!(out, Outcome::Service("c/web".into()));
        log.extend(cmds);
        let cmds = tick(&mut m, &mut rng);
        log.extend(cmds);
        // The static host port 8080 fits once on the only instance.
        let svc = &m.services["c/web"];
        let tasks = m.service_tasks("c/web");
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].group, "service:web");
        assert_eq!(
            tasks[0].started_by.as_deref(),
            Some(svc.deployments[0].id.as_str())
        );
        let msgs: Vec<&str> = svc.events.iter().map(|e| e.message.as_str()).collect();
        assert!(
            msgs[0].starts_with("(service web) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance ")
                && msgs[0].contains("is already using a port required by your task"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("(service web) has started 1 tasks: (task "),
            "{msgs:?}"
        );
        // A second tick changes nothing (no placement possible, same event).
        let cmds = tick(&mut m, &mut rng);
        assert!(
            cmds.iter().all(|c| !matches!(c, Command::PutTasks { .. })),
            "{cmds:?}"
        );
        log.extend(cmds);
        // Replay rebuilds exactly the same model, and so does a snapshot.
        let mut replay = start;
        for c in &log {
            replay.apply(c);
        }
        assert_eq!(replay, m);
        let bytes = serde_json::to_vec(&m).unwrap();
        let mut back: Model = serde_json::from_slice(&bytes).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, m);
        // A snapshot from before services existed still loads.
        let mut old: serde_json::Value = serde_json::to_value(&m).unwrap();
        old.as_object_mut().unwrap().remove("services");
        let back: Model = serde_json::from_value(old).unwrap();
        assert!(back.services.is_empty());
    }

    #[test]
    fn delete_cluster_refuses_while_instances_are_registered() {
        let (mut m, mut rng) = world(true);
        let err = step(
            &mut m,
            Request::DeleteCluster {
                cluster: "c".into(),
            },
            true,
            &mut rng,
        )
        .unwrap_err();
        assert_eq!(
            err.kind,
            ErrorKind::ClusterContainsContainerInstancesException
        );
        assert_eq!(m.clusters["c"].status, "ACTIVE");
    }
}
