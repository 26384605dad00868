//! `berth-simagents`: the fleet-scale load tool. It registers N simulated
//! container instances to one coordinator over the real agent channel
//! (activations created through the signed SSM API), plays each agent
//! (long-poll with the known version; desired RUNNING → report RUNNING after a
//! small delay, desired STOPPED → report STOPPED, per-instance report `seq` as
//! the real agent keeps it), and optionally drives RunTask from several
//! concurrent clients while creating REPLICA services with the same
//! placement rules, then prints one JSON line of measurements: RunTask
//! latency, placements per second (RunTask and service tasks together, up
//! to the last task's `createdAt`), and "desired state to agent" latency
//! (task `createdAt` as the coordinator committed it → first poll answer
//! carrying the task, on the same machine's clock; service tasks'
//! `createdAt` is read back with ListTasks/DescribeTasks afterwards).
//!
//! Pure parts (what an agent reports for a desired state, percentiles) are
//! in `sim` below with table tests; everything else is I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use berth_api::{PollRequest, PollResponse, RegisterResponse, StateReport};
use berth_coordinator::AccessKey;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "berth-simagents",
    about = "Simulated Berth agents and a RunTask load driver"
)]
struct Args {
    /// Coordinator address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    coordinator: String,
    /// Number of simulated container instances.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Shared-credentials file with the admin keys (DATA_DIR/credentials).
    #[arg(long)]
    credentials: PathBuf,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// CPU units and MiB each instance registers.
    #[arg(long, default_value_t = 4096)]
    cpu: i64,
    #[arg(long, default_value_t = 16384)]
    memory: i64,
    /// Delay between receiving a task and reporting it RUNNING.
    #[arg(long, default_value_t = 5)]
    run_delay_ms: u64,
    /// Concurrent registrations.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// Tasks to place with RunTask after every agent polls (0: only play agents
    /// until SIGINT/--hold-secs).
    #[arg(long, default_value_t = 0)]
    tasks: usize,
    /// `count` of each RunTask call.
    #[arg(long, default_value_t = 10)]
    per_call: usize,
    /// Concurrent RunTask clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Task definition family to register and run.
    #[arg(long, default_value = "simbench")]
    family: String,
    /// Task memory (MiB) and cpu of the registered task definition.
    #[arg(long, default_value_t = 512)]
    task_memory: u32,
    #[arg(long, default_value_t = 128)]
    task_cpu: u32,
    /// memberOf expression for RunTask ("" for none).
    #[arg(long, default_value = "attribute:bench.tier == gold")]
    member_of: String,
    /// Every Nth instance gets `bench.tier=bronze` (others `gold`); 0: all gold.
    #[arg(long, default_value_t = 10)]
    bronze_every: usize,
    /// How long to wait for every placed task to reach its agent.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,
    /// With --tasks 0: how long to play the agents before exiting.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// REPLICA services created (with the same placement rules as RunTask)
    /// while the RunTask clients run.
    #[arg(long, default_value_t = 0)]
    services: usize,
    /// desiredCount of each service.
    #[arg(long, default_value_t = 0)]
    service_tasks: usize,
}

mod sim {
    //! Pure decisions of a simulated agent, and statistics.
    use std::collections::HashMap;

    use berth_api::{DesiredStatus, TaskSpec, TaskStatus};

    /// What one simulated agent holds for a task.
    pub type Local = HashMap<String, TaskStatus>;

    /// The reports an agent sends for a full desired state, as the real agent
    /// would once its runtime converged: a desired-RUNNING task it does not yet
    /// run is reported RUNNING; a desired-STOPPED task it has not reported
    /// STOPPED is reported STOPPED. Tasks the desired state no longer lists are
    /// forgotten (the coordinator saw them STOPPED).
    pub fn reports(local: &Local, desired: &[TaskSpec]) -> Vec<(String, TaskStatus)> {
        let mut out = Vec::new();
        for t in desired {
            let have = local.get(&t.task_arn).copied();
            let want = match t.desired_status {
                DesiredStatus::Running => TaskStatus::Running,
                DesiredStatus::Stopped => TaskStatus::Stopped,
            };
            let moves = match have {
                None => true,
                Some(h) => h < want,
            };
            if moves {
                out.push((t.task_arn.clone(), want));
            }
        }
        out
    }

    /// Drops tasks the desired state no longer lists.
    pub fn forget_missing(local: &mut Local, desired: &[TaskSpec]) {
        local.retain(|arn, _| desired.iter().any(|t| &t.task_arn == arn));
    }

    /// Nearest-rank percentile of `values` (p in 0..=100); None when empty.
    pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(|a, b| a.total_cmp(b));
        let n = values.len() as f64;
        let rank = ((p / 100.0) * n).ceil().max(1.0) as usize;
        values.get(rank.min(values.len()) - 1).copied()
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use berth_api::TaskSpec;

        fn spec(arn: &str, d: DesiredStatus) -> TaskSpec {
            TaskSpec {
                task_arn: arn.into(),
                cluster_arn: "c".into(),
                task_definition_arn: "td".into(),
                family: "f".into(),
                revision: 1,
                desired_status: d,
                network_mode: "host".into(),
                stop_reason: None,
                stop_code: None,
                containers: vec![],
                reserved_ports: vec![],
                awsvpc: None,
            }
        }

        #[test]
        #[allow(clippy::type_complexity)] // test table
        fn reports_table() {
            use DesiredStatus as D;
            use TaskStatus as S;
            let cases: Vec<(&str, Vec<(&str, S)>, Vec<TaskSpec>, Vec<(&str, S)>)> = vec![
                ("nothing", vec![], vec![], vec![]),
                (
                    "new task starts",
                    vec![],
                    vec![spec("a", D::Running)],
                    vec![("a", S::Running)],
                ),
                (
                    "running stays quiet",
                    vec![("a", S::Running)],
                    vec![spec("a", D::Running)],
                    vec![],
                ),
                (
                    "stop a running task",
                    vec![("a", S::Running)],
                    vec![spec("a", D::Stopped)],
                    vec![("a", S::Stopped)],
                ),
                (
                    "stop a never-started task",
                    vec![],
                    vec![spec("a", D::Stopped)],
                    vec![("a", S::Stopped)],
                ),
                (
                    "stopped stays quiet",
                    vec![("a", S::Stopped)],
                    vec![spec("a", D::Stopped)],
                    vec![],
                ),
                (
                    "mixed",
                    vec![("a", S::Running), ("b", S::Running)],
                    vec![
                        spec("a", D::Running),
                        spec("b", D::Stopped),
                        spec("c", D::Running),
                    ],
                    vec![("b", S::Stopped), ("c", S::Running)],
                ),
            ];
            for (name, local, desired, want) in cases {
                let local: Local = local.into_iter().map(|(a, s)| (a.to_string(), s)).collect();
                let got = reports(&local, &desired);
                let want: Vec<(String, S)> =
                    want.into_iter().map(|(a, s)| (a.to_string(), s)).collect();
                assert_eq!(got, want, "{name}");
            }
        }

        #[test]
        fn forget_drops_unlisted() {
            let mut local: Local = [
                ("a".to_string(), TaskStatus::Stopped),
                ("b".to_string(), TaskStatus::Running),
            ]
            .into_iter()
            .collect();
            forget_missing(&mut local, &[spec("b", DesiredStatus::Running)]);
            assert_eq!(local.len(), 1);
            assert!(local.contains_key("b"));
        }

        #[test]
        fn percentile_table() {
            let cases: Vec<(Vec<f64>, f64, Option<f64>)> = vec![
                (vec![], 50.0, None),
                (vec![3.0], 99.0, Some(3.0)),
                (vec![4.0, 1.0, 3.0, 2.0], 50.0, Some(2.0)),
                (vec![4.0, 1.0, 3.0, 2.0], 99.0, Some(4.0)),
                ((1..=100).map(f64::from).collect(), 99.0, Some(99.0)),
                ((1..=100).map(f64::from).collect(), 0.0, Some(1.0)),
            ];
            for (mut v, p, want) in cases {
                assert_eq!(percentile(&mut v, p), want, "p{p} of {v:?}");
            }
        }
    }
}

/// One HTTP/1.1 keep-alive connection, reopened when it breaks.
struct Conn {
    addr: SocketAddr,
    host: String,
    tx: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            host: addr.to_string(),
            tx: None,
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.tx = Some(tx);
        }
        self.tx.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    /// POSTs `body` to `path`; answers status and body. `retry` resends once
    /// on a broken connection (for idempotent calls).
    async fn post(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        retry: bool,
    ) -> anyhow::Result<(u16, Bytes)> {
        let attempts = if retry { 3 } else { 1 };
        let mut last = anyhow!("no attempt");
        for _ in 0..attempts {
            match self.try_post(path, headers, body.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.tx = None;
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn try_post(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let host = self.host.clone();
        let tx = self.sender().await?;
        tx.ready().await?;
        let mut req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = tx.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

fn signed_headers(
    host: &str,
    target: &str,
    body: &[u8],
    key: &AccessKey,
    region: &str,
    service: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("x-amz-target".to_string(), target.to_string()),
    ];
    let identity = Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.clone(),
        None,
        None,
        "simagents",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    // hyper adds `host` from our header list; keep it but drop duplicates.
    Ok(headers)
}

/// A signed AWS JSON call on `conn`.
async fn aws(
    conn: &mut Conn,
    key: &AccessKey,
    region: &str,
    target: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let bytes = serde_json::to_vec(body)?;
    let service = if target.starts_with("AmazonSSM.") {
        "ssm"
    } else {
        "ecs"
    };
    let headers = signed_headers(&conn.host, target, &bytes, key, region, service)?;
    let headers: Vec<(String, String)> = headers.into_iter().filter(|(k, _)| k != "host").collect();
    let (status, body) = conn.post("/", &headers, bytes, false).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Shared measurements.
#[derive(Default)]
struct Stats {
    /// Task ARN → epoch seconds when an agent first received it.
    received: Mutex<HashMap<String, f64>>,
    polls: AtomicU64,
    poll_errors: AtomicU64,
    reports: AtomicU64,
    report_errors: AtomicU64,
    /// Agents whose first poll was answered.
    ready: AtomicUsize,
}

struct Agent {
    auth: String,
    conn: Conn,
    known: u64,
    seq: u64,
    local: sim::Local,
}

async fn play(mut a: Agent, stats: Arc<Stats>, run_delay: Duration) {
    let mut first = true;
    loop {
        let body = match serde_json::to_vec(&PollRequest {
            known_version: a.known,
            wait_ms: 20_000,
        }) {
            Ok(b) => b,
            Err(_) => return,
        };
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            (berth_api::INSTANCE_AUTH_HEADER.to_string(), a.auth.clone()),
        ];
        // A poll is held at most 20 s; one that takes far longer rode a
        // connection the server never saw (accept-queue overflow): reconnect.
        let answer = match tokio::time::timeout(
            Duration::from_secs(30),
            a.conn.post(berth_api::POLL_PATH, &headers, body, true),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                a.conn.tx = None;
                Err(anyhow!("poll timed out"))
            }
        };
        let at = epoch_now();
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let resp: PollResponse = match answer {
            Ok((200, b)) => match serde_json::from_slice(&b) {
                Ok(r) => r,
                Err(_) => {
                    stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
            _ => {
                stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if first {
            first = false;
            stats.ready.fetch_add(1, Ordering::Relaxed);
        }
        if resp.deregistered {
            return;
        }
        if !resp.changed {
            continue;
        }
        a.known = resp.version;
        {
            let mut rec = match stats.received.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for t in &resp.tasks {
                if !a.local.contains_key(&t.task_arn) {
                    rec.entry(t.task_arn.clone()).or_insert(at);
                }
            }
        }
        sim::forget_missing(&mut a.local, &resp.tasks);
        let moves = sim::reports(&a.local, &resp.tasks);
        if moves.is_empty() {
            continue;
        }
        if !run_delay.is_zero() {
            tokio::time::sleep(run_delay).await;
        }
        a.seq += 1;
        let now = epoch_now();
        let report = StateReport {
            seq: a.seq,
            tasks: moves
                .iter()
                .map(|(arn, status)| {
                    let stopped = *status == berth_api::TaskStatus::Stopped;
                    let spec = resp.tasks.iter().find(|t| &t.task_arn == arn);
                    berth_api::TaskReport {
                        task_arn: arn.clone(),
                        last_status: *status,
                        stop_code: None,
                        stopped_reason: None,
                        pull_started_at: None,
                        pull_stopped_at: None,
                        started_at: (!stopped).then_some(now),
                        stopping_at: stopped.then_some(now),
                        execution_stopped_at: stopped.then_some(now),
                        stopped_at: stopped.then_some(now),
                        containers: spec
                            .map(|s| {
                                s.containers
                                    .iter()
                                    .map(|c| berth_api::ContainerReport {
                                        name: c.name.clone(),
                                        last_status: if stopped {
                                            berth_api::ContainerStatus::Stopped
                                        } else {
                                            berth_api::ContainerStatus::Running
                                        },
                                        runtime_id: None,
                                        image_digest: None,
                                        exit_code: stopped.then_some(0),
                                        reason: None,
                                        network_bindings: vec![],
                                        health_status: None,
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        };
        let Ok(body) = serde_json::to_vec(&report) else {
            continue;
        };
        match a
            .conn
            .post(berth_api::REPORT_PATH, &headers, body, true)
            .await
        {
            Ok((200, _)) => {
                stats.reports.fetch_add(1, Ordering::Relaxed);
                for (arn, s) in moves {
                    a.local.insert(arn, s);
                }
            }
            _ => {
                stats.report_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn register_all(
    args: &Args,
    addr: SocketAddr,
    key: &AccessKey,
) -> anyhow::Result<Vec<Agent>> {
    let mut conn = Conn::new(addr);
    let (st, body) = aws(
        &mut conn,
        key,
        &args.region,
        "AmazonEC2ContainerServiceV20141113.CreateCluster",
        &json!({"clusterName": args.cluster}),
    )
    .await?;
    if st != 200 {
        bail!("CreateCluster: {st} {body}");
    }
    let mut activations = Vec::new();
    let mut left = args.hosts;
    while left > 0 {
        let n = left.min(1000);
        let (st, body) = aws(
            &mut conn,
            key,
            &args.region,
            "AmazonSSM.CreateActivation",
            &json!({"IamRole": "berth-simagents", "RegistrationLimit": n}),
        )
        .await?;
        if st != 200 {
            bail!("CreateActivation: {st} {body}");
        }
        let id = body["ActivationId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let code = body["ActivationCode"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        activations.push((id, code, n));
        left -= n;
    }
    let mut jobs = Vec::new();
    for (id, code, n) in &activations {
        for _ in 0..*n {
            jobs.push((id.clone(), code.clone()));
        }
    }
    let jobs = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..args.register_concurrency.max(1) {
        let jobs = jobs.clone();
        let out = out.clone();
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            loop {
                let job = match jobs.lock() {
                    Ok(mut g) => g.pop(),
                    Err(p) => p.into_inner().pop(),
                };
                let Some((i, (act_id, act_code))) = job else {
                    return Ok::<(), anyhow::Error>(());
                };
                let tier =
                    if args.bronze_every > 0 && i % args.bronze_every == args.bronze_every - 1 {
                        "bronze"
                    } else {
                        "gold"
                    };
                let req = json!({
                    "activationId": act_id, "activationCode": act_code,
                    "cluster": args.cluster, "hostname": format!("sim-{i}"),
                    "resources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": args.cpu},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": args.memory},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
                    ],
                    "attributes": [
                        {"name": "ecs.os-type", "value": "linux"},
                        {"name": "ecs.availability-zone", "value": format!("az-{}", i % 3)},
                        {"name": "bench.tier", "value": tier},
                        {"name": "bench.rack", "value": format!("r{}", i % 50)},
                    ],
                    "agentVersion": "berth-simagents",
                });
                let headers = vec![("content-type".to_string(), "application/json".to_string())];
                let (st, body) = conn
                    .post(
                        berth_api::REGISTER_PATH,
                        &headers,
                        serde_json::to_vec(&req)?,
                        false,
                    )
                    .await?;
                if st != 200 {
                    bail!("register: {st} {}", String::from_utf8_lossy(&body));
                }
                let r: RegisterResponse = serde_json::from_slice(&body)?;
                let agent = Agent {
                    auth: format!("{}:{}", r.instance_id, r.secret),
                    conn: Conn::new(addr),
                    known: 0,
                    seq: 0,
                    local: HashMap::new(),
                };
                match out.lock() {
                    Ok(mut g) => g.push(agent),
                    Err(p) => p.into_inner().push(agent),
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let agents = match Arc::try_unwrap(out) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(_) => bail!("registration workers still hold the list"),
    };
    Ok(agents)
}

#[derive(Default)]
struct Driven {
    /// RunTask call latencies (seconds).
    latencies: Vec<f64>,
    /// Task ARN → (createdAt epoch, send epoch).
    placed: HashMap<String, (f64, f64)>,
    failures: usize,
    errors: Vec<String>,
}

/// The placement rules every RunTask and service of the run uses.
fn placement(args: &Args, req: &mut Value) {
    req["placementStrategy"] = json!([{"type": "binpack", "field": "memory"}]);
    if !args.member_of.is_empty() {
        req["placementConstraints"] = json!([{"type": "memberOf", "expression": args.member_of}]);
    }
}

fn service_name(k: usize) -> String {
    format!("simbench-svc-{k}")
}

/// Creates the services, one after another; answers when the last was
/// accepted and the epoch seconds before the first was sent.
async fn create_services(args: &Args, addr: SocketAddr, key: &AccessKey) -> anyhow::Result<f64> {
    let mut conn = Conn::new(addr);
    let started = epoch_now();
    for k in 0..args.services {
        let mut req = json!({
            "cluster": args.cluster, "serviceName": service_name(k),
            "taskDefinition": args.family, "desiredCount": args.service_tasks,
            "launchType": "EXTERNAL",
        });
        placement(args, &mut req);
        let (st, body) = aws(
            &mut conn,
            key,
            &args.region,
            "AmazonEC2ContainerServiceV20141113.CreateService",
            &req,
        )
        .await?;
        if st != 200 {
            bail!("CreateService: {st} {body}");
        }
    }
    Ok(started)
}

/// Every service task's ARN → `createdAt`, read back after the run.
async fn service_tasks(
    args: &Args,
    addr: SocketAddr,
    key: &AccessKey,
) -> anyhow::Result<HashMap<String, f64>> {
    let mut conn = Conn::new(addr);
    let ecs = |a: &str| format!("AmazonEC2ContainerServiceV20141113.{a}");
    let mut out = HashMap::new();
    for k in 0..args.services {
        let mut token: Option<String> = None;
        loop {
            let mut req = json!({"cluster": args.cluster, "serviceName": service_name(k),
                                 "maxResults": 100});
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let (st, body) = aws(&mut conn, key, &args.region, &ecs("ListTasks"), &req).await?;
            if st != 200 {
                bail!("ListTasks: {st} {body}");
            }
            let arns: Vec<Value> = body["taskArns"].as_array().cloned().unwrap_or_default();
            if !arns.is_empty() {
                let (st, d) = aws(
                    &mut conn,
                    key,
                    &args.region,
                    &ecs("DescribeTasks"),
                    &json!({"cluster": args.cluster, "tasks": arns}),
                )
                .await?;
                if st != 200 {
                    bail!("DescribeTasks: {st} {d}");
                }
                for t in d["tasks"].as_array().into_iter().flatten() {
                    if let (Some(arn), Some(at)) = (t["taskArn"].as_str(), t["createdAt"].as_f64())
                    {
                        out.insert(arn.to_string(), at);
                    }
                }
            }
            token = body["nextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}

async fn drive(args: &Args, addr: SocketAddr, key: &AccessKey) -> anyhow::Result<(Driven, f64)> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let calls = args.tasks.div_ceil(args.per_call.max(1));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.clients.max(1) {
        let claimed = claimed.clone();
        let args = args.clone();
        let key = key.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut d = Driven::default();
            while claimed.fetch_add(1, Ordering::Relaxed) < calls {
                let mut req = json!({
                    "cluster": args.cluster, "taskDefinition": args.family,
                    "count": args.per_call,
                });
                placement(&args, &mut req);
                let sent = epoch_now();
                let t0 = Instant::now();
                let r = aws(
                    &mut conn,
                    &key,
                    &args.region,
                    "AmazonEC2ContainerServiceV20141113.RunTask",
                    &req,
                )
                .await;
                d.latencies.push(t0.elapsed().as_secs_f64());
                match r {
                    Ok((200, body)) => {
                        for t in body["tasks"].as_array().into_iter().flatten() {
                            if let Some(arn) = t["taskArn"].as_str() {
                                let created = t["createdAt"].as_f64().unwrap_or(sent);
                                d.placed.insert(arn.to_string(), (created, sent));
                            }
                        }
                        d.failures += body["failures"].as_array().map_or(0, |f| f.len());
                    }
                    Ok((st, body)) => {
                        if d.errors.len() < 5 {
                            d.errors.push(format!("{st} {body}"));
                        }
                    }
                    Err(e) => {
                        if d.errors.len() < 5 {
                            d.errors.push(e.to_string());
                        }
                    }
                }
            }
            d
        }));
    }
    let mut all = Driven::default();
    for w in workers {
        let d = w.await?;
        all.latencies.extend(d.latencies);
        all.placed.extend(d.placed);
        all.failures += d.failures;
        all.errors.extend(d.errors);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |s| json!((s * 1e5).round() / 100.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let addr: SocketAddr = args
        .coordinator
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--coordinator must be http://IP:PORT")?;
    let text = std::fs::read_to_string(&args.credentials)
        .with_context(|| format!("reading {}", args.credentials.display()))?;
    let key = berth_coordinator::credentials::parse(&text)
        .ok_or_else(|| anyhow!("no [default] keys in {}", args.credentials.display()))?;

    let t0 = Instant::now();
    let agents = register_all(&args, addr, &key).await?;
    let register_secs = t0.elapsed().as_secs_f64();
    tracing::info!(hosts = agents.len(), secs = register_secs, "registered");

    let stats = Arc::new(Stats::default());
    let delay = Duration::from_millis(args.run_delay_ms);
    let t1 = Instant::now();
    for (i, a) in agents.into_iter().enumerate() {
        // Connect in bursts so loopback's accept queue never overflows.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::spawn(play(a, stats.clone(), delay));
    }
    while stats.ready.load(Ordering::Relaxed) < args.hosts {
        if t1.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {} agents polled within 120 s",
                stats.ready.load(Ordering::Relaxed),
                args.hosts
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the second (held) polls land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connect_secs = t1.elapsed().as_secs_f64();
    tracing::info!(secs = connect_secs, "every agent is polling");

    if args.tasks == 0 && args.services == 0 {
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
        println!(
            "{}",
            json!({"hosts": args.hosts, "register_secs": register_secs,
                   "polls": stats.polls.load(Ordering::Relaxed),
                   "poll_errors": stats.poll_errors.load(Ordering::Relaxed)})
        );
        return Ok(());
    }

    let (family_ok, body) = {
        let mut conn = Conn::new(addr);
        let (st, body) = aws(
            &mut conn,
            &key,
            &args.region,
            "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition",
            &json!({"family": args.family, "networkMode": "host",
                    "containerDefinitions": [{"name": "app", "image": "busybox",
                        "cpu": args.task_cpu, "memory": args.task_memory,
                        "command": ["sleep", "3600"]}]}),
        )
        .await?;
        (st == 200, body)
    };
    if !family_ok {
        bail!("RegisterTaskDefinition: {body}");
    }

    let drive_started = epoch_now();
    let (driven, services_started) = {
        let (d, s) = tokio::join!(drive(&args, addr, &key), async {
            if args.services == 0 {
                return Ok(None);
            }
            create_services(&args, addr, &key).await.map(Some)
        });
        (d?, s?)
    };
    let (driven, drive_secs) = driven;
    let placed = driven.placed.len();
    tracing::info!(placed, secs = drive_secs, "RunTask phase done");
    let want_service = args.services * args.service_tasks;
    // Wait for every RunTask task and every service task to reach its agent.
    let t2 = Instant::now();
    loop {
        let (got, services_got) = {
            let g = match stats.received.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let got = driven.placed.keys().filter(|k| g.contains_key(*k)).count();
            (got, g.len().saturating_sub(got))
        };
        if (got >= placed && services_got >= want_service)
            || t2.elapsed() > Duration::from_secs(args.drain_secs)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let service_created = if args.services > 0 {
        service_tasks(&args, addr, &key).await?
    } else {
        HashMap::new()
    };
    let (mut from_commit, mut from_send, mut service_from_commit, missing) = {
        let g = match stats.received.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        let mut missing = 0usize;
        for (arn, (created, sent)) in &driven.placed {
            match g.get(arn) {
                Some(at) => {
                    a.push((at - created).max(0.0));
                    b.push((at - sent).max(0.0));
                }
                None => missing += 1,
            }
        }
        for (arn, created) in &service_created {
            match g.get(arn) {
                Some(at) => c.push((at - created).max(0.0)),
                None => missing += 1,
            }
        }
        (a, b, c, missing)
    };
    // Placements per second over RunTask and service tasks together: from
    // the first request to the last task's createdAt.
    let last_created = driven
        .placed
        .values()
        .map(|(created, _)| *created)
        .chain(service_created.values().copied())
        .fold(drive_started, f64::max);
    let total_placed = placed + service_created.len();
    let mut all_to_agent: Vec<f64> = from_commit
        .iter()
        .chain(&service_from_commit)
        .copied()
        .collect();
    let mut lat = driven.latencies.clone();
    // Give the RUNNING reports a moment to land before reading counters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = json!({
        "hosts": args.hosts,
        "tasks_requested": args.tasks,
        "tasks_placed": placed,
        "placement_failures": driven.failures,
        "runtask_calls": driven.latencies.len(),
        "runtask_errors": driven.errors,
        "clients": args.clients,
        "per_call": args.per_call,
        "register_secs": register_secs,
        "connect_secs": connect_secs,
        "drive_secs": drive_secs,
        "services": args.services,
        "service_tasks_placed": service_created.len(),
        "service_create_to_last_created_secs":
            services_started.map(|t| (last_created - t).max(0.0)),
        "tasks_placed_total": total_placed,
        "placements_per_sec": total_placed as f64 / (last_created - drive_started).max(1e-9),
        "runtask_placements_per_sec": placed as f64 / drive_secs.max(1e-9),
        "runtask_ms": {"p50": ms(sim::percentile(&mut lat, 50.0)),
                       "p99": ms(sim::percentile(&mut lat, 99.0)),
                       "max": ms(sim::percentile(&mut lat, 100.0))},
        "to_agent_from_created_ms": {"p50": ms(sim::percentile(&mut from_commit, 50.0)),
                                     "p99": ms(sim::percentile(&mut from_commit, 99.0)),
                                     "max": ms(sim::percentile(&mut from_commit, 100.0))},
        "service_to_agent_from_created_ms": {
            "p50": ms(sim::percentile(&mut service_from_commit, 50.0)),
            "p99": ms(sim::percentile(&mut service_from_commit, 99.0)),
            "max": ms(sim::percentile(&mut service_from_commit, 100.0))},
        "all_to_agent_from_created_ms": {
            "p50": ms(sim::percentile(&mut all_to_agent, 50.0)),
            "p99": ms(sim::percentile(&mut all_to_agent, 99.0)),
            "max": ms(sim::percentile(&mut all_to_agent, 100.0))},
        "to_agent_from_send_ms": {"p50": ms(sim::percentile(&mut from_send, 50.0)),
                                  "p99": ms(sim::percentile(&mut from_send, 99.0))},
        "not_received": missing,
        "polls": stats.polls.load(Ordering::Relaxed),
        "poll_errors": stats.poll_errors.load(Ordering::Relaxed),
        "reports": stats.reports.load(Ordering::Relaxed),
        "report_errors": stats.report_errors.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}
