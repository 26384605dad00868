//! `berth-coordinator`: parses flags (or `BERTH_*` variables), starts the
//! coordinator, announces readiness (`listening on ADDR` on stdout, sd_notify
//! READY=1), and shuts down gracefully on SIGTERM/SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_coordinator::{Config, Coordinator};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-coordinator",
    version,
    about = "Berth coordinator: the ECS API for on-prem hosts"
)]
struct Args {
    /// Address to listen on (e.g. 127.0.0.1:8080; port 0 picks one).
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory for the store and the admin credentials.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// AWS account id used in ARNs.
    #[arg(long, env = "BERTH_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Seconds without a poll before an agent counts as disconnected.
    #[arg(long, env = "BERTH_AGENT_TIMEOUT_SECS", default_value_t = 60)]
    agent_timeout_secs: u64,
    /// Seconds a service task without a container health check must have
    /// been RUNNING before it counts healthy (ECS waits 40 s).
    #[arg(long, env = "BERTH_SERVICE_SETTLE_SECS", default_value_t = 40)]
    service_settle_secs: u64,
    /// Region for resources created by agents rather than signed API calls.
    #[arg(long, env = "BERTH_DEFAULT_REGION", default_value = "us-east-1")]
    default_region: String,
    /// The network awsvpc tasks get their addresses from (default
    /// 10.199.0.0/16). Recorded in the data directory on first start; a
    /// different value later is refused.
    #[arg(long, env = "BERTH_AWSVPC_CIDR")]
    awsvpc_cidr: Option<String>,
}

/// Tells systemd we are ready, when started as Type=notify.
fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(b"READY=1", &addr))
    } else {
        sock.send_to(b"READY=1", &path)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Backlog of the listening socket: thousands of agents reconnecting at once
/// (a coordinator restart) must not overflow the accept queue (std and mio
/// use 128/1024; the kernel caps this at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (resolved; the first address that binds wins) with
/// [`LISTEN_BACKLOG`].
async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and the journal get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits");
    }
    let listener = listen(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut config = Config::new(args.data_dir);
    config.account_id = args.account_id;
    config.agent_timeout = Duration::from_secs(args.agent_timeout_secs.max(1));
    config.service_settle = Duration::from_secs(args.service_settle_secs);
    config.default_region = args.default_region;
    config.awsvpc_cidr = args.awsvpc_cidr;
    let coordinator = Coordinator::start(config, listener).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", coordinator.local_addr())?;
        out.flush()?;
    }
    sd_notify_ready();
    tracing::info!(addr = %coordinator.local_addr(), "coordinator ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    coordinator.shutdown().await;
    Ok(())
}
