//! Property tests for placement and the cluster query language, checked
//! against an oracle written independently of `scheduler::check`:
//! random candidate sets (cpu, memory, ports, attributes, groups, status),
//! random needs, `memberOf` expressions, `distinctInstance`, strategies and
//! counts. Every placement must satisfy every constraint, no instance is
//! overcommitted, no host port is booked twice, each pick is among the
//! instances the strategies prefer, and a request is cut short exactly when
//! no instance can take another task. For the query language: printed
//! expressions parse back to the same expression, and no input panics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_coordinator::cql::{self, Arg, Expr, Facts, Op, Pattern};
use berth_coordinator::scheduler::{
    place, place_on_each, Candidate, Need, Plan, Strategy as Placement, DYNAMIC_PORTS,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

// ------------------------------------------------------------ generators

const ZONES: [&str; 3] = ["z1", "z2", "z3"];
const STACKS: [&str; 2] = ["prod", "dev"];
const GROUPS: [&str; 3] = ["service:web", "service:db", "family:batch"];
/// Host ports tasks ask for statically; two sit in the dynamic range so
/// static and dynamic choices can collide.
const TCP_POOL: [u16; 5] = [80, 443, 8080, 49153, 49154];
const UDP_POOL: [u16; 3] = [53, 49153, 49155];

/// A few ports of `pool` (at most `max`), so most instances and tasks fit
/// together and collisions still happen.
fn subset(pool: &'static [u16], max: usize) -> impl Strategy<Value = BTreeSet<u16>> {
    proptest::sample::subsequence(pool.to_vec(), 0..=max).prop_map(|v| v.into_iter().collect())
}

fn facts() -> impl Strategy<Value = Facts> {
    (
        proptest::option::of(proptest::sample::select(ZONES.to_vec())),
        0..4usize,
        proptest::option::of(0..16u32),
        any::<bool>(),
        0..5u32,
        proptest::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len()),
        proptest::sample::select(vec!["1.9.0", "1.10.2", ""]),
        0..3i64,
    )
        .prop_map(
            |(zone, stack, cores, connected, running, groups, version, day)| {
                let mut attributes = BTreeMap::new();
                if let Some(z) = zone {
                    attributes.insert("ecs.availability-zone".to_string(), Some(z.to_string()));
                }
                match stack {
                    0 | 1 => {
                        attributes.insert("stack".to_string(), Some(STACKS[stack].to_string()));
                    }
                    // A value-less attribute.
                    2 => {
                        attributes.insert("stack".to_string(), None);
                    }
                    _ => {}
                }
                if let Some(c) = cores {
                    attributes.insert("cores".to_string(), Some(c.to_string()));
                }
                Facts {
                    agent_connected: connected,
                    agent_version: version.to_string(),
                    ec2_instance_id: String::new(),
                    // 2018-06-17, -18 or -19 at noon UTC.
                    registered_at: (1_529_236_800 + day * 86_400) as f64,
                    running_tasks_count: running,
                    attributes,
                    task_groups: groups.into_iter().map(str::to_string).collect(),
                }
            },
        )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        prop_oneof![8 => Just("ACTIVE"), 1 => Just("DRAINING"), 1 => Just("INACTIVE")],
        prop_oneof![6 => Just(true), 1 => Just(false)],
        0..8192i64,
        0..8192i64,
        subset(&TCP_POOL, 2),
        subset(&UDP_POOL, 1),
        facts(),
        0..4u32,
    )
        .prop_map(
            |(status, connected, cpu, memory, tcp, udp, facts, group_tasks)| Candidate {
                id: String::new(),
                arn: String::new(),
                status: status.to_string(),
                connected,
                cpu_remaining: cpu,
                memory_remaining: memory,
                tcp_used: tcp,
                udp_used: udp,
                facts: Arc::new(facts),
                group_tasks,
                member_ok: None,
            },
        )
}

/// Candidates with distinct ids (as RunTask builds them).
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    proptest::collection::vec(candidate(), 1..8).prop_map(|mut v| {
        for (i, c) in v.iter_mut().enumerate() {
            c.id = format!("i{i}");
            c.arn = format!("arn:i{i}");
            Arc::make_mut(&mut c.facts).ec2_instance_id = format!("mi-{i}");
        }
        v
    })
}

fn lit(s: &str) -> String {
    s.to_string()
}

/// A comparison over the vocabulary the generated facts use, with literals
/// of the type each subject compares by.
fn comparison() -> impl Strategy<Value = Expr> {
    let attr_value = prop_oneof![
        proptest::sample::select(ZONES.to_vec()).prop_map(lit),
        proptest::sample::select(STACKS.to_vec()).prop_map(lit),
        (0..16u32).prop_map(|n| n.to_string()),
        Just(String::new()),
    ];
    let subject_and_value = prop_oneof![
        (
            proptest::sample::select(vec![
                "attribute:ecs.availability-zone",
                "attribute:stack",
                "attribute:cores",
                "attribute:missing",
            ]),
            attr_value
        )
            .prop_map(|(s, v)| (s.to_string(), v)),
        (0..6u32).prop_map(|n| ("runningTasksCount".to_string(), n.to_string())),
        proptest::sample::select(GROUPS.to_vec())
            .prop_map(|g| ("task:group".to_string(), g.to_string())),
        proptest::sample::select(vec!["true", "false"])
            .prop_map(|b| ("agentConnected".to_string(), b.to_string())),
        (0..8u32).prop_map(|i| ("ec2InstanceId".to_string(), format!("mi-{i}"))),
        proptest::sample::select(vec!["1.9.0", "1.10.2", "1.10"])
            .prop_map(|v| ("agentVersion".to_string(), v.to_string())),
        proptest::sample::select(vec![
            "2018-06-17",
            "2018-06-18",
            "2018-06-18T12:00:00Z",
            "2018-06-18T12:00:00",
            "2018-06-19T14:00:00+02:00",
        ])
        .prop_map(|d| ("registeredAt".to_string(), d.to_string())),
    ];
    (
        subject_and_value,
        proptest::sample::select(Op::ALL.to_vec()),
        0..3usize,
        proptest::sample::select(vec!["z.*", "prod|dev", "[0-9]+", "service:.*", "1\\.10.*"]),
    )
        .prop_map(|((subject, value), op, extra, pattern)| {
            let arg = match op {
                Op::Exists | Op::NotExists => Arg::None,
                Op::In | Op::NotIn => {
                    let mut items = vec![value.clone()];
                    // Extra items of the same type: repeat or vary the value.
                    for k in 0..extra {
                        items.push(if k % 2 == 0 {
                            value.clone()
                        } else {
                            "zz".into()
                        });
                    }
                    if subject == "runningTasksCount" || subject == "registeredAt" {
                        items.retain(|i| i != "zz");
                    }
                    Arg::List(items)
                }
                Op::Matches | Op::NotMatches => {
                    Arg::Pattern(Pattern::new(pattern).expect("test patterns compile"))
                }
                _ => Arg::One(value),
            };
            Expr::Cmp { subject, op, arg }
        })
}

fn expr() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

fn strategy() -> impl Strategy<Value = Placement> {
    prop_oneof![
        Just(Placement::Random),
        Just(Placement::SpreadInstance),
        Just(Placement::SpreadAttribute("ecs.availability-zone".into())),
        Just(Placement::SpreadAttribute("stack".into())),
        Just(Placement::BinpackCpu),
        Just(Placement::BinpackMemory),
    ]
}

fn need() -> impl Strategy<Value = Need> {
    (
        (0..1024i64, 0..1024i64),
        // Static host ports allow one task per instance: asked for now and then.
        (
            prop_oneof![3 => Just(BTreeSet::new()), 1 => subset(&TCP_POOL, 2)],
            prop_oneof![3 => Just(BTreeSet::new()), 1 => subset(&UDP_POOL, 1)],
        ),
        (0..3usize, 0..2usize),
        prop_oneof![
            3 => Just(vec![]),
            2 => proptest::collection::vec(expr(), 1),
            1 => proptest::collection::vec(expr(), 2),
        ],
        (prop_oneof![3 => Just(false), 1 => Just(true)], 0..2usize),
        proptest::collection::vec(strategy(), 0..5),
    )
        .prop_map(
            |((cpu, memory), (tcp, udp), (dt, du), member_of, (distinct, required), strategies)| {
                Need {
                    // Now and then the last expression is a requirement (ATTRIBUTE).
                    required: required.min(member_of.len()),
                    cpu,
                    memory,
                    tcp_ports: tcp.into_iter().collect(),
                    udp_ports: udp.into_iter().collect(),
                    dynamic_tcp: dt,
                    dynamic_udp: du,
                    member_of,
                    distinct_instance: distinct,
                    strategies,
                }
            },
        )
}

// ------------------------------------------------------------ the oracle

/// One instance as the plan so far has left it.
#[derive(Clone)]
struct Left {
    cpu: i64,
    memory: i64,
    tcp: BTreeSet<u16>,
    udp: BTreeSet<u16>,
    group_tasks: u32,
    placed: u32,
}

impl Left {
    fn of(c: &Candidate) -> Left {
        Left {
            cpu: c.cpu_remaining,
            memory: c.memory_remaining,
            tcp: c.tcp_used.clone(),
            udp: c.udp_used.clone(),
            group_tasks: c.group_tasks,
            placed: 0,
        }
    }
}

/// How many ports of the dynamic range are in neither `used` nor `statics`.
fn dynamic_free(used: &BTreeSet<u16>, statics: &[u16]) -> usize {
    let taken: BTreeSet<u16> = used
        .iter()
        .chain(statics)
        .copied()
        .filter(|p| DYNAMIC_PORTS.contains(p))
        .collect();
    DYNAMIC_PORTS.len() - taken.len()
}

/// Whether `c`, left as `l`, can take one more task of `need`.
fn fits(c: &Candidate, l: &Left, need: &Need) -> bool {
    c.status == "ACTIVE"
        && c.connected
        && need.member_of.iter().all(|e| cql::eval(e, &c.facts))
        && l.cpu >= need.cpu
        && l.memory >= need.memory
        && need.tcp_ports.iter().all(|p| !l.tcp.contains(p))
        && need.udp_ports.iter().all(|p| !l.udp.contains(p))
        && dynamic_free(&l.tcp, &need.tcp_ports) >= need.dynamic_tcp
        && dynamic_free(&l.udp, &need.udp_ports) >= need.dynamic_udp
        && !(need.distinct_instance && l.placed > 0)
}

/// The instances `strategies` prefer among `feasible`, as ECS applies them:
/// each keeps the best of what the previous one kept.
fn preferred(
    cands: &[Candidate],
    left: &[Left],
    feasible: Vec<usize>,
    strategies: &[Placement],
) -> Vec<usize> {
    let mut keep = feasible;
    for s in strategies {
        let key = |i: usize| -> i64 {
            match s {
                Placement::Random => 0,
                Placement::SpreadInstance => i64::from(left[i].group_tasks),
                Placement::SpreadAttribute(name) => {
                    let value = cands[i].facts.attributes.get(name).cloned().flatten();
                    cands
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.facts.attributes.get(name).cloned().flatten() == value)
                        .map(|(j, _)| i64::from(left[j].group_tasks))
                        .sum()
                }
                Placement::BinpackCpu => left[i].cpu,
                Placement::BinpackMemory => left[i].memory,
            }
        };
        if let Some(best) = keep.iter().map(|&i| key(i)).min() {
            keep.retain(|&i| key(i) == best);
        }
    }
    keep
}

/// Replays `plan` on `cands` and checks every placement against the oracle.
fn check_run_task_plan(
    cands: &[Candidate],
    need: &Need,
    count: usize,
    plan: &Plan,
) -> Result<(), TestCaseError> {
    prop_assert!(plan.placements.len() <= count);
    prop_assert_eq!(plan.placements.len(), plan.ports.len());
    let index: BTreeMap<&str, usize> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut left: Vec<Left> = cands.iter().map(Left::of).collect();
    for (id, ports) in plan.placements.iter().zip(&plan.ports) {
        let i = *index
            .get(id.as_str())
            .ok_or_else(|| TestCaseError::fail(format!("unknown instance {id}")))?;
        let c = &cands[i];
        // The pick fits, and is among the instances the strategies prefer.
        prop_assert!(fits(c, &left[i], need), "{id} cannot take the task");
        let feasible: Vec<usize> = (0..cands.len())
            .filter(|&j| fits(&cands[j], &left[j], need))
            .collect();
        let best = preferred(cands, &left, feasible, &need.strategies);
        prop_assert!(
            best.contains(&i),
            "{id} is not among {best:?} the strategies prefer"
        );
        // Constraints: memberOf on the instance's facts.
        for e in &need.member_of {
            prop_assert!(cql::eval(e, &c.facts), "{id} violates memberOf {e}");
        }
        // Dynamic ports: the right number, in range, free, distinct, not static.
        prop_assert_eq!(ports.tcp.len(), need.dynamic_tcp);
        prop_assert_eq!(ports.udp.len(), need.dynamic_udp);
        let l = &mut left[i];
        for (chosen, statics, used) in [
            (&ports.tcp, &need.tcp_ports, &mut l.tcp),
            (&ports.udp, &need.udp_ports, &mut l.udp),
        ] {
            for p in statics.iter().chain(chosen.iter()) {
                // `insert` is false when the port was already booked.
                prop_assert!(used.insert(*p), "{id}: host port {p} booked twice");
            }
            for p in chosen {
                prop_assert!(DYNAMIC_PORTS.contains(p));
            }
        }
        l.cpu -= need.cpu;
        l.memory -= need.memory;
        l.group_tasks += 1;
        l.placed += 1;
        // Never overcommitted.
        prop_assert!(l.cpu >= 0 && l.memory >= 0, "{id} overcommitted");
    }
    if need.distinct_instance {
        let distinct: BTreeSet<&String> = plan.placements.iter().collect();
        prop_assert_eq!(distinct.len(), plan.placements.len());
    }
    // Complete: cut short exactly when no instance can take another task,
    // and then every instance says why.
    let any_fits = (0..cands.len()).any(|i| fits(&cands[i], &left[i], need));
    if plan.placements.len() < count {
        prop_assert!(
            !any_fits,
            "stopped at {} of {count} with room left",
            plan.placements.len()
        );
        // A memberOf refusal names what failed: a requirement (the last
        // `required` expressions) as ATTRIBUTE, else the user's memberOf.
        let (user, required) = need
            .member_of
            .split_at(need.member_of.len() - need.required);
        for (arn, reason) in &plan.failures {
            let Some(c) = cands.iter().find(|c| &c.arn == arn) else {
                continue;
            };
            let holds = |es: &[cql::Expr]| es.iter().all(|e| cql::eval(e, &c.facts));
            match *reason {
                "ATTRIBUTE" => prop_assert!(!holds(required), "{arn}: {reason}"),
                "MemberOf placement constraint unsatisfied." => {
                    prop_assert!(holds(required) && !holds(user), "{arn}: {reason}")
                }
                _ => {}
            }
        }
        let arns: BTreeSet<&str> = plan.failures.iter().map(|(a, _)| a.as_str()).collect();
        prop_assert_eq!(arns.len(), plan.failures.len());
        prop_assert_eq!(arns, cands.iter().map(|c| c.arn.as_str()).collect());
    } else {
        prop_assert!(plan.failures.is_empty());
    }
    Ok(())
}

fn small_config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(small_config())]

    /// RunTask: no placement violates a constraint or overcommits; picks
    /// follow the strategies; refusal happens exactly when nothing fits.
    #[test]
    fn run_task_placements_are_sound_and_complete(
        cands in candidates(),
        need in need(),
        count in 1..12usize,
        seed in any::<u64>(),
    ) {
        let plan = place(&cands, &need, count, &mut StdRng::seed_from_u64(seed));
        check_run_task_plan(&cands, &need, count, &plan)?;
        // The seed reproduces the plan.
        let again = place(&cands, &need, count, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(plan, again);
    }

    /// StartTask: each listed instance (repeats share deductions) gets a task
    /// exactly when it fits; none is overcommitted or double-booked.
    #[test]
    fn start_task_places_exactly_where_it_fits(
        cands in candidates(),
        picks in proptest::collection::vec(0..8usize, 1..10),
        need in need(),
    ) {
        prop_assume!(!cands.is_empty());
        let listed: Vec<Candidate> = picks.iter().map(|p| cands[p % cands.len()].clone()).collect();
        let plan = place_on_each(listed.clone(), &need);
        let mut left: BTreeMap<String, Left> =
            cands.iter().map(|c| (c.id.clone(), Left::of(c))).collect();
        let (mut placed, mut failed) = (0usize, 0usize);
        for c in &listed {
            // `placed` stays 0: StartTask has no distinctInstance.
            let l = left.get_mut(&c.id).expect("listed instances are candidates");
            if fits(c, l, &need) {
                prop_assert_eq!(plan.placements.get(placed), Some(&c.id));
                let ports = &plan.ports[placed];
                for (chosen, statics, used) in [
                    (&ports.tcp, &need.tcp_ports, &mut l.tcp),
                    (&ports.udp, &need.udp_ports, &mut l.udp),
                ] {
                    for p in statics.iter().chain(chosen.iter()) {
                        prop_assert!(used.insert(*p), "host port {} booked twice", p);
                    }
                }
                l.cpu -= need.cpu;
                l.memory -= need.memory;
                prop_assert!(l.cpu >= 0 && l.memory >= 0);
                placed += 1;
            } else {
                prop_assert_eq!(&plan.failures[failed].0, &c.arn);
                failed += 1;
            }
        }
        prop_assert_eq!(placed, plan.placements.len());
        prop_assert_eq!(failed, plan.failures.len());
    }

    /// Printing an expression and parsing it back gives the same expression,
    /// which evaluates the same on any instance.
    #[test]
    fn printed_expressions_parse_back(e in expr(), f in facts()) {
        let text = e.to_string();
        let back = cql::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(&back, &e, "{}", text);
        prop_assert_eq!(cql::eval(&back, &f), cql::eval(&e, &f));
        prop_assert_eq!(back.to_string(), text);
    }

    /// Values with any of the language's own characters survive printing.
    #[test]
    fn odd_values_survive_printing(
        values in proptest::collection::vec(value(), 1..4),
        negate in any::<bool>(),
    ) {
        let e = Expr::Cmp {
            subject: "attribute:x".into(),
            op: if negate { Op::NotIn } else { Op::In },
            arg: Arg::List(values.clone()),
        };
        let text = e.to_string();
        let back = cql::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(back, e, "{}", text);
        let single = Expr::Cmp { subject: "attribute:x".into(), op: Op::Eq, arg: Arg::One(values[0].clone()) };
        let text = single.to_string();
        prop_assert_eq!(cql::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?, single);
    }

    /// Arbitrary text never panics the parser; an error names a position
    /// inside the text (or just past its end); what parses prints back.
    #[test]
    fn garbage_never_panics(s in garbage()) {
        match cql::parse(&s) {
            // A value holding both quote characters cannot be printed back.
            Ok(e) if !(s.contains('"') && s.contains('\'')) => {
                let text = e.to_string();
                prop_assert_eq!(cql::parse(&text).ok(), Some(e), "{}", text);
            }
            Ok(_) => {}
            Err(err) => {
                let len = s.chars().count();
                match err.position() {
                    Some(p) => prop_assert!(p >= 1 && p <= len + 1, "{err} for {len} chars"),
                    None => prop_assert!(len > cql::MAX_LEN),
                }
                prop_assert!(err.to_string().starts_with("Invalid expression"));
            }
        }
    }
}

/// A value that may hold spaces, brackets, commas, one kind of quote,
/// keywords and operators.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:._-]{0,8}",
        "[a-z ()\\[\\],!=~&|<>']{1,8}".prop_filter("not a leading-quote-only", |s| !s.is_empty()),
        "[a-z \"(),]{1,6}",
        proptest::sample::select(vec![
            "and",
            "or",
            "not",
            "!",
            "&&",
            "||",
            "==",
            "=~",
            "in",
            "exists",
            "(",
            ")",
            "[",
            "]",
            ",",
            "it's",
            "say \"hi\"",
            "!x",
            "",
        ])
        .prop_map(str::to_string),
    ]
    .prop_filter("one kind of quote", |s| {
        !(s.contains('\'') && s.contains('"'))
    })
}

/// Token soup from the language's own pieces, plus raw text.
fn garbage() -> impl Strategy<Value = String> {
    let piece = proptest::sample::select(vec![
        "attribute:a",
        "attribute:",
        "task:group",
        "registeredAt",
        "runningTasksCount",
        "agentVersion",
        "agentConnected",
        "ec2InstanceId",
        "==",
        "!=",
        "=~",
        "!~",
        ">",
        ">=",
        "<",
        "<=",
        "in",
        "!in",
        "not_in",
        "exists",
        "!exists",
        "and",
        "or",
        "not",
        "!",
        "&&",
        "||",
        "(",
        ")",
        "[",
        "]",
        ",",
        "'",
        "\"",
        "x",
        "1",
        "2018-06-18",
        "1.2.3",
        "(a|b",
        "[0-9]",
        "é",
        " ",
        "  ",
    ]);
    prop_oneof![
        proptest::collection::vec(piece, 0..20).prop_map(|v| v.join(" ")),
        proptest::collection::vec(
            proptest::sample::select(vec![
                "attribute:a",
                "==",
                "x",
                "(",
                ")",
                "[",
                "]",
                ",",
                "'",
                "!",
                "=~",
                "and",
            ]),
            0..20
        )
        .prop_map(|v| v.concat()),
        ".{0,40}",
    ]
}

/// The generators are not degenerate: over a fixed sample, many requests
/// place several tasks, many are cut short, and every strategy and outcome
/// shows up, so the properties above are exercised, not vacuous.
#[test]
fn generators_exercise_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let input = (candidates(), need(), 1..12usize);
    let (mut several, mut short, mut full, mut member_of_refusals) = (0, 0, 0, 0);
    let mut spread_attr_several = 0;
    let n = 400;
    for seed in 0..n {
        let (cands, need, count) = input.new_tree(&mut runner).unwrap().current();
        let plan = place(&cands, &need, count, &mut StdRng::seed_from_u64(seed));
        let distinct: BTreeSet<&String> = plan.placements.iter().collect();
        if distinct.len() >= 2 {
            several += 1;
            if matches!(need.strategies.first(), Some(Placement::SpreadAttribute(_))) {
                spread_attr_several += 1;
            }
        }
        if plan.placements.len() < count {
            short += 1;
        } else {
            full += 1;
        }
        if plan
            .failures
            .iter()
            .any(|(_, r)| *r == "ATTRIBUTE" || *r == "MemberOf placement constraint unsatisfied.")
        {
            member_of_refusals += 1;
        }
    }
    let at_least = |what: &str, got: usize, min: usize| {
        assert!(
            got >= min,
            "{what}: {got} of {n} cases, want at least {min}"
        );
    };
    at_least("plans using two or more instances", several, n as usize / 4);
    at_least("plans cut short", short, n as usize / 5);
    at_least("plans completed", full, n as usize / 5);
    at_least("memberOf refusals", member_of_refusals, n as usize / 10);
    at_least(
        "attribute spread over several instances",
        spread_attr_several,
        20,
    );
}
