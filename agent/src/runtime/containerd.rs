//! containerd 1.6 over gRPC: pull (registry API + content store), unpack
//! (snapshots + diff service), create/start/wait/kill/delete, list by label.
//!
//! One `tonic` channel is opened at connect and cloned into each service
//! client; every request carries the `containerd-namespace` header (and
//! `containerd-lease` during a pull). Pull lives in [`super::pull`], the OCI
//! spec in [`super::spec`]; this file owns the container and task lifecycle.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient, namespaces_client::NamespacesClient,
    tasks_client::TasksClient, Container, CreateContainerRequest, CreateNamespaceRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteProcessRequest, DeleteTaskRequest,
    ExecProcessRequest, GetContainerRequest, GetNamespaceRequest, GetRequest, KillRequest,
    ListContainersRequest, ListTasksRequest, Namespace, StartRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status as TaskStatus};
use containerd_client::types::Mount;
use oci_client::client::{ClientConfig, ClientProtocol};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::pull::PullError;
use super::spec::{self, SpecInput, UserSpec};
use super::{
    CreateRequest, ExecOutcome, ImageConfig, ObservedContainer, ObservedState, RegistryConfig,
    Runtime, RuntimeError,
};

/// Snapshotter for image layers and container rootfs (the plugin is
/// `overlayfs`, not `overlay`).
pub const SNAPSHOTTER: &str = "overlayfs";
/// Shim runtime; plain `runc` is accepted by Containers.Create but fails at
/// Tasks.Create on containerd 1.6.
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2";
/// How containerd's typeurl names an OCI runtime spec stored as JSON.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// How containerd's typeurl names an OCI process spec (for Tasks.Exec).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How long, after SIGKILL, an exec that timed out is waited for before its
/// process record is deleted anyway.
pub const EXEC_KILL_GRACE: Duration = Duration::from_secs(5);
/// A registry that does not accept a connection in this time fails the pull.
pub const REGISTRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry response that stalls this long between reads fails the pull.
pub const REGISTRY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Namespace used when the operator does not choose one.
pub const DEFAULT_NAMESPACE: &str = "berth";

/// What the runtime remembers about a pulled image, so `create` does not go
/// back to the content store for the image's chain id.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedImage {
    /// Digest the image record points at (index or manifest).
    pub target_digest: String,
    pub config: ImageConfig,
    /// Chain id of the top layer: the parent of every container snapshot.
    pub top_chain: String,
}

/// The agent's containerd client. Cheap to share behind an `Arc`; all
/// methods take `&self`.
pub struct ContainerdRuntime {
    channel: Channel,
    namespace: AsciiMetadataValue,
    pub(super) oci: oci_client::Client,
    pub(super) registries: RegistryConfig,
    /// Image name → what a pull found. A plain mutex: never held across `.await`.
    images: Mutex<HashMap<String, CachedImage>>,
    /// Container id → what `create` already learned that `start` needs, so
    /// the start path skips Containers.Get and Snapshots.Mounts. After a
    /// restart `start` falls back to asking containerd.
    prepared: Mutex<HashMap<String, Prepared>>,
}

/// Rootfs mounts and stdio paths of a created, not yet started container.
#[derive(Debug, Clone)]
struct Prepared {
    mounts: Vec<Mount>,
    stdio: (Option<String>, Option<String>),
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn containerd_err(op: &str, id: &str, s: &tonic::Status) -> RuntimeError {
    RuntimeError::Containerd(format!("{op} {id}: {}", status_text(s)))
}

impl ContainerdRuntime {
    /// Connect to containerd's gRPC socket, check it answers, and create
    /// `namespace` if it does not exist (empty means [`DEFAULT_NAMESPACE`]).
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        registries: RegistryConfig,
    ) -> Result<Self, RuntimeError> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        let ns_value: AsciiMetadataValue = MetadataValue::try_from(namespace)
            .map_err(|e| RuntimeError::Containerd(format!("namespace {namespace:?}: {e}")))?;
        let channel = containerd_client::connect(socket).await.map_err(|e| {
            RuntimeError::Containerd(format!(
                "connect {}: {}",
                socket.display(),
                super::pull::error_chain(&e)
            ))
        })?;
        let oci = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(registries.insecure.clone()),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            connect_timeout: Some(REGISTRY_CONNECT_TIMEOUT),
            read_timeout: Some(REGISTRY_READ_TIMEOUT),
            ..Default::default()
        });
        let rt = ContainerdRuntime {
            channel,
            namespace: ns_value,
            oci,
            registries,
            images: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        };
        rt.ensure_namespace(namespace).await?;
        Ok(rt)
    }

    async fn ensure_namespace(&self, name: &str) -> Result<(), RuntimeError> {
        let mut client = NamespacesClient::new(self.channel.clone());
        match client
            .get(GetNamespaceRequest {
                name: name.to_string(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Namespaces.Get", name, &s)),
        }
        match client
            .create(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name: name.to_string(),
                    labels: HashMap::new(),
                }),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(containerd_err("Namespaces.Create", name, &s)),
        }
    }

    /// A request in the agent's namespace.
    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        r
    }

    /// A request in the agent's namespace, holding resources under `lease`.
    pub(super) fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = AsciiMetadataValue::try_from(lease) {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    pub(super) fn content_client(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }
    pub(super) fn images_client(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub(super) fn leases_client(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    pub(super) fn snapshots_client(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub(super) fn diff_client(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    fn containers_client(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    fn tasks_client(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    pub(super) fn cached_image(&self, name: &str) -> Option<CachedImage> {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(super) fn remember_image(
        &self,
        name: &str,
        target_digest: &str,
        config: &ImageConfig,
        top_chain: &str,
    ) {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                CachedImage {
                    target_digest: target_digest.to_string(),
                    config: config.clone(),
                    top_chain: top_chain.to_string(),
                },
            );
    }

    /// The image as this agent knows it, from memory or containerd's store.
    pub(super) async fn local_image(&self, name: &str) -> Result<Option<CachedImage>, String> {
        if let Some(c) = self.cached_image(name) {
            return Ok(Some(c));
        }
        let found = self.image_from_store(name).await?;
        if let Some(c) = &found {
            self.remember_image(name, &c.target_digest, &c.config, &c.top_chain);
        }
        Ok(found)
    }

    /// Fast path for the reconciler: if an image record for exactly this
    /// reference exists in the namespace (and its layers are unpacked), use it
    /// without contacting the registry; otherwise pull. A moved tag is not
    /// noticed here — call [`Runtime::pull`] for that.
    pub async fn pull_if_missing_impl(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        let name = super::pull::image_name(image)?;
        match self.local_image(&name).await {
            Ok(Some(c)) => Ok(c.config),
            Ok(None) => Ok(self.pull_image(image).await?),
            Err(cause) => Err(PullError::Store { image: name, cause }.into()),
        }
    }

    /// The process status of `id`'s task, or None if it has no task.
    async fn task(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        match self
            .tasks_client()
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(containerd_err("Tasks.Get", id, &s)),
        }
    }

    async fn container(&self, id: &str) -> Result<Option<Container>, RuntimeError> {
        match self
            .containers_client()
            .get(self.req(GetContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(containerd_err("Containers.Get", id, &s)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .tasks_client()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(containerd_err("Tasks.Delete", id, &s)),
        }
    }

    /// The rootfs mounts of container `id` (its active snapshot).
    async fn rootfs_mounts(&self, id: &str) -> Result<Vec<Mount>, tonic::Status> {
        use containerd_client::services::v1::snapshots::MountsRequest;
        Ok(self
            .snapshots_client()
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await?
            .into_inner()
            .mounts)
    }

    /// Resolve a user name against the image's `/etc/passwd` and
    /// `/etc/group`, read through a short-lived read-only view of the
    /// image's top snapshot (so the spec is final before the container
    /// exists, and no container ever runs with a placeholder user).
    async fn resolve_image_user(
        &self,
        user: &UserSpec,
        top_chain: &str,
    ) -> Result<(u32, u32), String> {
        use containerd_client::services::v1::snapshots::ViewSnapshotRequest;
        if let UserSpec::Ids { uid, gid } = user {
            return Ok((*uid, *gid));
        }
        let key = format!("berth-userlookup-{}", uuid::Uuid::new_v4().simple());
        let mounts = self
            .snapshots_client()
            .view(self.req(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.clone(),
                parent: top_chain.to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| format!("Snapshots.View {top_chain}: {}", status_text(&s)))?
            .into_inner()
            .mounts;
        let dirs = spec::rootfs_layer_dirs(
            &mounts
                .iter()
                .map(|m| (m.r#type.clone(), m.source.clone(), m.options.clone()))
                .collect::<Vec<_>>(),
        );
        let passwd = spec::read_image_file(&dirs, "etc/passwd");
        let group = spec::read_image_file(&dirs, "etc/group");
        if let Err(s) = self
            .snapshots_client()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.clone(),
            }))
            .await
        {
            tracing::warn!(key, error = %status_text(&s), "create: could not remove user-lookup view");
        }
        spec::resolve_user(user, passwd.as_deref(), group.as_deref()).map_err(|e| e.to_string())
    }

    async fn create_inner(&self, req: &CreateRequest) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let create_err = |msg: String| RuntimeError::Create(format!("container {}: {msg}", req.id));
        let name = super::pull::image_name(&req.image).map_err(|e| create_err(e.to_string()))?;
        let image = self
            .local_image(&name)
            .await
            .map_err(create_err)?
            .ok_or_else(|| create_err(format!("image {name} is not pulled")))?;

        let user = match req.user.as_deref().filter(|u| !u.is_empty()) {
            None => UserSpec::Ids { uid: 0, gid: 0 },
            Some(u) => UserSpec::parse(u).map_err(|e| create_err(e.to_string()))?,
        };
        let (uid, gid) = self
            .resolve_image_user(&user, &image.top_chain)
            .await
            .map_err(create_err)?;
        let (host_devices, all_capabilities) = if req.privileged {
            (spec::host_devices(), spec::all_capabilities())
        } else {
            (Vec::new(), Vec::new())
        };
        let input = SpecInput {
            args: req.args.clone(),
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            uid,
            gid,
            hostname: req.hostname.clone(),
            privileged: req.privileged,
            readonly_rootfs: req.readonly_rootfs,
            cgroups_path: spec::cgroups_path(&req.id),
            cpu_shares: req.cpu_shares,
            memory_limit: req.memory_limit,
            memory_reservation: req.memory_reservation,
            network: req.network.clone(),
            host_devices,
            all_capabilities,
        };
        let container = Container {
            id: req.id.clone(),
            labels: spec::labels_map(&req.labels),
            image: name.clone(),
            runtime: Some(ContainerRuntimeInfo {
                name: RUNTIME_NAME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec::build_spec(&input).to_string().into_bytes(),
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: req.id.clone(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        let t_spec = started.elapsed();
        self.containers_client()
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| create_err(format!("Containers.Create: {}", status_text(&s))))?;
        let t_container = started.elapsed();

        // The container now roots the snapshot key for GC.
        let mounts = match self.prepare_rootfs(&req.id, &image.top_chain).await {
            Ok(m) => m,
            Err(s) => {
                self.cleanup_failed_create(&req.id).await;
                return Err(create_err(format!(
                    "Snapshots.Prepare on {}: {}",
                    image.top_chain,
                    status_text(&s)
                )));
            }
        };
        let stdio = stdio_paths(&spec::labels_map(&req.labels));
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.id.clone(), Prepared { mounts, stdio });
        tracing::debug!(
            id = %req.id,
            spec_ms = t_spec.as_secs_f64() * 1e3,
            container_ms = (t_container - t_spec).as_secs_f64() * 1e3,
            snapshot_ms = (started.elapsed() - t_container).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "create: timing"
        );
        Ok(())
    }

    /// The container's writable rootfs snapshot on top of the image.
    async fn prepare_rootfs(&self, key: &str, parent: &str) -> Result<Vec<Mount>, tonic::Status> {
        Ok(self
            .snapshots_client()
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            }))
            .await?
            .into_inner()
            .mounts)
    }

    /// Undo a half-made container; errors are logged, the caller reports
    /// the original failure.
    async fn cleanup_failed_create(&self, id: &str) {
        if let Err(e) = self.delete_inner(id).await {
            tracing::warn!(id, error = %e, "create: cleanup after failure");
        }
    }

    async fn start_inner(&self, id: &str) -> Result<u32, RuntimeError> {
        let started = Instant::now();
        let start_err = |msg: String| RuntimeError::Start(format!("container {id}: {msg}"));
        let cached = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let Prepared { mounts, stdio } = match cached {
            Some(p) => p,
            None => {
                let container = self
                    .container(id)
                    .await?
                    .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
                let mounts = match self.rootfs_mounts(&container.snapshot_key).await {
                    Ok(m) => m,
                    // The agent stopped between Containers.Create and
                    // Snapshots.Prepare: finish the job now.
                    Err(s) if s.code() == Code::NotFound => {
                        let image = self
                            .local_image(&container.image)
                            .await
                            .map_err(start_err)?
                            .ok_or_else(|| {
                                start_err(format!("image {} is not pulled", container.image))
                            })?;
                        self.prepare_rootfs(&container.snapshot_key, &image.top_chain)
                            .await
                            .map_err(|s| {
                                start_err(format!("Snapshots.Prepare: {}", status_text(&s)))
                            })?
                    }
                    Err(s) => {
                        return Err(start_err(format!("Snapshots.Mounts: {}", status_text(&s))))
                    }
                };
                Prepared {
                    mounts,
                    stdio: stdio_paths(&container.labels),
                }
            }
        };
        for path in [&stdio.0, &stdio.1].into_iter().flatten() {
            if let Some(parent) = Path::new(path).parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| start_err(format!("create {}: {e}", parent.display())))?;
            }
        }
        let uri = |p: &Option<String>| {
            p.as_ref()
                .map(|p| format!("file://{p}"))
                .unwrap_or_default()
        };
        let t_prep = started.elapsed();
        let created = self
            .tasks_client()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: uri(&stdio.0),
                stderr: uri(&stdio.1),
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                // Re-adoption after an agent restart, or a retried start.
                match self.task(id).await? {
                    Some(p)
                        if p.status == TaskStatus::Running as i32
                            || p.status == TaskStatus::Paused as i32 =>
                    {
                        return Ok(p.pid)
                    }
                    Some(p) if p.status == TaskStatus::Created as i32 => {}
                    Some(p) => {
                        return Err(start_err(format!(
                            "task already exists in state {} (exit status {}); delete it first",
                            TaskStatus::try_from(p.status)
                                .map(|s| s.as_str_name())
                                .unwrap_or("UNKNOWN"),
                            p.exit_status
                        )))
                    }
                    None => return Err(start_err(format!("Tasks.Create: {}", status_text(&s)))),
                }
            }
            Err(s) => return Err(start_err(format!("Tasks.Create: {}", status_text(&s)))),
        }
        let t_task = started.elapsed();
        let pid = match self
            .tasks_client()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => r.into_inner().pid,
            Err(s) => {
                // A task that failed to start is useless; remove it so a
                // retry can create a fresh one.
                let _ = self.delete_task(id).await;
                return Err(start_err(format!("Tasks.Start: {}", status_text(&s))));
            }
        };
        tracing::debug!(
            id,
            prep_ms = t_prep.as_secs_f64() * 1e3,
            task_create_ms = (t_task - t_prep).as_secs_f64() * 1e3,
            task_start_ms = (started.elapsed() - t_task).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            pid,
            "start: timing"
        );
        Ok(pid)
    }

    /// Wait for the task's exit. A containerd restart breaks the stream
    /// (shims and containers keep running); the wait is re-issued until
    /// containerd is back, for up to [`WAIT_RECONNECT_LIMIT`].
    async fn wait_inner(&self, id: &str) -> Result<i32, RuntimeError> {
        let mut outage: Option<Instant> = None;
        let mut delay = Duration::from_millis(50);
        loop {
            let result = self
                .tasks_client()
                .wait(self.req(WaitRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                }))
                .await;
            match result {
                Ok(r) => return Ok(exit_code(r.into_inner().exit_status)),
                Err(s) if s.code() == Code::NotFound => {
                    // The task is gone (deleted, or never created): nothing
                    // records its exit code any more.
                    return match self.task(id).await? {
                        Some(p) if p.status == TaskStatus::Stopped as i32 => {
                            Ok(exit_code(p.exit_status))
                        }
                        _ => Err(RuntimeError::NotFound(id.to_string())),
                    };
                }
                Err(s) if is_connection_error(&s) => {
                    let since = *outage.get_or_insert_with(Instant::now);
                    if since.elapsed() > WAIT_RECONNECT_LIMIT {
                        return Err(containerd_err("Tasks.Wait", id, &s));
                    }
                    tracing::warn!(id, error = %status_text(&s), retry_in = ?delay, "wait: containerd unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(s) => return Err(containerd_err("Tasks.Wait", id, &s)),
            }
        }
    }

    async fn kill_inner(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        match self
            .tasks_client()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Missing task, or one that already exited ("process already finished").
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
            Err(s) => Err(containerd_err("Tasks.Kill", id, &s)),
        }
    }

    async fn delete_inner(&self, id: &str) -> Result<(), RuntimeError> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(p) = self.task(id).await? {
            if p.status == TaskStatus::Running as i32
                || p.status == TaskStatus::Paused as i32
                || p.status == TaskStatus::Pausing as i32
            {
                return Err(RuntimeError::Containerd(format!(
                    "delete {id}: task is running (pid {}); kill and wait for it first",
                    p.pid
                )));
            }
            self.delete_task(id).await?;
        }
        match self
            .containers_client()
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(containerd_err("Containers.Delete", id, &s)),
        }
        match self
            .snapshots_client()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(containerd_err("Snapshots.Remove", id, &s)),
        }
    }

    async fn list_inner(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let containers = self
            .containers_client()
            .list(self.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| containerd_err("Containers.List", "", &s))?
            .into_inner()
            .containers;
        let tasks = self
            .tasks_client()
            .list(self.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| containerd_err("Tasks.List", "", &s))?
            .into_inner()
            .tasks;
        let by_id: HashMap<&str, &Process> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut out: Vec<ObservedContainer> = containers
            .iter()
            .map(|c| ObservedContainer {
                id: c.id.clone(),
                labels: c
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                state: observed_state(by_id.get(c.id.as_str()).copied()),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The stored OCI spec of container `id` (for inspection and tests).
    pub async fn container_spec(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let c = self
            .container(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let any = c
            .spec
            .ok_or_else(|| RuntimeError::Containerd(format!("container {id} has no spec")))?;
        serde_json::from_slice(&any.value)
            .map_err(|e| RuntimeError::Containerd(format!("container {id}: spec is not JSON: {e}")))
    }

    /// Whether a snapshot with this key exists in the namespace.
    pub async fn has_snapshot(&self, key: &str) -> Result<bool, RuntimeError> {
        self.snapshot_exists(key)
            .await
            .map_err(RuntimeError::Containerd)
    }
}

/// Exec ids unique within this process; the time prefix keeps them unique
/// across agent restarts too (containerd keeps an exec's id until it is deleted).
fn next_exec_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("berth-hc-{nanos:x}-{n}")
}

/// The process of an exec: the container's own process (env, cwd, user,
/// capabilities, rlimits, ...) with `args` and no terminal.
fn exec_process(
    container_spec: &serde_json::Value,
    args: &[String],
) -> Result<serde_json::Value, String> {
    let mut process = container_spec
        .get("process")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| "the container's spec has no process".to_string())?;
    if args.is_empty() {
        return Err("empty command".to_string());
    }
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(false);
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    Ok(process)
}

impl ContainerdRuntime {
    async fn exec_inner(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let container = self
            .container(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let stored = container
            .spec
            .ok_or_else(|| RuntimeError::Containerd(format!("container {id} has no spec")))?;
        let spec: serde_json::Value = serde_json::from_slice(&stored.value).map_err(|e| {
            RuntimeError::Containerd(format!("container {id}: spec is not JSON: {e}"))
        })?;
        let process = exec_process(&spec, &args)
            .map_err(|e| RuntimeError::Start(format!("exec in {id}: {e}")))?;
        let exec_id = next_exec_id();
        let exec = self
            .tasks_client()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: process.to_string().into_bytes(),
                }),
                exec_id: exec_id.clone(),
            }))
            .await;
        match exec {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()))
            }
            // The task exists but is not running (exited, not yet deleted).
            Err(s) if task_not_running(&s) => {
                return Err(RuntimeError::NotFound(format!("{id}: {}", status_text(&s))))
            }
            Err(s) => return Err(containerd_err("Tasks.Exec", id, &s)),
        }
        // From here on the exec's process record exists and must be deleted.
        let outcome = self.run_exec(id, &exec_id, timeout).await;
        match self
            .tasks_client()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                tracing::warn!(id, exec_id, error = %status_text(&s), "exec: DeleteProcess failed")
            }
        }
        outcome
    }

    /// Start an exec'd process (its wait already issued), wait up to
    /// `timeout`, SIGKILL it after that.
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let mut waiter = {
            let mut client = self.tasks_client();
            let req = self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
            tokio::spawn(async move { client.wait(req).await })
        };
        if let Err(s) = self
            .tasks_client()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            waiter.abort();
            return Err(RuntimeError::Start(format!(
                "exec in {id}: Tasks.Start: {}",
                status_text(&s)
            )));
        }
        match tokio::time::timeout(timeout, &mut waiter).await {
            Ok(Ok(Ok(r))) => Ok(ExecOutcome::Exited(exit_code(r.into_inner().exit_status))),
            Ok(Ok(Err(s))) if s.code() == Code::NotFound => {
                Err(RuntimeError::NotFound(id.to_string()))
            }
            Ok(Ok(Err(s))) => Err(containerd_err("Tasks.Wait (exec)", id, &s)),
            Ok(Err(e)) => Err(RuntimeError::Containerd(format!(
                "exec in {id}: wait task failed: {e}"
            ))),
            Err(_) => {
                match self
                    .tasks_client()
                    .kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        signal: libc::SIGKILL as u32,
                        all: false,
                    }))
                    .await
                {
                    Ok(_) => {}
                    Err(s)
                        if s.code() == Code::NotFound || s.code() == Code::FailedPrecondition => {}
                    Err(s) => {
                        tracing::warn!(id, exec_id, error = %status_text(&s), "exec: kill after timeout failed")
                    }
                }
                if tokio::time::timeout(EXEC_KILL_GRACE, &mut waiter)
                    .await
                    .is_err()
                {
                    waiter.abort();
                    tracing::warn!(
                        id,
                        exec_id,
                        "exec: no exit {EXEC_KILL_GRACE:?} after SIGKILL"
                    );
                }
                Ok(ExecOutcome::TimedOut)
            }
        }
    }
}

/// An exec refused because the container's task is not running; containerd
/// 1.6 answers `Unknown: cannot exec in a stopped state`.
fn task_not_running(s: &tonic::Status) -> bool {
    match s.code() {
        Code::FailedPrecondition => true,
        Code::Unknown => {
            let m = s.message();
            m.contains("stopped state") || m.contains("not running")
        }
        _ => false,
    }
}

/// How long `wait` keeps re-issuing Tasks.Wait while containerd is unreachable.
pub const WAIT_RECONNECT_LIMIT: Duration = Duration::from_secs(120);

/// A failure of the connection to containerd (it is restarting or gone),
/// as opposed to an answer from it.
fn is_connection_error(s: &tonic::Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::Unknown => {
            let m = s.message();
            m.contains("transport error") || m.contains("connection") || m.contains("broken pipe")
        }
        _ => false,
    }
}

/// Label keys under which `create` records where the shim writes stdio, so
/// that `start` (possibly in a restarted agent) needs only the container id.
pub const LABEL_STDOUT: &str = "io.berth.stdout";
pub const LABEL_STDERR: &str = "io.berth.stderr";

fn stdio_paths(labels: &HashMap<String, String>) -> (Option<String>, Option<String>) {
    (
        labels.get(LABEL_STDOUT).filter(|s| !s.is_empty()).cloned(),
        labels.get(LABEL_STDERR).filter(|s| !s.is_empty()).cloned(),
    )
}

/// containerd reports exit statuses as u32 (128+signal for a killed task;
/// 255 when unknown); ECS wants an int.
fn exit_code(status: u32) -> i32 {
    i32::try_from(status).unwrap_or(i32::MAX)
}

/// A container's state from its task (None = no task).
fn observed_state(task: Option<&Process>) -> ObservedState {
    match task {
        None => ObservedState::Created,
        Some(p) => match TaskStatus::try_from(p.status) {
            Ok(TaskStatus::Running) | Ok(TaskStatus::Paused) | Ok(TaskStatus::Pausing) => {
                ObservedState::Running { pid: p.pid }
            }
            Ok(TaskStatus::Stopped) => ObservedState::Exited {
                exit_code: exit_code(p.exit_status),
            },
            Ok(TaskStatus::Created) | Ok(TaskStatus::Unknown) | Err(_) => ObservedState::Created,
        },
    }
}

/// Labels stored on the containerd container: the caller's plus where stdio goes.
fn container_labels(req: &CreateRequest) -> BTreeMap<String, String> {
    let mut labels = req.labels.clone();
    labels.insert(
        LABEL_STDOUT.to_string(),
        req.stdout_path.to_string_lossy().into_owned(),
    );
    labels.insert(
        LABEL_STDERR.to_string(),
        req.stderr_path.to_string_lossy().into_owned(),
    );
    labels
}

impl Runtime for ContainerdRuntime {
    async fn pull(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        Ok(self.pull_image(image).await?)
    }

    async fn pull_if_missing(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        self.pull_if_missing_impl(image).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id = %req.id))]
    async fn create(&self, req: &CreateRequest) -> Result<(), RuntimeError> {
        let mut req = req.clone();
        req.labels = container_labels(&req);
        self.create_inner(&req).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        self.start_inner(id).await
    }

    async fn wait(&self, id: &str) -> Result<i32, RuntimeError> {
        self.wait_inner(id).await
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.kill_inner(id, signal).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_inner(id).await
    }

    async fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.list_inner().await
    }

    async fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.exec_inner(id, args, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(status: TaskStatus, pid: u32, exit: u32) -> Process {
        Process {
            status: status as i32,
            pid,
            exit_status: exit,
            ..Default::default()
        }
    }

    #[test]
    fn observed_state_table() {
        let cases = vec![
            (None, ObservedState::Created),
            (
                Some(process(TaskStatus::Created, 7, 0)),
                ObservedState::Created,
            ),
            (
                Some(process(TaskStatus::Running, 7, 0)),
                ObservedState::Running { pid: 7 },
            ),
            (
                Some(process(TaskStatus::Paused, 8, 0)),
                ObservedState::Running { pid: 8 },
            ),
            (
                Some(process(TaskStatus::Stopped, 0, 3)),
                ObservedState::Exited { exit_code: 3 },
            ),
            (
                Some(process(TaskStatus::Stopped, 0, 137)),
                ObservedState::Exited { exit_code: 137 },
            ),
            (
                Some(process(TaskStatus::Unknown, 0, 0)),
                ObservedState::Created,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(observed_state(p.as_ref()), want, "{p:?}");
        }
    }

    #[test]
    fn connection_error_table() {
        let cases = [
            (tonic::Status::unavailable("connection refused"), true),
            (tonic::Status::unknown("transport error"), true),
            (
                tonic::Status::unknown("error reading a body: connection reset"),
                true,
            ),
            (
                tonic::Status::unknown("runc did not terminate successfully"),
                false,
            ),
            (tonic::Status::not_found("no such task"), false),
            (
                tonic::Status::failed_precondition("process already finished"),
                false,
            ),
        ];
        for (status, want) in cases {
            assert_eq!(is_connection_error(&status), want, "{status:?}");
        }
    }

    #[test]
    fn exec_process_keeps_the_container_process_but_the_argv() {
        let spec = serde_json::json!({"process": {
            "args": ["/bin/server"], "env": ["A=1"], "cwd": "/srv", "terminal": true,
            "user": {"uid": 7, "gid": 8}, "consoleSize": {"height": 1, "width": 2},
            "capabilities": {"bounding": ["CAP_CHOWN"]}
        }});
        let p =
            exec_process(&spec, &["/bin/sh".into(), "-c".into(), "true".into()]).expect("process");
        assert_eq!(
            p,
            serde_json::json!({
                "args": ["/bin/sh", "-c", "true"], "env": ["A=1"], "cwd": "/srv",
                "terminal": false, "user": {"uid": 7, "gid": 8},
                "capabilities": {"bounding": ["CAP_CHOWN"]}
            })
        );
        assert!(exec_process(&serde_json::json!({}), &["x".into()]).is_err());
        assert!(exec_process(&spec, &[]).is_err());
        let (a, b) = (next_exec_id(), next_exec_id());
        assert_ne!(a, b);
        assert!(a.len() <= 76 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn task_not_running_table() {
        let cases = [
            (
                tonic::Status::unknown("cannot exec in a stopped state: unknown"),
                true,
            ),
            (
                tonic::Status::failed_precondition("task is not running"),
                true,
            ),
            (tonic::Status::unknown("transport error"), false),
            (tonic::Status::unavailable("connection refused"), false),
        ];
        for (status, want) in cases {
            assert_eq!(task_not_running(&status), want, "{status:?}");
        }
    }

    #[test]
    fn exit_code_table() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(143), 143);
        assert_eq!(exit_code(u32::MAX), i32::MAX);
    }

    #[test]
    fn stdio_labels_round_trip() {
        let req = CreateRequest {
            id: "c".into(),
            image: "busybox".into(),
            image_config: ImageConfig::default(),
            labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
            args: vec![],
            env: vec![],
            cwd: "/".into(),
            user: None,
            cpu_shares: None,
            memory_limit: None,
            memory_reservation: None,
            network: super::super::NetworkNamespace::Host,
            hostname: None,
            privileged: false,
            readonly_rootfs: false,
            stdout_path: "/logs/c/stdout".into(),
            stderr_path: "/logs/c/stderr".into(),
        };
        let labels = spec::labels_map(&container_labels(&req));
        assert_eq!(labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            stdio_paths(&labels),
            (
                Some("/logs/c/stdout".to_string()),
                Some("/logs/c/stderr".to_string())
            )
        );
        assert_eq!(stdio_paths(&HashMap::new()), (None, None));
    }
}
