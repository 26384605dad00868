//! Durability under `kill -9`: the real binary is killed while a client is
//! creating clusters one by one; after a restart every acknowledged cluster is
//! there, and the store opens cleanly (nothing half-written).

mod common;

use std::process::Stdio;
use std::time::Duration;

use berth_coordinator::credentials;
use common::{raw, signed_headers, ECS};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn spawn(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    (child, addr)
}

async fn create(addr: &str, key: &berth_coordinator::AccessKey, name: &str) -> u16 {
    let body = serde_json::to_vec(&json!({"clusterName": name})).unwrap();
    let headers = signed_headers(addr, &format!("{ECS}CreateCluster"), &body, key, "ecs");
    raw(addr, "/", &headers, &body).await.status
}

#[tokio::test]
async fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(dir.path()).await;
    let text = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    let key = credentials::parse(&text).unwrap();

    let writer = {
        let addr = addr.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut acked = vec![];
            for i in 0..100_000 {
                let name = format!("k{i}");
                if create(&addr, &key, &name).await == 200 {
                    acked.push(name);
                } else {
                    break;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SIGKILL, recorded PID of the child we started.
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 5,
        "only {} writes before the kill",
        acked.len()
    );

    let (mut child, addr) = spawn(dir.path()).await;
    let mut listed = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 100});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let headers = signed_headers(&addr, &format!("{ECS}ListClusters"), &bytes, &key, "ecs");
        let r = raw(&addr, "/", &headers, &bytes).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for a in r.body["clusterArns"].as_array().unwrap() {
            listed.push(a.as_str().unwrap().rsplit('/').next().unwrap().to_string());
        }
        match r.body["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    for name in &acked {
        assert!(listed.contains(name), "acknowledged cluster {name} lost");
    }
    // At most the one in-flight request may have committed without its answer.
    assert!(listed.len() <= acked.len() + 1);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
