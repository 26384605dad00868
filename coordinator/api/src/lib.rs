//! Wire types shared by the coordinator and the agent: the agent channel
//! (registration, long-poll for desired state, state reports) and the task
//! shapes it carries. Plain serde types, no logic beyond small guards.
//!
//! The channel is HTTP/JSON on the coordinator's listener:
//! - `POST /agent/v1/register` — [`RegisterRequest`] → [`RegisterResponse`]
//!   (no auth header: the activation id + code are the credential).
//! - `POST /agent/v1/poll` — [`PollRequest`] → [`PollResponse`]; the coordinator
//!   answers at once when the instance's desired-state version is newer than
//!   `known_version`, else holds the request up to `wait_ms` and answers with
//!   the same version and `changed: false`. Each poll is a heartbeat.
//! - `POST /agent/v1/report` — [`StateReport`] → [`ReportAck`]; reports are
//!   idempotent by `seq` (per instance, strictly increasing), applied at most once.
//!
//! Poll and report carry the header [`INSTANCE_AUTH_HEADER`] with the value
//! `<instance id>:<secret>` issued at registration.

use serde::{Deserialize, Serialize};

/// Header carrying per-instance credentials on poll and report.
pub const INSTANCE_AUTH_HEADER: &str = "x-berth-instance-auth";
pub const REGISTER_PATH: &str = "/agent/v1/register";
pub const POLL_PATH: &str = "/agent/v1/poll";
pub const REPORT_PATH: &str = "/agent/v1/report";

/// Error body the channel answers with on 4xx/5xx: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelError {
    pub code: String,
    pub message: String,
}

/// ECS resource as reported by an instance (`registeredResources` shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `CPU`, `MEMORY`, `PORTS`, `PORTS_UDP`.
    pub name: String,
    /// `INTEGER` or `STRINGSET`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub integer_value: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub string_set_value: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub activation_id: String,
    pub activation_code: String,
    /// Cluster name or ARN; `default` when the operator gave none.
    pub cluster: String,
    pub hostname: String,
    pub resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub agent_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub container_instance_arn: String,
    pub cluster_arn: String,
    /// ECS Anywhere managed-instance id (`mi-...`), the `ec2InstanceId` of the instance.
    pub instance_id: String,
    /// Per-instance secret; the agent stores it 0600 and sends `instance_id:secret`.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    /// Version of desired state the agent already holds (0 = none).
    pub known_version: u64,
    /// How long the coordinator may hold the request (it caps this, ~20 s).
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub version: u64,
    pub changed: bool,
    /// Full desired state of this instance when `changed` (empty otherwise):
    /// every task placed here that the coordinator has not yet seen STOPPED.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// The instance was deregistered: the agent stops its tasks and exits its loop.
    #[serde(default)]
    pub deregistered: bool,
    /// The cluster's awsvpc membership as of this answer (with `changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awsvpc_network: Option<AwsvpcNetwork>,
}

/// ECS task lifecycle, in order; a report never moves a task backwards.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
    /// A transition from `self` to `next` is allowed only forwards (or staying put).
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        next >= self
    }
}

/// Desired status as ECS reports it: only RUNNING or STOPPED.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

/// ECS `stopCode` values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    SpotInterruption,
    TerminationNotice,
}

/// One task the coordinator wants on this instance. Built by the coordinator from
/// the registered task definition with RunTask/StartTask overrides already applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub family: String,
    pub revision: u32,
    pub desired_status: DesiredStatus,
    /// `host`, `none`, `bridge`, `awsvpc` (ECS default when absent: `bridge`).
    pub network_mode: String,
    /// Reason given to StopTask (or by the scheduler) when desired is STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    pub containers: Vec<ContainerSpec>,
    /// Host ports the coordinator reserved for this task (host/bridge modes).
    #[serde(default)]
    pub reserved_ports: Vec<PortMapping>,
    /// awsvpc tasks: the interface the coordinator allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awsvpc: Option<AwsvpcAttachment>,
}

/// A container to run: ECS `ContainerDefinition` field names, so the coordinator
/// builds it straight from the stored definition (unknown fields ignored), then
/// applies `containerOverrides`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    #[serde(default = "default_true")]
    pub essential: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValuePair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// CPU units (1024 = one core); becomes CPU shares.
    #[serde(default)]
    pub cpu: u32,
    /// Hard memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Seconds between SIGTERM and SIGKILL (ECS default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    #[serde(default)]
    pub depends_on: Vec<ContainerDependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    #[serde(default)]
    pub docker_labels: std::collections::BTreeMap<String, String>,
    /// ECS `healthCheck`: run by the agent inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// ECS `HealthCheck` (seconds; absent fields take ECS's defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `["CMD-SHELL", "cmd"]` or `["CMD", "exe", "arg", ...]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds between checks (ECS: 5-300, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Seconds one check may take (ECS: 2-120, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Consecutive failures that make the container UNHEALTHY (ECS: 1-10, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Grace seconds after start in which failures do not count (ECS: 0-300, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

/// ECS container and task `healthStatus`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }

    /// A task's health from its containers as `(essential, has a health
    /// check, container health)`, by ECS's rule: non-essential containers and
    /// containers without a check do not count; UNHEALTHY if any counted
    /// container is UNHEALTHY, HEALTHY if all counted ones are HEALTHY (and
    /// there is at least one), else UNKNOWN.
    pub fn of_task(
        containers: impl IntoIterator<Item = (bool, bool, Option<HealthStatus>)>,
    ) -> HealthStatus {
        let mut counted = 0usize;
        let mut healthy = 0usize;
        for (essential, checked, status) in containers {
            if !essential || !checked {
                continue;
            }
            counted += 1;
            match status.unwrap_or_default() {
                HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
                HealthStatus::Healthy => healthy += 1,
                HealthStatus::Unknown => {}
            }
        }
        if counted > 0 && healthy == counted {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyValuePair {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl PortMapping {
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("tcp")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    /// START, COMPLETE, SUCCESS, HEALTHY.
    pub condition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

/// Observed state the agent reports. Sequence numbers are per instance and
/// strictly increasing across agent restarts (the agent persists the last one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    pub seq: u64,
    pub tasks: Vec<TaskReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportAck {
    /// Highest sequence number applied for this instance.
    pub acked_seq: u64,
}

/// One task's observed state. Timestamps are Unix epoch seconds (fractional),
/// as ECS's JSON carries them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_arn: String,
    pub last_status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    pub containers: Vec<ContainerReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    pub last_status: ContainerStatus,
    /// containerd container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// Health of a container with a health check (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// A task's awsvpc interface as the coordinator allocated it: the address in
/// the cluster network, its prefix length, the network's gateway and a MAC
/// derived from the address. Sent to the agent as [`TaskSpec::awsvpc`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcAttachment {
    /// ECS attachment id (a UUID).
    pub attachment_id: String,
    /// `eni-` + 17 hex digits of the task id.
    pub network_interface_id: String,
    /// Dotted IPv4 address, e.g. `10.199.0.2`.
    pub ip: String,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `02:00:` + the address's 4 bytes (locally administered, unicast).
    pub mac: String,
}

/// The instance attribute an agent sets at registration to tell the
/// coordinator its underlay (VXLAN endpoint) address.
pub const UNDERLAY_IP_ATTRIBUTE: &str = "berth.underlay-ip";

/// The cluster's awsvpc overlay as one agent needs it, sent as
/// [`PollResponse::awsvpc_network`]. The overlay is one flat network (`cidr`, with the
/// gateway at its first address) spanning every member instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcNetwork {
    pub cidr: String,
    pub gateway: String,
    pub members: Vec<AwsvpcMember>,
}

/// One instance of the cluster (the polling one included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcMember {
    /// The `mi-` id.
    pub instance_id: String,
    /// From the instance's [`UNDERLAY_IP_ATTRIBUTE`]; absent if it set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<String>,
    /// The overlay subnet behind this member: the whole flat `cidr` (addresses
    /// are allocated cluster-wide, not per instance).
    pub overlay_subnet: String,
    /// Its active awsvpc tasks' addresses (for static ARP/FDB entries).
    pub endpoints: Vec<AwsvpcEndpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcEndpoint {
    pub ip: String,
    pub mac: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_status_only_moves_forward() {
        assert!(TaskStatus::Pending.can_move_to(TaskStatus::Running));
        assert!(TaskStatus::Running.can_move_to(TaskStatus::Running));
        assert!(!TaskStatus::Running.can_move_to(TaskStatus::Pending));
        assert!(!TaskStatus::Stopped.can_move_to(TaskStatus::Running));
    }

    #[test]
    fn container_spec_reads_an_ecs_container_definition() {
        let def = serde_json::json!({
            "name": "web", "image": "busybox", "cpu": 128, "memory": 64,
            "portMappings": [{"containerPort": 80, "hostPort": 80}],
            "logConfiguration": {"logDriver": "awslogs"}
        });
        let spec: ContainerSpec = serde_json::from_value(def).expect("valid definition");
        assert!(spec.essential);
        assert_eq!(spec.memory, Some(64));
        assert_eq!(spec.port_mappings[0].protocol(), "tcp");
        assert_eq!(TaskStatus::Running.as_str(), "RUNNING");
        assert_eq!(spec.health_check, None);
    }

    #[test]
    fn health_check_reads_ecs_field_names() {
        let def = serde_json::json!({
            "name": "web", "image": "busybox",
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5,
                            "timeout": 2, "retries": 2, "startPeriod": 10}
        });
        let spec: ContainerSpec = serde_json::from_value(def).expect("valid definition");
        assert_eq!(
            spec.health_check,
            Some(HealthCheck {
                command: vec!["CMD-SHELL".into(), "true".into()],
                interval: Some(5),
                timeout: Some(2),
                retries: Some(2),
                start_period: Some(10),
            })
        );
        let report: ContainerReport = serde_json::from_value(serde_json::json!({
            "name": "web", "lastStatus": "RUNNING", "healthStatus": "UNHEALTHY"
        }))
        .expect("report");
        assert_eq!(report.health_status, Some(HealthStatus::Unhealthy));
        let old: ContainerReport =
            serde_json::from_value(serde_json::json!({"name": "web", "lastStatus": "RUNNING"}))
                .expect("report without health");
        assert_eq!(old.health_status, None);
    }

    #[test]
    fn task_health_table() {
        use HealthStatus::*;
        type Containers = Vec<(bool, bool, Option<HealthStatus>)>;
        let cases: Vec<(&str, Containers, HealthStatus)> = vec![
            ("no containers", vec![], Unknown),
            ("no checks", vec![(true, false, None)], Unknown),
            ("one healthy", vec![(true, true, Some(Healthy))], Healthy),
            ("checked, no result yet", vec![(true, true, None)], Unknown),
            (
                "healthy and unknown",
                vec![(true, true, Some(Healthy)), (true, true, Some(Unknown))],
                Unknown,
            ),
            (
                "unhealthy wins",
                vec![(true, true, Some(Unknown)), (true, true, Some(Unhealthy))],
                Unhealthy,
            ),
            (
                "non-essential unhealthy ignored",
                vec![(true, true, Some(Healthy)), (false, true, Some(Unhealthy))],
                Healthy,
            ),
            (
                "unchecked container ignored",
                vec![(true, true, Some(Healthy)), (true, false, None)],
                Healthy,
            ),
            (
                "only non-essential checked",
                vec![(false, true, Some(Healthy)), (true, false, None)],
                Unknown,
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(HealthStatus::of_task(input), want, "{name}");
        }
    }
}
