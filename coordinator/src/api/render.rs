//! Renders model entities as the ECS JSON objects botocore expects
//! (`Cluster`, `Task`, `Container`, `ContainerInstance`, `Failure`, `Tag`).

use berth_api::{ContainerStatus, HealthStatus, TaskStatus};
use serde_json::{json, Map, Value};

use crate::model::{Cluster, Deployment, Failure, Instance, Model, Service, Tag, Task};
use crate::state::usage;

pub fn tags(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect(),
    )
}

pub fn failure(f: &Failure) -> Value {
    let mut m = Map::new();
    if let Some(a) = &f.arn {
        m.insert("arn".into(), json!(a));
    }
    m.insert("reason".into(), json!(f.reason));
    if let Some(d) = &f.detail {
        m.insert("detail".into(), json!(d));
    }
    Value::Object(m)
}

pub fn cluster(m: &Model, c: &Cluster, with_tags: bool, with_stats: bool) -> Value {
    let mut instances = 0;
    for i in m.instances.values() {
        if i.cluster == c.name && i.status != "INACTIVE" {
            instances += 1;
        }
    }
    let (mut running, mut pending) = (0u32, 0u32);
    let (mut running_ext, mut pending_ext) = (0u32, 0u32);
    if c.status == "ACTIVE" {
        for t in m.tasks.values().filter(|t| t.cluster == c.name) {
            match t.last_status {
                TaskStatus::Running => {
                    running += 1;
                    if t.launch_type == "EXTERNAL" {
                        running_ext += 1;
                    }
                }
                s if s < TaskStatus::Running => {
                    pending += 1;
                    if t.launch_type == "EXTERNAL" {
                        pending_ext += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let settings = if c.settings.is_empty() {
        json!([{"name": "containerInsights", "value": "disabled"}])
    } else {
        Value::Array(c.settings.clone())
    };
    let mut out = json!({
        "clusterArn": c.arn,
        "clusterName": c.name,
        "status": c.status,
        "registeredContainerInstancesCount": instances,
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": m.services.values().filter(|s| s.cluster == c.name && s.status == "ACTIVE").count(),
        "statistics": [],
        "tags": [],
        "settings": settings,
        "capacityProviders": c.capacity_providers,
        "defaultCapacityProviderStrategy": super::capacity::strategy_json(&c.default_capacity_provider_strategy),
    });
    if with_stats {
        out["statistics"] = json!([
            {"name": "runningEC2TasksCount", "value": (running - running_ext).to_string()},
            {"name": "runningFargateTasksCount", "value": "0"},
            {"name": "runningExternalTasksCount", "value": running_ext.to_string()},
            {"name": "pendingEC2TasksCount", "value": (pending - pending_ext).to_string()},
            {"name": "pendingFargateTasksCount", "value": "0"},
            {"name": "pendingExternalTasksCount", "value": pending_ext.to_string()},
            {"name": "activeEC2ServiceCount", "value": "0"},
            {"name": "activeFargateServiceCount", "value": "0"},
            {"name": "drainingEC2ServiceCount", "value": "0"},
            {"name": "drainingFargateServiceCount", "value": "0"},
        ]);
    }
    if with_tags {
        out["tags"] = tags(&c.tags);
    }
    out
}

fn put_opt<T: serde::Serialize>(m: &mut Map<String, Value>, k: &str, v: &Option<T>) {
    if let Some(v) = v {
        m.insert(k.into(), json!(v));
    }
}

/// `containers[].networkInterfaces`: the task's ENI, for awsvpc tasks.
fn network_interfaces(t: &Task) -> Value {
    match &t.awsvpc {
        Some(eni) => json!([{
            "attachmentId": eni.attachment.attachment_id,
            "privateIpv4Address": eni.attachment.ip,
        }]),
        None => json!([]),
    }
}

/// Task `attachments`: the awsvpc ENI as ECS shows it. Its status follows the
/// task: PRECREATED until it runs, ATTACHED while it runs, DELETED once STOPPED.
fn attachments(t: &Task) -> Value {
    let Some(eni) = &t.awsvpc else {
        return json!([]);
    };
    let status = match t.last_status {
        TaskStatus::Stopped => "DELETED",
        s if s >= TaskStatus::Running => "ATTACHED",
        _ => "PRECREATED",
    };
    let a = &eni.attachment;
    let subnet = eni
        .configuration
        .subnets
        .first()
        .cloned()
        .unwrap_or_default();
    json!([{
        "id": a.attachment_id,
        "type": "ElasticNetworkInterface",
        "status": status,
        "details": [
            {"name": "subnetId", "value": subnet},
            {"name": "networkInterfaceId", "value": a.network_interface_id},
            {"name": "macAddress", "value": a.mac},
            {"name": "privateDnsName", "value": format!("ip-{}.ec2.internal", a.ip.replace('.', "-"))},
            {"name": "privateIPv4Address", "value": a.ip},
        ],
    }])
}

pub fn task(t: &Task, with_tags: bool) -> Value {
    let containers: Vec<Value> = t
        .containers
        .iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("containerArn".into(), json!(c.arn));
            o.insert("taskArn".into(), json!(t.arn));
            o.insert("name".into(), json!(c.spec.name));
            o.insert("image".into(), json!(c.spec.image));
            put_opt(&mut o, "imageDigest", &c.image_digest);
            put_opt(&mut o, "runtimeId", &c.runtime_id);
            o.insert("lastStatus".into(), json!(c.last_status));
            put_opt(&mut o, "exitCode", &c.exit_code);
            put_opt(&mut o, "reason", &c.reason);
            // ECS lists bindings once the container runs; bridge-mode
            // bindings are decided at placement but shown from then on.
            let bindings: &[berth_api::NetworkBinding] =
                if c.last_status == ContainerStatus::Pending {
                    &[]
                } else {
                    &c.network_bindings
                };
            o.insert(
                "networkBindings".into(),
                Value::Array(
                    bindings
                        .iter()
                        .map(|b| {
                            json!({"bindIP": b.bind_ip, "containerPort": b.container_port,
                                   "hostPort": b.host_port, "protocol": b.protocol})
                        })
                        .collect(),
                ),
            );
            o.insert("networkInterfaces".into(), network_interfaces(t));
            o.insert("healthStatus".into(), json!(c.health().as_str()));
            o.insert("cpu".into(), json!(c.spec.cpu.to_string()));
            if let Some(mem) = c.spec.memory {
                o.insert("memory".into(), json!(mem.to_string()));
            }
            if let Some(mr) = c.spec.memory_reservation {
                o.insert("memoryReservation".into(), json!(mr.to_string()));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("attachments".into(), attachments(t));
    o.insert("attributes".into(), json!([]));
    put_opt(&mut o, "availabilityZone", &t.availability_zone);
    put_opt(&mut o, "capacityProviderName", &t.capacity_provider_name);
    o.insert("clusterArn".into(), json!(t.cluster_arn));
    o.insert("containerInstanceArn".into(), json!(t.instance_arn));
    o.insert("containers".into(), Value::Array(containers));
    o.insert("cpu".into(), json!(t.cpu.to_string()));
    o.insert("createdAt".into(), json!(t.created_at));
    o.insert("desiredStatus".into(), json!(t.desired_status));
    o.insert("enableExecuteCommand".into(), json!(false));
    put_opt(&mut o, "executionStoppedAt", &t.execution_stopped_at);
    o.insert("group".into(), json!(t.group));
    o.insert("healthStatus".into(), json!(task_health(t).as_str()));
    o.insert("lastStatus".into(), json!(t.last_status));
    o.insert("launchType".into(), json!(t.launch_type));
    o.insert("memory".into(), json!(t.memory.to_string()));
    o.insert("overrides".into(), t.overrides.clone());
    put_opt(&mut o, "pullStartedAt", &t.pull_started_at);
    put_opt(&mut o, "pullStoppedAt", &t.pull_stopped_at);
    put_opt(&mut o, "startedAt", &t.started_at);
    put_opt(&mut o, "startedBy", &t.started_by);
    put_opt(&mut o, "stopCode", &t.stop_code);
    put_opt(&mut o, "stoppedAt", &t.stopped_at);
    put_opt(&mut o, "stoppedReason", &t.stopped_reason);
    put_opt(&mut o, "stoppingAt", &t.stopping_at);
    if with_tags {
        o.insert("tags".into(), tags(&t.tags));
    }
    o.insert("taskArn".into(), json!(t.arn));
    o.insert("taskDefinitionArn".into(), json!(t.task_definition_arn));
    o.insert("version".into(), json!(t.version));
    Value::Object(o)
}

fn int_resource(name: &str, v: i64) -> Value {
    json!({"name": name, "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": v})
}

fn set_resource(name: &str, ports: impl Iterator<Item = String>) -> Value {
    json!({"name": name, "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0,
           "integerValue": 0, "stringSetValue": ports.collect::<Vec<_>>()})
}

pub fn instance(m: &Model, i: &Instance, connected: bool, with_tags: bool) -> Value {
    let u = usage(m, i);
    let registered: Vec<Value> = i
        .registered_resources
        .iter()
        .map(|r| {
            if r.kind == "STRINGSET" {
                set_resource(&r.name, r.string_set_value.iter().cloned())
            } else {
                int_resource(&r.name, r.integer_value)
            }
        })
        .collect();
    let remaining: Vec<Value> = i
        .registered_resources
        .iter()
        .map(|r| match r.name.as_str() {
            "CPU" => int_resource("CPU", r.integer_value - u.cpu),
            "MEMORY" => int_resource("MEMORY", r.integer_value - u.memory),
            "PORTS" => set_resource("PORTS", u.tcp.iter().map(|p| p.to_string())),
            "PORTS_UDP" => set_resource("PORTS_UDP", u.udp.iter().map(|p| p.to_string())),
            _ if r.kind == "STRINGSET" => set_resource(&r.name, r.string_set_value.iter().cloned()),
            _ => int_resource(&r.name, r.integer_value),
        })
        .collect();
    let mut out = json!({
        "containerInstanceArn": i.arn,
        "ec2InstanceId": i.ec2_instance_id,
        "version": i.version,
        "versionInfo": {"agentVersion": i.agent_version, "agentHash": "", "dockerVersion": "containerd"},
        "remainingResources": remaining,
        "registeredResources": registered,
        "status": i.status,
        "agentConnected": connected && i.status != "INACTIVE",
        "runningTasksCount": u.running,
        "pendingTasksCount": u.pending,
        "attributes": i.attributes.iter().map(|a| {
            let mut o = json!({"name": a.name});
            if let Some(v) = &a.value { o["value"] = json!(v); }
            o
        }).collect::<Vec<_>>(),
        "registeredAt": i.registered_at,
        "attachments": [],
    });
    if with_tags {
        out["tags"] = tags(&i.tags);
    }
    out
}

/// ECS task `healthStatus` from its containers' reported health (only
/// essential containers with a health check count).
pub fn task_health(t: &Task) -> HealthStatus {
    HealthStatus::of_task(t.containers.iter().map(|c| {
        (
            c.spec.essential,
            c.spec.health_check.is_some(),
            c.health_status,
        )
    }))
}

/// (running, pending) tasks among `tasks` (desired RUNNING or not, as ECS counts).
fn counts<'a>(tasks: impl Iterator<Item = &'a std::sync::Arc<Task>>) -> (u32, u32) {
    let (mut running, mut pending) = (0, 0);
    for t in tasks {
        if t.last_status == TaskStatus::Running {
            running += 1;
        } else if t.last_status < TaskStatus::Running {
            pending += 1;
        }
    }
    (running, pending)
}

fn deployment(s: &Service, d: &Deployment, tasks: &[std::sync::Arc<Task>]) -> Value {
    let (running, pending) = counts(
        tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(d.id.as_str())),
    );
    let mut o = json!({
        "id": d.id,
        "status": d.status,
        "taskDefinition": d.task_definition,
        "desiredCount": d.desired_count,
        "pendingCount": pending,
        "runningCount": running,
        "failedTasks": d.failed_tasks,
        "createdAt": d.created_at,
        "updatedAt": d.updated_at,
        "launchType": s.launch_type,
        "rolloutState": d.rollout_state,
        "rolloutStateReason": d.rollout_state_reason,
    });
    if let Some(nc) = &d.network_configuration {
        o["networkConfiguration"] = nc.clone();
    }
    // A deployment shows the strategy it was placed with, else its launch
    // type (EXTERNAL for one from before the service took a strategy).
    if let Some(m) = o.as_object_mut() {
        if d.capacity_provider_strategy.is_empty() {
            if s.launch_type.is_empty() {
                m.insert("launchType".into(), json!("EXTERNAL"));
            }
        } else {
            m.remove("launchType");
            m.insert(
                "capacityProviderStrategy".into(),
                super::capacity::strategy_json(&d.capacity_provider_strategy),
            );
        }
    }
    o
}

/// A service placed through capacity providers shows its strategy instead
/// of a launch type (as ECS does).
fn with_strategy(o: &mut Value, s: &Service) {
    if let Some(m) = o.as_object_mut() {
        if !s.capacity_provider_strategy.is_empty() {
            m.remove("launchType");
            m.insert(
                "capacityProviderStrategy".into(),
                super::capacity::strategy_json(&s.capacity_provider_strategy),
            );
        }
    }
}

/// An ECS `Service`: counts from its tasks, deployments PRIMARY first,
/// events newest first.
pub fn service(m: &Model, s: &Service, with_tags: bool) -> Value {
    let tasks = m.service_tasks(&s.key());
    let (running, pending) = counts(tasks.iter());
    let cluster_arn = m
        .clusters
        .get(&s.cluster)
        .map(|c| c.arn.clone())
        .unwrap_or_default();
    let cfg = &s.deployment_configuration;
    let mut o = json!({
        "serviceArn": s.arn,
        "serviceName": s.name,
        "clusterArn": cluster_arn,
        "loadBalancers": [],
        "serviceRegistries": [],
        "status": s.status,
        "desiredCount": s.desired_count,
        "runningCount": running,
        "pendingCount": pending,
        "launchType": s.launch_type,
        "taskDefinition": s.task_definition,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {
                "enable": cfg.circuit_breaker.enable,
                "rollback": cfg.circuit_breaker.rollback,
            },
            "maximumPercent": cfg.maximum_percent,
            "minimumHealthyPercent": cfg.minimum_healthy_percent,
        },
        "deployments": s.deployments.iter().map(|d| deployment(s, d, &tasks)).collect::<Vec<_>>(),
        "events": s.events.iter().map(|e| json!({"id": e.id, "createdAt": e.created_at, "message": e.message})).collect::<Vec<_>>(),
        "createdAt": s.created_at,
        "placementConstraints": s.placement_constraints,
        "placementStrategy": s.placement_strategy,
        "schedulingStrategy": s.scheduling_strategy,
        "deploymentController": {"type": "ECS"},
        "createdBy": s.created_by,
        "enableECSManagedTags": s.enable_ecs_managed_tags,
        "propagateTags": s.propagate_tags,
        "enableExecuteCommand": false,
    });
    if let Some(nc) = &s.network_configuration {
        o["networkConfiguration"] = nc.clone();
    }
    with_strategy(&mut o, s);
    if with_tags {
        o["tags"] = tags(&s.tags);
    }
    o
}
