//! ECS task actions: RunTask, StartTask, StopTask, DescribeTasks, ListTasks.

use serde_json::{json, Value};

use super::{includes, paginate, render, Call, Params};
use crate::cql;
use crate::error::ApiError;
use crate::model::Model;
use crate::scheduler::Strategy;
use crate::state::{self, active_cluster, find_cluster, find_task, Outcome, Request, RunTask};

fn tasks_response(snap: &Model, outcome: Outcome, with_tags: bool) -> Result<Value, ApiError> {
    let Outcome::Tasks { ids, failures } = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let tasks: Vec<Value> = ids
        .iter()
        .filter_map(|id| snap.tasks.get(id))
        .map(|t| render::task(t, with_tags))
        .collect();
    Ok(json!({
        "tasks": tasks,
        "failures": failures.iter().map(render::failure).collect::<Vec<_>>(),
    }))
}

/// The fields RunTask and StartTask share.
fn common(p: &Params<'_>) -> Result<RunTask, ApiError> {
    let task_definition = p.req_str("taskDefinition")?.to_string();
    let started_by = p.opt_str("startedBy")?;
    if started_by.is_some_and(|s| s.chars().count() > 36) {
        return Err(ApiError::invalid(
            "startedBy must be at most 36 characters.",
        ));
    }
    let group = p.opt_str("group")?;
    if group.is_some_and(|g| g.is_empty() || g.chars().count() > 255) {
        return Err(ApiError::invalid(
            "group must be between 1 and 255 characters.",
        ));
    }
    let overrides = p.opt_object("overrides")?.map(|o| Value::Object(o.clone()));
    let capacity_provider_strategy =
        super::capacity::parse_strategy(p, "capacityProviderStrategy")?;
    let (member_of, distinct_instance) = constraints(p)?;
    let strategies = strategies(p)?;
    let network_configuration = p
        .opt_object("networkConfiguration")?
        .map(|o| crate::network::parse_network_configuration(&Value::Object(o.clone())))
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(RunTask {
        cluster: p.opt_str("cluster")?.map(str::to_string),
        task_definition,
        count: 1,
        overrides,
        started_by: started_by.map(str::to_string),
        group: group.map(str::to_string),
        client_token: None,
        launch_type: None,
        tags: p.tags("tags")?,
        instances: None,
        member_of,
        distinct_instance,
        strategies,
        propagate_taskdef_tags: match p.opt_str("propagateTags")? {
            None | Some("NONE") | Some("SERVICE") => false,
            Some("TASK_DEFINITION") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid propagateTags value: {other}"
                )))
            }
        },
        network_configuration,
        for_service: false,
        capacity: crate::capacity::RunCapacity::given(capacity_provider_strategy),
    })
}

/// `placementConstraints`: at most 10 of `distinctInstance` and `memberOf`.
pub(crate) fn constraints(p: &Params<'_>) -> Result<(Vec<cql::Expr>, bool), ApiError> {
    let list = p
        .opt_array("placementConstraints")?
        .map(|a| a.as_slice())
        .unwrap_or(&[]);
    if list.len() > 10 {
        return Err(ApiError::invalid(
            "placementConstraints can have at most 10 items.",
        ));
    }
    let mut member_of = Vec::new();
    let mut distinct = false;
    for c in list {
        let o = c
            .as_object()
            .ok_or_else(|| ApiError::invalid("Each placement constraint must be a structure."))?;
        let cp = Params(o);
        match cp.opt_str("type")? {
            Some("distinctInstance") => distinct = true,
            Some("memberOf") => {
                let expr = cp.opt_str("expression")?.ok_or_else(|| {
                    ApiError::invalid("A memberOf placement constraint needs an expression.")
                })?;
                member_of.push(cql::parse(expr).map_err(|e| ApiError::invalid(e.to_string()))?);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid placement constraint type: {}",
                    other.unwrap_or("null")
                )))
            }
        }
    }
    Ok((member_of, distinct))
}

/// `placementStrategy`: at most 5 of `random`, `spread` (instanceId, host,
/// attribute:NAME) and `binpack` (cpu, memory), applied in order.
pub(crate) fn strategies(p: &Params<'_>) -> Result<Vec<Strategy>, ApiError> {
    let list = p
        .opt_array("placementStrategy")?
        .map(|a| a.as_slice())
        .unwrap_or(&[]);
    if list.len() > 5 {
        return Err(ApiError::invalid(
            "placementStrategy can have at most 5 items.",
        ));
    }
    let mut out = Vec::new();
    for s in list {
        let o = s
            .as_object()
            .ok_or_else(|| ApiError::invalid("Each placement strategy must be a structure."))?;
        let sp = Params(o);
        let field = sp.opt_str("field")?;
        let strategy = match (sp.opt_str("type")?, field) {
            (Some("random"), None) => Strategy::Random,
            (Some("spread"), Some(f)) if f.eq_ignore_ascii_case("instanceId") || f == "host" => {
                Strategy::SpreadInstance
            }
            (Some("spread"), Some(f)) if f.len() > 10 && f.starts_with("attribute:") => {
                Strategy::SpreadAttribute(f["attribute:".len()..].to_string())
            }
            (Some("binpack"), Some(f)) if f.eq_ignore_ascii_case("cpu") => Strategy::BinpackCpu,
            (Some("binpack"), Some(f)) if f.eq_ignore_ascii_case("memory") => {
                Strategy::BinpackMemory
            }
            (t, f) => {
                return Err(ApiError::invalid(format!(
                    "Invalid placement strategy: type {} field {}",
                    t.unwrap_or("null"),
                    f.unwrap_or("null")
                )))
            }
        };
        out.push(strategy);
    }
    Ok(out)
}

pub async fn run(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let mut r = common(p)?;
    let count = p.opt_int("count")?.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(ApiError::invalid("count must be between 1 and 10."));
    }
    r.count = count as u32;
    match p.opt_str("launchType")? {
        None => {}
        Some(lt @ ("EC2" | "EXTERNAL")) => r.launch_type = Some(lt.to_string()),
        Some("FARGATE") => {
            return Err(ApiError::invalid(
                "The FARGATE launch type is not supported by Berth; use EC2 or EXTERNAL.",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Unsupported launch type: {other}"
            )))
        }
    }
    if let Some(tok) = p.opt_str("clientToken")? {
        if tok.is_empty() || tok.len() > 64 {
            return Err(ApiError::invalid(
                "clientToken must be between 1 and 64 characters.",
            ));
        }
        r.client_token = Some(tok.to_string());
    }
    let (snap, outcome) = call.state.submit(Request::RunTask(r)).await?;
    tasks_response(&snap, outcome, true)
}

pub async fn start(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let mut r = common(p)?;
    let instances = p
        .opt_str_list("containerInstances")?
        .ok_or_else(|| ApiError::invalid("containerInstances can not be null."))?;
    if instances.is_empty() || instances.len() > 10 {
        return Err(ApiError::invalid(
            "containerInstances must have between 1 and 10 items.",
        ));
    }
    r.instances = Some(instances.iter().map(|s| s.to_string()).collect());
    let (snap, outcome) = call.state.submit(Request::RunTask(r)).await?;
    tasks_response(&snap, outcome, true)
}

pub async fn stop(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let task = p.req_str("task")?;
    let reason = p.opt_str("reason")?;
    if reason.is_some_and(|r| r.chars().count() > 255) {
        return Err(ApiError::invalid("reason must be at most 255 characters."));
    }
    let (snap, outcome) = call
        .state
        .submit(Request::StopTask {
            cluster: p.opt_str("cluster")?.map(str::to_string),
            task: task.to_string(),
            reason: reason.map(str::to_string),
        })
        .await?;
    let Outcome::Task(id) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let t = snap
        .tasks
        .get(&id)
        .ok_or_else(|| ApiError::server("task vanished"))?;
    Ok(json!({"task": render::task(t, false)}))
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let refs = p
        .opt_str_list("tasks")?
        .ok_or_else(|| ApiError::invalid("tasks can not be null."))?;
    if refs.is_empty() {
        return Err(ApiError::invalid("Tasks cannot be empty."));
    }
    if refs.len() > 100 {
        return Err(ApiError::invalid("tasks can have at most 100 items."));
    }
    let with_tags = includes(p, &["TAGS"], "TAGS")?;
    let snap = call.state.snapshot();
    let cluster = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut tasks = vec![];
    let mut failures = vec![];
    for r in refs {
        match find_task(&snap, &cluster.name, r) {
            Some(t) => tasks.push(render::task(t, with_tags)),
            None => {
                let arn = if r.starts_with("arn:") {
                    r.to_string()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:task/{}/{}",
                        cluster.region, call.account_id, cluster.name, r
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"tasks": tasks, "failures": failures}))
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    let snap = call.state.snapshot();
    let cluster = find_cluster(&snap, p.opt_str("cluster")?)
        .filter(|c| c.status == "ACTIVE")
        .ok_or_else(ApiError::cluster_not_found)?;
    let instance = match p.opt_str("containerInstance")? {
        Some(r) => Some(
            state::find_instance(&snap, &cluster.name, r)
                .map(|i| i.id.clone())
                .ok_or_else(|| {
                    ApiError::invalid("The referenced container instance was not found.")
                })?,
        ),
        None => None,
    };
    let family = p.opt_str("family")?;
    let started_by = p.opt_str("startedBy")?;
    let service = p.opt_str("serviceName")?;
    let desired = p.opt_str("desiredStatus")?.unwrap_or("RUNNING");
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(ApiError::invalid(format!(
            "Invalid desiredStatus: {desired}"
        )));
    }
    let launch_type = p.opt_str("launchType")?;
    let mut arns: Vec<String> = snap
        .tasks
        .values()
        .filter(|t| t.cluster == cluster.name)
        .filter(|t| instance.as_ref().is_none_or(|i| &t.instance_id == i))
        .filter(|t| family.is_none_or(|f| t.family == f))
        .filter(|t| started_by.is_none_or(|s| t.started_by.as_deref() == Some(s)))
        .filter(|t| {
            service.is_none_or(|s| {
                t.group.strip_prefix("service:") == Some(s.rsplit('/').next().unwrap_or(s))
            })
        })
        .filter(|t| {
            serde_json::to_value(t.desired_status)
                .ok()
                .and_then(|v| v.as_str().map(|s| s == desired))
                .unwrap_or(false)
        })
        .filter(|t| launch_type.is_none_or(|l| t.launch_type == l))
        .map(|t| t.arn.clone())
        .collect();
    arns.sort();
    let (page, next) = paginate(arns, p.opt_str("nextToken")?, max)?;
    let mut out = json!({"taskArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}
