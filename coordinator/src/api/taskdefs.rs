//! ECS task-definition actions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeregisterTaskDefinition.
//! Validation and rendering of the definition itself belong to `crate::taskdef`.

use serde_json::{json, Map, Value};

use super::{includes, paginate, render, Call, Params};
use crate::error::ApiError;
use crate::model::{Model, Tag, TaskDef};
use crate::state::{find_task_def, Outcome, Request};
use crate::taskdef;

fn render_td(td: &TaskDef) -> Value {
    taskdef::render(
        &td.definition,
        &td.arn,
        td.revision,
        &td.status,
        td.registered_at,
        td.deregistered_at,
        Some(&td.registered_by),
    )
}

fn outcome_td<'a>(snap: &'a Model, outcome: &Outcome) -> Result<&'a TaskDef, ApiError> {
    match outcome {
        Outcome::TaskDef { family, revision } => snap
            .task_def(family, *revision)
            .map(|a| a.as_ref())
            .ok_or_else(|| ApiError::server("task definition vanished")),
        _ => Err(ApiError::server("unexpected outcome")),
    }
}

pub async fn register(call: &Call<'_>, body: &Map<String, Value>) -> Result<Value, ApiError> {
    let reg = taskdef::validate_register(&Value::Object(body.clone()))?;
    let tags: Vec<Tag> = reg
        .tags
        .into_iter()
        .map(|t| Tag {
            key: t.key,
            value: t.value,
        })
        .collect();
    let (snap, outcome) = call
        .state
        .submit(Request::RegisterTaskDef {
            family: reg.family,
            definition: reg.definition,
            tags,
            region: call.region.to_string(),
        })
        .await?;
    let td = outcome_td(&snap, &outcome)?;
    Ok(json!({"taskDefinition": render_td(td), "tags": render::tags(&td.tags)}))
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let reference = p.req_str("taskDefinition")?;
    let with_tags = includes(p, &["TAGS"], "TAGS")?;
    let r = taskdef::parse_reference(reference)?;
    let snap = call.state.snapshot();
    let td = find_task_def(&snap, &r)
        .ok_or_else(|| ApiError::client("Unable to describe task definition."))?;
    let mut out = json!({"taskDefinition": render_td(td)});
    if with_tags {
        out["tags"] = render::tags(&td.tags);
    }
    Ok(out)
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    let family = p.opt_str("familyPrefix")?;
    let status = p.opt_str("status")?.unwrap_or("ACTIVE");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS") {
        return Err(ApiError::invalid(format!("Invalid status: {status}")));
    }
    let desc = match p.opt_str("sort")?.unwrap_or("ASC") {
        "ASC" => false,
        "DESC" => true,
        other => return Err(ApiError::invalid(format!("Invalid sort: {other}"))),
    };
    let snap = call.state.snapshot();
    // Sort keys order family then numeric revision; the token walks the keys.
    let mut rows: Vec<(String, String)> = Vec::new();
    for (name, fam) in &snap.families {
        if family.is_some_and(|f| f != name) {
            continue;
        }
        for (rev, td) in &fam.revisions {
            if td.status == status {
                rows.push((format!("{name}:{rev:010}"), td.arn.clone()));
            }
        }
    }
    rows.sort();
    if desc {
        rows.reverse();
        // Reverse order needs keys that sort descending for the token.
        let keys: Vec<String> = (0..rows.len()).map(|i| format!("{i:010}")).collect();
        let (page, next) = paginate(keys, p.opt_str("nextToken")?, max)?;
        let arns: Vec<&String> = page
            .iter()
            .filter_map(|k| k.parse::<usize>().ok())
            .filter_map(|i| rows.get(i).map(|r| &r.1))
            .collect();
        let mut out = json!({"taskDefinitionArns": arns});
        if let Some(n) = next {
            out["nextToken"] = json!(n);
        }
        return Ok(out);
    }
    let keys: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let (page, next) = paginate(keys, p.opt_str("nextToken")?, max)?;
    let arns: Vec<&String> = page
        .iter()
        .filter_map(|k| rows.binary_search_by(|r| r.0.cmp(k)).ok())
        .map(|i| &rows[i].1)
        .collect();
    let mut out = json!({"taskDefinitionArns": arns});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub fn list_families(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    let prefix = p.opt_str("familyPrefix")?.unwrap_or("");
    let status = p.opt_str("status")?.unwrap_or("ALL");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "ALL") {
        return Err(ApiError::invalid(format!("Invalid status: {status}")));
    }
    let snap = call.state.snapshot();
    let families: Vec<String> = snap
        .families
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter(|(_, fam)| {
            let any_active = fam.revisions.values().any(|td| td.status == "ACTIVE");
            match status {
                "ACTIVE" => any_active,
                "INACTIVE" => !any_active,
                _ => true,
            }
        })
        .map(|(name, _)| name.clone())
        .collect();
    let (page, next) = paginate(families, p.opt_str("nextToken")?, max)?;
    let mut out = json!({"families": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub async fn deregister(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let reference = p.req_str("taskDefinition")?;
    let (snap, outcome) = call
        .state
        .submit(Request::DeregisterTaskDef {
            reference: reference.to_string(),
        })
        .await?;
    let td = outcome_td(&snap, &outcome)?;
    Ok(json!({"taskDefinition": render_td(td)}))
}

pub async fn delete(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let refs = p
        .opt_str_list("taskDefinitions")?
        .ok_or_else(|| ApiError::invalid("taskDefinitions can not be null."))?;
    if refs.is_empty() || refs.len() > 10 {
        return Err(ApiError::invalid(
            "taskDefinitions must have between 1 and 10 items.",
        ));
    }
    let (snap, outcome) = call
        .state
        .submit(Request::DeleteTaskDefs {
            references: refs.iter().map(|s| s.to_string()).collect(),
        })
        .await?;
    let Outcome::TaskDefs { found, failures } = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let tds: Vec<Value> = found
        .iter()
        .filter_map(|(f, r)| snap.task_def(f, *r))
        .map(|td| render_td(td))
        .collect();
    Ok(json!({
        "taskDefinitions": tds,
        "failures": failures.iter().map(render::failure).collect::<Vec<_>>(),
    }))
}
