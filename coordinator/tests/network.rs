//! In-process coordinator tests over real HTTP for task networking: bridge
//! dynamic host ports (poll spec, DescribeTasks networkBindings, remaining
//! PORTS) and awsvpc addresses (poll `awsvpc`, DescribeTasks attachments and
//! networkInterfaces, networkConfiguration errors), and that both survive a
//! restart.

mod common;

use std::collections::BTreeSet;

use common::TestCoord;
use serde_json::{json, Value};

async fn poll_tasks(t: &TestCoord, auth: &str) -> Vec<Value> {
    let r = t.poll(auth, 0, 0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["tasks"].as_array().unwrap().clone()
}

fn remaining_ports(ci: &Value) -> BTreeSet<String> {
    ci["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "PORTS")
        .unwrap()["stringSetValue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn bridge_dynamic_ports_and_awsvpc_addresses_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "net"})).await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "networkMode": "bridge", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 16,
             "portMappings": [{"containerPort": 80}, {"containerPort": 8443, "hostPort": 0}]}
        ]}),
    )
    .await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "vpc", "networkMode": "awsvpc", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 16}
        ]}),
    )
    .await;
    let (_, auth, arn) = t.register_instance("net", 1024, 1024, &["22"]).await;

    // Bridge: two tasks, four distinct dynamic host ports.
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "net", "taskDefinition": "web", "count": 2}),
        )
        .await;
    assert_eq!(run["failures"], json!([]), "{run}");
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    // Not shown before the container runs, as ECS.
    assert_eq!(
        run["tasks"][0]["containers"][0]["networkBindings"],
        json!([])
    );
    let specs = poll_tasks(&t, &auth).await;
    let mut host_ports = BTreeSet::new();
    for s in &specs {
        let reserved = s["reservedPorts"].as_array().unwrap();
        assert_eq!(reserved.len(), 2, "{s}");
        for (r, m) in reserved
            .iter()
            .zip(s["containers"][0]["portMappings"].as_array().unwrap())
        {
            let hp = r["hostPort"].as_u64().unwrap();
            assert!((49153..=65535).contains(&hp), "{s}");
            assert_eq!(r, m, "spec mapping carries the chosen port");
            host_ports.insert(hp.to_string());
        }
        assert!(s.get("awsvpc").is_none());
    }
    assert_eq!(host_ports.len(), 4, "{host_ports:?}");
    let ci = t
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "net", "containerInstances": [arn]}),
        )
        .await;
    let rem = remaining_ports(&ci["containerInstances"][0]);
    assert!(host_ports.is_subset(&rem) && rem.contains("22"), "{rem:?}");

    // Once RUNNING, DescribeTasks shows the bindings.
    let report = json!({"seq": 1, "tasks": [{"taskArn": arns[0], "lastStatus": "RUNNING",
        "containers": [{"name": "c", "lastStatus": "RUNNING", "runtimeId": "rt"}]}]});
    let ack = t
        .channel(berth_api::REPORT_PATH, Some(&auth), &report)
        .await;
    assert_eq!(ack.status, 200, "{}", ack.body);
    let d = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "net", "tasks": [arns[0]]}),
        )
        .await;
    let bindings = d["tasks"][0]["containers"][0]["networkBindings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(bindings.len(), 2, "{d}");
    assert_eq!(bindings[0]["bindIP"], "0.0.0.0");
    assert_eq!(bindings[0]["containerPort"], 80);
    assert_eq!(bindings[0]["protocol"], "tcp");
    assert!(host_ports.contains(&bindings[0]["hostPort"].to_string()));

    // awsvpc: networkConfiguration rules, then an allocated interface.
    let missing = t
        .ecs(
            "RunTask",
            json!({"cluster": "net", "taskDefinition": "vpc"}),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["__type"], "InvalidParameterException");
    let wrong = t
        .ecs(
            "RunTask",
            json!({"cluster": "net", "taskDefinition": "web",
                   "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s"]}}}),
        )
        .await;
    assert_eq!(
        wrong.body["__type"], "InvalidParameterException",
        "{}",
        wrong.body
    );
    let too_many = t
        .ecs(
            "RunTask",
            json!({"cluster": "net", "taskDefinition": "vpc",
                   "networkConfiguration": {"awsvpcConfiguration": {
                       "subnets": (0..17).map(|i| format!("s{i}")).collect::<Vec<_>>()}}}),
        )
        .await;
    assert_eq!(too_many.body["__type"], "InvalidParameterException");

    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "net", "taskDefinition": "vpc", "count": 3,
                   "networkConfiguration": {"awsvpcConfiguration": {
                       "subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                       "assignPublicIp": "DISABLED"}}}),
        )
        .await;
    assert_eq!(run["failures"], json!([]), "{run}");
    let vpc_arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    let mut ips = BTreeSet::new();
    for task in run["tasks"].as_array().unwrap() {
        let att = &task["attachments"][0];
        assert_eq!(att["type"], "ElasticNetworkInterface");
        assert_eq!(att["status"], "PRECREATED");
        let detail = |name: &str| -> String {
            att["details"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == name)
                .unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(detail("subnetId"), "subnet-1");
        assert!(detail("networkInterfaceId").starts_with("eni-"));
        assert!(detail("macAddress").starts_with("02:"));
        let ip = detail("privateIPv4Address");
        assert!(ip.starts_with("10.199."), "{ip}");
        let ni = &task["containers"][0]["networkInterfaces"][0];
        assert_eq!(ni["attachmentId"], att["id"]);
        assert_eq!(ni["privateIpv4Address"], ip.as_str());
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 3);
    let specs = poll_tasks(&t, &auth).await;
    let wire: BTreeSet<String> = specs
        .iter()
        .filter_map(|s| {
            let a: berth_api::AwsvpcAttachment =
                serde_json::from_value(s.get("awsvpc")?.clone()).unwrap();
            assert_eq!(a.prefix_len, 16);
            assert_eq!(a.gateway.as_deref(), Some("10.199.0.1"));
            Some(a.ip)
        })
        .collect();
    assert_eq!(wire, ips);

    // The membership view: both instances, the second with its underlay address.
    let act = t
        .aws("AmazonSSM.CreateActivation", &json!({"IamRole": "berth"}))
        .await;
    let reg = t
        .channel(
            berth_api::REGISTER_PATH,
            None,
            &json!({
                "activationId": act.body["ActivationId"],
                "activationCode": act.body["ActivationCode"],
                "cluster": "net", "hostname": "h2",
                "resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                              {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
                "attributes": [{"name": berth_api::UNDERLAY_IP_ATTRIBUTE, "value": "127.0.0.2"}],
                "agentVersion": "t",
            }),
        )
        .await;
    assert_eq!(reg.status, 200, "{}", reg.body);
    let second = reg.body["instanceId"].as_str().unwrap().to_string();
    let r = t.poll(&auth, 0, 0).await;
    let net: berth_api::AwsvpcNetwork =
        serde_json::from_value(r.body["awsvpcNetwork"].clone()).unwrap();
    assert_eq!(net.cidr, "10.199.0.0/16");
    assert_eq!(net.gateway, "10.199.0.1");
    assert_eq!(net.members.len(), 2);
    let me = net
        .members
        .iter()
        .find(|m| m.instance_id != second)
        .unwrap();
    let other = net
        .members
        .iter()
        .find(|m| m.instance_id == second)
        .unwrap();
    assert_eq!(me.underlay_ip, None);
    assert_eq!(other.underlay_ip.as_deref(), Some("127.0.0.2"));
    assert!(other.endpoints.is_empty());
    let endpoint_ips: BTreeSet<String> = me.endpoints.iter().map(|e| e.ip.clone()).collect();
    assert_eq!(endpoint_ips, ips);
    // The agent's own type still reads the answer (the field is extra to it).
    let r = t.poll(&auth, 0, 0).await;
    let typed: berth_api::PollResponse = serde_json::from_value(r.body).unwrap();
    assert_eq!(typed.tasks.len(), 5);

    // A restart replays every allocation exactly.
    let before = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "net", "tasks": [arns[1], vpc_arns[0], vpc_arns[2]]}),
        )
        .await;
    t.stop().await;
    let mut t = TestCoord::start(dir.path()).await;
    let after = t
        .ok(
            "DescribeTasks",
            json!({"cluster": "net", "tasks": [arns[1], vpc_arns[0], vpc_arns[2]]}),
        )
        .await;
    assert_eq!(before["tasks"], after["tasks"]);
    let specs = poll_tasks(&t, &auth).await;
    assert_eq!(
        specs.iter().filter(|s| s.get("awsvpc").is_some()).count(),
        3
    );
    t.stop().await;
}

/// An awsvpc task placed on one instance, and its stop, wake the long-poll
/// of every other instance in the cluster with the new membership.
#[tokio::test]
async fn awsvpc_membership_changes_wake_other_members() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestCoord::start(dir.path()).await;
    t.ok("CreateCluster", json!({"clusterName": "w"})).await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "vpc", "networkMode": "awsvpc", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": 16}
        ]}),
    )
    .await;
    let (_, _auth_a, arn_a) = t.register_instance("w", 1024, 1024, &[]).await;
    // No memory: nothing is ever placed on B; it only watches.
    let (_, auth_b, _) = t.register_instance("w", 1024, 0, &[]).await;
    let first = t.poll(&auth_b, 0, 0).await;
    let v0 = first.body["version"].as_u64().unwrap();

    let waiting = {
        let auth = auth_b.clone();
        let addr = t.addr.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body = serde_json::to_vec(&json!({"knownVersion": v0, "waitMs": 15000})).unwrap();
            let headers = vec![
                ("content-type".to_string(), "application/json".to_string()),
                (berth_api::INSTANCE_AUTH_HEADER.to_string(), auth),
            ];
            let r = common::raw(&addr, berth_api::POLL_PATH, &headers, &body).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "w", "taskDefinition": "vpc",
                   "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s"]}}}),
        )
        .await;
    assert_eq!(run["tasks"][0]["containerInstanceArn"], arn_a.as_str());
    let (r, waited) = waiting.await.unwrap();
    assert!(
        waited < std::time::Duration::from_secs(5),
        "woken late: {waited:?}"
    );
    assert_eq!(r.body["changed"], true, "{}", r.body);
    let v1 = r.body["version"].as_u64().unwrap();
    assert!(v1 > v0);
    let net: berth_api::AwsvpcNetwork =
        serde_json::from_value(r.body["awsvpcNetwork"].clone()).unwrap();
    let endpoints: Vec<&berth_api::AwsvpcEndpoint> = net
        .members
        .iter()
        .flat_map(|m| m.endpoints.iter())
        .collect();
    assert_eq!(endpoints.len(), 1, "{net:?}");
    assert_eq!(r.body["tasks"], json!([]), "nothing runs on B");

    // Unchanged membership: B's poll with the new version times out unchanged.
    let idle = t.poll(&auth_b, v1, 300).await;
    assert_eq!(idle.body["changed"], false);

    // A leaving (deregistered with its task) is a membership change too.
    t.ok(
        "DeregisterContainerInstance",
        json!({"cluster": "w", "containerInstance": arn_a, "force": true}),
    )
    .await;
    let r = t.poll(&auth_b, v1, 5000).await;
    assert_eq!(r.body["changed"], true, "{}", r.body);
    let net: berth_api::AwsvpcNetwork =
        serde_json::from_value(r.body["awsvpcNetwork"].clone()).unwrap();
    // A's endpoint left with it; B (no underlay address, no awsvpc task)
    // offers peers nothing, so the membership is empty.
    assert!(net.members.is_empty(), "{net:?}");
    t.stop().await;
}
