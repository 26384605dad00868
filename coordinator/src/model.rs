//! The desired-state model: every entity the coordinator keeps (clusters, task
//! definitions, container instances, tasks, activations, idempotency tokens),
//! the closed set of fully-decided [`Command`]s that change it, and the
//! infallible, deterministic [`Model::apply`].
//!
//! **Architecture Invariant:** `apply` makes no decisions: no clocks, no
//! randomness, no I/O. Every id, timestamp and placement arrives inside the
//! command (decided by `state::plan`), so replaying the log rebuilds exactly
//! the model that was acknowledged.
//!
//! The top-level maps are persistent (`imbl::OrdMap`) and hold `Arc`s, so a
//! working copy or a published snapshot is an O(1) clone, `apply` copies only
//! the paths it changes, and `diff` finds changed entries without walking
//! shared subtrees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_api::{
    Attribute, ContainerSpec, ContainerStatus, DesiredStatus, NetworkBinding, PortMapping,
    Resource, StopCode, TaskStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An instance's underlay (VXLAN endpoint) address attribute, if set.
pub fn underlay_of(i: &Instance) -> Option<&str> {
    i.attributes
        .iter()
        .find(|a| a.name == berth_api::UNDERLAY_IP_ATTRIBUTE)
        .and_then(|a| a.value.as_deref())
}

/// Epoch seconds, fractional, as ECS's JSON carries timestamps.
pub type Timestamp = f64;

/// The model's top-level collections: persistent ordered maps, so cloning
/// the model (a working copy per commit, a published snapshot) costs O(1)
/// and changed entries can be found by `diff` without walking shared parts.
pub type PMap<K, V> = imbl::OrdMap<K, V>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub arn: String,
    /// Region of the request that created it; ARNs of everything in it use it.
    pub region: String,
    /// `ACTIVE` or `INACTIVE` (deleted).
    pub status: String,
    pub tags: Vec<Tag>,
    /// ECS `settings` (e.g. containerInsights), echoed back.
    pub settings: Vec<Value>,
    pub created_at: Timestamp,
    /// Capacity providers associated with the cluster (names, in order).
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    /// Used by RunTask/CreateService when neither a launch type nor a
    /// strategy is given.
    #[serde(default)]
    pub default_capacity_provider_strategy: Vec<crate::capacity::StrategyItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    pub family: String,
    pub revision: u32,
    pub arn: String,
    /// The normalised registration as `taskdef::validate_register` produced it.
    pub definition: Map<String, Value>,
    /// `ACTIVE`, `INACTIVE`.
    pub status: String,
    pub registered_at: Timestamp,
    pub deregistered_at: Option<Timestamp>,
    pub registered_by: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Family {
    /// Highest revision ever registered (revisions are never reused).
    pub last_revision: u32,
    pub revisions: BTreeMap<u32, Arc<TaskDef>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// 32 hex characters; the last ARN segment.
    pub id: String,
    pub arn: String,
    pub cluster: String,
    /// ECS Anywhere managed instance id (`mi-` + 17 hex).
    pub ec2_instance_id: String,
    /// Hex SHA-256 of the per-instance secret.
    pub secret_hash: String,
    /// `ACTIVE`, `DRAINING`, `INACTIVE`.
    pub status: String,
    pub registered_resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub registered_at: Timestamp,
    pub agent_version: String,
    pub hostname: String,
    pub activation_id: String,
    pub tags: Vec<Tag>,
    /// ECS `version`: bumps whenever the instance's view changes.
    pub version: u64,
    /// Version of this instance's desired state (what the agent long-polls).
    pub desired_version: u64,
    /// Highest state-report sequence number applied.
    pub last_seq: u64,
}

/// Equality is total: the only floats are clock readings (never NaN). Being
/// `Eq` lets `Arc<Instance>` compare by pointer first, so diffing two
/// versions of the persistent instance map costs what changed.
impl Eq for Instance {}

impl Instance {
    pub fn resource_int(&self, name: &str) -> i64 {
        self.registered_resources
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.integer_value)
            .unwrap_or(0)
    }
    pub fn resource_ports(&self, name: &str) -> BTreeSet<u16> {
        self.registered_resources
            .iter()
            .filter(|r| r.name == name)
            .flat_map(|r| r.string_set_value.iter())
            .filter_map(|p| p.parse::<u16>().ok())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskContainer {
    pub spec: ContainerSpec,
    pub arn: String,
    pub last_status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub runtime_id: Option<String>,
    pub image_digest: Option<String>,
    pub network_bindings: Vec<NetworkBinding>,
    /// Last health the agent reported (containers with a health check only).
    #[serde(default)]
    pub health_status: Option<berth_api::HealthStatus>,
}

impl TaskContainer {
    /// ECS container `healthStatus`: UNKNOWN until the agent reports one.
    pub fn health(&self) -> berth_api::HealthStatus {
        self.health_status.unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// 32 hex characters; the last ARN segment.
    pub id: String,
    pub arn: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub family: String,
    pub revision: u32,
    pub instance_id: String,
    pub instance_arn: String,
    pub containers: Vec<TaskContainer>,
    pub overrides: Value,
    pub cpu: u32,
    pub memory: u32,
    pub network_mode: String,
    /// Static host ports reserved for this task.
    pub reserved_ports: Vec<PortMapping>,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub stop_code: Option<StopCode>,
    pub stopped_reason: Option<String>,
    pub created_at: Timestamp,
    pub pull_started_at: Option<Timestamp>,
    pub pull_stopped_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub stopping_at: Option<Timestamp>,
    pub execution_stopped_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    pub started_by: Option<String>,
    pub group: String,
    pub launch_type: String,
    pub version: u64,
    pub tags: Vec<Tag>,
    /// The instance's `ecs.availability-zone` attribute at placement.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// awsvpc mode: the task's interface (address allocated at placement,
    /// released when the task is STOPPED).
    #[serde(default)]
    pub awsvpc: Option<crate::network::TaskEni>,
    /// A service task's STOPPED state was accounted by the service scheduler
    /// (failure counters), so it is counted exactly once.
    #[serde(default)]
    pub service_accounted: bool,
    /// The capacity provider the task was placed through, if any.
    #[serde(default)]
    pub capacity_provider_name: Option<String>,
}

impl Task {
    /// Whether the task still holds resources on its instance.
    pub fn is_active(&self) -> bool {
        self.last_status != TaskStatus::Stopped
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub id: String,
    /// Hex SHA-256 of the activation code (the code itself is never stored).
    pub code_hash: String,
    pub description: Option<String>,
    pub default_instance_name: Option<String>,
    pub iam_role: String,
    pub registration_limit: u32,
    pub registrations_count: u32,
    pub expiration: Timestamp,
    pub created: Timestamp,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub arn: Option<String>,
    pub reason: String,
    pub detail: Option<String>,
}

/// What a RunTask with a clientToken produced, returned again on a retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResult {
    pub task_ids: Vec<String>,
    pub failures: Vec<Failure>,
    /// When the token was first used (tokens are forgotten with their tasks).
    #[serde(default)]
    pub created_at: Timestamp,
}

/// ECS `deploymentCircuitBreaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// ECS `deploymentConfiguration` (the rolling-update parts Berth honours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentConfig {
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    pub circuit_breaker: CircuitBreaker,
}

/// One deployment of a service (ECS `Deployment`). Task counts are derived
/// from the tasks whose `startedBy` is the deployment id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `ecs-svc/` + 19 digits.
    pub id: String,
    /// `PRIMARY` or `ACTIVE` (INACTIVE deployments are dropped).
    pub status: String,
    pub task_definition: String,
    pub desired_count: u32,
    /// Tasks of this deployment that stopped before becoming healthy.
    pub failed_tasks: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED`.
    pub rollout_state: String,
    pub rollout_state_reason: String,
    /// The service's `networkConfiguration` when the deployment began.
    pub network_configuration: Option<Value>,
    /// The service's `capacityProviderStrategy` when the deployment began
    /// (empty: placed by launch type).
    #[serde(default)]
    pub capacity_provider_strategy: Vec<crate::capacity::StrategyItem>,
}

/// ECS `ServiceEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: Timestamp,
    pub message: String,
}

/// An ECS service: keeps `desired_count` tasks (REPLICA) or one per eligible
/// instance (DAEMON) of its PRIMARY deployment running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub arn: String,
    pub cluster: String,
    /// `ACTIVE`, `DRAINING` (deleted, tasks stopping), `INACTIVE`.
    pub status: String,
    pub desired_count: u32,
    pub launch_type: String,
    /// `REPLICA` or `DAEMON`.
    pub scheduling_strategy: String,
    /// The PRIMARY deployment's task definition ARN.
    pub task_definition: String,
    pub deployment_configuration: DeploymentConfig,
    /// As given (rendered back verbatim).
    pub placement_constraints: Vec<Value>,
    pub placement_strategy: Vec<Value>,
    pub network_configuration: Option<Value>,
    pub tags: Vec<Tag>,
    /// `NONE`, `SERVICE`, `TASK_DEFINITION`.
    pub propagate_tags: String,
    pub enable_ecs_managed_tags: bool,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Newest first, at most [`MAX_SERVICE_EVENTS`].
    pub events: Vec<ServiceEvent>,
    /// PRIMARY first.
    pub deployments: Vec<Deployment>,
    /// The task definition of the last deployment that COMPLETED (rollback target).
    pub last_completed_task_definition: Option<String>,
    /// Consecutive tasks that failed to start (throttling).
    pub launch_failures: u32,
    /// No task is started before this time (throttling).
    pub next_launch_at: Timestamp,
    /// `capacityProviderStrategy` (empty when the service uses a launch type).
    #[serde(default)]
    pub capacity_provider_strategy: Vec<crate::capacity::StrategyItem>,
}

/// ECS keeps the last 100 events of a service.
pub const MAX_SERVICE_EVENTS: usize = 100;

impl Service {
    /// The model key of a service: `cluster/name`.
    pub fn key(&self) -> String {
        service_key(&self.cluster, &self.name)
    }
    /// The task group of the service's tasks.
    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }
}

pub fn service_key(cluster: &str, name: &str) -> String {
    format!("{cluster}/{name}")
}

/// A resource that carries tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagTarget {
    Cluster(String),
    TaskDef(String, u32),
    Task(String),
    Instance(String),
    /// A service by its key (`cluster/name`).
    Service(String),
    /// A capacity provider by name.
    CapacityProvider(String),
}

/// A fully-decided change. Stored in the log; replayed by `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a cluster or reactivate an INACTIVE one.
    PutCluster(Cluster),
    DeleteCluster {
        name: String,
    },
    RegisterTaskDef(TaskDef),
    DeregisterTaskDef {
        family: String,
        revision: u32,
        at: Timestamp,
    },
    /// New tasks or new full states of existing tasks, plus an optional
    /// idempotency record (`cluster\ntoken` → result).
    PutTasks {
        tasks: Vec<Task>,
        token: Option<(String, TokenResult)>,
    },
    /// An agent's state report: its sequence number and the resulting tasks.
    Report {
        instance: String,
        seq: u64,
        tasks: Vec<Task>,
    },
    RegisterInstance {
        instance: Instance,
    },
    /// Instance becomes INACTIVE; `tasks` are its tasks' final states.
    DeregisterInstance {
        id: String,
        tasks: Vec<Task>,
    },
    /// UpdateContainerInstancesState: `ACTIVE` or `DRAINING`.
    SetInstanceStatus {
        ids: Vec<String>,
        status: String,
    },
    /// Forget tasks that stopped long ago (ECS shows stopped tasks for about
    /// an hour).
    PruneTasks {
        ids: Vec<String>,
        /// Idempotency tokens to forget with them.
        #[serde(default)]
        tokens: Vec<String>,
    },
    /// PutAttributes/DeleteAttributes: an instance's full new attribute list.
    SetAttributes {
        instance: String,
        attributes: Vec<Attribute>,
    },
    /// DeleteTaskDefinitions: INACTIVE revisions become `DELETE_IN_PROGRESS`.
    SetTaskDefStatus {
        family: String,
        revision: u32,
        status: String,
    },
    PutActivation(Activation),
    DeleteActivation {
        id: String,
    },
    SetTags {
        target: TagTarget,
        tags: Vec<Tag>,
    },
    /// Create a service or replace its full state (the service scheduler's
    /// decisions, UpdateService, DeleteService).
    PutService(Service),
    /// Create, update or delete (status INACTIVE) a capacity provider.
    PutCapacityProvider(crate::capacity::CapacityProvider),
    /// Create or replace a scheduled rule's full state (PutRule, targets,
    /// enable/disable).
    PutRule(crate::rules::Rule),
    DeleteRule {
        name: String,
    },
    /// A rule fired for `slot` (epoch seconds): every slot up to it is
    /// consumed. Logged in the same commit as the tasks it started.
    RuleFired {
        name: String,
        slot: i64,
        at: Timestamp,
        invocations: u32,
        failed: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub clusters: PMap<String, Arc<Cluster>>,
    pub families: PMap<String, Arc<Family>>,
    pub instances: PMap<String, Arc<Instance>>,
    /// `mi-...` → instance id.
    pub instance_by_ec2_id: PMap<String, String>,
    pub tasks: PMap<String, Arc<Task>>,
    /// Derived index (rebuilt on load): instance id → its active tasks and
    /// their summed load, kept current by `put_task` so placement reads an
    /// instance's usage without walking its tasks.
    #[serde(skip)]
    pub active_by_instance: PMap<String, Arc<ActiveOn>>,
    pub tokens: PMap<String, TokenResult>,
    pub activations: PMap<String, Arc<Activation>>,
    /// Cluster name → awsvpc membership epoch: bumped whenever an awsvpc
    /// task becomes active or stops, or an instance with an underlay address
    /// joins or leaves, or its underlay address changes. Fleets without
    /// awsvpc never bump it. Part of every member's poll
    /// version, so a membership change wakes every agent of the cluster.
    #[serde(default)]
    pub awsvpc_epochs: PMap<String, u64>,
    /// Services by `cluster/name`.
    #[serde(default)]
    pub services: PMap<String, Arc<Service>>,
    /// Derived index (rebuilt on load): service key → the tasks of its
    /// group (`service:NAME`), active or STOPPED, by id. Persistent, so a
    /// commit adding one task to a large service copies a path, not the set.
    #[serde(skip)]
    pub tasks_by_service: PMap<String, PMap<String, Arc<Task>>>,
    /// Capacity providers by name (ACTIVE and INACTIVE).
    #[serde(default)]
    pub capacity_providers: BTreeMap<String, Arc<crate::capacity::CapacityProvider>>,
    /// Scheduled rules (EventBridge) by name.
    #[serde(default)]
    pub rules: PMap<String, Arc<crate::rules::Rule>>,
}

/// The active tasks of one instance and what they hold, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveOn {
    pub tasks: BTreeMap<String, Arc<Task>>,
    pub cpu: i64,
    pub memory: i64,
    /// Tasks whose last status is RUNNING / before RUNNING.
    pub running: u32,
    pub pending: u32,
    /// Host ports held (reserved or bound), `(udp, port)` → holders.
    pub ports: BTreeMap<(bool, u16), u32>,
    /// Task group → active tasks of that group here.
    pub groups: BTreeMap<String, u32>,
}

/// As for [`Instance`]: `Eq` so `Arc<ActiveOn>` compares by pointer first.
impl Eq for ActiveOn {}

impl ActiveOn {
    /// Host ports a task holds: reserved ones and its containers' bindings.
    fn ports_of(t: &Task) -> impl Iterator<Item = (bool, u16)> + '_ {
        let reserved = t.reserved_ports.iter().filter_map(|p| {
            p.host_port
                .filter(|hp| *hp != 0)
                .map(|hp| (p.protocol() == "udp", hp))
        });
        let bound = t
            .containers
            .iter()
            .flat_map(|c| c.network_bindings.iter())
            .map(|b| (b.protocol == "udp", b.host_port));
        reserved.chain(bound)
    }

    fn add(&mut self, t: &Arc<Task>) {
        self.cpu += i64::from(t.cpu);
        self.memory += i64::from(t.memory);
        if t.last_status == TaskStatus::Running {
            self.running += 1;
        } else if t.last_status < TaskStatus::Running {
            self.pending += 1;
        }
        for k in Self::ports_of(t) {
            *self.ports.entry(k).or_default() += 1;
        }
        *self.groups.entry(t.group.clone()).or_default() += 1;
        self.tasks.insert(t.id.clone(), t.clone());
    }

    fn remove(&mut self, id: &str) {
        let Some(t) = self.tasks.remove(id) else {
            return;
        };
        self.cpu -= i64::from(t.cpu);
        self.memory -= i64::from(t.memory);
        if t.last_status == TaskStatus::Running {
            self.running = self.running.saturating_sub(1);
        } else if t.last_status < TaskStatus::Running {
            self.pending = self.pending.saturating_sub(1);
        }
        for k in Self::ports_of(&t) {
            if let Some(n) = self.ports.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(&k);
                }
            }
        }
        if let Some(n) = self.groups.get_mut(&t.group) {
            *n -= 1;
            if *n == 0 {
                self.groups.remove(&t.group);
            }
        }
    }
}

/// The service key a task belongs to, from its group `service:NAME`.
pub fn task_service_key(t: &Task) -> Option<String> {
    t.group
        .strip_prefix("service:")
        .map(|name| service_key(&t.cluster, name))
}

impl Model {
    /// Rebuilds derived indexes after deserialising a snapshot.
    pub fn rebuild_indexes(&mut self) {
        let mut idx: BTreeMap<String, ActiveOn> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.is_active()) {
            idx.entry(t.instance_id.clone()).or_default().add(t);
        }
        self.active_by_instance = idx.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let mut by_service: PMap<String, PMap<String, Arc<Task>>> = PMap::new();
        for t in self.tasks.values() {
            if let Some(k) = task_service_key(t) {
                by_service
                    .entry(k)
                    .or_default()
                    .insert(t.id.clone(), t.clone());
            }
        }
        self.tasks_by_service = by_service;
    }

    /// Tasks (active and STOPPED) of the service `key`, by id.
    pub fn service_tasks(&self, key: &str) -> Vec<Arc<Task>> {
        self.tasks_by_service
            .get(key)
            .into_iter()
            .flat_map(|tasks| tasks.values())
            .cloned()
            .collect()
    }

    pub fn task_def(&self, family: &str, revision: u32) -> Option<&Arc<TaskDef>> {
        self.families.get(family)?.revisions.get(&revision)
    }

    /// The version an agent's long-poll compares: the instance's desired
    /// version plus its cluster's awsvpc epoch (both only grow).
    pub fn poll_version(&self, inst: &Instance) -> u64 {
        inst.desired_version + self.awsvpc_epochs.get(&inst.cluster).copied().unwrap_or(0)
    }

    fn bump_awsvpc_epoch(&mut self, cluster: &str) {
        *self.awsvpc_epochs.entry(cluster.to_string()).or_default() += 1;
    }

    /// Active (not STOPPED) tasks on an instance.
    pub fn active_tasks_on<'a>(&'a self, instance: &str) -> impl Iterator<Item = &'a Arc<Task>> {
        self.active_by_instance
            .get(instance)
            .into_iter()
            .flat_map(|a| a.tasks.values())
    }

    /// The active tasks of an instance with their summed load.
    pub fn active_on(&self, instance: &str) -> Option<&ActiveOn> {
        self.active_by_instance.get(instance).map(|a| a.as_ref())
    }

    /// Applies a decided command. Infallible: references to entities that do
    /// not exist are skipped (they cannot occur for commands `plan` produced).
    pub fn apply(&mut self, cmd: &Command) {
        match cmd {
            Command::PutCluster(c) => {
                self.clusters.insert(c.name.clone(), Arc::new(c.clone()));
            }
            Command::DeleteCluster { name } => {
                if let Some(c) = self.clusters.get_mut(name) {
                    Arc::make_mut(c).status = "INACTIVE".to_string();
                }
            }
            Command::RegisterTaskDef(td) => {
                let fam = Arc::make_mut(self.families.entry(td.family.clone()).or_default());
                fam.last_revision = fam.last_revision.max(td.revision);
                fam.revisions.insert(td.revision, Arc::new(td.clone()));
            }
            Command::DeregisterTaskDef {
                family,
                revision,
                at,
            } => {
                if let Some(fam) = self.families.get_mut(family) {
                    if let Some(td) = Arc::make_mut(fam).revisions.get_mut(revision) {
                        let td = Arc::make_mut(td);
                        td.status = "INACTIVE".to_string();
                        td.deregistered_at = Some(*at);
                    }
                }
            }
            Command::PutTasks { tasks, token } => {
                for t in tasks {
                    self.put_task(t);
                }
                if let Some((key, result)) = token {
                    self.tokens.insert(key.clone(), result.clone());
                }
            }
            Command::Report {
                instance,
                seq,
                tasks,
            } => {
                for t in tasks {
                    self.put_task(t);
                }
                if let Some(i) = self.instances.get_mut(instance) {
                    let i = Arc::make_mut(i);
                    i.last_seq = i.last_seq.max(*seq);
                }
            }
            Command::RegisterInstance { instance } => {
                if let Some(a) = self.activations.get_mut(&instance.activation_id) {
                    Arc::make_mut(a).registrations_count += 1;
                }
                self.instance_by_ec2_id
                    .insert(instance.ec2_instance_id.clone(), instance.id.clone());
                self.instances
                    .insert(instance.id.clone(), Arc::new(instance.clone()));
                if underlay_of(instance).is_some() {
                    self.bump_awsvpc_epoch(&instance.cluster);
                }
            }
            Command::DeregisterInstance { id, tasks } => {
                for t in tasks {
                    self.put_task(t);
                }
                if let Some(i) = self.instances.get_mut(id) {
                    let i = Arc::make_mut(i);
                    i.status = "INACTIVE".to_string();
                    i.version += 1;
                    i.desired_version += 1;
                    let (cluster, member) = (i.cluster.clone(), underlay_of(i).is_some());
                    if member {
                        self.bump_awsvpc_epoch(&cluster);
                    }
                }
            }
            Command::SetInstanceStatus { ids, status } => {
                for id in ids {
                    if let Some(i) = self.instances.get_mut(id) {
                        let i = Arc::make_mut(i);
                        if i.status != *status {
                            i.status = status.clone();
                            i.version += 1;
                        }
                    }
                }
            }
            Command::PruneTasks { ids, tokens } => {
                for id in ids {
                    // Only STOPPED tasks are pruned, and they are in no index.
                    if self.tasks.get(id).is_some_and(|t| !t.is_active()) {
                        if let Some(t) = self.tasks.remove(id) {
                            if let Some(k) = task_service_key(&t) {
                                if let Some(set) = self.tasks_by_service.get_mut(&k) {
                                    set.remove(id);
                                    if set.is_empty() {
                                        self.tasks_by_service.remove(&k);
                                    }
                                }
                            }
                        }
                    }
                }
                for t in tokens {
                    self.tokens.remove(t);
                }
            }
            Command::SetAttributes {
                instance,
                attributes,
            } => {
                if let Some(i) = self.instances.get_mut(instance) {
                    let i = Arc::make_mut(i);
                    let before = underlay_of(i).map(str::to_string);
                    i.attributes = attributes.clone();
                    i.version += 1;
                    if underlay_of(i) != before.as_deref() {
                        let cluster = i.cluster.clone();
                        self.bump_awsvpc_epoch(&cluster);
                    }
                }
            }
            Command::SetTaskDefStatus {
                family,
                revision,
                status,
            } => {
                if let Some(fam) = self.families.get_mut(family) {
                    if let Some(td) = Arc::make_mut(fam).revisions.get_mut(revision) {
                        Arc::make_mut(td).status = status.clone();
                    }
                }
            }
            Command::PutActivation(a) => {
                self.activations.insert(a.id.clone(), Arc::new(a.clone()));
            }
            Command::DeleteActivation { id } => {
                self.activations.remove(id);
            }
            Command::SetTags { target, tags } => match target {
                TagTarget::Cluster(name) => {
                    if let Some(c) = self.clusters.get_mut(name) {
                        Arc::make_mut(c).tags = tags.clone();
                    }
                }
                TagTarget::TaskDef(family, rev) => {
                    if let Some(fam) = self.families.get_mut(family) {
                        if let Some(td) = Arc::make_mut(fam).revisions.get_mut(rev) {
                            Arc::make_mut(td).tags = tags.clone();
                        }
                    }
                }
                TagTarget::Task(id) => {
                    if let Some(t) = self.tasks.get_mut(id) {
                        let t = Arc::make_mut(t);
                        t.tags = tags.clone();
                        // The active index holds the same task: keep it current.
                        let (instance, updated) =
                            (t.instance_id.clone(), self.tasks.get(id).cloned());
                        if let (Some(set), Some(u)) =
                            (self.active_by_instance.get_mut(&instance), updated)
                        {
                            if set.tasks.contains_key(id) {
                                Arc::make_mut(set).tasks.insert(id.clone(), u);
                            }
                        }
                    }
                }
                TagTarget::Instance(id) => {
                    if let Some(i) = self.instances.get_mut(id) {
                        Arc::make_mut(i).tags = tags.clone();
                    }
                }
                TagTarget::Service(key) => {
                    if let Some(s) = self.services.get_mut(key) {
                        Arc::make_mut(s).tags = tags.clone();
                    }
                }
                TagTarget::CapacityProvider(name) => {
                    if let Some(p) = self.capacity_providers.get_mut(name) {
                        Arc::make_mut(p).tags = tags.clone();
                    }
                }
            },
            Command::PutService(s) => {
                self.services.insert(s.key(), Arc::new(s.clone()));
            }
            Command::PutCapacityProvider(p) => {
                self.capacity_providers
                    .insert(p.name.clone(), Arc::new(p.clone()));
            }
            Command::PutRule(r) => {
                self.rules.insert(r.name.clone(), Arc::new(r.clone()));
            }
            Command::DeleteRule { name } => {
                self.rules.remove(name);
            }
            Command::RuleFired {
                name,
                slot,
                at,
                invocations,
                failed,
            } => {
                if let Some(r) = self.rules.get_mut(name) {
                    let r = Arc::make_mut(r);
                    r.last_slot = Some(r.last_slot.map_or(*slot, |l| l.max(*slot)));
                    r.last_fired_at = Some(*at);
                    r.invocations += u64::from(*invocations);
                    r.failed_invocations += u64::from(*failed);
                }
            }
        }
    }

    /// Stores a task's new state, keeps the active index, and bumps the
    /// instance's desired-state version when what the agent must do changed.
    fn put_task(&mut self, t: &Task) {
        let old = self.tasks.get(&t.id).cloned();
        let agent_visible_change = match &old {
            None => true,
            Some(o) => {
                o.desired_status != t.desired_status
                    || o.stop_code != t.stop_code
                    || o.stopped_reason != t.stopped_reason
                    || o.is_active() != t.is_active()
            }
        };
        let resources_changed = match &old {
            None => true,
            Some(o) => o.is_active() != t.is_active(),
        };
        if t.awsvpc.is_some() && resources_changed {
            self.bump_awsvpc_epoch(&t.cluster);
        }
        if let Some(o) = old.as_ref().filter(|o| o.is_active()) {
            if let Some(set) = self.active_by_instance.get_mut(&o.instance_id) {
                Arc::make_mut(set).remove(&o.id);
                if set.tasks.is_empty() {
                    self.active_by_instance.remove(&o.instance_id);
                }
            }
        }
        let stored = Arc::new(t.clone());
        if t.is_active() {
            let set = self
                .active_by_instance
                .entry(t.instance_id.clone())
                .or_default();
            Arc::make_mut(set).add(&stored);
        }
        if let Some(k) = task_service_key(t) {
            self.tasks_by_service
                .entry(k)
                .or_default()
                .insert(t.id.clone(), stored.clone());
        }
        self.tasks.insert(t.id.clone(), stored);
        if let Some(i) = self.instances.get_mut(&t.instance_id) {
            if agent_visible_change || resources_changed {
                let i = Arc::make_mut(i);
                if agent_visible_change {
                    i.desired_version += 1;
                }
                if resources_changed {
                    i.version += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            arn: format!("arn:aws:ecs:us-east-1:0:container-instance/c/{id}"),
            cluster: "c".into(),
            ec2_instance_id: format!("mi-{id}"),
            secret_hash: String::new(),
            status: "ACTIVE".into(),
            registered_resources: vec![],
            attributes: vec![],
            registered_at: 1.0,
            agent_version: "1".into(),
            hostname: "h".into(),
            activation_id: "a".into(),
            tags: vec![],
            version: 1,
            desired_version: 0,
            last_seq: 0,
        }
    }

    fn task(id: &str, inst: &str) -> Task {
        Task {
            id: id.into(),
            arn: format!("arn:aws:ecs:us-east-1:0:task/c/{id}"),
            cluster: "c".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            task_definition_arn: "arn:aws:ecs:us-east-1:0:task-definition/f:1".into(),
            family: "f".into(),
            revision: 1,
            instance_id: inst.into(),
            instance_arn: String::new(),
            containers: vec![],
            overrides: Value::Null,
            cpu: 10,
            memory: 10,
            network_mode: "bridge".into(),
            reserved_ports: vec![],
            last_status: TaskStatus::Pending,
            desired_status: DesiredStatus::Running,
            stop_code: None,
            stopped_reason: None,
            created_at: 1.0,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            started_by: None,
            group: "family:f".into(),
            launch_type: "EXTERNAL".into(),
            version: 1,
            tags: vec![],
            availability_zone: None,
            awsvpc: None,
            service_accounted: false,
            capacity_provider_name: None,
        }
    }

    #[test]
    fn put_task_tracks_active_index_and_desired_version() {
        let mut m = Model::default();
        m.apply(&Command::RegisterInstance {
            instance: instance("i1"),
        });
        let t = task("t1", "i1");
        m.apply(&Command::PutTasks {
            tasks: vec![t.clone()],
            token: None,
        });
        assert_eq!(m.active_tasks_on("i1").count(), 1);
        assert_eq!(m.instances["i1"].desired_version, 1);

        // A report that only changes lastStatus to RUNNING is not agent-visible.
        let mut running = t.clone();
        running.last_status = TaskStatus::Running;
        m.apply(&Command::Report {
            instance: "i1".into(),
            seq: 3,
            tasks: vec![running.clone()],
        });
        assert_eq!(m.instances["i1"].desired_version, 1);
        assert_eq!(m.instances["i1"].last_seq, 3);

        let mut stopped = running;
        stopped.last_status = TaskStatus::Stopped;
        stopped.desired_status = DesiredStatus::Stopped;
        m.apply(&Command::PutTasks {
            tasks: vec![stopped],
            token: None,
        });
        assert_eq!(m.active_tasks_on("i1").count(), 0);
        assert_eq!(m.instances["i1"].desired_version, 2);
    }

    /// The incrementally kept per-instance load equals one rebuilt from
    /// scratch after every step: placement, RUNNING with port bindings, a
    /// second group, tagging, STOPPED.
    #[test]
    fn active_load_index_matches_a_rebuild_after_every_change() {
        let mut m = Model::default();
        for i in ["i1", "i2"] {
            m.apply(&Command::RegisterInstance {
                instance: instance(i),
            });
        }
        let check = |m: &Model, step: &str| {
            let mut rebuilt = m.clone();
            rebuilt.rebuild_indexes();
            assert_eq!(rebuilt.active_by_instance, m.active_by_instance, "{step}");
        };
        let mut a = task("t1", "i1");
        a.reserved_ports = vec![berth_api::PortMapping {
            container_port: Some(80),
            host_port: Some(8080),
            protocol: None,
        }];
        let mut b = task("t2", "i1");
        b.group = "service:web".into();
        b.memory = 300;
        let c = task("t3", "i2");
        m.apply(&Command::PutTasks {
            tasks: vec![a.clone(), b.clone(), c],
            token: None,
        });
        check(&m, "placed");
        let on1 = m.active_on("i1").unwrap();
        assert_eq!(
            (on1.cpu, on1.memory, on1.pending, on1.running),
            (20, 310, 2, 0)
        );
        assert_eq!(on1.ports.get(&(false, 8080)), Some(&1));
        assert_eq!(on1.groups.get("service:web"), Some(&1));

        let mut running = b.clone();
        running.last_status = TaskStatus::Running;
        running.containers = vec![TaskContainer {
            spec: ContainerSpec::default(),
            arn: "c".into(),
            last_status: ContainerStatus::Running,
            exit_code: None,
            reason: None,
            runtime_id: None,
            image_digest: None,
            network_bindings: vec![NetworkBinding {
                bind_ip: "0.0.0.0".into(),
                container_port: 53,
                host_port: 5353,
                protocol: "udp".into(),
            }],
            health_status: None,
        }];
        m.apply(&Command::Report {
            instance: "i1".into(),
            seq: 1,
            tasks: vec![running.clone()],
        });
        check(&m, "running");
        let on1 = m.active_on("i1").unwrap();
        assert_eq!((on1.pending, on1.running), (1, 1));
        assert_eq!(on1.ports.get(&(true, 5353)), Some(&1));

        m.apply(&Command::SetTags {
            target: TagTarget::Task("t2".into()),
            tags: vec![Tag {
                key: "k".into(),
                value: "v".into(),
            }],
        });
        check(&m, "tagged");
        assert_eq!(
            m.active_tasks_on("i1")
                .find(|t| t.id == "t2")
                .unwrap()
                .tags
                .len(),
            1
        );

        let mut stopped = running;
        stopped.last_status = TaskStatus::Stopped;
        stopped.desired_status = DesiredStatus::Stopped;
        m.apply(&Command::PutTasks {
            tasks: vec![stopped],
            token: None,
        });
        check(&m, "stopped");
        let on1 = m.active_on("i1").unwrap();
        assert_eq!((on1.cpu, on1.memory, on1.running), (10, 10, 0));
        assert!(!on1.ports.contains_key(&(true, 5353)));
        assert!(!on1.groups.contains_key("service:web"));

        let mut gone = a;
        gone.last_status = TaskStatus::Stopped;
        m.apply(&Command::PutTasks {
            tasks: vec![gone],
            token: None,
        });
        check(&m, "instance emptied");
        assert!(m.active_on("i1").is_none());
    }

    #[test]
    fn millisecond_timestamps_survive_the_log_exactly() {
        for i in 0..20_000u64 {
            let ts = (1_700_000_000_000u64 + i * 7_919) as f64 / 1000.0;
            let text = serde_json::to_string(&ts).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), ts.to_bits(), "{text}");
        }
    }

    #[test]
    fn snapshot_round_trip_rebuilds_indexes() {
        let mut m = Model::default();
        m.apply(&Command::RegisterInstance {
            instance: instance("i1"),
        });
        m.apply(&Command::PutTasks {
            tasks: vec![task("t1", "i1"), task("t2", "i1")],
            token: Some((
                "c\ntok".into(),
                TokenResult {
                    task_ids: vec!["t1".into(), "t2".into()],
                    failures: vec![],
                    created_at: 1.0,
                },
            )),
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let mut back: Model = serde_json::from_slice(&bytes).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, m);
    }
}
