//! The `berth-awsvpc` CNI plugin: ADD/DEL/CHECK/VERSION for a task on the
//! cluster's flat awsvpc network. ADD makes sure this host's overlay
//! (bridge, VXLAN device, NAT; see [`overlay`]) exists, then wires a veth
//! pair: host end on the bridge, container end renamed to `CNI_IFNAME` with
//! the address and MAC the coordinator allocated (`runtimeConfig.ips` /
//! `runtimeConfig.mac`, the `ips` and `mac` capabilities), the overlay MTU and
//! a default route via the anycast gateway. No IPAM here. DEL removes the
//! veth only (nothing shared). [`run`] takes the environment and stdin and
//! returns what to print and the exit code; the binary is a thin wrapper.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ipam::{self, Ipv4Net};
use crate::netlink::{self, NetlinkError};
use crate::overlay::{self, OverlayConfig, OverlayError};
use crate::plugin;
pub use crate::plugin::Outcome;
use crate::spec::{self, code, CniError, CniResult, Dns, Interface, IpConfig, Route};

/// Errors from the plugin's operations, each mapped to a CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum AwsvpcError {
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("overlay: {0}")]
    Overlay(#[from] OverlayError),
    #[error("{0}")]
    Check(String),
    #[error("several errors: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<AwsvpcError>),
}

impl AwsvpcError {
    fn to_cni(&self) -> CniError {
        match self {
            AwsvpcError::Cni(e) => e.clone(),
            AwsvpcError::Overlay(
                OverlayError::Invalid(_)
                | OverlayError::UnderlayNotFound(_)
                | OverlayError::NoUnderlay,
            ) => CniError::new(code::INVALID_NETWORK_CONFIG, self.to_string()),
            _ => CniError::new(code::GENERIC, self.to_string()),
        }
    }
}

fn default_bridge() -> String {
    "bvpc0".into()
}
fn default_vxlan() -> String {
    "bvx0".into()
}
fn default_vni() -> u32 {
    overlay::DEFAULT_VNI
}

/// `runtimeConfig` as a runtime fills it from the `ips` and `mac`
/// capabilities.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// The plugin's network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcConfig {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_vxlan")]
    pub vxlan: String,
    #[serde(default = "default_vni")]
    pub vni: u32,
    pub cidr: String,
    /// This host's VXLAN endpoint; detected when absent.
    #[serde(default, rename = "underlayIP", alias = "underlayIp")]
    pub underlay_ip: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// A chained plugin's input; this plugin comes first in a chain, so ADD
    /// ignores it and CHECK verifies our address is in it.
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Network {
    pub config: AwsvpcConfig,
    pub cidr: Ipv4Net,
    pub underlay_ip: Option<Ipv4Addr>,
}

impl Network {
    /// The overlay settings, given this host's underlay address.
    pub fn overlay(&self, underlay_ip: Ipv4Addr) -> OverlayConfig {
        OverlayConfig {
            bridge: self.config.bridge.clone(),
            vxlan: self.config.vxlan.clone(),
            vni: self.config.vni,
            cidr: self.cidr,
            underlay_ip,
            mtu: self.config.mtu,
        }
    }
}

/// The task's interface as the runtime asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInterface {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
}

/// Parses and validates stdin: undecodable JSON is code 6, an unsupported
/// version code 1, anything else wrong code 7.
pub fn parse_config(stdin: &[u8]) -> Result<Network, CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("decoding config: {e}")))?;
    if let Some(v) = value.get("cniVersion").and_then(|v| v.as_str()) {
        spec::check_version(v)?;
    }
    let config: AwsvpcConfig = serde_json::from_value(value)
        .map_err(|e| CniError::new(code::INVALID_NETWORK_CONFIG, format!("network config: {e}")))?;
    let bad = |m: String| CniError::new(code::INVALID_NETWORK_CONFIG, m);
    if config.name.is_empty() || config.name.contains(['/', '\0']) || config.name == ".." {
        return Err(bad(format!("invalid network name {:?}", config.name)));
    }
    let cidr: Ipv4Net = config
        .cidr
        .parse()
        .map_err(|e: ipam::IpamError| bad(e.to_string()))?;
    let underlay_ip = match &config.underlay_ip {
        None => None,
        Some(s) => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("invalid underlayIP {s:?}")))?,
        ),
    };
    let net = Network {
        cidr,
        underlay_ip,
        config,
    };
    // Everything but the underlay address can be checked before it is known.
    net.overlay(underlay_ip.unwrap_or(Ipv4Addr::UNSPECIFIED))
        .validate()
        .map_err(|e| bad(e.to_string()))?;
    Ok(net)
}

/// The address and MAC from `runtimeConfig`: exactly one IPv4 address
/// (`a.b.c.d/len` with the network's prefix, or bare) that is a host
/// address of the network other than the gateway, and a unicast, non-zero
/// MAC other than the gateway's. Code 7 otherwise.
pub fn task_interface(net: &Network) -> Result<TaskInterface, CniError> {
    let bad = |m: String| CniError::new(code::INVALID_NETWORK_CONFIG, m);
    let rc = &net.config.runtime_config;
    let [addr] = rc.ips.as_slice() else {
        return Err(bad(format!(
            "runtimeConfig.ips must hold exactly one address, got {:?}",
            rc.ips
        )));
    };
    let (ip_s, prefix) = match addr.split_once('/') {
        Some((i, p)) => (
            i,
            p.parse::<u8>()
                .map_err(|_| bad(format!("invalid address {addr:?}")))?,
        ),
        None => (addr.as_str(), net.cidr.prefix()),
    };
    let ip: Ipv4Addr = ip_s
        .parse()
        .map_err(|_| bad(format!("invalid IPv4 address {addr:?}")))?;
    if prefix != net.cidr.prefix() {
        return Err(bad(format!(
            "address {addr} has prefix /{prefix}, network {} has /{}",
            net.cidr,
            net.cidr.prefix()
        )));
    }
    if !net.cidr.contains(ip)
        || ip == net.cidr.network()
        || ip == net.cidr.broadcast()
        || ip == net.cidr.gateway()
    {
        return Err(bad(format!(
            "address {ip} is not a task address of {} (gateway {})",
            net.cidr,
            net.cidr.gateway()
        )));
    }
    let mac_s = rc
        .mac
        .as_deref()
        .ok_or_else(|| bad("runtimeConfig.mac is missing".into()))?;
    let mac = overlay::parse_mac(mac_s).ok_or_else(|| bad(format!("invalid MAC {mac_s:?}")))?;
    if mac[0] & 1 == 1 || mac == [0; 6] || mac == overlay::gateway_mac(net.cidr.gateway()) {
        return Err(bad(format!(
            "MAC {mac_s} is multicast, zero or the gateway's"
        )));
    }
    Ok(TaskInterface {
        ip,
        prefix: net.cidr.prefix(),
        mac,
    })
}

/// The network configuration (stdin) for one task on `cfg`'s overlay, as a
/// runtime hands it to the plugin with the `ips` and `mac` capabilities
/// filled in. `name` is the CNI network name.
pub fn network_config(
    cfg: &OverlayConfig,
    name: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "berth-awsvpc",
        "bridge": cfg.bridge,
        "vxlan": cfg.vxlan,
        "vni": cfg.vni,
        "cidr": cfg.cidr.to_string(),
        "underlayIP": cfg.underlay_ip.to_string(),
        "capabilities": {"ips": true, "mac": true},
        "runtimeConfig": {
            "ips": [format!("{ip}/{}", cfg.cidr.prefix())],
            "mac": netlink::format_mac(&mac),
        },
    });
    if let Some(mtu) = cfg.mtu {
        v["mtu"] = mtu.into();
    }
    v
}

/// The host-side veth name and the temporary peer name: `vpc`/`vp` + hex of
/// sha256(container id, ifname) (distinct from `berth-bridge`'s `veth…`).
pub fn veth_names(container_id: &str, ifname: &str) -> (String, String) {
    let (host, peer) = crate::bridge::veth_names(container_id, ifname);
    (
        format!("vpc{}", &host["veth".len()..]),
        format!("vp{}", &peer["bp".len()..]),
    )
}

/// Runs one invocation.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    plugin::run(
        &plugin::Plugin {
            name: "berth-awsvpc",
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

/// This host's overlay settings, detecting the underlay address when the
/// config names none (in the caller's namespace).
pub fn host_overlay_config(net: &Network) -> Result<OverlayConfig, AwsvpcError> {
    if let Some(u) = net.underlay_ip {
        return Ok(net.overlay(u));
    }
    let cidr = net.cidr;
    let u = overlay::run_in(None, move |h| async move {
        overlay::detect_underlay(&h, Some(cidr)).await
    })?;
    Ok(net.overlay(u))
}

/// ADD: ensure the host overlay, wire the veth, report. Rolls the veth back
/// on failure (the shared overlay stays).
pub fn add(net: &Network, env: &spec::RuntimeEnv) -> Result<CniResult, AwsvpcError> {
    let netns = netns_path(env)?;
    let task = task_interface(net)?;
    let cfg = host_overlay_config(net)?;
    let host_ov = overlay::ensure_in(None, &cfg)?;
    match wire_up(net, env, &netns, &cfg, host_ov, task) {
        Ok(r) => Ok(r),
        Err(e) => {
            let mut errors = vec![e];
            if let Err(c) = remove_veth(&env.container_id, &env.ifname) {
                errors.push(c);
            }
            Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                AwsvpcError::Multiple(errors)
            })
        }
    }
}

fn wire_up(
    net: &Network,
    env: &spec::RuntimeEnv,
    netns: &Path,
    cfg: &OverlayConfig,
    host_ov: overlay::HostOverlay,
    task: TaskInterface,
) -> Result<CniResult, AwsvpcError> {
    let gateway = cfg.gateway();
    let mtu = host_ov.mtu;
    let (host, peer) = veth_names(&env.container_id, &env.ifname);
    let (host_c, netns_c) = (host.clone(), netns.to_path_buf());
    let ifname_c = env.ifname.clone();
    let host_mac = netlink::in_netns(None, move |h| async move {
        // A leftover from an earlier, interrupted ADD would make creation
        // fail; deleting its host end also removes the container end. The
        // peer name is only in this namespace if an older version's ADD
        // stopped before moving it.
        netlink::delete_link(&h, &host_c).await?;
        netlink::delete_link(&h, &peer).await?;
        // The container end is born in the namespace under its final name,
        // with the task's MAC and the overlay MTU.
        netlink::create_veth_in_netns(&h, &host_c, &ifname_c, &netns_c, Some(task.mac), Some(mtu))
            .await?;
        let host_link = netlink::get_link(&h, &host_c)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(host_c.clone()))?;
        netlink::set_master(&h, host_link.index, host_ov.bridge_index).await?;
        netlink::set_up(&h, host_link.index).await?;
        Ok(host_link.mac)
    })?;
    let ifname = env.ifname.clone();
    netlink::in_netns(Some(netns), move |h| async move {
        let link = netlink::get_link(&h, &ifname)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(ifname.clone()))?;
        netlink::ensure_address(&h, link.index, IpAddr::V4(task.ip), task.prefix).await?;
        netlink::set_up(&h, link.index).await?;
        if let Some(lo) = netlink::get_link(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        netlink::add_default_route(&h, gateway, link.index).await?;
        Ok(())
    })?;
    let fmt = |m: Option<[u8; 6]>| m.map(|m| netlink::format_mac(&m)).unwrap_or_default();
    Ok(CniResult {
        cni_version: net.config.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: cfg.bridge.clone(),
                mac: netlink::format_mac(&host_ov.gateway_mac),
                sandbox: String::new(),
            },
            Interface {
                name: host,
                mac: fmt(host_mac),
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: netlink::format_mac(&task.mac),
                sandbox: env.netns.clone(),
            },
        ],
        ips: vec![IpConfig {
            address: format!("{}/{}", task.ip, task.prefix),
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

/// Deletes the host veth (which takes the container end with it wherever it
/// is) and the peer name in case ADD stopped before moving it.
fn remove_veth(container_id: &str, ifname: &str) -> Result<(), AwsvpcError> {
    let (host, peer) = veth_names(container_id, ifname);
    netlink::in_netns(None, move |h| async move {
        netlink::delete_link(&h, &host).await?;
        netlink::delete_link(&h, &peer).await?;
        Ok(())
    })?;
    Ok(())
}

/// DEL: idempotent; succeeds when the veth is already gone or the namespace
/// no longer exists. Nothing shared (bridge, VXLAN, NAT) is touched.
pub fn del(_net: &Network, env: &spec::RuntimeEnv) -> Result<(), AwsvpcError> {
    remove_veth(&env.container_id, &env.ifname)
}

/// CHECK: the bridge, the host veth on it, and in the container the
/// interface with the asked-for MAC and address and the default route via
/// the gateway; a `prevResult`, when given, must list the address.
pub fn check(net: &Network, env: &spec::RuntimeEnv) -> Result<(), AwsvpcError> {
    let netns = netns_path(env)?;
    let task = task_interface(net)?;
    let want_addr = format!("{}/{}", task.ip, task.prefix);
    if let Some(prev) = &net.config.prev_result {
        let prev: CniResult = serde_json::from_value(prev.clone()).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, format!("decoding prevResult: {e}"))
        })?;
        if !prev.ips.iter().any(|i| i.address == want_addr) {
            return Err(AwsvpcError::Check(format!(
                "prevResult does not list {want_addr}"
            )));
        }
    }
    let (host, _) = veth_names(&env.container_id, &env.ifname);
    let wiring = crate::bridge::observe_wiring(&net.config.bridge, &host, &netns, env)?
        .map_err(AwsvpcError::Check)?;
    if wiring.link.mac != Some(task.mac) {
        return Err(AwsvpcError::Check(format!(
            "{} has MAC {}, want {}",
            env.ifname,
            wiring
                .link
                .mac
                .map(|m| netlink::format_mac(&m))
                .unwrap_or_default(),
            netlink::format_mac(&task.mac)
        )));
    }
    wiring
        .expect(&env.ifname, task.ip, task.prefix, net.cidr.gateway())
        .map_err(AwsvpcError::Check)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"berth-awsvpc","type":"berth-awsvpc","bridge":"bvpc0","vxlan":"bvx0","vni":4199,"cidr":"10.199.0.0/16","underlayIP":"10.250.3.2","mtu":1450,"runtimeConfig":{"ips":["10.199.0.5/16"],"mac":"02:12:34:56:78:9a"}}"#;

    fn with(patch: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v.to_string()
    }

    #[test]
    fn config_parsing_table() {
        use serde_json::json;
        // (stdin, Ok((cidr, underlay)) or Err(code))
        let cases: Vec<(String, Result<(&str, Option<&str>), u32>)> =
            vec![
            (GOOD.into(), Ok(("10.199.0.0/16", Some("10.250.3.2")))),
            (
                r#"{"cniVersion":"0.4.0","name":"n","type":"berth-awsvpc","cidr":"10.9.0.0/24"}"#
                    .into(),
                Ok(("10.9.0.0/24", None)),
            ),
            ("{nope".into(), Err(code::DECODING_FAILURE)),
            ("".into(), Err(code::DECODING_FAILURE)),
            (
                with(json!({"cniVersion": "0.2.0"})),
                Err(code::INCOMPATIBLE_VERSION),
            ),
            (with(json!({"cidr": null})), Err(code::INVALID_NETWORK_CONFIG)),
            (
                with(json!({"cidr": "10.199.0.0/33"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                with(json!({"cidr": "banana"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                with(json!({"underlayIP": "10.250.3"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                with(json!({"underlayIP": "10.199.1.1"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (with(json!({"vni": 0})), Err(code::INVALID_NETWORK_CONFIG)),
            (with(json!({"vni": -1})), Err(code::INVALID_NETWORK_CONFIG)),
            (with(json!({"mtu": 20})), Err(code::INVALID_NETWORK_CONFIG)),
            (
                with(json!({"bridge": "a/b"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (
                with(json!({"vxlan": "bvpc0"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
            (with(json!({"name": ""})), Err(code::INVALID_NETWORK_CONFIG)),
            (
                with(json!({"runtimeConfig": "x"})),
                Err(code::INVALID_NETWORK_CONFIG),
            ),
        ];
        for (stdin, want) in cases {
            let got = parse_config(stdin.as_bytes())
                .map(|n| (n.cidr.to_string(), n.underlay_ip.map(|u| u.to_string())))
                .map_err(|e| e.code);
            let want = want.map(|(c, u)| (c.to_string(), u.map(str::to_string)));
            assert_eq!(got, want, "{stdin}");
        }
    }

    #[test]
    fn task_interface_table() {
        use serde_json::json;
        let rc = |ips: serde_json::Value, mac: serde_json::Value| {
            with(json!({"runtimeConfig": {"ips": ips, "mac": mac}}))
        };
        let mac = [2, 0x12, 0x34, 0x56, 0x78, 0x9a];
        // (stdin, Ok((ip, mac)) or Err(()))
        let cases: Vec<(String, Option<(&str, [u8; 6])>)> = vec![
            (GOOD.into(), Some(("10.199.0.5", mac))),
            (
                rc(json!(["10.199.3.7"]), json!("02:12:34:56:78:9A")),
                Some(("10.199.3.7", mac)),
            ),
            (with(json!({"runtimeConfig": null})), None),
            (rc(json!([]), json!("02:12:34:56:78:9a")), None),
            (
                rc(
                    json!(["10.199.0.5/16", "10.199.0.6/16"]),
                    json!("02:12:34:56:78:9a"),
                ),
                None,
            ),
            (
                rc(json!(["10.200.0.5/16"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (
                rc(json!(["10.199.0.5/24"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (
                rc(json!(["10.199.0.1/16"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (
                rc(json!(["10.199.0.0/16"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (
                rc(json!(["10.199.255.255/16"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (rc(json!(["fd00::5/64"]), json!("02:12:34:56:78:9a")), None),
            (
                rc(json!(["10.199.0.5/x"]), json!("02:12:34:56:78:9a")),
                None,
            ),
            (rc(json!(["10.199.0.5/16"]), json!(null)), None),
            (rc(json!(["10.199.0.5/16"]), json!("02:12:34:56:78")), None),
            (
                rc(json!(["10.199.0.5/16"]), json!("01:00:5e:00:00:01")),
                None,
            ),
            (
                rc(json!(["10.199.0.5/16"]), json!("00:00:00:00:00:00")),
                None,
            ),
            (
                rc(json!(["10.199.0.5/16"]), json!("0a:42:0a:c7:00:01")),
                None,
            ),
        ];
        for (stdin, want) in cases {
            let net = parse_config(stdin.as_bytes()).unwrap();
            let got = task_interface(&net);
            match want {
                Some((ip, mac)) => {
                    let t = got.unwrap_or_else(|e| panic!("{stdin}: {e}"));
                    assert_eq!((t.ip.to_string().as_str(), t.mac, t.prefix), (ip, mac, 16));
                }
                None => assert_eq!(
                    got.map_err(|e| e.code),
                    Err(code::INVALID_NETWORK_CONFIG),
                    "{stdin}"
                ),
            }
        }
    }

    #[test]
    fn network_config_round_trips() {
        let cidr: Ipv4Net = "10.199.0.0/16".parse().unwrap();
        let mut cfg = OverlayConfig::new(cidr, "10.250.3.2".parse().unwrap());
        let mac = [2, 1, 2, 3, 4, 5];
        for mtu in [None, Some(1400)] {
            cfg.mtu = mtu;
            let v = network_config(&cfg, "net", "10.199.0.7".parse().unwrap(), mac);
            let net = parse_config(v.to_string().as_bytes()).unwrap();
            assert_eq!(net.overlay(net.underlay_ip.unwrap()), cfg);
            let t = task_interface(&net).unwrap();
            assert_eq!(
                (t.ip.to_string(), t.prefix, t.mac),
                ("10.199.0.7".into(), 16, mac)
            );
        }
    }

    #[test]
    fn veth_names_differ_from_bridge_plugin() {
        let (h, p) = veth_names("c1", "eth0");
        assert!(h.starts_with("vpc") && p.starts_with("vp") && h.len() <= 15 && p.len() <= 15);
        assert_eq!((h.clone(), p.clone()), veth_names("c1", "eth0"));
        assert_ne!(h, veth_names("c2", "eth0").0);
        let (bh, bp) = crate::bridge::veth_names("c1", "eth0");
        assert_ne!((h, p), (bh, bp));
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
        let bad_ifname = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "way-too-long-ifname"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        // (env, stdin, exit, code or None for success)
        let cases: Vec<(HashMap<String, String>, &str, i32, Option<u64>)> = vec![
            (vars(&[("CNI_COMMAND", "VERSION")]), "", 0, None),
            (vars(&[]), GOOD, 1, Some(4)),
            (vars(&bad_ifname), GOOD, 1, Some(4)),
            (vars(&add_env), "{", 1, Some(6)),
            (vars(&add_env), r#"{"cniVersion":"1.0.0"}"#, 1, Some(7)),
            (vars(&add_env), GOOD, 1, Some(3)),
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
