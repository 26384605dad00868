//! End-to-end tests of the `berth-awsvpc` binary and the overlay library.
//! Needs root. Every test builds its own simulated hosts (network
//! namespaces joined by a veth "underlay", or alone with a veth underlay link)
//! and task namespaces, runs the plugin inside a host namespace via
//! `ip netns exec`, and programs overlay membership with `overlay::*_in`
//! inside it; nothing touches the real host's links, and traffic stays in
//! the test's namespaces. Every namespace is removed in `Drop`, also when an
//! assertion fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_cni::netlink;
use berth_cni::overlay::{self, Endpoint, Member, OverlayConfig, Peer};
use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

const BIN: &str = env!("CARGO_BIN_EXE_berth-awsvpc");
const CIDR: &str = "10.199.0.0/16";
const GATEWAY: &str = "10.199.0.1";

fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The namespaces of one test; all deleted on drop.
struct Lab {
    tag: String,
    /// Third octet of this lab's underlay `10.250.X.0/24`.
    x: u32,
    names: Vec<String>,
}

impl Lab {
    fn new() -> Self {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        Lab {
            tag: format!("{}x{n}", pid % 100_000),
            x: (pid + n * 37) % 250 + 1,
            names: Vec::new(),
        }
    }

    /// Creates a namespace `aw<tag><suffix>` and returns its name.
    fn netns(&mut self, suffix: &str) -> String {
        let name = format!("aw{}{suffix}", self.tag);
        netlink::create_netns(&ns_path(&name)).expect("create netns");
        self.names.push(name.clone());
        name
    }

    fn underlay(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.x as u8, host)
    }

    /// A lone host namespace whose underlay link `u0` (one end of a veth
    /// pair whose other end `u0p` stays beside it; this kernel has no
    /// `dummy`) holds `.host`.
    fn lone_host(&mut self, suffix: &str, host: u8) -> String {
        let ns = self.netns(suffix);
        let addr = format!("{}/24", self.underlay(host));
        must(
            &ns,
            &[
                "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u0p",
            ],
        );
        must(&ns, &["ip", "addr", "add", &addr, "dev", "u0"]);
        must(&ns, &["ip", "link", "set", "u0", "up"]);
        must(&ns, &["ip", "link", "set", "u0p", "up"]);
        ns
    }

    /// Two host namespaces joined by a veth pair carrying `.1` and `.2`.
    fn two_hosts(&mut self) -> (String, String) {
        let h1 = self.netns("h1");
        let h2 = self.netns("h2");
        must(
            &h1,
            &[
                "ip", "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", &h2,
            ],
        );
        for (ns, dev, host) in [(&h1, "u1", 1), (&h2, "u2", 2)] {
            let addr = format!("{}/24", self.underlay(host));
            must(ns, &["ip", "addr", "add", &addr, "dev", dev]);
            must(ns, &["ip", "link", "set", dev, "up"]);
        }
        (h1, h2)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Tasks first, then hosts; keep going past failures.
        let mut errors = Vec::new();
        for ns in self.names.iter().rev() {
            if let Err(e) = netlink::delete_netns(&ns_path(ns)) {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            eprintln!("lab teardown errors: {errors:?}");
        }
    }
}

/// Runs a command in a namespace; returns (success, stdout + stderr).
fn exec(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn must(ns: &str, args: &[&str]) -> String {
    let (ok, out) = exec(ns, args);
    assert!(ok, "{args:?} in {ns}: {out}");
    out
}

/// Runs the plugin inside `host` with CNI env vars; returns (exit, stdout).
fn plugin(host: &str, cmd: &str, cid: &str, netns: &str, stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", host, BIN])
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
    assert!(
        !stderr.contains("panicked"),
        "plugin panicked on {cmd}: {stderr}"
    );
    if !stderr.trim().is_empty() {
        eprintln!("berth-awsvpc {cmd} stderr: {stderr}");
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn config(ip: &str, mac: &str, underlay: Option<Ipv4Addr>) -> String {
    let mut v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth-awsvpc",
        "type": "berth-awsvpc",
        "bridge": "bvpc0",
        "vxlan": "bvx0",
        "vni": 4199,
        "cidr": CIDR,
        "capabilities": {"ips": true, "mac": true},
        "runtimeConfig": {"ips": [format!("{ip}/16")], "mac": mac},
    });
    if let Some(u) = underlay {
        v["underlayIP"] = Value::String(u.to_string());
    }
    v.to_string()
}

fn overlay_config(underlay: Ipv4Addr) -> OverlayConfig {
    OverlayConfig {
        bridge: "bvpc0".into(),
        vxlan: "bvx0".into(),
        vni: 4199,
        cidr: CIDR.parse().expect("cidr"),
        underlay_ip: underlay,
        mtu: None,
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

fn links(ns: &str) -> Vec<String> {
    netlink::in_netns(Some(&ns_path(ns)), |h| async move {
        netlink::list_links(&h).await
    })
    .expect("list links")
    .into_iter()
    .map(|l| l.name)
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect()
}

/// Neighbour, FDB and link counters of the given namespaces, for failures.
fn diagnose(namespaces: &[&str]) -> String {
    let mut out = String::new();
    for ns in namespaces {
        for args in [
            &["ip", "neigh", "show"][..],
            &["bridge", "fdb", "show"][..],
            &["ip", "-s", "-d", "link", "show"][..],
            &["cat", "/proc/sys/net/ipv4/ip_forward"][..],
        ] {
            out += &format!("== {ns}: {args:?}\n{}\n", exec(ns, args).1);
        }
    }
    out
}

fn ping(ns: &str, ip: &str) -> (bool, String) {
    exec(ns, &["busybox", "ping", "-c1", "-W2", ip])
}

/// A ping that may take up to three tries (the first can race a neighbour
/// entry still failing from an earlier, deliberately unanswered attempt).
fn reach(ns: &str, ip: &str) -> (bool, String) {
    let mut last = String::new();
    for _ in 0..3 {
        let (ok, out) = ping(ns, ip);
        if ok {
            return (true, out);
        }
        last = out;
    }
    (false, last)
}

#[test]
fn add_check_del_roundtrip() {
    let mut lab = Lab::new();
    let host = lab.lone_host("h", 1);
    let task = lab.netns("t");
    let netns = ns_path(&task).to_string_lossy().into_owned();
    let (ip, mac) = ("10.199.0.5", "02:12:34:56:78:9a");
    let conf = config(ip, mac, Some(lab.underlay(1)));
    let cid = "task-roundtrip";

    let (rc, out) = plugin(&host, "ADD", cid, &netns, &conf);
    assert_eq!(rc, 0, "ADD failed: {out}");
    let r = json(&out);
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["ips"][0]["address"], "10.199.0.5/16");
    assert_eq!(r["ips"][0]["gateway"], GATEWAY);
    assert_eq!(r["ips"][0]["interface"], 2);
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["routes"][0]["gw"], GATEWAY);
    assert_eq!(r["interfaces"][0]["name"], "bvpc0");
    assert_eq!(r["interfaces"][0]["mac"], "0a:42:0a:c7:00:01");
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["interfaces"][2]["mac"], mac);
    assert_eq!(r["interfaces"][2]["sandbox"], netns.as_str());
    let veth = r["interfaces"][1]["name"]
        .as_str()
        .expect("veth name")
        .to_string();
    assert!(veth.starts_with("vpc"), "{veth}");

    // The task side: address, MAC, MTU (underlay 1500 - 50), route, lo.
    let addr = must(&task, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.199.0.5/16"), "{addr}");
    let link = must(&task, &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        link.contains(&format!("link/ether {mac}")) && link.contains("mtu 1450"),
        "{link}"
    );
    let route = must(&task, &["ip", "route", "show", "default"]);
    assert!(
        route.contains(&format!("default via {GATEWAY} dev eth0")),
        "{route}"
    );
    assert!(must(&task, &["ip", "-o", "link", "show", "lo"]).contains("UP"));
    let (ok, out) = reach(&task, GATEWAY);
    assert!(ok, "ping gateway: {out}");

    // The host side: bridge with the gateway, vxlan with the right knobs,
    // veth on the bridge, masquerade rule.
    let br = must(&host, &["ip", "-o", "-d", "link", "show", "bvpc0"]);
    assert!(
        br.contains("link/ether 0a:42:0a:c7:00:01") && br.contains("mtu 1450"),
        "{br}"
    );
    assert!(
        must(&host, &["ip", "-4", "-o", "addr", "show", "dev", "bvpc0"]).contains("10.199.0.1/16")
    );
    let vx = must(&host, &["ip", "-d", "link", "show", "bvx0"]);
    for want in [
        "vxlan id 4199",
        &format!("local {}", lab.underlay(1)),
        "dev u0",
        "dstport 4789",
        "nolearning",
        "proxy",
        "master bvpc0",
        "mtu 1450",
    ] {
        assert!(vx.contains(want), "bvx0 lacks {want:?}: {vx}");
    }
    let port = must(&host, &["ip", "-o", "link", "show", &veth]);
    assert!(port.contains("master bvpc0"), "{port}");
    let nat = must(&host, &["iptables", "-w", "-t", "nat", "-S"]);
    assert!(
        nat.contains("-s 10.199.0.0/16 ! -d 10.199.0.0/16")
            && nat.contains("berth-awsvpc:bvpc0")
            && nat.contains("MASQUERADE"),
        "{nat}"
    );

    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_eq!(rc, 0, "CHECK failed: {out}");

    // A repeated ADD rewires the same way and leaves one NAT rule.
    let (rc, out) = plugin(&host, "ADD", cid, &netns, &conf);
    assert_eq!(rc, 0, "second ADD: {out}");
    let nat = must(&host, &["iptables", "-w", "-t", "nat", "-S"]);
    assert_eq!(nat.matches("berth-awsvpc:bvpc0").count(), 1, "{nat}");
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_eq!(rc, 0, "CHECK after second ADD: {out}");

    // Tampering is caught by CHECK: wrong MAC, then a missing address.
    must(
        &task,
        &["ip", "link", "set", "eth0", "address", "02:00:00:00:00:99"],
    );
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_ne!(rc, 0, "CHECK passed with a wrong MAC");
    assert!(json(&out)["msg"]
        .as_str()
        .is_some_and(|m| m.contains("MAC")));
    must(&task, &["ip", "link", "set", "eth0", "address", mac]);
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_eq!(rc, 0, "CHECK after restoring the MAC: {out}");
    must(
        &task,
        &["ip", "addr", "del", "10.199.0.5/16", "dev", "eth0"],
    );
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_ne!(rc, 0, "CHECK passed without the address");
    let e = json(&out);
    assert!(e["code"].as_u64().is_some(), "{out}");
    assert!(e["msg"].as_str().is_some_and(|m| m.contains("10.199.0.5")));

    // A prevResult that does not list our address fails CHECK too.
    must(
        &task,
        &["ip", "addr", "add", "10.199.0.5/16", "dev", "eth0"],
    );
    must(
        &task,
        &[
            "ip", "route", "replace", "default", "via", GATEWAY, "dev", "eth0",
        ],
    );
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_eq!(rc, 0, "CHECK after restoring: {out}");
    let mut with_prev = json(&conf);
    with_prev["prevResult"] = serde_json::json!({"cniVersion": "1.0.0",
        "ips": [{"address": "10.199.0.6/16"}]});
    let (rc, _) = plugin(&host, "CHECK", cid, &netns, &with_prev.to_string());
    assert_ne!(rc, 0, "CHECK passed with a foreign prevResult");
    with_prev["prevResult"] = r.clone();
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &with_prev.to_string());
    assert_eq!(rc, 0, "CHECK with our own prevResult: {out}");

    for round in 0..2 {
        let (rc, out) = plugin(&host, "DEL", cid, &netns, &conf);
        assert_eq!(rc, 0, "DEL #{round}: {out}");
    }
    let host_links = links(&host);
    assert!(
        !host_links
            .iter()
            .any(|l| l.starts_with("vpc") || l.starts_with("vp")),
        "{host_links:?}"
    );
    assert_eq!(links(&task), vec!["lo"]);
    // DEL leaves the shared overlay alone.
    assert!(host_links.contains(&"bvpc0".to_string()) && host_links.contains(&"bvx0".to_string()));
    // DEL with the task namespace gone, or unnamed, still succeeds.
    let (rc, out) = plugin(&host, "DEL", cid, "", &conf);
    assert_eq!(rc, 0, "DEL without netns: {out}");
    let (rc, out) = plugin(&host, "CHECK", cid, &netns, &conf);
    assert_ne!(rc, 0, "CHECK after DEL passed: {out}");

    // teardown removes everything ensure made.
    overlay::teardown_in(Some(&ns_path(&host)), &overlay_config(lab.underlay(1)))
        .expect("teardown");
    assert_eq!(links(&host), vec!["lo", "u0", "u0p"]);
    let nat = must(&host, &["iptables", "-w", "-t", "nat", "-S"]);
    assert!(!nat.contains("berth-awsvpc"), "{nat}");
}

#[test]
fn version_and_bad_input_give_cni_errors() {
    let mut lab = Lab::new();
    let host = lab.lone_host("h", 1);
    let task = lab.netns("t");
    let netns = ns_path(&task).to_string_lossy().into_owned();
    let (rc, out) = plugin(&host, "VERSION", "", "", "");
    assert_eq!(rc, 0);
    assert_eq!(
        json(&out)["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );
    let u = Some(lab.underlay(1));
    let good = config("10.199.0.5", "02:12:34:56:78:9a", u);
    let patch = |f: &dyn Fn(&mut Value)| {
        let mut v = json(&good);
        f(&mut v);
        v.to_string()
    };
    let no_ips = patch(&|v| v["runtimeConfig"] = serde_json::json!({"mac": "02:12:34:56:78:9a"}));
    let no_rc = patch(&|v| {
        v.as_object_mut().expect("object").remove("runtimeConfig");
    });
    let bad_cidr = patch(&|v| v["cidr"] = "10.199.0.0/99".into());
    let outside = config("10.200.0.5", "02:12:34:56:78:9a", u);
    let gateway = config(GATEWAY, "02:12:34:56:78:9a", u);
    let bad_mac = config("10.199.0.5", "02:12:34:56:78", u);
    let multicast_mac = config("10.199.0.5", "01:00:5e:00:00:01", u);
    let foreign_underlay = config(
        "10.199.0.5",
        "02:12:34:56:78:9a",
        Some("192.0.2.77".parse().expect("ip")),
    );
    let bad_vni = patch(&|v| v["vni"] = 1u32.wrapping_shl(24).into());
    let cases: &[(&str, &str, &str, u64)] = &[
        ("ADD", "ctr", "{this is not json", 6),
        ("ADD", "ctr", "", 6),
        ("ADD", "ctr", &no_ips, 7),
        ("ADD", "ctr", &no_rc, 7),
        ("ADD", "ctr", &bad_cidr, 7),
        ("ADD", "ctr", &outside, 7),
        ("ADD", "ctr", &gateway, 7),
        ("ADD", "ctr", &bad_mac, 7),
        ("ADD", "ctr", &multicast_mac, 7),
        ("ADD", "ctr", &foreign_underlay, 7),
        ("ADD", "ctr", &bad_vni, 7),
        ("CHECK", "ctr", &bad_mac, 7),
        (
            "ADD",
            "ctr",
            r#"{"cniVersion":"0.1.0","name":"x","type":"berth-awsvpc","cidr":"10.199.0.0/16"}"#,
            1,
        ),
        ("ADD", "", &good, 4),
        ("FROB", "ctr", &good, 4),
    ];
    for (cmd, cid, stdin, code) in cases {
        let (rc, out) = plugin(&host, cmd, cid, &netns, stdin);
        assert_eq!(rc, 1, "{cmd} {stdin}: {out}");
        let v = json(&out);
        assert_eq!(v["code"], *code, "{cmd} {stdin}: {out}");
        assert!(v["cniVersion"].is_string());
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // ADD into a namespace that does not exist: code 3.
    let (rc, out) = plugin(&host, "ADD", "ctr", "/run/netns/awsvpc-none", &good);
    assert_eq!((rc, json(&out)["code"].as_u64()), (1, Some(3)), "{out}");
    // Nothing was created by the failed calls.
    assert_eq!(links(&host), vec!["lo", "u0", "u0p"]);
    assert_eq!(links(&task), vec!["lo"]);
    // DEL does not need runtimeConfig and succeeds with nothing to remove.
    let (rc, out) = plugin(&host, "DEL", "ctr", &netns, &no_rc);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn concurrent_adds_on_a_fresh_host() {
    let mut lab = Lab::new();
    let host = lab.lone_host("h", 1);
    let tasks: Vec<String> = (0..4).map(|i| lab.netns(&format!("t{i}"))).collect();
    let u = Some(lab.underlay(1));
    let ip = |i: usize| format!("10.199.1.{}", 10 + i);
    let mac = |i: usize| format!("02:00:00:00:01:{:02x}", 10 + i);
    let results: Vec<(i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (host, conf) = (&host, config(&ip(i), &mac(i), u));
                let path = ns_path(t).to_string_lossy().into_owned();
                s.spawn(move || plugin(host, "ADD", &format!("task-par{i}"), &path, &conf))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    for (i, (rc, out)) in results.iter().enumerate() {
        assert_eq!(*rc, 0, "ADD {i}: {out}");
        assert_eq!(json(out)["ips"][0]["address"], format!("{}/16", ip(i)));
    }
    let nat = must(&host, &["iptables", "-w", "-t", "nat", "-S"]);
    assert_eq!(nat.matches("berth-awsvpc:bvpc0").count(), 1, "{nat}");
    let host_links = links(&host);
    assert_eq!(
        host_links.iter().filter(|l| l.starts_with("vpc")).count(),
        4,
        "{host_links:?}"
    );
    for (i, t) in tasks.iter().enumerate() {
        let path = ns_path(t).to_string_lossy().into_owned();
        let conf = config(&ip(i), &mac(i), u);
        let (rc, out) = plugin(&host, "CHECK", &format!("task-par{i}"), &path, &conf);
        assert_eq!(rc, 0, "CHECK {i}: {out}");
    }
    // Tasks on one host talk over the bridge without any overlay entries.
    for i in 1..4 {
        let (ok, out) = reach(&tasks[0], &ip(i));
        assert!(ok, "t0 -> t{i}: {out}");
    }
    for (i, t) in tasks.iter().enumerate() {
        let path = ns_path(t).to_string_lossy().into_owned();
        let conf = config(&ip(i), &mac(i), u);
        let (rc, out) = plugin(&host, "DEL", &format!("task-par{i}"), &path, &conf);
        assert_eq!(rc, 0, "DEL {i}: {out}");
    }
    assert!(!links(&host).iter().any(|l| l.starts_with("vp")));
    overlay::teardown_in(Some(&ns_path(&host)), &overlay_config(lab.underlay(1)))
        .expect("teardown");
    assert_eq!(links(&host), vec!["lo", "u0", "u0p"]);
}

#[test]
fn ensure_recreates_a_wrong_vxlan_and_is_idempotent() {
    let mut lab = Lab::new();
    let host = lab.lone_host("h", 1);
    let path = ns_path(&host);
    let cfg = overlay_config(lab.underlay(1));
    // A stale device: wrong VNI, learning on, no local address.
    netlink::in_netns(Some(&path), |h| async move {
        let stale = netlink::VxlanParams {
            vni: 77,
            local: None,
            link: None,
            port: 4789,
            learning: true,
            proxy: false,
        };
        netlink::create_vxlan(&h, "bvx0", &stale, 1400).await
    })
    .expect("stale vxlan");
    let first = overlay::ensure_in(Some(&path), &cfg).expect("ensure");
    assert_eq!(first.mtu, 1450);
    let read = |p: &Path| {
        netlink::in_netns(
            Some(p),
            |h| async move { netlink::get_vxlan(&h, "bvx0").await },
        )
        .expect("get vxlan")
        .expect("bvx0 exists")
    };
    let (link, params) = read(&path);
    let params = params.expect("is a vxlan");
    assert_eq!(params.vni, 4199);
    assert_eq!(params.local, Some(lab.underlay(1)));
    assert!(!params.learning && params.proxy);
    assert_eq!(link.index, first.vxlan_index);
    assert_eq!(link.master, Some(first.bridge_index));
    let again = overlay::ensure_in(Some(&path), &cfg).expect("ensure again");
    assert_eq!(again, first, "a second ensure must change nothing");
    let nat = must(&host, &["iptables", "-w", "-t", "nat", "-S"]);
    assert_eq!(nat.matches("berth-awsvpc:bvpc0").count(), 1, "{nat}");
    // A configured MTU wins over the derived one.
    let mut small = cfg.clone();
    small.mtu = Some(1300);
    assert_eq!(
        overlay::ensure_in(Some(&path), &small).expect("mtu").mtu,
        1300
    );
    assert!(must(&host, &["ip", "-o", "link", "show", "bvx0"]).contains("mtu 1300"));
    // sync before ensure on a host without the device says so.
    let bare = lab.lone_host("b", 9);
    let err = overlay::sync_in(Some(&ns_path(&bare)), &overlay_config(lab.underlay(9)), &[])
        .expect_err("sync without the device");
    assert!(err.to_string().contains("bvx0"), "{err}");
    overlay::teardown_in(Some(&path), &cfg).expect("teardown");
    overlay::teardown_in(Some(&path), &cfg).expect("teardown is idempotent");
    assert_eq!(links(&host), vec!["lo", "u0", "u0p"]);
}

fn member(id: &str, underlay: Option<Ipv4Addr>, eps: &[(&str, &str)]) -> Member {
    Member {
        instance_id: id.into(),
        underlay_ip: underlay.map(|u| u.to_string()),
        endpoints: eps
            .iter()
            .map(|(ip, mac)| Endpoint {
                ip: ip.to_string(),
                mac: mac.to_string(),
            })
            .collect(),
    }
}

#[test]
fn two_hosts_reach_each_other_over_the_overlay() {
    let mut lab = Lab::new();
    let (h1, h2) = lab.two_hosts();
    let t1 = lab.netns("t1");
    let t2 = lab.netns("t2");
    let (u1, u2) = (lab.underlay(1), lab.underlay(2));
    let (ip1, mac1) = ("10.199.0.2", "02:00:00:00:01:02");
    let (ip2, mac2) = ("10.199.0.3", "02:00:00:00:02:03");
    let t1_path = ns_path(&t1).to_string_lossy().into_owned();
    let t2_path = ns_path(&t2).to_string_lossy().into_owned();
    // H1 is told its underlay; H2 detects it.
    let conf1 = config(ip1, mac1, Some(u1));
    let conf2 = config(ip2, mac2, None);
    let (rc, out) = plugin(&h1, "ADD", "task-1", &t1_path, &conf1);
    assert_eq!(rc, 0, "ADD on h1: {out}");
    let (rc, out) = plugin(&h2, "ADD", "task-2", &t2_path, &conf2);
    assert_eq!(rc, 0, "ADD on h2: {out}");
    let vx2 = must(&h2, &["ip", "-d", "link", "show", "bvx0"]);
    assert!(
        vx2.contains(&format!("local {u2}")) && vx2.contains("dev u2"),
        "{vx2}"
    );

    // No membership yet: nothing crosses (no learning, no flooding).
    let (ok, out) = ping(&t1, ip2);
    assert!(!ok, "reached {ip2} before any membership: {out}");

    // Membership as the coordinator hands it out, seen from each host.
    let members = vec![
        member("mi-1", Some(u1), &[(ip1, mac1)]),
        member("mi-2", Some(u2), &[(ip2, mac2)]),
        member("mi-3", None, &[("10.199.0.9", "02:00:00:00:03:09")]),
    ];
    let peers1 = overlay::peers_from_network(&members, "mi-1");
    let peers2 = overlay::peers_from_network(&members, "mi-2");
    let p2 = Peer {
        ip: ip2.parse().expect("ip"),
        mac: overlay::parse_mac(mac2).expect("mac"),
        underlay: u2,
    };
    assert_eq!(peers1, vec![p2]);
    let (p1h, p2h) = (ns_path(&h1), ns_path(&h2));
    let (cfg1, cfg2) = (overlay_config(u1), overlay_config(u2));
    let d1 = overlay::sync_in(Some(&p1h), &cfg1, &peers1).expect("sync h1");
    assert_eq!((d1.add, d1.remove), (vec![p2], vec![]));
    let d2 = overlay::sync_in(Some(&p2h), &cfg2, &peers2).expect("sync h2");
    assert_eq!(d2.add.len(), 1);
    assert!(
        overlay::sync_in(Some(&p1h), &cfg1, &peers1)
            .expect("resync h1")
            .is_empty(),
        "a second sync must change nothing"
    );
    let fdb = must(&h1, &["bridge", "fdb", "show", "dev", "bvx0"]);
    assert!(
        fdb.contains(&format!("{mac2} dst {u2} self permanent")),
        "{fdb}"
    );
    let neigh = must(&h1, &["ip", "neigh", "show", "dev", "bvx0"]);
    assert!(
        neigh.contains(&format!("{ip2} lladdr {mac2} PERMANENT")),
        "{neigh}"
    );

    // Task to task by overlay address, both ways; ARP for the remote
    // address was answered locally by the vxlan proxy with the right MAC.
    // The earlier unanswered attempt left a failing neighbour entry in T1.
    must(&t1, &["ip", "neigh", "flush", "all"]);
    let (ok, out) = reach(&t1, ip2);
    assert!(
        ok,
        "t1 -> t2 over the overlay: {out}\n{}",
        diagnose(&[&h1, &h2, &t1, &t2])
    );
    let (ok, out) = reach(&t2, ip1);
    assert!(ok, "t2 -> t1 over the overlay: {out}");
    let arp = must(&t1, &["ip", "neigh", "show", ip2]);
    assert!(arp.contains(mac2), "{arp}");
    // The gateway answers locally on each host.
    assert!(reach(&t2, GATEWAY).0);
    // Egress leaves through the host's masquerade rule: T1 reaches H2's
    // underlay address, which has no route back to the overlay.
    assert_eq!(
        must(&h1, &["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let (ok, out) = reach(&t1, &u2.to_string());
    assert!(ok, "t1 -> h2's underlay through NAT: {out}");
    let nat = must(
        &h1,
        &[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-L",
            "BERTH-POSTROUTING",
            "-v",
            "-n",
        ],
    );
    let hits: u64 = nat
        .lines()
        .find(|l| l.contains("berth-awsvpc:bvpc0"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(hits >= 1, "masquerade rule never matched: {nat}");

    // Removing the peer on H1 breaks T1 -> T2.
    let d = overlay::sync_in(Some(&p1h), &cfg1, &[]).expect("sync h1 empty");
    assert_eq!((d.add, d.remove), (vec![], vec![p2]));
    // (The bridge's own learned entry for mac2 on the port may linger; the
    // device's `self` entry must be gone.)
    let fdb = must(&h1, &["bridge", "fdb", "show", "dev", "bvx0"]);
    assert!(
        !fdb.lines().any(|l| l.contains(mac2) && l.contains("self")),
        "{fdb}"
    );
    must(&t1, &["ip", "neigh", "flush", "all"]);
    let (ok, out) = ping(&t1, ip2);
    assert!(!ok, "t1 still reaches t2 after its removal: {out}");

    // A stale half entry (FDB without neighbour) is cleaned by the next sync,
    // and putting the peer back restores reachability.
    netlink::in_netns(Some(&p1h), move |h| async move {
        let vx = netlink::get_link(&h, "bvx0").await?.expect("bvx0");
        netlink::add_fdb(
            &h,
            vx.index,
            [2, 0, 0, 0, 9, 9],
            Ipv4Addr::new(10, 250, 9, 9),
        )
        .await
    })
    .expect("stale fdb");
    let d = overlay::sync_in(Some(&p1h), &cfg1, &peers1).expect("sync h1 again");
    assert_eq!(d.add, vec![p2]);
    assert_eq!(d.remove.len(), 1, "{:?}", d.remove);
    assert_eq!(d.remove[0].mac, [2, 0, 0, 0, 9, 9]);
    must(&t1, &["ip", "neigh", "flush", "all"]);
    let (ok, out) = reach(&t1, ip2);
    assert!(ok, "t1 -> t2 after re-adding: {out}");

    // DEL leaves no veth; teardown leaves nothing of the overlay.
    for (h, cid, t, conf) in [
        (&h1, "task-1", &t1_path, &conf1),
        (&h2, "task-2", &t2_path, &conf2),
    ] {
        let (rc, out) = plugin(h, "DEL", cid, t, conf);
        assert_eq!(rc, 0, "DEL: {out}");
    }
    for (h, p, cfg, dev) in [(&h1, &p1h, &cfg1, "u1"), (&h2, &p2h, &cfg2, "u2")] {
        assert!(!links(h).iter().any(|l| l.starts_with("vp")));
        overlay::teardown_in(Some(p), cfg).expect("teardown");
        assert_eq!(links(h), vec!["lo".to_string(), dev.to_string()]);
        let nat = must(h, &["iptables", "-w", "-t", "nat", "-S"]);
        assert!(!nat.contains("berth-awsvpc"), "{nat}");
    }
    assert_eq!(links(&t1), vec!["lo"]);
    assert_eq!(links(&t2), vec!["lo"]);
}
