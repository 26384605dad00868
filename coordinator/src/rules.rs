//! Scheduled rules (EventBridge's `rate`/`cron` rules with ECS targets): the
//! entities kept in the model, the requests the `events` API sends the state
//! owner, and their pure planning, including the firing of a due rule.
//!
//! Firing is an ordinary logged decision: [`RuleRequest::Fire`] is planned by
//! the owner with its clock, picks the slot [`schedule::due`] names (the
//! latest one missed, so downtime yields one firing, not one per slot), and
//! commits [`Command::RuleFired`] for that slot together with the `PutTasks`
//! of every target in the same batch. A slot at or before the rule's
//! `last_slot` is never due again, so no restart, replay or racing tick can
//! fire a slot twice.
//!
//! Targets are placed as RunTask places (`capacity::plan_run`: a target's
//! `CapacityProviderStrategy`, else its `LaunchType`, else the cluster's
//! default capacity provider strategy).
//!
//! Tasks a rule starts carry `startedBy = events-rule/NAME` (ECS's form) and
//! the group from `EcsParameters.Group`, else `family:FAMILY`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::Params;
use crate::error::{ApiError, ErrorKind};
use crate::model::{Command, Model, Tag, Timestamp};
use crate::schedule::{self, Schedule};
use crate::state::{Ctx, Outcome, RunTask};

/// The only event bus Berth has.
pub const DEFAULT_BUS: &str = "default";
/// EventBridge's limit of targets per rule.
pub const MAX_TARGETS: usize = 5;
/// RunTask's limit on tasks per call, which a target's `TaskCount` obeys.
pub const MAX_TASK_COUNT: i64 = 10;

/// A scheduled rule on the default event bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub arn: String,
    pub region: String,
    pub schedule_expression: String,
    /// `ENABLED` or `DISABLED`.
    pub state: String,
    pub description: Option<String>,
    pub role_arn: Option<String>,
    pub tags: Vec<Tag>,
    /// The account that created it (DescribeRule `CreatedBy`).
    pub created_by: String,
    pub created_at: Timestamp,
    /// Epoch second the schedule counts from: set when the rule is created,
    /// its expression changes, or it is re-enabled (slots before that are
    /// not owed).
    pub anchor: i64,
    /// The slot the rule last fired for; every slot up to it is consumed.
    /// A rule getting its first target consumes the slots already past.
    pub last_slot: Option<i64>,
    pub last_fired_at: Option<Timestamp>,
    /// Target invocations so far, and how many of them started no task.
    pub invocations: u64,
    pub failed_invocations: u64,
    /// By `Id`, sorted.
    pub targets: Vec<RuleTarget>,
}

impl Rule {
    pub fn enabled(&self) -> bool {
        self.state == "ENABLED"
    }
    /// The parsed schedule (validated when the rule was put).
    pub fn schedule(&self) -> Option<Schedule> {
        Schedule::parse(&self.schedule_expression).ok()
    }
    /// The slot this rule must fire for at `now`, if any.
    pub fn due(&self, now: i64) -> Option<i64> {
        schedule::due(&self.schedule()?, self.anchor, self.last_slot, now)
    }
    /// The next slot it will fire for (after its last one, or its anchor).
    pub fn next_slot(&self) -> Option<i64> {
        let after = self.last_slot.map_or(self.anchor, |l| l.max(self.anchor));
        self.schedule()?.next_after(self.anchor, after)
    }
}

/// A target of a rule: an ECS cluster that runs a task definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleTarget {
    pub id: String,
    /// The cluster ARN.
    pub arn: String,
    pub role_arn: Option<String>,
    /// `Input`: for ECS targets a JSON task override (`containerOverrides`, ...).
    pub input: Option<String>,
    /// `EcsParameters` as given (validated), with `TaskCount` defaulted to 1.
    pub ecs_parameters: Value,
}

/// PutRule, already checked against the model's constraints.
#[derive(Debug, Clone)]
pub struct PutRule {
    pub name: String,
    pub region: String,
    pub schedule_expression: String,
    pub enabled: bool,
    pub description: Option<String>,
    pub role_arn: Option<String>,
    pub tags: Vec<Tag>,
}

/// What the `events` API asks the state owner.
#[derive(Debug, Clone)]
pub enum RuleRequest {
    Put(PutRule),
    PutTargets {
        rule: String,
        targets: Vec<RuleTarget>,
    },
    RemoveTargets {
        rule: String,
        ids: Vec<String>,
    },
    Delete {
        name: String,
    },
    SetState {
        name: String,
        enabled: bool,
    },
    /// TagResource (`tags` merged over the rule's) or UntagResource (`keys`
    /// removed) on a rule.
    Tag {
        name: String,
        tags: Vec<Tag>,
        keys: Vec<String>,
    },
    /// The ticker found the rule due: fire it for the slot due now, if any.
    Fire {
        name: String,
    },
}

/// `ResourceNotFoundException` for a missing rule, worded as EventBridge does.
pub fn rule_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFoundException,
        format!("Rule {name} does not exist on EventBus {DEFAULT_BUS}."),
    )
}

fn validation(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::ValidationException, msg)
}

type Planned = (Vec<Command>, Outcome);

/// Plans a rule request against `m`. Pure apart from what `ctx` supplies.
pub fn plan(m: &Model, r: RuleRequest, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    let now = ctx.now.floor() as i64;
    match r {
        RuleRequest::Put(p) => {
            let state = if p.enabled { "ENABLED" } else { "DISABLED" };
            let rule = match m.rules.get(&p.name) {
                Some(old) => {
                    let mut r = (**old).clone();
                    let restart = r.schedule_expression != p.schedule_expression
                        || (p.enabled && !r.enabled());
                    if restart {
                        r.anchor = now;
                        r.last_slot = None;
                    }
                    r.schedule_expression = p.schedule_expression;
                    r.state = state.to_string();
                    r.description = p.description;
                    r.role_arn = p.role_arn;
                    // EventBridge ignores PutRule's tags for an existing rule.
                    r
                }
                None => Rule {
                    arn: format!(
                        "arn:aws:events:{}:{}:rule/{}",
                        p.region, ctx.settings.account_id, p.name
                    ),
                    name: p.name,
                    region: p.region,
                    schedule_expression: p.schedule_expression,
                    state: state.to_string(),
                    description: p.description,
                    role_arn: p.role_arn,
                    tags: p.tags,
                    created_by: ctx.settings.account_id.clone(),
                    created_at: ctx.now,
                    anchor: now,
                    last_slot: None,
                    last_fired_at: None,
                    invocations: 0,
                    failed_invocations: 0,
                    targets: vec![],
                },
            };
            Ok((vec![Command::PutRule(rule)], Outcome::Done))
        }
        RuleRequest::PutTargets { rule, targets } => {
            let old = m.rules.get(&rule).ok_or_else(|| rule_not_found(&rule))?;
            let mut r = (**old).clone();
            let had_targets = !r.targets.is_empty();
            for t in targets {
                match r.targets.iter_mut().find(|e| e.id == t.id) {
                    Some(e) => *e = t,
                    None => r.targets.push(t),
                }
            }
            if r.targets.len() > MAX_TARGETS {
                return Err(ApiError::new(
                    ErrorKind::LimitExceededException,
                    format!(
                        "The requested resource exceeds the maximum number allowed. A rule can have at most {MAX_TARGETS} targets."
                    ),
                ));
            }
            r.targets.sort_by(|a, b| a.id.cmp(&b.id));
            if !had_targets {
                // Slots that passed while the rule had nothing to run are
                // not owed: they are consumed, the schedule keeps its phase.
                if let Some(past) = r.due(now) {
                    r.last_slot = Some(past);
                }
            }
            Ok((vec![Command::PutRule(r)], Outcome::Done))
        }
        RuleRequest::RemoveTargets { rule, ids } => {
            let old = m.rules.get(&rule).ok_or_else(|| rule_not_found(&rule))?;
            if !old.targets.iter().any(|t| ids.contains(&t.id)) {
                return Ok((vec![], Outcome::Done));
            }
            let mut r = (**old).clone();
            r.targets.retain(|t| !ids.contains(&t.id));
            Ok((vec![Command::PutRule(r)], Outcome::Done))
        }
        RuleRequest::Delete { name } => {
            let Some(r) = m.rules.get(&name) else {
                // EventBridge: deleting a rule that does not exist succeeds.
                return Ok((vec![], Outcome::Done));
            };
            if !r.targets.is_empty() {
                return Err(validation("Rule can't be deleted since it has targets."));
            }
            Ok((vec![Command::DeleteRule { name }], Outcome::Done))
        }
        RuleRequest::SetState { name, enabled } => {
            let old = m.rules.get(&name).ok_or_else(|| rule_not_found(&name))?;
            if old.enabled() == enabled {
                return Ok((vec![], Outcome::Done));
            }
            let mut r = (**old).clone();
            r.state = if enabled { "ENABLED" } else { "DISABLED" }.to_string();
            if enabled {
                // Slots missed while disabled are not owed.
                r.anchor = now;
                r.last_slot = None;
            }
            Ok((vec![Command::PutRule(r)], Outcome::Done))
        }
        RuleRequest::Tag { name, tags, keys } => {
            let old = m.rules.get(&name).ok_or_else(|| rule_not_found(&name))?;
            let mut r = (**old).clone();
            r.tags.retain(|t| !keys.contains(&t.key));
            for t in tags {
                match r.tags.iter_mut().find(|e| e.key == t.key) {
                    Some(e) => e.value = t.value,
                    None => r.tags.push(t),
                }
            }
            if r.tags.len() > 50 {
                return Err(validation("A resource can have at most 50 tags."));
            }
            if r.tags == old.tags {
                return Ok((vec![], Outcome::Done));
            }
            Ok((vec![Command::PutRule(r)], Outcome::Done))
        }
        RuleRequest::Fire { name } => plan_fire(m, &name, ctx),
    }
}

/// Fires `name` for the slot due at `ctx.now`: one RunTask per target, placed
/// against the model as the earlier targets left it, and the slot recorded in
/// the same commit. Nothing when the rule is gone, disabled, has no targets,
/// or its due slot was already fired.
fn plan_fire(m: &Model, name: &str, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    let Some(rule) = m.rules.get(name) else {
        return Ok((vec![], Outcome::Done));
    };
    if !rule.enabled() || rule.targets.is_empty() {
        return Ok((vec![], Outcome::Done));
    }
    let Some(slot) = rule.due(ctx.now.floor() as i64) else {
        return Ok((vec![], Outcome::Done));
    };
    let mut cmds: Vec<Command> = Vec::new();
    let mut working: Option<Model> = None;
    let mut failed = 0u32;
    for t in &rule.targets {
        let base = working.as_ref().unwrap_or(m);
        let run = match target_run(t, name) {
            Ok(run) => run,
            Err(e) => {
                tracing::warn!(rule = name, target = %t.id, error = %e, "scheduled target invalid");
                failed += 1;
                continue;
            }
        };
        // As RunTask: without a launch type or a strategy of its own, the
        // cluster's default capacity provider strategy applies.
        match crate::capacity::plan_run(base, run, ctx) {
            Ok((step, Outcome::Tasks { ids, failures })) => {
                if ids.is_empty() {
                    failed += 1;
                }
                if !failures.is_empty() {
                    tracing::warn!(
                        rule = name,
                        target = %t.id,
                        slot,
                        started = ids.len(),
                        failures = ?failures.iter().map(|f| f.reason.as_str()).collect::<Vec<_>>(),
                        "scheduled task placement failures"
                    );
                }
                if !step.is_empty() && rule.targets.len() > 1 {
                    let w = working.get_or_insert_with(|| m.clone());
                    for c in &step {
                        w.apply(c);
                    }
                }
                cmds.extend(step);
            }
            Ok(_) => failed += 1,
            Err(e) => {
                tracing::warn!(rule = name, target = %t.id, slot, error = %e, "scheduled task not started");
                failed += 1;
            }
        }
    }
    tracing::info!(
        rule = name,
        slot,
        targets = rule.targets.len(),
        failed,
        "rule fired"
    );
    cmds.push(Command::RuleFired {
        name: name.to_string(),
        slot,
        at: ctx.now,
        invocations: rule.targets.len() as u32,
        failed,
    });
    Ok((cmds, Outcome::Done))
}

/// The RunTask a target's `EcsParameters` (and `Input` overrides) describe.
pub fn target_run(t: &RuleTarget, rule: &str) -> Result<RunTask, ApiError> {
    let params = t
        .ecs_parameters
        .as_object()
        .ok_or_else(|| validation("EcsParameters must be a structure."))?;
    let mut run = ecs_parameters(params)?;
    run.cluster = Some(t.arn.clone());
    run.started_by = Some(format!("events-rule/{rule}"));
    run.overrides = input_overrides(t.input.as_deref())?;
    Ok(run)
}

/// An ECS target's `Input`: a JSON object used as the task's overrides.
pub fn input_overrides(input: Option<&str>) -> Result<Option<Value>, ApiError> {
    match input {
        None => Ok(None),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err(validation(
                "Input for an ECS target must be a JSON object of task overrides.",
            )),
        },
    }
}

/// Validates `EcsParameters` and turns them into a RunTask (without the
/// cluster, `startedBy` and overrides, which come from the target).
pub fn ecs_parameters(o: &Map<String, Value>) -> Result<RunTask, ApiError> {
    let p = Params(o);
    let task_definition = p
        .opt_str("TaskDefinitionArn")?
        .ok_or_else(|| validation("EcsParameters.TaskDefinitionArn must be specified."))?;
    crate::taskdef::parse_reference(task_definition)
        .map_err(|e| validation(format!("Invalid TaskDefinitionArn: {}", e.message)))?;
    let count = p.opt_int("TaskCount")?.unwrap_or(1);
    if !(1..=MAX_TASK_COUNT).contains(&count) {
        return Err(validation(format!(
            "EcsParameters.TaskCount must be between 1 and {MAX_TASK_COUNT}."
        )));
    }
    let launch_type = match p.opt_str("LaunchType")? {
        None => None,
        Some(lt @ ("EC2" | "EXTERNAL")) => Some(lt.to_string()),
        Some("FARGATE") => {
            return Err(validation(
                "The FARGATE launch type is not supported by Berth; use EC2 or EXTERNAL.",
            ))
        }
        Some(o) => return Err(validation(format!("Invalid LaunchType: {o}"))),
    };
    // Items use ECS's member names (capacityProvider, weight, base).
    let capacity_strategy = crate::api::capacity::parse_strategy(&p, "CapacityProviderStrategy")
        .map_err(|e| validation(e.message))?
        .filter(|s| !s.is_empty());
    if capacity_strategy.is_some() && launch_type.is_some() {
        return Err(validation(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    if p.opt_bool("EnableExecuteCommand")? == Some(true) {
        return Err(validation(
            "EnableExecuteCommand is not supported by Berth.",
        ));
    }
    p.opt_bool("EnableECSManagedTags")?;
    p.opt_str("PlatformVersion")?;
    p.opt_str("ReferenceId")?;
    let group = p.opt_str("Group")?;
    if group.is_some_and(|g| g.is_empty() || g.chars().count() > 255) {
        return Err(validation("Group must be between 1 and 255 characters."));
    }
    // PlacementConstraints/PlacementStrategy use ECS's member names (type,
    // expression, field): validate them exactly as RunTask does.
    let mut placement = Map::new();
    if let Some(c) = p.opt_array("PlacementConstraints")? {
        placement.insert("placementConstraints".into(), Value::Array(c.clone()));
    }
    if let Some(s) = p.opt_array("PlacementStrategy")? {
        placement.insert("placementStrategy".into(), Value::Array(s.clone()));
    }
    let pp = Params(&placement);
    let as_validation = |e: ApiError| validation(e.message);
    let (member_of, distinct_instance) =
        crate::api::tasks::constraints(&pp).map_err(as_validation)?;
    let strategies = crate::api::tasks::strategies(&pp).map_err(as_validation)?;
    let network_configuration = match p.opt_object("NetworkConfiguration")? {
        None => None,
        Some(n) => {
            let ecs = ecs_network_configuration(n)?;
            Some(
                crate::network::parse_network_configuration(&ecs)
                    .map_err(|e| validation(e.to_string()))?,
            )
        }
    };
    let propagate_taskdef_tags = match p.opt_str("PropagateTags")? {
        None => false,
        Some("TASK_DEFINITION") => true,
        Some(o) => return Err(validation(format!("Invalid PropagateTags: {o}"))),
    };
    let tags = parse_tags(p.raw("Tags"))?;
    Ok(RunTask {
        task_definition: task_definition.to_string(),
        count: count as u32,
        group: group.map(str::to_string),
        launch_type,
        tags,
        member_of,
        distinct_instance,
        strategies,
        propagate_taskdef_tags,
        network_configuration,
        capacity: crate::capacity::RunCapacity::given(capacity_strategy),
        ..RunTask::default()
    })
}

/// EventBridge's `NetworkConfiguration` (`awsvpcConfiguration` with
/// `Subnets`, `SecurityGroups`, `AssignPublicIp`) in ECS's member names.
fn ecs_network_configuration(n: &Map<String, Value>) -> Result<Value, ApiError> {
    let np = Params(n);
    let Some(a) = np.opt_object("awsvpcConfiguration")? else {
        return Ok(json!({}));
    };
    let ap = Params(a);
    let subnets = ap.opt_str_list("Subnets")?.ok_or_else(|| {
        validation("NetworkConfiguration.awsvpcConfiguration.Subnets must be specified.")
    })?;
    let mut out = json!({"subnets": subnets});
    if let Some(g) = ap.opt_str_list("SecurityGroups")? {
        out["securityGroups"] = json!(g);
    }
    if let Some(ip) = ap.opt_str("AssignPublicIp")? {
        out["assignPublicIp"] = json!(ip);
    }
    Ok(json!({ "awsvpcConfiguration": out }))
}

/// EventBridge tags (`[{"Key", "Value"}]`, key 1-128, value 0-256, at most
/// 50) as model tags.
pub fn parse_tags(v: Option<&Value>) -> Result<Vec<Tag>, ApiError> {
    crate::ssm::parse_key_value_tags(v, Some(50), false, &|m| validation(m))
}

/// Remembers each rule's next slot between ticks, recomputed only when the
/// rule changed (a new `Arc` in the model), so a tick over many rules costs a
/// map lookup per rule rather than a schedule search.
#[derive(Debug, Default)]
pub struct DueCache {
    next: HashMap<String, (Arc<Rule>, Option<i64>)>,
}

impl DueCache {
    /// Names of the enabled rules with targets that have a slot due at `now`.
    pub fn due(&mut self, m: &Model, now: i64) -> Vec<String> {
        self.next.retain(|name, _| m.rules.contains_key(name));
        let mut out = Vec::new();
        for (name, rule) in &m.rules {
            if !rule.enabled() || rule.targets.is_empty() {
                continue;
            }
            let next = match self.next.get(name) {
                Some((cached, next)) if Arc::ptr_eq(cached, rule) => *next,
                _ => {
                    let next = rule.next_slot();
                    self.next.insert(name.clone(), (rule.clone(), next));
                    next
                }
            };
            if next.is_some_and(|n| n <= now) {
                out.push(name.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Settings;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn settings() -> Settings {
        Settings {
            account_id: "123456789012".into(),
            default_region: "us-east-1".into(),
            awsvpc_cidr: crate::network::Cidr::parse("10.199.0.0/16").unwrap(),
            service_settle_secs: 40.0,
        }
    }

    fn step(m: &mut Model, now: f64, r: RuleRequest) -> Result<Vec<Command>, ApiError> {
        let s = settings();
        let mut rng = StdRng::seed_from_u64(1);
        let connected = crate::state::always(true);
        let mut ctx = Ctx {
            now,
            rng: &mut rng,
            liveness: &connected,
            settings: &s,
        };
        let (cmds, _) = plan(m, r, &mut ctx)?;
        for c in &cmds {
            m.apply(c);
        }
        Ok(cmds)
    }

    fn put(name: &str, expr: &str, enabled: bool) -> RuleRequest {
        RuleRequest::Put(PutRule {
            name: name.into(),
            region: "us-east-1".into(),
            schedule_expression: expr.into(),
            enabled,
            description: None,
            role_arn: None,
            tags: vec![],
        })
    }

    fn target(id: &str) -> RuleTarget {
        RuleTarget {
            id: id.into(),
            arn: "arn:aws:ecs:us-east-1:123456789012:cluster/none".into(),
            role_arn: None,
            input: None,
            ecs_parameters: json!({"TaskDefinitionArn": "sleeper", "TaskCount": 1}),
        }
    }

    /// Anchors and slots through a rule's life: creation, targets, firing
    /// (a cluster that does not exist makes every invocation fail, which
    /// still consumes the slot), catch-up after a long pause, disabling and
    /// re-enabling, changing the expression.
    #[test]
    fn rule_life_table() {
        let mut m = Model::default();
        let t0 = 1_800_000_000.0; // a whole minute
        step(&mut m, t0 + 5.4, put("r", "rate(1 minute)", true)).unwrap();
        let r = &m.rules["r"];
        assert_eq!(r.anchor, 1_800_000_005);
        assert_eq!(r.arn, "arn:aws:events:us-east-1:123456789012:rule/r");
        // (time, request, expected last_slot after, expected anchor after, commands)
        type Row = (f64, RuleRequest, Option<i64>, i64, usize);
        let a = 1_800_000_005i64;
        let rows: Vec<Row> = vec![
            // No targets: firing does nothing.
            (
                t0 + 70.0,
                RuleRequest::Fire { name: "r".into() },
                None,
                a,
                0,
            ),
            // First target: the slot already past (…065) is consumed, not owed.
            (
                t0 + 90.0,
                RuleRequest::PutTargets {
                    rule: "r".into(),
                    targets: vec![target("a")],
                },
                Some(a + 60),
                a,
                1,
            ),
            (
                t0 + 110.0,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 60),
                a,
                0,
            ),
            (
                t0 + 125.5,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 120),
                a,
                1,
            ),
            // The same slot again (a second tick, a replayed request): nothing.
            (
                t0 + 126.0,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 120),
                a,
                0,
            ),
            // Ten minutes later: one firing, for the latest slot.
            (
                t0 + 755.0,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 720),
                a,
                1,
            ),
            (
                t0 + 756.0,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 720),
                a,
                0,
            ),
            // A second target keeps the schedule.
            (
                t0 + 760.0,
                RuleRequest::PutTargets {
                    rule: "r".into(),
                    targets: vec![target("b")],
                },
                Some(a + 720),
                a,
                1,
            ),
            // Disabled: never fires.
            (
                t0 + 770.0,
                RuleRequest::SetState {
                    name: "r".into(),
                    enabled: false,
                },
                Some(a + 720),
                a,
                1,
            ),
            (
                t0 + 900.0,
                RuleRequest::Fire { name: "r".into() },
                Some(a + 720),
                a,
                0,
            ),
            // Re-enabled: counting restarts, missed slots are not owed.
            (
                t0 + 1000.0,
                RuleRequest::SetState {
                    name: "r".into(),
                    enabled: true,
                },
                None,
                1_800_001_000,
                1,
            ),
            (
                t0 + 1001.0,
                RuleRequest::Fire { name: "r".into() },
                None,
                1_800_001_000,
                0,
            ),
            // PutRule with the same expression keeps the schedule.
            (
                t0 + 1030.0,
                put("r", "rate(1 minute)", true),
                None,
                1_800_001_000,
                1,
            ),
            (
                t0 + 1060.0,
                RuleRequest::Fire { name: "r".into() },
                Some(1_800_001_060),
                1_800_001_000,
                1,
            ),
            // A new expression restarts it.
            (
                t0 + 1070.0,
                put("r", "cron(0/5 * * * ? *)", true),
                None,
                1_800_001_070,
                1,
            ),
            (
                t0 + 1199.0,
                RuleRequest::Fire { name: "r".into() },
                None,
                1_800_001_070,
                0,
            ),
            (
                t0 + 1200.0,
                RuleRequest::Fire { name: "r".into() },
                Some(1_800_001_200),
                1_800_001_070,
                1,
            ),
        ];
        for (i, (now, req, last, anchor, ncmds)) in rows.into_iter().enumerate() {
            let cmds = step(&mut m, now, req).unwrap();
            let r = &m.rules["r"];
            assert_eq!((r.last_slot, r.anchor), (last, anchor), "row {i}");
            assert_eq!(cmds.len(), ncmds, "row {i}: {cmds:?}");
        }
        let r = &m.rules["r"];
        // Fired at 125, 725 (one target, failed), 1060, 1200 (two targets each, failed).
        assert_eq!((r.invocations, r.failed_invocations), (6, 6));
    }

    #[test]
    fn delete_and_target_rules() {
        let mut m = Model::default();
        let now = 1_800_000_000.0;
        assert_eq!(
            step(
                &mut m,
                now,
                RuleRequest::Delete {
                    name: "nope".into()
                }
            )
            .unwrap(),
            vec![]
        );
        assert_eq!(
            step(
                &mut m,
                now,
                RuleRequest::SetState {
                    name: "nope".into(),
                    enabled: true
                }
            )
            .unwrap_err()
            .kind,
            ErrorKind::ResourceNotFoundException
        );
        step(&mut m, now, put("r", "rate(5 minutes)", true)).unwrap();
        let targets: Vec<RuleTarget> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|i| target(i))
            .collect();
        step(
            &mut m,
            now,
            RuleRequest::PutTargets {
                rule: "r".into(),
                targets,
            },
        )
        .unwrap();
        let e = step(
            &mut m,
            now,
            RuleRequest::PutTargets {
                rule: "r".into(),
                targets: vec![target("f")],
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceededException);
        // Replacing an existing id is not a new target.
        step(
            &mut m,
            now,
            RuleRequest::PutTargets {
                rule: "r".into(),
                targets: vec![target("c")],
            },
        )
        .unwrap();
        let e = step(&mut m, now, RuleRequest::Delete { name: "r".into() }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ValidationException);
        assert_eq!(e.message, "Rule can't be deleted since it has targets.");
        step(
            &mut m,
            now,
            RuleRequest::RemoveTargets {
                rule: "r".into(),
                ids: ["a", "b", "c", "d", "e", "zz"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
        )
        .unwrap();
        assert!(m.rules["r"].targets.is_empty());
        step(&mut m, now, RuleRequest::Delete { name: "r".into() }).unwrap();
        assert!(m.rules.is_empty());
    }

    #[test]
    fn ecs_parameters_table() {
        // (EcsParameters, accepted)
        let table: Vec<(Value, bool)> = vec![
            (
                json!({"TaskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3"}),
                true,
            ),
            (
                json!({"TaskDefinitionArn": "web", "TaskCount": 10, "LaunchType": "EXTERNAL", "Group": "g",
                    "PlacementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}],
                    "PlacementStrategy": [{"type": "spread", "field": "instanceId"}],
                    "NetworkConfiguration": {"awsvpcConfiguration": {"Subnets": ["s-1"], "AssignPublicIp": "DISABLED"}},
                    "PropagateTags": "TASK_DEFINITION", "Tags": [{"Key": "k", "Value": "v"}],
                    "EnableECSManagedTags": false, "ReferenceId": "x"}),
                true,
            ),
            (json!({}), false),
            (json!({"TaskDefinitionArn": "web", "TaskCount": 0}), false),
            (json!({"TaskDefinitionArn": "web", "TaskCount": 11}), false),
            (
                json!({"TaskDefinitionArn": "web", "LaunchType": "FARGATE"}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "PlacementConstraints": [{"type": "memberOf", "expression": "(("}]}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "PlacementStrategy": [{"type": "binpack", "field": "disk"}]}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "NetworkConfiguration": {"awsvpcConfiguration": {}}}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "PropagateTags": "SERVICE"}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "EnableExecuteCommand": true}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "CapacityProviderStrategy": [{"capacityProvider": "x", "weight": 1}]}),
                true,
            ),
            (
                json!({"TaskDefinitionArn": "web", "CapacityProviderStrategy": [{"capacityProvider": "x", "weight": 1}],
                    "LaunchType": "EC2"}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "CapacityProviderStrategy": [{"weight": 1}]}),
                false,
            ),
            (
                json!({"TaskDefinitionArn": "web", "Tags": [{"Key": "k"}]}),
                false,
            ),
            (json!({"TaskDefinitionArn": 5}), false),
        ];
        for (v, ok) in table {
            let got = ecs_parameters(v.as_object().unwrap());
            assert_eq!(got.is_ok(), ok, "{v}: {got:?}");
        }
        let run = ecs_parameters(
            json!({"TaskDefinitionArn": "web:2", "TaskCount": 3, "Group": "nightly",
                   "NetworkConfiguration": {"awsvpcConfiguration": {"Subnets": ["s-1"]}}})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(run.count, 3);
        assert_eq!(run.group.as_deref(), Some("nightly"));
        assert!(run.network_configuration.is_some());
        let t = RuleTarget {
            input: Some(r#"{"containerOverrides": [{"name": "c", "command": ["true"]}]}"#.into()),
            ..target("a")
        };
        let run = target_run(&t, "nightly-job").unwrap();
        assert_eq!(run.started_by.as_deref(), Some("events-rule/nightly-job"));
        assert_eq!(run.cluster.as_deref(), Some(t.arn.as_str()));
        assert!(run.overrides.is_some());
        assert!(input_overrides(Some("[1]")).is_err());
        assert!(input_overrides(Some("not json")).is_err());
    }

    #[test]
    fn due_cache_recomputes_only_changed_rules() {
        let mut m = Model::default();
        let t0 = 1_800_000_000.0;
        step(&mut m, t0, put("a", "rate(1 minute)", true)).unwrap();
        step(&mut m, t0, put("b", "rate(2 minutes)", true)).unwrap();
        step(&mut m, t0, put("idle", "rate(1 minute)", true)).unwrap();
        for r in ["a", "b"] {
            step(
                &mut m,
                t0,
                RuleRequest::PutTargets {
                    rule: r.into(),
                    targets: vec![target("t")],
                },
            )
            .unwrap();
        }
        let mut cache = DueCache::default();
        let now = t0 as i64;
        assert!(cache.due(&m, now + 59).is_empty());
        assert_eq!(cache.due(&m, now + 60), vec!["a".to_string()]);
        assert_eq!(
            cache.due(&m, now + 125),
            vec!["a".to_string(), "b".to_string()]
        );
        step(&mut m, t0 + 125.0, RuleRequest::Fire { name: "a".into() }).unwrap();
        assert_eq!(cache.due(&m, now + 125), vec!["b".to_string()]);
        step(
            &mut m,
            t0 + 125.0,
            RuleRequest::Delete {
                name: "idle".into(),
            },
        )
        .unwrap();
        assert_eq!(cache.next.len(), 2);
        cache.due(&m, now + 126);
        assert!(!cache.next.contains_key("idle"));
    }
}
