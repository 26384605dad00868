//! Wiring of the agent's pieces: `register` (gather host resources, exchange
//! the activation for instance credentials, store them) and `run` (driver +
//! poll loop + report loop around one runtime, until shutdown or
//! deregistration).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::RegisterRequest;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::channel::{self, ChannelClient, ChannelError};
use crate::config::PullBehavior;
use crate::network::plan::NetSettings;
use crate::network::{underlay, CniNetworks};
use crate::reconcile::driver::{Driver, DriverConfig, DriverError, Outcome};
use crate::resources::{self, HostOptions, ResourcesError};
use crate::runtime::Runtime;
use crate::state::{DataDirLock, InstanceIdentity, SeqFile, StateError};

/// How long a deregistered agent waits for its last reports to be acknowledged.
const DEREGISTER_FLUSH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Resources(#[from] ResourcesError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not registered: run `berth-agent register` first")]
    NotRegistered(PathBuf),
}

/// Inputs of `berth-agent register`.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub coordinator: String,
    pub activation_id: String,
    pub activation_code: String,
    pub cluster: String,
    pub data_dir: PathBuf,
    pub host: HostOptions,
    /// Register again even if `instance.json` exists.
    pub force: bool,
}

/// Create the data directory (0700: it holds the instance secret).
pub fn ensure_data_dir(dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AgentError::DataDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Register this host, or return the existing registration (`false`) when
/// already registered and not forced.
pub async fn register(opts: &RegisterOptions) -> Result<(InstanceIdentity, bool), AgentError> {
    ensure_data_dir(&opts.data_dir)?;
    if !opts.force {
        if let Some(existing) = InstanceIdentity::load(&opts.data_dir)? {
            info!(arn = %existing.container_instance_arn, "already registered; use --force to register again");
            return Ok((existing, false));
        }
    }
    // Not while an agent runs on this data directory: it would keep using
    // the identity being replaced.
    let _lock = DataDirLock::acquire(&opts.data_dir)?;
    let facts = resources::gather()?;
    let req = RegisterRequest {
        activation_id: opts.activation_id.clone(),
        activation_code: opts.activation_code.clone(),
        cluster: opts.cluster.clone(),
        hostname: sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_string()),
        resources: resources::resources(&facts, opts.host.reserved_memory_mib)?,
        attributes: resources::attributes(&facts, &opts.host),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let client = ChannelClient::new(&opts.coordinator, None)?;
    let resp = client.register(&req).await?;
    let identity = InstanceIdentity {
        coordinator: opts.coordinator.trim_end_matches('/').to_string(),
        instance_id: resp.instance_id,
        secret: resp.secret,
        container_instance_arn: resp.container_instance_arn,
        cluster_arn: resp.cluster_arn,
    };
    identity.save(&opts.data_dir)?;
    info!(arn = %identity.container_instance_arn, "registered");
    Ok((identity, true))
}

/// Run the agent with `runtime` until `shutdown` resolves (tasks keep
/// running) or the instance is deregistered (tasks are stopped and removed).
/// `on_ready` is called once running containers have been re-adopted.
pub async fn run<R: Runtime>(
    runtime: R,
    data_dir: &Path,
    coordinator_override: Option<&str>,
    pull_behavior: PullBehavior,
    net: Option<NetSettings>,
    shutdown: impl Future<Output = ()> + Send,
    on_ready: impl FnOnce() + Send,
) -> Result<Outcome, AgentError> {
    let _lock = DataDirLock::acquire(data_dir)?;
    let identity = InstanceIdentity::load(data_dir)?
        .ok_or_else(|| AgentError::NotRegistered(data_dir.to_path_buf()))?;
    let coordinator = coordinator_override.unwrap_or(&identity.coordinator);
    let client = Arc::new(ChannelClient::new(
        coordinator,
        Some((&identity.instance_id, &identity.secret)),
    )?);
    info!(
        instance = %identity.container_instance_arn,
        coordinator,
        "agent starting"
    );
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut cfg = DriverConfig::new(data_dir.to_path_buf());
    cfg.pull_behavior = pull_behavior;
    if let Some(mut net) = net {
        if net.underlay_ip.is_none() {
            net.underlay_ip = underlay::towards(coordinator);
        }
        info!(underlay = ?net.underlay_ip, cni_path = ?net.cni_path, "task networking with CNI");
        cfg.networks = Arc::new(CniNetworks::new(net, identity.instance_id.clone()));
    }
    let (driver, events) = Driver::new(Arc::new(runtime), cfg, reports_tx)?;
    let known = driver.known_version();
    let reporter = tokio::spawn({
        let client = client.clone();
        let events = events.clone();
        let seq = SeqFile::new(data_dir);
        async move {
            if let Err(e) = channel::report_loop(client, seq, reports_rx, events).await {
                error!(error = %e, "report loop stopped");
            }
        }
    });
    let poller = tokio::spawn(channel::poll_loop(client, known, events));
    let outcome = driver.run(shutdown, on_ready).await;
    poller.abort();
    if matches!(outcome, Ok(Outcome::Deregistered)) {
        // The final STOPPED reports are worth a short wait; the driver has
        // dropped its end, so the reporter ends once they are acknowledged.
        let _ = tokio::time::timeout(DEREGISTER_FLUSH, reporter).await;
    } else {
        // Unacknowledged reports are re-sent after a restart.
        reporter.abort();
    }
    match &outcome {
        Ok(Outcome::Shutdown) => info!("agent stopped; tasks keep running"),
        Ok(Outcome::Deregistered) => warn!("instance deregistered; agent stopped"),
        Err(e) => error!(error = %e, "agent failed"),
    }
    Ok(outcome?)
}
