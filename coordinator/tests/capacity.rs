//! Capacity providers through the coordinator over real HTTP, with container
//! instances registered on the agent channel (their `berth.capacity-group`
//! attribute puts them in a provider's group) and simulated agents that run
//! what they are given: provider CRUD and its ECS errors, cluster
//! associations, RunTask split by base and weight, the cluster default
//! strategy, services scaled across providers, deletion rules, and the
//! whole state surviving a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestCoord;
use serde_json::{json, Value};

const ASG: &str = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0d1c7f3e-1111-2222-3333-444455556666:autoScalingGroupName/";

async fn err(t: &TestCoord, action: &str, body: Value) -> (String, String) {
    let r = t.ecs(action, body.clone()).await;
    assert_eq!(r.status, 400, "{action} {body}: {}", r.body);
    (
        r.body["__type"].as_str().unwrap_or("").to_string(),
        r.body["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A simulated agent: reports every task it is given RUNNING (and STOPPED
/// when told to stop).
struct Agent {
    auth: String,
    arn: String,
    seq: u64,
    reported: BTreeMap<String, String>,
}

impl Agent {
    async fn join(t: &TestCoord, cluster: &str, group: Option<&str>) -> Agent {
        let mut attrs = vec![("ecs.availability-zone", "az-1")];
        if let Some(g) = group {
            attrs.push(("berth.capacity-group", g));
        }
        let (_, auth, arn) = t
            .register_instance_with(cluster, 4096, 8192, &["22"], &attrs)
            .await;
        Agent {
            auth,
            arn,
            seq: 0,
            reported: BTreeMap::new(),
        }
    }

    async fn round(&mut self, t: &TestCoord) {
        let r = t.poll(&self.auth, 0, 0).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut reports = Vec::new();
        for spec in r.body["tasks"].as_array().cloned().unwrap_or_default() {
            let arn = spec["taskArn"].as_str().unwrap().to_string();
            let want = if spec["desiredStatus"] == "STOPPED" {
                "STOPPED"
            } else {
                "RUNNING"
            };
            if self.reported.get(&arn).map(String::as_str) == Some(want) {
                continue;
            }
            let container = spec["containers"][0]["name"].as_str().unwrap().to_string();
            reports.push(json!({"taskArn": arn, "lastStatus": want,
                "containers": [{"name": container, "lastStatus": want}]}));
            self.reported.insert(arn, want.to_string());
        }
        if reports.is_empty() {
            return;
        }
        self.seq += 1;
        let ack = t
            .channel(
                berth_api::REPORT_PATH,
                Some(&self.auth),
                &json!({"seq": self.seq, "tasks": reports}),
            )
            .await;
        assert_eq!(ack.status, 200, "{}", ack.body);
    }
}

async fn provider(t: &TestCoord, name: &str, group: &str) -> Value {
    t.ok(
        "CreateCapacityProvider",
        json!({"name": name, "autoScalingGroupProvider": {"autoScalingGroupArn": format!("{ASG}{group}")},
               "tags": [{"key": "rack", "value": group}]}),
    )
    .await["capacityProvider"]
        .clone()
}

async fn register_web(t: &TestCoord) {
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 64, "cpu": 10}]}),
    )
    .await;
}

/// Tasks described, by ARN list.
async fn describe_tasks(t: &TestCoord, cluster: &str, arns: &[Value]) -> Vec<Value> {
    if arns.is_empty() {
        return vec![];
    }
    t.ok("DescribeTasks", json!({"cluster": cluster, "tasks": arns}))
        .await["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

/// Desired-RUNNING tasks of a service.
async fn service_tasks(t: &TestCoord, cluster: &str, name: &str) -> Vec<Value> {
    let l = t
        .ok(
            "ListTasks",
            json!({"cluster": cluster, "serviceName": name, "maxResults": 100}),
        )
        .await;
    describe_tasks(t, cluster, l["taskArns"].as_array().unwrap()).await
}

/// `capacityProviderName` → count, checking each task sits on an instance
/// of that provider's group (`groups`: instance ARN → group, provider → group).
fn by_provider(
    tasks: &[Value],
    instance_group: &BTreeMap<String, String>,
    provider_group: &BTreeMap<&str, &str>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for task in tasks {
        let p = task["capacityProviderName"]
            .as_str()
            .unwrap_or("-")
            .to_string();
        let inst = task["containerInstanceArn"].as_str().unwrap();
        if let Some(g) = provider_group.get(p.as_str()) {
            assert_eq!(
                instance_group.get(inst).map(String::as_str),
                Some(*g),
                "task of {p} on an instance outside its group: {task}"
            );
        }
        *out.entry(p).or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn capacity_provider_lifecycle_and_ecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "c"})).await;

    let a = provider(&t, "rack-a", "rack-a").await;
    assert_eq!(a["name"], "rack-a");
    assert_eq!(a["status"], "ACTIVE");
    let arn = a["capacityProviderArn"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:ecs:us-east-1:") && arn.ends_with(":capacity-provider/rack-a"),
        "{arn}"
    );
    assert_eq!(
        a["autoScalingGroupProvider"]["autoScalingGroupArn"],
        format!("{ASG}rack-a")
    );
    assert_eq!(
        a["autoScalingGroupProvider"]["managedScaling"]["status"],
        "DISABLED"
    );
    assert_eq!(
        a["autoScalingGroupProvider"]["managedTerminationProtection"],
        "DISABLED"
    );
    // A plain value names the group as it is.
    let b = t
        .ok(
            "CreateCapacityProvider",
            json!({"name": "rack-b", "autoScalingGroupProvider": {"autoScalingGroupArn": "rack-b",
                   "managedScaling": {"status": "ENABLED", "targetCapacity": 90},
                   "managedTerminationProtection": "ENABLED"}}),
        )
        .await;
    assert_eq!(
        b["capacityProvider"]["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"],
        90
    );

    // ECS's refusals.
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "CreateCapacityProvider",
            json!({"name": "rack-a", "autoScalingGroupProvider": {"autoScalingGroupArn": "other"}}),
            "ClientException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "rack-z", "autoScalingGroupProvider": {"autoScalingGroupArn": "rack-b"}}),
            "ClientException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "FARGATE", "autoScalingGroupProvider": {"autoScalingGroupArn": "f"}}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "FARGATE_SPOT", "autoScalingGroupProvider": {"autoScalingGroupArn": "f"}}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "awsGroup", "autoScalingGroupProvider": {"autoScalingGroupArn": "g1"}}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "ecs-x", "autoScalingGroupProvider": {"autoScalingGroupArn": "g2"}}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "bad name", "autoScalingGroupProvider": {"autoScalingGroupArn": "g3"}}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "nogroup"}),
            "InvalidParameterException",
        ),
        (
            "CreateCapacityProvider",
            json!({"name": "r", "autoScalingGroupProvider": {"autoScalingGroupArn": "g4", "managedScaling": {"targetCapacity": 0}}}),
            "InvalidParameterException",
        ),
        (
            "UpdateCapacityProvider",
            json!({"name": "nope", "autoScalingGroupProvider": {}}),
            "ClientException",
        ),
        (
            "DeleteCapacityProvider",
            json!({"capacityProvider": "nope"}),
            "ClientException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["nope"], "defaultCapacityProviderStrategy": []}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["FARGATE"], "defaultCapacityProviderStrategy": []}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["rack-a"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-b", "weight": 1}]}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["rack-a", "rack-b"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-a", "base": 1, "weight": 1}, {"capacityProvider": "rack-b", "base": 1, "weight": 1}]}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["rack-a", "rack-b"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-a"}, {"capacityProvider": "rack-b"}]}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["rack-a"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-a", "weight": 1001}]}),
            "InvalidParameterException",
        ),
        (
            "PutClusterCapacityProviders",
            json!({"cluster": "nope", "capacityProviders": [], "defaultCapacityProviderStrategy": []}),
            "ClusterNotFoundException",
        ),
        (
            "CreateCluster",
            json!({"clusterName": "x", "capacityProviders": ["rack-a"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-b", "weight": 1}]}),
            "InvalidParameterException",
        ),
    ];
    for (action, body, kind) in table {
        let (k, m) = err(&t, action, body.clone()).await;
        assert_eq!(k, kind, "{action} {body}: {m}");
    }
    let (_, m) = err(
        &t,
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["rack-a"], "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-b", "weight": 1}]}),
    )
    .await;
    assert_eq!(m, "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.");

    // Update: reported, never acted on.
    let u = t
        .ok(
            "UpdateCapacityProvider",
            json!({"name": "rack-a", "autoScalingGroupProvider": {"managedScaling": {"status": "ENABLED", "targetCapacity": 75}, "managedDraining": "DISABLED"}}),
        )
        .await;
    let ua = &u["capacityProvider"]["autoScalingGroupProvider"];
    assert_eq!(ua["managedScaling"]["status"], "ENABLED");
    assert_eq!(ua["managedScaling"]["targetCapacity"], 75);
    assert_eq!(ua["managedScaling"]["instanceWarmupPeriod"], 300);
    assert_eq!(ua["managedDraining"], "DISABLED");
    assert_eq!(u["capacityProvider"]["updateStatus"], "UPDATE_COMPLETE");

    // Describe: by name and ARN, TAGS only when asked, MISSING failures, pages.
    let arn_a = a["capacityProviderArn"].as_str().unwrap().to_string();
    let d = t
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": [arn_a, "rack-b", "ghost"], "include": ["TAGS"]}),
        )
        .await;
    let names: Vec<&str> = d["capacityProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rack-a", "rack-b"]);
    assert_eq!(
        d["capacityProviders"][0]["tags"],
        json!([{"key": "rack", "value": "rack-a"}])
    );
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    let plain = t
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["rack-a"]}),
        )
        .await;
    assert!(plain["capacityProviders"][0].get("tags").is_none());
    let p1 = t
        .ok("DescribeCapacityProviders", json!({"maxResults": 1}))
        .await;
    assert_eq!(p1["capacityProviders"][0]["name"], "rack-a");
    let p2 = t
        .ok(
            "DescribeCapacityProviders",
            json!({"maxResults": 1, "nextToken": p1["nextToken"]}),
        )
        .await;
    assert_eq!(p2["capacityProviders"][0]["name"], "rack-b");
    assert!(p2.get("nextToken").is_none());

    // Tags through TagResource on the provider's ARN.
    t.ok(
        "TagResource",
        json!({"resourceArn": arn_a, "tags": [{"key": "team", "value": "infra"}]}),
    )
    .await;
    let tags = t
        .ok("ListTagsForResource", json!({"resourceArn": arn_a}))
        .await;
    assert_eq!(tags["tags"].as_array().unwrap().len(), 2);

    // Associate; DescribeClusters shows it; a cluster created with providers.
    let put = t
        .ok(
            "PutClusterCapacityProviders",
            json!({"cluster": "c", "capacityProviders": ["rack-a", "rack-b"],
                   "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-a", "base": 1, "weight": 1}, {"capacityProvider": "rack-b", "weight": 4}]}),
        )
        .await;
    assert_eq!(
        put["cluster"]["capacityProviders"],
        json!(["rack-a", "rack-b"])
    );
    let dc = t
        .ok(
            "DescribeClusters",
            json!({"clusters": ["c"], "include": ["ATTACHMENTS"]}),
        )
        .await;
    assert_eq!(dc["clusters"][0]["attachments"], json!([]));
    assert_eq!(dc["clusters"][0]["attachmentsStatus"], "UPDATE_COMPLETE");
    assert_eq!(
        dc["clusters"][0]["defaultCapacityProviderStrategy"],
        json!([{"capacityProvider": "rack-a", "weight": 1, "base": 1}, {"capacityProvider": "rack-b", "weight": 4, "base": 0}])
    );
    let c2 = t
        .ok(
            "CreateCluster",
            json!({"clusterName": "c2", "capacityProviders": ["rack-b"],
                   "defaultCapacityProviderStrategy": [{"capacityProvider": "rack-b", "weight": 1}]}),
        )
        .await;
    assert_eq!(c2["cluster"]["capacityProviders"], json!(["rack-b"]));

    // Deletion: refused while a cluster holds it, then INACTIVE.
    let (k, m) = err(
        &t,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "rack-a"}),
    )
    .await;
    assert_eq!(k, "ClientException");
    assert!(m.contains("associated with cluster: c"), "{m}");
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["rack-b"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    let del = t
        .ok(
            "DeleteCapacityProvider",
            json!({"capacityProvider": "rack-a"}),
        )
        .await;
    assert_eq!(del["capacityProvider"]["status"], "INACTIVE");
    assert_eq!(del["capacityProvider"]["updateStatus"], "DELETE_COMPLETE");
    let all = t.ok("DescribeCapacityProviders", json!({})).await;
    assert_eq!(all["capacityProviders"].as_array().unwrap().len(), 1);
    let gone = t
        .ok(
            "DescribeCapacityProviders",
            json!({"capacityProviders": ["rack-a"]}),
        )
        .await;
    assert_eq!(gone["capacityProviders"][0]["status"], "INACTIVE");
    // An INACTIVE provider cannot be associated; its name can be reused.
    let (k, _) = err(
        &t,
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["rack-a"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    assert_eq!(k, "InvalidParameterException");
    provider(&t, "rack-a", "rack-a2").await;

    // Everything survives a restart (log replay).
    let before = t
        .ok("DescribeCapacityProviders", json!({"include": ["TAGS"]}))
        .await;
    let before_c = t
        .ok("DescribeClusters", json!({"clusters": ["c", "c2"]}))
        .await;
    t.stop().await;
    let mut t = TestCoord::start(dir.path()).await;
    assert_eq!(
        t.ok("DescribeCapacityProviders", json!({"include": ["TAGS"]}))
            .await,
        before
    );
    assert_eq!(
        t.ok("DescribeClusters", json!({"clusters": ["c", "c2"]}))
            .await,
        before_c
    );
    t.stop().await;
}

#[tokio::test]
async fn run_task_splits_by_base_and_weight_onto_each_providers_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "c"})).await;
    register_web(&t).await;
    let mut instance_group = BTreeMap::new();
    for g in ["rack-a", "rack-a", "rack-b", "rack-b"] {
        let a = Agent::join(&t, "c", Some(g)).await;
        instance_group.insert(a.arn.clone(), g.to_string());
    }
    let loose = Agent::join(&t, "c", None).await;
    // An instance carrying many agent-managed attributes (as the real agent
    // registers its docker-remote-api capabilities) still takes the group
    // attribute: only custom attributes count towards ECS's limit of 10.
    let many: Vec<(String, String)> = (17..=44)
        .map(|m| {
            (
                format!("com.amazonaws.ecs.capability.docker-remote-api.1.{m}"),
                String::new(),
            )
        })
        .collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (_, _, busy_arn) = t.register_instance_with("c", 10, 10, &[], &many_refs).await;
    t.ok(
        "PutAttributes",
        json!({"cluster": "c", "attributes": [{"name": "berth.capacity-group", "value": "rack-tiny", "targetId": busy_arn}]}),
    )
    .await;
    provider(&t, "cp-a", "rack-a").await;
    provider(&t, "cp-b", "rack-b").await;
    provider(&t, "cp-empty", "rack-nobody").await;
    let groups: BTreeMap<&str, &str> = [("cp-a", "rack-a"), ("cp-b", "rack-b")].into();

    // Not associated yet: refused with ECS's words.
    let (k, m) = err(
        &t,
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "web", "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}]}),
    )
    .await;
    assert_eq!(k, "InvalidParameterException");
    assert!(m.contains("not associated with the cluster"), "{m}");
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["cp-a", "cp-b", "cp-empty"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "cp-b", "weight": 1}]}),
    )
    .await;

    // Launch type and strategy together: ECS's exact refusal.
    let (k, m) = err(
        &t,
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "web", "launchType": "EXTERNAL",
               "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}]}),
    )
    .await;
    assert_eq!(k, "InvalidParameterException");
    assert_eq!(m, "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.");

    // ECS's example: base 1 weight 1 on A, weight 4 on B, six tasks: 2 and 4.
    let r = t
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 6,
                   "capacityProviderStrategy": [{"capacityProvider": "cp-a", "base": 1, "weight": 1}, {"capacityProvider": "cp-b", "weight": 4}]}),
        )
        .await;
    assert_eq!(r["failures"], json!([]));
    let tasks = r["tasks"].as_array().unwrap().clone();
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-a", 2), ("cp-b", 4)])
    );
    // DescribeTasks shows the same.
    let arns: Vec<Value> = tasks.iter().map(|t| t["taskArn"].clone()).collect();
    let described = describe_tasks(&t, "c", &arns).await;
    assert_eq!(
        by_provider(&described, &instance_group, &groups),
        counts(&[("cp-a", 2), ("cp-b", 4)])
    );

    // No launch type, no strategy: the cluster default (all on cp-b).
    let r = t
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 3}),
        )
        .await;
    assert_eq!(
        by_provider(r["tasks"].as_array().unwrap(), &instance_group, &groups),
        counts(&[("cp-b", 3)])
    );

    // A launch type bypasses providers (the ungrouped instance is eligible).
    let r = t
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 10, "launchType": "EXTERNAL",
                   "placementConstraints": [{"type": "memberOf", "expression": "not(attribute:berth.capacity-group exists)"}]}),
        )
        .await;
    let plain = r["tasks"].as_array().unwrap();
    assert_eq!(plain.len(), 10);
    for task in plain {
        assert!(task.get("capacityProviderName").is_none(), "{task}");
        assert_eq!(task["containerInstanceArn"], json!(loose.arn));
    }

    // A provider whose group has no instance places nothing and says why.
    let r = t
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 2,
                   "capacityProviderStrategy": [{"capacityProvider": "cp-empty", "weight": 1}]}),
        )
        .await;
    assert_eq!(r["tasks"], json!([]));
    let reasons: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| *r == "ATTRIBUTE"),
        "{reasons:?}"
    );
    // Two shares that both fit nowhere: each instance is reported once.
    let r = t
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "count": 2,
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:nothing exists"}],
                   "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}, {"capacityProvider": "cp-b", "weight": 1}]}),
        )
        .await;
    assert_eq!(r["tasks"], json!([]));
    let arns: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["arn"].as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = arns.iter().copied().collect();
    assert_eq!(arns.len(), distinct.len(), "{arns:?}");
    assert_eq!(
        distinct.len(),
        6,
        "every instance of the cluster once: {arns:?}"
    );

    // clientToken: a retry answers the same tasks, split once.
    let body = json!({"cluster": "c", "taskDefinition": "web", "count": 4, "clientToken": "tok-1",
                      "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}, {"capacityProvider": "cp-b", "weight": 1}]});
    let first = t.ok("RunTask", body.clone()).await;
    let again = t.ok("RunTask", body).await;
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["taskArn"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first).len(), 4);
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(
        by_provider(first["tasks"].as_array().unwrap(), &instance_group, &groups),
        counts(&[("cp-a", 2), ("cp-b", 2)])
    );

    // A provider with tasks running cannot leave the cluster.
    let (k, m) = err(
        &t,
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["cp-b"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    assert_eq!(k, "ResourceInUseException");
    assert_eq!(
        m,
        "The specified capacity provider is in use and cannot be removed."
    );

    // The recorded provider names survive a restart.
    let all: Vec<Value> = ids(&first).into_iter().map(Value::from).collect();
    let before = describe_tasks(&t, "c", &all).await;
    t.stop().await;
    let mut t = TestCoord::start(dir.path()).await;
    let after = describe_tasks(&t, "c", &all).await;
    let names = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .map(|t| t["capacityProviderName"].clone())
            .collect()
    };
    assert_eq!(names(&before), names(&after));
    t.stop().await;
}

#[tokio::test]
async fn services_keep_their_strategy_split_as_they_scale_and_switch() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start_with(dir.path(), |c| c.service_settle = Duration::ZERO).await;
    t.ok("CreateCluster", json!({"clusterName": "s"})).await;
    register_web(&t).await;
    let mut agents = Vec::new();
    let mut instance_group = BTreeMap::new();
    for g in ["rack-a", "rack-a", "rack-b", "rack-b"] {
        let a = Agent::join(&t, "s", Some(g)).await;
        instance_group.insert(a.arn.clone(), g.to_string());
        agents.push(a);
    }
    provider(&t, "cp-a", "rack-a").await;
    provider(&t, "cp-b", "rack-b").await;
    let groups: BTreeMap<&str, &str> = [("cp-a", "rack-a"), ("cp-b", "rack-b")].into();
    t.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "s", "capacityProviders": ["cp-a", "cp-b"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}]}),
    )
    .await;

    let (k, m) = err(
        &t,
        "CreateService",
        json!({"cluster": "s", "serviceName": "bad", "taskDefinition": "web", "desiredCount": 1,
               "launchType": "EXTERNAL", "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}]}),
    )
    .await;
    assert_eq!(
        (k.as_str(), m.as_str()),
        ("InvalidParameterException", "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
    );

    let created = t
        .ok(
            "CreateService",
            json!({"cluster": "s", "serviceName": "web", "taskDefinition": "web", "desiredCount": 4,
                   "capacityProviderStrategy": [{"capacityProvider": "cp-a", "weight": 1}, {"capacityProvider": "cp-b", "weight": 1}]}),
        )
        .await;
    assert!(created["service"].get("launchType").is_none());
    assert_eq!(
        created["service"]["capacityProviderStrategy"],
        json!([{"capacityProvider": "cp-a", "weight": 1, "base": 0}, {"capacityProvider": "cp-b", "weight": 1, "base": 0}])
    );
    // Without launch type or strategy a service takes the cluster default.
    let dflt = t
        .ok(
            "CreateService",
            json!({"cluster": "s", "serviceName": "dflt", "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
    assert_eq!(
        dflt["service"]["capacityProviderStrategy"],
        json!([{"capacityProvider": "cp-a", "weight": 1, "base": 0}])
    );

    let tasks = play(&t, &mut agents, 4).await;
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-a", 2), ("cp-b", 2)])
    );

    // Scale out: the new tasks keep the 1:1 split.
    t.ok(
        "UpdateService",
        json!({"cluster": "s", "service": "web", "desiredCount": 6}),
    )
    .await;
    let tasks = play(&t, &mut agents, 6).await;
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-a", 3), ("cp-b", 3)])
    );

    // Scale in: the tasks that stay keep the split (1:1 of 2), then out again.
    t.ok(
        "UpdateService",
        json!({"cluster": "s", "service": "web", "desiredCount": 2}),
    )
    .await;
    let tasks = play(&t, &mut agents, 2).await;
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-a", 1), ("cp-b", 1)])
    );
    t.ok(
        "UpdateService",
        json!({"cluster": "s", "service": "web", "desiredCount": 6}),
    )
    .await;
    let tasks = play(&t, &mut agents, 6).await;
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-a", 3), ("cp-b", 3)])
    );

    // In use: neither removable from the cluster nor deletable.
    let (k, _) = err(
        &t,
        "PutClusterCapacityProviders",
        json!({"cluster": "s", "capacityProviders": ["cp-a"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    assert_eq!(k, "ResourceInUseException");
    let (k, m) = err(
        &t,
        "DeleteCapacityProvider",
        json!({"capacityProvider": "cp-b"}),
    )
    .await;
    assert_eq!(k, "ClientException");
    assert!(m.contains("service"), "{m}");

    // Switch the service to cp-b only: a new deployment moves every task.
    let u = t
        .ok(
            "UpdateService",
            json!({"cluster": "s", "service": "web",
                   "capacityProviderStrategy": [{"capacityProvider": "cp-b", "weight": 1}]}),
        )
        .await;
    assert_eq!(u["service"]["deployments"].as_array().unwrap().len(), 2);
    assert_eq!(
        u["service"]["deployments"][0]["capacityProviderStrategy"],
        json!([{"capacityProvider": "cp-b", "weight": 1, "base": 0}])
    );
    // The deployment being replaced still shows the strategy it placed with.
    assert_eq!(
        u["service"]["deployments"][1]["capacityProviderStrategy"],
        json!([{"capacityProvider": "cp-a", "weight": 1, "base": 0}, {"capacityProvider": "cp-b", "weight": 1, "base": 0}])
    );
    let mut moved = false;
    for _ in 0..40 {
        let tasks = play(&t, &mut agents, 6).await;
        if by_provider(&tasks, &instance_group, &groups) == counts(&[("cp-b", 6)]) {
            moved = true;
            break;
        }
    }
    assert!(moved, "tasks never all moved to cp-b");

    // The service and its tasks survive a restart with their providers.
    let before = strategy_of(&t).await;
    t.stop().await;
    let mut t = TestCoord::start(dir.path()).await;
    assert_eq!(strategy_of(&t).await, before);
    let tasks = service_tasks(&t, "s", "web").await;
    assert_eq!(
        by_provider(&tasks, &instance_group, &groups),
        counts(&[("cp-b", 6)])
    );
    t.stop().await;
}

/// Plays every agent until the service has `want` tasks, all RUNNING.
async fn play(t: &TestCoord, agents: &mut [Agent], want: usize) -> Vec<Value> {
    for _ in 0..200 {
        for a in agents.iter_mut() {
            a.round(t).await;
        }
        let tasks = service_tasks(t, "s", "web").await;
        if tasks.len() == want && tasks.iter().all(|t| t["lastStatus"] == "RUNNING") {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("service never settled at {want} tasks");
}

async fn strategy_of(t: &TestCoord) -> Value {
    t.ok(
        "DescribeServices",
        json!({"cluster": "s", "services": ["web"]}),
    )
    .await["services"][0]["capacityProviderStrategy"]
        .clone()
}
