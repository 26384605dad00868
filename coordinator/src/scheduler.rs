//! Task placement: a pure function from candidate instances (already reduced
//! to what placement needs) and a task's requirements to placements, or to a
//! reason per instance why nothing fits.
//!
//! **Architecture Invariant:** the scheduler does no I/O and reads no clock;
//! randomness comes from the caller's seedable RNG, so a seed reproduces a plan.
//!
//! Pipeline, as ECS: filter (status ACTIVE, agent connected, CPU, MEMORY,
//! PORTS, PORTS_UDP), then pick uniformly among feasible instances (ECS's
//! default RunTask strategy is random). Each placement deducts its resources
//! before the next task is placed, so one plan never overcommits.
//!
//! Dynamic host ports (bridge mappings with `hostPort` 0 or absent) are
//! chosen here too: the **lowest** ports of [`DYNAMIC_PORTS`] free on the
//! chosen instance for that protocol (not registered as reserved, not used by
//! an active task, not a static port of the same task). Lowest-free needs no
//! randomness, so the choice is a pure function of the model and is carried
//! in the placement command for exact replay.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use rand::Rng;

use crate::cql;

/// The host ports dynamic mappings are drawn from (ECS's ephemeral range on
/// Linux container instances).
pub const DYNAMIC_PORTS: RangeInclusive<u16> = 49153..=65535;

/// What placement needs to know about one container instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub arn: String,
    /// `ACTIVE`, `DRAINING`, `INACTIVE`.
    pub status: String,
    pub connected: bool,
    pub cpu_remaining: i64,
    pub memory_remaining: i64,
    /// TCP host ports taken (reserved by the instance or used by tasks).
    pub tcp_used: BTreeSet<u16>,
    pub udp_used: BTreeSet<u16>,
    /// What `memberOf` expressions and `spread attribute:*` look at.
    pub facts: std::sync::Arc<cql::Facts>,
    /// Active tasks of the request's group already on this instance.
    pub group_tasks: u32,
    /// The verdict of the request's `memberOf` expressions on `facts`, when
    /// the caller has it already (`None`: `check` evaluates them).
    pub member_ok: Option<bool>,
}

/// A placement strategy, applied in order (ties fall to the next, then to the RNG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Random,
    /// Fewest tasks of the group per instance.
    SpreadInstance,
    /// Fewest tasks of the group per value of this attribute.
    SpreadAttribute(String),
    BinpackCpu,
    BinpackMemory,
}

/// One task's needs and the request's placement rules.
#[derive(Debug, Clone, Default)]
pub struct Need {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// How many dynamic TCP / UDP host ports the task needs.
    pub dynamic_tcp: usize,
    pub dynamic_udp: usize,
    /// `memberOf` constraints: every expression must hold.
    pub member_of: Vec<cql::Expr>,
    /// How many of `member_of`'s last expressions are requirements rather
    /// than the user's constraints (a capacity provider's instance group):
    /// an instance failing one is refused with `ATTRIBUTE`, one failing only
    /// the user's with `MemberOf placement constraint unsatisfied.`.
    pub required: usize,
    /// `distinctInstance`: at most one task of this request per instance.
    pub distinct_instance: bool,
    pub strategies: Vec<Strategy>,
}

/// Why an instance cannot take a task; `reason()` is the ECS failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    Inactive,
    Draining,
    Agent,
    Attribute,
    MemberOf,
    DistinctInstance,
    Cpu,
    Memory,
    Ports,
    PortsUdp,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Inactive => "INACTIVE",
            Rejection::Draining => "DRAINING",
            Rejection::Agent => "AGENT",
            Rejection::Attribute => "ATTRIBUTE",
            Rejection::MemberOf => "MemberOf placement constraint unsatisfied.",
            Rejection::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
            Rejection::Cpu => "RESOURCE:CPU",
            Rejection::Memory => "RESOURCE:MEMORY",
            Rejection::Ports => "RESOURCE:PORTS",
            Rejection::PortsUdp => "RESOURCE:PORTS_UDP",
        }
    }
}

/// The outcome of placing `count` copies of a task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Instance id per placed task, in placement order.
    pub placements: Vec<String>,
    /// Dynamic host ports chosen for each placed task (parallel to `placements`).
    pub ports: Vec<DynamicPorts>,
    /// `(instance arn, reason)` for each instance that rejected an unplaced task.
    pub failures: Vec<(String, &'static str)>,
}

/// Dynamic host ports chosen for one placed task, in the order of the task's
/// dynamic mappings of that protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DynamicPorts {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

/// The lowest `n` ports of [`DYNAMIC_PORTS`] in neither `used` nor `also`,
/// or `None` when fewer than `n` are free.
pub fn free_dynamic(used: &BTreeSet<u16>, also: &[u16], n: usize) -> Option<Vec<u16>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let picked: Vec<u16> = DYNAMIC_PORTS
        .filter(|p| !used.contains(p) && !also.contains(p))
        .take(n)
        .collect();
    (picked.len() == n).then_some(picked)
}

/// First filter an instance fails for `need`, in ECS's order.
pub fn check(c: &Candidate, need: &Need) -> Result<(), Rejection> {
    match c.status.as_str() {
        "ACTIVE" => {}
        "DRAINING" => return Err(Rejection::Draining),
        _ => return Err(Rejection::Inactive),
    }
    if !c.connected {
        return Err(Rejection::Agent);
    }
    let member_ok = c
        .member_ok
        .unwrap_or_else(|| need.member_of.iter().all(|e| cql::eval(e, &c.facts)));
    if !member_ok {
        let required = &need.member_of[need.member_of.len().saturating_sub(need.required)..];
        return Err(if required.iter().all(|e| cql::eval(e, &c.facts)) {
            Rejection::MemberOf
        } else {
            Rejection::Attribute
        });
    }
    if c.cpu_remaining < need.cpu {
        return Err(Rejection::Cpu);
    }
    if c.memory_remaining < need.memory {
        return Err(Rejection::Memory);
    }
    if need.tcp_ports.iter().any(|p| c.tcp_used.contains(p))
        || free_dynamic(&c.tcp_used, &need.tcp_ports, need.dynamic_tcp).is_none()
    {
        return Err(Rejection::Ports);
    }
    if need.udp_ports.iter().any(|p| c.udp_used.contains(p))
        || free_dynamic(&c.udp_used, &need.udp_ports, need.dynamic_udp).is_none()
    {
        return Err(Rejection::PortsUdp);
    }
    Ok(())
}

/// Deducts `need` from `c` (which `check` accepted) and returns the dynamic
/// ports it chose.
fn take(c: &mut Candidate, need: &Need) -> DynamicPorts {
    c.group_tasks += 1;
    c.cpu_remaining -= need.cpu;
    c.memory_remaining -= need.memory;
    let ports = DynamicPorts {
        tcp: free_dynamic(&c.tcp_used, &need.tcp_ports, need.dynamic_tcp).unwrap_or_default(),
        udp: free_dynamic(&c.udp_used, &need.udp_ports, need.dynamic_udp).unwrap_or_default(),
    };
    c.tcp_used.extend(need.tcp_ports.iter().copied());
    c.udp_used.extend(need.udp_ports.iter().copied());
    c.tcp_used.extend(ports.tcp.iter().copied());
    c.udp_used.extend(ports.udp.iter().copied());
    ports
}

/// `spread attribute:NAME` bookkeeping: each candidate's value slot and
/// the group's task total per value, over all candidates.
struct Spread {
    slot_of: Vec<usize>,
    totals: Vec<i64>,
}

impl Spread {
    fn new(cands: &[Candidate], name: &str) -> Spread {
        let mut slots: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        let mut totals = Vec::new();
        let slot_of = cands
            .iter()
            .map(|c| {
                let value = c.facts.attributes.get(name).and_then(|v| v.as_deref());
                let slot = *slots.entry(value).or_insert_with(|| {
                    totals.push(0);
                    totals.len() - 1
                });
                totals[slot] += i64::from(c.group_tasks);
                slot
            })
            .collect();
        Spread { slot_of, totals }
    }
}

/// The candidates as this plan has changed them: the caller's slice, with a
/// copy of each instance a task was placed on (the only ones that change).
struct View<'a> {
    base: &'a [Candidate],
    /// Per candidate, its copy in `copies` (`usize::MAX`: unchanged).
    slot: Vec<usize>,
    copies: Vec<Candidate>,
}

impl View<'_> {
    fn get(&self, i: usize) -> &Candidate {
        match self.slot[i] {
            usize::MAX => &self.base[i],
            k => &self.copies[k],
        }
    }
    fn get_mut(&mut self, i: usize) -> &mut Candidate {
        if self.slot[i] == usize::MAX {
            self.slot[i] = self.copies.len();
            self.copies.push(self.base[i].clone());
        }
        let k = self.slot[i];
        &mut self.copies[k]
    }
    fn changed(&self, i: usize) -> bool {
        self.slot[i] != usize::MAX
    }
}

/// The strategies' preference for candidate `i`, one key per strategy
/// (lower is better; ties fall to the next strategy, then to the RNG).
/// `spread` is the strategy's bookkeeping when it spreads over an attribute.
fn key(view: &View<'_>, i: usize, strategy: &Strategy, spread: Option<&Spread>) -> i64 {
    let c = view.get(i);
    match strategy {
        Strategy::Random => 0,
        Strategy::SpreadInstance => i64::from(c.group_tasks),
        Strategy::SpreadAttribute(_) => spread.map_or(0, |s| s.totals[s.slot_of[i]]),
        Strategy::BinpackCpu => c.cpu_remaining,
        Strategy::BinpackMemory => c.memory_remaining,
    }
}

/// The candidates every strategy in turn likes best: those whose keys,
/// compared in strategy order, equal the least (`min`), kept in index order.
struct Best<'n> {
    strategies: &'n [Strategy],
    members: Vec<usize>,
    min: Vec<i64>,
}

impl Best<'_> {
    /// How `i`'s keys compare with the least.
    fn cmp(&self, view: &View<'_>, spreads: &[Option<Spread>], i: usize) -> std::cmp::Ordering {
        for ((s, sp), m) in self.strategies.iter().zip(spreads).zip(&self.min) {
            match key(view, i, s, sp.as_ref()).cmp(m) {
                std::cmp::Ordering::Equal => {}
                other => return other,
            }
        }
        std::cmp::Ordering::Equal
    }

    fn set_min(&mut self, view: &View<'_>, spreads: &[Option<Spread>], i: usize) {
        self.min.clear();
        self.min.extend(
            self.strategies
                .iter()
                .zip(spreads)
                .map(|(s, sp)| key(view, i, s, sp.as_ref())),
        );
    }

    /// Recomputes the members from all of `feasible` (one pass).
    fn rebuild(&mut self, view: &View<'_>, spreads: &[Option<Spread>], feasible: &[usize]) {
        self.members.clear();
        for &i in feasible {
            let order = if self.members.is_empty() {
                std::cmp::Ordering::Less
            } else {
                self.cmp(view, spreads, i)
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.set_min(view, spreads, i);
                    self.members.clear();
                    self.members.push(i);
                }
                std::cmp::Ordering::Equal => self.members.push(i),
                std::cmp::Ordering::Greater => {}
            }
        }
    }
}

/// Places `count` copies of a task on any of `cands` (RunTask).
///
/// Placing a task changes only the instance it lands on (and, for an
/// attribute spread, the total of that instance's value, which only grows).
/// So feasibility is decided once per candidate and afterwards re-checked
/// only for the instance just used, and the strategies' best set is kept
/// rather than recomputed: the instance used may leave it, or become its
/// only member when its keys dropped below the least (binpack); members of a
/// grown spread total leave it; only when it empties is it rebuilt from all
/// feasible candidates. The plan equals re-filtering and re-ranking every
/// candidate per task, RNG draws included (`tests::matches_the_per_task_reference`).
/// `cands` is only read: deductions go to copies of the instances used.
pub fn place(cands: &[Candidate], need: &Need, count: usize, rng: &mut impl Rng) -> Plan {
    let mut plan = Plan::default();
    let mut view = View {
        base: cands,
        slot: vec![usize::MAX; cands.len()],
        copies: Vec::new(),
    };
    let mut feasible: Vec<usize> = (0..cands.len())
        .filter(|&i| check(&cands[i], need).is_ok())
        .collect();
    let mut spreads: Vec<Option<Spread>> = need
        .strategies
        .iter()
        .map(|s| match s {
            Strategy::SpreadAttribute(name) => Some(Spread::new(cands, name)),
            _ => None,
        })
        .collect();
    let spreads_attribute = spreads.iter().any(Option::is_some);
    let mut best = Best {
        strategies: &need.strategies,
        members: Vec::new(),
        min: Vec::with_capacity(need.strategies.len()),
    };
    best.rebuild(&view, &spreads, &feasible);
    for _ in 0..count {
        if feasible.is_empty() {
            for i in 0..cands.len() {
                let c = view.get(i);
                let verdict = check(c, need).and_then(|()| {
                    if need.distinct_instance && view.changed(i) {
                        Err(Rejection::DistinctInstance)
                    } else {
                        Ok(())
                    }
                });
                if let Err(r) = verdict {
                    if !plan.failures.iter().any(|(a, _)| a == &c.arn) {
                        plan.failures.push((c.arn.clone(), r.reason()));
                    }
                }
            }
            break;
        }
        let pick = best.members[rng.gen_range(0..best.members.len())];
        let ports = take(view.get_mut(pick), need);
        for sp in spreads.iter_mut().flatten() {
            sp.totals[sp.slot_of[pick]] += 1;
        }
        plan.ports.push(ports);
        plan.placements.push(view.get(pick).id.clone());
        if need.distinct_instance || check(view.get(pick), need).is_err() {
            feasible.retain(|&i| i != pick);
            best.members.retain(|&i| i != pick);
        } else {
            match best.cmp(&view, &spreads, pick) {
                std::cmp::Ordering::Less => {
                    best.set_min(&view, &spreads, pick);
                    best.members.clear();
                    best.members.push(pick);
                }
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => best.members.retain(|&i| i != pick),
            }
        }
        if spreads_attribute {
            let (v, sp) = (&view, &spreads);
            let mut members = std::mem::take(&mut best.members);
            members.retain(|&i| best.cmp(v, sp, i) == std::cmp::Ordering::Equal);
            best.members = members;
        }
        if best.members.is_empty() {
            best.rebuild(&view, &spreads, &feasible);
        }
    }
    plan
}

/// Places one copy of a task on each of `cands`, in order (StartTask). The same
/// instance listed twice gets two tasks if it has room for both.
pub fn place_on_each(mut cands: Vec<Candidate>, need: &Need) -> Plan {
    let mut plan = Plan::default();
    // Index by id so repeated instances share deductions.
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in cands.iter().enumerate() {
        by_id.entry(c.id.clone()).or_insert(i);
    }
    for i in 0..cands.len() {
        let idx = by_id.get(&cands[i].id).copied().unwrap_or(i);
        match check(&cands[idx], need) {
            Ok(()) => {
                let ports = take(&mut cands[idx], need);
                plan.ports.push(ports);
                plan.placements.push(cands[idx].id.clone());
            }
            Err(r) => plan.failures.push((cands[idx].arn.clone(), r.reason())),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn cand(id: &str, cpu: i64, mem: i64, tcp: &[u16]) -> Candidate {
        Candidate {
            id: id.into(),
            arn: format!("arn/{id}"),
            status: "ACTIVE".into(),
            connected: true,
            cpu_remaining: cpu,
            memory_remaining: mem,
            tcp_used: tcp.iter().copied().collect(),
            udp_used: BTreeSet::new(),
            facts: Default::default(),
            group_tasks: 0,
            member_ok: None,
        }
    }

    #[test]
    fn check_table() {
        let need = Need {
            cpu: 256,
            memory: 512,
            tcp_ports: vec![80],
            udp_ports: vec![53],
            ..Need::default()
        };
        let mut draining = cand("d", 2048, 2048, &[]);
        draining.status = "DRAINING".into();
        let mut inactive = cand("x", 2048, 2048, &[]);
        inactive.status = "INACTIVE".into();
        let mut gone = cand("g", 2048, 2048, &[]);
        gone.connected = false;
        let mut udp = cand("u", 2048, 2048, &[]);
        udp.udp_used.insert(53);
        let table: Vec<(Candidate, Result<(), Rejection>)> = vec![
            (cand("ok", 256, 512, &[22]), Ok(())),
            (cand("cpu", 255, 512, &[]), Err(Rejection::Cpu)),
            (cand("mem", 256, 511, &[]), Err(Rejection::Memory)),
            (cand("port", 256, 512, &[80]), Err(Rejection::Ports)),
            (udp, Err(Rejection::PortsUdp)),
            (draining, Err(Rejection::Draining)),
            (inactive, Err(Rejection::Inactive)),
            (gone, Err(Rejection::Agent)),
            // CPU is checked before memory, as ECS reports the first misfit.
            (cand("both", 1, 1, &[]), Err(Rejection::Cpu)),
        ];
        for (c, want) in table {
            assert_eq!(check(&c, &need), want, "candidate {}", c.id);
        }
        assert_eq!(Rejection::Memory.reason(), "RESOURCE:MEMORY");
        // memberOf: the user's constraint refuses with MemberOf, a
        // requirement (the last `required` expressions) with ATTRIBUTE.
        let need = Need {
            member_of: vec![
                cql::parse("attribute:stack == prod").unwrap(),
                cql::parse("attribute:rack == a").unwrap(),
            ],
            required: 1,
            ..Need::default()
        };
        for (stack, rack, want) in [
            ("prod", "a", Ok(())),
            ("dev", "a", Err(Rejection::MemberOf)),
            ("prod", "b", Err(Rejection::Attribute)),
            ("dev", "b", Err(Rejection::Attribute)),
        ] {
            let c = with_attr(
                with_attr(cand("m", 1, 1, &[]), "stack", stack),
                "rack",
                rack,
            );
            assert_eq!(check(&c, &need), want, "{stack} {rack}");
        }
        assert_eq!(Rejection::Agent.reason(), "AGENT");
    }

    #[test]
    fn place_deducts_and_never_overcommits() {
        let need = Need {
            cpu: 512,
            memory: 256,
            ..Need::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        // 1024 cpu each: two tasks per instance, four in all.
        let plan = place(
            &[cand("a", 1024, 4096, &[]), cand("b", 1024, 4096, &[])],
            &need,
            6,
            &mut rng,
        );
        assert_eq!(plan.placements.len(), 4);
        assert_eq!(plan.placements.iter().filter(|p| *p == "a").count(), 2);
        assert_eq!(plan.placements.iter().filter(|p| *p == "b").count(), 2);
        assert_eq!(
            plan.failures,
            vec![
                ("arn/a".to_string(), "RESOURCE:CPU"),
                ("arn/b".to_string(), "RESOURCE:CPU")
            ]
        );
    }

    #[test]
    fn static_host_port_fits_once_per_instance() {
        let need = Need {
            cpu: 0,
            memory: 16,
            tcp_ports: vec![8080],
            ..Need::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let plan = place(&[cand("a", 1024, 4096, &[22])], &need, 2, &mut rng);
        assert_eq!(plan.placements, vec!["a".to_string()]);
        assert_eq!(plan.failures, vec![("arn/a".to_string(), "RESOURCE:PORTS")]);
    }

    #[test]
    fn dynamic_ports_table() {
        let top: u16 = *DYNAMIC_PORTS.end();
        let first: u16 = *DYNAMIC_PORTS.start();
        // (instance's used tcp ports, static tcp, dynamic tcp, dynamic udp,
        //  count, expected chosen ports per task or failure reason)
        type Row = (
            Vec<u16>,
            Vec<u16>,
            usize,
            usize,
            usize,
            Vec<DynamicPorts>,
            Vec<&'static str>,
        );
        let d = |tcp: &[u16], udp: &[u16]| DynamicPorts {
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
        };
        let all_but_two: Vec<u16> = (first..=top - 2).collect();
        let table: Vec<Row> = vec![
            // two bridge tasks on one host get different dynamic ports.
            (
                vec![],
                vec![],
                1,
                0,
                2,
                vec![d(&[first], &[]), d(&[first + 1], &[])],
                vec![],
            ),
            // used ports (reserved or other tasks') are skipped.
            (
                vec![first, first + 1, 22],
                vec![],
                1,
                0,
                1,
                vec![d(&[first + 2], &[])],
                vec![],
            ),
            // a static port inside the range is not also handed out dynamically.
            (
                vec![],
                vec![first],
                1,
                0,
                1,
                vec![d(&[first + 1], &[])],
                vec![],
            ),
            // tcp and udp are independent.
            (
                vec![first],
                vec![],
                1,
                1,
                1,
                vec![d(&[first + 1], &[first])],
                vec![],
            ),
            // several dynamic mappings in one task.
            (
                vec![],
                vec![],
                3,
                0,
                1,
                vec![d(&[first, first + 1, first + 2], &[])],
                vec![],
            ),
            // exhaustion: two left, second task needs two more.
            (
                all_but_two.clone(),
                vec![],
                2,
                0,
                2,
                vec![d(&[top - 1, top], &[])],
                vec!["RESOURCE:PORTS"],
            ),
            // static conflict refused even with dynamic room.
            (
                vec![8080],
                vec![8080],
                1,
                0,
                1,
                vec![],
                vec!["RESOURCE:PORTS"],
            ),
        ];
        for (i, (used, stat, dt, du, count, want, fails)) in table.into_iter().enumerate() {
            let need = Need {
                cpu: 0,
                memory: 0,
                tcp_ports: stat,
                dynamic_tcp: dt,
                dynamic_udp: du,
                ..Need::default()
            };
            let plan = place(
                &[cand("a", 1024, 4096, &used)],
                &need,
                count,
                &mut StdRng::seed_from_u64(3),
            );
            assert_eq!(plan.ports, want, "row {i}");
            assert_eq!(plan.placements.len(), plan.ports.len(), "row {i}");
            let got: Vec<&str> = plan.failures.iter().map(|(_, r)| *r).collect();
            assert_eq!(got, fails, "row {i}");
        }
    }

    #[test]
    fn dynamic_udp_exhaustion_is_ports_udp() {
        let mut c = cand("a", 1024, 4096, &[]);
        c.udp_used = DYNAMIC_PORTS.collect();
        let need = Need {
            dynamic_udp: 1,
            ..Need::default()
        };
        assert_eq!(check(&c, &need), Err(Rejection::PortsUdp));
        // StartTask on the same instance twice shares the deductions.
        let need = Need {
            dynamic_tcp: 1,
            ..Need::default()
        };
        let plan = place_on_each(vec![cand("b", 1, 1, &[]), cand("b", 1, 1, &[])], &need);
        let first = *DYNAMIC_PORTS.start();
        assert_eq!(
            plan.ports,
            vec![
                DynamicPorts {
                    tcp: vec![first],
                    udp: vec![]
                },
                DynamicPorts {
                    tcp: vec![first + 1],
                    udp: vec![]
                }
            ]
        );
    }

    /// The straightforward placement `place` must equal: per task, filter
    /// every candidate as placed so far, narrow by each strategy in turn,
    /// draw uniformly among what is left.
    fn reference(cands: &[Candidate], need: &Need, count: usize, rng: &mut StdRng) -> Plan {
        let mut now: Vec<Candidate> = cands.to_vec();
        let mut used = vec![false; cands.len()];
        let mut plan = Plan::default();
        for _ in 0..count {
            let mut best: Vec<usize> = (0..now.len())
                .filter(|&i| check(&now[i], need).is_ok() && !(need.distinct_instance && used[i]))
                .collect();
            if best.is_empty() {
                break;
            }
            for s in &need.strategies {
                let k = |i: usize| -> i64 {
                    match s {
                        Strategy::Random => 0,
                        Strategy::SpreadInstance => i64::from(now[i].group_tasks),
                        Strategy::SpreadAttribute(name) => {
                            let v = |c: &Candidate| c.facts.attributes.get(name).cloned().flatten();
                            now.iter()
                                .filter(|o| v(o) == v(&now[i]))
                                .map(|o| i64::from(o.group_tasks))
                                .sum()
                        }
                        Strategy::BinpackCpu => now[i].cpu_remaining,
                        Strategy::BinpackMemory => now[i].memory_remaining,
                    }
                };
                if let Some(min) = best.iter().map(|&i| k(i)).min() {
                    best.retain(|&i| k(i) == min);
                }
            }
            let pick = best[rng.gen_range(0..best.len())];
            used[pick] = true;
            plan.ports.push(take(&mut now[pick], need));
            plan.placements.push(now[pick].id.clone());
        }
        plan
    }

    /// `place` keeps its best set between tasks instead of re-ranking;
    /// over random fleets, needs and strategy lists it places exactly as
    /// the reference does with the same seed (same picks, same ports).
    #[test]
    fn matches_the_per_task_reference() {
        let mut gen = StdRng::seed_from_u64(2024);
        let kinds = [
            Strategy::Random,
            Strategy::SpreadInstance,
            Strategy::SpreadAttribute("zone".into()),
            Strategy::BinpackCpu,
            Strategy::BinpackMemory,
        ];
        for case in 0..2000 {
            let n = gen.gen_range(1..25);
            let cands: Vec<Candidate> = (0..n)
                .map(|i| {
                    let mut c = cand(
                        &format!("i{i}"),
                        gen.gen_range(0..6) * 128,
                        gen.gen_range(0..6) * 256,
                        &[],
                    );
                    c.group_tasks = gen.gen_range(0..3);
                    if gen.gen_bool(0.1) {
                        c.status = "DRAINING".into();
                    }
                    let zone = format!("z{}", gen.gen_range(0..3));
                    with_attr(c, "zone", &zone)
                })
                .collect();
            let need = Need {
                cpu: gen.gen_range(0..3) * 128,
                memory: gen.gen_range(0..3) * 256,
                distinct_instance: gen.gen_bool(0.2),
                dynamic_tcp: gen.gen_range(0..2),
                strategies: (0..gen.gen_range(0..4))
                    .map(|_| kinds[gen.gen_range(0..kinds.len())].clone())
                    .collect(),
                ..Need::default()
            };
            let count = gen.gen_range(1..40);
            let seed = gen.gen();
            let got = place(&cands, &need, count, &mut StdRng::seed_from_u64(seed));
            let want = reference(&cands, &need, count, &mut StdRng::seed_from_u64(seed));
            assert_eq!(got.placements, want.placements, "case {case}: {need:?}");
            assert_eq!(got.ports, want.ports, "case {case}");
        }
    }

    #[test]
    fn same_seed_same_plan() {
        let need = Need {
            cpu: 1,
            memory: 1,
            ..Need::default()
        };
        let cands: Vec<Candidate> = (0..5)
            .map(|i| cand(&format!("i{i}"), 100, 100, &[]))
            .collect();
        let a = place(&cands, &need, 10, &mut StdRng::seed_from_u64(42));
        let b = place(&cands, &need, 10, &mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
        assert_eq!(a.placements.len(), 10);
    }

    fn with_attr(mut c: Candidate, name: &str, value: &str) -> Candidate {
        std::sync::Arc::make_mut(&mut c.facts)
            .attributes
            .insert(name.to_string(), Some(value.to_string()));
        c
    }

    #[test]
    fn member_of_and_distinct_instance() {
        let need = Need {
            cpu: 1,
            memory: 1,
            member_of: vec![cql::parse("attribute:stack == prod").unwrap()],
            distinct_instance: true,
            ..Need::default()
        };
        let cands = vec![
            with_attr(cand("a", 100, 100, &[]), "stack", "prod"),
            with_attr(cand("b", 100, 100, &[]), "stack", "dev"),
            with_attr(cand("c", 100, 100, &[]), "stack", "prod"),
        ];
        let plan = place(&cands, &need, 3, &mut StdRng::seed_from_u64(5));
        let mut placed = plan.placements.clone();
        placed.sort();
        assert_eq!(placed, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(
            plan.failures,
            vec![
                (
                    "arn/a".to_string(),
                    "DistinctInstance placement constraint unsatisfied."
                ),
                (
                    "arn/b".to_string(),
                    "MemberOf placement constraint unsatisfied."
                ),
                (
                    "arn/c".to_string(),
                    "DistinctInstance placement constraint unsatisfied."
                ),
            ]
        );
    }

    #[test]
    fn strategies_table() {
        let base = || {
            vec![
                with_attr(cand("a", 1000, 300, &[]), "zone", "z1"),
                with_attr(cand("b", 500, 900, &[]), "zone", "z1"),
                with_attr(cand("c", 800, 800, &[]), "zone", "z2"),
            ]
        };
        let table: Vec<(Vec<Strategy>, usize, Vec<&str>)> = vec![
            // binpack memory fills the fullest instance first.
            (vec![Strategy::BinpackMemory], 2, vec!["a", "a"]),
            (vec![Strategy::BinpackCpu], 1, vec!["b"]),
            // spread by instance: three tasks on three instances.
            (vec![Strategy::SpreadInstance], 3, vec!["a", "b", "c"]),
            // spread by zone then binpack memory: z2 first (empty zone? both
            // empty: binpack picks a in z1), then the other zone.
            (
                vec![
                    Strategy::SpreadAttribute("zone".into()),
                    Strategy::BinpackMemory,
                ],
                2,
                vec!["a", "c"],
            ),
        ];
        for (strategies, count, want) in table {
            let need = Need {
                cpu: 100,
                memory: 100,
                strategies: strategies.clone(),
                ..Need::default()
            };
            let plan = place(&base(), &need, count, &mut StdRng::seed_from_u64(9));
            let mut got: Vec<&str> = plan.placements.iter().map(|s| s.as_str()).collect();
            if strategies == vec![Strategy::SpreadInstance] {
                got.sort();
            }
            assert_eq!(got, want, "{strategies:?}");
        }
    }

    #[test]
    fn place_on_each_reports_per_instance() {
        let need = Need {
            cpu: 600,
            memory: 1,
            ..Need::default()
        };
        let plan = place_on_each(
            vec![
                cand("a", 1024, 100, &[]),
                cand("b", 100, 100, &[]),
                cand("a", 1024, 100, &[]),
            ],
            &need,
        );
        assert_eq!(plan.placements, vec!["a".to_string()]);
        assert_eq!(
            plan.failures,
            vec![
                ("arn/b".to_string(), "RESOURCE:CPU"),
                ("arn/a".to_string(), "RESOURCE:CPU")
            ]
        );
    }
}
