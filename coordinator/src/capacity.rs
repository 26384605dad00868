//! Capacity providers for on-prem fleets: the entity, the pure rules
//! (reserved names, strategy validation, the ECS base/weight split), the
//! planning of CreateCapacityProvider / UpdateCapacityProvider /
//! DeleteCapacityProvider / PutClusterCapacityProviders / CreateCluster with
//! providers, and RunTask/service placement through a strategy.
//!
//! A provider names a group of container instances: its
//! `autoScalingGroupProvider.autoScalingGroupArn` is either an Auto Scaling
//! group ARN, whose `autoScalingGroupName/<group>` tail is the group, or any
//! other value, which is the group itself. A container instance belongs to
//! the group when its attribute [`GROUP_ATTRIBUTE`] (`berth.capacity-group`)
//! equals it (set with PutAttributes or the agent's `--attribute`). A task
//! placed through a provider gets the implicit `memberOf` constraint
//! `attribute:berth.capacity-group == <group>` on top of its own constraints,
//! so it goes through the ordinary candidate/constraint path of `plan_run`.
//! `managedScaling`, `managedTerminationProtection` and `managedDraining` are
//! validated, stored and reported, never acted on: Berth does not add or
//! remove machines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cql;
use crate::error::{ApiError, ErrorKind};
use crate::model::{Cluster, Command, Model, Tag, Timestamp};
use crate::state::{self, active_cluster, Ctx, Outcome, Request, RunTask};

/// The container-instance attribute naming an instance's capacity group.
pub const GROUP_ATTRIBUTE: &str = "berth.capacity-group";

/// ECS: a strategy names at most 6 providers.
pub const MAX_STRATEGY_ITEMS: usize = 6;

/// One `capacityProviderStrategy` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyItem {
    pub capacity_provider: String,
    /// 0-1000; tasks beyond every base are shared in proportion to it.
    pub weight: u32,
    /// 0-100000; at least this many tasks go to this provider first.
    pub base: u32,
}

/// A run's capacity-provider part (`state::RunTask::capacity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCapacity {
    /// `capacityProviderStrategy` as given (resolved, with the cluster
    /// default, by `plan_run`).
    pub strategy: Option<Vec<StrategyItem>>,
    /// Set by `plan_run`: the provider this share is placed through
    /// (recorded as the tasks' `capacityProviderName`).
    pub provider: Option<String>,
    /// A service's active tasks per provider, so the split counts them.
    pub counts: BTreeMap<String, u32>,
    /// Set with `provider`: its instance group, a requirement of the share
    /// (an instance outside it is refused with ECS's `ATTRIBUTE`).
    pub group: Option<String>,
}

impl RunCapacity {
    /// A run with a strategy as given (none when `strategy` is `None`).
    pub fn given(strategy: Option<Vec<StrategyItem>>) -> Option<Box<RunCapacity>> {
        strategy.map(|s| {
            Box::new(RunCapacity {
                strategy: Some(s),
                ..RunCapacity::default()
            })
        })
    }
}

/// `managedScaling` as reported (accepted, never acted on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedScaling {
    pub status: String,
    pub target_capacity: u32,
    pub minimum_scaling_step_size: u32,
    pub maximum_scaling_step_size: u32,
    pub instance_warmup_period: u32,
}

impl Default for ManagedScaling {
    /// ECS's values when `managedScaling` is not given.
    fn default() -> Self {
        ManagedScaling {
            status: "DISABLED".into(),
            target_capacity: 100,
            minimum_scaling_step_size: 1,
            maximum_scaling_step_size: 10000,
            instance_warmup_period: 300,
        }
    }
}

/// `managedScaling` as a request gives it: absent members keep their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedScalingInput {
    pub status: Option<String>,
    pub target_capacity: Option<u32>,
    pub minimum_scaling_step_size: Option<u32>,
    pub maximum_scaling_step_size: Option<u32>,
    pub instance_warmup_period: Option<u32>,
}

impl ManagedScalingInput {
    fn over(&self, base: &ManagedScaling) -> ManagedScaling {
        ManagedScaling {
            status: self.status.clone().unwrap_or_else(|| base.status.clone()),
            target_capacity: self.target_capacity.unwrap_or(base.target_capacity),
            minimum_scaling_step_size: self
                .minimum_scaling_step_size
                .unwrap_or(base.minimum_scaling_step_size),
            maximum_scaling_step_size: self
                .maximum_scaling_step_size
                .unwrap_or(base.maximum_scaling_step_size),
            instance_warmup_period: self
                .instance_warmup_period
                .unwrap_or(base.instance_warmup_period),
        }
    }
}

/// An ECS capacity provider backed by a group of container instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityProvider {
    pub name: String,
    pub arn: String,
    /// `ACTIVE` or `INACTIVE` (deleted).
    pub status: String,
    /// `UPDATE_COMPLETE`, `DELETE_COMPLETE`, or none after creation.
    pub update_status: Option<String>,
    /// `autoScalingGroupProvider.autoScalingGroupArn` as given.
    pub auto_scaling_group_arn: String,
    /// The instance group: `berth.capacity-group` value of its instances.
    pub group: String,
    pub managed_scaling: ManagedScaling,
    pub managed_termination_protection: String,
    pub managed_draining: String,
    pub tags: Vec<Tag>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("The specified capacity provider name is invalid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.")]
    BadName,
    #[error("The specified capacity provider name is invalid. Capacity provider names can't be prefixed with 'aws', 'ecs', or 'fargate'.")]
    ReservedName,
    #[error("The autoScalingGroupArn '{0}' does not name an instance group Berth can use: the group (the ARN's autoScalingGroupName/ tail, or the whole value) must be 1-128 letters, numbers and -_./@: characters, as a container instance attribute value.")]
    BadGroup(String),
    #[error("A capacity provider strategy can contain at most 6 capacity providers.")]
    TooMany,
    #[error("The capacity provider strategy contains a duplicate capacity provider: {0}.")]
    Duplicate(String),
    #[error("The weight of a capacity provider strategy item must be between 0 and 1000.")]
    Weight,
    #[error("The base of a capacity provider strategy item must be between 0 and 100000.")]
    Base,
    #[error("Only one capacity provider in a capacity provider strategy can have a base value greater than zero.")]
    TwoBases,
    #[error("At least one capacity provider in a capacity provider strategy must have a weight greater than zero.")]
    NoWeight,
}

impl From<CapacityError> for ApiError {
    fn from(e: CapacityError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

/// Capacity provider names: 1-255 letters, digits, `_`, `-`; not starting
/// with `aws`, `ecs` or `fargate` in any case (so `FARGATE`/`FARGATE_SPOT`
/// are refused too).
pub fn check_provider_name(name: &str) -> Result<(), CapacityError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(CapacityError::BadName);
    }
    let lower = name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(CapacityError::ReservedName);
    }
    Ok(())
}

/// The instance group an `autoScalingGroupArn` names: the tail after
/// `autoScalingGroupName/` of an ARN, else the whole value.
pub fn group_of(asg: &str) -> Result<String, CapacityError> {
    let group = if asg.starts_with("arn:") {
        asg.split_once(":autoScalingGroupName/")
            .map(|(_, g)| g)
            .unwrap_or(asg)
    } else {
        asg
    };
    if !crate::api::attributes::valid_value(group) {
        return Err(CapacityError::BadGroup(asg.to_string()));
    }
    Ok(group.to_string())
}

/// A strategy's own rules (ECS): at most 6 items, no duplicates, weights
/// 0-1000, bases 0-100000, at most one base above zero, and (with more than
/// one item) at least one weight above zero.
pub fn check_strategy(items: &[StrategyItem]) -> Result<(), CapacityError> {
    if items.len() > MAX_STRATEGY_ITEMS {
        return Err(CapacityError::TooMany);
    }
    for (i, it) in items.iter().enumerate() {
        if items[..i]
            .iter()
            .any(|o| o.capacity_provider == it.capacity_provider)
        {
            return Err(CapacityError::Duplicate(it.capacity_provider.clone()));
        }
        if it.weight > 1000 {
            return Err(CapacityError::Weight);
        }
        if it.base > 100_000 {
            return Err(CapacityError::Base);
        }
    }
    if items.iter().filter(|i| i.base > 0).count() > 1 {
        return Err(CapacityError::TwoBases);
    }
    if items.len() > 1 && items.iter().all(|i| i.weight == 0) {
        return Err(CapacityError::NoWeight);
    }
    Ok(())
}

/// How many of `n` new tasks go to each strategy item, given how many tasks
/// each already runs (`existing`, parallel to `strategy`; zeros for
/// RunTask). ECS's rule: first the provider with a base is filled up to its
/// base; every further task goes where it keeps the tasks beyond the bases
/// closest to the weight ratio, i.e. to the item with the smallest
/// `(beyond_base + 1) / weight`, ties to the earlier item. Weight-0 items get
/// nothing beyond their base, except that a lone item gets every task.
/// Placing one task at a time this way makes a service that grows step by
/// step end with the same split as one placed at once.
pub fn split(strategy: &[StrategyItem], existing: &[u32], n: u32) -> Vec<u32> {
    let mut total: Vec<u64> = strategy
        .iter()
        .enumerate()
        .map(|(i, _)| u64::from(existing.get(i).copied().unwrap_or(0)))
        .collect();
    let mut out = vec![0u32; strategy.len()];
    let weight = |i: usize| -> u64 {
        let w = u64::from(strategy[i].weight);
        if strategy.len() == 1 {
            w.max(1)
        } else {
            w
        }
    };
    for _ in 0..n {
        let below_base = (0..strategy.len()).find(|&i| total[i] < u64::from(strategy[i].base));
        let pick = below_base.or_else(|| {
            let mut best: Option<usize> = None;
            for i in (0..strategy.len()).filter(|&i| weight(i) > 0) {
                let beyond = total[i].saturating_sub(u64::from(strategy[i].base));
                best = match best {
                    None => Some(i),
                    Some(b) => {
                        let b_beyond = total[b].saturating_sub(u64::from(strategy[b].base));
                        // (beyond+1)/w(i) < (b_beyond+1)/w(b), cross-multiplied.
                        if (beyond + 1) * weight(b) < (b_beyond + 1) * weight(i) {
                            Some(i)
                        } else {
                            Some(b)
                        }
                    }
                };
            }
            best
        });
        let Some(i) = pick else { break };
        total[i] += 1;
        out[i] += 1;
    }
    out
}

/// Scale-in of a service with a strategy: which `n` of its PRIMARY tasks
/// (`keep`) to stop so the rest keeps the strategy's split. The target for
/// the tasks that stay is `split` of their number; tasks of no provider (or
/// of one no longer in the strategy) go first, then tasks of the providers
/// furthest above their target, one at a time; within a provider
/// `service::pick_to_stop` chooses (unhealthy, fullest zone, oldest).
pub fn pick_scale_in(
    strategy: &[StrategyItem],
    keep: &[&crate::service::TaskFacts],
    population: &[&crate::service::TaskFacts],
    n: usize,
) -> Vec<String> {
    let n = n.min(keep.len());
    let staying = (keep.len() - n) as u32;
    let zeros = vec![0u32; strategy.len()];
    let target = split(strategy, &zeros, staying);
    let index_of = |t: &crate::service::TaskFacts| {
        t.capacity_provider
            .as_ref()
            .and_then(|p| strategy.iter().position(|i| &i.capacity_provider == p))
    };
    let mut left: Vec<&crate::service::TaskFacts> = keep.to_vec();
    let mut out: Vec<String> = Vec::new();
    while out.len() < n && !left.is_empty() {
        let mut have = vec![0i64; strategy.len()];
        for t in &left {
            if let Some(i) = index_of(t) {
                have[i] += 1;
            }
        }
        let stray: Vec<&crate::service::TaskFacts> = left
            .iter()
            .copied()
            .filter(|t| index_of(t).is_none())
            .collect();
        let from: Vec<&crate::service::TaskFacts> = if !stray.is_empty() {
            stray
        } else {
            // The provider furthest above its target (ties: the later item,
            // the one the split fills last).
            let mut best = 0usize;
            let mut best_surplus = i64::MIN;
            for i in 0..strategy.len() {
                let surplus = have[i] - i64::from(target[i]);
                if surplus >= best_surplus && have[i] > 0 {
                    best = i;
                    best_surplus = surplus;
                }
            }
            left.iter()
                .copied()
                .filter(|t| index_of(t) == Some(best))
                .collect()
        };
        let Some(id) = crate::service::pick_to_stop(&from, population, 1)
            .into_iter()
            .next()
        else {
            break;
        };
        left.retain(|t| t.id != id);
        out.push(id);
    }
    out
}

/// The implicit `memberOf` constraint of a provider's tasks. The group is a
/// valid attribute value (no quote characters), so quoting it always yields
/// one value token.
pub fn member_expr(group: &str) -> Result<cql::Expr, ApiError> {
    cql::parse(&format!("attribute:{GROUP_ATTRIBUTE} == \"{group}\""))
        .map_err(|e| ApiError::server(format!("capacity group constraint: {e}")))
}

/// Tasks per provider name among `tasks`.
pub fn counts_of<'a>(tasks: impl Iterator<Item = &'a crate::model::Task>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for t in tasks {
        if let Some(p) = &t.capacity_provider_name {
            *out.entry(p.clone()).or_default() += 1;
        }
    }
    out
}

fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::ClientException,
        "The specified capacity provider does not exist. Specify a valid name or ARN and try again.",
    )
}

fn name_of(reference: &str) -> &str {
    if reference.starts_with("arn:") {
        reference.rsplit('/').next().unwrap_or(reference)
    } else {
        reference
    }
}

/// An ACTIVE capacity provider by name or ARN.
pub fn find_active<'a>(m: &'a Model, reference: &str) -> Option<&'a CapacityProvider> {
    m.capacity_providers
        .get(name_of(reference))
        .filter(|p| p.status == "ACTIVE")
        .map(|p| p.as_ref())
}

/// A strategy checked on its own and against the cluster: every provider
/// must be associated with it (ECS's rule and text).
pub fn check_for_cluster(c: &Cluster, items: &[StrategyItem]) -> Result<(), ApiError> {
    check_strategy(items)?;
    if let Some(bad) = items
        .iter()
        .find(|i| !c.capacity_providers.contains(&i.capacity_provider))
    {
        let _ = bad;
        return Err(ApiError::invalid(
            "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
        ));
    }
    Ok(())
}

/// The providers and default strategy given to a cluster, checked.
fn check_association(
    m: &Model,
    providers: &[String],
    strategy: &[StrategyItem],
) -> Result<Vec<String>, ApiError> {
    let mut names: Vec<String> = Vec::new();
    for r in providers {
        let n = name_of(r);
        if n == "FARGATE" || n == "FARGATE_SPOT" {
            return Err(ApiError::invalid(format!(
                "The {n} capacity provider is not available: Berth runs no Fargate capacity."
            )));
        }
        if find_active(m, n).is_none() {
            return Err(ApiError::invalid(format!(
                "The specified capacity provider '{n}' does not exist or is not ACTIVE. Specify a valid name or ARN and try again."
            )));
        }
        if names.iter().any(|e| e == n) {
            return Err(ApiError::invalid(format!(
                "The capacity provider {n} is listed more than once."
            )));
        }
        names.push(n.to_string());
    }
    let probe = Cluster {
        capacity_providers: names.clone(),
        ..placeholder_cluster()
    };
    check_for_cluster(&probe, strategy)?;
    Ok(names)
}

fn placeholder_cluster() -> Cluster {
    Cluster {
        name: String::new(),
        arn: String::new(),
        region: String::new(),
        status: "ACTIVE".into(),
        tags: vec![],
        settings: vec![],
        created_at: 0.0,
        capacity_providers: vec![],
        default_capacity_provider_strategy: vec![],
    }
}

/// Whether a provider is in use in `cluster`: a live service's strategy
/// names it, or an active task was placed through it.
fn in_use(m: &Model, cluster: &str, provider: &str) -> bool {
    m.services
        .values()
        .filter(|s| s.cluster == cluster && s.status != "INACTIVE")
        .any(|s| {
            s.capacity_provider_strategy
                .iter()
                .any(|i| i.capacity_provider == provider)
        })
        || m.tasks.values().any(|t| {
            t.cluster == cluster
                && t.is_active()
                && t.capacity_provider_name.as_deref() == Some(provider)
        })
}

/// A capacity-provider request, parsed and checked in isolation by
/// `api::capacity`.
#[derive(Debug, Clone, PartialEq)]
pub enum CapacityRequest {
    Create {
        name: String,
        region: String,
        auto_scaling_group_arn: String,
        managed_scaling: ManagedScalingInput,
        managed_termination_protection: Option<String>,
        managed_draining: Option<String>,
        tags: Vec<Tag>,
    },
    Update {
        name: String,
        managed_scaling: Option<ManagedScalingInput>,
        managed_termination_protection: Option<String>,
        managed_draining: Option<String>,
    },
    Delete {
        reference: String,
    },
    PutClusterCapacityProviders {
        cluster: String,
        providers: Vec<String>,
        strategy: Vec<StrategyItem>,
    },
    /// CreateCluster with `capacityProviders`/`defaultCapacityProviderStrategy`.
    CreateCluster {
        name: String,
        region: String,
        tags: Vec<Tag>,
        settings: Vec<serde_json::Value>,
        providers: Vec<String>,
        strategy: Vec<StrategyItem>,
    },
}

type Planned = (Vec<Command>, Outcome);

/// Plans a capacity-provider request (pure apart from `ctx`).
pub fn plan(m: &Model, r: CapacityRequest, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    match r {
        CapacityRequest::Create {
            name,
            region,
            auto_scaling_group_arn,
            managed_scaling,
            managed_termination_protection,
            managed_draining,
            tags,
        } => {
            check_provider_name(&name)?;
            let group = group_of(&auto_scaling_group_arn)?;
            if find_active(m, &name).is_some() {
                return Err(ApiError::new(
                    ErrorKind::ClientException,
                    "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
                ));
            }
            if m.capacity_providers
                .values()
                .any(|p| p.status == "ACTIVE" && p.group == group)
            {
                return Err(ApiError::new(
                    ErrorKind::ClientException,
                    "The specified Auto Scaling group ARN is already being used by another capacity provider. Specify a unique Auto Scaling group ARN and try again.",
                ));
            }
            let p = CapacityProvider {
                arn: format!(
                    "arn:aws:ecs:{region}:{}:capacity-provider/{name}",
                    ctx.settings.account_id
                ),
                name: name.clone(),
                status: "ACTIVE".into(),
                update_status: None,
                auto_scaling_group_arn,
                group,
                managed_scaling: managed_scaling.over(&ManagedScaling::default()),
                managed_termination_protection: managed_termination_protection
                    .unwrap_or_else(|| "DISABLED".into()),
                managed_draining: managed_draining.unwrap_or_else(|| "ENABLED".into()),
                tags,
                created_at: ctx.now,
            };
            Ok((
                vec![Command::PutCapacityProvider(p)],
                Outcome::CapacityProvider(name),
            ))
        }
        CapacityRequest::Update {
            name,
            managed_scaling,
            managed_termination_protection,
            managed_draining,
        } => {
            let cur = find_active(m, &name).ok_or_else(not_found)?;
            let mut p = cur.clone();
            if let Some(ms) = managed_scaling {
                p.managed_scaling = ms.over(&p.managed_scaling);
            }
            if let Some(t) = managed_termination_protection {
                p.managed_termination_protection = t;
            }
            if let Some(d) = managed_draining {
                p.managed_draining = d;
            }
            p.update_status = Some("UPDATE_COMPLETE".into());
            let name = p.name.clone();
            Ok((
                vec![Command::PutCapacityProvider(p)],
                Outcome::CapacityProvider(name),
            ))
        }
        CapacityRequest::Delete { reference } => {
            let cur = find_active(m, &reference).ok_or_else(not_found)?;
            if let Some(s) = m.services.values().find(|s| {
                s.status != "INACTIVE"
                    && s.capacity_provider_strategy
                        .iter()
                        .any(|i| i.capacity_provider == cur.name)
            }) {
                return Err(ApiError::new(
                    ErrorKind::ClientException,
                    format!(
                        "The capacity provider cannot be deleted because it is used in the capacity provider strategy of service {}. Update the service to use a different capacity provider strategy and try again.",
                        s.arn
                    ),
                ));
            }
            if let Some(c) = m.clusters.values().find(|c| {
                c.status == "ACTIVE" && c.capacity_providers.iter().any(|n| n == &cur.name)
            }) {
                return Err(ApiError::new(
                    ErrorKind::ClientException,
                    format!(
                        "The capacity provider cannot be deleted because it is associated with cluster: {}. Remove the capacity provider from the cluster and try again.",
                        c.name
                    ),
                ));
            }
            let mut p = cur.clone();
            // Nothing to deprovision on-prem: the deletion completes at once.
            p.status = "INACTIVE".into();
            p.update_status = Some("DELETE_COMPLETE".into());
            let name = p.name.clone();
            Ok((
                vec![Command::PutCapacityProvider(p)],
                Outcome::CapacityProvider(name),
            ))
        }
        CapacityRequest::PutClusterCapacityProviders {
            cluster,
            providers,
            strategy,
        } => {
            let c = active_cluster(m, Some(&cluster))?;
            let names = check_association(m, &providers, &strategy)?;
            for old in &c.capacity_providers {
                if !names.contains(old) && in_use(m, &c.name, old) {
                    return Err(ApiError::new(
                        ErrorKind::ResourceInUseException,
                        "The specified capacity provider is in use and cannot be removed.",
                    ));
                }
            }
            let mut nc = (**c).clone();
            nc.capacity_providers = names;
            nc.default_capacity_provider_strategy = strategy;
            let name = nc.name.clone();
            let cmds = if nc == **c {
                vec![]
            } else {
                vec![Command::PutCluster(nc)]
            };
            Ok((cmds, Outcome::Cluster(name)))
        }
        CapacityRequest::CreateCluster {
            name,
            region,
            tags,
            settings,
            providers,
            strategy,
        } => {
            let names = check_association(m, &providers, &strategy)?;
            let (mut cmds, outcome) = state::plan(
                m,
                Request::CreateCluster {
                    name,
                    region,
                    tags,
                    settings,
                },
                ctx,
            )?;
            for c in cmds.iter_mut() {
                if let Command::PutCluster(cl) = c {
                    cl.capacity_providers = names.clone();
                    cl.default_capacity_provider_strategy = strategy.clone();
                }
            }
            Ok((cmds, outcome))
        }
    }
}

/// The strategy a RunTask (or a service's placement) uses: its own, else the
/// cluster's default when no launch type was given; empty means "place by
/// launch type as before". StartTask (explicit instances) never uses one.
pub fn resolve(c: &Cluster, r: &RunTask) -> Result<Vec<StrategyItem>, ApiError> {
    let given = r
        .capacity
        .as_ref()
        .and_then(|c| c.strategy.as_deref())
        .unwrap_or(&[]);
    if !given.is_empty() && r.launch_type.is_some() {
        return Err(ApiError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
        ));
    }
    if r.instances.is_some() {
        return Ok(vec![]);
    }
    let strategy = if !given.is_empty() {
        given.to_vec()
    } else if r.launch_type.is_none() {
        c.default_capacity_provider_strategy.clone()
    } else {
        vec![]
    };
    if !strategy.is_empty() {
        check_for_cluster(c, &strategy)?;
    }
    Ok(strategy)
}

/// CreateService's launch type and strategy: a given strategy (never with a
/// launch type, never for DAEMON), else a given launch type, else for
/// REPLICA the cluster's default strategy (ECS copies it into the service),
/// else `EXTERNAL`. Returns `(launch_type, strategy)`; exactly one is set.
pub fn service_placement(
    c: &Cluster,
    launch_type: &str,
    given: Option<&[StrategyItem]>,
    daemon: bool,
) -> Result<(String, Vec<StrategyItem>), ApiError> {
    let given = given.unwrap_or(&[]);
    if !given.is_empty() {
        if !launch_type.is_empty() {
            return Err(ApiError::invalid(
                "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
            ));
        }
        if daemon {
            return Err(ApiError::invalid(
                "Capacity provider strategies are not supported with the DAEMON scheduling strategy.",
            ));
        }
        check_for_cluster(c, given)?;
        return Ok((String::new(), given.to_vec()));
    }
    if !launch_type.is_empty() {
        return Ok((launch_type.to_string(), vec![]));
    }
    if !daemon && !c.default_capacity_provider_strategy.is_empty() {
        return Ok((String::new(), c.default_capacity_provider_strategy.clone()));
    }
    Ok(("EXTERNAL".into(), vec![]))
}

/// UpdateService's `capacityProviderStrategy`: checked against the cluster;
/// an empty list means the cluster's default strategy.
pub fn service_update_strategy(
    c: &Cluster,
    given: &[StrategyItem],
    daemon: bool,
) -> Result<Vec<StrategyItem>, ApiError> {
    if daemon {
        return Err(ApiError::invalid(
            "Capacity provider strategies are not supported with the DAEMON scheduling strategy.",
        ));
    }
    let strategy = if given.is_empty() {
        c.default_capacity_provider_strategy.clone()
    } else {
        given.to_vec()
    };
    if strategy.is_empty() {
        return Err(ApiError::invalid(
            "The cluster has no default capacity provider strategy; specify a capacity provider strategy.",
        ));
    }
    check_for_cluster(c, &strategy)?;
    Ok(strategy)
}

/// RunTask and service placements: without a strategy exactly
/// `state::plan_run`; with one, the count is split (`split`, counting the
/// service's existing tasks per provider from `r.capacity`) and each
/// share is placed by `plan_run` with the provider's group constraint and
/// `capacityProviderName`, later shares seeing earlier placements. The
/// result is one `PutTasks` (with the idempotency token, if any).
pub fn plan_run(m: &Model, mut r: RunTask, ctx: &mut Ctx<'_>) -> Result<Planned, ApiError> {
    let cluster = active_cluster(m, r.cluster.as_deref())?;
    let strategy = resolve(cluster, &r)?;
    if strategy.is_empty() {
        r.capacity = None;
        return state::plan_run(m, r, ctx);
    }
    let counts = r.capacity.take().map(|c| c.counts).unwrap_or_default();
    let token_key = r
        .client_token
        .take()
        .map(|t| format!("{}\n{}", cluster.name, t));
    if let Some(done) = state::remembered_run(m, token_key.as_deref()) {
        return Ok(done);
    }
    let existing: Vec<u32> = strategy
        .iter()
        .map(|i| counts.get(&i.capacity_provider).copied().unwrap_or(0))
        .collect();
    let shares = split(&strategy, &existing, r.count);
    let live: Vec<(&StrategyItem, u32)> = strategy
        .iter()
        .zip(shares)
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut working: Option<Model> = None;
    let (mut tasks, mut ids, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    // Failures already reported: an instance by its ARN, others as a whole.
    type Seen = (Option<String>, Option<(String, Option<String>)>);
    let mut seen: BTreeMap<Seen, usize> = BTreeMap::new();
    for (k, (item, n)) in live.iter().enumerate() {
        let provider = find_active(m, &item.capacity_provider).ok_or_else(not_found)?;
        let mut sub = r.clone();
        sub.count = *n;
        sub.launch_type = None;
        sub.capacity = Some(Box::new(RunCapacity {
            provider: Some(provider.name.clone()),
            group: Some(provider.group.clone()),
            ..RunCapacity::default()
        }));
        let base = working.as_ref().unwrap_or(m);
        let (cmds, outcome) = state::plan_run(base, sub, ctx)?;
        if let Outcome::Tasks {
            ids: i,
            failures: f,
        } = outcome
        {
            ids.extend(i);
            // An instance is reported once: with what refused it in the
            // share of its own group rather than the ATTRIBUTE of the
            // shares whose group it is outside.
            for x in f {
                let key = match &x.arn {
                    Some(_) => (x.arn.clone(), None),
                    None => (None, Some((x.reason.clone(), x.detail.clone()))),
                };
                match seen.get(&key) {
                    None => {
                        seen.insert(key, failures.len());
                        failures.push(x);
                    }
                    Some(&i) => {
                        if failures[i].reason == "ATTRIBUTE" && x.reason != "ATTRIBUTE" {
                            failures[i] = x;
                        }
                    }
                }
            }
        }
        let more = k + 1 < live.len();
        for c in cmds {
            if more {
                working.get_or_insert_with(|| m.clone()).apply(&c);
            }
            if let Command::PutTasks { tasks: t, .. } = c {
                tasks.extend(t);
            }
        }
    }
    Ok(state::run_outcome(tasks, ids, failures, token_key, ctx.now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, base: u32, weight: u32) -> StrategyItem {
        StrategyItem {
            capacity_provider: p.into(),
            weight,
            base,
        }
    }

    #[test]
    fn split_table() {
        // (strategy as (name, base, weight), existing, n, expected)
        #[allow(clippy::type_complexity)]
        let table: Vec<(Vec<(&str, u32, u32)>, Vec<u32>, u32, Vec<u32>)> = vec![
            // ECS docs: two providers of weight 1 split evenly.
            (vec![("a", 0, 1), ("b", 0, 1)], vec![0, 0], 4, vec![2, 2]),
            (vec![("a", 0, 1), ("b", 0, 1)], vec![0, 0], 5, vec![3, 2]),
            // ECS docs: weight 1 and weight 4: one task on A per four on B.
            (vec![("a", 0, 1), ("b", 0, 4)], vec![0, 0], 5, vec![1, 4]),
            (vec![("a", 0, 1), ("b", 0, 4)], vec![0, 0], 10, vec![2, 8]),
            // ECS docs: base 1 weight 1 on A, weight 4 on B: the base first,
            // then the rest 1:4.
            (vec![("a", 1, 1), ("b", 0, 4)], vec![0, 0], 6, vec![2, 4]),
            (vec![("a", 1, 1), ("b", 0, 4)], vec![0, 0], 1, vec![1, 0]),
            (vec![("a", 1, 1), ("b", 0, 4)], vec![0, 0], 11, vec![3, 8]),
            // The base may sit on the second item.
            (vec![("a", 0, 1), ("b", 2, 1)], vec![0, 0], 2, vec![0, 2]),
            (vec![("a", 0, 1), ("b", 2, 1)], vec![0, 0], 4, vec![1, 3]),
            // Base larger than the count: everything to the base provider.
            (vec![("a", 10, 0), ("b", 0, 1)], vec![0, 0], 3, vec![3, 0]),
            (vec![("a", 2, 0), ("b", 0, 1)], vec![0, 0], 5, vec![2, 3]),
            // A weight-0 provider gets nothing beyond its base.
            (vec![("a", 0, 0), ("b", 0, 3)], vec![0, 0], 4, vec![0, 4]),
            // A lone provider takes everything whatever its weight.
            (vec![("a", 0, 0)], vec![0], 3, vec![3]),
            (vec![("a", 2, 5)], vec![0], 1, vec![1]),
            // Three providers 1:2:1.
            (
                vec![("a", 0, 1), ("b", 0, 2), ("c", 0, 1)],
                vec![0, 0, 0],
                8,
                vec![2, 4, 2],
            ),
            // Scaling a service: existing tasks count; new ones restore the ratio.
            (vec![("a", 0, 1), ("b", 0, 1)], vec![3, 0], 3, vec![0, 3]),
            (vec![("a", 1, 1), ("b", 0, 4)], vec![2, 4], 5, vec![1, 4]),
            (vec![("a", 1, 1), ("b", 0, 4)], vec![0, 4], 1, vec![1, 0]),
            (vec![("a", 0, 1), ("b", 0, 1)], vec![0, 0], 0, vec![0, 0]),
        ];
        for (s, existing, n, want) in table {
            let strategy: Vec<StrategyItem> = s.iter().map(|(p, b, w)| item(p, *b, *w)).collect();
            assert_eq!(
                split(&strategy, &existing, n),
                want,
                "{s:?} existing {existing:?} n {n}"
            );
        }
    }

    /// Over many generated strategies: every task is placed, the base is
    /// served first, weight-0 items get nothing beyond their base, and each
    /// weighted item gets at least its proportional share of the rest
    /// rounded down (the split is D'Hondt's divisor method on the weights).
    #[test]
    fn split_invariants_over_generated_strategies() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for case in 0..3000 {
            let len = 1 + next(6) as usize;
            let based = next(len as u64 + 1) as usize; // == len: no base
            let strategy: Vec<StrategyItem> = (0..len)
                .map(|i| {
                    item(
                        &format!("p{i}"),
                        if i == based { next(8) as u32 } else { 0 },
                        if next(4) == 0 { 0 } else { 1 + next(20) as u32 },
                    )
                })
                .collect();
            if check_strategy(&strategy).is_err() {
                continue;
            }
            let n = next(60) as u32;
            let got = split(&strategy, &vec![0; len], n);
            assert_eq!(
                got.iter().sum::<u32>(),
                n,
                "case {case}: {strategy:?} n {n}"
            );
            let base_total: u32 = strategy.iter().map(|i| i.base).sum();
            for (i, it) in strategy.iter().enumerate() {
                assert!(
                    got[i] >= it.base.min(n),
                    "case {case}: base of {i}: {got:?}"
                );
            }
            if n <= base_total {
                continue;
            }
            let rest = u64::from(n - base_total);
            let lone = strategy.len() == 1;
            let w = |it: &StrategyItem| u64::from(if lone { it.weight.max(1) } else { it.weight });
            let total_w: u64 = strategy.iter().map(w).sum();
            for (i, it) in strategy.iter().enumerate() {
                let beyond = u64::from(got[i] - it.base);
                if w(it) == 0 {
                    assert_eq!(beyond, 0, "case {case}: weight 0 item {i}: {got:?}");
                } else {
                    assert!(
                        beyond >= rest * w(it) / total_w,
                        "case {case}: {strategy:?} n {n} got {got:?}: item {i} below its share"
                    );
                }
            }
        }
    }

    /// Growing one task at a time ends where placing everything at once does.
    #[test]
    fn split_stepwise_equals_at_once() {
        let strategy = vec![item("a", 2, 3), item("b", 0, 5), item("c", 0, 1)];
        for n in 0..60u32 {
            let at_once = split(&strategy, &[0, 0, 0], n);
            let mut have = vec![0u32; 3];
            for _ in 0..n {
                let add = split(&strategy, &have, 1);
                for (h, a) in have.iter_mut().zip(add) {
                    *h += a;
                }
            }
            assert_eq!(have, at_once, "n {n}");
            assert_eq!(at_once.iter().sum::<u32>(), n);
        }
    }

    fn fact<'a>(
        id: &'a str,
        provider: Option<&'a str>,
        healthy: bool,
    ) -> crate::service::TaskFacts<'a> {
        crate::service::TaskFacts {
            id,
            deployment: Some("ecs-svc/1"),
            instance_id: "i",
            availability_zone: Some("az"),
            created_at: 0.0,
            active: true,
            wanted: true,
            healthy,
            unhealthy: false,
            on_draining: false,
            failed: false,
            accounted: false,
            capacity_provider: provider,
        }
    }

    #[test]
    fn scale_in_keeps_the_split_table() {
        // (strategy, tasks as (id, provider), n, expected stopped in order)
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            Vec<StrategyItem>,
            Vec<(&str, Option<&str>)>,
            usize,
            Vec<&str>,
        )> = vec![
            // 1:1 with 4 on a and 2 on b, scale 6 -> 4: both from a.
            (
                vec![item("a", 0, 1), item("b", 0, 1)],
                vec![
                    ("a1", Some("a")),
                    ("a2", Some("a")),
                    ("a3", Some("a")),
                    ("a4", Some("a")),
                    ("b1", Some("b")),
                    ("b2", Some("b")),
                ],
                2,
                vec!["a1", "a2"],
            ),
            // Balanced 3/3 -> 4: one from each (the later item first on a tie).
            (
                vec![item("a", 0, 1), item("b", 0, 1)],
                vec![
                    ("a1", Some("a")),
                    ("a2", Some("a")),
                    ("a3", Some("a")),
                    ("b1", Some("b")),
                    ("b2", Some("b")),
                    ("b3", Some("b")),
                ],
                2,
                vec!["b1", "a1"],
            ),
            // Tasks of no provider / a provider left out go first (oldest,
            // then by id, as pick_to_stop orders).
            (
                vec![item("b", 0, 1)],
                vec![("x1", None), ("a1", Some("a")), ("b1", Some("b"))],
                2,
                vec!["a1", "x1"],
            ),
            // The base is kept: base 1 on a, weight on b; 1 a + 3 b -> 2 keeps a.
            (
                vec![item("a", 1, 0), item("b", 0, 1)],
                vec![
                    ("a1", Some("a")),
                    ("b1", Some("b")),
                    ("b2", Some("b")),
                    ("b3", Some("b")),
                ],
                2,
                vec!["b1", "b2"],
            ),
            // Asking for more than there is stops everything once.
            (
                vec![item("a", 0, 1)],
                vec![("a1", Some("a"))],
                5,
                vec!["a1"],
            ),
        ];
        for (strategy, tasks, n, want) in table {
            let facts: Vec<crate::service::TaskFacts> =
                tasks.iter().map(|(id, p)| fact(id, *p, true)).collect();
            let refs: Vec<&crate::service::TaskFacts> = facts.iter().collect();
            assert_eq!(
                pick_scale_in(&strategy, &refs, &refs, n),
                want,
                "{tasks:?} n {n}"
            );
        }
    }

    #[test]
    fn strategy_rules_table() {
        let ok = Ok(());
        let table: Vec<(Vec<StrategyItem>, Result<(), CapacityError>)> = vec![
            (vec![item("a", 0, 1)], ok.clone()),
            (vec![item("a", 0, 0)], ok.clone()),
            (vec![item("a", 5, 0), item("b", 0, 1)], ok.clone()),
            (
                vec![item("a", 0, 0), item("b", 0, 0)],
                Err(CapacityError::NoWeight),
            ),
            (
                vec![item("a", 1, 1), item("b", 1, 1)],
                Err(CapacityError::TwoBases),
            ),
            (
                vec![item("a", 0, 1), item("a", 0, 1)],
                Err(CapacityError::Duplicate("a".into())),
            ),
            (vec![item("a", 0, 1001)], Err(CapacityError::Weight)),
            (vec![item("a", 100_001, 1)], Err(CapacityError::Base)),
            (
                (0..7).map(|i| item(&format!("p{i}"), 0, 1)).collect(),
                Err(CapacityError::TooMany),
            ),
        ];
        for (s, want) in table {
            assert_eq!(check_strategy(&s), want, "{s:?}");
        }
    }

    #[test]
    fn provider_name_table() {
        let long = "a".repeat(256);
        for (name, want) in [
            ("rack-a", Ok(())),
            ("Rack_1", Ok(())),
            ("", Err(CapacityError::BadName)),
            (long.as_str(), Err(CapacityError::BadName)),
            ("has space", Err(CapacityError::BadName)),
            ("FARGATE", Err(CapacityError::ReservedName)),
            ("FARGATE_SPOT", Err(CapacityError::ReservedName)),
            ("fargate-x", Err(CapacityError::ReservedName)),
            ("awsome", Err(CapacityError::ReservedName)),
            ("ECSgroup", Err(CapacityError::ReservedName)),
            ("my-aws", Ok(())),
        ] {
            assert_eq!(check_provider_name(name), want, "{name:?}");
        }
    }

    #[test]
    fn group_of_table() {
        for (asg, want) in [
            (
                "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:4e4b6f30-1234-5678-9abc-def012345678:autoScalingGroupName/rack-a",
                Some("rack-a"),
            ),
            ("rack-b", Some("rack-b")),
            ("dc1/row2", Some("dc1/row2")),
            ("arn:aws:autoscaling:x", Some("arn:aws:autoscaling:x")),
            ("", None),
            ("bad\tvalue", None),
        ] {
            assert_eq!(group_of(asg).ok().as_deref(), want, "{asg:?}");
        }
    }

    #[test]
    fn member_expr_matches_only_the_group() {
        let e = member_expr("rack a").unwrap();
        let mut f = cql::Facts::default();
        assert!(!cql::eval(&e, &f));
        f.attributes
            .insert(GROUP_ATTRIBUTE.into(), Some("rack a".into()));
        assert!(cql::eval(&e, &f));
        f.attributes
            .insert(GROUP_ATTRIBUTE.into(), Some("rack b".into()));
        assert!(!cql::eval(&e, &f));
    }
}
