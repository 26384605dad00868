//! `berth-agent`: the CLI over the agent library. `register` exchanges an
//! activation for instance credentials; `run` runs the agent until SIGTERM or
//! SIGINT. Every flag can also come from a `BERTH_*` environment variable;
//! `run` additionally reads a JSON config file (`--config`). Logs go to
//! stderr (`RUST_LOG`, default `info`); `register` prints the container
//! instance ARN on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_agent::agent::{self, RegisterOptions};
use berth_agent::backoff::Backoff;
use berth_agent::config::{self, FileConfig, RunFlags};
use berth_agent::network::plan::NetSettings;
use berth_agent::network::underlay;
use berth_agent::reconcile::driver::Outcome;
use berth_agent::resources::{self, HostOptions};
use berth_agent::runtime::containerd::ContainerdRuntime;
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "Berth agent: runs ECS tasks on this host with containerd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this host with a coordinator using a one-time activation.
    Register(RegisterArgs),
    /// Run the agent (until SIGTERM/SIGINT; tasks keep running when it stops).
    Run(RunArgs),
}

#[derive(Args)]
struct RegisterArgs {
    /// Coordinator URL, e.g. http://10.0.0.1:8080.
    #[arg(long, env = "BERTH_COORDINATOR")]
    coordinator: String,
    #[arg(long, env = "BERTH_ACTIVATION_ID")]
    activation_id: String,
    #[arg(long, env = "BERTH_ACTIVATION_CODE", hide_env_values = true)]
    activation_code: String,
    /// Cluster name or ARN.
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default")]
    cluster: String,
    /// Where the instance credentials (0600) and agent state live.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Custom attribute NAME=VALUE (or NAME); repeatable. The environment
    /// variable takes a comma-separated list.
    #[arg(long = "attribute", env = "BERTH_ATTRIBUTES", value_delimiter = ',')]
    attributes: Vec<String>,
    /// Reported as the `ecs.availability-zone` attribute.
    #[arg(long, env = "BERTH_AVAILABILITY_ZONE")]
    availability_zone: Option<String>,
    /// MiB of memory kept back from tasks.
    #[arg(long, env = "BERTH_RESERVED_MEMORY", default_value_t = 0)]
    reserved_memory: u64,
    /// Register again even if this data directory is already registered.
    #[arg(long)]
    force: bool,
    /// This host's underlay (VXLAN endpoint) address, registered as the
    /// `berth.underlay-ip` attribute; default: the source address towards
    /// the coordinator.
    #[arg(long, env = "BERTH_UNDERLAY_IP")]
    underlay_ip: Option<std::net::Ipv4Addr>,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// containerd's gRPC socket (default /run/containerd/containerd.sock).
    #[arg(long, env = "BERTH_CONTAINERD_SOCKET")]
    containerd_socket: Option<PathBuf>,
    /// containerd namespace for the agent's containers (default berth).
    #[arg(long, env = "BERTH_NAMESPACE")]
    namespace: Option<String>,
    /// Registry HOST:PORT reached over plain HTTP; repeatable (the environment
    /// variable takes a comma-separated list).
    #[arg(
        long = "insecure-registry",
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Registry credentials HOST=USER:PASSWORD; repeatable.
    #[arg(
        long = "registry-auth",
        env = "BERTH_REGISTRY_AUTH",
        hide_env_values = true
    )]
    registry_auth: Vec<String>,
    /// JSON config file with the same settings (flags override it).
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Coordinator URL, overriding the one stored at registration.
    #[arg(long, env = "BERTH_COORDINATOR")]
    coordinator: Option<String>,
    /// When to ask the registry about an image (ECS_IMAGE_PULL_BEHAVIOR):
    /// `default` (always; the cached image if the registry cannot answer) or
    /// `prefer-cached`/`once` (use an image already on the host).
    #[arg(long, env = "BERTH_IMAGE_PULL_BEHAVIOR")]
    image_pull_behavior: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// Task networking (bridge, awsvpc, none) through CNI plugins.
#[derive(Args)]
struct NetArgs {
    /// Only the modes runc handles itself (host, none); no CNI plugins.
    #[arg(long, env = "BERTH_NO_CNI")]
    no_cni: bool,
    /// Directories searched for CNI plugins (default: the agent's own
    /// directory, /usr/lib/cni, /opt/cni/bin).
    #[arg(long, env = "BERTH_CNI_PATH", value_delimiter = ':')]
    cni_path: Vec<PathBuf>,
    /// Directory with operator conflists `bridge.conflist` / `awsvpc.conflist`
    /// used instead of the built-in chains.
    #[arg(long, env = "BERTH_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// Subnet of the per-host bridge network (default 172.31.0.0/20).
    #[arg(long, env = "BERTH_BRIDGE_SUBNET")]
    bridge_subnet: Option<String>,
    /// Underlay (VXLAN endpoint) address; default: the source address towards
    /// the coordinator.
    #[arg(long, env = "BERTH_UNDERLAY_IP")]
    underlay_ip: Option<std::net::Ipv4Addr>,
    /// VXLAN network identifier of the awsvpc overlay (default 4199).
    #[arg(long, env = "BERTH_VXLAN_VNI")]
    vxlan_vni: Option<u32>,
    /// MTU of the overlay (default: underlay MTU - 50).
    #[arg(long, env = "BERTH_OVERLAY_MTU")]
    overlay_mtu: Option<u32>,
}

impl NetArgs {
    fn settings(self, data_dir: &std::path::Path) -> Option<NetSettings> {
        if self.no_cni {
            return None;
        }
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from));
        let mut s = NetSettings::new(data_dir, exe_dir);
        if !self.cni_path.is_empty() {
            s.cni_path = self.cni_path;
        }
        s.conf_dir = self.cni_conf_dir;
        if let Some(subnet) = self.bridge_subnet {
            s.bridge_subnet = subnet;
        }
        s.underlay_ip = self.underlay_ip;
        if let Some(vni) = self.vxlan_vni {
            s.vni = vni;
        }
        s.mtu = self.overlay_mtu;
        Some(s)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Register(args) => rt.block_on(register(args)),
        Command::Run(args) => rt.block_on(run(args)),
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let mut custom_attributes = args
        .attributes
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| resources::parse_attribute(a))
        .collect::<Result<Vec<_>, _>>()?;
    if !custom_attributes
        .iter()
        .any(|a| a.name == berth_api::UNDERLAY_IP_ATTRIBUTE)
    {
        let underlay = args
            .underlay_ip
            .or_else(|| underlay::towards(&args.coordinator));
        if let Some(ip) = underlay {
            custom_attributes.push(resources::parse_attribute(&format!(
                "{}={ip}",
                berth_api::UNDERLAY_IP_ATTRIBUTE
            ))?);
        }
    }
    let opts = RegisterOptions {
        coordinator: args.coordinator,
        activation_id: args.activation_id,
        activation_code: args.activation_code,
        cluster: args.cluster,
        data_dir: args.data_dir,
        host: HostOptions {
            reserved_memory_mib: args.reserved_memory,
            availability_zone: args.availability_zone.filter(|az| !az.is_empty()),
            custom_attributes,
        },
        force: args.force,
    };
    let (identity, _new) = agent::register(&opts)
        .await
        .context("registration failed")?;
    println!("{}", identity.container_instance_arn);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let settings = config::merge(
        RunFlags {
            data_dir: args.data_dir,
            containerd_socket: args.containerd_socket,
            namespace: args.namespace,
            coordinator: args.coordinator,
            insecure_registries: args.insecure_registries,
            registry_auth: args.registry_auth,
            image_pull_behavior: args.image_pull_behavior,
        },
        file,
    )?;
    agent::ensure_data_dir(&settings.data_dir)?;
    let net = args.net.settings(&settings.data_dir);

    // SIGTERM/SIGINT from here on end the agent cleanly, even while it is
    // still waiting for containerd.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signalled = shutdown_signal();
    tokio::spawn(async move {
        signalled.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // containerd may still be starting (both are started at boot): retry for a while.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let runtime = loop {
        let attempt = tokio::select! {
            r = ContainerdRuntime::connect(
                &settings.containerd_socket,
                &settings.namespace,
                settings.registries.clone(),
            ) => r,
            _ = stopped(stop_rx.clone()) => return Ok(()),
        };
        match attempt {
            Ok(rt) => break rt,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "containerd not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(stop_rx.clone()) => return Ok(()),
                }
            }
            Err(e) => return Err(e).context("connecting to containerd"),
        }
    };
    info!(socket = %settings.containerd_socket.display(), namespace = %settings.namespace, "connected to containerd");

    let outcome = agent::run(
        runtime,
        &settings.data_dir,
        settings.coordinator.as_deref(),
        settings.pull_behavior,
        net,
        stopped(stop_rx),
        || match berth_agent::notify::notify("READY=1") {
            Ok(true) => info!("notified systemd: READY=1"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "sd_notify failed"),
        },
    )
    .await?;
    if outcome == Outcome::Deregistered {
        info!("exiting: this instance was deregistered");
    }
    Ok(())
}

/// Installs SIGTERM/SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (mut term, mut int) = match handlers {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot install signal handlers; stop the agent with SIGKILL");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    }
}
