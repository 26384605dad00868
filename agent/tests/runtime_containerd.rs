//! End-to-end tests of `ContainerdRuntime` against a real containerd 1.6 and
//! a real local registry, each test with its own of both (see `support`).
//! Root only; without root every test prints a SKIPPED line and passes.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_agent::runtime::containerd::ContainerdRuntime;
use berth_agent::runtime::{
    CreateRequest, ImageConfig, NetworkNamespace, ObservedState, RegistryConfig, Runtime,
    RuntimeError, LABEL_CONTAINER_NAME, LABEL_TASK_ARN,
};
use support::{Containerd, ImageOptions, PushedImage, Registry};

struct Env {
    rt: ContainerdRuntime,
    image: PushedImage,
    logs: tempfile::TempDir,
    registry: Registry,
    ctd: Containerd,
}

fn insecure(registry: &Registry) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![registry.addr.clone()],
        auth: BTreeMap::new(),
    }
}

async fn setup(test: &str, opts: ImageOptions) -> Option<Env> {
    if !support::require_root(test) {
        return None;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "berth_agent=debug".into()),
        )
        .with_test_writer()
        .try_init();
    let ctd = Containerd::start().expect("start containerd");
    let registry = Registry::start().expect("start registry");
    let image = support::push_busybox(&registry.addr, "test/busybox", "1", &opts)
        .await
        .expect("push test image");
    let rt = ContainerdRuntime::connect(&ctd.socket, "berth", insecure(&registry))
        .await
        .expect("connect");
    let logs = tempfile::tempdir().expect("logs dir");
    Some(Env {
        rt,
        image,
        logs,
        registry,
        ctd,
    })
}

impl Env {
    fn request(&self, id: &str, args: &[&str], image_config: &ImageConfig) -> CreateRequest {
        CreateRequest {
            id: id.to_string(),
            image: self.image.reference.clone(),
            image_config: image_config.clone(),
            labels: BTreeMap::from([
                (
                    LABEL_TASK_ARN.to_string(),
                    format!("arn:aws:ecs:r:1:task/c/{id}"),
                ),
                (LABEL_CONTAINER_NAME.to_string(), format!("name-{id}")),
            ]),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: image_config.env.clone(),
            cwd: "/".to_string(),
            user: None,
            cpu_shares: None,
            memory_limit: None,
            memory_reservation: None,
            network: NetworkNamespace::New,
            hostname: None,
            privileged: false,
            readonly_rootfs: false,
            stdout_path: self.logs.path().join(id).join("stdout"),
            stderr_path: self.logs.path().join(id).join("stderr"),
        }
    }

    fn stdout(&self, id: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(id).join("stdout")).unwrap_or_default()
    }

    fn stderr(&self, id: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(id).join("stderr")).unwrap_or_default()
    }

    /// create + start + wait with a timeout; returns the exit code once the
    /// container's log files have settled (the shim copies output to them
    /// asynchronously, so the last line can land just after the exit).
    async fn run(&self, req: &CreateRequest) -> i32 {
        self.rt.create(req).await.expect("create");
        self.rt.start(&req.id).await.expect("start");
        let code = tokio::time::timeout(Duration::from_secs(30), self.rt.wait(&req.id))
            .await
            .expect("container did not exit within 30s")
            .expect("wait");
        let sizes = || {
            ["stdout", "stderr"].map(|f| {
                std::fs::metadata(self.logs.path().join(&req.id).join(f)).map_or(0, |m| m.len())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = sizes();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sizes();
            if now == last {
                break;
            }
            last = now;
        }
        code
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_is_idempotent_and_fast() {
    let Some(env) = setup("pull_is_idempotent_and_fast", ImageOptions::default()).await else {
        return;
    };
    let t = Instant::now();
    let cfg = env.rt.pull(&env.image.reference).await.expect("first pull");
    let first = t.elapsed();
    assert_eq!(cfg.cmd, vec!["sh".to_string()]);
    assert_eq!(cfg.digest, env.image.manifest_digest);
    assert!(cfg.env.iter().any(|e| e.starts_with("PATH=")));
    // One layer: its chain id is its diff id.
    assert!(env.rt.has_snapshot(&env.image.diff_id).await.expect("stat"));

    let t = Instant::now();
    let again = env
        .rt
        .pull(&env.image.reference)
        .await
        .expect("second pull");
    let second = t.elapsed();
    assert_eq!(again, cfg);

    // A fresh runtime (empty cache) finds everything in containerd.
    let rt2 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    let t = Instant::now();
    let third = rt2.pull(&env.image.reference).await.expect("third pull");
    let third_t = t.elapsed();
    assert_eq!(third, cfg);
    let t = Instant::now();
    let local = rt2
        .pull_if_missing(&env.image.reference)
        .await
        .expect("pull_if_missing");
    let local_t = t.elapsed();
    assert_eq!(local, cfg);
    eprintln!(
        "pull timings: first {first:?}, repeat {second:?}, repeat from a new client {third_t:?}, pull_if_missing {local_t:?}"
    );
    assert!(
        second < Duration::from_millis(250),
        "repeat pull took {second:?}"
    );
    assert!(
        second < first,
        "repeat pull ({second:?}) not faster than first ({first:?})"
    );

    // The registry moved the tag: pull notices and fetches the new image.
    let moved = support::push_busybox(
        &env.registry.addr,
        "test/busybox",
        "1",
        &ImageOptions {
            label: Some("v2".into()),
            ..Default::default()
        },
    )
    .await
    .expect("push v2");
    assert_ne!(moved.manifest_digest, env.image.manifest_digest);
    let cfg2 = env
        .rt
        .pull(&env.image.reference)
        .await
        .expect("pull moved tag");
    assert_eq!(cfg2.digest, moved.manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_manifest_without_media_type() {
    let opts = ImageOptions {
        omit_media_type: true,
        ..Default::default()
    };
    let Some(env) = setup("pull_manifest_without_media_type", opts).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    assert_eq!(cfg.digest, env.image.manifest_digest);
    let req = env.request("nomt", &["sh", "-c", "echo ok"], &cfg);
    assert_eq!(env.run(&req).await, 0);
    assert_eq!(env.stdout("nomt"), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_name_the_image() {
    let Some(env) = setup("pull_errors_name_the_image", ImageOptions::default()).await else {
        return;
    };
    let missing = format!("{}/nope:latest", env.registry.addr);
    match env.rt.pull(&missing).await {
        Err(RuntimeError::Pull(msg)) => {
            let full = RuntimeError::Pull(msg.clone()).to_string();
            assert!(full.starts_with("CannotPullContainerError: "), "{full}");
            assert!(msg.contains(&missing), "{msg}");
            assert!(msg.contains("manifest unknown"), "{msg}");
        }
        other => panic!("expected Pull error, got {other:?}"),
    }
    let missing_tag = format!("{}/test/busybox:nosuchtag", env.registry.addr);
    match env.rt.pull(&missing_tag).await {
        Err(RuntimeError::Pull(msg)) => assert!(msg.contains(&missing_tag), "{msg}"),
        other => panic!("expected Pull error, got {other:?}"),
    }

    // The same registry, not marked insecure: HTTPS to a plain-HTTP server fails.
    let strict = ContainerdRuntime::connect(&env.ctd.socket, "berth", RegistryConfig::default())
        .await
        .expect("connect");
    match strict.pull(&env.image.reference).await {
        Err(RuntimeError::Pull(msg)) => {
            assert!(msg.contains(&env.image.reference), "{msg}");
            eprintln!("HTTPS to an HTTP registry: {msg}");
        }
        other => panic!("expected Pull error over HTTPS, got {other:?}"),
    }

    // Nothing was pulled, so there is nothing to create a container from.
    let req = env.request("nopull", &["true"], &ImageConfig::default());
    let mut req = req;
    req.image = missing.clone();
    match env.rt.create(&req).await {
        Err(RuntimeError::Create(msg)) => assert!(msg.contains("not pulled"), "{msg}"),
        other => panic!("expected Create error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reports_exit_code_and_stdout() {
    let Some(env) = setup("run_reports_exit_code_and_stdout", ImageOptions::default()).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let req = env.request(
        "hello",
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        &cfg,
    );
    let t = Instant::now();
    env.rt.create(&req).await.expect("create");
    let created = t.elapsed();
    let pid = env.rt.start("hello").await.expect("start");
    let started = t.elapsed();
    assert!(pid > 0);
    let code = env.rt.wait("hello").await.expect("wait");
    eprintln!(
        "create {created:?}, create+start {started:?}, +wait {:?}",
        t.elapsed()
    );
    assert_eq!(code, 3);
    // containerd 1.6's runc shim writes both streams of a `file://` stdout
    // URI into that one file (it ignores the stderr URI); the two pipes are
    // copied concurrently, so the lines may interleave in either order.
    let mut lines: Vec<String> = env.stdout("hello").lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, vec!["hello".to_string(), "oops".to_string()]);
    // wait again after exit: same answer.
    assert_eq!(env.rt.wait("hello").await.expect("wait again"), 3);
    // A command that does not exist fails at start, naming the problem.
    let bad = env.request("badcmd", &["/no/such/binary"], &cfg);
    env.rt.create(&bad).await.expect("create");
    match env.rt.start("badcmd").await {
        Err(RuntimeError::Start(msg)) => assert!(msg.contains("badcmd"), "{msg}"),
        other => panic!("expected Start error, got {other:?}"),
    }
    env.rt.delete("badcmd").await.expect("delete badcmd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_long_running_containers() {
    let Some(env) = setup(
        "kill_stops_long_running_containers",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");

    // PID 1 in a pid namespace ignores signals it has no handler for, so a
    // bare `sleep` only dies from SIGKILL; a shell with a TERM trap exits on 15.
    let term = env.request(
        "term",
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; echo ready; while true; do sleep 1; done",
        ],
        &cfg,
    );
    env.rt.create(&term).await.expect("create");
    env.rt.start("term").await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.stdout("term") != "ready\n" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.rt.kill("term", 15).await.expect("kill 15");
    let code = tokio::time::timeout(Duration::from_secs(10), env.rt.wait("term"))
        .await
        .expect("SIGTERM did not end the container")
        .expect("wait");
    assert_eq!(code, 143);

    let sleeper = env.request("sleeper", &["sleep", "1000"], &cfg);
    env.rt.create(&sleeper).await.expect("create");
    env.rt.start("sleeper").await.expect("start");
    env.rt.kill("sleeper", 9).await.expect("kill 9");
    let code = tokio::time::timeout(Duration::from_secs(10), env.rt.wait("sleeper"))
        .await
        .expect("SIGKILL did not end the container")
        .expect("wait");
    assert_eq!(code, 137);

    // Killing an exited task, or a container that does not exist, is fine.
    env.rt.kill("sleeper", 15).await.expect("kill exited");
    env.rt
        .kill("no-such-container", 15)
        .await
        .expect("kill missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_has_containerd_defaults_and_request_applied() {
    let opts = ImageOptions {
        env: vec!["FOO=from-image".into(), "KEEP=image".into()],
        working_dir: Some("/srv".into()),
        ..Default::default()
    };
    let Some(env) = setup("spec_has_containerd_defaults_and_request_applied", opts).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    assert_eq!(cfg.working_dir.as_deref(), Some("/srv"));
    let mut req = env.request(
        "spec",
        &[
            "sh",
            "-c",
            "echo \"$FOO $KEEP\"; pwd; id -u; id -g; hostname",
        ],
        &cfg,
    );
    // The definition overrides FOO; the image's KEEP stays.
    req.env = cfg
        .env
        .iter()
        .filter(|e| !e.starts_with("FOO="))
        .cloned()
        .chain(["FOO=from-task".to_string()])
        .collect();
    req.cwd = "/srv".into();
    req.user = Some("web".into());
    req.hostname = Some("spec-host".into());
    req.cpu_shares = Some(512);
    req.memory_limit = Some(64 << 20);
    req.memory_reservation = Some(32 << 20);
    env.rt.create(&req).await.expect("create");

    let spec: oci_spec::runtime::Spec =
        serde_json::from_value(env.rt.container_spec("spec").await.expect("spec"))
            .expect("stored spec parses as an OCI spec");
    use oci_spec::runtime::Capability;
    let process = spec.process().as_ref().expect("process");
    let caps = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .expect("caps");
    for cap in [
        Capability::Chown,
        Capability::NetBindService,
        Capability::Kill,
    ] {
        assert!(caps.contains(&cap), "{cap:?} missing");
    }
    assert!(!caps.contains(&Capability::SysAdmin));
    assert_eq!(caps.len(), 14);
    assert_eq!(process.user().uid(), 1000);
    assert_eq!(process.user().gid(), 1001);
    let linux = spec.linux().as_ref().expect("linux");
    let masked = linux.masked_paths().clone().unwrap_or_default();
    assert!(masked.contains(&"/proc/kcore".to_string()), "{masked:?}");
    let resources = linux.resources().as_ref().expect("resources");
    assert_eq!(resources.cpu().as_ref().and_then(|c| c.shares()), Some(512));
    assert_eq!(
        resources.memory().as_ref().and_then(|m| m.limit()),
        Some(64 << 20)
    );
    assert_eq!(
        resources.memory().as_ref().and_then(|m| m.reservation()),
        Some(32 << 20)
    );
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(std::path::Path::new("/berth/spec"))
    );

    env.rt.start("spec").await.expect("start");
    let code = env.rt.wait("spec").await.expect("wait");
    assert_eq!(code, 0, "stderr: {}", env.stderr("spec"));
    assert_eq!(
        env.stdout("spec"),
        "from-task image\n/srv\n1000\n1001\nspec-host\n"
    );

    // An unknown user fails at create and names the user; nothing is left.
    let mut bad = env.request("baduser", &["true"], &cfg);
    bad.user = Some("ghost".into());
    match env.rt.create(&bad).await {
        Err(RuntimeError::Create(msg)) => assert!(msg.contains("ghost"), "{msg}"),
        other => panic!("expected Create error, got {other:?}"),
    }
    assert!(!env.rt.has_snapshot("baduser").await.expect("stat"));
    assert!(env
        .rt
        .list()
        .await
        .expect("list")
        .iter()
        .all(|c| c.id != "baduser"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_namespace_modes() {
    let Some(env) = setup("network_namespace_modes", ImageOptions::default()).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let own = env.request("netnew", &["ls", "/sys/class/net"], &cfg);
    assert_eq!(env.run(&own).await, 0);
    assert_eq!(env.stdout("netnew").trim(), "lo");

    let mut host = env.request("nethost", &["ls", "/sys/class/net"], &cfg);
    host.network = NetworkNamespace::Host;
    assert_eq!(env.run(&host).await, 0);
    let mut host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("host ifaces")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_ifaces.sort();
    let mut seen: Vec<String> = env
        .stdout("nethost")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    seen.sort();
    assert_eq!(seen, host_ifaces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_delete() {
    let Some(env) = setup("list_and_delete", ImageOptions::default()).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let req = env.request("lister", &["sleep", "1000"], &cfg);
    env.rt.create(&req).await.expect("create");

    let find = |all: Vec<berth_agent::runtime::ObservedContainer>| {
        all.into_iter().find(|c| c.id == "lister").expect("listed")
    };
    let c = find(env.rt.list().await.expect("list"));
    assert_eq!(c.state, ObservedState::Created);
    assert_eq!(
        c.labels.get(LABEL_TASK_ARN).map(String::as_str),
        Some("arn:aws:ecs:r:1:task/c/lister")
    );
    assert_eq!(
        c.labels.get(LABEL_CONTAINER_NAME).map(String::as_str),
        Some("name-lister")
    );

    let pid = env.rt.start("lister").await.expect("start");
    let c = find(env.rt.list().await.expect("list"));
    assert_eq!(c.state, ObservedState::Running { pid });
    // start again while running: same task, same pid (re-adoption).
    assert_eq!(env.rt.start("lister").await.expect("start again"), pid);

    // A running container cannot be deleted.
    assert!(env.rt.delete("lister").await.is_err());
    assert!(env.rt.has_snapshot("lister").await.expect("stat"));

    env.rt.kill("lister", 9).await.expect("kill");
    assert_eq!(env.rt.wait("lister").await.expect("wait"), 137);
    let c = find(env.rt.list().await.expect("list"));
    assert_eq!(c.state, ObservedState::Exited { exit_code: 137 });

    env.rt.delete("lister").await.expect("delete");
    env.rt.delete("lister").await.expect("delete again");
    env.rt
        .delete("never-existed")
        .await
        .expect("delete missing");
    assert!(!env.rt.has_snapshot("lister").await.expect("stat"));
    assert!(env
        .rt
        .list()
        .await
        .expect("list")
        .iter()
        .all(|c| c.id != "lister"));
    match env.rt.wait("lister").await {
        Err(RuntimeError::NotFound(id)) => assert_eq!(id, "lister"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The image survives container deletion.
    assert!(env.rt.has_snapshot(&env.image.diff_id).await.expect("stat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_can_wait_on_existing_task() {
    let Some(env) = setup(
        "restarted_agent_can_wait_on_existing_task",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let req = env.request("survivor", &["sh", "-c", "sleep 1; exit 7"], &cfg);
    env.rt.create(&req).await.expect("create");
    let pid = env.rt.start("survivor").await.expect("start");

    // A new client with no memory of the first (the agent restarted).
    let rt2 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    let listed = rt2.list().await.expect("list");
    let c = listed.iter().find(|c| c.id == "survivor").expect("listed");
    assert_eq!(c.state, ObservedState::Running { pid });
    assert_eq!(rt2.start("survivor").await.expect("re-adopt"), pid);
    assert_eq!(rt2.wait("survivor").await.expect("wait"), 7);
    // And once more after it exited, from yet another client.
    let rt3 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    assert_eq!(rt3.wait("survivor").await.expect("wait exited"), 7);
    // A restarted agent can create from an image pulled before the restart
    // without asking the registry (the cache is rebuilt from containerd).
    let again = env.request("after-restart", &["sh", "-c", "exit 4"], &cfg);
    rt3.create(&again).await.expect("create after restart");
    rt3.start("after-restart").await.expect("start");
    assert_eq!(rt3.wait("after-restart").await.expect("wait"), 4);

    // An agent that stopped between Containers.Create and Snapshots.Prepare
    // left a container without a rootfs snapshot: start finishes the job.
    let half = env.request("half-made", &["sh", "-c", "exit 6"], &cfg);
    rt3.create(&half).await.expect("create");
    ctr(
        &env.ctd,
        &["snapshots", "--snapshotter", "overlayfs", "rm", "half-made"],
    );
    assert!(!rt3.has_snapshot("half-made").await.expect("stat"));
    let rt4 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    rt4.start("half-made").await.expect("start heals");
    assert_eq!(rt4.wait("half-made").await.expect("wait"), 6);
}

/// `user:bcrypt("berth-pass")` for the registry's htpasswd file.
const HTPASSWD: &str = "berth:$2b$04$K7hY4oMewZZtcRWpxHPCku8nU6C7srjgqtkQ2pOnTkxo.SkXqFVWq";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_index_with_basic_auth() {
    if !support::require_root("pull_index_with_basic_auth") {
        return;
    }
    let ctd = Containerd::start().expect("start containerd");
    let registry = Registry::start_with_auth(HTPASSWD).expect("start registry");
    let creds = ("berth".to_string(), "berth-pass".to_string());
    let image = support::push_busybox(
        &registry.addr,
        "secure/busybox",
        "multi",
        &ImageOptions {
            as_index: true,
            auth: Some(creds.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("push index");

    // No credentials: refused, and the error says which image.
    let anon = ContainerdRuntime::connect(&ctd.socket, "berth", insecure(&registry))
        .await
        .expect("connect");
    match anon.pull(&image.reference).await {
        Err(RuntimeError::Pull(msg)) => assert!(msg.contains(&image.reference), "{msg}"),
        other => panic!("expected Pull error without credentials, got {other:?}"),
    }
    // Wrong password: refused.
    let mut wrong = insecure(&registry);
    wrong.auth.insert(
        registry.addr.clone(),
        ("berth".to_string(), "not-the-password".to_string()),
    );
    let wrong_rt = ContainerdRuntime::connect(&ctd.socket, "berth", wrong)
        .await
        .expect("connect");
    assert!(matches!(
        wrong_rt.pull(&image.reference).await,
        Err(RuntimeError::Pull(_))
    ));

    // Right password: the index resolves to the linux/amd64 manifest.
    let mut cfg_ok = insecure(&registry);
    cfg_ok.auth.insert(registry.addr.clone(), creds);
    let rt = ContainerdRuntime::connect(&ctd.socket, "other-ns", cfg_ok)
        .await
        .expect("connect");
    let cfg = rt.pull(&image.reference).await.expect("pull with auth");
    assert_eq!(cfg.cmd, vec!["sh".to_string()], "wrong platform chosen");
    assert_eq!(cfg.digest, image.manifest_digest, "digest is the index's");
    let logs = tempfile::tempdir().expect("logs");
    let req = CreateRequest {
        id: "idx".into(),
        image: image.reference.clone(),
        image_config: cfg.clone(),
        labels: BTreeMap::new(),
        args: vec!["sh".into(), "-c".into(), "echo from-index".into()],
        env: cfg.env.clone(),
        cwd: "/".into(),
        user: None,
        cpu_shares: None,
        memory_limit: None,
        memory_reservation: None,
        network: NetworkNamespace::New,
        hostname: None,
        privileged: false,
        readonly_rootfs: false,
        stdout_path: logs.path().join("idx.out"),
        stderr_path: logs.path().join("idx.err"),
    };
    rt.create(&req).await.expect("create");
    rt.start("idx").await.expect("start");
    assert_eq!(rt.wait("idx").await.expect("wait"), 0);
    assert_eq!(
        std::fs::read_to_string(logs.path().join("idx.out")).expect("stdout"),
        "from-index\n"
    );
    // A second namespace has its own snapshots: the other runtime's namespace
    // has none of this container.
    assert!(anon.list().await.expect("list").is_empty());
    drop(rt);
    drop(ctd);
}

/// Run `ctr` against the test's containerd in the agent's namespace.
fn ctr(ctd: &Containerd, args: &[&str]) -> String {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .args(["--namespace", "berth"])
        .args(args)
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_survive_garbage_collection() {
    let Some(env) = setup(
        "concurrent_pulls_survive_garbage_collection",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let rt2 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    let (a, b, c) = tokio::join!(
        env.rt.pull(&env.image.reference),
        rt2.pull(&env.image.reference),
        env.rt.pull(&env.image.reference),
    );
    let a = a.expect("pull a");
    assert_eq!(a, b.expect("pull b"));
    assert_eq!(a, c.expect("pull c"));

    // No pull leases left behind; then force a synchronous GC.
    let leases = ctr(&env.ctd, &["leases", "ls", "-q"]);
    assert!(leases.trim().is_empty(), "leftover leases: {leases}");
    ctr(&env.ctd, &["leases", "create", "--id", "gc-trigger"]);
    ctr(&env.ctd, &["leases", "rm", "--sync", "gc-trigger"]);

    // Content and the unpacked chain survived GC; no extraction snapshots leaked.
    let content = ctr(&env.ctd, &["content", "ls", "-q"]);
    assert!(content.contains(&env.image.layer_digest), "{content}");
    assert!(content.contains(&env.image.manifest_digest), "{content}");
    let snapshots = ctr(&env.ctd, &["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(snapshots.contains(&env.image.diff_id), "{snapshots}");
    assert_eq!(snapshots.lines().count(), 2, "{snapshots}");
    let images = ctr(&env.ctd, &["images", "ls", "-q"]);
    assert_eq!(images.trim(), env.image.reference);

    // The image is still usable by a runtime with no cache.
    let rt3 = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    let mut req = env.request("aftergc", &["true"], &a);
    req.id = "aftergc".into();
    rt3.create(&req).await.expect("create after gc");
    rt3.start("aftergc").await.expect("start");
    assert_eq!(rt3.wait("aftergc").await.expect("wait"), 0);
}

/// Effective capability mask of the process that reads /proc/self/status.
fn cap_line(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_and_readonly_rootfs() {
    let Some(env) = setup("privileged_and_readonly_rootfs", ImageOptions::default()).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let caps_cmd = ["grep", "^CapEff", "/proc/self/status"];

    let plain = env.request("plain", &caps_cmd, &cfg);
    assert_eq!(env.run(&plain).await, 0);
    // The 14 default capabilities of containerd's spec.
    assert_eq!(
        cap_line(&env.stdout("plain"), "CapEff:"),
        "00000000a80425fb"
    );

    let mut privileged = env.request("priv", &caps_cmd, &cfg);
    privileged.privileged = true;
    assert_eq!(env.run(&privileged).await, 0);
    let host = std::fs::read_to_string("/proc/self/status").expect("host status");
    assert_eq!(
        cap_line(&env.stdout("priv"), "CapEff:"),
        cap_line(&host, "CapBnd:")
    );

    let mut ro = env.request(
        "ro",
        &["sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro"],
        &cfg,
    );
    ro.readonly_rootfs = true;
    assert_eq!(env.run(&ro).await, 0);
    assert_eq!(env.stdout("ro"), "ro\n");
    let rw = env.request(
        "rw",
        &["sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro"],
        &cfg,
    );
    assert_eq!(env.run(&rw).await, 0);
    assert_eq!(env.stdout("rw"), "rw\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_latency() {
    let Some(env) = setup("start_latency", ImageOptions::default()).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let mut create = Vec::new();
    let mut start = Vec::new();
    let mut total = Vec::new();
    for i in 0..10 {
        let id = format!("lat{i}");
        let req = env.request(&id, &["true"], &cfg);
        let t = Instant::now();
        env.rt.create(&req).await.expect("create");
        let c = t.elapsed();
        env.rt.start(&id).await.expect("start");
        let s = t.elapsed();
        assert_eq!(env.rt.wait(&id).await.expect("wait"), 0);
        total.push(t.elapsed());
        create.push(c);
        start.push(s - c);
        env.rt.delete(&id).await.expect("delete");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (c, s, t) = (median(&mut create), median(&mut start), median(&mut total));
    // Baseline in the same invocation: `ctr run --rm` on the same containerd
    // and the same unpacked image.
    let mut ctr_runs = Vec::new();
    for i in 0..10 {
        let t0 = Instant::now();
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&env.ctd.socket)
            .args(["--namespace", "berth", "run", "--rm"])
            .arg(&env.image.reference)
            .arg(format!("ctr-{i}"))
            .arg("true")
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctr_runs.push(t0.elapsed());
    }
    let baseline = median(&mut ctr_runs);
    eprintln!(
        "start_latency (busybox true, medians of 10): create {c:?}, start {s:?}, create+start+wait {t:?}; `ctr run --rm` {baseline:?}; ratio {:.2}",
        t.as_secs_f64() / baseline.as_secs_f64()
    );
    assert!(t < Duration::from_secs(2), "median create+start+wait {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_image_unpacks_in_order() {
    let size = 3 * 1024 * 1024 + 123;
    let opts = ImageOptions {
        data_layer_bytes: Some(size),
        ..Default::default()
    };
    let Some(env) = setup("multi_layer_image_unpacks_in_order", opts).await else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    // Bottom chain id = bottom diff id; the top is a chain of both.
    assert!(env.rt.has_snapshot(&env.image.diff_id).await.expect("stat"));
    let req = env.request(
        "layers",
        &[
            "sh",
            "-c",
            "wc -c < /data/blob; cat /etc/motd; ls /bin/busybox",
        ],
        &cfg,
    );
    assert_eq!(env.run(&req).await, 0, "stderr: {}", env.stderr("layers"));
    assert_eq!(
        env.stdout("layers"),
        format!("{size}\nsecond layer\n/bin/busybox\n")
    );
    let t = Instant::now();
    env.rt.pull(&env.image.reference).await.expect("pull again");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_containerd_restart() {
    let Some(mut env) = setup(
        "containers_survive_containerd_restart",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let req = env.request("long", &["sleep", "1000"], &cfg);
    env.rt.create(&req).await.expect("create");
    let pid = env.rt.start("long").await.expect("start");
    // A wait already in flight when containerd goes away.
    let rt_w = ContainerdRuntime::connect(&env.ctd.socket, "berth", insecure(&env.registry))
        .await
        .expect("connect");
    let waiter = tokio::spawn(async move { rt_w.wait("long").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "wait returned while the task runs");

    env.ctd.restart().expect("restart containerd");

    // The same client (same channel) reconnects and still sees the task.
    let listed = env.rt.list().await.expect("list after restart");
    let c = listed.iter().find(|c| c.id == "long").expect("listed");
    assert_eq!(c.state, ObservedState::Running { pid });
    env.rt.kill("long", 9).await.expect("kill");
    assert_eq!(env.rt.wait("long").await.expect("wait"), 137);
    let early = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("in-flight wait did not return")
        .expect("join");
    assert_eq!(early.expect("in-flight wait survives the restart"), 137);
    env.rt.delete("long").await.expect("delete");
    let again = env.request("after", &["sh", "-c", "exit 5"], &cfg);
    assert_eq!(env.run(&again).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_falls_back_to_local_image() {
    let Some(env) = setup(
        "registry_outage_falls_back_to_local_image",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let Env {
        rt,
        image,
        logs: _logs,
        registry,
        ctd,
    } = env;
    let registry_cfg = insecure(&registry);
    drop(registry); // the registry goes away

    assert_eq!(
        rt.pull(&image.reference)
            .await
            .expect("pull, registry down"),
        cfg
    );
    let fresh = ContainerdRuntime::connect(&ctd.socket, "berth", registry_cfg)
        .await
        .expect("connect");
    assert_eq!(
        fresh
            .pull(&image.reference)
            .await
            .expect("fresh client, registry down"),
        cfg
    );
    // An image that was never pulled still fails, naming the image.
    let other = image.reference.replace("test/busybox", "test/other");
    match fresh.pull(&other).await {
        Err(RuntimeError::Pull(msg)) => assert!(msg.contains(&other), "{msg}"),
        res => panic!("expected Pull error, got {res:?}"),
    }
    drop(fresh);
    drop(rt);
    drop(ctd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_manifest_fails_the_pull_cleanly() {
    let opts = ImageOptions {
        understate_layer_by: 100,
        ..Default::default()
    };
    let Some(env) = setup("lying_manifest_fails_the_pull_cleanly", opts).await else {
        return;
    };
    match env.rt.pull(&env.image.reference).await {
        Err(RuntimeError::Pull(msg)) => {
            assert!(msg.contains(&env.image.reference), "{msg}");
            assert!(msg.contains(&env.image.layer_digest), "{msg}");
        }
        other => panic!("expected Pull error, got {other:?}"),
    }
    // Nothing half-made stays visible: no image, no snapshot, no lease.
    assert!(ctr(&env.ctd, &["images", "ls", "-q"]).trim().is_empty());
    assert!(!env.rt.has_snapshot(&env.image.diff_id).await.expect("stat"));
    assert!(ctr(&env.ctd, &["leases", "ls", "-q"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_health_checks_inside_the_container() {
    use berth_agent::runtime::ExecOutcome;
    let Some(env) = setup(
        "exec_runs_health_checks_inside_the_container",
        ImageOptions::default(),
    )
    .await
    else {
        return;
    };
    let cfg = env.rt.pull(&env.image.reference).await.expect("pull");
    let mut req = env.request(
        "checked",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; touch /tmp/marker; echo ready; while true; do sleep 1; done",
        ],
        &cfg,
    );
    req.env.push("HC_FOO=bar".into());
    req.cwd = "/tmp".into();
    env.rt.create(&req).await.expect("create");
    env.rt.start("checked").await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.stdout("checked") != "ready\n" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t = Duration::from_secs(5);

    // The container's env, cwd and filesystem; the exit code comes back.
    let ok = env
        .rt
        .exec(
            "checked",
            args(&[
                "sh",
                "-c",
                "test \"$HC_FOO\" = bar && test \"$(pwd)\" = /tmp && test -f marker",
            ]),
            t,
        )
        .await
        .expect("exec");
    assert_eq!(ok, ExecOutcome::Exited(0));
    let code = env
        .rt
        .exec("checked", args(&["sh", "-c", "exit 7"]), t)
        .await
        .expect("exec");
    assert_eq!(code, ExecOutcome::Exited(7));

    // A check that outlives its timeout is killed and reported as such.
    let started = Instant::now();
    let slow = env
        .rt
        .exec("checked", args(&["sleep", "30"]), Duration::from_secs(1))
        .await
        .expect("exec");
    assert_eq!(slow, ExecOutcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // An executable that does not exist cannot be started.
    match env.rt.exec("checked", args(&["/no/such/check"]), t).await {
        Err(RuntimeError::Start(msg)) => assert!(msg.contains("exec in checked"), "{msg}"),
        other => panic!("expected a start error, got {other:?}"),
    }

    // Many checks leave no processes behind: only the container's own
    // (sh and its sleep) remain.
    for _ in 0..10 {
        let r = env
            .rt
            .exec("checked", args(&["true"]), t)
            .await
            .expect("exec");
        assert_eq!(r, ExecOutcome::Exited(0));
    }
    let ps = ctr(&env.ctd, &["tasks", "ps", "checked"]);
    let pids = ps.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    assert!(pids <= 2, "leftover exec processes: {ps}");

    // No container, or one whose task has exited: NotFound.
    assert!(matches!(
        env.rt.exec("no-such", args(&["true"]), t).await,
        Err(RuntimeError::NotFound(_))
    ));
    env.rt.kill("checked", 15).await.expect("kill");
    tokio::time::timeout(Duration::from_secs(10), env.rt.wait("checked"))
        .await
        .expect("exit after TERM")
        .expect("wait");
    let after_exit = env.rt.exec("checked", args(&["true"]), t).await;
    assert!(
        matches!(after_exit, Err(RuntimeError::NotFound(_))),
        "{after_exit:?}"
    );
    env.rt.delete("checked").await.expect("delete");
}
