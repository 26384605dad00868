//! The EventBridge subset Berth serves (`AWSEvents.*`, SigV4 service
//! `events`) for scheduled tasks: PutRule, DescribeRule, ListRules,
//! EnableRule, DisableRule, DeleteRule, PutTargets, ListTargetsByRule,
//! RemoveTargets, ListRuleNamesByTarget, and TagResource, UntagResource,
//! ListTagsForResource on rules. Shapes, limits and error types follow botocore's
//! `events/2015-10-07` model (PascalCase members). Only the default event bus
//! exists; rules are schedule rules (`rate`/`cron`, see `schedule`) and
//! targets are ECS clusters; event-pattern rules and other target kinds are
//! refused. Input is checked here; rules that need state are in `rules`.

use serde_json::{json, Map, Value};

use crate::api::{paginate, Call, Params};
use crate::error::{ApiError, ErrorKind};
use crate::rules::{self, PutRule, Rule, RuleRequest, RuleTarget, DEFAULT_BUS};
use crate::schedule::Schedule;
use crate::state::Request;

fn validation(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::ValidationException, msg)
}

/// A model-constraint failure, worded as AWS's front end words it.
fn constraint(value: &str, member: &str, rule: &str) -> ApiError {
    validation(format!(
        "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {rule}"
    ))
}

const NAME_PATTERN: &str = "Member must satisfy regular expression pattern: [\\.\\-_A-Za-z0-9]+";

/// Rule names and target ids: 1-64 of `[.\-_A-Za-z0-9]`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn name_member<'a>(p: &Params<'a>, key: &str, member: &str) -> Result<&'a str, ApiError> {
    let v = p
        .opt_str(key)?
        .ok_or_else(|| constraint("null", member, "Member must not be null"))?;
    if v.is_empty() || v.len() > 64 {
        return Err(constraint(
            &format!("'{v}'"),
            member,
            "Member must have length between 1 and 64",
        ));
    }
    if !valid_name(v) {
        return Err(constraint(&format!("'{v}'"), member, NAME_PATTERN));
    }
    Ok(v)
}

fn max_len<'a>(
    p: &Params<'a>,
    key: &str,
    member: &str,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    match p.opt_str(key)? {
        Some(s) if s.chars().count() > max => Err(constraint(
            &format!("'{s}'"),
            member,
            &format!("Member must have length less than or equal to {max}"),
        )),
        other => Ok(other),
    }
}

/// `EventBusName`: absent, `default`, or the default bus's ARN.
fn check_bus(p: &Params<'_>) -> Result<(), ApiError> {
    match p.opt_str("EventBusName")? {
        None | Some(DEFAULT_BUS) => Ok(()),
        Some(b) if b.starts_with("arn:") && b.ends_with(":event-bus/default") => Ok(()),
        Some(b) => Err(ApiError::new(
            ErrorKind::ResourceNotFoundException,
            format!("Event bus {b} does not exist."),
        )),
    }
}

/// `Limit` within 1..=100 (default 100).
fn limit(p: &Params<'_>) -> Result<usize, ApiError> {
    match p.opt_int("Limit")? {
        None => Ok(100),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(constraint(
            &format!("'{n}'"),
            "limit",
            "Member must have value between 1 and 100",
        )),
    }
}

fn page(
    items: Vec<String>,
    p: &Params<'_>,
    max: usize,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    paginate(items, p.opt_str("NextToken")?, max)
        .map_err(|_| validation("The NextToken provided is invalid."))
}

pub async fn dispatch(
    call: &Call<'_>,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let p = Params(body);
    match action {
        "PutRule" => put_rule(call, &p).await,
        "DescribeRule" => describe_rule(call, &p),
        "ListRules" => list_rules(call, &p),
        "EnableRule" => set_state(call, &p, true).await,
        "DisableRule" => set_state(call, &p, false).await,
        "DeleteRule" => delete_rule(call, &p).await,
        "PutTargets" => put_targets(call, &p).await,
        "ListTargetsByRule" => list_targets(call, &p),
        "RemoveTargets" => remove_targets(call, &p).await,
        "ListRuleNamesByTarget" => list_rule_names_by_target(call, &p),
        "TagResource" => tag(call, &p, false).await,
        "UntagResource" => tag(call, &p, true).await,
        "ListTagsForResource" => list_tags(call, &p),
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperationException,
            format!("Operation {action} is not supported by this endpoint."),
        )),
    }
}

async fn submit(
    call: &Call<'_>,
    r: RuleRequest,
) -> Result<std::sync::Arc<crate::model::Model>, ApiError> {
    let (snap, _) = call.state.submit(Request::Rules(Box::new(r))).await?;
    Ok(snap)
}

async fn put_rule(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = name_member(p, "Name", "name")?;
    check_bus(p)?;
    let expr = max_len(p, "ScheduleExpression", "scheduleExpression", 256)?;
    let pattern = max_len(p, "EventPattern", "eventPattern", 4096)?;
    let description = max_len(p, "Description", "description", 512)?;
    let role_arn = max_len(p, "RoleArn", "roleArn", 1600)?;
    if pattern.is_some() {
        return Err(validation(
            "Event pattern rules are not supported by Berth; only ScheduleExpression rules are.",
        ));
    }
    let Some(expr) = expr.filter(|e| !e.is_empty()) else {
        return Err(validation(
            "Parameter(s) EventPattern or ScheduleExpression must be specified.",
        ));
    };
    if let Err(e) = Schedule::parse(expr) {
        tracing::debug!(expr, error = %e, "schedule expression refused");
        return Err(validation("Parameter ScheduleExpression is not valid."));
    }
    let enabled = match p.opt_str("State")? {
        None | Some("ENABLED") => true,
        Some("DISABLED") => false,
        Some("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS") => {
            return Err(validation(
                "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS applies to event-pattern rules, which Berth does not support.",
            ))
        }
        Some(s) => {
            return Err(constraint(
                &format!("'{s}'"),
                "state",
                "Member must satisfy enum value set: [ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS, DISABLED, ENABLED]",
            ))
        }
    };
    let req = RuleRequest::Put(PutRule {
        name: name.to_string(),
        region: call.region.to_string(),
        schedule_expression: expr.to_string(),
        enabled,
        description: description.map(str::to_string),
        role_arn: role_arn.map(str::to_string),
        tags: rules::parse_tags(p.raw("Tags"))?,
    });
    let snap = submit(call, req).await?;
    let rule = snap
        .rules
        .get(name)
        .ok_or_else(|| ApiError::server("rule vanished"))?;
    Ok(json!({"RuleArn": rule.arn}))
}

fn render_rule(r: &Rule, describe: bool) -> Value {
    let mut o = json!({
        "Name": r.name,
        "Arn": r.arn,
        "State": r.state,
        "ScheduleExpression": r.schedule_expression,
        "EventBusName": DEFAULT_BUS,
    });
    if let Some(d) = &r.description {
        o["Description"] = json!(d);
    }
    if let Some(a) = &r.role_arn {
        o["RoleArn"] = json!(a);
    }
    if describe {
        o["CreatedBy"] = json!(r.created_by);
    }
    o
}

fn describe_rule(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = name_member(p, "Name", "name")?;
    check_bus(p)?;
    let snap = call.state.snapshot();
    let r = snap
        .rules
        .get(name)
        .ok_or_else(|| rules::rule_not_found(name))?;
    Ok(render_rule(r, true))
}

fn list_rules(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    check_bus(p)?;
    let prefix = match p.opt_str("NamePrefix")? {
        None => "",
        Some(s) if valid_name(s) => s,
        Some(s) => return Err(constraint(&format!("'{s}'"), "namePrefix", NAME_PATTERN)),
    };
    let max = limit(p)?;
    let snap = call.state.snapshot();
    let names: Vec<String> = snap
        .rules
        .keys()
        .filter(|n| n.starts_with(prefix))
        .cloned()
        .collect();
    let (names, next) = page(names, p, max)?;
    let list: Vec<Value> = names
        .iter()
        .filter_map(|n| snap.rules.get(n))
        .map(|r| render_rule(r, false))
        .collect();
    let mut out = json!({"Rules": list});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

async fn set_state(call: &Call<'_>, p: &Params<'_>, enabled: bool) -> Result<Value, ApiError> {
    let name = name_member(p, "Name", "name")?;
    check_bus(p)?;
    submit(
        call,
        RuleRequest::SetState {
            name: name.to_string(),
            enabled,
        },
    )
    .await?;
    Ok(json!({}))
}

async fn delete_rule(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = name_member(p, "Name", "name")?;
    check_bus(p)?;
    p.opt_bool("Force")?;
    submit(
        call,
        RuleRequest::Delete {
            name: name.to_string(),
        },
    )
    .await?;
    Ok(json!({}))
}

/// Target members Berth cannot act on (other services' parameters).
const OTHER_TARGET_PARAMETERS: [&str; 11] = [
    "InputPath",
    "InputTransformer",
    "KinesisParameters",
    "RunCommandParameters",
    "BatchParameters",
    "SqsParameters",
    "HttpParameters",
    "RedshiftDataParameters",
    "SageMakerPipelineParameters",
    "DeadLetterConfig",
    "AppSyncParameters",
];

/// Whether `arn` is an ECS cluster ARN (`arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME`).
fn is_cluster_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "ecs"
        && parts[5]
            .strip_prefix("cluster/")
            .is_some_and(|n| !n.is_empty())
}

/// A target's semantic check: `Ok` is what the rule will run, `Err` the
/// failed entry's message.
fn target(o: &Map<String, Value>, id: &str, arn: &str) -> Result<RuleTarget, ApiError> {
    let tp = Params(o);
    for key in OTHER_TARGET_PARAMETERS {
        if tp.raw(key).is_some() {
            return Err(validation(format!(
                "{key} is not supported by Berth, which runs ECS targets only."
            )));
        }
    }
    if !is_cluster_arn(arn) {
        return Err(validation(format!(
            "Target {id}: Berth runs ECS targets only; Arn must be an ECS cluster ARN (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME), got {arn}."
        )));
    }
    if let Some(rp) = tp.opt_object("RetryPolicy")? {
        let rp = Params(rp);
        rp.opt_int("MaximumRetryAttempts")?;
        rp.opt_int("MaximumEventAgeInSeconds")?;
    }
    let params = tp.opt_object("EcsParameters")?.ok_or_else(|| {
        validation(format!(
            "Parameter(s) EcsParameters must be specified for target: {id}."
        ))
    })?;
    rules::ecs_parameters(params)?;
    let input = tp.opt_str("Input")?;
    if input.is_some_and(|i| i.chars().count() > 8192) {
        return Err(validation("Input must be at most 8192 characters."));
    }
    rules::input_overrides(input)?;
    let mut ecs = params.clone();
    ecs.entry("TaskCount").or_insert(json!(1));
    Ok(RuleTarget {
        id: id.to_string(),
        arn: arn.to_string(),
        role_arn: max_len(&tp, "RoleArn", "roleArn", 1600)?.map(str::to_string),
        input: input.map(str::to_string),
        ecs_parameters: Value::Object(ecs),
    })
}

async fn put_targets(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let rule = name_member(p, "Rule", "rule")?;
    check_bus(p)?;
    let list = p
        .opt_array("Targets")?
        .ok_or_else(|| constraint("null", "targets", "Member must not be null"))?;
    if list.is_empty() || list.len() > 100 {
        return Err(constraint(
            &format!("'{}' targets", list.len()),
            "targets",
            "Member must have length between 1 and 100",
        ));
    }
    let mut accepted: Vec<RuleTarget> = Vec::new();
    let mut failed: Vec<Value> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let o = t.as_object().ok_or_else(|| {
            ApiError::new(
                ErrorKind::SerializationException,
                "Each target must be a structure.",
            )
        })?;
        let tp = Params(o);
        let id = name_member(&tp, "Id", &format!("targets.{}.member.id", i + 1))?;
        let arn = tp.opt_str("Arn")?.ok_or_else(|| {
            constraint(
                "null",
                &format!("targets.{}.member.arn", i + 1),
                "Member must not be null",
            )
        })?;
        if arn.is_empty() || arn.len() > 1600 {
            return Err(constraint(
                &format!("'{arn}'"),
                &format!("targets.{}.member.arn", i + 1),
                "Member must have length between 1 and 1600",
            ));
        }
        if seen.contains(&id) {
            return Err(validation(format!(
                "The same target Id {id} appears more than once in the request."
            )));
        }
        seen.push(id);
        match target(o, id, arn) {
            Ok(t) => accepted.push(t),
            Err(e) if e.kind == ErrorKind::SerializationException => return Err(e),
            Err(e) => failed.push(json!({
                "TargetId": id,
                "ErrorCode": e.kind.as_str(),
                "ErrorMessage": e.message,
            })),
        }
    }
    if accepted.is_empty() {
        // Nothing to add, but the rule must still exist, as EventBridge checks.
        let snap = call.state.snapshot();
        if !snap.rules.contains_key(rule) {
            return Err(rules::rule_not_found(rule));
        }
    } else {
        submit(
            call,
            RuleRequest::PutTargets {
                rule: rule.to_string(),
                targets: accepted,
            },
        )
        .await?;
    }
    Ok(json!({"FailedEntryCount": failed.len(), "FailedEntries": failed}))
}

fn render_target(t: &RuleTarget) -> Value {
    let mut o = json!({"Id": t.id, "Arn": t.arn, "EcsParameters": t.ecs_parameters});
    if let Some(r) = &t.role_arn {
        o["RoleArn"] = json!(r);
    }
    if let Some(i) = &t.input {
        o["Input"] = json!(i);
    }
    o
}

fn list_targets(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let rule = name_member(p, "Rule", "rule")?;
    check_bus(p)?;
    let max = limit(p)?;
    let snap = call.state.snapshot();
    let r = snap
        .rules
        .get(rule)
        .ok_or_else(|| rules::rule_not_found(rule))?;
    let ids: Vec<String> = r.targets.iter().map(|t| t.id.clone()).collect();
    let (ids, next) = page(ids, p, max)?;
    let list: Vec<Value> = r
        .targets
        .iter()
        .filter(|t| ids.contains(&t.id))
        .map(render_target)
        .collect();
    let mut out = json!({"Targets": list});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

async fn remove_targets(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let rule = name_member(p, "Rule", "rule")?;
    check_bus(p)?;
    p.opt_bool("Force")?;
    let ids = p
        .opt_str_list("Ids")?
        .ok_or_else(|| constraint("null", "ids", "Member must not be null"))?;
    if ids.is_empty() || ids.len() > 100 {
        return Err(constraint(
            &format!("'{}' ids", ids.len()),
            "ids",
            "Member must have length between 1 and 100",
        ));
    }
    for id in &ids {
        if !valid_name(id) {
            return Err(constraint(&format!("'{id}'"), "ids.member", NAME_PATTERN));
        }
    }
    submit(
        call,
        RuleRequest::RemoveTargets {
            rule: rule.to_string(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        },
    )
    .await?;
    Ok(json!({"FailedEntryCount": 0, "FailedEntries": []}))
}

fn list_rule_names_by_target(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let arn = p
        .opt_str("TargetArn")?
        .ok_or_else(|| constraint("null", "targetArn", "Member must not be null"))?;
    check_bus(p)?;
    let max = limit(p)?;
    let snap = call.state.snapshot();
    let names: Vec<String> = snap
        .rules
        .values()
        .filter(|r| r.targets.iter().any(|t| t.arn == arn))
        .map(|r| r.name.clone())
        .collect();
    let (names, next) = page(names, p, max)?;
    let mut out = json!({"RuleNames": names});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// The rule an EventBridge resource ARN names
/// (`arn:aws:events:REGION:ACCOUNT:rule/NAME`, default bus).
fn rule_of_arn<'a>(p: &Params<'a>) -> Result<&'a str, ApiError> {
    let arn = p
        .opt_str("ResourceARN")?
        .ok_or_else(|| constraint("null", "resourceARN", "Member must not be null"))?;
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "events", _, _, resource] => match resource.strip_prefix("rule/") {
            Some(name) if valid_name(name) => Ok(name),
            _ => Err(ApiError::new(
                ErrorKind::ResourceNotFoundException,
                format!("Resource {arn} does not exist."),
            )),
        },
        _ => Err(validation(format!(
            "Parameter ResourceARN is not valid: {arn}"
        ))),
    }
}

async fn tag(call: &Call<'_>, p: &Params<'_>, untag: bool) -> Result<Value, ApiError> {
    let name = rule_of_arn(p)?;
    let (tags, keys) = if untag {
        let keys = p
            .opt_str_list("TagKeys")?
            .ok_or_else(|| constraint("null", "tagKeys", "Member must not be null"))?;
        (vec![], keys.iter().map(|k| k.to_string()).collect())
    } else {
        if p.raw("Tags").is_none() {
            return Err(constraint("null", "tags", "Member must not be null"));
        }
        (rules::parse_tags(p.raw("Tags"))?, vec![])
    };
    submit(
        call,
        RuleRequest::Tag {
            name: name.to_string(),
            tags,
            keys,
        },
    )
    .await?;
    Ok(json!({}))
}

fn list_tags(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let name = rule_of_arn(p)?;
    let snap = call.state.snapshot();
    let r = snap
        .rules
        .get(name)
        .ok_or_else(|| rules::rule_not_found(name))?;
    let tags: Vec<Value> = r
        .tags
        .iter()
        .map(|t| json!({"Key": t.key, "Value": t.value}))
        .collect();
    Ok(json!({ "Tags": tags }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns_table() {
        for (s, ok) in [
            ("nightly-report", true),
            ("a.b_c-1", true),
            ("", false),
            ("has space", false),
            ("slash/no", false),
            (&"x".repeat(64)[..], true),
            (&"x".repeat(65)[..], false),
        ] {
            assert_eq!(valid_name(s), ok, "{s}");
        }
        for (arn, ok) in [
            ("arn:aws:ecs:us-east-1:123456789012:cluster/prod", true),
            ("arn:aws-cn:ecs:cn-north-1:123456789012:cluster/prod", true),
            ("arn:aws:ecs:us-east-1:123456789012:cluster/", false),
            ("arn:aws:ecs:us-east-1:123456789012:service/prod/web", false),
            ("arn:aws:lambda:us-east-1:123456789012:function:f", false),
            ("prod", false),
        ] {
            assert_eq!(is_cluster_arn(arn), ok, "{arn}");
        }
    }

    #[test]
    fn target_table() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:cluster/prod";
        // (target body, arn, accepted)
        let table: Vec<(Value, &str, bool)> = vec![
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job"}}),
                arn,
                true,
            ),
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job"}, "Input": "{\"containerOverrides\": []}",
                    "RoleArn": "arn:aws:iam::123456789012:role/ecsEventsRole",
                    "RetryPolicy": {"MaximumRetryAttempts": 2}}),
                arn,
                true,
            ),
            (json!({}), arn, false),
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job"}}),
                "arn:aws:sqs:us-east-1:123456789012:q",
                false,
            ),
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job"}, "SqsParameters": {}}),
                arn,
                false,
            ),
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job"}, "Input": "nope"}),
                arn,
                false,
            ),
            (
                json!({"EcsParameters": {"TaskDefinitionArn": "job", "TaskCount": 0}}),
                arn,
                false,
            ),
        ];
        for (body, arn, ok) in table {
            let got = target(body.as_object().unwrap(), "t1", arn);
            assert_eq!(got.is_ok(), ok, "{body} {arn}: {got:?}");
            if let Ok(t) = got {
                assert_eq!(t.ecs_parameters["TaskCount"], 1);
            }
        }
    }
}
