//! Turning a stored task definition plus a RunTask/StartTask `overrides`
//! (`TaskOverride`) into the containers the agent runs and the resources the
//! scheduler must find. Override problems answer `InvalidParameterException`,
//! as ECS's RunTask does; a wrong JSON type is `SerializationException`.

use berth_api::{ContainerSpec, KeyValuePair, PortMapping};
use serde_json::{Map, Value};

use super::schema;
use super::shape;
use super::units::{parse_task_unit, TaskUnit};
use super::validate::{check_memory_pair, check_task_totals, int_of, list_of, objects_of, str_of};
use super::Requirements;
use crate::error::{ApiError, ErrorKind};

/// ECS limit on the JSON length of a RunTask `overrides` value.
pub const MAX_OVERRIDES_LEN: usize = 8192;

/// Containers and requirements for one task of `definition` with `overrides`.
pub fn containers_for_run(
    definition: &Map<String, Value>,
    overrides: Option<&Value>,
) -> Result<(Vec<ContainerSpec>, Requirements), ApiError> {
    let overrides = match overrides {
        None | Some(Value::Null) => None,
        Some(v) => {
            let len = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if len > MAX_OVERRIDES_LEN {
                return Err(ApiError::invalid(format!(
                    "Container Overrides length must be at most {MAX_OVERRIDES_LEN}"
                )));
            }
            let cleaned = shape::check(
                v,
                &schema::TASK_OVERRIDE,
                "overrides",
                ErrorKind::InvalidParameterException,
            )?;
            match cleaned {
                Value::Object(m) => Some(m),
                _ => None,
            }
        }
    };

    let mut containers = Vec::new();
    for c in objects_of(definition, "containerDefinitions") {
        let spec: ContainerSpec = serde_json::from_value(Value::Object(c.clone())).map_err(|e| {
            tracing::error!(error = %e, "stored container definition does not read as a ContainerSpec");
            ApiError::server("The stored task definition could not be read.")
        })?;
        containers.push(spec);
    }

    let mut task_cpu = str_of(definition, "cpu")
        .map(|s| parse_task_unit(s, TaskUnit::Cpu))
        .transpose()?;
    let mut task_memory = str_of(definition, "memory")
        .map(|s| parse_task_unit(s, TaskUnit::Memory))
        .transpose()?;

    if let Some(ov) = &overrides {
        if let Some(cpu) = str_of(ov, "cpu") {
            task_cpu = Some(parse_task_unit(cpu, TaskUnit::Cpu).map_err(as_invalid)?);
        }
        if let Some(memory) = str_of(ov, "memory") {
            task_memory = Some(parse_task_unit(memory, TaskUnit::Memory).map_err(as_invalid)?);
        }
        if let Some(es) = ov.get("ephemeralStorage").and_then(Value::as_object) {
            let size = int_of(es, "sizeInGiB").unwrap_or(0);
            if !(21..=200).contains(&size) {
                return Err(ApiError::invalid(format!(
                    "ephemeralStorage sizeInGiB {size} must be between 21 and 200."
                )));
            }
        }
        apply_container_overrides(&mut containers, list_of(ov, "containerOverrides"))?;
    }

    // The definition passed these rules at registration; re-checking them here
    // catches what the overrides changed.
    for c in &containers {
        check_memory_pair(
            &c.name,
            c.memory.map(i64::from),
            c.memory_reservation.map(i64::from),
            task_memory,
            ApiError::invalid,
        )?;
    }
    let cpu_sum: i64 = containers.iter().map(|c| i64::from(c.cpu)).sum();
    let memory_sum: i64 = containers.iter().map(reserved_memory).map(i64::from).sum();
    check_task_totals(
        cpu_sum,
        memory_sum,
        task_cpu,
        task_memory,
        ApiError::invalid,
    )?;

    let network_mode = str_of(definition, "networkMode")
        .unwrap_or("bridge")
        .to_string();
    let requirements = Requirements {
        cpu: task_cpu.unwrap_or_else(|| u32::try_from(cpu_sum).unwrap_or(u32::MAX)),
        memory_mib: task_memory.unwrap_or_else(|| u32::try_from(memory_sum).unwrap_or(u32::MAX)),
        ports: static_ports(&containers, &network_mode),
        network_mode,
    };
    Ok((containers, requirements))
}

fn as_invalid(e: ApiError) -> ApiError {
    ApiError::invalid(e.message)
}

/// What a container takes from an instance's memory: its soft limit when it
/// has one, else its hard limit.
fn reserved_memory(c: &ContainerSpec) -> u32 {
    c.memory_reservation.or(c.memory).unwrap_or(0)
}

/// The host ports a task needs reserved on its instance: in host mode every
/// container port (host port = container port); in bridge mode the explicit
/// non-zero host ports (0 or absent is a dynamic port, chosen at placement);
/// none in awsvpc and none modes, where the task has its own namespace.
pub fn static_ports(containers: &[ContainerSpec], network_mode: &str) -> Vec<PortMapping> {
    let mut out: Vec<PortMapping> = Vec::new();
    for c in containers {
        for m in &c.port_mappings {
            let Some(container_port) = m.container_port else {
                continue;
            };
            let host_port = match network_mode {
                "host" => container_port,
                "bridge" => match m.host_port {
                    Some(p) if p != 0 => p,
                    _ => continue,
                },
                _ => continue,
            };
            let mapping = PortMapping {
                container_port: Some(container_port),
                host_port: Some(host_port),
                protocol: Some(m.protocol().to_string()),
            };
            if !out.contains(&mapping) {
                out.push(mapping);
            }
        }
    }
    out
}

fn apply_container_overrides(
    containers: &mut [ContainerSpec],
    overrides: &[Value],
) -> Result<(), ApiError> {
    let mut seen: Vec<&str> = Vec::new();
    for ov in overrides.iter().filter_map(Value::as_object) {
        let Some(name) = str_of(ov, "name") else {
            if ov.is_empty() {
                continue;
            }
            return Err(ApiError::invalid(
                "Container override name must be specified when an override is given.",
            ));
        };
        if seen.contains(&name) {
            return Err(ApiError::invalid(format!(
                "More than one override given for container named {name}."
            )));
        }
        seen.push(name);
        let Some(spec) = containers.iter_mut().find(|c| c.name == name) else {
            return Err(ApiError::invalid(format!(
                "Override for container named {name} is not a container in the TaskDefinition."
            )));
        };
        for r in objects_of(ov, "resourceRequirements") {
            let value = str_of(r, "value").unwrap_or("");
            if str_of(r, "type") == Some("GPU") && !value.parse::<u32>().is_ok_and(|n| n >= 1) {
                return Err(ApiError::invalid(format!(
                    "GPU resource requirement '{value}' in the override for container {name} must be a positive integer."
                )));
            }
        }
        let env_files = list_of(ov, "environmentFiles");
        if env_files.len() > 10 {
            return Err(ApiError::invalid(format!(
                "At most 10 environment files are allowed in the override for container {name}."
            )));
        }
        for f in env_files.iter().filter_map(Value::as_object) {
            let value = str_of(f, "value").unwrap_or("");
            if !value.ends_with(".env") {
                return Err(ApiError::invalid(format!(
                    "Environment file '{value}' in the override for container {name} must have a .env file extension."
                )));
            }
        }
        if let Some(Value::Array(cmd)) = ov.get("command") {
            spec.command = Some(
                cmd.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            );
        }
        for e in objects_of(ov, "environment") {
            let var = str_of(e, "name").unwrap_or("");
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(ApiError::invalid(format!(
                    "Invalid environment variable name '{var}' in the override for container {name}."
                )));
            }
            let value = str_of(e, "value").unwrap_or("").to_string();
            match spec.environment.iter_mut().find(|kv| kv.name == var) {
                Some(kv) => kv.value = value,
                None => spec.environment.push(KeyValuePair {
                    name: var.to_string(),
                    value,
                }),
            }
        }
        if let Some(cpu) = int_of(ov, "cpu") {
            spec.cpu = u32::try_from(cpu).map_err(|_| {
                ApiError::invalid(format!(
                    "Invalid 'cpu' override for container {name}: {cpu}. The value must be 0 or greater."
                ))
            })?;
        }
        for (key, slot) in [
            ("memory", &mut spec.memory),
            ("memoryReservation", &mut spec.memory_reservation),
        ] {
            if let Some(v) = int_of(ov, key) {
                *slot = Some(u32::try_from(v).map_err(|_| {
                    ApiError::invalid(format!(
                        "Invalid '{key}' override for container {name}: {v}."
                    ))
                })?);
            }
        }
    }
    Ok(())
}
