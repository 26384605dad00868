//! Client side of the coordinator's agent channel (see `berth_api`): register,
//! long-poll for desired state, and state reports, over HTTP/JSON with the
//! per-instance credential header. Also the two loops `berth-agent run` keeps
//! going: the poll loop (reconnecting with exponential backoff and jitter while
//! the coordinator is unreachable; tasks keep running meanwhile) and the report
//! loop (each report retried until acknowledged, sequence numbers persisted so
//! they keep increasing across restarts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::{
    PollRequest, PollResponse, RegisterRequest, RegisterResponse, ReportAck, StateReport,
    TaskReport, INSTANCE_AUTH_HEADER, POLL_PATH, REGISTER_PATH, REPORT_PATH,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::reconcile::driver::Event;
use crate::state::{SeqFile, StateError};

/// How long the coordinator may hold a poll.
pub const POLL_WAIT_MS: u64 = 20_000;
/// Extra time over `wait_ms` before the agent gives up on a held poll.
const POLL_SLACK: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid coordinator URL {0:?}: it must start with http:// or https://")]
    BadUrl(String),
    #[error("cannot reach the coordinator at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("coordinator answered {status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the coordinator: {0}")]
    Decode(String),
    #[error("report sequence: {0}")]
    Seq(#[from] StateError),
}

/// HTTP client of one coordinator, optionally with instance credentials.
#[derive(Debug, Clone)]
pub struct ChannelClient {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl ChannelClient {
    /// `base` is the coordinator URL (`http://host:port`); `credentials` are the
    /// instance id and secret from registration (none for `register`).
    pub fn new(base: &str, credentials: Option<(&str, &str)>) -> Result<Self, ChannelError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ChannelError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| ChannelError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            http,
            base,
            auth: credentials.map(|(id, secret)| format!("{id}:{secret}")),
        })
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, ChannelError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.post(&url).json(body).timeout(timeout);
        if let Some(auth) = &self.auth {
            req = req.header(INSTANCE_AUTH_HEADER, auth);
        }
        let unreachable = |source| ChannelError::Unreachable {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<berth_api::ChannelError>(&bytes) {
                Ok(e) => (e.code, e.message),
                Err(_) => (
                    status.canonical_reason().unwrap_or("error").to_string(),
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                ),
            };
            return Err(ChannelError::Rejected {
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ChannelError::Decode(format!("{path}: {e}")))
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ChannelError> {
        self.post(REGISTER_PATH, req, REQUEST_TIMEOUT).await
    }

    pub async fn poll(
        &self,
        known_version: u64,
        wait_ms: u64,
    ) -> Result<PollResponse, ChannelError> {
        let req = PollRequest {
            known_version,
            wait_ms,
        };
        self.post(POLL_PATH, &req, Duration::from_millis(wait_ms) + POLL_SLACK)
            .await
    }

    pub async fn report(&self, report: &StateReport) -> Result<ReportAck, ChannelError> {
        self.post(REPORT_PATH, report, REQUEST_TIMEOUT).await
    }
}

/// Long-poll forever (until deregistered or the driver is gone), forwarding
/// each new desired state to the driver.
pub async fn poll_loop(
    client: Arc<ChannelClient>,
    mut known_version: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut connected = false;
    loop {
        let started = tokio::time::Instant::now();
        match client.poll(known_version, POLL_WAIT_MS).await {
            Ok(resp) => {
                backoff.reset();
                if !connected {
                    info!(version = resp.version, "connected to the coordinator");
                    connected = true;
                }
                if resp.changed || resp.deregistered {
                    debug!(
                        version = resp.version,
                        tasks = resp.tasks.len(),
                        "desired state changed"
                    );
                    known_version = resp.version;
                    let event = Event::Desired {
                        version: resp.version,
                        tasks: resp.tasks,
                        deregistered: resp.deregistered,
                        awsvpc_network: resp.awsvpc_network,
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                    if resp.deregistered {
                        info!("the coordinator deregistered this instance; polling stops");
                        return;
                    }
                } else if started.elapsed() < Duration::from_secs(1) {
                    // A coordinator that does not hold polls must not make us spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(e) => {
                if events.is_closed() {
                    return;
                }
                connected = false;
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "poll failed; tasks keep running");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Merge reports waiting to be sent: the latest report of a task replaces an
/// earlier one (each report is the task's full observed state).
pub fn merge_pending(pending: &mut BTreeMap<String, TaskReport>, batch: Vec<TaskReport>) {
    for report in batch {
        pending.insert(report.task_arn.clone(), report);
    }
}

/// What to do after the coordinator acknowledged `acked_seq` for a report sent
/// with `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Applied.
    Done,
    /// The coordinator is past our sequence (our counter was lost): it ignored
    /// the report; resend it with this sequence number.
    ResendAs(u64),
    /// Not applied yet; retry the same report.
    Retry,
}

pub fn ack_outcome(seq: u64, acked_seq: u64) -> AckOutcome {
    use std::cmp::Ordering;
    match acked_seq.cmp(&seq) {
        Ordering::Equal => AckOutcome::Done,
        Ordering::Greater => AckOutcome::ResendAs(acked_seq + 1),
        Ordering::Less => AckOutcome::Retry,
    }
}

/// Send report batches from the driver, one at a time, each retried until
/// acknowledged; acknowledged reports go back to the driver.
pub async fn report_loop(
    client: Arc<ChannelClient>,
    seq_file: SeqFile,
    mut batches: mpsc::UnboundedReceiver<Vec<TaskReport>>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), ChannelError> {
    let mut next_seq = seq_file.load()?;
    let mut pending: BTreeMap<String, TaskReport> = BTreeMap::new();
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    loop {
        if pending.is_empty() {
            match batches.recv().await {
                Some(batch) => merge_pending(&mut pending, batch),
                None => return Ok(()),
            }
        }
        while let Ok(batch) = batches.try_recv() {
            merge_pending(&mut pending, batch);
        }
        let tasks: Vec<TaskReport> = std::mem::take(&mut pending).into_values().collect();
        let mut seq = next_seq;
        seq_file.store(seq + 1)?;
        next_seq = seq + 1;
        loop {
            let report = StateReport {
                seq,
                tasks: tasks.clone(),
            };
            match client.report(&report).await {
                Ok(ack) => match ack_outcome(seq, ack.acked_seq) {
                    AckOutcome::Done => {
                        backoff.reset();
                        debug!(seq, tasks = tasks.len(), "report acknowledged");
                        if events.send(Event::Acked(tasks)).is_err() {
                            return Ok(());
                        }
                        break;
                    }
                    AckOutcome::ResendAs(new_seq) => {
                        warn!(
                            seq,
                            acked_seq = ack.acked_seq,
                            "coordinator is ahead of our report sequence; resending"
                        );
                        seq = new_seq;
                        seq_file.store(seq + 1)?;
                        next_seq = seq + 1;
                    }
                    AckOutcome::Retry => {
                        let delay = backoff.next_delay();
                        warn!(seq, acked_seq = ack.acked_seq, retry_in = ?delay, "report not applied; retrying");
                        tokio::time::sleep(delay).await;
                    }
                },
                Err(e) => {
                    if events.is_closed() {
                        return Ok(());
                    }
                    let delay = backoff.next_delay();
                    warn!(seq, error = %e, retry_in = ?delay, "report failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::TaskStatus;

    #[test]
    fn ack_outcomes() {
        let cases = [
            (5, 5, AckOutcome::Done),
            (5, 9, AckOutcome::ResendAs(10)),
            (5, 4, AckOutcome::Retry),
            (1, 0, AckOutcome::Retry),
        ];
        for (seq, acked, expected) in cases {
            assert_eq!(ack_outcome(seq, acked), expected, "seq {seq} acked {acked}");
        }
    }

    fn report(arn: &str, status: TaskStatus) -> TaskReport {
        TaskReport {
            task_arn: arn.into(),
            last_status: status,
            stop_code: None,
            stopped_reason: None,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            containers: vec![],
        }
    }

    #[test]
    fn pending_reports_keep_the_latest_per_task() {
        let mut pending = BTreeMap::new();
        merge_pending(
            &mut pending,
            vec![
                report("a", TaskStatus::Pending),
                report("b", TaskStatus::Pending),
            ],
        );
        merge_pending(&mut pending, vec![report("a", TaskStatus::Running)]);
        let got: Vec<_> = pending
            .values()
            .map(|r| (r.task_arn.as_str(), r.last_status))
            .collect();
        assert_eq!(
            got,
            vec![("a", TaskStatus::Running), ("b", TaskStatus::Pending)]
        );
    }

    #[test]
    fn urls_must_be_http() {
        assert!(matches!(
            ChannelClient::new("127.0.0.1:80", None),
            Err(ChannelError::BadUrl(_))
        ));
        assert!(ChannelClient::new("http://127.0.0.1:80/", None).is_ok());
    }

    /// A minimal HTTP/1.1 server on loopback answering each request with
    /// `respond(path, auth header, body)`; one request per connection.
    struct TestServer {
        addr: std::net::SocketAddr,
        task: tokio::task::JoinHandle<()>,
    }

    type Responder = Arc<dyn Fn(&str, Option<&str>, &[u8]) -> (u16, String) + Send + Sync>;

    impl TestServer {
        async fn start_on(addr: &str, respond: Responder) -> Self {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut sock, _)) = listener.accept().await else {
                        return;
                    };
                    let respond = respond.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        let (head_end, content_length) = loop {
                            let n = sock.read(&mut chunk).await.expect("read");
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                                let len = head
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().ok())
                                            .flatten()
                                    })
                                    .unwrap_or(0);
                                break (pos + 4, len);
                            }
                        };
                        while buf.len() < head_end + content_length {
                            let n = sock.read(&mut chunk).await.expect("read");
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let auth = head.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(INSTANCE_AUTH_HEADER)
                                .then(|| v.trim().to_string())
                        });
                        let (status, body) = respond(
                            &path,
                            auth.as_deref(),
                            &buf[head_end..head_end + content_length],
                        );
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
            });
            TestServer { addr, task }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn task_spec(arn: &str) -> berth_api::TaskSpec {
        berth_api::TaskSpec {
            task_arn: arn.into(),
            cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
            task_definition_arn: "arn:aws:ecs:r:1:task-definition/f:1".into(),
            family: "f".into(),
            revision: 1,
            desired_status: berth_api::DesiredStatus::Running,
            network_mode: "host".into(),
            stop_reason: None,
            stop_code: None,
            containers: vec![],
            reserved_ports: vec![],
            awsvpc: None,
        }
    }

    #[tokio::test]
    async fn poll_loop_reconnects_and_sends_known_version() {
        // Reserve a port, then leave it closed: the coordinator is down.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Arc::new(ChannelClient::new(&url, Some(("mi-1", "s3cret"))).expect("client"));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll_loop(client, 4, events_tx));
        tokio::time::sleep(Duration::from_millis(700)).await;

        type Seen = Vec<(Option<String>, PollRequest)>;
        let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
        let log = seen.clone();
        let respond: Responder = Arc::new(move |path, auth, body| {
            assert_eq!(path, POLL_PATH);
            let req: PollRequest = serde_json::from_slice(body).expect("poll body");
            log.lock()
                .expect("lock")
                .push((auth.map(str::to_string), req.clone()));
            let resp = if req.known_version < 5 {
                PollResponse {
                    version: 5,
                    changed: true,
                    tasks: vec![task_spec("arn:t")],
                    deregistered: false,
                    awsvpc_network: None,
                }
            } else {
                PollResponse {
                    version: 5,
                    changed: false,
                    tasks: vec![],
                    deregistered: false,
                    awsvpc_network: None,
                }
            };
            (200, serde_json::to_string(&resp).expect("encode"))
        });
        let _server = TestServer::start_on(&format!("127.0.0.1:{port}"), respond).await;
        let event = tokio::time::timeout(Duration::from_secs(20), events_rx.recv())
            .await
            .expect("desired state within the backoff cap")
            .expect("event");
        match event {
            Event::Desired {
                version,
                tasks,
                deregistered,
                ..
            } => {
                assert_eq!(version, 5);
                assert_eq!(tasks.len(), 1);
                assert!(!deregistered);
            }
            other => panic!("unexpected event {other:?}"),
        }
        // The next poll carries the new version.
        tokio::time::timeout(Duration::from_secs(10), async {
            while seen.lock().expect("lock").len() < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("second poll");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen[0].0.as_deref(), Some("mi-1:s3cret"));
        assert_eq!(
            seen[0].1,
            PollRequest {
                known_version: 4,
                wait_ms: POLL_WAIT_MS
            }
        );
        assert_eq!(seen[1].1.known_version, 5);
        poller.abort();
    }

    #[tokio::test]
    async fn reports_retry_until_acked_and_seq_survives_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seqs: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
        let log = seqs.clone();
        let respond: Responder = Arc::new(move |path, _auth, body| {
            assert_eq!(path, REPORT_PATH);
            let report: StateReport = serde_json::from_slice(body).expect("report body");
            let mut log = log.lock().expect("lock");
            log.push(report.seq);
            match log.len() {
                // First attempt: the coordinator fails.
                1 => (
                    500,
                    r#"{"code":"ServerException","message":"internal error"}"#.to_string(),
                ),
                // A report whose seq the coordinator is already past.
                3 => (200, r#"{"ackedSeq": 10}"#.to_string()),
                _ => (200, format!(r#"{{"ackedSeq": {}}}"#, report.seq)),
            }
        });
        let server = TestServer::start_on("127.0.0.1:0", respond).await;
        let client = Arc::new(
            ChannelClient::new(&format!("http://{}", server.addr), Some(("mi-1", "s")))
                .expect("client"),
        );

        for (round, expected_tail) in [(0, vec![1u64, 1]), (1, vec![2, 11])] {
            let (batches_tx, batches_rx) = mpsc::unbounded_channel();
            let (events_tx, mut events_rx) = mpsc::unbounded_channel();
            let reporter = tokio::spawn(report_loop(
                client.clone(),
                SeqFile::new(dir.path()),
                batches_rx,
                events_tx,
            ));
            batches_tx
                .send(vec![report(&format!("arn:{round}"), TaskStatus::Running)])
                .expect("send");
            let acked = tokio::time::timeout(Duration::from_secs(20), events_rx.recv())
                .await
                .expect("ack in time")
                .expect("event");
            match acked {
                Event::Acked(tasks) => assert_eq!(tasks[0].task_arn, format!("arn:{round}")),
                other => panic!("unexpected event {other:?}"),
            }
            let all = seqs.lock().expect("lock").clone();
            assert_eq!(
                all[all.len() - 2..],
                expected_tail[..],
                "round {round}: {all:?}"
            );
            // The agent "restarts": a new loop on the same data directory.
            drop(batches_tx);
            reporter.await.expect("join").expect("clean end");
        }
        assert_eq!(SeqFile::new(dir.path()).load().expect("load"), 12);
    }
}
