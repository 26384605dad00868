//! Every member of every action Berth serves, replaced by values of the wrong
//! type and extreme values: the coordinator answers 200 or a 4xx with an AWS
//! `__type`, never a 5xx, and stays up.

mod common;

use common::TestCoord;
use serde_json::{json, Map, Value};

/// Input members per action, from botocore's ECS and SSM models.
const ACTIONS: &[(&str, &[&str])] = &[
    (
        "CreateCluster",
        &[
            "clusterName",
            "tags",
            "settings",
            "configuration",
            "capacityProviders",
            "defaultCapacityProviderStrategy",
            "serviceConnectDefaults",
        ],
    ),
    ("DescribeClusters", &["clusters", "include"]),
    ("ListClusters", &["nextToken", "maxResults"]),
    ("DeleteCluster", &["cluster"]),
    ("DescribeTaskDefinition", &["taskDefinition", "include"]),
    (
        "ListTaskDefinitions",
        &["familyPrefix", "status", "sort", "nextToken", "maxResults"],
    ),
    (
        "ListTaskDefinitionFamilies",
        &["familyPrefix", "status", "nextToken", "maxResults"],
    ),
    ("DeregisterTaskDefinition", &["taskDefinition"]),
    (
        "RunTask",
        &[
            "capacityProviderStrategy",
            "cluster",
            "count",
            "enableECSManagedTags",
            "enableExecuteCommand",
            "group",
            "launchType",
            "networkConfiguration",
            "overrides",
            "placementConstraints",
            "placementStrategy",
            "platformVersion",
            "propagateTags",
            "referenceId",
            "startedBy",
            "tags",
            "taskDefinition",
            "clientToken",
            "volumeConfigurations",
        ],
    ),
    (
        "StartTask",
        &[
            "cluster",
            "containerInstances",
            "enableECSManagedTags",
            "enableExecuteCommand",
            "group",
            "networkConfiguration",
            "overrides",
            "propagateTags",
            "referenceId",
            "startedBy",
            "tags",
            "taskDefinition",
            "volumeConfigurations",
        ],
    ),
    ("StopTask", &["cluster", "task", "reason"]),
    ("DescribeTasks", &["cluster", "tasks", "include"]),
    (
        "ListTasks",
        &[
            "cluster",
            "containerInstance",
            "family",
            "nextToken",
            "maxResults",
            "startedBy",
            "serviceName",
            "desiredStatus",
            "launchType",
            "daemonName",
        ],
    ),
    (
        "ListContainerInstances",
        &["cluster", "filter", "nextToken", "maxResults", "status"],
    ),
    (
        "DescribeContainerInstances",
        &["cluster", "containerInstances", "include"],
    ),
    (
        "DeregisterContainerInstance",
        &["cluster", "containerInstance", "force"],
    ),
    (
        "UpdateContainerInstancesState",
        &["cluster", "containerInstances", "status"],
    ),
    ("DeleteTaskDefinitions", &["taskDefinitions"]),
    ("TagResource", &["resourceArn", "tags"]),
    ("UntagResource", &["resourceArn", "tagKeys"]),
    ("ListTagsForResource", &["resourceArn"]),
    ("PutAttributes", &["cluster", "attributes"]),
    ("DeleteAttributes", &["cluster", "attributes"]),
    (
        "ListAttributes",
        &[
            "cluster",
            "targetType",
            "attributeName",
            "attributeValue",
            "nextToken",
            "maxResults",
        ],
    ),
    (
        "ListServices",
        &[
            "cluster",
            "nextToken",
            "maxResults",
            "launchType",
            "schedulingStrategy",
            "resourceManagementType",
        ],
    ),
    ("DescribeServices", &["cluster", "services", "include"]),
    (
        "ssm:CreateActivation",
        &[
            "Description",
            "DefaultInstanceName",
            "IamRole",
            "RegistrationLimit",
            "ExpirationDate",
            "Tags",
            "RegistrationMetadata",
        ],
    ),
    (
        "ssm:DescribeActivations",
        &["Filters", "MaxResults", "NextToken"],
    ),
    ("ssm:DeleteActivation", &["ActivationId"]),
];

/// A plausible valid value for a member, so that one bad member is tested at a time.
fn base(member: &str, instance: &str, cluster_arn: &str) -> Option<Value> {
    Some(match member {
        "cluster" => json!("f"),
        "clusterName" => json!("fz"),
        "taskDefinition" => json!("app"),
        "tasks" => json!(["0123456789abcdef0123456789abcdef"]),
        "task" => json!("0123456789abcdef0123456789abcdef"),
        "containerInstances" => json!([instance]),
        "containerInstance" => json!(instance),
        "resourceArn" => json!(cluster_arn),
        "tagKeys" => json!(["a"]),
        "attributes" => json!([{"name": "a", "targetId": instance}]),
        "targetType" => json!("container-instance"),
        "taskDefinitions" => json!(["app:1"]),
        "services" => json!(["s"]),
        "IamRole" => json!("r"),
        "ActivationId" => json!("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        _ => return None,
    })
}

fn weird() -> Vec<Value> {
    vec![
        json!(null),
        json!(-1),
        json!(1e308),
        json!(true),
        json!(""),
        json!("x".repeat(3000)),
        json!([]),
        json!([1, null, {"a": []}]),
        json!({}),
        json!({"name": 5, "value": [], "key": {}, "type": "memberOf", "expression": "(("}),
        json!([{"key": "aws:x", "value": 1}]),
    ]
}

#[tokio::test]
async fn no_member_value_makes_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    let cluster = t.ok("CreateCluster", json!({"clusterName": "f"})).await;
    let cluster_arn = cluster["cluster"]["clusterArn"]
        .as_str()
        .unwrap()
        .to_string();
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "app", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 8}]}),
    )
    .await;
    let (_, _, instance) = t.register_instance("f", 4096, 4096, &["22"]).await;

    let mut sent = 0;
    for (action, members) in ACTIONS {
        let target = match action.strip_prefix("ssm:") {
            Some(a) => format!("AmazonSSM.{a}"),
            None => format!("{}{action}", common::ECS),
        };
        let mut valid = Map::new();
        for m in *members {
            if let Some(v) = base(m, &instance, &cluster_arn) {
                valid.insert(m.to_string(), v);
            }
        }
        for member in *members {
            for value in weird() {
                let mut body = valid.clone();
                body.insert(member.to_string(), value.clone());
                let r = t.aws(&target, &Value::Object(body)).await;
                sent += 1;
                let what = format!("{action}.{member} = {value:.80}: {} {}", r.status, r.body);
                assert!(r.status == 200 || (400..500).contains(&r.status), "{what}");
                if r.status != 200 {
                    let kind = r.body["__type"].as_str().unwrap_or("");
                    assert!(!kind.is_empty() && kind != "ServerException", "{what}");
                    assert!(
                        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{what}"
                    );
                }
            }
        }
    }
    assert!(sent > 1000, "only {sent} requests");
    // Still serving.
    t.ok("ListClusters", json!({})).await;
    t.stop().await;
}
