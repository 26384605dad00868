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

/// SIGTERM: held long-polls are answered at once, the process exits 0, and the
/// final snapshot means the next start replays nothing. Readiness is sent to
/// NOTIFY_SOCKET (systemd `Type=notify`).
#[tokio::test]
async fn sigterm_is_graceful_and_ready_is_notified() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let data = dir.path().join("data");
    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");

    let key =
        credentials::parse(&std::fs::read_to_string(data.join("credentials")).unwrap()).unwrap();
    let body = serde_json::to_vec(&json!({"IamRole": "r"})).unwrap();
    let headers = signed_headers(&addr, "AmazonSSM.CreateActivation", &body, &key, "ssm");
    let act = raw(&addr, "/", &headers, &body).await;
    assert_eq!(act.status, 200, "{}", act.body);
    let create = serde_json::to_vec(&json!({"clusterName": "g"})).unwrap();
    let headers = signed_headers(&addr, &format!("{ECS}CreateCluster"), &create, &key, "ecs");
    assert_eq!(raw(&addr, "/", &headers, &create).await.status, 200);
    let reg = json!({
        "activationId": act.body["ActivationId"], "activationCode": act.body["ActivationCode"],
        "cluster": "g", "hostname": "h", "resources": [], "attributes": [], "agentVersion": "t"
    });
    let reg_body = serde_json::to_vec(&reg).unwrap();
    let r = raw(&addr, berth_api::REGISTER_PATH, &[], &reg_body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = format!(
        "{}:{}",
        r.body["instanceId"].as_str().unwrap(),
        r.body["secret"].as_str().unwrap()
    );
    let poll = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let body = serde_json::to_vec(&json!({"knownVersion": 1, "waitMs": 20000})).unwrap();
            let started = std::time::Instant::now();
            let headers = vec![(berth_api::INSTANCE_AUTH_HEADER.to_string(), auth)];
            let resp = raw(&addr, berth_api::POLL_PATH, &headers, &body).await;
            (resp, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let (resp, held) = poll.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["changed"], false);
    assert!(
        held < Duration::from_secs(5),
        "poll held {held:?} after SIGTERM"
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    // Restart: everything is in the snapshot, nothing to replay.
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next_line().await.unwrap().unwrap();
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    let recovered = log
        .lines()
        .find(|l| l.contains("state recovered"))
        .unwrap_or_default();
    assert!(recovered.contains("replayed=0"), "{log}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
