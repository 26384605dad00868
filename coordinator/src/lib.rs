//! The Berth coordinator as a library: configuration, startup (credentials,
//! store recovery, state owner, HTTP server) and shutdown, so the binary is a
//! thin shell and tests can run a coordinator in-process on `127.0.0.1:0`.
//!
//! Code map: `http` (protocol, auth, dispatch) → `api`/`ssm`/`events`/
//! `agent_channel` (handlers) → `state` (single owner: plan → store → apply → snapshot) →
//! `model` (entities, commands, apply) and `store` (SQLite log + snapshots);
//! `scheduler` is pure placement (including bridge dynamic host ports),
//! `network` pure awsvpc address allocation and validation, `cql` the pure
//! cluster query language, `taskdef` pure task-definition logic, and
//! `schedule` pure rate/cron slot arithmetic (`rules` plans scheduled rules
//! and their firing; a ticker here submits the due ones).
//!
//! **Architecture Invariant:** only the state owner thread (`state`) writes
//! the model or the store; everything else reads immutable snapshots.
//! **Architecture Invariant:** `scheduler`, `network`, `cql`, `taskdef`,
//! `schedule` and `model::Model::apply` do no I/O and read no clock.

pub mod agent_channel;
pub mod api;
pub mod candidates;
pub mod capacity;
pub mod cql;
pub mod credentials;
pub mod error;
pub mod events;
pub mod http;
pub mod model;
pub mod network;
pub mod rules;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod sigv4;
pub mod ssm;
pub mod state;
pub mod store;
pub mod taskdef;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::sigv4::AccessKey;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("--awsvpc-cidr: {0}")]
    Network(#[from] network::NetworkError),
    #[error("listener: {0}")]
    Listener(std::io::Error),
    #[error("--awsvpc-cidr {wanted}: this data directory's awsvpc network is {recorded}; tasks hold addresses in it, so it cannot change")]
    AwsvpcCidrChanged { recorded: String, wanted: String },
}

/// The awsvpc network of the data directory `dir`: recorded in
/// `dir/awsvpc-cidr` on first start (from `wanted` or the default) and fixed
/// from then on; a different `wanted` later is refused.
fn awsvpc_cidr(
    dir: &std::path::Path,
    wanted: Option<&str>,
) -> Result<network::Cidr, CoordinatorError> {
    let path = dir.join("awsvpc-cidr");
    let io = |source| CoordinatorError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let recorded = match std::fs::read_to_string(&path) {
        Ok(s) => Some(network::Cidr::parse(s.trim())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let wanted = wanted.map(network::Cidr::parse).transpose()?;
    match (recorded, wanted) {
        (Some(r), Some(w)) if r != w => Err(CoordinatorError::AwsvpcCidrChanged {
            recorded: r.to_string(),
            wanted: w.to_string(),
        }),
        (Some(r), _) => Ok(r),
        (None, w) => {
            let cidr = match w {
                Some(w) => w,
                None => network::Cidr::parse(DEFAULT_AWSVPC_CIDR)?,
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{cidr}\n")).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(cidr)
        }
    }
}

/// The default awsvpc network (`--awsvpc-cidr`).
pub const DEFAULT_AWSVPC_CIDR: &str = "10.199.0.0/16";

/// Coordinator settings (the binary fills these from flags / `BERTH_*`).
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub account_id: String,
    /// An instance with no poll for this long is `agentConnected: false`.
    pub agent_timeout: Duration,
    /// Region for resources created without a signed request (the `default`
    /// cluster an agent may register into).
    pub default_region: String,
    /// Seed for ids and placement tie-breaks (tests); random when `None`.
    pub seed: Option<u64>,
    /// The cluster network awsvpc tasks get addresses from. `None`: the one
    /// recorded in the data directory, else [`DEFAULT_AWSVPC_CIDR`].
    pub awsvpc_cidr: Option<String>,
    /// How long a task without a health check must run before a service
    /// counts it healthy (ECS: 40 s).
    pub service_settle: Duration,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            account_id: "000000000000".into(),
            agent_timeout: Duration::from_secs(60),
            default_region: "us-east-1".into(),
            seed: None,
            awsvpc_cidr: None,
            service_settle: Duration::from_secs(40),
        }
    }
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    credentials: AccessKey,
    shutdown_tx: watch::Sender<bool>,
    state: state::StateHandle,
    server: tokio::task::JoinHandle<Result<(), http::HttpError>>,
    owner: std::thread::JoinHandle<()>,
}

impl Coordinator {
    /// Prepares the data dir and credentials, recovers state and starts serving
    /// on `listener`. Returns once the coordinator is ready.
    pub async fn start(
        config: Config,
        listener: TcpListener,
    ) -> Result<Coordinator, CoordinatorError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| CoordinatorError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let awsvpc_cidr = awsvpc_cidr(dir, config.awsvpc_cidr.as_deref())?;
        let credentials = credentials::load_or_create(&dir.join("credentials"))?;
        let (state, owner) = state::start(
            &dir.join("berth.db"),
            state::Settings {
                account_id: config.account_id.clone(),
                default_region: config.default_region.clone(),
                awsvpc_cidr,
                service_settle_secs: config.service_settle.as_secs_f64(),
            },
            config.agent_timeout,
            config.seed,
        )?;
        let addr = listener.local_addr().map_err(CoordinatorError::Listener)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let app = Arc::new(http::App {
            state: state.clone(),
            keys: vec![credentials.clone()],
            account_id: config.account_id.clone(),
            shutdown: shutdown_rx.clone(),
        });
        // Housekeeping: forget tasks stopped more than an hour ago, as ECS does.
        {
            let state = state.clone();
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(300));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let req = state::Request::Prune { retention_secs: 3600.0 };
                            if let Err(e) = state.submit(req).await {
                                tracing::warn!(error = %e, "prune failed");
                            }
                        }
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    }
                }
            });
        }
        // The service scheduler's tick: throttling delays, settle periods and
        // disconnected agents are noticed without any other change.
        {
            let state = state.clone();
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let busy = state.snapshot().services.values().any(|s| s.status != "INACTIVE");
                            if busy {
                                if let Err(e) = state.tick().await {
                                    tracing::warn!(error = %e, "service tick failed");
                                }
                            }
                        }
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    }
                }
            });
        }
        // Scheduled rules: every second, fire the rules that have a slot due
        // (right after a restart, the latest slot missed while down, once).
        {
            let state = state.clone();
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                let mut due = rules::DueCache::default();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let now = state::now_secs().floor() as i64;
                            for name in due.due(&state.snapshot(), now) {
                                let req = state::Request::Rules(Box::new(rules::RuleRequest::Fire { name: name.clone() }));
                                if let Err(e) = state.submit(req).await {
                                    tracing::warn!(rule = %name, error = %e, "rule firing failed");
                                }
                            }
                        }
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    }
                }
            });
        }
        let mut stop = shutdown_rx;
        let server = tokio::spawn(http::run(listener, app, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        Ok(Coordinator {
            addr,
            credentials,
            shutdown_tx,
            state,
            server,
            owner,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin access key (as written in `DIR/credentials`).
    pub fn credentials(&self) -> &AccessKey {
        &self.credentials
    }

    /// Stops accepting, answers held long-polls, waits for in-flight requests,
    /// then stops the state owner (everything acknowledged is already durable).
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server ended with error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        // Requests still in the owner's queue are committed before it stops.
        self.state.stop().await;
        let _ = tokio::task::spawn_blocking(move || self.owner.join()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awsvpc_cidr_is_recorded_once_and_never_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        // (flag given, expected result) in order, on one data directory.
        let steps: &[(Option<&str>, Result<&str, &str>)] = &[
            (Some("10.77.0.0/24"), Ok("10.77.0.0/24")),
            (None, Ok("10.77.0.0/24")),
            (Some("10.77.0.9/24"), Ok("10.77.0.0/24")),
            (Some("10.78.0.0/24"), Err("cannot change")),
            (Some("bogus"), Err("invalid CIDR")),
        ];
        for (wanted, expected) in steps {
            match (awsvpc_cidr(d, *wanted), expected) {
                (Ok(c), Ok(want)) => assert_eq!(c.to_string(), *want, "{wanted:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{wanted:?}: {e}"),
                (got, _) => panic!("{wanted:?}: unexpected {:?}", got.map(|c| c.to_string())),
            }
        }
        let fresh = tempfile::tempdir().expect("tmp");
        let c = awsvpc_cidr(fresh.path(), None).expect("default");
        assert_eq!(c.to_string(), DEFAULT_AWSVPC_CIDR);
        assert_eq!(
            std::fs::read_to_string(fresh.path().join("awsvpc-cidr")).expect("recorded"),
            "10.199.0.0/16\n"
        );
    }
}
