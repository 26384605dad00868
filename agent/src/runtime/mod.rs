//! The runtime seam: everything the agent needs from a container runtime, as a
//! trait, so the reconciler can be tested with a fake. The only implementation
//! that touches a host is [`containerd::ContainerdRuntime`].
//!
//! **Architecture Invariant:** only `agent::runtime` talks to containerd.
//!
//! Submodules: `containerd` (connection, container and task lifecycle),
//! `pull` (registry → content store → snapshots, without a transfer
//! service), `spec` (containerd's default Linux spec plus the request; pure).
//!
//! Choices the rest of the agent can rely on:
//! - Everything a restarted agent needs is in containerd: containers carry
//!   the caller's labels plus `io.berth.stdout`/`io.berth.stderr` (where the
//!   shim writes), so `start`, `wait`, `kill`, `delete` and `list` work on a
//!   container created by an earlier process.
//! - `pull` always resolves the tag; `pull_if_missing` trusts a local image
//!   record for the exact reference and never contacts the registry when it
//!   exists; both fall back to the local image when the registry is down.
//! - Containers live in cgroup `/berth/<id>` (cgroupfs driver).
//! - **Architecture Invariant:** no lock is held across `.await`; the two
//!   in-memory caches (image → chain id, container → rootfs mounts) are only
//!   shortcuts, never the source of truth.

pub mod containerd;
pub mod pull;
pub mod spec;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Label keys the agent puts on every containerd container it creates; after a
/// restart the agent rebuilds its observed state from these alone.
pub const LABEL_TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
pub const LABEL_CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
pub const LABEL_CLUSTER: &str = "com.amazonaws.ecs.cluster";
pub const LABEL_TASK_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
pub const LABEL_TASK_REVISION: &str = "com.amazonaws.ecs.task-definition-version";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be pulled (unknown repository or tag, registry
    /// unreachable, auth refused, bad manifest). The message names the image.
    #[error("CannotPullContainerError: {0}")]
    Pull(String),
    /// The container could not be created (bad spec, snapshot failure, ...).
    #[error("CannotCreateContainerError: {0}")]
    Create(String),
    /// The container could not be started (runc refused, missing binary, ...).
    #[error("CannotStartContainerError: {0}")]
    Start(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("containerd: {0}")]
    Containerd(String),
}

/// Registry access the operator configured.
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// `host:port` entries that are reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Basic-auth credentials by registry `host[:port]`.
    pub auth: BTreeMap<String, (String, String)>,
}

/// Passwords never reach logs: `Debug` shows registries and user names only.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth: BTreeMap<&str, (&str, &str)> = self
            .auth
            .iter()
            .map(|(host, (user, _))| (host.as_str(), (user.as_str(), "<redacted>")))
            .collect();
        f.debug_struct("RegistryConfig")
            .field("insecure", &self.insecure)
            .field("auth", &auth)
            .finish()
    }
}

/// What a pulled image contributes to a container's process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    /// Manifest digest (`sha256:...`) the image resolved to.
    pub digest: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// How the container's network namespace is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkNamespace {
    /// Share the host's namespace (`host` mode).
    Host,
    /// A fresh namespace created by runc (`none` mode: loopback only).
    New,
    /// Join an existing namespace by path (bridge/awsvpc, or a task's pause netns).
    Path(PathBuf),
}

/// Everything needed to create one container. The runtime builds the OCI spec
/// from containerd's default Linux spec and applies these.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// containerd container id (unique, stable for the task's container).
    pub id: String,
    /// Image reference as written in the container definition.
    pub image: String,
    pub image_config: ImageConfig,
    pub labels: BTreeMap<String, String>,
    /// Final argv after merging image entrypoint/cmd with entryPoint/command.
    pub args: Vec<String>,
    /// Final `KEY=value` environment (image env overridden by the definition).
    pub env: Vec<String>,
    pub cwd: String,
    /// `uid[:gid]` or a name resolvable in the image's /etc/passwd.
    pub user: Option<String>,
    /// CPU shares (ECS `cpu` units; 0 = runtime default of 1024... see runtime).
    pub cpu_shares: Option<u64>,
    /// Hard memory limit, bytes.
    pub memory_limit: Option<i64>,
    /// Soft memory limit, bytes.
    pub memory_reservation: Option<i64>,
    pub network: NetworkNamespace,
    pub hostname: Option<String>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    /// Files the shim writes the container's stdout and stderr to (passed
    /// as `file://` URIs; parent directories are created). Note: containerd
    /// 1.6's runc shim writes *both* streams into the stdout file and
    /// ignores the stderr URI, so with 1.6 `stderr_path` stays absent and
    /// the stdout file holds the combined log.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// A container as containerd reports it, for re-adoption after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ObservedState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedState {
    /// Container exists, no task (never started, or task already deleted).
    Created,
    Running {
        pid: u32,
    },
    Exited {
        exit_code: i32,
    },
}

/// How a process run inside a container with [`Runtime::exec`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    Exited(i32),
    /// It was still running when the timeout elapsed; it has been killed.
    TimedOut,
}

/// The runtime operations the reconciler drives. Every operation is idempotent
/// where that makes sense (delete of a missing container succeeds).
pub trait Runtime: Send + Sync + 'static {
    /// Pull and unpack `image` if not present; return its config. Always
    /// asks the registry what the tag points at now, so a moved tag is
    /// pulled; content already in containerd is not fetched again. If the
    /// registry cannot be asked (down, tag gone) but the image is already on
    /// the host, the local image is returned (ECS's default pull behaviour).
    fn pull(&self, image: &str) -> impl Future<Output = Result<ImageConfig, RuntimeError>> + Send;
    /// Like [`Runtime::pull`], but if the image is already present locally
    /// (an image record for exactly this reference, with its layers
    /// unpacked), use it without contacting the registry. The default just
    /// pulls.
    fn pull_if_missing(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<ImageConfig, RuntimeError>> + Send {
        self.pull(image)
    }
    /// Create the container (and its rootfs snapshot). Does not start it.
    fn create(&self, req: &CreateRequest) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Create and start the container's task; returns the pid.
    fn start(&self, id: &str) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    /// Wait until the container's task exits; returns the exit code.
    fn wait(&self, id: &str) -> impl Future<Output = Result<i32, RuntimeError>> + Send;
    /// Send a signal (e.g. 15, 9) to the container's init process.
    fn kill(&self, id: &str, signal: u32) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Delete task, container and snapshot; succeeds if already gone.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// All containers in the agent's namespace with their state.
    fn list(&self) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;
    /// Run `args` inside the running container `id` with the container's
    /// own environment, working directory and user (a health check); kill it
    /// if it outlives `timeout`. `NotFound` when the container has no running
    /// task; `Start` when the process could not be started (e.g. no such
    /// executable).
    fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutcome, RuntimeError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_debug_redacts_passwords() {
        let cfg = RegistryConfig {
            insecure: vec!["127.0.0.1:5000".into()],
            auth: BTreeMap::from([(
                "registry.example:443".to_string(),
                ("alice".to_string(), "s3cret-pw".to_string()),
            )]),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("127.0.0.1:5000"), "{shown}");
    }
}
