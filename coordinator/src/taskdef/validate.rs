//! The semantic rules of RegisterTaskDefinition, applied to a request that has
//! already passed the protocol-level shape check (so every present member has
//! its modelled JSON type). Each rule answers `ClientException`, as ECS answers
//! RegisterTaskDefinition problems; the messages reuse ECS's wording where it
//! is known (see the module docs of [`super`] for the list of rules and where
//! Berth deliberately stays more permissive than the documentation).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::units::{fargate_size_ok, parse_task_unit, TaskUnit};
use super::validate_family_name;
use crate::error::ApiError;

/// ECS quota: containers per task definition.
pub const MAX_CONTAINERS: usize = 10;
/// Docker 20.10+ refuses containers with less memory than this (MiB).
pub const MIN_CONTAINER_MEMORY_MIB: i64 = 6;
/// Placement constraints per task definition.
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;

const FARGATE_LOG_DRIVERS: &[&str] = &["awslogs", "splunk", "awsfirelens"];
const KERNEL_CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];
/// Mount options the Tmpfs docs list as valid (`mode`, `uid`, ... take `=value`).
const TMPFS_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];
/// IPC-namespace sysctls (besides `fs.mqueue.*`), per the SystemControl docs.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

// --- small readers over shape-checked JSON --------------------------------

pub(crate) fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}
pub(crate) fn int_of(obj: &Map<String, Value>, key: &str) -> Option<i64> {
    obj.get(key).and_then(Value::as_i64)
}
pub(crate) fn bool_of(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    obj.get(key).and_then(Value::as_bool)
}
pub(crate) fn list_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
pub(crate) fn objects_of<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    list_of(obj, key).iter().filter_map(Value::as_object)
}
pub(crate) fn obj_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    obj.get(key).and_then(Value::as_object)
}

fn client(msg: impl Into<String>) -> ApiError {
    ApiError::client(msg)
}

/// `[a-zA-Z0-9_-]{1,255}`: the ECS rule for family, container and volume names.
pub fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Task-level facts the container rules depend on.
#[derive(Debug)]
pub struct TaskFacts {
    pub network_mode: String,
    pub fargate: bool,
    pub task_cpu: Option<u32>,
    pub task_memory: Option<u32>,
}

/// Checks a shape-checked RegisterTaskDefinition request (tags removed).
///
/// With `force_fargate`, the Fargate rules apply even when the request does not
/// list FARGATE in `requiresCompatibilities` (used to decide whether ECS would
/// report the definition as Fargate-compatible).
pub fn validate_definition(
    def: &Map<String, Value>,
    force_fargate: bool,
) -> Result<TaskFacts, ApiError> {
    validate_family_name(str_of(def, "family").unwrap_or(""))?;

    let containers: Vec<&Map<String, Value>> = objects_of(def, "containerDefinitions").collect();
    if containers.is_empty() {
        return Err(client("Container list cannot be empty."));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(client(format!(
            "Too many containers: {}. A task definition can contain at most {MAX_CONTAINERS} containers.",
            containers.len()
        )));
    }

    let network_mode = str_of(def, "networkMode").unwrap_or("bridge").to_string();
    let fargate = force_fargate
        || list_of(def, "requiresCompatibilities")
            .iter()
            .any(|c| c.as_str() == Some("FARGATE"));
    let task_cpu = str_of(def, "cpu")
        .map(|s| parse_task_unit(s, TaskUnit::Cpu))
        .transpose()?;
    let task_memory = str_of(def, "memory")
        .map(|s| parse_task_unit(s, TaskUnit::Memory))
        .transpose()?;
    let facts = TaskFacts {
        network_mode,
        fargate,
        task_cpu,
        task_memory,
    };

    let names = container_names(&containers)?;
    let volumes = volume_names(def, &facts)?;
    let accelerators = accelerator_names(def)?;

    for c in &containers {
        validate_container(c, &facts, &names, &volumes, &accelerators, def)?;
    }
    if !containers
        .iter()
        .any(|c| bool_of(c, "essential").unwrap_or(true))
    {
        return Err(client(
            "Task definition must have at least one essential container.",
        ));
    }
    validate_task_resources(&containers, &facts)?;
    validate_task_ports(&containers, &facts)?;
    validate_dependencies(&containers, &names)?;
    validate_firelens(&containers)?;
    validate_task_level(def, &facts, &names)?;
    if facts.fargate {
        validate_fargate(def, &containers, &facts)?;
    }
    Ok(facts)
}

fn container_names<'a>(
    containers: &[&'a Map<String, Value>],
) -> Result<BTreeMap<&'a str, usize>, ApiError> {
    let mut names = BTreeMap::new();
    for (i, c) in containers.iter().enumerate() {
        let name = str_of(c, "name").unwrap_or("");
        if name.is_empty() {
            return Err(client("Container.name should not be null or empty."));
        }
        if !is_resource_name(name) {
            return Err(client(format!(
                "Container name '{name}' is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if names.insert(name, i).is_some() {
            return Err(client(format!(
                "Duplicate container name '{name}'. Container names must be unique within a task definition."
            )));
        }
    }
    Ok(names)
}

fn volume_names<'a>(
    def: &'a Map<String, Value>,
    facts: &TaskFacts,
) -> Result<BTreeSet<&'a str>, ApiError> {
    let mut names = BTreeSet::new();
    let mut at_launch = 0;
    for v in objects_of(def, "volumes") {
        let name = str_of(v, "name").unwrap_or("");
        if name.is_empty() {
            return Err(client("Volume.name should not be null or empty."));
        }
        if !is_resource_name(name) {
            return Err(client(format!(
                "Volume name '{name}' is invalid. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
            )));
        }
        if !names.insert(name) {
            return Err(client(format!(
                "Duplicate volume name '{name}'. Volume names must be unique within a task definition."
            )));
        }
        let kinds = [
            "host",
            "dockerVolumeConfiguration",
            "efsVolumeConfiguration",
            "s3filesVolumeConfiguration",
            "fsxWindowsFileServerVolumeConfiguration",
        ]
        .iter()
        .filter(|k| v.contains_key(**k))
        .count();
        let configured_at_launch = bool_of(v, "configuredAtLaunch").unwrap_or(false);
        if kinds + usize::from(configured_at_launch) > 1 {
            return Err(client(format!(
                "Volume '{name}' may specify only one of host, dockerVolumeConfiguration, efsVolumeConfiguration, s3filesVolumeConfiguration, fsxWindowsFileServerVolumeConfiguration or configuredAtLaunch."
            )));
        }
        if configured_at_launch {
            at_launch += 1;
        }
        if let Some(efs) = obj_of(v, "efsVolumeConfiguration") {
            let auth = obj_of(efs, "authorizationConfig");
            if auth.and_then(|a| str_of(a, "iam")) == Some("ENABLED")
                && str_of(efs, "transitEncryption") != Some("ENABLED")
            {
                return Err(client(format!(
                    "Volume '{name}': transit encryption must be turned on when EFS IAM authorization is used."
                )));
            }
            if auth.is_some_and(|a| a.contains_key("accessPointId"))
                && str_of(efs, "rootDirectory").is_some_and(|r| r != "/")
            {
                return Err(client(format!(
                    "Volume '{name}': with an EFS access point, rootDirectory must be omitted or '/'."
                )));
            }
            if let Some(port) = int_of(efs, "transitEncryptionPort") {
                if !(1..=65535).contains(&port) {
                    return Err(client(format!(
                        "Volume '{name}': transitEncryptionPort {port} must be between 1 and 65535."
                    )));
                }
            }
        }
        if facts.fargate {
            if v.contains_key("dockerVolumeConfiguration") {
                return Err(client(format!(
                    "Volume '{name}': Docker volumes are not supported by tasks run on Fargate."
                )));
            }
            if obj_of(v, "host").is_some_and(|h| h.contains_key("sourcePath")) {
                return Err(client(format!(
                    "Volume '{name}': host sourcePath is not supported by tasks run on Fargate."
                )));
            }
        }
    }
    if at_launch > 1 {
        return Err(client(
            "A task definition may have only one volume configured at launch.",
        ));
    }
    Ok(names)
}

fn accelerator_names(def: &Map<String, Value>) -> Result<BTreeSet<&str>, ApiError> {
    let mut names = BTreeSet::new();
    for a in objects_of(def, "inferenceAccelerators") {
        let name = str_of(a, "deviceName").unwrap_or("");
        if name.is_empty() || !names.insert(name) {
            return Err(client(format!(
                "Inference accelerator device names must be non-empty and unique: '{name}'."
            )));
        }
    }
    Ok(names)
}

fn validate_container(
    c: &Map<String, Value>,
    facts: &TaskFacts,
    names: &BTreeMap<&str, usize>,
    volumes: &BTreeSet<&str>,
    accelerators: &BTreeSet<&str>,
    def: &Map<String, Value>,
) -> Result<(), ApiError> {
    let name = str_of(c, "name").unwrap_or("");
    validate_image(str_of(c, "image").unwrap_or(""))?;
    validate_container_memory(name, c, facts)?;
    if let Some(cpu) = int_of(c, "cpu") {
        if cpu < 0 {
            return Err(client(format!(
                "Invalid 'cpu' setting for container '{name}'. The value must be 0 or greater."
            )));
        }
    }
    validate_container_ports(name, c, facts)?;

    let links = list_of(c, "links");
    if !links.is_empty() && facts.network_mode != "bridge" {
        return Err(client(format!(
            "Links are not supported when networkMode={}. Container '{name}' specifies links.",
            facts.network_mode
        )));
    }
    for link in links.iter().filter_map(Value::as_str) {
        let (target, alias) = link.split_once(':').unwrap_or((link, link));
        if !is_resource_name(target) || !is_resource_name(alias) {
            return Err(client(format!(
                "Invalid link '{link}' in container '{name}'. Use name or name:alias with up to 255 letters, numbers, hyphens, and underscores."
            )));
        }
        if target == name || !names.contains_key(target) {
            return Err(client(format!(
                "Container '{name}' links to '{target}', which is not another container in this task definition."
            )));
        }
    }

    if c.contains_key("hostname") && facts.network_mode == "awsvpc" {
        return Err(client(format!(
            "Container '{name}': hostname is not supported when networkMode=awsvpc."
        )));
    }
    if !list_of(c, "extraHosts").is_empty() && facts.network_mode == "awsvpc" {
        return Err(client(format!(
            "Container '{name}': extraHosts is not supported when networkMode=awsvpc."
        )));
    }

    for m in objects_of(c, "mountPoints") {
        let source = str_of(m, "sourceVolume").unwrap_or("");
        if source.is_empty() {
            return Err(client(format!(
                "Container '{name}': mount points must specify sourceVolume."
            )));
        }
        if !volumes.contains(source) {
            return Err(client(format!(
                "Container '{name}': mount point references unknown volume '{source}'. It must be a volume name in the task definition's volumes."
            )));
        }
        if str_of(m, "containerPath").unwrap_or("").is_empty() {
            return Err(client(format!(
                "Container '{name}': mount point for volume '{source}' must specify containerPath."
            )));
        }
    }
    for v in objects_of(c, "volumesFrom") {
        let source = str_of(v, "sourceContainer").unwrap_or("");
        if source == name || !names.contains_key(source) {
            return Err(client(format!(
                "Container '{name}': volumesFrom sourceContainer '{source}' is not another container in this task definition."
            )));
        }
    }

    for e in objects_of(c, "environment") {
        let var = str_of(e, "name").unwrap_or("");
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(client(format!(
                "Container '{name}': invalid environment variable name '{var}'. Names must be non-empty and must not contain '='."
            )));
        }
    }
    let env_files = list_of(c, "environmentFiles");
    if env_files.len() > 10 {
        return Err(client(format!(
            "Container '{name}': at most 10 environment files are allowed."
        )));
    }
    for f in env_files.iter().filter_map(Value::as_object) {
        let value = str_of(f, "value").unwrap_or("");
        if !value.ends_with(".env") {
            return Err(client(format!(
                "Container '{name}': environment file '{value}' must have a .env file extension."
            )));
        }
    }

    if let Some(h) = obj_of(c, "healthCheck") {
        validate_health_check(name, h)?;
    }
    for key in ["startTimeout", "stopTimeout"] {
        if let Some(t) = int_of(c, key) {
            if t < 0 {
                return Err(client(format!(
                    "Container '{name}': {key} must be 0 or greater."
                )));
            }
            if facts.fargate && !(2..=120).contains(&t) {
                return Err(client(format!(
                    "Container '{name}': {key} must be between 2 and 120 seconds for tasks that use Fargate."
                )));
            }
        }
    }

    let mut ulimit_names = BTreeSet::new();
    for u in objects_of(c, "ulimits") {
        let un = str_of(u, "name").unwrap_or("");
        if !ulimit_names.insert(un) {
            return Err(client(format!(
                "Container '{name}': duplicate ulimit '{un}'."
            )));
        }
        let soft = int_of(u, "softLimit").unwrap_or(0);
        let hard = int_of(u, "hardLimit").unwrap_or(0);
        if soft > hard {
            return Err(client(format!(
                "Container '{name}': ulimit '{un}' softLimit {soft} is greater than hardLimit {hard}."
            )));
        }
    }
    if let Some(labels) = obj_of(c, "dockerLabels") {
        if labels.keys().any(String::is_empty) {
            return Err(client(format!(
                "Container '{name}': dockerLabels keys must not be empty."
            )));
        }
    }
    for s in objects_of(c, "systemControls") {
        let ns = str_of(s, "namespace").unwrap_or("");
        if ns.is_empty() {
            return Err(client(format!(
                "Container '{name}': systemControls entries must specify a namespace."
            )));
        }
        if ns.starts_with("net.") && facts.network_mode == "host" {
            return Err(client(format!(
                "Container '{name}': network namespace systemControls ('{ns}') are not supported when networkMode=host."
            )));
        }
        let ipc = ns.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&ns);
        if ipc && str_of(def, "ipcMode") == Some("host") {
            return Err(client(format!(
                "Container '{name}': IPC namespace systemControls ('{ns}') are not supported when ipcMode=host."
            )));
        }
    }
    if let Some(lp) = obj_of(c, "linuxParameters") {
        validate_linux_parameters(name, lp, facts)?;
    }
    validate_resource_requirements(name, c, accelerators)?;
    if let Some(rp) = obj_of(c, "restartPolicy") {
        if list_of(rp, "ignoredExitCodes").len() > 50 {
            return Err(client(format!(
                "Container '{name}': restartPolicy may ignore at most 50 exit codes."
            )));
        }
        if let Some(p) = int_of(rp, "restartAttemptPeriod") {
            if !(60..=1800).contains(&p) {
                return Err(client(format!(
                    "Container '{name}': restartAttemptPeriod must be between 60 and 1800 seconds."
                )));
            }
        }
    }
    if let Some(log) = obj_of(c, "logConfiguration") {
        let driver = str_of(log, "logDriver").unwrap_or("");
        if driver == "awslogs" {
            let options = obj_of(log, "options");
            if options.is_some_and(|o| {
                o.contains_key("awslogs-datetime-format")
                    && o.contains_key("awslogs-multiline-pattern")
            }) {
                return Err(client(format!(
                    "Container '{name}': awslogs-datetime-format and awslogs-multiline-pattern cannot both be configured."
                )));
            }
        }
        if facts.fargate && !FARGATE_LOG_DRIVERS.contains(&driver) {
            return Err(client(format!(
                "Log driver {driver} is not supported by tasks run on Fargate. Must be one of [awslogs,splunk,awsfirelens]"
            )));
        }
    }
    if let Some(fl) = obj_of(c, "firelensConfiguration") {
        let file_type = obj_of(fl, "options").and_then(|o| str_of(o, "config-file-type"));
        if facts.fargate && file_type.is_some_and(|t| t != "file") {
            return Err(client(format!(
                "Container '{name}': tasks run on Fargate only support the file FireLens configuration file type."
            )));
        }
    }
    if list_of(c, "credentialSpecs").len() > 1 {
        return Err(client(format!(
            "Container '{name}': credentialSpecs may contain at most one ARN."
        )));
    }
    for opt in list_of(c, "dockerSecurityOptions")
        .iter()
        .filter_map(Value::as_str)
    {
        let ok = opt == "no-new-privileges"
            || ["apparmor:", "label:", "credentialspec:"]
                .iter()
                .any(|p| opt.len() > p.len() && opt.starts_with(p));
        if !ok {
            return Err(client(format!(
                "Container '{name}': invalid dockerSecurityOptions value '{opt}'. Valid values: no-new-privileges, apparmor:PROFILE, label:value, credentialspec:PATH."
            )));
        }
    }
    Ok(())
}

/// `repository[:tag]` up to 255 characters of letters, numbers, `-_:./#`, or
/// `repository@sha256:<64 hex>`.
fn validate_image(image: &str) -> Result<(), ApiError> {
    if image.is_empty() {
        return Err(client("Container.image should not be null or empty."));
    }
    let (repo, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b"-_:./#".contains(&b);
    if repo.is_empty() || !repo.bytes().all(ok_char) {
        return Err(client("Container.image contains invalid characters."));
    }
    if repo.len() > 255 {
        return Err(client(
            "Container.image repository and tag must be at most 255 characters.",
        ));
    }
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(client(
                "Container.image digest must be sha256: followed by 64 hexadecimal characters.",
            ));
        }
    }
    Ok(())
}

/// Container memory rules (shared with RunTask overrides).
pub fn check_memory_pair(
    name: &str,
    memory: Option<i64>,
    reservation: Option<i64>,
    task_memory: Option<u32>,
    make: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    for (key, v) in [("memory", memory), ("memoryReservation", reservation)] {
        if let Some(v) = v {
            if v < MIN_CONTAINER_MEMORY_MIB {
                return Err(make(format!(
                    "Invalid '{key}' setting for container '{name}'. The minimum is {MIN_CONTAINER_MEMORY_MIB} MiB."
                )));
            }
            if let Some(task) = task_memory {
                if v > i64::from(task) {
                    return Err(make(format!(
                        "Invalid '{key}' setting for container '{name}'. {v} MiB is more than the task memory of {task} MiB."
                    )));
                }
            }
        }
    }
    if let (Some(m), Some(r)) = (memory, reservation) {
        if r > m {
            return Err(make(format!(
                "Invalid setting for container '{name}'. 'memory' must be greater than or equal to 'memoryReservation'."
            )));
        }
    }
    if memory.is_none() && reservation.is_none() && task_memory.is_none() {
        return Err(make(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
        )));
    }
    Ok(())
}

fn validate_container_memory(
    name: &str,
    c: &Map<String, Value>,
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    check_memory_pair(
        name,
        int_of(c, "memory"),
        int_of(c, "memoryReservation"),
        facts.task_memory,
        ApiError::client,
    )
}

/// Sums of container reservations against the task-level sizes.
pub fn check_task_totals(
    cpu_sum: i64,
    memory_sum: i64,
    task_cpu: Option<u32>,
    task_memory: Option<u32>,
    make: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    if let Some(task) = task_cpu {
        if cpu_sum > i64::from(task) {
            return Err(make(format!(
                "Invalid 'cpu' setting for task. The containers reserve {cpu_sum} CPU units in total, more than the task cpu of {task}."
            )));
        }
    }
    if let Some(task) = task_memory {
        if memory_sum > i64::from(task) {
            return Err(make(format!(
                "Invalid 'memory' setting for task. The containers reserve {memory_sum} MiB in total, more than the task memory of {task} MiB."
            )));
        }
    }
    Ok(())
}

fn validate_task_resources(
    containers: &[&Map<String, Value>],
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    let cpu_sum: i64 = containers
        .iter()
        .map(|c| int_of(c, "cpu").unwrap_or(0))
        .sum();
    let memory_sum: i64 = containers
        .iter()
        .map(|c| {
            int_of(c, "memoryReservation")
                .or_else(|| int_of(c, "memory"))
                .unwrap_or(0)
        })
        .sum();
    check_task_totals(
        cpu_sum,
        memory_sum,
        facts.task_cpu,
        facts.task_memory,
        ApiError::client,
    )
}

fn parse_port_range(s: &str) -> Option<(i64, i64)> {
    let (a, b) = s.split_once('-')?;
    let a: i64 = a.trim().parse().ok()?;
    let b: i64 = b.trim().parse().ok()?;
    (1 <= a && a < b && b <= 65535).then_some((a, b))
}

fn validate_container_ports(
    name: &str,
    c: &Map<String, Value>,
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    let mappings: Vec<&Map<String, Value>> = objects_of(c, "portMappings").collect();
    if mappings.is_empty() {
        return Ok(());
    }
    if facts.network_mode == "none" {
        return Err(client(format!(
            "Port mappings are not supported when networkMode=none. Container '{name}' specifies port mappings."
        )));
    }
    let mut ranges: Vec<(i64, i64, &str)> = Vec::new();
    let mut mapping_names = BTreeSet::new();
    for m in &mappings {
        let protocol = str_of(m, "protocol").unwrap_or("tcp");
        if let Some(port_name) = str_of(m, "name") {
            let well_formed = !port_name.is_empty()
                && port_name.len() <= 64
                && !port_name.starts_with('-')
                && port_name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !well_formed {
                return Err(client(format!(
                    "Container '{name}': invalid port mapping name '{port_name}'. Up to 64 lowercase letters, numbers, underscores and hyphens, not starting with a hyphen."
                )));
            }
            if !mapping_names.insert(port_name) {
                return Err(client(format!(
                    "Container '{name}': duplicate port mapping name '{port_name}'."
                )));
            }
        }
        if let Some(range) = str_of(m, "containerPortRange") {
            if m.contains_key("containerPort") || m.contains_key("hostPort") {
                return Err(client(format!(
                    "Container '{name}': a port mapping with containerPortRange must not set containerPort or hostPort."
                )));
            }
            if facts.network_mode != "bridge" && facts.network_mode != "awsvpc" {
                return Err(client(format!(
                    "Container '{name}': containerPortRange requires networkMode bridge or awsvpc."
                )));
            }
            let Some((lo, hi)) = parse_port_range(range) else {
                return Err(client(format!(
                    "Container '{name}': invalid containerPortRange '{range}'. Use FIRST-LAST with 1 <= FIRST < LAST <= 65535."
                )));
            };
            if ranges
                .iter()
                .any(|(a, b, p)| *p == protocol && lo <= *b && *a <= hi)
            {
                return Err(client(format!(
                    "Container '{name}': containerPortRange '{range}' overlaps another port mapping."
                )));
            }
            ranges.push((lo, hi, protocol));
            continue;
        }
        let Some(container_port) = int_of(m, "containerPort") else {
            return Err(client(format!(
                "Container '{name}': each port mapping must specify containerPort or containerPortRange."
            )));
        };
        if !(1..=65535).contains(&container_port) {
            return Err(client(format!(
                "Container '{name}': containerPort {container_port} must be between 1 and 65535."
            )));
        }
        if let Some(host_port) = int_of(m, "hostPort") {
            if !(0..=65535).contains(&host_port) {
                return Err(client(format!(
                    "Container '{name}': hostPort {host_port} must be between 0 and 65535."
                )));
            }
            // ECS documents the same rule for awsvpc, but real definitions
            // that ECS accepted map other host ports there (the task has its
            // own network namespace, so the host port has no meaning): only
            // host mode, where it would be a lie, is strict.
            if facts.network_mode == "host" && host_port != container_port {
                return Err(client(
                    "When networkMode=host, the host ports and container ports in port mappings must match.",
                ));
            }
        }
        if ranges
            .iter()
            .any(|(a, b, p)| *p != protocol && *a == container_port && *b == container_port)
        {
            return Err(client(format!(
                "Container '{name}': container port {container_port} is exposed for more than one protocol. You can't expose the same container port for multiple protocols."
            )));
        }
        if ranges
            .iter()
            .any(|(a, b, p)| *p == protocol && *a <= container_port && container_port <= *b)
        {
            return Err(client(format!(
                "Container '{name}': containerPort {container_port} is also inside a containerPortRange."
            )));
        }
        ranges.push((container_port, container_port, protocol));
    }
    if ranges.len() > 100 {
        return Err(client(format!(
            "Container '{name}': at most 100 port mappings are allowed."
        )));
    }
    Ok(())
}

/// Port conflicts across the task. In bridge mode each container has its own
/// namespace, so only explicit non-zero host ports must be unique; in host and
/// awsvpc modes all containers share one network namespace, so container
/// ports must be unique (in host mode they are the host ports too).
fn validate_task_ports(
    containers: &[&Map<String, Value>],
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    let shared_netns = facts.network_mode == "host" || facts.network_mode == "awsvpc";
    let mut seen: HashMap<(i64, &str), &str> = HashMap::new();
    for c in containers {
        let name = str_of(c, "name").unwrap_or("");
        for m in objects_of(c, "portMappings") {
            let protocol = str_of(m, "protocol").unwrap_or("tcp");
            let Some(cp) = int_of(m, "containerPort") else {
                continue;
            };
            if shared_netns {
                if let Some(other) = seen.insert((cp, protocol), name) {
                    return Err(client(format!(
                        "Container port {cp}/{protocol} is used by more than one port mapping (containers '{other}' and '{name}'); with networkMode={} the containers share one network namespace.",
                        facts.network_mode
                    )));
                }
            } else {
                let hp = int_of(m, "hostPort").unwrap_or(0);
                if hp != 0 {
                    if let Some(other) = seen.insert((hp, protocol), name) {
                        return Err(client(format!(
                            "Host port {hp}/{protocol} is used by more than one port mapping (containers '{other}' and '{name}')."
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn validate_health_check(name: &str, h: &Map<String, Value>) -> Result<(), ApiError> {
    if list_of(h, "command").is_empty() {
        return Err(client(format!(
            "Container '{name}': healthCheck command must not be empty."
        )));
    }
    let ranges: [(&str, i64, i64); 4] = [
        ("interval", 5, 300),
        ("timeout", 2, 60),
        ("retries", 1, 10),
        ("startPeriod", 0, 300),
    ];
    for (key, lo, hi) in ranges {
        if let Some(v) = int_of(h, key) {
            if !(lo..=hi).contains(&v) {
                return Err(client(format!(
                    "Container '{name}': healthCheck {key} {v} must be between {lo} and {hi}."
                )));
            }
        }
    }
    Ok(())
}

fn validate_linux_parameters(
    name: &str,
    lp: &Map<String, Value>,
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    if let Some(caps) = obj_of(lp, "capabilities") {
        for key in ["add", "drop"] {
            for cap in list_of(caps, key).iter().filter_map(Value::as_str) {
                if !KERNEL_CAPABILITIES.contains(&cap) {
                    return Err(client(format!(
                        "Container '{name}': unknown kernel capability '{cap}' in linuxParameters.capabilities.{key}."
                    )));
                }
                if facts.fargate && key == "add" && cap != "SYS_PTRACE" {
                    return Err(client(format!(
                        "Container '{name}': tasks run on Fargate can only add the SYS_PTRACE capability."
                    )));
                }
            }
        }
    }
    for d in objects_of(lp, "devices") {
        if str_of(d, "hostPath").unwrap_or("").is_empty() {
            return Err(client(format!(
                "Container '{name}': devices must specify hostPath."
            )));
        }
    }
    if let Some(shm) = int_of(lp, "sharedMemorySize") {
        if shm < 1 {
            return Err(client(format!(
                "Container '{name}': sharedMemorySize must be at least 1 MiB."
            )));
        }
    }
    for t in objects_of(lp, "tmpfs") {
        if !str_of(t, "containerPath").unwrap_or("").starts_with('/') {
            return Err(client(format!(
                "Container '{name}': tmpfs containerPath must be an absolute path."
            )));
        }
        if int_of(t, "size").unwrap_or(0) < 1 {
            return Err(client(format!(
                "Container '{name}': tmpfs size must be at least 1 MiB."
            )));
        }
        for opt in list_of(t, "mountOptions").iter().filter_map(Value::as_str) {
            let key = opt.split_once('=').map_or(opt, |(k, _)| k);
            if !TMPFS_OPTIONS.contains(&key) {
                return Err(client(format!(
                    "Container '{name}': invalid tmpfs mount option '{opt}'."
                )));
            }
        }
    }
    if let Some(swap) = int_of(lp, "maxSwap") {
        if swap < 0 {
            return Err(client(format!(
                "Container '{name}': maxSwap must be 0 or greater."
            )));
        }
    }
    if let Some(sw) = int_of(lp, "swappiness") {
        if !(0..=100).contains(&sw) {
            return Err(client(format!(
                "Container '{name}': swappiness must be between 0 and 100."
            )));
        }
    }
    if facts.fargate {
        for key in ["devices", "sharedMemorySize", "maxSwap", "swappiness"] {
            if lp.contains_key(key) {
                return Err(client(format!(
                    "Container '{name}': linuxParameters.{key} is not supported by tasks run on Fargate."
                )));
            }
        }
    }
    Ok(())
}

fn validate_resource_requirements(
    name: &str,
    c: &Map<String, Value>,
    accelerators: &BTreeSet<&str>,
) -> Result<(), ApiError> {
    let mut seen = BTreeSet::new();
    for r in objects_of(c, "resourceRequirements") {
        let kind = str_of(r, "type").unwrap_or("");
        let value = str_of(r, "value").unwrap_or("");
        if !seen.insert(kind) {
            return Err(client(format!(
                "Container '{name}': resourceRequirements lists type {kind} more than once."
            )));
        }
        match kind {
            "GPU" => {
                if !value.parse::<u32>().is_ok_and(|n| n >= 1) {
                    return Err(client(format!(
                        "Container '{name}': GPU resource requirement '{value}' must be a positive integer."
                    )));
                }
            }
            _ => {
                if !accelerators.contains(value) {
                    return Err(client(format!(
                        "Container '{name}': InferenceAccelerator '{value}' does not match a deviceName in the task's inferenceAccelerators."
                    )));
                }
            }
        }
    }
    Ok(())
}

fn validate_dependencies(
    containers: &[&Map<String, Value>],
    names: &BTreeMap<&str, usize>,
) -> Result<(), ApiError> {
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); containers.len()];
    for (i, c) in containers.iter().enumerate() {
        let name = str_of(c, "name").unwrap_or("");
        for d in objects_of(c, "dependsOn") {
            let target = str_of(d, "containerName").unwrap_or("");
            let Some(&j) = names.get(target) else {
                return Err(client(format!(
                    "Container '{name}' depends on container '{target}', which does not exist in the task definition."
                )));
            };
            if j == i {
                return Err(client(format!(
                    "Container '{name}' cannot depend on itself."
                )));
            }
            let condition = str_of(d, "condition").unwrap_or("");
            let dep = containers[j];
            if matches!(condition, "COMPLETE" | "SUCCESS")
                && bool_of(dep, "essential").unwrap_or(true)
            {
                return Err(client(format!(
                    "Container '{name}' depends on '{target}' with condition {condition}, which cannot be set on an essential container."
                )));
            }
            if condition == "HEALTHY" && !dep.contains_key("healthCheck") {
                return Err(client(format!(
                    "Container '{name}' depends on '{target}' with condition HEALTHY, but '{target}' has no healthCheck."
                )));
            }
            edges[i].push(j);
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle
            .iter()
            .map(|&i| str_of(containers[i], "name").unwrap_or(""))
            .collect();
        return Err(client(format!(
            "Container dependencies form a cycle: {}.",
            path.join(" -> ")
        )));
    }
    Ok(())
}

/// A cycle in a dependency graph (as the list of nodes, first repeated at the end).
pub fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index); `stack` is the active path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match marks[to] {
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(to);
                        return Some(cycle);
                    }
                    Mark::New => {
                        marks[to] = Mark::Active;
                        stack.push((to, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

fn validate_firelens(containers: &[&Map<String, Value>]) -> Result<(), ApiError> {
    let routers = containers
        .iter()
        .filter(|c| c.contains_key("firelensConfiguration"))
        .count();
    if routers > 1 {
        return Err(client(
            "Only one container in a task definition can have a firelensConfiguration.",
        ));
    }
    for c in containers {
        let uses = obj_of(c, "logConfiguration").and_then(|l| str_of(l, "logDriver"))
            == Some("awsfirelens");
        if uses && routers == 0 {
            return Err(client(format!(
                "Container '{}' uses the awsfirelens log driver, but no container has a firelensConfiguration.",
                str_of(c, "name").unwrap_or("")
            )));
        }
    }
    Ok(())
}

fn validate_task_level(
    def: &Map<String, Value>,
    facts: &TaskFacts,
    names: &BTreeMap<&str, usize>,
) -> Result<(), ApiError> {
    let constraints = list_of(def, "placementConstraints");
    if constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(client(format!(
            "Too many placement constraints: {}. At most {MAX_PLACEMENT_CONSTRAINTS} are allowed.",
            constraints.len()
        )));
    }
    for pc in constraints.iter().filter_map(Value::as_object) {
        if str_of(pc, "type") == Some("memberOf")
            && str_of(pc, "expression").unwrap_or("").trim().is_empty()
        {
            return Err(client(
                "A memberOf placement constraint must have an expression.",
            ));
        }
    }
    if let Some(proxy) = obj_of(def, "proxyConfiguration") {
        let target = str_of(proxy, "containerName").unwrap_or("");
        if !names.contains_key(target) {
            return Err(client(format!(
                "proxyConfiguration containerName '{target}' is not a container in this task definition."
            )));
        }
        if facts.network_mode != "awsvpc" {
            return Err(client("proxyConfiguration requires networkMode=awsvpc."));
        }
    }
    for a in objects_of(def, "inferenceAccelerators") {
        let device = str_of(a, "deviceName").unwrap_or("");
        let referenced = objects_of(def, "containerDefinitions").any(|c| {
            objects_of(c, "resourceRequirements").any(|r| {
                str_of(r, "type") == Some("InferenceAccelerator")
                    && str_of(r, "value") == Some(device)
            })
        });
        if !referenced {
            return Err(client(format!(
                "Inference accelerator '{device}' must be referenced by a container's resourceRequirements."
            )));
        }
    }
    if let Some(es) = obj_of(def, "ephemeralStorage") {
        let size = int_of(es, "sizeInGiB").unwrap_or(0);
        if !(21..=200).contains(&size) {
            return Err(client(format!(
                "ephemeralStorage sizeInGiB {size} must be between 21 and 200."
            )));
        }
    }
    Ok(())
}

fn validate_fargate(
    def: &Map<String, Value>,
    containers: &[&Map<String, Value>],
    facts: &TaskFacts,
) -> Result<(), ApiError> {
    if facts.network_mode != "awsvpc" {
        return Err(client("Fargate only supports network mode 'awsvpc'."));
    }
    let Some(cpu) = facts.task_cpu else {
        return Err(client(
            "Fargate requires that 'cpu' be defined at the task level.",
        ));
    };
    let Some(memory) = facts.task_memory else {
        return Err(client(
            "Fargate requires that 'memory' be defined at the task level.",
        ));
    };
    if !fargate_size_ok(cpu, memory) {
        return Err(client(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
        )));
    }
    if !list_of(def, "placementConstraints").is_empty() {
        return Err(client(
            "Placement constraints are not supported by tasks run on Fargate.",
        ));
    }
    if str_of(def, "pidMode") == Some("host") {
        return Err(client(
            "pidMode 'host' is not supported by tasks run on Fargate.",
        ));
    }
    if def.contains_key("ipcMode") {
        return Err(client("ipcMode is not supported by tasks run on Fargate."));
    }
    for c in containers {
        if bool_of(c, "privileged") == Some(true) {
            return Err(client(format!(
                "Container '{}': privileged is not supported by tasks run on Fargate.",
                str_of(c, "name").unwrap_or("")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)]
    fn cycles_are_found_and_acyclic_graphs_pass() {
        let cases: Vec<(Vec<Vec<usize>>, Option<Vec<usize>>)> = vec![
            (vec![], None),
            (vec![vec![]], None),
            (vec![vec![1], vec![2], vec![]], None),
            (vec![vec![1, 2], vec![2], vec![]], None),
            (vec![vec![1], vec![0]], Some(vec![0, 1, 0])),
            (vec![vec![1], vec![2], vec![1]], Some(vec![1, 2, 1])),
            (
                vec![vec![], vec![2], vec![3], vec![1]],
                Some(vec![1, 2, 3, 1]),
            ),
        ];
        for (edges, expected) in cases {
            assert_eq!(find_cycle(&edges), expected, "{edges:?}");
        }
    }

    #[test]
    fn resource_names_follow_the_ecs_pattern() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("web", true),
            ("Web_1-x", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("a.b", false),
            ("a b", false),
            ("ünï", false),
            ("a:b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(is_resource_name(name), *ok, "{name}");
        }
    }
}
