//! Root integration test of `CniNetworks` with the real plugins (berth-bridge,
//! Debian's portmap, berth-awsvpc), all inside a network namespace the test
//! creates and enters on its own thread (plugins inherit it): setup per mode,
//! idempotent setup, teardown leaving nothing, and `gc` removing the networks
//! of tasks that no longer exist, including a setup a crash interrupted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_agent::network::plan::NetSettings;
use berth_agent::network::{CniNetworks, NetRecord, TaskNetworks};
use berth_agent::runtime::NetworkNamespace;
use berth_api::{AwsvpcAttachment, ContainerSpec, DesiredStatus, PortMapping, TaskSpec};
use berth_cni::netlink;

/// `target/debug` (or release): where cargo put the plugin binaries.
fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for bin in ["berth-bridge", "berth-awsvpc"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run `cargo build` (whole workspace) before this test",
            dir.join(bin).display()
        );
    }
    assert!(
        Path::new("/usr/lib/cni/portmap").is_file(),
        "Debian's containernetworking-plugins is not installed"
    );
    dir
}

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn task(id: &str, mode: &str) -> TaskSpec {
    TaskSpec {
        task_arn: format!("arn:aws:ecs:us-east-1:0:task/c/{id}"),
        cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
        task_definition_arn: "arn:aws:ecs:us-east-1:0:task-definition/f:1".into(),
        family: "f".into(),
        revision: 1,
        desired_status: DesiredStatus::Running,
        network_mode: mode.into(),
        stop_reason: None,
        stop_code: None,
        containers: vec![ContainerSpec {
            name: "web".into(),
            image: "busybox".into(),
            port_mappings: if mode == "bridge" {
                vec![PortMapping {
                    container_port: Some(80),
                    host_port: Some(49153),
                    protocol: None,
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }],
        reserved_ports: vec![],
        awsvpc: (mode == "awsvpc").then(|| AwsvpcAttachment {
            attachment_id: "a".into(),
            network_interface_id: "eni-1".into(),
            ip: "10.199.0.5".into(),
            prefix_len: 16,
            gateway: Some("10.199.0.1".into()),
            mac: "02:00:0a:c7:00:05".into(),
        }),
    }
}

fn path_of(ns: NetworkNamespace) -> PathBuf {
    match ns {
        NetworkNamespace::Path(p) => p,
        other => panic!("expected a namespace path, got {other:?}"),
    }
}

/// Links, rules, leases, records and namespaces: what must go with a task.
#[derive(Debug, PartialEq)]
struct Listing {
    links: Vec<String>,
    rules: Vec<String>,
    files: Vec<String>,
}

fn listing(data: &Path) -> Listing {
    let mut links: Vec<String> = sh(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    links.sort();
    let mut rules: Vec<String> = sh(&["iptables-save", "-t", "nat"])
        .lines()
        .filter(|l| l.starts_with("-A") || l.starts_with(':'))
        .map(str::to_string)
        .collect();
    rules.sort();
    let mut files = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p.strip_prefix(data).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    // The lock file and the lease store's own "last reserved" marker are
    // per-network state, not per-task.
    files.retain(|f| !f.ends_with("/lock") && !f.ends_with("last_reserved_ip.0"));
    Listing {
        links,
        rules,
        files,
    }
}

#[test]
fn setup_teardown_and_gc_leave_nothing_behind() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let plugins = plugin_dir();
    let tmp = tempfile::tempdir().expect("tmp");
    let host_ns = tmp.path().join("host-ns");
    netlink::create_netns(&host_ns).expect("host netns");
    let data = tmp.path().join("data");
    let ns_for_thread = host_ns.clone();
    let data_for_thread = data.clone();
    let outcome = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_for_thread).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        run(&plugins, &data_for_thread)
    })
    .join();
    let removed = netlink::delete_netns(&host_ns);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    removed.expect("host netns removed");
}

fn run(plugins: &Path, data: &Path) {
    sh(&["ip", "link", "set", "lo", "up"]);
    // An underlay link for the VXLAN endpoint (no `dummy` module here).
    sh(&[
        "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1",
    ]);
    sh(&["ip", "addr", "add", "10.251.9.1/24", "dev", "under0"]);
    sh(&["ip", "link", "set", "under0", "up"]);
    sh(&["ip", "link", "set", "under1", "up"]);
    let mut settings = NetSettings::new(data, Some(plugins.to_path_buf()));
    settings.underlay_ip = Some("10.251.9.1".parse().unwrap());
    let nets = CniNetworks::new(settings, "mi-self");

    // Warm the shared devices (berth0, bvpc0/bvx0, portmap's chains), then
    // take the baseline every teardown must return to.
    for (id, mode) in [
        ("warm-b", "bridge"),
        ("warm-v", "awsvpc"),
        ("warm-n", "none"),
    ] {
        nets.setup(&task(id, mode)).expect("warm setup");
        nets.teardown(&task(id, mode).task_arn)
            .expect("warm teardown");
    }
    let baseline = listing(data);
    assert!(
        baseline.links.contains(&"berth0".to_string()),
        "{baseline:?}"
    );
    assert!(
        baseline.files.iter().all(|f| !f.starts_with("netns/")),
        "{baseline:?}"
    );

    let bridge = task("b1", "bridge");
    let vpc = task("v1", "awsvpc");
    let none = task("n1", "none");
    let host = task("h1", "host");
    assert_eq!(nets.setup(&host).expect("host"), NetworkNamespace::Host);
    let b_ns = path_of(nets.setup(&bridge).expect("bridge"));
    let v_ns = path_of(nets.setup(&vpc).expect("awsvpc"));
    let n_ns = path_of(nets.setup(&none).expect("none"));
    let inside = |ns: &Path, argv: &[&str]| {
        let mut full = vec!["nsenter".to_string(), format!("--net={}", ns.display())];
        full.extend(argv.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        sh(&refs)
    };
    assert!(inside(&b_ns, &["ip", "-4", "-o", "addr"]).contains("eth0    inet 172.31."));
    let v_addr = inside(&v_ns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(v_addr.contains("02:00:0a:c7:00:05"), "{v_addr}");
    let n_links = inside(&n_ns, &["ip", "-o", "link"]);
    assert_eq!(n_links.lines().count(), 1, "{n_links}");
    assert!(
        n_links.contains("lo:") && n_links.contains("UP"),
        "{n_links}"
    );
    let rules = sh(&["iptables-save", "-t", "nat"]);
    assert!(rules.contains("--dport 49153"), "{rules}");

    // Setup is idempotent: the same namespace, no second veth.
    let veths = |l: &Listing| l.links.iter().filter(|n| n.starts_with("veth")).count();
    let before = listing(data);
    assert_eq!(path_of(nets.setup(&bridge).expect("again")), b_ns);
    assert_eq!(veths(&listing(data)), veths(&before));

    // Setups a kill -9 cut short, met again by a restarted agent: the
    // namespace file made but never mounted (an older agent's record, which
    // has no `ready`), and a namespace mounted with its loopback still down.
    // Setup redoes both instead of handing out something runc cannot join.
    let half = |id: &str, ready: Option<bool>| {
        let rec = NetRecord {
            task_arn: task(id, "none").task_arn,
            mode: "none".into(),
            netns: data.join("netns").join(id),
            conflist: None,
            runtime_config: serde_json::Value::Null,
            result: None,
            ready,
        };
        std::fs::write(
            data.join(format!("cni/tasks/{id}.json")),
            serde_json::to_vec(&rec).unwrap(),
        )
        .expect("record");
        rec.netns
    };
    std::fs::write(half("n-unmounted", None), b"").expect("empty netns file");
    netlink::create_netns(&half("n-lo-down", Some(false))).expect("netns");
    for id in ["n-unmounted", "n-lo-down"] {
        let ns = path_of(nets.setup(&task(id, "none")).expect("setup after a crash"));
        assert!(
            netlink::is_netns(&ns),
            "{id}: {} is no namespace",
            ns.display()
        );
        let links = inside(&ns, &["ip", "-o", "link"]);
        assert!(
            links.contains("lo:") && links.contains("UP"),
            "{id}: {links}"
        );
        nets.teardown(&task(id, "none").task_arn).expect("teardown");
    }

    // A crash in the middle of a setup: the record was written, the
    // namespace made, the chain never finished.
    let crashed = NetRecord {
        task_arn: "arn:aws:ecs:us-east-1:0:task/c/crashed".into(),
        mode: "bridge".into(),
        netns: data.join("netns").join("crashed"),
        conflist: Some(berth_agent::network::plan::bridge_conflist(nets.settings())),
        runtime_config: serde_json::json!({"portMappings": []}),
        result: None,
        ready: Some(false),
    };
    netlink::create_netns(&crashed.netns).expect("crashed netns");
    std::fs::write(
        data.join("cni/tasks/crashed.json"),
        serde_json::to_vec(&crashed).unwrap(),
    )
    .expect("record");

    // gc keeps the live bridge task and removes the rest.
    let live: HashSet<String> = [bridge.task_arn.clone()].into();
    let mut cleaned = nets.gc(&live).expect("gc");
    cleaned.sort();
    assert_eq!(cleaned, ["crashed", "n1", "v1"]);
    assert!(b_ns.exists() && !v_ns.exists() && !n_ns.exists() && !crashed.netns.exists());
    assert!(inside(&b_ns, &["ip", "-4", "-o", "addr"]).contains("172.31."));

    // Teardown of the last one returns to the baseline; twice is fine.
    nets.teardown(&bridge.task_arn).expect("teardown");
    nets.teardown(&bridge.task_arn).expect("teardown again");
    let after = listing(data);
    assert_eq!(after, baseline);
}
