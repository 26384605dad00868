//! ECS container-instance actions: ListContainerInstances,
//! DescribeContainerInstances, DeregisterContainerInstance.

use serde_json::{json, Value};

use super::{includes, paginate, render, Call, Params};
use crate::cql;
use crate::error::ApiError;
use crate::model::{Instance, Model};
use crate::state::{active_cluster, find_instance, Outcome, Request};

/// What the cluster query language sees of an instance.
fn facts(m: &Model, i: &Instance, connected: bool) -> cql::Facts {
    cql::Facts {
        agent_connected: connected,
        agent_version: i.agent_version.clone(),
        ec2_instance_id: i.ec2_instance_id.clone(),
        registered_at: i.registered_at,
        running_tasks_count: crate::state::usage(m, i).running,
        attributes: i
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
        task_groups: m.active_tasks_on(&i.id).map(|t| t.group.clone()).collect(),
    }
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    let filter = match p.opt_str("filter")? {
        Some(f) => Some(cql::parse(f).map_err(|e| ApiError::invalid(e.to_string()))?),
        None => None,
    };
    let status = p.opt_str("status")?;
    if let Some(s) = status {
        if !matches!(
            s,
            "ACTIVE" | "DRAINING" | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
        ) {
            return Err(ApiError::invalid(format!("Invalid status: {s}")));
        }
    }
    let snap = call.state.snapshot();
    let cluster = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut arns: Vec<String> = snap
        .instances
        .values()
        .filter(|i| i.cluster == cluster.name)
        .filter(|i| match status {
            Some(s) => i.status == s,
            None => i.status == "ACTIVE" || i.status == "DRAINING",
        })
        .filter(|i| match &filter {
            Some(e) => cql::eval(
                e,
                &facts(&snap, i, call.state.heartbeats.is_connected(&i.id)),
            ),
            None => true,
        })
        .map(|i| i.arn.clone())
        .collect();
    arns.sort();
    let (page, next) = paginate(arns, p.opt_str("nextToken")?, max)?;
    let mut out = json!({"containerInstanceArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let refs = p
        .opt_str_list("containerInstances")?
        .ok_or_else(|| ApiError::invalid("containerInstances can not be null."))?;
    if refs.is_empty() || refs.len() > 100 {
        return Err(ApiError::invalid(
            "containerInstances must have between 1 and 100 items.",
        ));
    }
    let with_tags = includes(p, &["TAGS", "CONTAINER_INSTANCE_HEALTH"], "TAGS")?;
    let snap = call.state.snapshot();
    let cluster = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut found = vec![];
    let mut failures = vec![];
    for r in refs {
        match find_instance(&snap, &cluster.name, r) {
            Some(i) => {
                let connected = call.state.heartbeats.is_connected(&i.id);
                found.push(render::instance(&snap, i, connected, with_tags));
            }
            None => {
                let arn = if r.starts_with("arn:") {
                    r.to_string()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:container-instance/{}/{}",
                        cluster.region, call.account_id, cluster.name, r
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"containerInstances": found, "failures": failures}))
}

pub async fn deregister(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let instance = p.req_str("containerInstance")?;
    let force = p.opt_bool("force")?.unwrap_or(false);
    let (snap, outcome) = call
        .state
        .submit(Request::DeregisterInstance {
            cluster: p.opt_str("cluster")?.map(str::to_string),
            instance: instance.to_string(),
            force,
        })
        .await?;
    let Outcome::Instance(id) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let i = snap
        .instances
        .get(&id)
        .ok_or_else(|| ApiError::server("instance vanished"))?;
    let connected = call.state.heartbeats.is_connected(&i.id);
    Ok(json!({"containerInstance": render::instance(&snap, i, connected, false)}))
}

pub async fn update_state(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let refs = p
        .opt_str_list("containerInstances")?
        .ok_or_else(|| ApiError::invalid("containerInstances can not be null."))?;
    if refs.is_empty() || refs.len() > 10 {
        return Err(ApiError::invalid(
            "containerInstances must have between 1 and 10 items.",
        ));
    }
    let status = p.req_str("status")?;
    if !matches!(status, "ACTIVE" | "DRAINING") {
        return Err(ApiError::invalid(format!(
            "Container instance status can only be ACTIVE or DRAINING; got {status}."
        )));
    }
    let (snap, outcome) = call
        .state
        .submit(Request::SetInstanceStatus {
            cluster: p.opt_str("cluster")?.map(str::to_string),
            instances: refs.iter().map(|s| s.to_string()).collect(),
            status: status.to_string(),
        })
        .await?;
    let Outcome::Instances { ids, failures } = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let found: Vec<Value> = ids
        .iter()
        .filter_map(|id| snap.instances.get(id))
        .map(|i| render::instance(&snap, i, call.state.heartbeats.is_connected(&i.id), false))
        .collect();
    Ok(json!({
        "containerInstances": found,
        "failures": failures.iter().map(render::failure).collect::<Vec<_>>(),
    }))
}
