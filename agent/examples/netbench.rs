//! `netbench`: the task-network benchmark (issue #3, acceptance 6). Times
//! setting up and tearing down one task network exactly as the agent does it
//! (`CniNetworks::setup` / `teardown`: record, namespace, loopback, CNI chain
//! through `network::cni::add_list` / `del_list`), per network mode, against
//! the same operations done by Debian's upstream `bridge` CNI plugin (with
//! `host-local` IPAM and `portmap`) run through the very same path as an
//! operator conflist, in the same run, interleaved round by round.
//!
//! Run as root:
//!
//! ```sh
//! CARGO_TARGET_DIR=... cargo build --release -p berth-cni
//! CARGO_TARGET_DIR=... cargo run --release -p berth-agent --example netbench -- [--iterations 100]
//! ```
//!
//! **Isolation:** before any thread exists the process moves itself into a
//! new network namespace and a new (private) mount namespace, mounts a sysfs
//! and a `/run` of its own and gives the namespace an underlay link (`under0`, one end of
//! a veth pair, 10.251.0.1/24). Every bridge, veth, iptables rule and task
//! namespace the benchmark makes lives there and disappears with the process;
//! the machine's own namespace is never touched.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_agent::network::plan::{self, NetSettings};
use berth_agent::network::{cni, CniNetworks, TaskNetworks};
use berth_agent::procspec;
use berth_agent::runtime::NetworkNamespace;
use berth_api::{AwsvpcAttachment, ContainerSpec, DesiredStatus, PortMapping, TaskSpec};
use berth_cni::netlink;
use clap::Parser;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Task network setup+teardown: Berth vs Debian's upstream bridge CNI plugin")]
struct Args {
    /// Measured setup+teardown cycles per mode.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Unmeasured cycles per mode first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Directory with berth-bridge and berth-awsvpc (default: the target
    /// directory this example was built in, e.g. target/release).
    #[arg(long)]
    cni_path: Option<PathBuf>,
    /// Directory with Debian's plugins (bridge, host-local, portmap).
    #[arg(long, default_value = "/usr/lib/cni")]
    upstream_path: PathBuf,
    /// Skip the bridge-without-portmap pair.
    #[arg(long)]
    no_portless: bool,
    /// Afterwards, time the parts of a cycle one by one (namespace, loopback,
    /// each plugin's ADD and DEL, one iptables call) for the bridge pairs.
    #[arg(long)]
    breakdown: bool,
}

/// Host port of the one dynamic mapping (the coordinator's range starts here).
const DYNAMIC_BASE: u16 = 49153;
const UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);

/// One benchmarked network mode: the agent's network stack configured for it.
struct Case {
    name: &'static str,
    /// `none`, `bridge` or `awsvpc` (the task definition's networkMode).
    mode: &'static str,
    /// The upstream cases this one's setup+teardown is compared against.
    baselines: &'static [&'static str],
    nets: CniNetworks,
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("netbench needs root (network namespaces, bridges, iptables)");
    }
    isolate().context("entering a private network and mount namespace")?;
    let berth_dir = match &args.cni_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locating the target directory")?
            .to_path_buf(),
    };
    for (dir, bin) in [
        (&berth_dir, "berth-bridge"),
        (&berth_dir, "berth-awsvpc"),
        (&args.upstream_path, "bridge"),
        (&args.upstream_path, "host-local"),
        (&args.upstream_path, "portmap"),
    ] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} not found (build the Berth plugins with `cargo build --release -p berth-cni` \
                 or pass --cni-path; Debian's come with containernetworking-plugins)",
                dir.join(bin).display()
            );
        }
    }
    underlay().context("creating the underlay link")?;

    let tmp = tempfile::Builder::new()
        .prefix("berth-netbench")
        .tempdir()?;
    let mut cases = build_cases(tmp.path(), &berth_dir, &args)?;
    let rounds = args.warmup + args.iterations;
    eprintln!(
        "netbench: {} modes x ({} warm-up + {} measured) cycles, interleaved; berth plugins from {}, upstream from {}",
        cases.len(),
        args.warmup,
        args.iterations,
        berth_dir.display(),
        args.upstream_path.display()
    );
    for round in 0..rounds {
        // Every round runs each mode once, starting at a different mode each
        // time, so no mode always follows the same one.
        let n = cases.len();
        for k in 0..n {
            let case = &mut cases[(round + k) % n];
            let spec = task_spec(case.name, case.mode, round)?;
            let t0 = Instant::now();
            let ns = case
                .nets
                .setup(&spec)
                .with_context(|| format!("{} setup (round {round})", case.name))?;
            let t1 = Instant::now();
            case.nets
                .teardown(&spec.task_arn)
                .with_context(|| format!("{} teardown (round {round})", case.name))?;
            let t2 = Instant::now();
            if !matches!(ns, NetworkNamespace::Path(_)) {
                bail!("{}: setup gave {ns:?}, not a namespace path", case.name);
            }
            if round >= args.warmup {
                case.setup.push(t1 - t0);
                case.teardown.push(t2 - t1);
            }
        }
    }
    leak_check(tmp.path())?;
    let summary = report(&cases, &args);
    println!("{summary}");
    if args.breakdown {
        breakdown(&cases, &args)?;
    }
    Ok(())
}

/// New network + mount namespaces for the whole (still single-threaded)
/// process: mounts private, a sysfs of this namespace, a private `/run`.
fn isolate() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;
    // Plugins that look at /sys/class/net must see this namespace's links.
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting sysfs")?;
    // Lock files (xtables, the awsvpc overlay's /run/berth) stay private too.
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context("mounting a private /run")?;
    Ok(())
}

/// `lo` up and the underlay `under0` (veth to `under0p`; this kernel has no
/// `dummy`) with 10.251.0.1/24, for awsvpc's VXLAN endpoint.
fn underlay() -> Result<()> {
    netlink::in_netns(None, |h| async move {
        if let Some(lo) = netlink::get_link(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        netlink::create_veth(&h, "under0", "under0p").await?;
        for name in ["under0", "under0p"] {
            let l = netlink::get_link(&h, name)
                .await?
                .ok_or_else(|| netlink::NetlinkError::LinkNotFound(name.into()))?;
            if name == "under0" {
                netlink::ensure_address(&h, l.index, IpAddr::V4(UNDERLAY_IP), 24).await?;
            }
            netlink::set_up(&h, l.index).await?;
        }
        Ok(())
    })?;
    Ok(())
}

fn settings(root: &Path, name: &str, cni_path: Vec<PathBuf>) -> NetSettings {
    let dir = root.join(name);
    let mut s = NetSettings::new(&dir, None);
    s.cni_path = cni_path;
    s.underlay_ip = Some(UNDERLAY_IP);
    s
}

fn write_conflist(dir: &Path, mode: &str, list: &Value) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(format!("{mode}.conflist")),
        serde_json::to_vec_pretty(list)?,
    )?;
    Ok(())
}

/// Debian's `bridge` (gateway on the bridge, masquerade, hairpin like ours)
/// with `host-local` IPAM, optionally followed by `portmap` exactly as the
/// built-in Berth list chains it.
fn upstream_conflist(bridge: &str, subnet: &str, ipam_dir: &Path, portmap: bool) -> Value {
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "dataDir": ipam_dir,
        },
    })];
    if portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    json!({ "cniVersion": "1.0.0", "name": format!("up-{bridge}"), "plugins": plugins })
}

fn build_cases(root: &Path, berth_dir: &Path, args: &Args) -> Result<Vec<Case>> {
    let berth_path = vec![berth_dir.to_path_buf(), args.upstream_path.clone()];
    let upstream_path = vec![args.upstream_path.clone()];
    let case = |name, mode, baselines, nets| Case {
        name,
        mode,
        baselines,
        nets,
        setup: Vec::new(),
        teardown: Vec::new(),
    };
    let id = "mi-netbench";
    let mut out = vec![
        case(
            "none",
            "none",
            &["upstream-bridge"][..],
            CniNetworks::new(settings(root, "none", berth_path.clone()), id),
        ),
        case(
            "bridge",
            "bridge",
            &["upstream-bridge"][..],
            CniNetworks::new(settings(root, "bridge", berth_path.clone()), id),
        ),
        case(
            "awsvpc",
            "awsvpc",
            // awsvpc maps no ports: also against the portmap-less chain.
            &["upstream-bridge", "upstream-bridge-noportmap"][..],
            CniNetworks::new(settings(root, "awsvpc", berth_path.clone()), id),
        ),
    ];
    let mut up = settings(root, "upstream", upstream_path.clone());
    let conf = root.join("upstream-conf");
    write_conflist(
        &conf,
        "bridge",
        &upstream_conflist("ubr0", "172.30.0.0/20", &root.join("upstream-ipam"), true),
    )?;
    up.conf_dir = Some(conf);
    out.push(case(
        "upstream-bridge",
        "bridge",
        &[][..],
        CniNetworks::new(up, id),
    ));
    if !args.no_portless {
        // The built-in list's first plugin alone, on a bridge of its own.
        let mut s = settings(root, "bridge-noportmap", berth_path);
        s.bridge_name = "berth1".into();
        s.bridge_subnet = "172.31.16.0/20".into();
        let mut list = plan::bridge_conflist(&s);
        if let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) {
            plugins.truncate(1);
        }
        let conf = root.join("bridge-noportmap-conf");
        write_conflist(&conf, "bridge", &list)?;
        s.conf_dir = Some(conf);
        out.push(case(
            "bridge-noportmap",
            "bridge",
            &["upstream-bridge-noportmap"][..],
            CniNetworks::new(s, id),
        ));
        let mut u = settings(root, "upstream-noportmap", upstream_path);
        let conf = root.join("upstream-noportmap-conf");
        write_conflist(
            &conf,
            "bridge",
            &upstream_conflist(
                "ubr1",
                "172.30.16.0/20",
                &root.join("upstream-noportmap-ipam"),
                false,
            ),
        )?;
        u.conf_dir = Some(conf);
        out.push(case(
            "upstream-bridge-noportmap",
            "bridge",
            &[][..],
            CniNetworks::new(u, id),
        ));
    }
    Ok(out)
}

/// A fresh task for `case` in `round`: bridge tasks map container port 80 to
/// a dynamic host port; awsvpc tasks get a distinct address and MAC in
/// 10.199.0.0/16, as the coordinator would allocate them.
fn task_spec(case: &str, mode: &str, round: usize) -> Result<TaskSpec> {
    let task_id = format!("{case}-{round:05}");
    let host_port = DYNAMIC_BASE + (round % 16_000) as u16;
    let port_mappings = if mode == "bridge" {
        vec![PortMapping {
            container_port: Some(80),
            host_port: Some(host_port),
            protocol: Some("tcp".into()),
        }]
    } else {
        vec![]
    };
    let n = round + 2;
    let awsvpc = (mode == "awsvpc").then(|| AwsvpcAttachment {
        attachment_id: format!("att-{task_id}"),
        network_interface_id: format!("eni-{n:017x}"),
        ip: format!("10.199.{}.{}", n / 250, n % 250 + 2),
        prefix_len: 16,
        gateway: Some("10.199.0.1".into()),
        mac: format!("02:00:00:00:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff),
    });
    let container = ContainerSpec {
        name: "web".into(),
        image: "busybox".into(),
        port_mappings,
        ..Default::default()
    };
    // The agent-channel wire form, so fields other helpers add with serde
    // defaults keep this compiling.
    let spec = json!({
        "taskArn": format!("arn:aws:ecs:us-east-1:000000000000:task/bench/{task_id}"),
        "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/bench",
        "taskDefinitionArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/bench:1",
        "family": "bench",
        "revision": 1,
        "desiredStatus": DesiredStatus::Running,
        "networkMode": mode,
        "containers": [container],
        "reservedPorts": [],
        "awsvpc": awsvpc,
    });
    serde_json::from_value(spec).context("building the task spec")
}

/// After the run, nothing a task had may be left: no task veth, no task
/// namespace, no record, no lease, no per-task iptables rule.
fn leak_check(root: &Path) -> Result<()> {
    let links = netlink::in_netns(None, |h| async move { netlink::list_links(&h).await })?;
    let task_links: Vec<String> = links
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with("veth") || n.starts_with("vpc"))
        .collect();
    let mut files = Vec::new();
    for sub in ["netns", "cni/tasks"] {
        for case in std::fs::read_dir(root)?.flatten() {
            if let Ok(entries) = std::fs::read_dir(case.path().join(sub)) {
                files.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    for dir in ["upstream-ipam", "upstream-noportmap-ipam"] {
        if let Ok(nets) = std::fs::read_dir(root.join(dir)) {
            for net in nets.flatten() {
                for e in std::fs::read_dir(net.path())?.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    // host-local's lock and last-reserved-IP files stay.
                    if name != "lock" && !name.starts_with("last_reserved_ip") {
                        files.push(e.path());
                    }
                }
            }
        }
    }
    let rules = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    let task_rules: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("berth:") || l.contains("CNI-DN-") || l.contains("-A CNI-"))
        .filter(|l| !l.starts_with("-A CNI-HOSTPORT-"))
        .collect();
    if !task_links.is_empty() || !files.is_empty() || !task_rules.is_empty() {
        bail!(
            "leftovers after the run: links {task_links:?}, files {files:?}, rules {task_rules:?}"
        );
    }
    eprintln!("leak check: no task link, namespace, record, lease or per-task rule left");
    Ok(())
}

/// Nearest-rank percentile in milliseconds.
fn pct(values: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return f64::NAN;
    }
    let rank = ((ms.len() as f64 * p / 100.0).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}

/// Prints the table and ratios; returns the one-line JSON summary.
fn report(cases: &[Case], args: &Args) -> Value {
    let totals = |c: &Case| -> Vec<Duration> {
        c.setup
            .iter()
            .zip(&c.teardown)
            .map(|(a, b)| *a + *b)
            .collect()
    };
    println!(
        "\n{:<26} {:>4} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9}",
        "mode (ms)", "n", "setup p50", "p99", "tear p50", "p99", "total p50", "p99"
    );
    let mut modes = serde_json::Map::new();
    for c in cases {
        let t = totals(c);
        let row = [
            pct(&c.setup, 50.0),
            pct(&c.setup, 99.0),
            pct(&c.teardown, 50.0),
            pct(&c.teardown, 99.0),
            pct(&t, 50.0),
            pct(&t, 99.0),
        ];
        println!(
            "{:<26} {:>4} | {:>9.2} {:>9.2} | {:>9.2} {:>9.2} | {:>9.2} {:>9.2}",
            c.name,
            c.setup.len(),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5]
        );
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        modes.insert(
            c.name.to_string(),
            json!({
                "setup": {"p50": r2(row[0]), "p99": r2(row[1])},
                "teardown": {"p50": r2(row[2]), "p99": r2(row[3])},
                "total": {"p50": r2(row[4]), "p99": r2(row[5])},
            }),
        );
    }
    println!("\nratio of setup+teardown to the upstream baseline (target <= 1.00):");
    let mut ratios = serde_json::Map::new();
    let pairs = cases.iter().flat_map(|c| {
        c.baselines
            .iter()
            .filter_map(move |b| Some((c, cases.iter().find(|x| x.name == *b)?)))
    });
    for (c, base) in pairs {
        let (mine, theirs) = (totals(c), totals(base));
        let p50 = pct(&mine, 50.0) / pct(&theirs, 50.0);
        let p99 = pct(&mine, 99.0) / pct(&theirs, 99.0);
        println!(
            "  {:<18} / {:<26} p50 {p50:.2}  p99 {p99:.2}",
            c.name, base.name
        );
        ratios.insert(
            format!("{}/{}", c.name, base.name),
            json!({"p50": (p50 * 1000.0).round() / 1000.0, "p99": (p99 * 1000.0).round() / 1000.0}),
        );
    }
    json!({
        "bench": "netbench",
        "iterations": args.iterations,
        "warmup": args.warmup,
        "unit": "ms",
        "modes": modes,
        "ratios": ratios,
    })
}

/// One bridge chain's parts, timed by [`breakdown`].
struct Chain<'a> {
    name: &'static str,
    settings: &'a NetSettings,
    conflist: Value,
    types: Vec<String>,
    parts: Vec<(String, Vec<Duration>)>,
}

/// Times the parts of a bridge cycle one by one, the way
/// `CniNetworks::setup`/`teardown` and `cni::add_list`/`del_list` do them,
/// for every bridge chain, interleaved round by round like the main run.
fn breakdown(cases: &[Case], args: &Args) -> Result<()> {
    let n = args.iterations.max(1);
    println!("\nbreakdown (p50 / p90 ms over {n} interleaved cycles, after the run above):");
    let tmp = tempfile::Builder::new()
        .prefix("berth-netbench-parts")
        .tempdir()?;
    let mut chains = Vec::new();
    for name in [
        "bridge",
        "upstream-bridge",
        "bridge-noportmap",
        "upstream-bridge-noportmap",
    ] {
        let Some(case) = cases.iter().find(|c| c.name == name) else {
            continue;
        };
        let s = case.nets.settings();
        let conflist = match &s.conf_dir {
            Some(dir) => serde_json::from_slice(&std::fs::read(dir.join("bridge.conflist"))?)?,
            None => plan::bridge_conflist(s),
        };
        let types = plan::plugin_types(&conflist);
        let mut parts: Vec<(String, Vec<Duration>)> = vec![("netns create".into(), vec![])];
        parts.push(("lo up".into(), vec![]));
        for t in &types {
            parts.push((format!("{t} ADD"), vec![]));
        }
        for t in types.iter().rev() {
            parts.push((format!("{t} DEL"), vec![]));
        }
        parts.push(("netns delete".into(), vec![]));
        chains.push(Chain {
            name,
            settings: s,
            conflist,
            types,
            parts,
        });
    }
    for round in 0..n {
        let k = chains.len();
        for j in 0..k {
            let chain = &mut chains[(round + j) % k];
            part_cycle(chain, tmp.path(), 20_000 + round)?;
        }
    }
    for c in &chains {
        let line: Vec<String> = c
            .parts
            .iter()
            .map(|(p, v)| format!("{p} {:.1}/{:.1}", pct(v, 50.0), pct(v, 90.0)))
            .collect();
        println!("  {:<26} {}", c.name, line.join(" | "));
    }
    let mut ipt = Vec::new();
    let mut spawn = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()?;
        ipt.push(t.elapsed());
        let t = Instant::now();
        std::process::Command::new("/bin/true").output()?;
        spawn.push(t.elapsed());
    }
    println!(
        "  one `iptables -w -t nat -S POSTROUTING` {:.2} | one fork+exec of /bin/true {:.2}",
        pct(&ipt, 50.0),
        pct(&spawn, 50.0)
    );
    // What a veth costs the kernel: created then moved into a namespace (how
    // berth-bridge/berth-awsvpc did it before), or created with its peer
    // already there (how they do it now), and deleted.
    let ns = tmp.path().join("veth-probe");
    netlink::create_netns(&ns)?;
    let (mut moved, mut in_place, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let ns_c = ns.clone();
        let (m, p, d) = netlink::in_netns(None, move |h| async move {
            let t = Instant::now();
            netlink::create_veth(&h, "probe0", "probe0p").await?;
            let peer = netlink::get_link(&h, "probe0p")
                .await?
                .ok_or_else(|| netlink::NetlinkError::LinkNotFound("probe0p".into()))?;
            netlink::move_to_netns(&h, peer.index, &ns_c).await?;
            let m = t.elapsed();
            netlink::delete_link(&h, "probe0").await?;
            let t = Instant::now();
            netlink::create_veth_in_netns(&h, "probe1", "probe1p", &ns_c, None, None).await?;
            let p = t.elapsed();
            let t = Instant::now();
            netlink::delete_link(&h, "probe1").await?;
            Ok((m, p, t.elapsed()))
        })?;
        moved.push(m);
        in_place.push(p);
        delete.push(d);
    }
    netlink::delete_netns(&ns)?;
    println!(
        "  veth create+move {:.1}/{:.1} | veth created with peer in the namespace {:.1}/{:.1} | veth delete {:.1}/{:.1}",
        pct(&moved, 50.0),
        pct(&moved, 90.0),
        pct(&in_place, 50.0),
        pct(&in_place, 90.0),
        pct(&delete, 50.0),
        pct(&delete, 90.0)
    );
    Ok(())
}

/// One timed cycle of `chain`: namespace, loopback, each plugin's ADD, each
/// DEL in reverse, namespace removal.
fn part_cycle(chain: &mut Chain<'_>, dir: &Path, round: usize) -> Result<()> {
    let spec = task_spec(&format!("parts-{}", chain.name), "bridge", round)?;
    let plan::NetPlan::Cni { runtime_config, .. } =
        plan::plan(&spec, chain.settings, Some(&chain.conflist))?
    else {
        bail!("bridge plan is not a CNI chain");
    };
    let id = procspec::task_dir_name(&spec.task_arn);
    let netns = dir.join(&id);
    let inv = cni::Invocation {
        container_id: id,
        netns: netns.clone(),
        ifname: "eth0".into(),
        cni_path: chain.settings.cni_path.clone(),
        // The agent's own limit.
        timeout: Duration::from_secs(60),
    };
    let mut laps = Vec::new();
    let t = Instant::now();
    netlink::create_netns(&netns)?;
    laps.push(t.elapsed());
    let t = Instant::now();
    netlink::in_netns(Some(&netns), |h| async move {
        if let Some(lo) = netlink::get_link(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        Ok(())
    })?;
    laps.push(t.elapsed());
    let mut prev: Option<Value> = None;
    for (i, ty) in chain.types.iter().enumerate() {
        let config = plan::plugin_config(&chain.conflist, i, prev.as_ref(), &runtime_config)?;
        let t = Instant::now();
        prev = cni::exec(&inv, ty, "ADD", &config)?;
        laps.push(t.elapsed());
    }
    for (i, ty) in chain.types.iter().enumerate().rev() {
        let config = plan::plugin_config(&chain.conflist, i, prev.as_ref(), &runtime_config)?;
        let t = Instant::now();
        cni::exec(&inv, ty, "DEL", &config)?;
        laps.push(t.elapsed());
    }
    let t = Instant::now();
    netlink::delete_netns(&netns)?;
    laps.push(t.elapsed());
    for ((_, v), lap) in chain.parts.iter_mut().zip(laps) {
        v.push(lap);
    }
    Ok(())
}
