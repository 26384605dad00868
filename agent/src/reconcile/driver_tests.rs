//! The driver against a fake runtime (an in-memory containerd with scripted
//! images and exits), with tokio's clock paused so stop timeouts are exact.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use berth_api::{
    ContainerSpec, ContainerStatus, DesiredStatus, StopCode, TaskReport, TaskSpec, TaskStatus,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::*;
use crate::logs::RotationPolicy;
use crate::procspec;
use crate::runtime::{CreateRequest, ExecOutcome, ObservedContainer, ObservedState};

struct FakeContainer {
    labels: BTreeMap<String, String>,
    state: ObservedState,
    exit: watch::Sender<Option<i32>>,
    name: String,
}

#[derive(Default)]
struct FakeInner {
    images: HashMap<String, ImageConfig>,
    containers: BTreeMap<String, FakeContainer>,
    pulls: Vec<String>,
    creates: Vec<CreateRequest>,
    kills: Vec<(String, u32, Instant)>,
    deletes: Vec<String>,
    /// Container names that ignore SIGTERM.
    ignore_sigterm: HashSet<String>,
    /// Every kill fails (containerd unreachable).
    kill_fails: bool,
    next_pid: u32,
    /// Scripted health-check results by container name, consumed in order;
    /// when a script runs out, `exec_default` (else exit 0) applies.
    exec_script: HashMap<String, VecDeque<FakeExec>>,
    exec_default: HashMap<String, FakeExec>,
    /// Every exec: (container id, argv, when it started).
    execs: Vec<(String, Vec<String>, Instant)>,
}

/// What one scripted exec does.
#[derive(Debug, Clone, Copy)]
enum FakeExec {
    Exit(i32),
    /// Runs past its timeout.
    Hang,
    /// The command cannot be started (no such executable).
    CannotStart,
    /// containerd cannot be reached.
    Unreachable,
}

/// In-memory runtime: images must be registered to pull; containers exit when
/// the test says so or on signals.
#[derive(Default)]
struct FakeRuntime {
    inner: Mutex<FakeInner>,
}

impl FakeRuntime {
    fn with_image(self, image: &str) -> Self {
        self.lock().images.insert(
            image.to_string(),
            ImageConfig {
                digest: format!("sha256:{image}"),
                cmd: vec!["/bin/run".into()],
                ..Default::default()
            },
        );
        self
    }
    fn ignoring_sigterm(self, name: &str) -> Self {
        self.lock().ignore_sigterm.insert(name.to_string());
        self
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeInner> {
        self.inner.lock().expect("fake lock")
    }
    fn exit(&self, id: &str, code: i32) {
        let mut inner = self.lock();
        let c = inner.containers.get_mut(id).expect("container exists");
        c.state = ObservedState::Exited { exit_code: code };
        c.exit.send_replace(Some(code));
    }
    fn pulls(&self) -> Vec<String> {
        self.lock().pulls.clone()
    }
    fn create_count(&self) -> usize {
        self.lock().creates.len()
    }
    fn kills(&self) -> Vec<(String, u32, Instant)> {
        self.lock().kills.clone()
    }
    fn ids(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }
    fn script_exec(&self, name: &str, results: &[FakeExec]) {
        self.lock()
            .exec_script
            .entry(name.to_string())
            .or_default()
            .extend(results.iter().copied());
    }
    fn exec_default(&self, name: &str, result: FakeExec) {
        self.lock().exec_default.insert(name.to_string(), result);
    }
    fn execs(&self) -> Vec<(String, Vec<String>, Instant)> {
        self.lock().execs.clone()
    }
}

impl Runtime for FakeRuntime {
    async fn pull(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        let mut inner = self.lock();
        inner.pulls.push(image.to_string());
        inner
            .images
            .get(image)
            .cloned()
            .ok_or_else(|| RuntimeError::Pull(format!("{image}: manifest unknown")))
    }
    async fn pull_if_missing(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        let mut inner = self.lock();
        inner.pulls.push(format!("cached:{image}"));
        inner
            .images
            .get(image)
            .cloned()
            .ok_or_else(|| RuntimeError::Pull(format!("{image}: manifest unknown")))
    }
    async fn create(&self, req: &CreateRequest) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        if inner.containers.contains_key(&req.id) {
            return Err(RuntimeError::Create(format!("{} already exists", req.id)));
        }
        inner.creates.push(req.clone());
        let name = req
            .labels
            .get(crate::runtime::LABEL_CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        inner.containers.insert(
            req.id.clone(),
            FakeContainer {
                labels: req.labels.clone(),
                state: ObservedState::Created,
                exit: watch::channel(None).0,
                name,
            },
        );
        Ok(())
    }
    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        let mut inner = self.lock();
        inner.next_pid += 1;
        let pid = 100 + inner.next_pid;
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if c.state != ObservedState::Created {
            return Err(RuntimeError::Start(format!("{id} is not created")));
        }
        c.state = ObservedState::Running { pid };
        Ok(pid)
    }
    async fn wait(&self, id: &str) -> Result<i32, RuntimeError> {
        let mut rx = {
            let inner = self.lock();
            inner
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.into()))?
                .exit
                .subscribe()
        };
        let code = rx
            .wait_for(|c| c.is_some())
            .await
            .map_err(|_| RuntimeError::NotFound(id.into()))?;
        Ok(code.unwrap_or(-1))
    }
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        inner.kills.push((id.to_string(), signal, Instant::now()));
        if inner.kill_fails {
            return Err(RuntimeError::Containerd("connection refused".into()));
        }
        let ignore = inner.ignore_sigterm.clone();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if matches!(c.state, ObservedState::Running { .. })
            && (signal == 9 || !ignore.contains(&c.name))
        {
            let code = 128 + signal as i32;
            c.state = ObservedState::Exited { exit_code: code };
            c.exit.send_replace(Some(code));
        }
        Ok(())
    }
    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        if let Some(c) = inner.containers.get(id) {
            if matches!(c.state, ObservedState::Running { .. }) {
                return Err(RuntimeError::Containerd(format!("{id} is running")));
            }
        }
        inner.containers.remove(id);
        inner.deletes.push(id.to_string());
        Ok(())
    }
    async fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: std::time::Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let scripted = {
            let mut inner = self.lock();
            inner.execs.push((id.to_string(), args, Instant::now()));
            let c = inner
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
            if !matches!(c.state, ObservedState::Running { .. }) {
                return Err(RuntimeError::NotFound(id.into()));
            }
            let name = c.name.clone();
            let next = inner.exec_script.get_mut(&name).and_then(|q| q.pop_front());
            next.or_else(|| inner.exec_default.get(&name).copied())
                .unwrap_or(FakeExec::Exit(0))
        };
        match scripted {
            FakeExec::Exit(code) => Ok(ExecOutcome::Exited(code)),
            FakeExec::Hang => {
                tokio::time::sleep(timeout).await;
                Ok(ExecOutcome::TimedOut)
            }
            FakeExec::CannotStart => Err(RuntimeError::Start("executable file not found".into())),
            FakeExec::Unreachable => Err(RuntimeError::Containerd("connection refused".into())),
        }
    }
    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        Ok(self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| ObservedContainer {
                id: id.clone(),
                labels: c.labels.clone(),
                state: c.state,
            })
            .collect())
    }
}

const ARN: &str = "arn:aws:ecs:r:1:task/c/t1";

fn container(name: &str, image: &str, essential: bool) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        essential,
        ..Default::default()
    }
}

fn task(containers: Vec<ContainerSpec>) -> TaskSpec {
    TaskSpec {
        task_arn: ARN.into(),
        cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
        task_definition_arn: "arn:aws:ecs:r:1:task-definition/f:1".into(),
        family: "f".into(),
        revision: 1,
        desired_status: DesiredStatus::Running,
        network_mode: "host".into(),
        stop_reason: None,
        stop_code: None,
        containers,
        reserved_ports: vec![],
        awsvpc: None,
    }
}

/// A running driver plus the test's ends of its channels; the test plays the
/// reporter (acking every batch) and the poller.
struct Harness {
    events: mpsc::UnboundedSender<Event>,
    reports: mpsc::UnboundedReceiver<Vec<TaskReport>>,
    shutdown: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<Outcome, DriverError>>,
    version: u64,
    seen: Vec<TaskReport>,
}

impl Harness {
    fn start(runtime: Arc<FakeRuntime>, dir: &std::path::Path) -> Self {
        Self::start_with(runtime, DriverConfig::new(dir.to_path_buf()))
    }

    fn start_with(runtime: Arc<FakeRuntime>, cfg: DriverConfig) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (driver, events) = Driver::new(runtime, cfg, reports_tx).expect("driver");
        let version = driver.known_version();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let join = tokio::spawn(driver.run(
            async move {
                let _ = shutdown_rx.await;
            },
            || {},
        ));
        Harness {
            events,
            reports,
            shutdown: Some(shutdown_tx),
            join,
            version,
            seen: Vec::new(),
        }
    }

    fn desire(&mut self, tasks: Vec<TaskSpec>) {
        self.version += 1;
        self.events
            .send(Event::Desired {
                version: self.version,
                tasks,
                deregistered: false,
                awsvpc_network: None,
            })
            .expect("driver alive");
    }

    /// Receive (and ack) reports until one matches.
    async fn until(&mut self, what: &str, pred: impl Fn(&TaskReport) -> bool) -> TaskReport {
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(600));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                batch = self.reports.recv() => {
                    let batch = batch.expect("driver alive");
                    self.seen.extend(batch.iter().cloned());
                    let hit = batch.iter().find(|r| pred(r)).cloned();
                    // After deregistration the driver may be gone already.
                    let _ = self.events.send(Event::Acked(batch));
                    if let Some(hit) = hit {
                        return hit;
                    }
                }
                _ = &mut deadline => panic!("no report {what}; seen: {:#?}", self.seen),
            }
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let outcome = self.join.await.expect("join").expect("driver ok");
        assert_eq!(outcome, Outcome::Shutdown);
    }
}

fn status(s: TaskStatus) -> impl Fn(&TaskReport) -> bool {
    move |r| r.last_status == s
}

#[tokio::test(start_paused = true)]
async fn exit_code_of_the_essential_container_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![container("app", "busybox", true)])]);
    let pending = h.until("PENDING", status(TaskStatus::Pending)).await;
    assert_eq!(pending.containers[0].last_status, ContainerStatus::Pending);
    let running = h.until("RUNNING", status(TaskStatus::Running)).await;
    assert_eq!(running.containers[0].runtime_id.as_deref(), Some("t1-app"));
    assert_eq!(
        running.containers[0].image_digest.as_deref(),
        Some("sha256:busybox")
    );
    assert!(
        running.pull_started_at.is_some()
            && running.pull_stopped_at.is_some()
            && running.started_at.is_some()
    );
    rt.exit("t1-app", 3);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    assert_eq!(stopped.containers[0].last_status, ContainerStatus::Stopped);
    // Once the STOPPED report is acked, the container is deleted.
    for _ in 0..50 {
        if rt.ids().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        rt.ids().is_empty(),
        "container deleted after the acked STOPPED report"
    );
    // The coordinator drops the task from desired state: it is forgotten, and
    // a stale desired state naming it does not run it again.
    h.desire(vec![]);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    h.desire(vec![task(vec![container("app", "busybox", true)])]);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(rt.create_count(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn essential_exit_stops_the_others_with_sigterm_then_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(
        FakeRuntime::default()
            .with_image("busybox")
            .ignoring_sigterm("stubborn"),
    );
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut stubborn = container("stubborn", "busybox", false);
    stubborn.stop_timeout = Some(5);
    h.desire(vec![task(vec![
        container("app", "busybox", true),
        stubborn,
        container("polite", "busybox", false),
    ])]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    // One pull for three containers of the same image.
    assert_eq!(rt.pulls(), vec!["busybox".to_string()]);
    rt.exit("t1-app", 1);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    let codes: Vec<_> = stopped
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.exit_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("app", Some(1)),
            ("stubborn", Some(137)),
            ("polite", Some(143))
        ]
    );
    let kills = rt.kills();
    let term = kills
        .iter()
        .find(|k| k.0 == "t1-stubborn" && k.1 == 15)
        .expect("SIGTERM sent");
    let kill = kills
        .iter()
        .find(|k| k.0 == "t1-stubborn" && k.1 == 9)
        .expect("SIGKILL sent");
    assert_eq!(kill.2 - term.2, std::time::Duration::from_secs(5));
    assert!(
        !kills.iter().any(|k| k.0 == "t1-polite" && k.1 == 9),
        "polite container needed no SIGKILL"
    );
    assert!(
        !kills.iter().any(|k| k.0 == "t1-app"),
        "the exited container is not signalled"
    );
    assert!(
        stopped.stopping_at.is_some()
            && stopped.execution_stopped_at.is_some()
            && stopped.stopped_at.is_some()
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn non_essential_exit_keeps_the_task_running_until_user_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    let spec = task(vec![
        container("app", "busybox", true),
        container("side", "busybox", false),
    ]);
    h.desire(vec![spec.clone()]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    rt.exit("t1-side", 4);
    let r = h
        .until("side exit", |r| r.containers[1].exit_code == Some(4))
        .await;
    assert_eq!(r.last_status, TaskStatus::Running);
    let mut stop = spec;
    stop.desired_status = DesiredStatus::Stopped;
    stop.stop_reason = Some("Task stopped by test".into());
    h.desire(vec![stop]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Task stopped by test")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(143));
    assert_eq!(stopped.containers[1].exit_code, Some(4));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pull_failure_fails_the_task_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![
        container("ok", "busybox", true),
        container("bad", "nosuch:1", true),
    ])]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = "CannotPullContainerError: nosuch:1: manifest unknown";
    assert_eq!(stopped.stopped_reason.as_deref(), Some(reason));
    assert_eq!(stopped.containers[1].reason.as_deref(), Some(reason));
    assert!(stopped.started_at.is_none());
    assert!(
        !h.seen.iter().any(|r| r.last_status == TaskStatus::Running),
        "never RUNNING"
    );
    assert_eq!(rt.create_count(), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unsupported_network_mode_is_reported_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut spec = task(vec![container("app", "busybox", true)]);
    spec.network_mode = "nat".into();
    h.desire(vec![spec]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(stopped
        .stopped_reason
        .as_deref()
        .is_some_and(|r| r.contains("network mode nat is not supported")));
    assert!(rt.pulls().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn restart_readopts_without_duplicating_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let spec = task(vec![container("app", "busybox", true)]);
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![spec.clone()]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    h.stop().await;
    assert_eq!(
        rt.ids(),
        vec!["t1-app".to_string()],
        "tasks keep running while the agent is down"
    );

    let mut h = Harness::start(rt.clone(), dir.path());
    assert_eq!(h.version, 1, "desired version persisted");
    // The coordinator repeats the same desired state after the restart.
    h.desire(vec![spec]);
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    assert_eq!(rt.create_count(), 1, "no second container");
    rt.exit("t1-app", 0);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.containers[0].exit_code, Some(0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn task_that_exited_while_the_agent_was_down_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let spec = task(vec![container("app", "busybox", true)]);
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![spec.clone()]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    h.stop().await;
    rt.exit("t1-app", 7);

    // No new desired state arrives: the persisted one is enough to act.
    let mut h = Harness::start(rt.clone(), dir.path());
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(stopped.containers[0].exit_code, Some(7));
    assert_eq!(rt.create_count(), 1, "not re-run");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn containers_of_unwanted_tasks_are_stopped_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![container("app", "busybox", true)])]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    h.stop().await;
    // The state file is lost; containerd still runs the task.
    std::fs::remove_file(dir.path().join(crate::state::STATE_FILE)).expect("remove state");
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.containers[0].exit_code, Some(143));
    for _ in 0..50 {
        if rt.ids().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rt.ids().is_empty(), "orphan removed");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn depends_on_success_orders_and_gates_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut app = container("app", "busybox", true);
    app.depends_on = vec![berth_api::ContainerDependency {
        container_name: "init".into(),
        condition: "SUCCESS".into(),
    }];
    h.desire(vec![task(vec![app, container("init", "busybox", false)])]);
    h.until("init running", |r| {
        r.containers
            .iter()
            .any(|c| c.name == "init" && c.last_status == ContainerStatus::Running)
    })
    .await;
    assert_eq!(rt.create_count(), 1, "app waits for init");
    rt.exit("t1-init", 0);
    let running = h.until("RUNNING", status(TaskStatus::Running)).await;
    assert_eq!(running.containers[0].last_status, ContainerStatus::Running);
    assert_eq!(running.containers[1].exit_code, Some(0));
    assert_eq!(rt.create_count(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_dependency_wait_cancels_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut app = container("app", "busybox", true);
    app.depends_on = vec![berth_api::ContainerDependency {
        container_name: "init".into(),
        condition: "COMPLETE".into(),
    }];
    let spec = task(vec![app, container("init", "busybox", false)]);
    h.desire(vec![spec.clone()]);
    h.until("init running", |r| {
        r.containers
            .iter()
            .any(|c| c.name == "init" && c.last_status == ContainerStatus::Running)
    })
    .await;
    let mut stop = spec;
    stop.desired_status = DesiredStatus::Stopped;
    h.desire(vec![stop]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(rt.create_count(), 1, "app never created");
    assert_eq!(stopped.containers[1].exit_code, Some(143));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn deregistration_stops_and_removes_everything_then_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![container("app", "busybox", true)])]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    h.events
        .send(Event::Desired {
            version: 2,
            tasks: vec![],
            deregistered: true,
            awsvpc_network: None,
        })
        .expect("driver alive");
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.containers[0].exit_code, Some(143));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), &mut h.join)
        .await
        .expect("driver returns")
        .expect("join")
        .expect("driver ok");
    assert_eq!(outcome, Outcome::Deregistered);
    assert!(rt.ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_start_interrupted_after_create_resumes_with_the_same_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let spec = task(vec![
        container("app", "busybox", true),
        container("side", "busybox", false),
    ]);
    // The previous agent created `app` and died before starting it (and
    // before persisting anything).
    let image = rt.pull("busybox").await.expect("image");
    let req = procspec::create_request(
        &spec,
        &spec.containers[0],
        &image,
        &dir.path().join("logs"),
        crate::runtime::NetworkNamespace::Host,
    )
    .expect("request");
    rt.create(&req).await.expect("create");
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![spec]);
    let running = h.until("RUNNING", status(TaskStatus::Running)).await;
    assert!(running
        .containers
        .iter()
        .all(|c| c.last_status == ContainerStatus::Running));
    assert_eq!(rt.create_count(), 2, "app reused, only side created");
    assert_eq!(rt.ids(), vec!["t1-app".to_string(), "t1-side".to_string()]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn logs_rotate_while_running_and_go_with_the_tombstone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut cfg = DriverConfig::new(dir.path().to_path_buf());
    cfg.tombstone_ttl = std::time::Duration::ZERO;
    cfg.log_rotation = RotationPolicy {
        max_bytes: 8,
        keep: 1,
    };
    let logs_dir = cfg.logs_dir.clone();
    let mut h = Harness::start_with(rt.clone(), cfg);
    let spec = task(vec![container("app", "busybox", true)]);
    h.desire(vec![spec.clone()]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    let (stdout, _) = procspec::log_paths(&logs_dir, ARN, "app");
    std::fs::write(&stdout, b"more than eight bytes").expect("write log");
    let rotated = {
        let mut p = stdout.clone().into_os_string();
        p.push(".1");
        std::path::PathBuf::from(p)
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        for _ in 0..200 {
            if cond() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{what}");
    };
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    wait_for("log rotated", &|| rotated.exists());
    assert_eq!(std::fs::metadata(&stdout).expect("stat").len(), 0);

    rt.exit("t1-app", 0);
    h.until("STOPPED", status(TaskStatus::Stopped)).await;
    h.desire(vec![]);
    // Deleted, forgotten, tombstone pruned on a tick: the logs go too.
    let task_logs = logs_dir.join("t1");
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        if !task_logs.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    wait_for("task logs removed", &|| !task_logs.exists());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn prefer_cached_pull_behavior_uses_the_local_image_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut cfg = DriverConfig::new(dir.path().to_path_buf());
    cfg.pull_behavior = crate::config::PullBehavior::PreferCached;
    let mut h = Harness::start_with(rt.clone(), cfg);
    h.desire(vec![task(vec![container("app", "busybox", true)])]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    assert_eq!(rt.pulls(), vec!["cached:busybox".to_string()]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_stop_is_retried_on_the_timer_not_in_a_hot_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    let spec = task(vec![container("app", "busybox", true)]);
    h.desire(vec![spec.clone()]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    rt.lock().kill_fails = true;
    let mut stop = spec;
    stop.desired_status = DesiredStatus::Stopped;
    h.desire(vec![stop]);
    // SIGTERM fails, the wait times out (30 s), SIGKILL fails: one attempt.
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    let attempts = rt.kills().len();
    assert!(
        (2..=4).contains(&attempts),
        "bounded attempts, got {attempts}"
    );
    rt.lock().kill_fails = false;
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    // The retry that succeeds is a SIGTERM, or a SIGKILL if a retry that
    // started while kills still failed was already waiting out its timeout.
    let code = stopped.containers[0].exit_code;
    assert!(code == Some(143) || code == Some(137), "{code:?}");
    h.stop().await;
}

fn with_check(
    mut c: ContainerSpec,
    interval: u32,
    retries: u32,
    start_period: Option<u32>,
) -> ContainerSpec {
    c.health_check = Some(berth_api::HealthCheck {
        command: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
        interval: Some(interval),
        timeout: Some(2),
        retries: Some(retries),
        start_period,
    });
    c
}

fn health_of(name: &'static str, want: HealthStatus) -> impl Fn(&TaskReport) -> bool {
    move |r| {
        r.containers
            .iter()
            .any(|c| c.name == name && c.health_status == Some(want))
    }
}

#[tokio::test(start_paused = true)]
async fn health_check_makes_the_container_healthy_one_interval_after_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![
        with_check(container("app", "busybox", true), 5, 3, None),
        container("side", "busybox", true),
    ])]);
    let running = h.until("RUNNING", status(TaskStatus::Running)).await;
    let started = Instant::now();
    assert_eq!(
        running.containers[0].health_status,
        Some(HealthStatus::Unknown)
    );
    assert_eq!(
        running.containers[1].health_status, None,
        "no check, no health"
    );
    let healthy = h
        .until("app HEALTHY", health_of("app", HealthStatus::Healthy))
        .await;
    assert_eq!(healthy.last_status, TaskStatus::Running);
    let execs = rt.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].0, "t1-app");
    assert_eq!(execs[0].1, vec!["/bin/sh", "-c", "test -f /tmp/ok"]);
    let first_after = execs[0].2 - started;
    assert!(
        first_after >= std::time::Duration::from_millis(4900)
            && first_after <= std::time::Duration::from_millis(5100),
        "first check one interval after start, got {first_after:?}"
    );
    // Checks go on every interval; an unchanged verdict sends no report.
    tokio::time::sleep(std::time::Duration::from_secs(21)).await;
    assert_eq!(rt.execs().len(), 5);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_up_to_retries_make_it_unhealthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    rt.script_exec(
        "app",
        &[
            FakeExec::Exit(0),
            FakeExec::Exit(1),
            FakeExec::Exit(1),
            FakeExec::Exit(0),
            FakeExec::Exit(1),
            FakeExec::Exit(1),
        ],
    );
    rt.exec_default("app", FakeExec::Exit(1));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![with_check(
        container("app", "busybox", true),
        5,
        3,
        None,
    )])]);
    h.until("app HEALTHY", health_of("app", HealthStatus::Healthy))
        .await;
    let unhealthy = h
        .until("app UNHEALTHY", health_of("app", HealthStatus::Unhealthy))
        .await;
    // pass, fail, fail, pass (streak reset), fail, fail, fail → UNHEALTHY.
    assert_eq!(rt.execs().len(), 7);
    assert_eq!(
        unhealthy.last_status,
        TaskStatus::Running,
        "a standalone task keeps running"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_within_the_start_period_do_not_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    rt.exec_default("app", FakeExec::Exit(1));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![with_check(
        container("app", "busybox", true),
        5,
        1,
        Some(12),
    )])]);
    h.until("RUNNING", status(TaskStatus::Running)).await;
    let started = Instant::now();
    h.until("app UNHEALTHY", health_of("app", HealthStatus::Unhealthy))
        .await;
    // Checks at 5 s and 10 s fall in the 12 s start period; the one at 15 s counts.
    let execs = rt.execs();
    assert_eq!(execs.len(), 3);
    assert!(execs[2].2 - started >= std::time::Duration::from_secs(12));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_unstartable_commands_fail_but_an_unreachable_runtime_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    rt.script_exec(
        "app",
        &[
            FakeExec::Exit(0),
            FakeExec::Unreachable,
            FakeExec::Hang,
            FakeExec::Unreachable,
            FakeExec::CannotStart,
        ],
    );
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![with_check(
        container("app", "busybox", true),
        5,
        2,
        None,
    )])]);
    h.until("app HEALTHY", health_of("app", HealthStatus::Healthy))
        .await;
    h.until("app UNHEALTHY", health_of("app", HealthStatus::Unhealthy))
        .await;
    assert_eq!(
        rt.execs().len(),
        5,
        "the timeout and the unstartable command were the two failures"
    );
    let seen_unhealthy_before = h
        .seen
        .iter()
        .filter(|r| health_of("app", HealthStatus::Unhealthy)(r))
        .count();
    assert_eq!(seen_unhealthy_before, 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_checker_stops_with_the_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![with_check(
        container("app", "busybox", true),
        5,
        3,
        None,
    )])]);
    h.until("app HEALTHY", health_of("app", HealthStatus::Healthy))
        .await;
    rt.exit("t1-app", 3);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(
        stopped.containers[0].health_status,
        Some(HealthStatus::Healthy),
        "the last verdict is kept"
    );
    let execs = rt.execs().len();
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(rt.execs().len(), execs, "no checks after the exit");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_checks_readopted_containers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let spec = task(vec![with_check(
        container("app", "busybox", true),
        5,
        3,
        None,
    )]);
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![spec.clone()]);
    h.until("app HEALTHY", health_of("app", HealthStatus::Healthy))
        .await;
    // Let the driver take the acknowledgement of the HEALTHY report.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    h.stop().await;
    let before = rt.execs().len();
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(
        rt.execs().len(),
        before,
        "no checker while the agent is down"
    );

    rt.script_exec("app", &[FakeExec::Exit(1)]);
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![spec]);
    h.until(
        "app UNKNOWN after re-adoption",
        health_of("app", HealthStatus::Unknown),
    )
    .await;
    h.until("app HEALTHY again", health_of("app", HealthStatus::Healthy))
        .await;
    assert_eq!(rt.execs().len(), before + 2, "one failure, then a pass");
    assert_eq!(rt.create_count(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn depends_on_healthy_starts_the_dependent_once_the_dependency_is_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    rt.script_exec("db", &[FakeExec::Exit(1), FakeExec::Exit(0)]);
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut app = container("app", "busybox", true);
    app.depends_on = vec![berth_api::ContainerDependency {
        container_name: "db".into(),
        condition: "HEALTHY".into(),
    }];
    h.desire(vec![task(vec![
        app,
        with_check(container("db", "busybox", true), 5, 3, None),
    ])]);
    h.until("db running", |r| {
        r.containers
            .iter()
            .any(|c| c.name == "db" && c.last_status == ContainerStatus::Running)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert_eq!(rt.execs().len(), 1, "one failed check so far");
    assert_eq!(rt.create_count(), 1, "app waits for db to be HEALTHY");
    let running = h.until("RUNNING", status(TaskStatus::Running)).await;
    assert_eq!(rt.execs().len(), 2);
    assert_eq!(rt.create_count(), 2);
    assert_eq!(running.containers[0].last_status, ContainerStatus::Running);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn depends_on_healthy_fails_the_start_when_the_dependency_is_unhealthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    rt.exec_default("db", FakeExec::Exit(1));
    let mut h = Harness::start(rt.clone(), dir.path());
    let mut app = container("app", "busybox", true);
    app.depends_on = vec![berth_api::ContainerDependency {
        container_name: "db".into(),
        condition: "HEALTHY".into(),
    }];
    let mut plain = container("plain", "busybox", false);
    plain.depends_on = vec![berth_api::ContainerDependency {
        container_name: "app".into(),
        condition: "HEALTHY".into(),
    }];
    h.desire(vec![task(vec![
        app,
        with_check(container("db", "busybox", true), 5, 2, None),
    ])]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.containers[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("dependency db is UNHEALTHY"), "{reason}");
    assert_eq!(rt.create_count(), 1, "app never created");
    h.stop().await;

    // A HEALTHY dependency on a container without a health check fails at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::default().with_image("busybox"));
    let mut h = Harness::start(rt.clone(), dir.path());
    h.desire(vec![task(vec![container("app", "busybox", true), plain])]);
    let stopped = h.until("STOPPED", status(TaskStatus::Stopped)).await;
    let reason = stopped.containers[1].reason.clone().unwrap_or_default();
    assert!(reason.contains("has no health check"), "{reason}");
    h.stop().await;
}
