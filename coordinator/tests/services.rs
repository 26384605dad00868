//! ECS services through the coordinator over real HTTP, with simulated agents
//! made from the agent channel (register, poll, report RUNNING/STOPPED):
//! placement across availability zones, replacement of stopped tasks,
//! rolling deployments within minimumHealthyPercent/maximumPercent, the
//! circuit breaker with rollback, DeleteService, DAEMON services, draining,
//! and services surviving a restart exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::TestCoord;
use serde_json::{json, Value};

/// A simulated agent: plays one container instance's part.
struct Agent {
    auth: String,
    arn: String,
    seq: u64,
    /// Task ARN → last status reported.
    reported: BTreeMap<String, String>,
}

/// What a simulated agent does with a task it is given.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Starts it (RUNNING), stops it when told.
    Run,
    /// It never gets to RUNNING: reported STOPPED (TaskFailedToStart).
    FailToStart,
    /// It runs, but its container's health check reports UNHEALTHY.
    Unhealthy,
}

impl Agent {
    async fn join(t: &TestCoord, cluster: &str, az: &str) -> Agent {
        let (_, auth, arn) = t
            .register_instance_with(
                cluster,
                4096,
                8192,
                &["22"],
                &[("ecs.availability-zone", az)],
            )
            .await;
        Agent {
            auth,
            arn,
            seq: 0,
            reported: BTreeMap::new(),
        }
    }

    /// One round: poll the full desired state and report what changed.
    async fn round(&mut self, t: &TestCoord, behaviour: &dyn Fn(&Value) -> Behaviour) {
        let r = t.poll(&self.auth, 0, 0).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut reports = Vec::new();
        for spec in r.body["tasks"].as_array().cloned().unwrap_or_default() {
            let arn = spec["taskArn"].as_str().unwrap().to_string();
            let last = self.reported.get(&arn).cloned();
            let fails = behaviour(&spec) == Behaviour::FailToStart;
            let want = if spec["desiredStatus"] == "STOPPED" || fails {
                "STOPPED"
            } else {
                "RUNNING"
            };
            if last.as_deref() == Some(want) {
                continue;
            }
            let container = spec["containers"][0]["name"].as_str().unwrap().to_string();
            let mut rep = json!({"taskArn": arn, "lastStatus": want,
                "containers": [{"name": container, "lastStatus": want}]});
            if want == "RUNNING" {
                let health = if behaviour(&spec) == Behaviour::Unhealthy {
                    "UNHEALTHY"
                } else {
                    "HEALTHY"
                };
                rep["containers"][0]["healthStatus"] = json!(health);
            }
            if want == "STOPPED" && spec["desiredStatus"] == "RUNNING" {
                rep["stopCode"] = json!("TaskFailedToStart");
                rep["stoppedReason"] = json!("CannotPullContainerError: simulated");
            }
            reports.push(rep);
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

    /// Reports one task STOPPED as if its essential container exited.
    async fn exit(&mut self, t: &TestCoord, task_arn: &str) {
        self.seq += 1;
        let ack = t
            .channel(
                berth_api::REPORT_PATH,
                Some(&self.auth),
                &json!({"seq": self.seq, "tasks": [{"taskArn": task_arn, "lastStatus": "STOPPED",
                    "stopCode": "EssentialContainerExited",
                    "containers": [{"name": "c", "lastStatus": "STOPPED", "exitCode": 1}]}]}),
            )
            .await;
        assert_eq!(ack.status, 200, "{}", ack.body);
        self.reported.insert(task_arn.to_string(), "STOPPED".into());
    }
}

fn always_run(_: &Value) -> Behaviour {
    Behaviour::Run
}

async fn describe(t: &TestCoord, cluster: &str, name: &str) -> Value {
    let d = t
        .ok(
            "DescribeServices",
            json!({"cluster": cluster, "services": [name], "include": ["TAGS"]}),
        )
        .await;
    d["services"][0].clone()
}

/// Tasks of the service (desired RUNNING), described.
async fn service_tasks(t: &TestCoord, cluster: &str, name: &str) -> Vec<Value> {
    let l = t
        .ok(
            "ListTasks",
            json!({"cluster": cluster, "serviceName": name, "maxResults": 100}),
        )
        .await;
    let arns = l["taskArns"].as_array().unwrap().clone();
    if arns.is_empty() {
        return vec![];
    }
    let d = t
        .ok("DescribeTasks", json!({"cluster": cluster, "tasks": arns}))
        .await;
    d["tasks"].as_array().unwrap().clone()
}

fn steady(s: &Value) -> bool {
    s["deployments"].as_array().map(|d| d.len()) == Some(1)
        && s["runningCount"] == s["desiredCount"]
        && s["pendingCount"] == 0
        && s["deployments"][0]["rolloutState"] == "COMPLETED"
}

/// Plays every agent until `done` holds for the service (bounded).
async fn play_until(
    t: &TestCoord,
    agents: &mut [Agent],
    cluster: &str,
    name: &str,
    behaviour: &dyn Fn(&Value) -> Behaviour,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..300 {
        for a in agents.iter_mut() {
            a.round(t, behaviour).await;
        }
        let s = describe(t, cluster, name).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!(
        "service {name} never reached the expected state: {}",
        describe(t, cluster, name).await
    );
}

fn messages(s: &Value) -> Vec<String> {
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

async fn register_web(t: &TestCoord, revision_note: &str) -> String {
    let r = t
        .ok(
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [
                {"name": "c", "image": "busybox", "memory": 64, "cpu": 10,
                 "environment": [{"name": "NOTE", "value": revision_note}]}]}),
        )
        .await;
    r["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn start(dir: &std::path::Path) -> TestCoord {
    TestCoord::start_with(dir, |c| c.service_settle = Duration::ZERO).await
}

#[tokio::test]
async fn replica_service_places_replaces_deploys_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "svc"})).await;
    let rev1 = register_web(&t, "one").await;
    let mut agents = vec![
        Agent::join(&t, "svc", "az-a").await,
        Agent::join(&t, "svc", "az-b").await,
        Agent::join(&t, "svc", "az-c").await,
    ];
    let created = t
        .ok(
            "CreateService",
            json!({"cluster": "svc", "serviceName": "web", "taskDefinition": "web",
                   "desiredCount": 6,
                   "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200}}),
        )
        .await;
    let s = &created["service"];
    assert_eq!(
        s["serviceArn"],
        "arn:aws:ecs:us-east-1:000000000000:service/svc/web"
    );
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["taskDefinition"], rev1.as_str());
    assert_eq!(s["launchType"], "EXTERNAL");
    assert_eq!(s["schedulingStrategy"], "REPLICA");
    let dep = &s["deployments"][0];
    assert!(dep["id"].as_str().unwrap().starts_with("ecs-svc/"));
    assert_eq!(dep["id"].as_str().unwrap().len(), "ecs-svc/".len() + 19);
    assert_eq!(
        (dep["status"].as_str(), dep["rolloutState"].as_str()),
        (Some("PRIMARY"), Some("IN_PROGRESS"))
    );

    // Six tasks, two per availability zone, started by the deployment.
    let tasks = service_tasks(&t, "svc", "web").await;
    assert_eq!(tasks.len(), 6);
    let mut per_az: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        *per_az
            .entry(task["availabilityZone"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(task["group"], "service:web");
        assert_eq!(task["startedBy"], dep["id"]);
    }
    assert_eq!(
        per_az.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_az:?}"
    );
    let s = play_until(&t, &mut agents, "svc", "web", &always_run, steady).await;
    let msgs = messages(&s);
    assert_eq!(msgs[0], "(service web) has reached a steady state.");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("(service web) has started 6 tasks: (task ")),
        "{msgs:?}"
    );

    // A task that stops is replaced.
    let victim = tasks[0]["taskArn"].as_str().unwrap().to_string();
    let owner = agents
        .iter_mut()
        .find(|a| a.arn == tasks[0]["containerInstanceArn"].as_str().unwrap())
        .unwrap();
    owner.exit(&t, &victim).await;
    let now = service_tasks(&t, "svc", "web").await;
    assert_eq!(now.len(), 6, "replacement placed in the same commit");
    assert!(now.iter().all(|x| x["taskArn"] != victim.as_str()));
    let s = play_until(&t, &mut agents, "svc", "web", &always_run, steady).await;
    assert!(messages(&s)
        .iter()
        .any(|m| m.starts_with("(service web) has started 1 tasks: (task ")));

    // Rolling deployment to revision 2 with 50/200: never below 3 healthy
    // (RUNNING, desired RUNNING) nor above 12 active tasks.
    let rev2 = register_web(&t, "two").await;
    let u = t
        .ok(
            "UpdateService",
            json!({"cluster": "svc", "service": "web", "taskDefinition": "web:2"}),
        )
        .await;
    assert_eq!(u["service"]["deployments"].as_array().unwrap().len(), 2);
    let mut rounds = 0;
    loop {
        let tasks = service_tasks(&t, "svc", "web").await;
        let healthy = tasks
            .iter()
            .filter(|x| x["lastStatus"] == "RUNNING")
            .count();
        let s = describe(&t, "svc", "web").await;
        let active = s["runningCount"].as_u64().unwrap() + s["pendingCount"].as_u64().unwrap();
        assert!(healthy >= 3, "below minimum healthy: {healthy}");
        assert!(active <= 12, "above maximum: {active}");
        if steady(&s) && s["taskDefinition"] == rev2.as_str() {
            assert!(tasks
                .iter()
                .all(|x| x["taskDefinitionArn"] == rev2.as_str()));
            assert_eq!(tasks.len(), 6);
            break;
        }
        rounds += 1;
        assert!(rounds < 300, "deployment never completed: {s}");
        for a in agents.iter_mut() {
            a.round(&t, &always_run).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Draining an instance moves its service tasks and leaves a standalone task.
    let drained = agents[0].arn.clone();
    let standalone = t
        .ok(
            "StartTask",
            json!({"cluster": "svc", "taskDefinition": "web:1", "containerInstances": [drained]}),
        )
        .await;
    let standalone_arn = standalone["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    t.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "svc", "containerInstances": [drained], "status": "DRAINING"}),
    )
    .await;
    play_until(&t, &mut agents, "svc", "web", &always_run, steady).await;
    // Wait for the drained instance's service tasks to be gone.
    for _ in 0..200 {
        let tasks = service_tasks(&t, "svc", "web").await;
        if tasks.len() == 6
            && tasks.iter().all(|x| {
                x["containerInstanceArn"] != drained.as_str() && x["lastStatus"] == "RUNNING"
            })
        {
            break;
        }
        for a in agents.iter_mut() {
            a.round(&t, &always_run).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tasks = service_tasks(&t, "svc", "web").await;
    assert_eq!(tasks.len(), 6);
    assert!(tasks
        .iter()
        .all(|x| x["containerInstanceArn"] != drained.as_str()));
    let d = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "svc", "tasks": [standalone_arn]}),
        )
        .await;
    assert_eq!(
        d["tasks"][0]["desiredStatus"], "RUNNING",
        "standalone task left alone"
    );
    let _ = rev1;
}

#[tokio::test]
async fn circuit_breaker_rolls_back_a_revision_that_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "cb"})).await;
    let good = register_web(&t, "good").await;
    let bad = register_web(&t, "bad").await;
    let mut agents = vec![
        Agent::join(&t, "cb", "az-a").await,
        Agent::join(&t, "cb", "az-b").await,
    ];
    t.ok(
        "CreateService",
        json!({"cluster": "cb", "serviceName": "web", "taskDefinition": good,
               "desiredCount": 4,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    let bad_arn = bad.clone();
    let behaviour = move |spec: &Value| {
        if spec["taskDefinitionArn"] == bad_arn.as_str() {
            Behaviour::FailToStart
        } else {
            Behaviour::Run
        }
    };
    play_until(&t, &mut agents, "cb", "web", &behaviour, steady).await;
    t.ok(
        "UpdateService",
        json!({"cluster": "cb", "service": "web", "taskDefinition": bad}),
    )
    .await;
    let s = play_until(&t, &mut agents, "cb", "web", &behaviour, |s| {
        steady(s) && s["taskDefinition"] == good.as_str()
    })
    .await;
    let msgs = messages(&s);
    assert!(
        msgs.iter()
            .any(|m| m.ends_with("deployment failed: tasks failed to start.")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("(service web) rolling back to deployment ecs-svc/")),
        "{msgs:?}"
    );
    let tasks = service_tasks(&t, "cb", "web").await;
    assert_eq!(tasks.len(), 4);
    assert!(tasks
        .iter()
        .all(|x| x["taskDefinitionArn"] == good.as_str()));
}

#[tokio::test]
async fn delete_daemon_errors_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "d"})).await;
    register_web(&t, "x").await;
    let mut agents = vec![
        Agent::join(&t, "d", "az-a").await,
        Agent::join(&t, "d", "az-b").await,
    ];

    // Errors ECS answers with.
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "CreateService",
            json!({"cluster": "nope", "serviceName": "s", "taskDefinition": "web", "desiredCount": 1}),
            "ClusterNotFoundException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "nope", "desiredCount": 1}),
            "ClientException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "bad name", "taskDefinition": "web", "desiredCount": 1}),
            "InvalidParameterException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web"}),
            "InvalidParameterException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web", "schedulingStrategy": "DAEMON", "desiredCount": 2}),
            "InvalidParameterException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web", "desiredCount": 1, "deploymentConfiguration": {"minimumHealthyPercent": 150}}),
            "InvalidParameterException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web", "desiredCount": 1, "launchType": "FARGATE"}),
            "InvalidParameterException",
        ),
        (
            "CreateService",
            json!({"cluster": "d", "serviceName": "s", "taskDefinition": "web", "desiredCount": 1, "placementConstraints": [{"type": "memberOf", "expression": "attribute:x =="}]}),
            "InvalidParameterException",
        ),
        (
            "UpdateService",
            json!({"cluster": "d", "service": "nope", "desiredCount": 1}),
            "ServiceNotFoundException",
        ),
        (
            "DeleteService",
            json!({"cluster": "d", "service": "nope"}),
            "ServiceNotFoundException",
        ),
        (
            "DescribeServices",
            json!({"cluster": "d", "services": []}),
            "InvalidParameterException",
        ),
    ];
    for (action, body, want) in table {
        let r = t.ecs(action, body.clone()).await;
        assert_eq!(r.status, 400, "{action} {body}: {}", r.body);
        assert_eq!(r.body["__type"], want, "{action} {body}: {}", r.body);
    }
    let missing = t
        .ok(
            "DescribeServices",
            json!({"cluster": "d", "services": ["ghost"]}),
        )
        .await;
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    assert_eq!(
        missing["failures"][0]["arn"],
        "arn:aws:ecs:us-east-1:000000000000:service/d/ghost"
    );

    // DAEMON: one task per ACTIVE instance, including one that joins later.
    t.ok(
        "CreateService",
        json!({"cluster": "d", "serviceName": "mon", "taskDefinition": "web", "schedulingStrategy": "DAEMON"}),
    )
    .await;
    let per_instance = |tasks: &[Value]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for x in tasks {
            *m.entry(x["containerInstanceArn"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    };
    let s = play_until(&t, &mut agents, "d", "mon", &always_run, steady).await;
    assert_eq!(s["desiredCount"], 2);
    let tasks = service_tasks(&t, "d", "mon").await;
    assert_eq!(
        per_instance(&tasks).values().copied().collect::<Vec<_>>(),
        vec![1, 1]
    );
    agents.push(Agent::join(&t, "d", "az-c").await);
    let s = play_until(&t, &mut agents, "d", "mon", &always_run, |s| {
        steady(s) && s["desiredCount"] == 3
    })
    .await;
    assert_eq!(s["runningCount"], 3);
    let late = agents[2].arn.clone();
    assert_eq!(
        per_instance(&service_tasks(&t, "d", "mon").await).get(&late),
        Some(&1)
    );
    // DRAINING: its daemon task goes and none is placed there.
    let drained = agents[0].arn.clone();
    t.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "d", "containerInstances": [drained], "status": "DRAINING"}),
    )
    .await;
    play_until(&t, &mut agents, "d", "mon", &always_run, |s| {
        steady(s) && s["desiredCount"] == 2
    })
    .await;
    let tasks = service_tasks(&t, "d", "mon").await;
    assert!(!per_instance(&tasks).contains_key(&drained), "{tasks:?}");
    assert_eq!(tasks.len(), 2);

    // A REPLICA service, listed with filters and pages.
    t.ok(
        "CreateService",
        json!({"cluster": "d", "serviceName": "api", "taskDefinition": "web", "desiredCount": 2,
               "tags": [{"key": "team", "value": "a"}], "propagateTags": "SERVICE"}),
    )
    .await;
    // The same request again answers the service; different parameters are refused.
    let again = t
        .ok(
            "CreateService",
            json!({"cluster": "d", "serviceName": "api", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
    assert_eq!(again["service"]["serviceName"], "api");
    assert_eq!(again["service"]["deployments"].as_array().unwrap().len(), 1);
    let dup = t
        .ecs(
            "CreateService",
            json!({"cluster": "d", "serviceName": "api", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
    assert_eq!(dup.body["__type"], "InvalidParameterException");
    assert_eq!(
        dup.body["message"],
        "Creation of service was not idempotent."
    );
    let s = play_until(&t, &mut agents, "d", "api", &always_run, steady).await;
    assert_eq!(s["tags"], json!([{"key": "team", "value": "a"}]));
    let tasks = service_tasks(&t, "d", "api").await;
    let td = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "d", "tasks": [tasks[0]["taskArn"]], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        td["tasks"][0]["tags"],
        json!([{"key": "team", "value": "a"}])
    );
    let all = t.ok("ListServices", json!({"cluster": "d"})).await;
    assert_eq!(all["serviceArns"].as_array().unwrap().len(), 2);
    let daemons = t
        .ok(
            "ListServices",
            json!({"cluster": "d", "schedulingStrategy": "DAEMON"}),
        )
        .await;
    assert_eq!(
        daemons["serviceArns"],
        json!(["arn:aws:ecs:us-east-1:000000000000:service/d/mon"])
    );
    let mut seen = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"cluster": "d", "maxResults": 1});
        if let Some(tok) = &token {
            body["nextToken"] = json!(tok);
        }
        let page = t.ok("ListServices", body).await;
        for a in page["serviceArns"].as_array().unwrap() {
            seen.insert(a.as_str().unwrap().to_string());
        }
        match page["nextToken"].as_str() {
            Some(n) => token = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2);
    let c = t.ok("DescribeClusters", json!({"clusters": ["d"]})).await;
    assert_eq!(c["clusters"][0]["activeServicesCount"], 2);

    // Restart: services, deployments and events come back exactly.
    let before: Vec<Value> = vec![
        describe(&t, "d", "api").await,
        describe(&t, "d", "mon").await,
    ];
    t.stop().await;
    let mut t = start(dir.path()).await;
    let after: Vec<Value> = vec![
        describe(&t, "d", "api").await,
        describe(&t, "d", "mon").await,
    ];
    assert_eq!(before, after);

    // DeleteService: refused while scaled up, then force → DRAINING → INACTIVE.
    let refused = t
        .ecs("DeleteService", json!({"cluster": "d", "service": "api"}))
        .await;
    assert_eq!(refused.body["__type"], "InvalidParameterException");
    let del = t
        .ok(
            "DeleteService",
            json!({"cluster": "d", "service": "api", "force": true}),
        )
        .await;
    assert_eq!(del["service"]["status"], "DRAINING");
    assert_eq!(del["service"]["desiredCount"], 0);
    let s = play_until(&t, &mut agents, "d", "api", &always_run, |s| {
        s["status"] == "INACTIVE"
    })
    .await;
    assert_eq!(s["runningCount"], 0);
    let upd = t
        .ecs(
            "UpdateService",
            json!({"cluster": "d", "service": "api", "desiredCount": 1}),
        )
        .await;
    assert_eq!(upd.body["__type"], "ServiceNotActiveException");
    let all = t.ok("ListServices", json!({"cluster": "d"})).await;
    assert_eq!(all["serviceArns"].as_array().unwrap().len(), 1);
    let busy = t.ecs("DeleteCluster", json!({"cluster": "d"})).await;
    assert_eq!(busy.body["__type"], "ClusterContainsServicesException");
    t.stop().await;
}

#[tokio::test]
async fn circuit_breaker_counts_tasks_that_fail_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "hc"})).await;
    let checked = |note: &str| {
        json!({"family": "web", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 64,
             "environment": [{"name": "NOTE", "value": note}],
             "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 5, "retries": 1}}]})
    };
    let good = t.ok("RegisterTaskDefinition", checked("good")).await["taskDefinition"]
        ["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = t.ok("RegisterTaskDefinition", checked("bad")).await["taskDefinition"]
        ["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    let mut agents = vec![Agent::join(&t, "hc", "az-a").await];
    t.ok(
        "CreateService",
        json!({"cluster": "hc", "serviceName": "web", "taskDefinition": good, "desiredCount": 2,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    let bad_arn = bad.clone();
    let behaviour = move |spec: &Value| {
        if spec["taskDefinitionArn"] == bad_arn.as_str() {
            Behaviour::Unhealthy
        } else {
            Behaviour::Run
        }
    };
    // HEALTHY reports make the checked tasks count healthy.
    let s = play_until(&t, &mut agents, "hc", "web", &behaviour, steady).await;
    assert_eq!(s["runningCount"], 2);
    t.ok(
        "UpdateService",
        json!({"cluster": "hc", "service": "web", "taskDefinition": bad}),
    )
    .await;
    let s = play_until(&t, &mut agents, "hc", "web", &behaviour, |s| {
        steady(s) && s["taskDefinition"] == good.as_str()
    })
    .await;
    let msgs = messages(&s);
    assert!(
        msgs.iter()
            .any(|m| m.ends_with("failed container health checks.")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.ends_with("deployment failed: tasks failed to start.")),
        "{msgs:?}"
    );
    let stopped = t
        .ok(
            "ListTasks",
            json!({"cluster": "hc", "serviceName": "web", "desiredStatus": "STOPPED"}),
        )
        .await;
    let d = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "hc", "tasks": stopped["taskArns"]}),
        )
        .await;
    assert!(d["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |x| x["stoppedReason"] == "Task failed container health checks"
                && x["taskDefinitionArn"] == bad.as_str()
        ));
}

#[tokio::test]
async fn a_large_service_is_placed_in_steps_of_at_most_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "big"})).await;
    let mut agents = Vec::new();
    for az in ["a", "b", "c", "a", "b"] {
        agents.push(Agent::join(&t, "big", az).await);
    }
    register_web(&t, "one").await;
    t.ok(
        "CreateService",
        json!({"cluster": "big", "serviceName": "wide", "taskDefinition": "web",
               "desiredCount": 600}),
    )
    .await;
    // Every task is placed without any agent reporting (the state owner
    // steps the service again by itself: `state` tests show that alone).
    let mut s = describe(&t, "big", "wide").await;
    for _ in 0..100 {
        if s["pendingCount"] == 600 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = describe(&t, "big", "wide").await;
    }
    assert_eq!(s["pendingCount"], 600, "{s}");
    let started: Vec<u32> = messages(&s)
        .iter()
        .filter_map(|m| m.strip_prefix("(service wide) has started "))
        .filter_map(|m| m.split(' ').next()?.parse().ok())
        .collect();
    let cap = berth_coordinator::service::LAUNCHES_PER_STEP;
    assert_eq!(started.iter().sum::<u32>(), 600, "{started:?}");
    assert!(started.iter().all(|n| *n <= cap), "{started:?}");
    assert!(started.len() >= 3, "{started:?}");
    // Nothing overcommitted: every agent holds at most what fits.
    for a in &agents {
        let r = t.poll(&a.auth, 0, 0).await;
        let n = r.body["tasks"].as_array().map_or(0, |v| v.len());
        assert!(n <= 128, "{} tasks on one 8 GiB agent", n);
    }
}
