//! Fleet-scale long-poll test, in its own test binary (so its own process):
//! hundreds of held polls, and a RunTask must wake exactly the instances it
//! placed tasks on. Kept apart from `api.rs` because, sharing one process with
//! that binary's parallel tests, the connection burst was more likely to
//! overflow the accept queue.

mod common;

use std::time::{Duration, Instant};

use common::{setup_cluster, TestCoord};
use serde_json::json;

/// Hundreds of agents long-polling at once: a RunTask wakes exactly the polls
/// of the instances it placed tasks on, promptly, and the rest stay held.
#[tokio::test]
async fn many_held_polls_wake_only_where_tasks_land() {
    const AGENTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let t = TestCoord::start(dir.path()).await;
    setup_cluster(&t, "fleet", 64).await;
    let act = t
        .aws(
            "AmazonSSM.CreateActivation",
            &json!({"IamRole": "berth", "RegistrationLimit": 1000}),
        )
        .await;
    let mut auths = Vec::new();
    for i in 0..AGENTS {
        let reg = t
            .channel(
                berth_api::REGISTER_PATH,
                None,
                &json!({
                    "activationId": act.body["ActivationId"],
                    "activationCode": act.body["ActivationCode"],
                    "cluster": "fleet", "hostname": format!("h{i}"),
                    "resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                                  {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
                    "attributes": [], "agentVersion": "t",
                }),
            )
            .await;
        assert_eq!(reg.status, 200, "{}", reg.body);
        auths.push(format!(
            "{}:{}",
            reg.body["instanceId"].as_str().unwrap(),
            reg.body["secret"].as_str().unwrap()
        ));
    }
    let t = std::sync::Arc::new(t);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, auth) in auths.into_iter().enumerate() {
        // Open the polls in bursts of 50, 20 ms apart: 300 connects in the
        // same instant overflow loopback's accept queue on this 2-core host
        // (the kernel then resets some), which is a property of the test's
        // one-process burst, not of the coordinator; all 300 are held long
        // before the RunTask below.
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = t.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            // Registration left every instance at desired version 1.
            let r = t.poll(&auth, 1, 8000).await;
            let _ = done_tx.send((r, Instant::now()));
        });
    }
    drop(done_tx);
    // Let every poll reach the coordinator and be held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    let run = t
        .ok(
            "RunTask",
            json!({"cluster": "fleet", "taskDefinition": "app", "count": 10,
                   "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
    assert_eq!(run["tasks"].as_array().unwrap().len(), 10);
    // The ten woken polls arrive first, each carrying its one task.
    let mut woken = 0;
    while woken < 10 {
        let (r, at) = tokio::time::timeout(Duration::from_secs(5), done_rx.recv())
            .await
            .expect("a woken poll")
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["changed"], true, "an unaffected poll returned early");
        assert_eq!(r.body["tasks"].as_array().unwrap().len(), 1);
        assert!(at.duration_since(sent) < Duration::from_secs(2));
        woken += 1;
    }
    // The others are answered "no change" only when their wait ends.
    let mut unchanged = 0;
    while let Some((r, at)) = done_rx.recv().await {
        assert_eq!(r.body["changed"], false);
        assert!(at.duration_since(sent) > Duration::from_secs(4));
        unchanged += 1;
    }
    assert_eq!(unchanged, AGENTS - 10);
    let mut t = std::sync::Arc::try_unwrap(t).ok().unwrap();
    t.stop().await;
}
