//! Placement and the cluster query language through the signed HTTP API:
//! every caller of the parser (RunTask, StartTask and CreateService/
//! UpdateService `memberOf` constraints, a task definition's `memberOf` at
//! RunTask, and ListContainerInstances `--filter`) answers a syntax error
//! with `InvalidParameterException` and the character position; ECS's limits
//! (2000-character expressions, 10 constraints, 5 strategies) are enforced;
//! valid expressions over dates, counts and attributes select instances; and
//! the strategies (`spread host`/`instanceId`/`attribute:*`, `binpack`) and
//! constraints place RunTask's tasks as they should.

mod common;

use common::{setup_cluster, TestCoord};
use serde_json::{json, Value};

const BAD: &str = "attribute:tier gold";
const BAD_MESSAGE: &str =
    "Invalid expression at position 16: expected an operator after 'attribute:tier', found 'gold'";

fn member_of(expr: &str) -> Value {
    json!([{"type": "memberOf", "expression": expr}])
}

async fn invalid(t: &TestCoord, action: &str, body: Value) -> String {
    let r = t.ecs(action, body).await;
    assert_eq!(r.status, 400, "{action}: {}", r.body);
    assert_eq!(
        r.body["__type"], "InvalidParameterException",
        "{action}: {}",
        r.body
    );
    r.body["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn syntax_errors_are_invalid_parameter_with_position_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "q", 16).await;
    let (_, _, arn) = t
        .register_instance_with("q", 1024, 1024, &[], &[("tier", "gold")])
        .await;

    // RunTask placementConstraints.
    let m = invalid(
        &t,
        "RunTask",
        json!({"cluster": "q", "taskDefinition": "app", "placementConstraints": member_of(BAD)}),
    )
    .await;
    assert_eq!(m, BAD_MESSAGE);

    // StartTask shares RunTask's request validation.
    let m = invalid(
        &t,
        "StartTask",
        json!({"cluster": "q", "taskDefinition": "app", "containerInstances": [arn],
               "placementConstraints": member_of("attribute:tier == gold and (")}),
    )
    .await;
    assert_eq!(
        m,
        "Invalid expression at position 29: expected a subject (attribute:NAME, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount or task:group), found the end of the expression"
    );

    // CreateService and UpdateService.
    let m = invalid(
        &t,
        "CreateService",
        json!({"cluster": "q", "serviceName": "s", "taskDefinition": "app", "desiredCount": 0,
               "placementConstraints": member_of("runningTasksCount > many")}),
    )
    .await;
    assert_eq!(
        m,
        "Invalid expression at position 21: expected a whole number, found 'many'"
    );
    t.ok(
        "CreateService",
        json!({"cluster": "q", "serviceName": "s", "taskDefinition": "app", "desiredCount": 0}),
    )
    .await;
    let m = invalid(
        &t,
        "UpdateService",
        json!({"cluster": "q", "service": "s",
               "placementConstraints": member_of("registeredAt < yesterday")}),
    )
    .await;
    assert!(
        m.starts_with("Invalid expression at position 16: expected a date"),
        "{m}"
    );

    // ListContainerInstances --filter.
    let m = invalid(
        &t,
        "ListContainerInstances",
        json!({"cluster": "q", "filter": "attribute:tier in [gold silver]"}),
    )
    .await;
    assert_eq!(
        m,
        "Invalid expression at position 25: expected ',' or ']' after 'gold', found 'silver'"
    );

    // A task definition's own memberOf constraint, checked when it is run.
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "tdbad", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 8}],
               "placementConstraints": member_of("bogus == 1")}),
    )
    .await;
    let m = invalid(
        &t,
        "RunTask",
        json!({"cluster": "q", "taskDefinition": "tdbad"}),
    )
    .await;
    assert!(
        m.starts_with("Invalid expression at position 1: unknown subject 'bogus'"),
        "{m}"
    );

    // Nothing was placed by any refused request.
    let tasks = t.ok("ListTasks", json!({"cluster": "q"})).await;
    assert_eq!(tasks["taskArns"], json!([]));
    t.stop().await;
}

#[tokio::test]
async fn ecs_limits_on_expressions_constraints_and_strategies() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "l", 16).await;
    t.register_instance("l", 1024, 1024, &[]).await;

    // 2000 characters are allowed; 2001 are not.
    let name = "a".repeat(2000 - "attribute: !exists".len());
    let at_limit = format!("attribute:{name} !exists");
    assert_eq!(at_limit.len(), 2000);
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "l", "taskDefinition": "app", "placementConstraints": member_of(&at_limit)}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    let over = format!("attribute:{name}a !exists");
    let m = invalid(
        &t,
        "RunTask",
        json!({"cluster": "l", "taskDefinition": "app", "placementConstraints": member_of(&over)}),
    )
    .await;
    assert_eq!(
        m,
        "Invalid expression: it is 2001 characters long; the maximum is 2000."
    );
    let m = invalid(
        &t,
        "ListContainerInstances",
        json!({"cluster": "l", "filter": over}),
    )
    .await;
    assert!(m.starts_with("Invalid expression: it is 2001"), "{m}");

    // 10 constraints are allowed; 11 are not.
    let ten: Vec<Value> = (0..10)
        .map(|_| json!({"type": "memberOf", "expression": "agentConnected == true"}))
        .collect();
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "l", "taskDefinition": "app", "placementConstraints": ten}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    let mut eleven = ten.clone();
    eleven.push(json!({"type": "distinctInstance"}));
    for action in ["RunTask", "CreateService"] {
        let m = invalid(
            &t,
            action,
            json!({"cluster": "l", "taskDefinition": "app", "serviceName": "s11", "desiredCount": 0,
                   "placementConstraints": eleven}),
        )
        .await;
        assert_eq!(m, "placementConstraints can have at most 10 items.");
    }

    // 5 strategies are allowed; 6 are not.
    let five = json!([
        {"type": "spread", "field": "attribute:ecs.availability-zone"},
        {"type": "spread", "field": "host"},
        {"type": "spread", "field": "instanceId"},
        {"type": "binpack", "field": "cpu"},
        {"type": "binpack", "field": "memory"},
    ]);
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "l", "taskDefinition": "app", "placementStrategy": five}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    let mut six = five.as_array().unwrap().clone();
    six.push(json!({"type": "random"}));
    for action in ["RunTask", "CreateService"] {
        let m = invalid(
            &t,
            action,
            json!({"cluster": "l", "taskDefinition": "app", "serviceName": "s6", "desiredCount": 0,
                   "placementStrategy": six}),
        )
        .await;
        assert_eq!(m, "placementStrategy can have at most 5 items.");
    }
    t.stop().await;
}

#[tokio::test]
async fn filters_over_dates_counts_versions_and_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "f", 16).await;
    let (_, _, gold) = t
        .register_instance_with("f", 1024, 1024, &[], &[("tier", "gold"), ("cores", "16")])
        .await;
    let (_, _, plain) = t
        .register_instance_with("f", 1024, 1024, &[], &[("cores", "4")])
        .await;
    t.ok(
        "StartTask",
        json!({"cluster": "f", "taskDefinition": "app", "containerInstances": [gold], "group": "batch"}),
    )
    .await;
    let today = time::OffsetDateTime::now_utc().date();
    let mut both = vec![gold.clone(), plain.clone()];
    both.sort();
    let table: Vec<(String, Vec<String>)> = vec![
        ("registeredAt > 2018-06-18".into(), both.clone()),
        (format!("registeredAt == {today}"), both.clone()),
        ("registeredAt < 2018-06-18T22:28:28Z".into(), vec![]),
        ("attribute:cores > 8".into(), vec![gold.clone()]),
        ("attribute:cores greater_than_equal 4".into(), both.clone()),
        ("attribute:tier exists".into(), vec![gold.clone()]),
        ("!attribute:tier exists".into(), vec![plain.clone()]),
        ("task:group == batch".into(), vec![gold.clone()]),
        ("not task:group exists".into(), vec![plain.clone()]),
        (
            "agentVersion == test and attribute:cores =~ [0-9]".into(),
            vec![plain.clone()],
        ),
        (
            "(attribute:tier == gold or attribute:cores < 8) and agentConnected != true".into(),
            vec![],
        ),
    ];
    for (filter, want) in table {
        let l = t
            .ok(
                "ListContainerInstances",
                json!({"cluster": "f", "filter": filter}),
            )
            .await;
        let mut got: Vec<String> = l["containerInstanceArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, want, "{filter}");
    }
    t.stop().await;
}

/// Instance ARN → number of tasks RunTask placed there.
fn per_instance(run: &Value) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in run["tasks"].as_array().unwrap() {
        *m.entry(t["containerInstanceArn"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[tokio::test]
async fn strategies_and_member_of_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "p", 100).await;
    let (_, _, small) = t
        .register_instance_with("p", 4096, 1000, &[], &[("ecs.availability-zone", "z1")])
        .await;
    let (_, _, big) = t
        .register_instance_with("p", 4096, 4000, &[], &[("ecs.availability-zone", "z1")])
        .await;
    let (_, _, other) = t
        .register_instance_with("p", 4096, 4000, &[], &[("ecs.availability-zone", "z2")])
        .await;
    // `spread host` and `spread instanceId` are the same: three tasks of a
    // group on three instances, then three more make two each.
    for (field, group) in [("host", "g1"), ("instanceId", "g2")] {
        for round in 1..=2 {
            let run = t
                .ok(
                    "RunTask",
                    json!({"cluster": "p", "taskDefinition": "app", "count": 3, "group": group,
                           "placementStrategy": [{"type": "spread", "field": field}]}),
                )
                .await;
            assert_eq!(per_instance(&run).len(), 3, "{field} round {round}: {run}");
        }
    }
    // binpack memory fills the instance with the least memory left first:
    // after the four 100 MiB tasks on each, `small` has 600 MiB, the others 3600.
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "p", "taskDefinition": "app", "count": 2, "group": "bp",
                   "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    assert_eq!(per_instance(&run).get(&small), Some(&2), "{run}");
    // spread by zone: z2 has one instance, z1 two; four tasks split 2/2.
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "p", "taskDefinition": "app", "count": 4, "group": "az",
                   "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
        )
        .await;
    assert_eq!(per_instance(&run).get(&other), Some(&2), "{run}");
    // memberOf with a zone and distinctInstance: only z1's two instances, once each.
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "p", "taskDefinition": "app", "count": 3, "group": "m",
                   "placementConstraints": [
                       {"type": "memberOf", "expression": "attribute:ecs.availability-zone == z1"},
                       {"type": "distinctInstance"}]}),
        )
        .await;
    let placed = per_instance(&run);
    assert_eq!(placed.len(), 2, "{run}");
    assert!(!placed.contains_key(&other), "{run}");
    assert!(placed.contains_key(&big), "{run}");
    assert_eq!(
        run["failures"][0]["reason"], "DistinctInstance placement constraint unsatisfied.",
        "{run}"
    );
    t.stop().await;
}
