//! In-process coordinator tests over real HTTP: protocol errors, SigV4,
//! concurrency (no overcommit), long-poll wake-up, report idempotency, and
//! durability across restarts.

mod common;

use std::time::{Duration, Instant};

use common::{raw, setup_cluster, signed_headers, TestCoord, ECS};
use serde_json::{json, Value};

#[tokio::test]
async fn protocol_errors_answer_the_aws_type_and_a_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    let addr = t.addr.clone();
    let key = t.key.clone();

    let signed = |target: &str, body: &[u8]| signed_headers(&addr, target, body, &key, "ecs");
    let big = vec![b' '; 1024 * 1024 + 1];
    type Case = (
        &'static str,
        Vec<(String, String)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            signed(&format!("{ECS}CreateCluster"), b"{\"clusterName\": "),
            b"{\"clusterName\": ".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "array body",
            signed(&format!("{ECS}ListClusters"), b"[]"),
            b"[]".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "unknown action",
            signed(&format!("{ECS}FrobnicateClusters"), b"{}"),
            b"{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        (
            "wrong type",
            signed(&format!("{ECS}CreateCluster"), b"{\"clusterName\": 5}"),
            b"{\"clusterName\": 5}".to_vec(),
            400,
            "SerializationException",
        ),
        (
            "unsigned",
            vec![("x-amz-target".into(), format!("{ECS}ListClusters"))],
            b"{}".to_vec(),
            403,
            "MissingAuthenticationTokenException",
        ),
        (
            "oversized body",
            signed(&format!("{ECS}ListClusters"), &big),
            big.clone(),
            413,
            "RequestEntityTooLargeException",
        ),
        (
            "tampered body",
            signed(&format!("{ECS}CreateCluster"), b"{\"clusterName\": \"a\"}"),
            b"{\"clusterName\": \"b\"}".to_vec(),
            403,
            "InvalidSignatureException",
        ),
    ];
    for (name, headers, body, status, kind) in cases {
        let r = raw(&t.addr, "/", &headers, &body).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        assert_eq!(r.body["__type"], kind, "{name}: {}", r.body);
        assert!(
            r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: no message"
        );
    }
    // Nothing above changed state.
    let list = t.ok("ListClusters", json!({})).await;
    assert_eq!(list["clusterArns"], json!([]));
    t.stop().await;
}

#[tokio::test]
async fn ecs_validation_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "v", 64).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "CreateCluster",
            json!({"clusterName": "has space"}),
            "InvalidParameterException",
        ),
        (
            "RunTask",
            json!({"cluster": "nope", "taskDefinition": "app"}),
            "ClusterNotFoundException",
        ),
        (
            "RunTask",
            json!({"cluster": "v", "taskDefinition": "ghost"}),
            "ClientException",
        ),
        (
            "RunTask",
            json!({"cluster": "v", "taskDefinition": "app", "count": 11}),
            "InvalidParameterException",
        ),
        (
            "RunTask",
            json!({"cluster": "v", "taskDefinition": "app"}),
            "InvalidParameterException",
        ),
        (
            "RunTask",
            json!({"cluster": "v", "taskDefinition": "app", "launchType": "FARGATE"}),
            "InvalidParameterException",
        ),
        (
            "StopTask",
            json!({"cluster": "v", "task": "0123456789abcdef0123456789abcdef"}),
            "InvalidParameterException",
        ),
        (
            "DescribeTaskDefinition",
            json!({"taskDefinition": "ghost"}),
            "ClientException",
        ),
        (
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "app"}),
            "ClientException",
        ),
        (
            "ListTasks",
            json!({"cluster": "v", "maxResults": 101}),
            "InvalidParameterException",
        ),
        (
            "DeleteCluster",
            json!({"cluster": "nope"}),
            "ClusterNotFoundException",
        ),
        (
            "ListContainerInstances",
            json!({"cluster": "v", "filter": "attribute:x ~~ y"}),
            "InvalidParameterException",
        ),
    ];
    for (action, body, kind) in cases {
        let r = t.ecs(action, body.clone()).await;
        assert_eq!(r.status, 400, "{action} {body}: {}", r.body);
        assert_eq!(r.body["__type"], kind, "{action} {body}: {}", r.body);
    }
    let ssm = t
        .aws(
            "AmazonSSM.CreateActivation",
            &json!({"RegistrationLimit": 1}),
        )
        .await;
    assert_eq!(ssm.body["__type"], "ValidationException");
    let ssm = t
        .aws(
            "AmazonSSM.DeleteActivation",
            &json!({"ActivationId": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}),
        )
        .await;
    assert_eq!(ssm.body["__type"], "InvalidActivationId");
    t.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_run_tasks_never_overcommit() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "busy", 100).await;
    // Room for exactly 10 tasks of 100 MiB.
    let (_, _, arn) = t.register_instance("busy", 4096, 1000, &["22"]).await;
    let t = std::sync::Arc::new(t);
    let mut joins = vec![];
    for i in 0..20 {
        let t = t.clone();
        joins.push(tokio::spawn(async move {
            t.ok(
                "RunTask",
                json!({"cluster": "busy", "taskDefinition": "app", "startedBy": format!("r{i}")}),
            )
            .await
        }));
    }
    let mut placed = 0;
    let mut failed = 0;
    for j in joins {
        let body = j.await.unwrap();
        placed += body["tasks"].as_array().unwrap().len();
        for f in body["failures"].as_array().unwrap() {
            assert_eq!(f["reason"], "RESOURCE:MEMORY");
            assert_eq!(f["arn"], arn.as_str());
            failed += 1;
        }
    }
    assert_eq!(placed, 10);
    assert_eq!(failed, 10);
    let ci = t
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "busy", "containerInstances": [arn]}),
        )
        .await;
    let remaining = &ci["containerInstances"][0]["remainingResources"];
    let mem = remaining
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "MEMORY")
        .unwrap();
    assert_eq!(mem["integerValue"], 0);
    assert_eq!(ci["containerInstances"][0]["pendingTasksCount"], 10);
    let mut t = std::sync::Arc::try_unwrap(t).ok().unwrap();
    t.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_on_run_task_and_reports_apply_once_forward_only() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "lp", 64).await;
    let (_, auth, _) = t.register_instance("lp", 1024, 1024, &[]).await;

    let first = t.poll(&auth, 0, 0).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["changed"], true);
    let v = first.body["version"].as_u64().unwrap();

    // A poll held at the current version wakes as soon as a task is placed.
    let t = std::sync::Arc::new(t);
    let poller = {
        let t = t.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = t.poll(&auth, v, 15000).await;
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "lp", "taskDefinition": "app", "count": 2}),
        )
        .await;
    let (r, waited) = poller.await.unwrap();
    assert!(waited < Duration::from_secs(5), "poll held {waited:?}");
    assert_eq!(r.body["changed"], true, "{}", r.body);
    assert_eq!(r.body["tasks"].as_array().unwrap().len(), 2, "{}", r.body);
    let (_, other_auth, _) = t.register_instance("lp", 1024, 1024, &[]).await;

    // Report RUNNING for a task on this instance; a replay of the same seq and a
    // later report moving it backwards change nothing.
    let mine = r.body["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let report = |seq: u64, status: &str| {
        json!({"seq": seq, "tasks": [{"taskArn": mine, "lastStatus": status, "startedAt": 1.5,
               "containers": [{"name": "c", "lastStatus": "RUNNING", "runtimeId": "rt"}]}]})
    };
    let ack = t
        .channel(berth_api::REPORT_PATH, Some(&auth), &report(5, "RUNNING"))
        .await;
    assert_eq!(ack.body["ackedSeq"], 5);
    let replay = t
        .channel(berth_api::REPORT_PATH, Some(&auth), &report(5, "STOPPED"))
        .await;
    assert_eq!(replay.body["ackedSeq"], 5);
    let back = t
        .channel(berth_api::REPORT_PATH, Some(&auth), &report(6, "PENDING"))
        .await;
    assert_eq!(back.body["ackedSeq"], 6);
    // Another instance cannot touch this task.
    let foreign = t
        .channel(
            berth_api::REPORT_PATH,
            Some(&other_auth),
            &report(1, "STOPPED"),
        )
        .await;
    assert_eq!(foreign.status, 200);
    let bad = t
        .channel(
            berth_api::REPORT_PATH,
            Some("mi-0:nope"),
            &report(9, "STOPPED"),
        )
        .await;
    assert_eq!(bad.status, 401);

    let d = t
        .ok("DescribeTasks", json!({"cluster": "lp", "tasks": [mine]}))
        .await;
    let task = &d["tasks"][0];
    assert_eq!(task["lastStatus"], "RUNNING", "{task}");
    assert_eq!(task["version"], 2, "{task}");
    assert_eq!(task["containers"][0]["runtimeId"], "rt");
    assert_eq!(run["tasks"].as_array().unwrap().len(), 2);

    // StopTask → agent sees desired STOPPED with the reason; STOPPED report frees it.
    let stop = t
        .ok(
            "StopTask",
            json!({"cluster": "lp", "task": mine, "reason": "done"}),
        )
        .await;
    assert_eq!(stop["task"]["desiredStatus"], "STOPPED");
    assert_eq!(stop["task"]["stopCode"], "UserInitiated");
    let stopped = json!({"seq": 7, "tasks": [{"taskArn": mine, "lastStatus": "STOPPED",
        "containers": [{"name": "c", "lastStatus": "STOPPED", "exitCode": 0}]}]});
    t.channel(berth_api::REPORT_PATH, Some(&auth), &stopped)
        .await;
    let d = t
        .ok("DescribeTasks", json!({"cluster": "lp", "tasks": [mine]}))
        .await;
    assert_eq!(d["tasks"][0]["lastStatus"], "STOPPED");
    assert_eq!(d["tasks"][0]["stoppedReason"], "done");
    assert_eq!(d["tasks"][0]["containers"][0]["exitCode"], 0);
    let mut t = std::sync::Arc::try_unwrap(t).ok().unwrap();
    t.stop().await;
}

#[tokio::test]
async fn state_survives_restart_and_client_token_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "dur", 64).await;
    let (_, auth, _) = t.register_instance("dur", 1024, 1024, &[]).await;
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "dur", "taskDefinition": "app", "count": 3, "clientToken": "tok-1"}),
        )
        .await;
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(arns.len(), 3);
    t.stop().await;

    let mut t = TestCoord::start(dir.path()).await;
    let again = t
        .ok(
            "RunTask",
            json!({"cluster": "dur", "taskDefinition": "app", "count": 3, "clientToken": "tok-1"}),
        )
        .await;
    let again_arns: Vec<String> = again["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(again_arns, arns);
    let listed = t.ok("ListTasks", json!({"cluster": "dur"})).await;
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 3);
    // The instance credentials still work after the restart.
    let poll = t.poll(&auth, 0, 0).await;
    assert_eq!(poll.status, 200);
    assert_eq!(poll.body["tasks"].as_array().unwrap().len(), 3);
    t.stop().await;
}

#[tokio::test]
async fn draining_instance_takes_no_tasks_and_taskdef_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "dr", 64).await;
    let (_, _, arn) = t.register_instance("dr", 1024, 1024, &[]).await;
    let up = t
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": "dr", "containerInstances": [arn, "ffffffffffffffffffffffffffffffff"], "status": "DRAINING"}),
        )
        .await;
    assert_eq!(up["containerInstances"][0]["status"], "DRAINING");
    assert_eq!(up["failures"][0]["reason"], "MISSING");
    let run = t
        .ok("RunTask", json!({"cluster": "dr", "taskDefinition": "app"}))
        .await;
    assert_eq!(run["tasks"], json!([]));
    assert_eq!(run["failures"][0]["reason"], "DRAINING");

    // ACTIVE revisions cannot be deleted; deregistered ones can.
    let del = t
        .ok(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["app:1"]}),
        )
        .await;
    assert_eq!(del["taskDefinitions"], json!([]));
    assert_eq!(del["failures"].as_array().unwrap().len(), 1);
    let dereg = t
        .ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "app:1"}),
        )
        .await;
    assert_eq!(dereg["taskDefinition"]["status"], "INACTIVE");
    let still = t
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "app:1"}))
        .await;
    assert_eq!(still["taskDefinition"]["status"], "INACTIVE");
    let fams = t
        .ok("ListTaskDefinitionFamilies", json!({"status": "INACTIVE"}))
        .await;
    assert_eq!(fams["families"], json!(["app"]));
    let del = t
        .ok(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["app:1"]}),
        )
        .await;
    assert_eq!(del["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    // Revisions are never reused.
    let reg = t
        .ok(
            "RegisterTaskDefinition",
            json!({"family": "app", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 8}]}),
        )
        .await;
    assert_eq!(reg["taskDefinition"]["revision"], 2);
    t.stop().await;
}

#[tokio::test]
async fn tags_and_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    for i in 0..7 {
        t.ok("CreateCluster", json!({"clusterName": format!("p{i}")}))
            .await;
    }
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 3});
        if let Some(tok) = &token {
            body["nextToken"] = json!(tok);
        }
        let page = t.ok("ListClusters", body).await;
        seen.extend(page["clusterArns"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(n) => token = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let arn = seen[0].as_str().unwrap().to_string();
    t.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}),
    )
    .await;
    t.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["a"]}),
    )
    .await;
    let tags = t
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(tags["tags"], json!([{"key": "b", "value": "2"}]));
    // propagateTags copies the task definition's tags onto the task.
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "tagged", "tags": [{"key": "team", "value": "core"}],
               "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 8}]}),
    )
    .await;
    let (_, _, instance_arn) = t.register_instance("p0", 1024, 1024, &[]).await;
    t.ok(
        "TagResource",
        json!({"resourceArn": instance_arn, "tags": [{"key": "rack", "value": "r1"}]}),
    )
    .await;
    let tags = t
        .ok("ListTagsForResource", json!({"resourceArn": instance_arn}))
        .await;
    assert_eq!(tags["tags"], json!([{"key": "rack", "value": "r1"}]));
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "p0", "taskDefinition": "tagged", "propagateTags": "TASK_DEFINITION",
                   "tags": [{"key": "own", "value": "1"}]}),
        )
        .await;
    let task_arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let tags = t
        .ok("ListTagsForResource", json!({"resourceArn": task_arn}))
        .await;
    assert_eq!(
        tags["tags"],
        json!([{"key": "own", "value": "1"}, {"key": "team", "value": "core"}])
    );
    let reserved = t
        .ecs(
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"key": "aws:x", "value": "1"}]}),
        )
        .await;
    assert_eq!(reserved.body["__type"], "InvalidParameterException");
    t.stop().await;
}

#[tokio::test]
async fn custom_attributes_on_instances() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "at"})).await;
    let (_, _, arn) = t.register_instance("at", 1024, 1024, &[]).await;
    t.ok(
        "PutAttributes",
        json!({"cluster": "at", "attributes": [{"name": "stack", "value": "prod", "targetId": arn}]}),
    )
    .await;
    let listed = t
        .ok(
            "ListAttributes",
            json!({"cluster": "at", "targetType": "container-instance", "attributeName": "stack"}),
        )
        .await;
    assert_eq!(
        listed["attributes"],
        json!([{"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": arn}])
    );
    for (filter, n) in [
        ("attribute:stack == prod", 1),
        ("attribute:stack in [dev, qa]", 0),
    ] {
        let l = t
            .ok(
                "ListContainerInstances",
                json!({"cluster": "at", "filter": filter}),
            )
            .await;
        assert_eq!(
            l["containerInstanceArns"].as_array().unwrap().len(),
            n,
            "{filter}"
        );
    }
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "m", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 8}]}),
    )
    .await;
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "at", "taskDefinition": "m",
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == dev"}]}),
        )
        .await;
    assert_eq!(
        run["failures"][0]["reason"], "MemberOf placement constraint unsatisfied.",
        "{run}"
    );
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "at", "taskDefinition": "m", "count": 2,
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == prod"},
                                            {"type": "distinctInstance"}],
                   "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(
        run["failures"][0]["reason"],
        "DistinctInstance placement constraint unsatisfied."
    );
    let bad = t
        .ecs(
            "RunTask",
            json!({"cluster": "at", "taskDefinition": "m",
                   "placementStrategy": [{"type": "binpack", "field": "disk"}]}),
        )
        .await;
    assert_eq!(bad.body["__type"], "InvalidParameterException");
    let missing = t
        .ecs(
            "PutAttributes",
            json!({"cluster": "at", "attributes": [{"name": "x", "targetId": "ffffffffffffffffffffffffffffffff"}]}),
        )
        .await;
    assert_eq!(missing.body["__type"], "TargetNotFoundException");
    t.ok(
        "DeleteAttributes",
        json!({"cluster": "at", "attributes": [{"name": "stack", "targetId": arn}]}),
    )
    .await;
    let ci = t
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "at", "containerInstances": [arn]}),
        )
        .await;
    let names: Vec<&str> = ci["containerInstances"][0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ecs.os-type"]);
    t.stop().await;
}
