//! Placement tables for every strategy and constraint of the pure scheduler
//! (`scheduler::place`): binpack cpu and memory, spread by instance and by
//! attribute (the availability zone and others), random, several strategies
//! in order, distinctInstance and memberOf, each row an input fleet, a task,
//! rules, a count and the expected placements or per-instance totals.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_coordinator::cql::{self, Facts};
use berth_coordinator::scheduler::{place, Candidate, Need, Plan, Strategy};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// An ACTIVE, connected instance with `cpu`/`memory` left, attributes and
/// tasks of the request's group already on it.
fn inst(id: &str, cpu: i64, memory: i64, attrs: &[(&str, &str)], group_tasks: u32) -> Candidate {
    Candidate {
        id: id.into(),
        arn: format!("arn:{id}"),
        status: "ACTIVE".into(),
        connected: true,
        cpu_remaining: cpu,
        memory_remaining: memory,
        tcp_used: BTreeSet::new(),
        udp_used: BTreeSet::new(),
        facts: Arc::new(Facts {
            agent_connected: true,
            ec2_instance_id: id.into(),
            attributes: attrs
                .iter()
                .map(|(n, v)| (n.to_string(), Some(v.to_string())))
                .collect(),
            ..Facts::default()
        }),
        group_tasks,
        member_ok: None,
    }
}

fn need(cpu: i64, memory: i64, strategies: Vec<Strategy>) -> Need {
    Need {
        cpu,
        memory,
        strategies,
        ..Need::default()
    }
}

fn run(cands: Vec<Candidate>, need: &Need, count: usize, seed: u64) -> Plan {
    place(&cands, need, count, &mut StdRng::seed_from_u64(seed))
}

fn totals(plan: &Plan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in &plan.placements {
        *m.entry(p.clone()).or_default() += 1;
    }
    m
}

fn map(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

const AZ: &str = "ecs.availability-zone";
/// The failure reason of an instance a `memberOf` constraint excludes.
const MEMBER_OF: &str = "MemberOf placement constraint unsatisfied.";

fn az(zone: &str) -> [(&'static str, &str); 1] {
    [(AZ, zone)]
}

/// Rows whose placements are fully determined: (what, fleet, need, count,
/// expected placements in order, expected failure reasons).
#[test]
fn deterministic_strategy_table() {
    use Strategy::*;
    type Row = (
        &'static str,
        Vec<Candidate>,
        Need,
        usize,
        Vec<&'static str>,
        Vec<&'static str>,
    );
    let fleet = || {
        vec![
            inst("a", 1000, 300, &az("z1"), 0),
            inst("b", 500, 900, &az("z1"), 0),
            inst("c", 800, 800, &az("z2"), 0),
        ]
    };
    let table: Vec<Row> = vec![
        (
            "binpack cpu: least cpu left first, until it no longer fits",
            fleet(),
            need(100, 10, vec![BinpackCpu]),
            7,
            vec!["b", "b", "b", "b", "b", "c", "c"],
            vec![],
        ),
        (
            "binpack memory: least memory left first",
            fleet(),
            need(10, 100, vec![BinpackMemory]),
            4,
            vec!["a", "a", "a", "c"],
            vec![],
        ),
        (
            "binpack skips an instance too small for the task",
            vec![
                inst("small", 50, 1000, &[], 0),
                inst("big", 900, 1000, &[], 0),
            ],
            need(100, 10, vec![BinpackCpu]),
            1,
            vec!["big"],
            vec![],
        ),
        (
            "binpack cpu tie falls to binpack memory",
            vec![
                inst("a", 500, 900, &[], 0),
                inst("b", 500, 300, &[], 0),
                inst("c", 700, 100, &[], 0),
            ],
            need(100, 10, vec![BinpackCpu, BinpackMemory]),
            1,
            vec!["b"],
            vec![],
        ),
        (
            "order matters: binpack memory first picks c",
            vec![
                inst("a", 500, 900, &[], 0),
                inst("b", 500, 300, &[], 0),
                inst("c", 700, 100, &[], 0),
            ],
            need(100, 10, vec![BinpackMemory, BinpackCpu]),
            1,
            vec!["c"],
            vec![],
        ),
        (
            "spread instanceId: fewest group tasks first",
            vec![
                inst("a", 1000, 1000, &[], 2),
                inst("b", 1000, 1000, &[], 0),
                inst("c", 1000, 1000, &[], 1),
            ],
            need(10, 10, vec![SpreadInstance, BinpackCpu]),
            1,
            vec!["b"],
            vec![],
        ),
        (
            "spread by zone, then binpack memory within the zone",
            fleet(),
            need(100, 100, vec![SpreadAttribute(AZ.into()), BinpackMemory]),
            2,
            vec!["a", "c"],
            vec![],
        ),
        (
            "spread by zone counts the zone's existing group tasks",
            vec![
                inst("a", 1000, 1000, &az("z1"), 1),
                inst("b", 1000, 1000, &az("z1"), 0),
                inst("c", 1000, 1000, &az("z2"), 0),
            ],
            need(10, 10, vec![SpreadAttribute(AZ.into())]),
            1,
            vec!["c"],
            vec![],
        ),
        (
            "spread by a custom attribute",
            vec![
                inst("a", 1000, 1000, &[("rack", "r1")], 3),
                inst("b", 900, 1000, &[("rack", "r2")], 1),
                inst("c", 1000, 1000, &[("rack", "r2")], 1),
            ],
            need(10, 10, vec![SpreadAttribute("rack".into()), BinpackCpu]),
            1,
            vec!["b"],
            vec![],
        ),
        (
            "instances without the attribute spread as one more value",
            vec![
                inst("a", 1000, 1000, &[("rack", "r1")], 2),
                inst("b", 1000, 1000, &[], 0),
            ],
            need(10, 10, vec![SpreadAttribute("rack".into())]),
            2,
            vec!["b", "b"],
            vec![],
        ),
        (
            "strategies never override fit: spread prefers a, but a is full",
            vec![inst("a", 0, 1000, &[], 0), inst("b", 1000, 1000, &[], 5)],
            need(10, 10, vec![SpreadInstance]),
            1,
            vec!["b"],
            vec![],
        ),
        (
            "nothing fits: every instance reports its first misfit",
            vec![inst("a", 50, 1000, &[], 0), inst("b", 1000, 50, &[], 0)],
            need(100, 100, vec![BinpackCpu]),
            1,
            vec![],
            vec!["RESOURCE:CPU", "RESOURCE:MEMORY"],
        ),
    ];
    for (what, cands, need, count, want, fails) in table {
        // Several seeds: the outcome must not depend on the RNG.
        for seed in 0..5 {
            let plan = run(cands.clone(), &need, count, seed);
            assert_eq!(plan.placements, want, "{what} (seed {seed})");
            let reasons: Vec<&str> = plan.failures.iter().map(|(_, r)| *r).collect();
            assert_eq!(reasons, fails, "{what} (seed {seed})");
        }
    }
}

/// Rows where ties leave a choice to the RNG but totals are determined:
/// (what, fleet, need, count, expected tasks per instance).
#[test]
fn spread_totals_table() {
    use Strategy::*;
    type Row = (
        &'static str,
        Vec<Candidate>,
        Need,
        usize,
        Vec<(&'static str, usize)>,
    );
    let table: Vec<Row> = vec![
        (
            "spread instanceId evens out existing group tasks",
            vec![
                inst("a", 9000, 9000, &[], 2),
                inst("b", 9000, 9000, &[], 0),
                inst("c", 9000, 9000, &[], 1),
            ],
            need(10, 10, vec![SpreadInstance]),
            3,
            vec![("b", 2), ("c", 1)],
        ),
        (
            "spread instanceId: six tasks on three instances, two each",
            vec![
                inst("a", 9000, 9000, &[], 0),
                inst("b", 9000, 9000, &[], 0),
                inst("c", 9000, 9000, &[], 0),
            ],
            need(10, 10, vec![SpreadInstance]),
            6,
            vec![("a", 2), ("b", 2), ("c", 2)],
        ),
        (
            "the service default: spread by zone, then by instance",
            vec![
                inst("a", 9000, 9000, &az("z1"), 0),
                inst("b", 9000, 9000, &az("z1"), 0),
                inst("c", 9000, 9000, &az("z2"), 0),
                inst("d", 9000, 9000, &az("z2"), 0),
            ],
            need(10, 10, vec![SpreadAttribute(AZ.into()), SpreadInstance]),
            4,
            vec![("a", 1), ("b", 1), ("c", 1), ("d", 1)],
        ),
        (
            "spread by zone with uneven zones: each zone gets half",
            vec![
                inst("a", 9000, 9000, &az("z1"), 0),
                inst("b", 9000, 9000, &az("z1"), 0),
                inst("c", 9000, 9000, &az("z1"), 0),
                inst("d", 9000, 9000, &az("z2"), 0),
            ],
            need(10, 10, vec![SpreadAttribute(AZ.into()), SpreadInstance]),
            6,
            vec![("a", 1), ("b", 1), ("c", 1), ("d", 3)],
        ),
        (
            "spread by zone when a zone fills up: the rest go elsewhere",
            vec![
                inst("a", 20, 9000, &az("z1"), 0),
                inst("b", 9000, 9000, &az("z2"), 0),
            ],
            need(10, 10, vec![SpreadAttribute(AZ.into())]),
            5,
            vec![("a", 2), ("b", 3)],
        ),
        (
            "distinctInstance: one per instance, whatever the strategy",
            vec![
                inst("a", 9000, 9000, &[], 0),
                inst("b", 9000, 9000, &[], 0),
                inst("c", 9000, 9000, &[], 0),
            ],
            Need {
                distinct_instance: true,
                ..need(10, 10, vec![BinpackCpu])
            },
            5,
            vec![("a", 1), ("b", 1), ("c", 1)],
        ),
    ];
    for (what, cands, need, count, want) in table {
        for seed in 0..10 {
            let plan = run(cands.clone(), &need, count, seed);
            assert_eq!(totals(&plan), map(&want), "{what} (seed {seed})");
        }
    }
}

#[test]
fn distinct_instance_refusals_name_the_constraint() {
    let need = Need {
        distinct_instance: true,
        ..need(10, 10, vec![])
    };
    let plan = run(
        vec![inst("a", 9000, 9000, &[], 0), inst("b", 5, 9000, &[], 0)],
        &need,
        3,
        1,
    );
    assert_eq!(plan.placements, vec!["a".to_string()]);
    assert_eq!(
        plan.failures,
        vec![
            (
                "arn:a".to_string(),
                "DistinctInstance placement constraint unsatisfied."
            ),
            ("arn:b".to_string(), "RESOURCE:CPU"),
        ]
    );
}

#[test]
fn member_of_table() {
    let fleet = || {
        vec![
            inst("a", 9000, 9000, &[("stack", "prod"), (AZ, "z1")], 0),
            inst("b", 9000, 9000, &[("stack", "dev"), (AZ, "z1")], 0),
            inst("c", 500, 9000, &[("stack", "prod"), (AZ, "z2")], 0),
        ]
    };
    // (expressions, strategies, count, expected totals, expected failures)
    type Row = (
        Vec<&'static str>,
        Vec<Strategy>,
        usize,
        Vec<(&'static str, usize)>,
        Vec<(&'static str, &'static str)>,
    );
    let table: Vec<Row> = vec![
        (
            vec!["attribute:stack == prod"],
            vec![Strategy::BinpackCpu],
            2,
            vec![("c", 2)],
            vec![],
        ),
        (
            vec![
                "attribute:stack == prod",
                "attribute:ecs.availability-zone == z1",
            ],
            vec![],
            2,
            vec![("a", 2)],
            vec![],
        ),
        (
            vec!["attribute:stack in [dev, qa] or ec2InstanceId == c"],
            vec![Strategy::SpreadInstance],
            2,
            vec![("b", 1), ("c", 1)],
            vec![],
        ),
        (
            vec!["not attribute:stack == prod"],
            vec![],
            1,
            vec![("b", 1)],
            vec![],
        ),
        (
            vec!["attribute:gpu exists"],
            vec![],
            1,
            vec![],
            vec![
                ("arn:a", MEMBER_OF),
                ("arn:b", MEMBER_OF),
                ("arn:c", MEMBER_OF),
            ],
        ),
        (
            // Filled up: the excluded instance says MemberOf, the others
            // their first resource misfit (CPU before memory).
            vec!["attribute:stack == prod"],
            vec![],
            100,
            vec![("a", 90), ("c", 5)],
            vec![
                ("arn:a", "RESOURCE:CPU"),
                ("arn:b", MEMBER_OF),
                ("arn:c", "RESOURCE:CPU"),
            ],
        ),
    ];
    for (exprs, strategies, count, want, fails) in table {
        let need = Need {
            member_of: exprs.iter().map(|e| cql::parse(e).unwrap()).collect(),
            ..need(100, 100, strategies)
        };
        for seed in 0..5 {
            let plan = run(fleet(), &need, count, seed);
            assert_eq!(totals(&plan), map(&want), "{exprs:?} (seed {seed})");
            let got: Vec<(&str, &str)> = plan
                .failures
                .iter()
                .map(|(a, r)| (a.as_str(), *r))
                .collect();
            assert_eq!(got, fails, "{exprs:?} (seed {seed})");
        }
    }
}

#[test]
fn random_reaches_every_feasible_instance_and_only_those() {
    let cands = vec![
        inst("a", 1_000_000, 1_000_000, &[], 0),
        inst("b", 1_000_000, 1_000_000, &[], 0),
        inst("c", 1_000_000, 1_000_000, &[], 0),
        inst("full", 0, 1_000_000, &[], 0),
    ];
    for strategies in [vec![], vec![Strategy::Random]] {
        let need = need(1, 1, strategies.clone());
        let mut all: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..30 {
            for (k, v) in totals(&run(cands.clone(), &need, 10, seed)) {
                *all.entry(k).or_default() += v;
            }
        }
        assert!(!all.contains_key("full"), "{strategies:?}: {all:?}");
        // 300 picks among three: each well above zero (expected 100).
        for id in ["a", "b", "c"] {
            let n = all.get(id).copied().unwrap_or(0);
            assert!(
                (50..=150).contains(&n),
                "{strategies:?}: {id} got {n} of 300"
            );
        }
    }
}
