//! Container health checks through the coordinator: a task definition's
//! `healthCheck` reaches the agent in its poll, and the health an agent
//! reports shows as container and task `healthStatus` in DescribeTasks
//! (ECS's rule: only essential containers with a check count).

mod common;

use common::TestCoord;
use serde_json::{json, Value};

fn health_of(task: &Value) -> (String, Vec<(String, String)>) {
    let containers = task["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["healthStatus"]
                    .as_str()
                    .expect("healthStatus")
                    .to_string(),
            )
        })
        .collect();
    (
        task["healthStatus"]
            .as_str()
            .expect("task healthStatus")
            .to_string(),
        containers,
    )
}

async fn describe(t: &TestCoord, arn: &str) -> (String, Vec<(String, String)>) {
    let d = t
        .ok("DescribeTasks", json!({"cluster": "hc", "tasks": [arn]}))
        .await;
    health_of(&d["tasks"][0])
}

#[tokio::test]
async fn reported_health_shows_in_describe_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "hc"})).await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "app", "containerDefinitions": [
            {"name": "web", "image": "busybox", "memory": 32,
             "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ok"],
                             "interval": 5, "timeout": 2, "retries": 2}},
            {"name": "side", "image": "busybox", "memory": 32},
            {"name": "aux", "image": "busybox", "memory": 32, "essential": false,
             "healthCheck": {"command": ["CMD", "true"]}}
        ]}),
    )
    .await;
    let (_, auth, _) = t.register_instance("hc", 1024, 1024, &[]).await;
    let run = t
        .ok("RunTask", json!({"cluster": "hc", "taskDefinition": "app"}))
        .await;
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();

    // The agent receives the check with the definition's field names.
    let poll = t.poll(&auth, 0, 0).await;
    assert_eq!(poll.status, 200, "{}", poll.body);
    let web = &poll.body["tasks"][0]["containers"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(
        web["healthCheck"],
        json!({"command": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 5, "timeout": 2, "retries": 2}),
        "{web}"
    );

    let names = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // Nothing reported yet: everything UNKNOWN.
    assert_eq!(
        describe(&t, &arn).await,
        (
            "UNKNOWN".to_string(),
            names(&[("web", "UNKNOWN"), ("side", "UNKNOWN"), ("aux", "UNKNOWN")])
        )
    );

    let report = |seq: u64, web: &str, aux: &str| {
        json!({"seq": seq, "tasks": [{"taskArn": arn, "lastStatus": "RUNNING", "startedAt": 1.5,
        "containers": [
            {"name": "web", "lastStatus": "RUNNING", "healthStatus": web},
            {"name": "side", "lastStatus": "RUNNING"},
            {"name": "aux", "lastStatus": "RUNNING", "healthStatus": aux}
        ]}]})
    };
    // (web, aux) as reported → expected task health. A non-essential
    // container's health never decides the task's.
    let cases = [
        (1, "UNKNOWN", "HEALTHY", "UNKNOWN"),
        (2, "HEALTHY", "UNHEALTHY", "HEALTHY"),
        (3, "UNHEALTHY", "HEALTHY", "UNHEALTHY"),
        (4, "HEALTHY", "HEALTHY", "HEALTHY"),
    ];
    for (seq, web, aux, task) in cases {
        let ack = t
            .channel(berth_api::REPORT_PATH, Some(&auth), &report(seq, web, aux))
            .await;
        assert_eq!(ack.status, 200, "{}", ack.body);
        assert_eq!(
            describe(&t, &arn).await,
            (
                task.to_string(),
                names(&[("web", web), ("side", "UNKNOWN"), ("aux", aux)])
            ),
            "report {seq}"
        );
    }

    // A report without health (an older agent) keeps the last known one,
    // and it survives a coordinator restart.
    let plain = json!({"seq": 5, "tasks": [{"taskArn": arn, "lastStatus": "RUNNING",
        "containers": [{"name": "web", "lastStatus": "RUNNING"}]}]});
    t.channel(berth_api::REPORT_PATH, Some(&auth), &plain).await;
    t.stop().await;
    let t = TestCoord::start(dir.path()).await;
    assert_eq!(
        describe(&t, &arn).await,
        (
            "HEALTHY".to_string(),
            names(&[("web", "HEALTHY"), ("side", "UNKNOWN"), ("aux", "HEALTHY")])
        )
    );
}
