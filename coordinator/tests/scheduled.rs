//! Scheduled tasks through the coordinator over real HTTP: the EventBridge
//! API (`AWSEvents.*`, signed for service `events`) with its shapes and
//! errors, and firing across restarts: a rule whose slots passed while the
//! coordinator was down fires once at start for the latest missed slot, then
//! on time for the next one, and a restart never fires a slot again.
//!
//! Downtime is made without waiting for it: with the coordinator stopped, the
//! test appends to its store the rule as it would be had it been created
//! minutes earlier (an older schedule anchor), exactly what a coordinator
//! that was down for those minutes finds at start.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_coordinator::model::{Command, Model};
use berth_coordinator::rules::Rule;
use berth_coordinator::store::Store;
use common::{raw, signed_headers, Resp, TestCoord};
use serde_json::{json, Value};

const RULE_NAME: &str = "nightly";

async fn events(t: &TestCoord, action: &str, body: Value) -> Resp {
    let bytes = serde_json::to_vec(&body).unwrap();
    let target = format!("AWSEvents.{action}");
    let headers = signed_headers(&t.addr, &target, &bytes, &t.key, "events");
    raw(&t.addr, "/", &headers, &bytes).await
}

async fn events_ok(t: &TestCoord, action: &str, body: Value) -> Value {
    let r = events(t, action, body).await;
    assert_eq!(r.status, 200, "{action}: {}", r.body);
    r.body
}

fn error_of(r: &Resp) -> (u16, &str, &str) {
    (
        r.status,
        r.body["__type"].as_str().unwrap_or(""),
        r.body["message"].as_str().unwrap_or(""),
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A cluster `prod` with one instance and a task definition `job`.
async fn setup(t: &TestCoord) -> String {
    let cluster = t.ok("CreateCluster", json!({"clusterName": "prod"})).await["cluster"]
        ["clusterArn"]
        .as_str()
        .unwrap()
        .to_string();
    t.register_instance("prod", 4096, 8192, &["22"]).await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "job", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 32, "cpu": 10}]}),
    )
    .await;
    cluster
}

/// The tasks rule `name` started, with their `createdAt`, oldest first.
async fn rule_tasks(t: &TestCoord, name: &str) -> Vec<Value> {
    let list = t
        .ok(
            "ListTasks",
            json!({"cluster": "prod", "startedBy": format!("events-rule/{name}")}),
        )
        .await;
    let arns = list["taskArns"].as_array().unwrap().clone();
    if arns.is_empty() {
        return vec![];
    }
    let d = t
        .ok("DescribeTasks", json!({"cluster": "prod", "tasks": arns}))
        .await;
    let mut tasks = d["tasks"].as_array().unwrap().clone();
    tasks.sort_by(|a, b| {
        a["createdAt"]
            .as_f64()
            .partial_cmp(&b["createdAt"].as_f64())
            .unwrap()
    });
    tasks
}

/// A coordinator with random ids: the tests' fixed seed would give a
/// restarted coordinator the same task ids again, and a second firing would
/// overwrite the first one's tasks instead of showing up.
async fn start_unseeded(dir: &std::path::Path) -> TestCoord {
    TestCoord::start_with(dir, |c| c.seed = None).await
}

#[tokio::test]
async fn events_api_shapes_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    let cluster = setup(&t).await;

    // PutRule: validation as EventBridge words it.
    let bad = events(
        &t,
        "PutRule",
        json!({"Name": "r1", "ScheduleExpression": "rate(1 minutes)"}),
    )
    .await;
    assert_eq!(
        error_of(&bad),
        (
            400,
            "ValidationException",
            "Parameter ScheduleExpression is not valid."
        )
    );
    let none = events(&t, "PutRule", json!({"Name": "r1"})).await;
    assert_eq!(error_of(&none).1, "ValidationException");
    let name = events(
        &t,
        "PutRule",
        json!({"Name": "bad name", "ScheduleExpression": "rate(1 hour)"}),
    )
    .await;
    assert_eq!(error_of(&name).1, "ValidationException");
    assert!(
        error_of(&name).2.contains("regular expression"),
        "{}",
        name.body
    );
    let bus = events(
        &t,
        "PutRule",
        json!({"Name": "r1", "ScheduleExpression": "rate(1 hour)", "EventBusName": "other"}),
    )
    .await;
    assert_eq!(error_of(&bus).1, "ResourceNotFoundException");

    // Signed for the wrong service: refused before anything happens.
    let bytes = serde_json::to_vec(&json!({"Name": "r1"})).unwrap();
    let headers = signed_headers(&t.addr, "AWSEvents.DescribeRule", &bytes, &t.key, "ecs");
    let wrong = raw(&t.addr, "/", &headers, &bytes).await;
    assert_eq!(error_of(&wrong).1, "InvalidSignatureException");

    let put = events_ok(
        &t,
        "PutRule",
        json!({"Name": "r1", "ScheduleExpression": "cron(0 3 * * ? *)",
               "Description": "nightly", "State": "DISABLED"}),
    )
    .await;
    assert_eq!(
        put["RuleArn"],
        "arn:aws:events:us-east-1:000000000000:rule/r1"
    );
    events_ok(
        &t,
        "PutRule",
        json!({"Name": "r2", "ScheduleExpression": "rate(5 minutes)"}),
    )
    .await;
    events_ok(
        &t,
        "PutRule",
        json!({"Name": "other", "ScheduleExpression": "rate(1 day)"}),
    )
    .await;
    let d = events_ok(&t, "DescribeRule", json!({"Name": "r1"})).await;
    assert_eq!(d["State"], "DISABLED");
    assert_eq!(d["ScheduleExpression"], "cron(0 3 * * ? *)");
    assert_eq!(d["Description"], "nightly");
    assert_eq!(d["EventBusName"], "default");
    assert_eq!(d["CreatedBy"], "000000000000");
    events_ok(&t, "EnableRule", json!({"Name": "r1"})).await;
    let d = events_ok(&t, "DescribeRule", json!({"Name": "r1"})).await;
    assert_eq!(d["State"], "ENABLED");
    let missing = events(&t, "DisableRule", json!({"Name": "ghost"})).await;
    assert_eq!(
        error_of(&missing),
        (
            400,
            "ResourceNotFoundException",
            "Rule ghost does not exist on EventBus default."
        )
    );

    // ListRules: prefix and pagination.
    let mut names = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"NamePrefix": "r", "Limit": 1});
        if let Some(tok) = &token {
            body["NextToken"] = json!(tok);
        }
        let page = events_ok(&t, "ListRules", body).await;
        for r in page["Rules"].as_array().unwrap() {
            names.push(r["Name"].as_str().unwrap().to_string());
        }
        match page["NextToken"].as_str() {
            Some(n) => token = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["r1", "r2"]);
    let all = events_ok(&t, "ListRules", json!({})).await;
    assert_eq!(all["Rules"].as_array().unwrap().len(), 3);

    // PutTargets: per-target failures in FailedEntries, the rest applied.
    let r = events_ok(
        &t,
        "PutTargets",
        json!({"Rule": "r1", "Targets": [
            {"Id": "ecs", "Arn": cluster, "RoleArn": "arn:aws:iam::000000000000:role/ecsEventsRole",
             "EcsParameters": {"TaskDefinitionArn": "job", "TaskCount": 2, "Group": "nightly"}},
            {"Id": "queue", "Arn": "arn:aws:sqs:us-east-1:000000000000:q"},
            {"Id": "fargate", "Arn": cluster,
             "EcsParameters": {"TaskDefinitionArn": "job", "LaunchType": "FARGATE"}}
        ]}),
    )
    .await;
    assert_eq!(r["FailedEntryCount"], 2, "{r}");
    let failed: Vec<&str> = r["FailedEntries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["TargetId"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["queue", "fargate"]);
    assert_eq!(r["FailedEntries"][0]["ErrorCode"], "ValidationException");
    let no_rule = events(
        &t,
        "PutTargets",
        json!({"Rule": "ghost", "Targets": [{"Id": "a", "Arn": cluster,
            "EcsParameters": {"TaskDefinitionArn": "job"}}]}),
    )
    .await;
    assert_eq!(error_of(&no_rule).1, "ResourceNotFoundException");
    let targets = events_ok(&t, "ListTargetsByRule", json!({"Rule": "r1"})).await;
    assert_eq!(
        targets["Targets"],
        json!([{"Id": "ecs", "Arn": cluster,
                "RoleArn": "arn:aws:iam::000000000000:role/ecsEventsRole",
                "EcsParameters": {"TaskDefinitionArn": "job", "TaskCount": 2, "Group": "nightly"}}])
    );
    // At most five targets per rule.
    let many: Vec<Value> = (0..5)
        .map(|i| json!({"Id": format!("t{i}"), "Arn": cluster, "EcsParameters": {"TaskDefinitionArn": "job"}}))
        .collect();
    let over = events(&t, "PutTargets", json!({"Rule": "r1", "Targets": many})).await;
    assert_eq!(error_of(&over).1, "LimitExceededException");

    let by_target = events_ok(&t, "ListRuleNamesByTarget", json!({"TargetArn": cluster})).await;
    assert_eq!(by_target["RuleNames"], json!(["r1"]));

    // Tags on rules: PutRule's for a new rule, TagResource/UntagResource after.
    let r2_arn = "arn:aws:events:us-east-1:000000000000:rule/r2";
    events_ok(
        &t,
        "PutRule",
        json!({"Name": "tagged", "ScheduleExpression": "rate(1 day)",
               "Tags": [{"Key": "team", "Value": "ops"}]}),
    )
    .await;
    let tagged = events_ok(
        &t,
        "ListTagsForResource",
        json!({"ResourceARN": "arn:aws:events:us-east-1:000000000000:rule/tagged"}),
    )
    .await;
    assert_eq!(tagged["Tags"], json!([{"Key": "team", "Value": "ops"}]));
    events_ok(&t, "DeleteRule", json!({"Name": "tagged"})).await;
    events_ok(
        &t,
        "TagResource",
        json!({"ResourceARN": r2_arn, "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}),
    )
    .await;
    events_ok(
        &t,
        "UntagResource",
        json!({"ResourceARN": r2_arn, "TagKeys": ["a"]}),
    )
    .await;
    let tags = events_ok(&t, "ListTagsForResource", json!({"ResourceARN": r2_arn})).await;
    assert_eq!(tags["Tags"], json!([{"Key": "b", "Value": "2"}]));
    let ghost = events(
        &t,
        "ListTagsForResource",
        json!({"ResourceARN": "arn:aws:events:us-east-1:000000000000:rule/ghost"}),
    )
    .await;
    assert_eq!(error_of(&ghost).1, "ResourceNotFoundException");

    // DeleteRule refuses while targets exist; RemoveTargets, then it goes.
    let del = events(&t, "DeleteRule", json!({"Name": "r1"})).await;
    assert_eq!(
        error_of(&del),
        (
            400,
            "ValidationException",
            "Rule can't be deleted since it has targets."
        )
    );
    let rm = events_ok(&t, "RemoveTargets", json!({"Rule": "r1", "Ids": ["ecs"]})).await;
    assert_eq!(rm, json!({"FailedEntryCount": 0, "FailedEntries": []}));
    events_ok(&t, "DeleteRule", json!({"Name": "r1"})).await;
    // Deleting again succeeds, as in EventBridge.
    events_ok(&t, "DeleteRule", json!({"Name": "r1"})).await;
    let gone = events(&t, "DescribeRule", json!({"Name": "r1"})).await;
    assert_eq!(error_of(&gone).1, "ResourceNotFoundException");
    let unknown = events(&t, "PutEvents", json!({})).await;
    assert_eq!(error_of(&unknown).1, "UnknownOperationException");

    // Rules survive a restart.
    t.stop().await;
    let t = TestCoord::start(dir.path()).await;
    let all = events_ok(&t, "ListRules", json!({})).await;
    let names: Vec<&str> = all["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "r2"]);
}

/// The model in a stopped coordinator's store.
fn stored_model(store: &Store) -> Model {
    let recovered = store.recover().unwrap();
    let mut model: Model = match &recovered.snapshot {
        Some((_, body)) => serde_json::from_slice(body).unwrap(),
        None => Model::default(),
    };
    for (_, body) in &recovered.records {
        let cmd: Command = serde_json::from_slice(body).unwrap();
        model.apply(&cmd);
    }
    model
}

/// Rewrites rule `name` in the stopped coordinator's store as if its
/// schedule had started at `anchor`: the coordinator was down for the slots
/// since. Returns the rule as stored.
fn set_anchor(dir: &std::path::Path, name: &str, anchor: i64) -> Rule {
    let mut store = Store::open(&dir.join("berth.db")).unwrap();
    let mut rule = (*stored_model(&store).rules[name]).clone();
    assert_eq!(rule.last_slot, None, "the rule has not fired yet");
    rule.anchor = anchor;
    store
        .append(&[serde_json::to_vec(&Command::PutRule(rule.clone())).unwrap()])
        .unwrap();
    rule
}

fn stored_rule(dir: &std::path::Path, name: &str) -> Rule {
    let store = Store::open(&dir.join("berth.db")).unwrap();
    (*stored_model(&store).rules[name]).clone()
}

#[tokio::test]
async fn missed_slots_fire_once_at_start_then_on_time_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_unseeded(dir.path()).await;
    let cluster = setup(&t).await;
    events_ok(
        &t,
        "PutRule",
        json!({"Name": RULE_NAME, "ScheduleExpression": "rate(1 minute)"}),
    )
    .await;
    events_ok(
        &t,
        "PutTargets",
        json!({"Rule": RULE_NAME, "Targets": [
            {"Id": "main", "Arn": cluster, "EcsParameters": {"TaskDefinitionArn": "job"}},
            {"Id": "grouped", "Arn": cluster,
             "EcsParameters": {"TaskDefinitionArn": "job", "Group": "reports"},
             "Input": "{\"containerOverrides\": [{\"name\": \"c\", \"command\": [\"true\"]}]}"}
        ]}),
    )
    .await;
    assert!(rule_tasks(&t, RULE_NAME).await.is_empty());
    t.stop().await;

    // Down "for nine minutes and 55 seconds": nine slots missed, the tenth
    // due five seconds from now.
    let started = now();
    let rule = set_anchor(dir.path(), RULE_NAME, started.floor() as i64 - 595);
    let latest_missed = rule.anchor + 540;
    let next_slot = rule.anchor + 600;
    let mut t = start_unseeded(dir.path()).await;

    // One firing at start (both targets, one task each), not nine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let tasks = rule_tasks(&t, RULE_NAME).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for task in &tasks {
        assert_eq!(task["startedBy"], format!("events-rule/{RULE_NAME}"));
        let created = task["createdAt"].as_f64().unwrap();
        assert!(
            created >= started && created < started + 2.5,
            "{created} vs {started}"
        );
    }
    let groups: Vec<&str> = tasks.iter().map(|t| t["group"].as_str().unwrap()).collect();
    assert!(
        groups.contains(&"family:job") && groups.contains(&"reports"),
        "{groups:?}"
    );
    let overridden = tasks.iter().find(|t| t["group"] == "reports").unwrap();
    assert_eq!(
        overridden["overrides"]["containerOverrides"][0]["command"],
        json!(["true"])
    );
    // A restart right after a firing does not fire that slot again.
    t.stop().await;
    assert_eq!(
        stored_rule(dir.path(), RULE_NAME).last_slot,
        Some(latest_missed)
    );
    let mut t = start_unseeded(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rule_tasks(&t, RULE_NAME).await.len(), 2);

    // The next slot fires on time (within two seconds of it).
    let wait = next_slot as f64 + 2.5 - now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let tasks = rule_tasks(&t, RULE_NAME).await;
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    for task in &tasks[2..] {
        let created = task["createdAt"].as_f64().unwrap();
        assert!(
            created >= next_slot as f64 && created < next_slot as f64 + 2.0,
            "slot {next_slot}, created {created}"
        );
    }
    t.stop().await;
    let r = stored_rule(dir.path(), RULE_NAME);
    assert_eq!(r.last_slot, Some(next_slot));
    assert_eq!((r.invocations, r.failed_invocations), (4, 0));
}
