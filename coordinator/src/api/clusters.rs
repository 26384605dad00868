//! ECS cluster actions: CreateCluster, DescribeClusters, ListClusters, DeleteCluster.

use serde_json::{json, Value};

use super::{includes, paginate, render, Call, Params};
use crate::error::ApiError;
use crate::model::Model;
use crate::state::{cluster_name, find_cluster, Outcome, Request};

/// ECS cluster names: letters, digits, hyphens and underscores, 1-255.
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_settings(p: &Params<'_>) -> Result<Vec<Value>, ApiError> {
    let Some(list) = p.opt_array("settings")? else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for s in list {
        let name = s.get("name").and_then(Value::as_str);
        let value = s.get("value").and_then(Value::as_str);
        match (name, value) {
            (Some("containerInsights"), Some(v @ ("enabled" | "disabled" | "enhanced"))) => {
                out.push(json!({"name": "containerInsights", "value": v}))
            }
            _ => {
                return Err(ApiError::invalid(
                    "Cluster settings must be containerInsights with value enabled, disabled or enhanced.",
                ))
            }
        }
    }
    Ok(out)
}

pub async fn create(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = p.opt_str("clusterName")?.unwrap_or("default");
    if !valid_cluster_name(name) {
        return Err(ApiError::invalid(
            "Cluster name can only contain letters, numbers, hyphens and underscores, and must be between 1 and 255 characters.",
        ));
    }
    let providers = p.opt_str_list("capacityProviders")?.unwrap_or_default();
    let strategy =
        super::capacity::parse_strategy(p, "defaultCapacityProviderStrategy")?.unwrap_or_default();
    let tags = p.tags("tags")?;
    let settings = parse_settings(p)?;
    let request = if providers.is_empty() && strategy.is_empty() {
        Request::CreateCluster {
            name: name.to_string(),
            region: call.region.to_string(),
            tags,
            settings,
        }
    } else {
        Request::Capacity(Box::new(crate::capacity::CapacityRequest::CreateCluster {
            name: name.to_string(),
            region: call.region.to_string(),
            tags,
            settings,
            providers: providers.iter().map(|s| s.to_string()).collect(),
            strategy,
        }))
    };
    let (snap, outcome) = call.state.submit(request).await?;
    cluster_response(&snap, outcome)
}

/// `{"cluster": ...}` for the cluster a CreateCluster/DeleteCluster command
/// touched, read from the snapshot published with that command.
fn cluster_response(snap: &Model, outcome: Outcome) -> Result<Value, ApiError> {
    let Outcome::Cluster(name) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let c = snap
        .clusters
        .get(&name)
        .ok_or_else(|| ApiError::server("cluster vanished"))?;
    Ok(json!({"cluster": render::cluster(snap, c, true, false)}))
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let names = p.opt_str_list("clusters")?.unwrap_or_default();
    let names = if names.is_empty() {
        vec!["default"]
    } else {
        names
    };
    if names.len() > 100 {
        return Err(ApiError::invalid("clusters can have at most 100 items."));
    }
    let with_tags = includes(
        p,
        &[
            "ATTACHMENTS",
            "CONFIGURATIONS",
            "SETTINGS",
            "STATISTICS",
            "TAGS",
        ],
        "TAGS",
    )?;
    let with_stats = includes(
        p,
        &[
            "ATTACHMENTS",
            "CONFIGURATIONS",
            "SETTINGS",
            "STATISTICS",
            "TAGS",
        ],
        "STATISTICS",
    )?;
    let with_attachments = includes(
        p,
        &[
            "ATTACHMENTS",
            "CONFIGURATIONS",
            "SETTINGS",
            "STATISTICS",
            "TAGS",
        ],
        "ATTACHMENTS",
    )?;
    let snap = call.state.snapshot();
    let mut clusters = vec![];
    let mut failures = vec![];
    for n in names {
        match find_cluster(&snap, Some(n)) {
            Some(c) => {
                let mut out = render::cluster(&snap, c, with_tags, with_stats);
                if with_attachments {
                    // ECS attaches Auto Scaling policies for managed scaling;
                    // Berth creates none, so a cluster has no attachments.
                    out["attachments"] = json!([]);
                    if !c.capacity_providers.is_empty() {
                        out["attachmentsStatus"] = json!("UPDATE_COMPLETE");
                    }
                }
                clusters.push(out)
            }
            None => {
                let arn = if n.starts_with("arn:") {
                    n.to_string()
                } else {
                    format!(
                        "arn:aws:ecs:{}:{}:cluster/{}",
                        call.region,
                        call.account_id,
                        cluster_name(n)
                    )
                };
                failures.push(json!({"arn": arn, "reason": "MISSING"}));
            }
        }
    }
    Ok(json!({"clusters": clusters, "failures": failures}))
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    let snap = call.state.snapshot();
    let mut arns: Vec<String> = snap
        .clusters
        .values()
        .filter(|c| c.status == "ACTIVE")
        .map(|c| c.arn.clone())
        .collect();
    arns.sort();
    let (page, next) = paginate(arns, p.opt_str("nextToken")?, max)?;
    let mut out = json!({"clusterArns": page});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub async fn delete(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let cluster = p.req_str("cluster")?;
    let (snap, outcome) = call
        .state
        .submit(Request::DeleteCluster {
            cluster: cluster.to_string(),
        })
        .await?;
    cluster_response(&snap, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_table() {
        let long = "a".repeat(256);
        let max = "a".repeat(255);
        for (name, ok) in [
            ("default", true),
            ("my_cluster-1", true),
            (max.as_str(), true),
            ("", false),
            (long.as_str(), false),
            ("has space", false),
            ("dot.ted", false),
            ("slash/x", false),
        ] {
            assert_eq!(valid_cluster_name(name), ok, "{name:?}");
        }
    }
}
