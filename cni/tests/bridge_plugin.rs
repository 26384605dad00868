//! End-to-end tests of the `berth-bridge` binary (and a chain with Debian's
//! upstream `portmap` plugin). Needs root. Every test creates its own "host"
//! and "container" network namespaces and runs the plugin inside the host
//! one via `ip netns exec`, so nothing touches the real host's network; the
//! namespaces are removed in `Drop`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_cni::netlink;
use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

const BIN: &str = env!("CARGO_BIN_EXE_berth-bridge");
const PORTMAP: &str = "/usr/lib/cni/portmap";

/// One test's sandbox: a host netns, container netns(es), a data dir and a
/// unique bridge/subnet.
struct Sandbox {
    host: String,
    containers: Vec<String>,
    data: tempfile::TempDir,
    bridge: String,
    subnet_prefix: String,
    name: String,
}

fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

impl Sandbox {
    fn new(containers: usize) -> Self {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let host = format!("bch{tag}");
        netlink::create_netns(&ns_path(&host)).expect("create host netns");
        let mut sb = Sandbox {
            host,
            containers: Vec::new(),
            data: tempfile::tempdir().expect("tempdir"),
            bridge: format!("bb{tag}"),
            subnet_prefix: format!("10.{}.{}", 100 + n, std::process::id() % 250),
            name: format!("net{tag}"),
        };
        for i in 0..containers {
            let c = format!("bcc{tag}c{i}");
            netlink::create_netns(&ns_path(&c)).expect("create container netns");
            sb.containers.push(c);
        }
        sb
    }

    fn config(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "berth-bridge",
            "bridge": self.bridge,
            "subnet": format!("{}.0/24", self.subnet_prefix),
            "ipMasq": true,
            "dataDir": self.data.path(),
        })
        .to_string()
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.subnet_prefix)
    }

    /// Runs `bin` inside the host netns with CNI env vars; returns (exit, stdout).
    fn plugin(&self, bin: &str, cmd: &str, cid: &str, netns: &str, stdin: &str) -> (i32, String) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host, bin])
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait plugin");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("{bin} {cmd} stderr: {stderr}");
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn bridge(&self, cmd: &str, cid: &str, container: usize) -> (i32, String) {
        let netns = ns_path(&self.containers[container]);
        self.plugin(BIN, cmd, cid, &netns.to_string_lossy(), &self.config())
    }

    /// Runs a command inside a namespace; returns (success, stdout).
    fn exec(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("ip netns exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn host_links(&self) -> Vec<String> {
        netlink::in_netns(Some(&ns_path(&self.host)), |h| async move {
            netlink::list_links(&h).await
        })
        .expect("list host links")
        .into_iter()
        .map(|l| l.name)
        .collect()
    }

    fn nat_rules(&self) -> String {
        self.exec(&self.host, &["iptables", "-w", "-t", "nat", "-S"])
            .1
    }

    fn leases(&self) -> Vec<String> {
        let dir = self.data.path().join(&self.name);
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Keep going past failures so every namespace is attempted.
        let mut errors = Vec::new();
        for ns in self.containers.iter().chain(std::iter::once(&self.host)) {
            if let Err(e) = netlink::delete_netns(&ns_path(ns)) {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            eprintln!("sandbox teardown errors: {errors:?}");
        }
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

#[test]
fn add_check_del_roundtrip() {
    let sb = Sandbox::new(1);
    let cid = "ctr-roundtrip";
    let (rc, out) = sb.bridge("ADD", cid, 0);
    assert_eq!(rc, 0, "ADD failed: {out}");
    let result = json(&out);
    let want_addr = format!("{}.2/24", sb.subnet_prefix);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], want_addr.as_str());
    assert_eq!(result["ips"][0]["gateway"], sb.gateway().as_str());
    assert_eq!(result["ips"][0]["interface"], 2);
    assert_eq!(result["interfaces"][2]["name"], "eth0");
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    let host_veth = result["interfaces"][1]["name"]
        .as_str()
        .expect("veth name")
        .to_string();
    assert!(host_veth.starts_with("veth"));

    // Inside the container: address, default route, loopback, reachability.
    let ctr = &sb.containers[0];
    let (_, addr) = sb.exec(ctr, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&want_addr), "eth0 lacks {want_addr}: {addr}");
    let (_, route) = sb.exec(ctr, &["ip", "route", "show", "default"]);
    assert!(
        route.contains(&format!("default via {} dev eth0", sb.gateway())),
        "{route}"
    );
    let (_, lo) = sb.exec(ctr, &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let (ok, ping) = sb.exec(ctr, &["busybox", "ping", "-c1", "-W3", &sb.gateway()]);
    assert!(ok, "ping gateway failed: {ping}");

    // Host side: veth attached to the bridge with hairpin, rule, lease.
    let links = sb.host_links();
    assert!(links.contains(&host_veth), "{links:?}");
    assert!(links.contains(&sb.bridge), "{links:?}");
    let (_, master) = sb.exec(&sb.host, &["ip", "-o", "link", "show", &host_veth]);
    assert!(
        master.contains(&format!("master {}", sb.bridge)),
        "{master}"
    );
    let (_, hairpin) = sb.exec(
        &sb.host,
        &[
            "cat",
            &format!("/sys/class/net/{host_veth}/brport/hairpin_mode"),
        ],
    );
    assert_eq!(hairpin.trim(), "1");
    let comment = format!("berth:{}:{cid}", sb.name);
    let rules = sb.nat_rules();
    assert!(
        rules.contains(&comment) && rules.contains("MASQUERADE"),
        "{rules}"
    );
    assert_eq!(sb.leases(), vec![format!("{}.2", sb.subnet_prefix)]);

    let (rc, out) = sb.bridge("CHECK", cid, 0);
    assert_eq!(rc, 0, "CHECK failed: {out}");

    for round in 0..2 {
        let (rc, out) = sb.bridge("DEL", cid, 0);
        assert_eq!(rc, 0, "DEL #{round} failed: {out}");
    }
    assert!(!sb.host_links().contains(&host_veth));
    assert!(!sb.nat_rules().contains(&comment));
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    let (_, links) = sb.exec(ctr, &["ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");

    // CHECK after DEL reports an error JSON.
    let (rc, out) = sb.bridge("CHECK", cid, 0);
    assert_ne!(rc, 0);
    let err = json(&out);
    assert!(err["code"].as_u64().is_some(), "{out}");
    assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()));
}

#[test]
fn two_containers_share_the_bridge() {
    let sb = Sandbox::new(2);
    let (rc, out) = sb.bridge("ADD", "ctr-a", 0);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = sb.bridge("ADD", "ctr-b", 1);
    assert_eq!(rc, 0, "{out}");
    let b_addr = json(&out)["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    assert_eq!(b_addr, format!("{}.3/24", sb.subnet_prefix));
    let b_ip = b_addr.trim_end_matches("/24");
    let (ok, ping) = sb.exec(&sb.containers[0], &["busybox", "ping", "-c1", "-W3", b_ip]);
    assert!(ok, "a -> b failed: {ping}");
    // Removing one leaves the other intact.
    let (rc, _) = sb.bridge("DEL", "ctr-a", 0);
    assert_eq!(rc, 0);
    assert_eq!(sb.leases(), vec![format!("{}.3", sb.subnet_prefix)]);
    let rules = sb.nat_rules();
    assert!(
        !rules.contains(&format!("berth:{}:ctr-a", sb.name)),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("berth:{}:ctr-b", sb.name)),
        "{rules}"
    );
    let (rc, out) = sb.bridge("CHECK", "ctr-b", 1);
    assert_eq!(rc, 0, "{out}");
    let (rc, _) = sb.bridge("DEL", "ctr-b", 1);
    assert_eq!(rc, 0);
    assert!(sb.leases().is_empty());
}

#[test]
fn del_after_netns_is_gone_cleans_up() {
    let mut sb = Sandbox::new(1);
    let cid = "ctr-gone";
    let (rc, out) = sb.bridge("ADD", cid, 0);
    assert_eq!(rc, 0, "{out}");
    let ctr = sb.containers.remove(0);
    netlink::delete_netns(&ns_path(&ctr)).expect("delete container netns");
    let (rc, out) = sb.plugin(
        BIN,
        "DEL",
        cid,
        &ns_path(&ctr).to_string_lossy(),
        &sb.config(),
    );
    assert_eq!(rc, 0, "{out}");
    // Also with CNI_NETNS empty, as runtimes do once the sandbox is gone.
    let (rc, out) = sb.plugin(BIN, "DEL", cid, "", &sb.config());
    assert_eq!(rc, 0, "{out}");
    assert!(sb.leases().is_empty());
    assert!(!sb.nat_rules().contains(&format!("berth:{}:{cid}", sb.name)));
    assert!(!sb.host_links().iter().any(|l| l.starts_with("veth")));
}

#[test]
fn version_and_bad_input_give_cni_errors() {
    let sb = Sandbox::new(1);
    let (rc, out) = sb.plugin(BIN, "VERSION", "", "", "");
    assert_eq!(rc, 0);
    assert_eq!(
        json(&out)["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );
    let netns = ns_path(&sb.containers[0]).to_string_lossy().into_owned();
    let bad_subnet = serde_json::json!({
        "cniVersion": "1.0.0", "name": sb.name, "type": "berth-bridge",
        "subnet": "10.0.0.0/99", "dataDir": sb.data.path(),
    })
    .to_string();
    let cases: &[(&str, &str, &str, u64)] = &[
        ("ADD", "ctr", "{this is not json", 6),
        ("ADD", "ctr", &bad_subnet, 7),
        (
            "ADD",
            "ctr",
            r#"{"cniVersion":"0.1.0","name":"x","type":"berth-bridge"}"#,
            1,
        ),
        ("ADD", "", &sb.config(), 4),
        ("FROB", "ctr", &sb.config(), 4),
    ];
    for (cmd, cid, stdin, code) in cases {
        let (rc, out) = sb.plugin(BIN, cmd, cid, &netns, stdin);
        assert_ne!(rc, 0, "{cmd} {stdin}");
        let v = json(&out);
        assert_eq!(v["code"], *code, "{cmd} {stdin}: {out}");
        assert!(v["cniVersion"].is_string());
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Nothing was created by the failed calls.
    assert!(sb.leases().is_empty());
    assert!(!sb.host_links().contains(&sb.bridge));
}

#[test]
fn chains_with_upstream_portmap() {
    let sb = Sandbox::new(1);
    let cid = "ctr-portmap";
    let netns = ns_path(&sb.containers[0]).to_string_lossy().into_owned();
    let (rc, out) = sb.bridge("ADD", cid, 0);
    assert_eq!(rc, 0, "{out}");
    let prev = json(&out);
    let ip = prev["ips"][0]["address"]
        .as_str()
        .expect("address")
        .trim_end_matches("/24")
        .to_string();
    let pm_conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": sb.name,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}
        ]},
        "prevResult": prev,
    })
    .to_string();
    let (rc, out) = sb.plugin(PORTMAP, "ADD", cid, &netns, &pm_conf);
    assert_eq!(rc, 0, "portmap ADD: {out}");
    assert_eq!(
        json(&out)["ips"],
        prev["ips"],
        "portmap must pass our result on"
    );
    let rules = sb.nat_rules();
    assert!(
        rules.contains(&format!("--to-destination {ip}:80")),
        "{rules}"
    );

    // Traffic through the mapping: a listener in the container, a client in
    // the host namespace dialing the bridge address's host port.
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &sb.containers[0],
            "busybox",
            "nc",
            "-l",
            "-p",
            "80",
        ])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn listener");
    let mut delivered = false;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (ok, _) = sb.exec(
            &sb.host,
            &[
                "sh",
                "-c",
                &format!(
                    "echo hello-portmap | busybox nc -w 2 {} 18080",
                    sb.gateway()
                ),
            ],
        );
        if ok {
            delivered = true;
            break;
        }
    }
    let out = if delivered {
        server.wait_with_output().expect("listener output")
    } else {
        // Stop only the listener this test started, by its pid.
        let _ = server.kill();
        server.wait_with_output().expect("listener output")
    };
    assert!(delivered, "could not connect through the port mapping");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-portmap"),
        "listener got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (rc, out) = sb.plugin(PORTMAP, "DEL", cid, &netns, &pm_conf);
    assert_eq!(rc, 0, "portmap DEL: {out}");
    let (rc, out) = sb.bridge("DEL", cid, 0);
    assert_eq!(rc, 0, "{out}");
    let rules = sb.nat_rules();
    assert!(!rules.contains(&format!("{ip}:80")), "{rules}");
    assert!(
        !rules.contains(&format!("berth:{}:{cid}", sb.name)),
        "{rules}"
    );
    assert!(sb.leases().is_empty());
}

#[test]
fn netns_helpers_create_enter_delete() {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let path = ns_path(&format!("bcn{}x{n}", std::process::id() % 100_000));
    netlink::create_netns(&path).expect("create");
    let links = netlink::in_netns(
        Some(&path),
        |h| async move { netlink::list_links(&h).await },
    )
    .expect("list");
    assert_eq!(
        links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        vec!["lo"]
    );
    assert!(
        netlink::create_netns(&path).is_err(),
        "duplicate create must fail"
    );
    netlink::delete_netns(&path).expect("delete");
    assert!(!path.exists());
    netlink::delete_netns(&path).expect("delete is idempotent");
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    let sb = Sandbox::new(4);
    let results: Vec<(i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let sb = &sb;
                s.spawn(move || sb.bridge("ADD", &format!("ctr-par{i}"), i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let mut addrs: Vec<String> = results
        .iter()
        .map(|(rc, out)| {
            assert_eq!(*rc, 0, "{out}");
            json(out)["ips"][0]["address"]
                .as_str()
                .expect("address")
                .to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "{addrs:?}");
    assert_eq!(sb.leases().len(), 4);
    for i in 0..4 {
        let (rc, out) = sb.bridge("CHECK", &format!("ctr-par{i}"), i);
        assert_eq!(rc, 0, "{out}");
    }
    for i in 0..4 {
        let (rc, out) = sb.bridge("DEL", &format!("ctr-par{i}"), i);
        assert_eq!(rc, 0, "{out}");
    }
    assert!(sb.leases().is_empty());
    assert!(!sb.nat_rules().contains(&format!("berth:{}:", sb.name)));
}

#[test]
fn gc_removes_everything_of_dead_containers_only() {
    let sb = Sandbox::new(3);
    for i in 0..3 {
        let (rc, out) = sb.bridge("ADD", &format!("ctr-gc{i}"), i);
        assert_eq!(rc, 0, "{out}");
    }
    // An orphan port on the bridge with no lease, as a crash mid-ADD leaves.
    netlink::in_netns(Some(&ns_path(&sb.host)), {
        let bridge = sb.bridge.clone();
        move |h| async move {
            netlink::create_veth(&h, "vethdeadbeef", "bpdeadbeef").await?;
            let br = netlink::get_link(&h, &bridge).await?.expect("bridge");
            let v = netlink::get_link(&h, "vethdeadbeef").await?.expect("veth");
            netlink::set_master(&h, v.index, br.index).await
        }
    })
    .expect("make orphan veth");
    let net = berth_cni::bridge::parse_config(sb.config().as_bytes()).expect("config");
    let live: std::collections::HashSet<String> = ["ctr-gc1".to_string()].into();
    // gc acts on the namespace it runs in, so run it on a thread inside the
    // sandbox's host namespace.
    let host = ns_path(&sb.host);
    let report = std::thread::spawn(move || {
        let f = std::fs::File::open(&host).expect("open host netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        berth_cni::bridge::gc(&net, &live)
    })
    .join()
    .expect("gc thread")
    .expect("gc");
    let mut gone = report.containers.clone();
    gone.sort();
    assert_eq!(gone, vec!["ctr-gc0", "ctr-gc2"]);
    assert_eq!(report.orphan_links, vec!["vethdeadbeef"]);
    assert_eq!(sb.leases(), vec![format!("{}.3", sb.subnet_prefix)]);
    let rules = sb.nat_rules();
    for (cid, present) in [("ctr-gc0", false), ("ctr-gc1", true), ("ctr-gc2", false)] {
        assert_eq!(
            rules.contains(&format!("berth:{}:{cid}\"", sb.name)),
            present,
            "{cid}: {rules}"
        );
    }
    let links = sb.host_links();
    let veths: Vec<&String> = links.iter().filter(|l| l.starts_with("veth")).collect();
    assert_eq!(veths.len(), 1, "{links:?}");
    let (rc, out) = sb.bridge("CHECK", "ctr-gc1", 1);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = sb.bridge("CHECK", "ctr-gc0", 0);
    assert_ne!(rc, 0, "{out}");
}

#[test]
fn repeated_add_reuses_the_lease_and_rewires() {
    let sb = Sandbox::new(1);
    let cid = "ctr-again";
    let (rc, first) = sb.bridge("ADD", cid, 0);
    assert_eq!(rc, 0, "{first}");
    let (rc, second) = sb.bridge("ADD", cid, 0);
    assert_eq!(rc, 0, "{second}");
    assert_eq!(json(&first)["ips"], json(&second)["ips"]);
    assert_eq!(sb.leases().len(), 1);
    let rules = sb.nat_rules();
    assert_eq!(
        rules.matches(&format!("berth:{}:{cid}\"", sb.name)).count(),
        1,
        "{rules}"
    );
    let (rc, out) = sb.bridge("CHECK", cid, 0);
    assert_eq!(rc, 0, "{out}");
    let (ok, ping) = sb.exec(
        &sb.containers[0],
        &["busybox", "ping", "-c1", "-W3", &sb.gateway()],
    );
    assert!(ok, "{ping}");
    let (rc, out) = sb.bridge("DEL", cid, 0);
    assert_eq!(rc, 0, "{out}");
    assert!(sb.leases().is_empty());
}
