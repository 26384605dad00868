//! Test support: an in-process coordinator on 127.0.0.1:0 with a temp data
//! dir, a minimal HTTP/1.1 client, and SigV4 signing with `aws-sigv4` (what
//! the AWS SDKs use).

#![allow(dead_code)]

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use berth_coordinator::{AccessKey, Config, Coordinator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const REGION: &str = "us-east-1";
pub const ECS: &str = "AmazonEC2ContainerServiceV20141113.";

pub struct TestCoord {
    pub coord: Option<Coordinator>,
    pub addr: String,
    pub key: AccessKey,
    pub dir: std::path::PathBuf,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl TestCoord {
    pub async fn start(dir: &std::path::Path) -> TestCoord {
        Self::start_with(dir, |_| {}).await
    }

    /// `start` with the test's changes to the configuration.
    pub async fn start_with(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> TestCoord {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::new(dir);
        config.seed = Some(7);
        tweak(&mut config);
        let coord = Coordinator::start(config, listener).await.unwrap();
        TestCoord {
            addr: coord.local_addr().to_string(),
            key: coord.credentials().clone(),
            coord: Some(coord),
            dir: dir.to_path_buf(),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(c) = self.coord.take() {
            c.shutdown().await;
        }
    }

    /// Signed AWS JSON call; `target` is the full X-Amz-Target.
    pub async fn aws(&self, target: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).unwrap();
        let service = if target.starts_with("AmazonSSM.") {
            "ssm"
        } else {
            "ecs"
        };
        let headers = signed_headers(&self.addr, target, &bytes, &self.key, service);
        raw(&self.addr, "/", &headers, &bytes).await
    }

    pub async fn ecs(&self, action: &str, body: Value) -> Resp {
        self.aws(&format!("{ECS}{action}"), &body).await
    }

    /// `ecs()` that must succeed.
    pub async fn ok(&self, action: &str, body: Value) -> Value {
        let r = self.ecs(action, body).await;
        assert_eq!(r.status, 200, "{action}: {}", r.body);
        r.body
    }

    pub async fn channel(&self, path: &str, auth: Option<&str>, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).unwrap();
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(a) = auth {
            headers.push((berth_api::INSTANCE_AUTH_HEADER.to_string(), a.to_string()));
        }
        raw(&self.addr, path, &headers, &bytes).await
    }

    /// One agent-channel long-poll as instance `auth` (`mi-id:secret`).
    pub async fn poll(&self, auth: &str, known_version: u64, wait_ms: u64) -> Resp {
        self.channel(
            berth_api::POLL_PATH,
            Some(auth),
            &json!({"knownVersion": known_version, "waitMs": wait_ms}),
        )
        .await
    }

    /// Creates an activation and registers an instance with the given CPU and
    /// memory; returns (`mi-` id, auth header value, container instance ARN).
    pub async fn register_instance(
        &self,
        cluster: &str,
        cpu: i64,
        mem: i64,
        ports: &[&str],
    ) -> (String, String, String) {
        self.register_instance_with(cluster, cpu, mem, ports, &[])
            .await
    }

    /// `register_instance` with extra attributes (`name`, `value`).
    pub async fn register_instance_with(
        &self,
        cluster: &str,
        cpu: i64,
        mem: i64,
        ports: &[&str],
        attributes: &[(&str, &str)],
    ) -> (String, String, String) {
        let mut attrs = vec![json!({"name": "ecs.os-type", "value": "linux"})];
        attrs.extend(
            attributes
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v})),
        );
        let act = self
            .aws("AmazonSSM.CreateActivation", &json!({"IamRole": "berth"}))
            .await;
        assert_eq!(act.status, 200, "{}", act.body);
        let reg = self
            .channel(
                berth_api::REGISTER_PATH,
                None,
                &json!({
                    "activationId": act.body["ActivationId"],
                    "activationCode": act.body["ActivationCode"],
                    "cluster": cluster,
                    "hostname": "host",
                    "resources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": mem},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ports},
                    ],
                    "attributes": attrs,
                    "agentVersion": "test",
                }),
            )
            .await;
        assert_eq!(reg.status, 200, "{}", reg.body);
        let mi = reg.body["instanceId"].as_str().unwrap().to_string();
        let auth = format!("{}:{}", mi, reg.body["secret"].as_str().unwrap());
        let arn = reg.body["containerInstanceArn"]
            .as_str()
            .unwrap()
            .to_string();
        (mi, auth, arn)
    }
}

pub fn signed_headers(
    addr: &str,
    target: &str,
    body: &[u8],
    key: &AccessKey,
    service: &str,
) -> Vec<(String, String)> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/"))
        .header("host", addr)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .body(body.to_vec())
        .unwrap();
    let identity = Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.clone(),
        None,
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{addr}/"),
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut req);
    req.headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

/// One HTTP/1.1 POST on a fresh connection; reads until the server closes.
/// Status 0 means no answer (connection refused or cut).
pub async fn raw(addr: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return Resp {
            status: 0,
            body: Value::Null,
        };
    };
    let mut head = format!("POST {path} HTTP/1.1\r\n");
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_host {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let _ = s.write_all(head.as_bytes()).await;
    // The server may answer (413) and close before taking the whole body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let body = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    Resp { status, body }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// Creates `cluster` and registers family `app` with one container of
/// `memory` MiB.
pub async fn setup_cluster(t: &TestCoord, cluster: &str, memory: u32) {
    t.ok("CreateCluster", json!({"clusterName": cluster})).await;
    t.ok(
        "RegisterTaskDefinition",
        json!({"family": "app", "containerDefinitions": [
            {"name": "c", "image": "busybox", "memory": memory}
        ]}),
    )
    .await;
}
