//! Task definitions as ECS defines them, as pure logic: validating a
//! RegisterTaskDefinition request, rendering the stored definition as the ECS
//! `TaskDefinition` object, parsing task definition references, and turning a
//! definition plus RunTask overrides into the containers an agent runs.
//! No I/O: the state owner stores what [`validate_register`] returns.
//!
//! # Validation, in order
//! 1. Size: the request's JSON may be at most 64 KiB (`ClientException`,
//!    "Actual length: 'N'. Max allowed length is 65536 bytes.").
//! 2. Tags ([`validate_tags`]): `InvalidParameterException`, as ECS answers
//!    tagging problems.
//! 3. Protocol shape (`taskdef/shape.rs`, against botocore's model in
//!    `taskdef/schema.rs`): a JSON value of the wrong type is
//!    `SerializationException` with the AWS JSON front end's wording
//!    ("STRING_VALUE can not be converted to an Integer", "Start of list
//!    found where not expected", ...); a model
//!    constraint (enum value, required member, length or range) is
//!    `ClientException` in the AWS "1 validation error detected: Value X at
//!    'path' failed to satisfy constraint: ..." form. `null` members count as
//!    absent and members the model does not know are ignored and not stored,
//!    as the AWS front end does; everything else is stored exactly as sent.
//! 4. Semantics (`taskdef/validate.rs`): `ClientException`, ECS's answer for
//!    RegisterTaskDefinition problems, with ECS's own messages where they are
//!    known ("Invalid setting for container 'x'. At least one of 'memory' or
//!    'memoryReservation' must be specified.", "Container.image should not be
//!    null or empty.", "Fargate requires that 'cpu' be defined at the task
//!    level.", ...). Family, container and volume names `[a-zA-Z0-9_-]{1,255}`,
//!    unique; 1-10 containers, at least one essential; image required (tag
//!    form ≤255 characters of `A-Za-z0-9-_:./#`, digest `sha256:` + 64 hex);
//!    container memory and memoryReservation ≥ 6 MiB, reservation ≤ memory,
//!    one of them unless the task has memory, none above the task memory and
//!    the sums within task cpu/memory; task `cpu` as units or vCPU, `memory`
//!    as MiB or GB (echoed back as sent, normalised only in [`Requirements`]);
//!    ports 1-65535 (host 0-65535), none in `none` mode, host port = container
//!    port in `host` mode, one protocol per container port, unique host ports
//!    per task and unique container ports where containers share a network
//!    namespace (host, awsvpc), `containerPortRange` rules, port mapping names
//!    (≤64 of `a-z0-9_-`, unique, not starting with `-`); links only in bridge mode and only to other
//!    containers; `dependsOn` targets exist, COMPLETE/SUCCESS only on
//!    non-essential targets, HEALTHY only on targets with a health check, no
//!    cycles; `volumesFrom` and `mountPoints` reference existing containers
//!    and volumes; health check interval 5-300, timeout 2-60, retries 1-10,
//!    startPeriod 0-300; environment names non-empty without `=`; at most 10
//!    environment files ending `.env`; kernel capabilities from ECS's list;
//!    ulimits unique with soft ≤ hard; hostname and extraHosts not in awsvpc;
//!    one FireLens router, required by `awsfirelens`; proxy container exists;
//!    `dockerSecurityOptions` and tmpfs mount options from the documented
//!    lists; at most one credential spec; awslogs datetime-format and
//!    multiline-pattern not both; EFS IAM authorization only with transit
//!    encryption, access point only with root `/`; inference accelerators
//!    named uniquely and referenced by a container;
//!    ephemeral storage 21-200 GiB; at most 10 placement constraints; the
//!    Fargate rules (awsvpc, task cpu/memory from the size table, no placement
//!    constraints, host volumes, Docker volumes, privileged, host pidMode,
//!    ipcMode, devices; log drivers awslogs/splunk/awsfirelens; start/stop
//!    timeouts 2-120) when FARGATE is required.
//!
//! Where the corpus of real definitions ECS accepted
//! (`shared/corpus/ecs-taskdefs`) contradicts the documentation, Berth follows
//! the corpus: awsvpc port mappings may name a host port other than the
//! container port (aws-samples' kibana and tomcat EC2 variants do), Fargate
//! definitions using awslogs need not carry an execution role (the aws-samples
//! Fargate variants do not), and health check commands need not start with
//! CMD or CMD-SHELL (the Windows functional tests use `powershell`).
//!
//! # Round trip
//! The stored definition is the cleaned request without `tags`, plus only the
//! defaults ECS adds (`render::apply_defaults`): every member a client sent
//! reads back unchanged. [`render`] adds the registration metadata,
//! `requiresAttributes` (derived from the features used, see
//! [`required_attributes`]) and `compatibilities` (`EC2`, `EXTERNAL`,
//! and `FARGATE` when the definition satisfies Fargate's rules).
//!
//! # RunTask overrides
//! [`containers_for_run`] applies a `TaskOverride` to the stored definition:
//! JSON at most 8192 bytes; container overrides must name an existing
//! container (once); `command` replaces, `environment` merges by name (the
//! override wins, new names are appended), `cpu`/`memory`/`memoryReservation`
//! replace; task `cpu`/`memory` replace the definition's. The memory rules
//! and task totals are checked again on the result. Problems answer
//! `InvalidParameterException` (ECS's answer for RunTask parameters).
//!
//! # References
//! [`parse_reference`] reads `family`, `family:N` and task definition ARNs; a
//! malformed one is `ClientException` ("Invalid revision number. Number: x").

mod reference;
mod render;
mod run;
mod schema;
mod shape;
mod tags;
mod units;
mod validate;

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorKind};

pub use reference::parse_reference;
pub use render::{compatibilities, required_attributes};
pub use run::{containers_for_run, static_ports, MAX_OVERRIDES_LEN};
pub use tags::validate_tags;
pub use units::{fargate_size_ok, parse_task_unit, TaskUnit};
pub use validate::MAX_CONTAINERS;

/// Largest RegisterTaskDefinition request ECS accepts, in bytes of JSON.
pub const MAX_REQUEST_BYTES: usize = 65_536;

/// A validated RegisterTaskDefinition request, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub family: String,
    /// What is stored and echoed back (without tags): the request as sent,
    /// plus the defaults ECS adds.
    pub definition: Map<String, Value>,
    pub tags: Vec<Tag>,
    pub requirements: Requirements,
}

/// An ECS resource tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// What one task of a definition needs from a container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// CPU units: the task-level `cpu` when set, else the sum of container `cpu`.
    pub cpu: u32,
    /// MiB: the task-level `memory` when set, else the sum over containers of
    /// `memoryReservation` (or `memory` when there is no reservation).
    pub memory_mib: u32,
    /// `bridge` when the definition names none.
    pub network_mode: String,
    /// Static host ports to reserve: in host mode every container port (host
    /// port = container port); in bridge mode only explicit non-zero host ports.
    pub ports: Vec<berth_api::PortMapping>,
}

/// A reference to a task definition: a family (its latest ACTIVE revision) or
/// one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDefRef {
    Family(String),
    Revision { family: String, revision: u32 },
}

/// Checks a family name: 1-255 letters, numbers, hyphens and underscores.
pub fn validate_family_name(s: &str) -> Result<(), ApiError> {
    if s.is_empty() {
        return Err(ApiError::client("Family should not be null or empty."));
    }
    if s.len() > 255 {
        return Err(ApiError::client(
            "Family name is too long. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ));
    }
    if !validate::is_resource_name(s) {
        return Err(ApiError::client(format!(
            "Family '{s}' contains invalid characters. Up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed."
        )));
    }
    Ok(())
}

/// Validates a RegisterTaskDefinition request body.
pub fn validate_register(body: &Value) -> Result<Registration, ApiError> {
    let Value::Object(fields) = body else {
        let message = if body.is_array() {
            "Start of list found where not expected"
        } else {
            "Expected a RegisterTaskDefinitionRequest structure"
        };
        return Err(ApiError::new(ErrorKind::SerializationException, message));
    };
    let len = serde_json::to_vec(body)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if len > MAX_REQUEST_BYTES {
        return Err(ApiError::client(format!(
            "Actual length: '{len}'. Max allowed length is {MAX_REQUEST_BYTES} bytes."
        )));
    }
    let tags = validate_tags(fields.get("tags").unwrap_or(&Value::Null))?;
    let mut without_tags = fields.clone();
    without_tags.remove("tags");
    let cleaned = shape::check(
        &Value::Object(without_tags),
        &schema::REGISTER_TASK_DEFINITION_REQUEST,
        "",
        ErrorKind::ClientException,
    )?;
    let Value::Object(mut definition) = cleaned else {
        return Err(ApiError::server("Shape check returned a non-object."));
    };
    let facts = validate::validate_definition(&definition, false)?;
    render::apply_defaults(&mut definition, &facts.network_mode);
    let family = validate::str_of(&definition, "family")
        .unwrap_or_default()
        .to_string();
    let (_, requirements) = containers_for_run(&definition, None)?;
    Ok(Registration {
        family,
        definition,
        tags,
        requirements,
    })
}

/// The ECS `TaskDefinition` object for a stored definition: everything the
/// client sent, unchanged, plus `taskDefinitionArn`, `revision`, `status`,
/// `registeredAt`, `deregisteredAt`, `registeredBy`, `requiresAttributes` and
/// `compatibilities`. Timestamps are epoch seconds.
pub fn render(
    definition: &Map<String, Value>,
    arn: &str,
    revision: u32,
    status: &str,
    registered_at: f64,
    deregistered_at: Option<f64>,
    registered_by: Option<&str>,
) -> Value {
    render::render(
        definition,
        arn,
        revision,
        status,
        registered_at,
        deregistered_at,
        registered_by,
    )
}

#[cfg(test)]
mod tests;
