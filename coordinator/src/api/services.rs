//! ECS service actions: CreateService, UpdateService, DeleteService,
//! DescribeServices, ListServices. Input is checked here in isolation; rules
//! that need state (task definition, existing service) are in
//! `service::plan_*`.

use serde_json::{json, Map, Value};

use super::{includes, paginate, render, Call, Params};
use crate::error::ApiError;
use crate::model::{CircuitBreaker, Model};
use crate::service::{find_service, CreateService, DeploymentConfigInput, UpdateService};
use crate::state::{active_cluster, Outcome, Request};

/// ECS service names: letters, digits, hyphens and underscores, 1-255.
pub fn valid_service_name(name: &str) -> bool {
    super::clusters::valid_cluster_name(name)
}

fn percent(p: &Params<'_>, key: &str) -> Result<Option<u32>, ApiError> {
    match p.opt_int(key)? {
        None => Ok(None),
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(ApiError::invalid(format!(
            "{key} {n} must not be negative."
        ))),
    }
}

fn deployment_configuration(p: &Params<'_>) -> Result<Option<DeploymentConfigInput>, ApiError> {
    let Some(o) = p.opt_object("deploymentConfiguration")? else {
        return Ok(None);
    };
    let dp = Params(o);
    let circuit_breaker = match dp.opt_object("deploymentCircuitBreaker")? {
        None => None,
        Some(cb) => {
            let cp = Params(cb);
            let enable = cp.opt_bool("enable")?.ok_or_else(|| {
                ApiError::invalid("deploymentCircuitBreaker.enable can not be null.")
            })?;
            let rollback = cp.opt_bool("rollback")?.ok_or_else(|| {
                ApiError::invalid("deploymentCircuitBreaker.rollback can not be null.")
            })?;
            Some(CircuitBreaker { enable, rollback })
        }
    };
    if let Some(s) = dp.opt_str("strategy")? {
        if s != "ROLLING" {
            return Err(ApiError::invalid(format!(
                "Deployment strategy {s} is not supported by Berth; use ROLLING."
            )));
        }
    }
    Ok(Some(DeploymentConfigInput {
        minimum_healthy_percent: percent(&dp, "minimumHealthyPercent")?,
        maximum_percent: percent(&dp, "maximumPercent")?,
        circuit_breaker,
    }))
}

/// Rejects features Berth's services do not have (load balancers, service
/// discovery, other deployment controllers).
fn unsupported(p: &Params<'_>) -> Result<(), ApiError> {
    for key in [
        "loadBalancers",
        "serviceRegistries",
        "volumeConfigurations",
        "vpcLatticeConfigurations",
    ] {
        if p.opt_array(key)?.is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::invalid(format!(
                "{key} is not supported by Berth."
            )));
        }
    }
    if p.opt_object("serviceConnectConfiguration")?.is_some() {
        return Err(ApiError::invalid(
            "serviceConnectConfiguration is not supported by Berth.",
        ));
    }
    if let Some(dc) = p.opt_object("deploymentController")? {
        match Params(dc).opt_str("type")? {
            None | Some("ECS") => {}
            Some(t) => {
                return Err(ApiError::invalid(format!(
                    "Deployment controller type {t} is not supported by Berth; use ECS."
                )))
            }
        }
    }
    Ok(())
}

/// `placementConstraints` and `placementStrategy` as given (validated).
type Placement = (Option<Vec<Value>>, Option<Vec<Value>>);

fn placement(p: &Params<'_>) -> Result<Placement, ApiError> {
    // Same validation (limits, types, the query language) as RunTask.
    super::tasks::constraints(p)?;
    super::tasks::strategies(p)?;
    Ok((
        p.opt_array("placementConstraints")?.cloned(),
        p.opt_array("placementStrategy")?.cloned(),
    ))
}

fn network_configuration(p: &Params<'_>) -> Result<Option<Value>, ApiError> {
    match p.opt_object("networkConfiguration")? {
        None => Ok(None),
        Some(o) => {
            let v = Value::Object(o.clone());
            crate::network::parse_network_configuration(&v)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            Ok(Some(v))
        }
    }
}

fn service_response(call: &Call<'_>, snap: &Model, outcome: Outcome) -> Result<Value, ApiError> {
    let Outcome::Service(key) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let s = snap
        .services
        .get(&key)
        .ok_or_else(|| ApiError::server("service vanished"))?;
    let _ = call;
    Ok(json!({"service": render::service(snap, s, true)}))
}

pub async fn create(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = p.req_str("serviceName")?;
    if !valid_service_name(name) {
        return Err(ApiError::invalid(
            "Service name can only contain letters, numbers, hyphens and underscores, and must be between 1 and 255 characters.",
        ));
    }
    unsupported(p)?;
    let task_definition = p
        .opt_str("taskDefinition")?
        .ok_or_else(|| ApiError::invalid("TaskDefinition can not be blank."))?;
    let scheduling_strategy = match p.opt_str("schedulingStrategy")? {
        None | Some("REPLICA") => "REPLICA",
        Some("DAEMON") => "DAEMON",
        Some(o) => {
            return Err(ApiError::invalid(format!(
                "Invalid schedulingStrategy: {o}"
            )))
        }
    };
    let desired_count = match p.opt_int("desiredCount")? {
        None => None,
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Some(n as u32),
        Some(_) => {
            return Err(ApiError::invalid(
                "The desired count must be zero or a positive integer.",
            ))
        }
    };
    if scheduling_strategy == "DAEMON" && desired_count.is_some() {
        return Err(ApiError::invalid(
            "The daemon scheduling strategy does not support a desired count for services.",
        ));
    }
    if scheduling_strategy == "REPLICA" && desired_count.is_none() {
        return Err(ApiError::invalid(
            "The desired count must be specified for the REPLICA scheduling strategy.",
        ));
    }
    // Empty: not given (the strategy or the cluster default decides).
    let launch_type = match p.opt_str("launchType")? {
        None => "",
        Some(lt @ ("EC2" | "EXTERNAL")) => lt,
        Some("FARGATE") => {
            return Err(ApiError::invalid(
                "The FARGATE launch type is not supported by Berth; use EC2 or EXTERNAL.",
            ))
        }
        Some(o) => return Err(ApiError::invalid(format!("Unsupported launch type: {o}"))),
    };
    let (constraints, strategies) = placement(p)?;
    let strategies = strategies.unwrap_or_default();
    if scheduling_strategy == "DAEMON" && !strategies.is_empty() {
        return Err(ApiError::invalid(
            "Placement strategies are not supported with DAEMON scheduling strategy.",
        ));
    }
    let propagate_tags = match p.opt_str("propagateTags")? {
        None | Some("NONE") => "NONE",
        Some(v @ ("SERVICE" | "TASK_DEFINITION")) => v,
        Some(o) => {
            return Err(ApiError::invalid(format!(
                "Invalid propagateTags value: {o}"
            )))
        }
    };
    if let Some(tok) = p.opt_str("clientToken")? {
        if tok.is_empty() || tok.len() > 36 {
            return Err(ApiError::invalid(
                "clientToken must be between 1 and 36 characters.",
            ));
        }
    }
    let r = CreateService {
        cluster: p.opt_str("cluster")?.map(str::to_string),
        name: name.to_string(),
        task_definition: task_definition.to_string(),
        desired_count,
        launch_type: launch_type.to_string(),
        capacity_provider_strategy: super::capacity::parse_strategy(p, "capacityProviderStrategy")?,
        scheduling_strategy: scheduling_strategy.to_string(),
        deployment_configuration: deployment_configuration(p)?.unwrap_or_default(),
        placement_constraints: constraints.unwrap_or_default(),
        placement_strategy: strategies,
        network_configuration: network_configuration(p)?,
        tags: p.tags("tags")?,
        propagate_tags: propagate_tags.to_string(),
        enable_ecs_managed_tags: p.opt_bool("enableECSManagedTags")?.unwrap_or(false),
    };
    let (snap, outcome) = call
        .state
        .submit(Request::CreateService(Box::new(r)))
        .await?;
    service_response(call, &snap, outcome)
}

pub async fn update(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let service = p.req_str("service")?;
    unsupported(p)?;
    let desired_count = match p.opt_int("desiredCount")? {
        None => None,
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Some(n as u32),
        Some(_) => {
            return Err(ApiError::invalid(
                "The desired count must be zero or a positive integer.",
            ))
        }
    };
    let (constraints, strategies) = placement(p)?;
    let r = UpdateService {
        cluster: p.opt_str("cluster")?.map(str::to_string),
        service: service.to_string(),
        desired_count,
        task_definition: p.opt_str("taskDefinition")?.map(str::to_string),
        deployment_configuration: deployment_configuration(p)?,
        placement_constraints: constraints,
        placement_strategy: strategies,
        network_configuration: network_configuration(p)?,
        force_new_deployment: p.opt_bool("forceNewDeployment")?.unwrap_or(false),
        capacity_provider_strategy: super::capacity::parse_strategy(p, "capacityProviderStrategy")?,
    };
    let (snap, outcome) = call
        .state
        .submit(Request::UpdateService(Box::new(r)))
        .await?;
    service_response(call, &snap, outcome)
}

pub async fn delete(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let service = p.req_str("service")?;
    let (snap, outcome) = call
        .state
        .submit(Request::DeleteService {
            cluster: p.opt_str("cluster")?.map(str::to_string),
            service: service.to_string(),
            force: p.opt_bool("force")?.unwrap_or(false),
        })
        .await?;
    service_response(call, &snap, outcome)
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let names = p
        .opt_str_list("services")?
        .ok_or_else(|| ApiError::invalid("services can not be null."))?;
    if names.is_empty() || names.len() > 10 {
        return Err(ApiError::invalid(
            "services must have between 1 and 10 items.",
        ));
    }
    let with_tags = includes(p, &["TAGS"], "TAGS")?;
    let snap = call.state.snapshot();
    let c = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for n in names {
        match find_service(&snap, &c.name, n) {
            Some(s) => services.push(render::service(&snap, s, with_tags)),
            None => {
                let arn = if n.starts_with("arn:") {
                    n.to_string()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:service/{}/{}",
                        c.region, call.account_id, c.name, n
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"services": services, "failures": failures}))
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = match p.opt_int("maxResults")? {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::invalid("maxResults must be between 1 and 100.")),
    };
    let launch_type = p.opt_str("launchType")?;
    if let Some(lt) = launch_type {
        if !matches!(lt, "EC2" | "FARGATE" | "EXTERNAL") {
            return Err(ApiError::invalid(format!("Invalid launchType: {lt}")));
        }
    }
    let strategy = p.opt_str("schedulingStrategy")?;
    if let Some(s) = strategy {
        if !matches!(s, "REPLICA" | "DAEMON") {
            return Err(ApiError::invalid(format!(
                "Invalid schedulingStrategy: {s}"
            )));
        }
    }
    let snap = call.state.snapshot();
    let c = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut arns: Vec<String> = snap
        .services
        .values()
        .filter(|s| s.cluster == c.name && s.status != "INACTIVE")
        .filter(|s| launch_type.is_none_or(|l| s.launch_type == l))
        .filter(|s| strategy.is_none_or(|st| s.scheduling_strategy == st))
        .map(|s| s.arn.clone())
        .collect();
    arns.sort();
    let (page, next) = paginate(arns, p.opt_str("nextToken")?, max)?;
    let mut out = Map::new();
    out.insert("serviceArns".into(), json!(page));
    if let Some(n) = next {
        out.insert("nextToken".into(), json!(n));
    }
    Ok(Value::Object(out))
}
