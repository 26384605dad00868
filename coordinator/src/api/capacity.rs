//! ECS capacity-provider actions: CreateCapacityProvider,
//! UpdateCapacityProvider, DeleteCapacityProvider, DescribeCapacityProviders,
//! PutClusterCapacityProviders; plus `capacityProviderStrategy` parsing and
//! rendering shared by RunTask, CreateService/UpdateService and clusters.
//! Rules that need state are in `capacity::plan`.

use serde_json::{json, Map, Value};

use super::{includes, paginate, render, Call, Params};
use crate::capacity::{
    check_provider_name, check_strategy, CapacityProvider, CapacityRequest, ManagedScalingInput,
    StrategyItem,
};
use crate::error::ApiError;
use crate::model::Model;
use crate::state::{Outcome, Request};

/// `capacityProviderStrategy`-shaped member `key`: `None` when absent.
pub fn parse_strategy(p: &Params<'_>, key: &str) -> Result<Option<Vec<StrategyItem>>, ApiError> {
    let Some(list) = p.opt_array(key)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for v in list {
        let o = v.as_object().ok_or_else(|| {
            ApiError::invalid("Each capacity provider strategy item must be a structure.")
        })?;
        let ip = Params(o);
        let capacity_provider = ip.req_str("capacityProvider")?.to_string();
        let weight = ip.opt_int("weight")?.unwrap_or(0);
        let base = ip.opt_int("base")?.unwrap_or(0);
        if !(0..=1000).contains(&weight) {
            return Err(ApiError::invalid(
                "The weight of a capacity provider strategy item must be between 0 and 1000.",
            ));
        }
        if !(0..=100_000).contains(&base) {
            return Err(ApiError::invalid(
                "The base of a capacity provider strategy item must be between 0 and 100000.",
            ));
        }
        out.push(StrategyItem {
            capacity_provider,
            weight: weight as u32,
            base: base as u32,
        });
    }
    check_strategy(&out)?;
    Ok(Some(out))
}

/// A strategy in botocore's shape.
pub fn strategy_json(items: &[StrategyItem]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| json!({"capacityProvider": i.capacity_provider, "weight": i.weight, "base": i.base}))
            .collect(),
    )
}

/// A `CapacityProvider` in botocore's shape.
pub fn provider_json(p: &CapacityProvider, with_tags: bool) -> Value {
    let ms = &p.managed_scaling;
    let mut o = json!({
        "capacityProviderArn": p.arn,
        "name": p.name,
        "status": p.status,
        "type": "EC2_AUTOSCALING",
        "autoScalingGroupProvider": {
            "autoScalingGroupArn": p.auto_scaling_group_arn,
            "managedScaling": {
                "status": ms.status,
                "targetCapacity": ms.target_capacity,
                "minimumScalingStepSize": ms.minimum_scaling_step_size,
                "maximumScalingStepSize": ms.maximum_scaling_step_size,
                "instanceWarmupPeriod": ms.instance_warmup_period,
            },
            "managedTerminationProtection": p.managed_termination_protection,
            "managedDraining": p.managed_draining,
        },
    });
    if let Some(u) = &p.update_status {
        o["updateStatus"] = json!(u);
    }
    if with_tags {
        o["tags"] = render::tags(&p.tags);
    }
    o
}

fn enabled_disabled(p: &Params<'_>, key: &str) -> Result<Option<String>, ApiError> {
    match p.opt_str(key)? {
        None => Ok(None),
        Some(v @ ("ENABLED" | "DISABLED")) => Ok(Some(v.to_string())),
        Some(v) => Err(ApiError::invalid(format!(
            "Invalid {key} value: {v}. Valid values are ENABLED, DISABLED."
        ))),
    }
}

fn ranged(p: &Params<'_>, key: &str, min: i64, max: i64) -> Result<Option<u32>, ApiError> {
    match p.opt_int(key)? {
        None => Ok(None),
        Some(n) if (min..=max).contains(&n) => Ok(Some(n as u32)),
        Some(_) => Err(ApiError::invalid(format!(
            "{key} must be between {min} and {max}."
        ))),
    }
}

fn managed_scaling(p: &Params<'_>) -> Result<Option<ManagedScalingInput>, ApiError> {
    let Some(o) = p.opt_object("managedScaling")? else {
        return Ok(None);
    };
    let mp = Params(o);
    let ms = ManagedScalingInput {
        status: enabled_disabled(&mp, "status")?,
        target_capacity: ranged(&mp, "targetCapacity", 1, 100)?,
        minimum_scaling_step_size: ranged(&mp, "minimumScalingStepSize", 1, 10000)?,
        maximum_scaling_step_size: ranged(&mp, "maximumScalingStepSize", 1, 10000)?,
        instance_warmup_period: ranged(&mp, "instanceWarmupPeriod", 0, 10000)?,
    };
    if let (Some(min), Some(max)) = (ms.minimum_scaling_step_size, ms.maximum_scaling_step_size) {
        if min > max {
            return Err(ApiError::invalid(
                "minimumScalingStepSize must not be greater than maximumScalingStepSize.",
            ));
        }
    }
    Ok(Some(ms))
}

fn refuse_managed_instances(p: &Params<'_>) -> Result<(), ApiError> {
    if p.opt_object("managedInstancesProvider")?.is_some() {
        return Err(ApiError::invalid(
            "managedInstancesProvider is not supported by Berth: a capacity provider names a group of container instances through autoScalingGroupProvider.",
        ));
    }
    if p.opt_str("cluster")?.is_some() {
        return Err(ApiError::invalid(
            "cluster applies only to Amazon ECS Managed Instances capacity providers, which Berth does not have.",
        ));
    }
    Ok(())
}

fn provider_response(snap: &Model, outcome: Outcome) -> Result<Value, ApiError> {
    let Outcome::CapacityProvider(name) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let p = snap
        .capacity_providers
        .get(&name)
        .ok_or_else(|| ApiError::server("capacity provider vanished"))?;
    Ok(json!({"capacityProvider": provider_json(p, true)}))
}

pub async fn create(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = p.req_str("name")?;
    check_provider_name(name)?;
    refuse_managed_instances(p)?;
    let asg = p
        .opt_object("autoScalingGroupProvider")?
        .ok_or_else(|| ApiError::invalid("autoScalingGroupProvider can not be null."))?;
    let ap = Params(asg);
    let arn = ap.req_str("autoScalingGroupArn")?;
    let r = CapacityRequest::Create {
        name: name.to_string(),
        region: call.region.to_string(),
        auto_scaling_group_arn: arn.to_string(),
        managed_scaling: managed_scaling(&ap)?.unwrap_or_default(),
        managed_termination_protection: enabled_disabled(&ap, "managedTerminationProtection")?,
        managed_draining: enabled_disabled(&ap, "managedDraining")?,
        tags: p.tags("tags")?,
    };
    let (snap, outcome) = call.state.submit(Request::Capacity(Box::new(r))).await?;
    provider_response(&snap, outcome)
}

pub async fn update(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = p.req_str("name")?;
    refuse_managed_instances(p)?;
    let empty = Map::new();
    let asg = p.opt_object("autoScalingGroupProvider")?.unwrap_or(&empty);
    let ap = Params(asg);
    let r = CapacityRequest::Update {
        name: name.to_string(),
        managed_scaling: managed_scaling(&ap)?,
        managed_termination_protection: enabled_disabled(&ap, "managedTerminationProtection")?,
        managed_draining: enabled_disabled(&ap, "managedDraining")?,
    };
    let (snap, outcome) = call.state.submit(Request::Capacity(Box::new(r))).await?;
    provider_response(&snap, outcome)
}

pub async fn delete(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let reference = p.req_str("capacityProvider")?;
    refuse_managed_instances(p)?;
    let r = CapacityRequest::Delete {
        reference: reference.to_string(),
    };
    let (snap, outcome) = call.state.submit(Request::Capacity(Box::new(r))).await?;
    provider_response(&snap, outcome)
}

pub fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let with_tags = includes(p, &["TAGS"], "TAGS")?;
    if p.opt_str("cluster")?.is_some() {
        return Err(ApiError::invalid(
            "cluster applies only to Amazon ECS Managed Instances capacity providers, which Berth does not have.",
        ));
    }
    let snap = call.state.snapshot();
    let names = p.opt_str_list("capacityProviders")?.unwrap_or_default();
    if names.len() > 100 {
        return Err(ApiError::invalid(
            "capacityProviders can have at most 100 items.",
        ));
    }
    if !names.is_empty() {
        let mut providers = Vec::new();
        let mut failures = Vec::new();
        for n in names {
            let short = if n.starts_with("arn:") {
                n.rsplit('/').next().unwrap_or(n)
            } else {
                n
            };
            match snap.capacity_providers.get(short) {
                Some(cp) => providers.push(provider_json(cp, with_tags)),
                None => {
                    let arn = if n.starts_with("arn:") {
                        n.to_string()
                    } else {
                        format!(
                            "arn:aws:ecs:{}:{}:capacity-provider/{n}",
                            call.region, call.account_id
                        )
                    };
                    failures.push(json!({"arn": arn, "reason": "MISSING"}));
                }
            }
        }
        return Ok(json!({"capacityProviders": providers, "failures": failures}));
    }
    let max = match p.opt_int("maxResults")? {
        None => 10,
        Some(n) if (1..=10).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::invalid("maxResults must be between 1 and 10.")),
    };
    let all: Vec<String> = snap
        .capacity_providers
        .values()
        .filter(|cp| cp.status == "ACTIVE")
        .map(|cp| cp.name.clone())
        .collect();
    let (page, next) = paginate(all, p.opt_str("nextToken")?, max)?;
    let providers: Vec<Value> = page
        .iter()
        .filter_map(|n| snap.capacity_providers.get(n))
        .map(|cp| provider_json(cp, with_tags))
        .collect();
    let mut out = json!({"capacityProviders": providers, "failures": []});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

pub async fn put_cluster(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let cluster = p.req_str("cluster")?;
    let providers = p
        .opt_str_list("capacityProviders")?
        .ok_or_else(|| ApiError::invalid("capacityProviders can not be null."))?;
    let strategy = parse_strategy(p, "defaultCapacityProviderStrategy")?
        .ok_or_else(|| ApiError::invalid("defaultCapacityProviderStrategy can not be null."))?;
    let r = CapacityRequest::PutClusterCapacityProviders {
        cluster: cluster.to_string(),
        providers: providers.iter().map(|s| s.to_string()).collect(),
        strategy,
    };
    let (snap, outcome) = call.state.submit(Request::Capacity(Box::new(r))).await?;
    let Outcome::Cluster(name) = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    let c = snap
        .clusters
        .get(&name)
        .ok_or_else(|| ApiError::server("cluster vanished"))?;
    Ok(json!({"cluster": render::cluster(&snap, c, true, false)}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    #[allow(clippy::type_complexity)]
    fn parse_strategy_table() {
        // (input, Ok(items as (name, base, weight)) or Err(kind))
        let table: Vec<(Value, Result<Vec<(&str, u32, u32)>, ErrorKind>)> = vec![
            (json!([]), Ok(vec![])),
            (
                json!([{"capacityProvider": "a", "weight": 1, "base": 2}, {"capacityProvider": "b", "weight": 4}]),
                Ok(vec![("a", 2, 1), ("b", 0, 4)]),
            ),
            (json!([{"capacityProvider": "a"}]), Ok(vec![("a", 0, 0)])),
            (
                json!([{"weight": 1}]),
                Err(ErrorKind::InvalidParameterException),
            ),
            (
                json!([{"capacityProvider": "a", "weight": -1}]),
                Err(ErrorKind::InvalidParameterException),
            ),
            (
                json!([{"capacityProvider": "a", "weight": "1"}]),
                Err(ErrorKind::SerializationException),
            ),
            (
                json!([{"capacityProvider": "a", "weight": 0}, {"capacityProvider": "b", "weight": 0}]),
                Err(ErrorKind::InvalidParameterException),
            ),
            (json!("x"), Err(ErrorKind::SerializationException)),
        ];
        for (v, want) in table {
            let body = json!({ "s": v });
            let p = Params(body.as_object().unwrap());
            let got = parse_strategy(&p, "s").map(|o| {
                o.unwrap_or_default()
                    .into_iter()
                    .map(|i| (i.capacity_provider, i.base, i.weight))
                    .collect::<Vec<_>>()
            });
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    let w: Vec<(String, u32, u32)> = w
                        .into_iter()
                        .map(|(n, b, x)| (n.to_string(), b, x))
                        .collect();
                    assert_eq!(g, w, "{body}");
                }
                (Err(e), Err(k)) => assert_eq!(e.kind, k, "{body}"),
                (g, w) => panic!("{body}: got {g:?}, want {w:?}"),
            }
        }
        assert_eq!(parse_strategy(&Params(&Map::new()), "s").unwrap(), None);
    }
}
