//! The `berth-bridge` CNI plugin: ADD/DEL/CHECK/VERSION over a Linux bridge,
//! a veth pair per container, host-local IPAM and an outbound masquerade
//! rule. [`run`] takes the environment and stdin and returns what to print
//! and the exit code; the binary is a thin wrapper around it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ipam::{Ipv4Net, LeaseStore};
use crate::netlink::{self, NetlinkError};
use crate::plugin::{self, valid_ifname};
use crate::spec::{self, code, CniError, CniResult, Dns, Interface, IpConfig, Route};
use crate::{ipam, iptables};

/// Errors from the plugin's operations, each mapped to a CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("ipam: {0}")]
    Ipam(#[from] ipam::IpamError),
    #[error("iptables: {0}")]
    Iptables(#[from] iptables::IptablesError),
    #[error("{0}")]
    Check(String),
    #[error("several errors: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<BridgeError>),
}

impl BridgeError {
    fn to_cni(&self) -> CniError {
        match self {
            BridgeError::Cni(e) => e.clone(),
            BridgeError::Ipam(ipam::IpamError::Exhausted(_)) => {
                CniError::new(code::TRY_AGAIN_LATER, self.to_string())
            }
            BridgeError::Ipam(ipam::IpamError::InvalidSubnet(_)) => {
                CniError::new(code::INVALID_NETWORK_CONFIG, self.to_string())
            }
            _ => CniError::new(code::GENERIC, self.to_string()),
        }
    }
}

fn default_bridge() -> String {
    "berth0".into()
}
fn default_subnet() -> String {
    "172.31.0.0/24".into()
}
fn default_true() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/berth/cni")
}

/// The plugin's network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConfig {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_subnet")]
    pub subnet: String,
    #[serde(default = "default_true")]
    pub ip_masq: bool,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Network {
    pub config: BridgeConfig,
    pub subnet: Ipv4Net,
}

/// Parses and validates stdin: undecodable JSON is code 6, an unsupported
/// version code 1, anything else wrong code 7.
pub fn parse_config(stdin: &[u8]) -> Result<Network, CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("decoding config: {e}")))?;
    if let Some(v) = value.get("cniVersion").and_then(|v| v.as_str()) {
        spec::check_version(v)?;
    }
    let config: BridgeConfig = serde_json::from_value(value)
        .map_err(|e| CniError::new(code::INVALID_NETWORK_CONFIG, format!("network config: {e}")))?;
    let bad = |m: String| CniError::new(code::INVALID_NETWORK_CONFIG, m);
    if config.name.is_empty() || config.name.contains(['/', '\0']) || config.name == ".." {
        return Err(bad(format!("invalid network name {:?}", config.name)));
    }
    if !valid_ifname(&config.bridge) {
        return Err(bad(format!("invalid bridge name {:?}", config.bridge)));
    }
    let subnet: Ipv4Net = config
        .subnet
        .parse()
        .map_err(|e: ipam::IpamError| bad(e.to_string()))?;
    Ok(Network { config, subnet })
}

/// The host-side veth name and the temporary peer name for a container's
/// interface: `veth` + 8 hex digits of sha256(container id, ifname), and `bp`
/// + the next 8.
pub fn veth_names(container_id: &str, ifname: &str) -> (String, String) {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    let hex = hex::encode(h.finalize());
    (format!("veth{}", &hex[..8]), format!("bp{}", &hex[8..16]))
}

fn rule_comment(network: &str, container_id: &str) -> String {
    format!("berth:{network}:{container_id}")
}

pub use crate::plugin::Outcome;

/// Runs one invocation.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    plugin::run(
        &plugin::Plugin {
            name: "berth-bridge",
            parse: parse_config,
            cni_version: |n: &Network| n.config.cni_version.as_str(),
            add,
            del,
            check,
            to_cni: |e| e.to_cni(),
        },
        vars,
        stdin,
    )
}

fn netns_path(env: &spec::RuntimeEnv) -> Result<PathBuf, CniError> {
    let p = PathBuf::from(&env.netns);
    if !p.exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} does not exist", env.netns),
        ));
    }
    Ok(p)
}

/// ADD: allocate, wire up, and report. Rolls back on failure.
pub fn add(net: &Network, env: &spec::RuntimeEnv) -> Result<CniResult, BridgeError> {
    let netns = netns_path(env)?;
    let store = LeaseStore::open(&net.config.data_dir, &net.config.name, net.subnet)?;
    let _lock = store.lock()?;
    let ip = store.allocate(&env.container_id, &env.ifname)?;
    match wire_up(net, env, &netns, ip) {
        Ok(r) => Ok(r),
        Err(e) => {
            let mut errors = vec![e];
            if let Err(c) = teardown(net, &env.container_id, &env.ifname) {
                errors.push(c);
            }
            Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                BridgeError::Multiple(errors)
            })
        }
    }
}

fn wire_up(
    net: &Network,
    env: &spec::RuntimeEnv,
    netns: &Path,
    ip: Ipv4Addr,
) -> Result<CniResult, BridgeError> {
    let gateway = net.subnet.gateway();
    let prefix = net.subnet.prefix();
    // Port mappings (DNAT) and outbound masquerade both forward.
    netlink::enable_ipv4_forwarding()?;
    let (host, peer) = veth_names(&env.container_id, &env.ifname);
    let bridge = net.config.bridge.clone();
    let (host_c, netns_c) = (host.clone(), netns.to_path_buf());
    let ifname_c = env.ifname.clone();
    let (bridge_mac, host_mac) = netlink::in_netns(None, move |h| async move {
        let br = netlink::ensure_bridge(&h, &bridge, gateway, prefix).await?;
        // A leftover from an earlier, interrupted ADD would make creation
        // fail; deleting its host end also removes the container end. The
        // peer name is only in this namespace if an older version's ADD
        // stopped before moving it.
        netlink::delete_link(&h, &host_c).await?;
        netlink::delete_link(&h, &peer).await?;
        // The container end is born in the namespace under its final name.
        netlink::create_veth_in_netns(&h, &host_c, &ifname_c, &netns_c, None, None).await?;
        let host_link = netlink::get_link(&h, &host_c)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(host_c.clone()))?;
        netlink::set_master(&h, host_link.index, br).await?;
        netlink::set_up(&h, host_link.index).await?;
        netlink::set_hairpin(&h, host_link.index).await?;
        let br_mac = netlink::get_link(&h, &bridge).await?.and_then(|l| l.mac);
        Ok((br_mac, host_link.mac))
    })?;
    let ifname = env.ifname.clone();
    let container_mac = netlink::in_netns(Some(netns), move |h| async move {
        let link = netlink::get_link(&h, &ifname)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(ifname.clone()))?;
        netlink::ensure_address(&h, link.index, IpAddr::V4(ip), prefix).await?;
        netlink::set_up(&h, link.index).await?;
        if let Some(lo) = netlink::get_link(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        netlink::add_default_route(&h, gateway, link.index).await?;
        Ok(link.mac)
    })?;
    if net.config.ip_masq {
        iptables::ensure_masquerade(
            &ip.to_string(),
            &net.subnet.to_string(),
            &rule_comment(&net.config.name, &env.container_id),
        )?;
    }
    let mac = |m: Option<[u8; 6]>| m.map(|m| netlink::format_mac(&m)).unwrap_or_default();
    Ok(CniResult {
        cni_version: net.config.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: net.config.bridge.clone(),
                mac: mac(bridge_mac),
                sandbox: String::new(),
            },
            Interface {
                name: host,
                mac: mac(host_mac),
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: mac(container_mac),
                sandbox: env.netns.clone(),
            },
        ],
        ips: vec![IpConfig {
            address: format!("{ip}/{prefix}"),
            gateway: Some(gateway.to_string()),
            interface: Some(2),
            version: None,
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gateway.to_string()),
        }],
        dns: Dns::default(),
    })
}

/// Removes the veth, the masquerade rules and the lease, collecting every
/// error and carrying on past each one.
fn teardown(net: &Network, container_id: &str, ifname: &str) -> Result<(), BridgeError> {
    let mut errors = Vec::new();
    let (host, peer) = veth_names(container_id, ifname);
    // Deleting the host end removes the peer wherever it lives; the peer name
    // is only still in the host namespace if ADD stopped before moving it.
    if let Err(e) = netlink::in_netns(None, move |h| async move {
        netlink::delete_link(&h, &host).await?;
        netlink::delete_link(&h, &peer).await?;
        Ok(())
    }) {
        errors.push(BridgeError::from(e));
    }
    if let Err(e) = iptables::remove_with_comment(&rule_comment(&net.config.name, container_id)) {
        errors.push(e.into());
    }
    match LeaseStore::open(&net.config.data_dir, &net.config.name, net.subnet) {
        Ok(store) => {
            if let Err(e) = store.release(container_id, Some(ifname)) {
                errors.push(e.into());
            }
        }
        Err(e) => errors.push(e.into()),
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(BridgeError::Multiple(errors)),
    }
}

/// DEL: idempotent; succeeds when everything is already gone or the
/// namespace no longer exists.
pub fn del(net: &Network, env: &spec::RuntimeEnv) -> Result<(), BridgeError> {
    let store = LeaseStore::open(&net.config.data_dir, &net.config.name, net.subnet)?;
    let _lock = store.lock()?;
    teardown(net, &env.container_id, &env.ifname)
}

/// What [`gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Containers whose lease (and veth and rules) were torn down.
    pub containers: Vec<String>,
    /// Bridge ports deleted because no live lease accounts for them.
    pub orphan_links: Vec<String>,
    /// Masquerade rules removed because their container is not live.
    pub orphan_rules: usize,
}

/// Garbage-collects this network after a crash: every lease, host veth on
/// the bridge and masquerade rule that belongs to a container not in `live`
/// is removed. Keeps going past individual failures and reports them all.
pub fn gc(
    net: &Network,
    live: &std::collections::HashSet<String>,
) -> Result<GcReport, BridgeError> {
    let store = LeaseStore::open(&net.config.data_dir, &net.config.name, net.subnet)?;
    let _lock = store.lock()?;
    let mut report = GcReport::default();
    let mut errors = Vec::new();
    let mut keep_links = std::collections::HashSet::new();
    for lease in store.list()? {
        if live.contains(&lease.container_id) {
            keep_links.insert(veth_names(&lease.container_id, &lease.ifname).0);
            continue;
        }
        match teardown(net, &lease.container_id, &lease.ifname) {
            Ok(()) => report.containers.push(lease.container_id),
            Err(e) => errors.push(e),
        }
    }
    let bridge = net.config.bridge.clone();
    let orphans = netlink::in_netns(None, move |h| async move {
        let Some(br) = netlink::get_link(&h, &bridge).await? else {
            return Ok(Vec::new());
        };
        let mut deleted = Vec::new();
        for l in netlink::list_links(&h).await? {
            let orphan = l.master == Some(br.index)
                && l.name.starts_with("veth")
                && !keep_links.contains(&l.name);
            if orphan && netlink::delete_link(&h, &l.name).await? {
                deleted.push(l.name);
            }
        }
        Ok(deleted)
    });
    match orphans {
        Ok(o) => report.orphan_links = o,
        Err(e) => errors.push(e.into()),
    }
    let prefix = rule_comment(&net.config.name, "");
    match iptables::comments_with_prefix(&prefix) {
        Ok(comments) => {
            for c in comments {
                let cid = &c[prefix.len()..];
                if live.contains(cid) {
                    continue;
                }
                match iptables::remove_with_comment(&c) {
                    Ok(n) => report.orphan_rules += n,
                    Err(e) => errors.push(e.into()),
                }
            }
        }
        Err(e) => errors.push(e.into()),
    }
    match errors.len() {
        0 => Ok(report),
        1 => Err(errors.remove(0)),
        _ => Err(BridgeError::Multiple(errors)),
    }
}

/// What CHECK finds of a container's wiring: its interface inside the
/// namespace, that interface's addresses, and the namespace's default route.
pub(crate) struct Wiring {
    pub link: netlink::LinkSummary,
    pub addrs: Vec<(IpAddr, u8)>,
    pub route: Option<(Ipv4Addr, u32)>,
}

impl Wiring {
    /// Whether the interface holds `ip/prefix` and the default route goes
    /// via `gateway` on it; `Err` says what is wrong.
    pub(crate) fn expect(
        &self,
        ifname: &str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), String> {
        if !self.addrs.contains(&(IpAddr::V4(ip), prefix)) {
            return Err(format!(
                "{ifname} lacks {ip}/{prefix} (has {:?})",
                self.addrs
            ));
        }
        if self.route != Some((gateway, self.link.index)) {
            return Err(format!(
                "default route via {gateway} on {ifname} missing (found {:?})",
                self.route
            ));
        }
        Ok(())
    }
}

/// Observes the host veth `host` attached to `bridge` and the container's
/// interface in `netns` (CHECK for both plugins). `Ok(Err(why))`: something
/// is missing or wired elsewhere.
pub(crate) fn observe_wiring(
    bridge: &str,
    host: &str,
    netns: &Path,
    env: &spec::RuntimeEnv,
) -> Result<Result<Wiring, String>, NetlinkError> {
    let (bridge_c, host_c) = (bridge.to_string(), host.to_string());
    let (br, host_link) = netlink::in_netns(None, move |h| async move {
        Ok((
            netlink::get_link(&h, &bridge_c).await?,
            netlink::get_link(&h, &host_c).await?,
        ))
    })?;
    let Some(br) = br else {
        return Ok(Err(format!("bridge {bridge} missing")));
    };
    let Some(host_link) = host_link else {
        return Ok(Err(format!("veth {host} missing")));
    };
    if host_link.master != Some(br.index) {
        return Ok(Err(format!("veth {host} is not attached to {bridge}")));
    }
    let ifname = env.ifname.clone();
    let (link, addrs, route) = netlink::in_netns(Some(netns), move |h| async move {
        let link = netlink::get_link(&h, &ifname).await?;
        let addrs = match &link {
            Some(l) => netlink::list_addresses(&h, l.index).await?,
            None => Vec::new(),
        };
        Ok((link, addrs, netlink::default_route(&h).await?))
    })?;
    Ok(match link {
        Some(link) => Ok(Wiring { link, addrs, route }),
        None => Err(format!("{} missing in {}", env.ifname, env.netns)),
    })
}

/// CHECK: the lease, the host veth on the bridge, and the container
/// interface with its address and default route must all be present.
pub fn check(net: &Network, env: &spec::RuntimeEnv) -> Result<(), BridgeError> {
    let netns = netns_path(env)?;
    let store = LeaseStore::open(&net.config.data_dir, &net.config.name, net.subnet)?;
    let lease = store
        .find(&env.container_id, &env.ifname)?
        .ok_or_else(|| BridgeError::Check(format!("no lease for {}", env.container_id)))?;
    let (host, _) = veth_names(&env.container_id, &env.ifname);
    observe_wiring(&net.config.bridge, &host, &netns, env)?
        .and_then(|w| {
            w.expect(
                &env.ifname,
                lease.ip,
                net.subnet.prefix(),
                net.subnet.gateway(),
            )
        })
        .map_err(BridgeError::Check)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing_table() {
        // (stdin, Ok(subnet) or Err(code))
        let cases: &[(&str, Result<&str, u32>)] = &[
            (
                r#"{"cniVersion":"1.0.0","name":"b","type":"berth-bridge"}"#,
                Ok("172.31.0.0/24"),
            ),
            (
                r#"{"cniVersion":"0.4.0","name":"b","type":"berth-bridge","subnet":"10.5.0.0/16","bridge":"br5"}"#,
                Ok("10.5.0.0/16"),
            ),
            ("{not json", Err(code::DECODING_FAILURE)),
            ("", Err(code::DECODING_FAILURE)),
            (
                r#"{"cniVersion":"9.9.9","name":"b","type":"berth-bridge"}"#,
                Err(code::INCOMPATIBLE_VERSION),
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"berth-bridge"}"#,
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"b","type":"berth-bridge","subnet":"10.0.0.0/33"}"#,
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"b","type":"berth-bridge","bridge":"waytoolongbridgename"}"#,
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"../x","type":"berth-bridge"}"#,
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"b","type":"berth-bridge","ipMasq":"yes"}"#,
                Err(code::INVALID_NETWORK_CONFIG),
            ),
        ];
        for (stdin, want) in cases {
            let got = parse_config(stdin.as_bytes())
                .map(|n| n.subnet.to_string())
                .map_err(|e| e.code);
            assert_eq!(got, want.map(str::to_string), "{stdin}");
        }
    }

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("c1", "eth0", "c1", "eth1"),
            ("c1", "eth0", "c2", "eth0"),
            ("a", "beth0", "ab", "eth0"),
        ];
        for (c1, i1, c2, i2) in cases {
            let a = veth_names(c1, i1);
            assert_eq!(a, veth_names(c1, i1));
            assert_ne!(a, veth_names(c2, i2));
            assert!(a.0.len() <= 15 && a.1.len() <= 15);
            assert!(a.0.starts_with("veth") && a.1.starts_with("bp"));
        }
    }

    #[test]
    fn run_without_network_table() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let add_env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        let good = r#"{"cniVersion":"0.4.0","name":"b","type":"berth-bridge"}"#;
        // (env, stdin, exit, code or None for success)
        let cases: Vec<(HashMap<String, String>, &str, i32, Option<u64>)> = vec![
            (vars(&[("CNI_COMMAND", "VERSION")]), "", 0, None),
            (vars(&[]), good, 1, Some(4)),
            (vars(&add_env), "{", 1, Some(6)),
            (vars(&add_env), r#"{"cniVersion":"1.0.0"}"#, 1, Some(7)),
            (vars(&add_env), good, 1, Some(3)),
        ];
        for (env, stdin, exit, code) in cases {
            let out = run(&env, stdin.as_bytes());
            assert_eq!(out.exit_code, exit, "{env:?} {stdin}");
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            match code {
                Some(c) => {
                    assert_eq!(v["code"], c, "{env:?} {stdin}");
                    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
                }
                None => assert!(v["supportedVersions"].is_array()),
            }
        }
    }
}
