//! Pure network decisions for one task: which namespace its containers join
//! and, for `bridge` and `awsvpc`, the CNI network configuration list the
//! agent runs (ours first, upstream plugins chained after) with the runtime
//! values each plugin asked for through its `capabilities` (CNI conventions:
//! `portMappings`, `ips`, `mac`). Also the per-plugin configuration a CNI
//! runtime feeds on stdin, and the `networkBindings` a task reports.
//!
//! **Architecture Invariant:** no I/O here; `network::CniNetworks` executes
//! what these functions decide.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use berth_api::{NetworkBinding, TaskSpec};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("network mode {0} is not supported (host, none, bridge and awsvpc are)")]
    UnsupportedMode(String),
    #[error("container {container}: port mapping {container_port}/{protocol} has no host port assigned by the coordinator")]
    UnassignedPort {
        container: String,
        container_port: u16,
        protocol: String,
    },
    #[error("network mode {0} needs CNI plugins, and this agent runs with --no-cni")]
    NeedsCni(String),
    #[error("awsvpc task without an interface allocated by the coordinator")]
    NoAwsvpcAttachment,
    #[error("awsvpc interface address {0} is not a valid IPv4 address/prefix")]
    BadAttachment(String),
    #[error("the awsvpc network needs this host's underlay address (--underlay-ip)")]
    NoUnderlay,
    #[error("CNI configuration list: {0}")]
    BadConflist(String),
}

/// The agent's network settings (flags `--cni-path`, `--bridge-subnet`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct NetSettings {
    /// Directories searched for plugin binaries, in order.
    pub cni_path: Vec<PathBuf>,
    /// Where the plugins keep state (IPAM leases): `DATA_DIR/cni`.
    pub cni_data_dir: PathBuf,
    /// Where task namespaces are bind-mounted: `DATA_DIR/netns`.
    pub netns_dir: PathBuf,
    /// Optional directory with operator conflists `bridge.conflist` /
    /// `awsvpc.conflist` replacing the built-in ones.
    pub conf_dir: Option<PathBuf>,
    pub bridge_name: String,
    pub bridge_subnet: String,
    pub awsvpc_bridge: String,
    pub vxlan_name: String,
    pub vni: u32,
    pub underlay_ip: Option<Ipv4Addr>,
    /// Overlay MTU; `None` = underlay link MTU - 50.
    pub mtu: Option<u32>,
}

impl NetSettings {
    /// Defaults under `data_dir`, with plugins looked up next to the agent's
    /// own binary, then in Debian's and the conventional CNI directories.
    pub fn new(data_dir: &std::path::Path, exe_dir: Option<PathBuf>) -> Self {
        let mut cni_path: Vec<PathBuf> = exe_dir.into_iter().collect();
        cni_path.push(PathBuf::from("/usr/lib/cni"));
        cni_path.push(PathBuf::from("/opt/cni/bin"));
        NetSettings {
            cni_path,
            cni_data_dir: data_dir.join("cni"),
            netns_dir: data_dir.join("netns"),
            conf_dir: None,
            bridge_name: "berth0".into(),
            bridge_subnet: "172.31.0.0/20".into(),
            awsvpc_bridge: "bvpc0".into(),
            vxlan_name: "bvx0".into(),
            vni: 4199,
            underlay_ip: None,
            mtu: None,
        }
    }
}

/// How a task's containers get their network.
#[derive(Debug, Clone, PartialEq)]
pub enum NetPlan {
    /// `host`: the host's namespace, nothing to set up.
    Host,
    /// `none`: a namespace of its own with loopback up and nothing else.
    Loopback,
    /// `bridge` / `awsvpc`: a namespace of its own wired by a CNI chain.
    Cni {
        conflist: Value,
        runtime_config: Value,
    },
}

/// ECS's default network mode is `bridge` when the definition names none.
pub fn effective_mode(mode: &str) -> &str {
    if mode.is_empty() {
        "bridge"
    } else {
        mode
    }
}

/// Is `mode` one the agent runs (as the diff decides before any work)?
pub fn check_mode(mode: &str) -> Result<(), PlanError> {
    match effective_mode(mode) {
        "host" | "none" | "bridge" | "awsvpc" => Ok(()),
        other => Err(PlanError::UnsupportedMode(other.to_string())),
    }
}

/// The plan for `spec`. `operator` is the operator's conflist for the mode,
/// if one was configured; otherwise the built-in list is used.
pub fn plan(
    spec: &TaskSpec,
    s: &NetSettings,
    operator: Option<&Value>,
) -> Result<NetPlan, PlanError> {
    match effective_mode(&spec.network_mode) {
        "host" => Ok(NetPlan::Host),
        "none" => Ok(NetPlan::Loopback),
        "bridge" => {
            let conflist = match operator {
                Some(c) => validate_conflist(c)?,
                None => bridge_conflist(s),
            };
            Ok(NetPlan::Cni {
                conflist,
                runtime_config: json!({ "portMappings": port_mappings(spec)? }),
            })
        }
        "awsvpc" => {
            let att = spec.awsvpc.as_ref().ok_or(PlanError::NoAwsvpcAttachment)?;
            let conflist = match operator {
                Some(c) => validate_conflist(c)?,
                None => awsvpc_conflist(s, &att.ip, att.prefix_len)?,
            };
            Ok(NetPlan::Cni {
                conflist,
                runtime_config: json!({
                    "ips": [format!("{}/{}", att.ip, att.prefix_len)],
                    "mac": att.mac,
                }),
            })
        }
        other => Err(PlanError::UnsupportedMode(other.to_string())),
    }
}

/// `berth-bridge` then Debian's `portmap` for the host port mappings.
pub fn bridge_conflist(s: &NetSettings) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "berth-bridge",
        "plugins": [
            {
                "type": "berth-bridge",
                "bridge": s.bridge_name,
                "subnet": s.bridge_subnet,
                "ipMasq": true,
                "dataDir": s.cni_data_dir,
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            }
        ]
    })
}

/// `berth-awsvpc` on the VXLAN overlay; the cluster network is the one the
/// coordinator allocated `ip`/`prefix_len` from.
pub fn awsvpc_conflist(s: &NetSettings, ip: &str, prefix_len: u8) -> Result<Value, PlanError> {
    let underlay = s.underlay_ip.ok_or(PlanError::NoUnderlay)?;
    let cidr = network_of(ip, prefix_len)
        .ok_or_else(|| PlanError::BadAttachment(format!("{ip}/{prefix_len}")))?;
    let mut plugin = json!({
        "type": "berth-awsvpc",
        "bridge": s.awsvpc_bridge,
        "vxlan": s.vxlan_name,
        "vni": s.vni,
        "cidr": cidr,
        "underlayIP": underlay.to_string(),
        "capabilities": { "ips": true, "mac": true },
    });
    if let (Some(mtu), Some(obj)) = (s.mtu, plugin.as_object_mut()) {
        obj.insert("mtu".into(), json!(mtu));
    }
    Ok(json!({
        "cniVersion": "1.0.0",
        "name": "berth-awsvpc",
        "plugins": [plugin],
    }))
}

/// `a.b.c.d/n` of the network holding `ip`.
pub fn network_of(ip: &str, prefix_len: u8) -> Option<String> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    if !(1..=32).contains(&prefix_len) {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(prefix_len));
    Some(format!(
        "{}/{prefix_len}",
        Ipv4Addr::from(u32::from(ip) & mask)
    ))
}

/// An operator's conflist must have a name, a version and a non-empty list
/// of plugin objects that each name their `type`.
pub fn validate_conflist(c: &Value) -> Result<Value, PlanError> {
    let bad = |m: &str| PlanError::BadConflist(m.to_string());
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(bad("missing \"name\""));
    }
    if c.get("cniVersion").and_then(Value::as_str).is_none() {
        return Err(bad("missing \"cniVersion\""));
    }
    let plugins = c
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing \"plugins\" list"))?;
    if plugins.is_empty() {
        return Err(bad("empty \"plugins\" list"));
    }
    for p in plugins {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if ty.is_empty() || ty.contains('/') {
            return Err(bad("every plugin needs a plain \"type\""));
        }
    }
    Ok(c.clone())
}

/// Port mappings of every container in CNI's `portMappings` form. In bridge
/// mode the coordinator has already replaced each `hostPort` 0/absent with
/// the dynamic port it reserved.
fn port_mappings(spec: &TaskSpec) -> Result<Vec<Value>, PlanError> {
    let mut out = Vec::new();
    for c in &spec.containers {
        for m in &c.port_mappings {
            let Some(container_port) = m.container_port else {
                continue;
            };
            let host_port =
                m.host_port
                    .filter(|p| *p != 0)
                    .ok_or_else(|| PlanError::UnassignedPort {
                        container: c.name.clone(),
                        container_port,
                        protocol: m.protocol().to_string(),
                    })?;
            out.push(json!({
                "hostPort": host_port,
                "containerPort": container_port,
                "protocol": m.protocol(),
            }));
        }
    }
    Ok(out)
}

/// The stdin of plugin `index` of `conflist`: the plugin object plus the
/// list's `name` and `cniVersion`, `prevResult` when one exists, and the
/// `runtimeConfig` keys the plugin declared in `capabilities`.
pub fn plugin_config(
    conflist: &Value,
    index: usize,
    prev_result: Option<&Value>,
    runtime_config: &Value,
) -> Result<Value, PlanError> {
    let plugin = conflist
        .get("plugins")
        .and_then(Value::as_array)
        .and_then(|p| p.get(index))
        .and_then(Value::as_object)
        .ok_or_else(|| PlanError::BadConflist(format!("no plugin object at index {index}")))?;
    let mut conf: Map<String, Value> = plugin.clone();
    for key in ["name", "cniVersion"] {
        if let Some(v) = conflist.get(key) {
            conf.insert(key.into(), v.clone());
        }
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wanted: Map<String, Value> = plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| Some((k.clone(), runtime_config.get(k)?.clone())))
                .collect()
        })
        .unwrap_or_default();
    if !wanted.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(wanted));
    }
    Ok(Value::Object(conf))
}

/// The plugin types of a conflist, in order.
pub fn plugin_types(conflist: &Value) -> Vec<String> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `networkBindings` ECS shows for `container` of a host- or
/// bridge-mode task: one per mapping, with the host port actually bound.
pub fn network_bindings(spec: &TaskSpec, container: &str) -> Vec<NetworkBinding> {
    let mode = effective_mode(&spec.network_mode);
    if mode != "host" && mode != "bridge" {
        return vec![];
    }
    let Some(def) = spec.containers.iter().find(|c| c.name == container) else {
        return vec![];
    };
    def.port_mappings
        .iter()
        .filter_map(|m| {
            let container_port = m.container_port.or(m.host_port)?;
            let host_port = match mode {
                "host" => m.host_port.filter(|p| *p != 0).unwrap_or(container_port),
                _ => m.host_port.filter(|p| *p != 0)?,
            };
            Some(NetworkBinding {
                bind_ip: "0.0.0.0".into(),
                container_port,
                host_port,
                protocol: m.protocol().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::*;
    use berth_api::{AwsvpcAttachment, ContainerSpec, DesiredStatus, PortMapping};

    fn task(mode: &str, ports: &[(Option<u16>, Option<u16>, Option<&str>)]) -> TaskSpec {
        TaskSpec {
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/abc".into(),
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
                port_mappings: ports
                    .iter()
                    .map(|(c, h, p)| PortMapping {
                        container_port: *c,
                        host_port: *h,
                        protocol: p.map(str::to_string),
                    })
                    .collect(),
                ..Default::default()
            }],
            reserved_ports: vec![],
            awsvpc: None,
        }
    }

    fn settings() -> NetSettings {
        let mut s = NetSettings::new(std::path::Path::new("/d"), None);
        s.underlay_ip = Some(Ipv4Addr::new(10, 250, 1, 11));
        s
    }

    #[test]
    fn modes_table() {
        let s = settings();
        let cases: &[(&str, &str)] = &[
            ("host", "host"),
            ("none", "none"),
            ("bridge", "bridge"),
            ("", "bridge"),
            ("nat", "unsupported"),
        ];
        for (mode, want) in cases {
            let got = plan(&task(mode, &[(Some(80), Some(49153), None)]), &s, None);
            let kind = match &got {
                Ok(NetPlan::Host) => "host",
                Ok(NetPlan::Loopback) => "none",
                Ok(NetPlan::Cni { conflist, .. }) => {
                    assert_eq!(plugin_types(conflist), ["berth-bridge", "portmap"]);
                    "bridge"
                }
                Err(PlanError::UnsupportedMode(_)) => "unsupported",
                Err(e) => panic!("{mode}: {e}"),
            };
            assert_eq!(kind, *want, "mode {mode:?}");
        }
    }

    #[test]
    fn bridge_port_mappings_need_a_host_port() {
        let s = settings();
        let ok = plan(
            &task(
                "bridge",
                &[
                    (Some(80), Some(49153), None),
                    (Some(53), Some(53), Some("udp")),
                ],
            ),
            &s,
            None,
        )
        .expect("plan");
        let NetPlan::Cni { runtime_config, .. } = ok else {
            panic!("not cni")
        };
        assert_eq!(
            runtime_config,
            json!({"portMappings": [
                {"hostPort": 49153, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 53, "containerPort": 53, "protocol": "udp"},
            ]})
        );
        for host in [None, Some(0)] {
            let err =
                plan(&task("bridge", &[(Some(80), host, None)]), &s, None).expect_err("unassigned");
            assert!(
                matches!(
                    err,
                    PlanError::UnassignedPort {
                        container_port: 80,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn awsvpc_needs_attachment_and_underlay() {
        let mut t = task("awsvpc", &[]);
        let s = settings();
        assert_eq!(plan(&t, &s, None), Err(PlanError::NoAwsvpcAttachment));
        t.awsvpc = Some(AwsvpcAttachment {
            attachment_id: "a".into(),
            network_interface_id: "eni-1".into(),
            ip: "10.199.0.7".into(),
            prefix_len: 16,
            gateway: Some("10.199.0.1".into()),
            mac: "02:00:00:00:00:07".into(),
        });
        let NetPlan::Cni {
            conflist,
            runtime_config,
        } = plan(&t, &s, None).expect("plan")
        else {
            panic!("not cni")
        };
        assert_eq!(
            runtime_config,
            json!({"ips": ["10.199.0.7/16"], "mac": "02:00:00:00:00:07"})
        );
        assert_eq!(conflist["plugins"][0]["underlayIP"], "10.250.1.11");
        assert_eq!(conflist["plugins"][0]["cidr"], "10.199.0.0/16");
        for (ip, len, want) in [
            ("10.199.3.7", 16, Some("10.199.0.0/16")),
            ("10.199.3.7", 32, Some("10.199.3.7/32")),
            ("10.199.3.7", 0, None),
            ("10.199.3", 16, None),
        ] {
            assert_eq!(network_of(ip, len).as_deref(), want, "{ip}/{len}");
        }
        let mut no_underlay = s.clone();
        no_underlay.underlay_ip = None;
        assert_eq!(plan(&t, &no_underlay, None), Err(PlanError::NoUnderlay));
    }

    #[test]
    fn plugin_config_passes_only_declared_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "a"},
            {"type": "b", "capabilities": {"portMappings": true, "mac": false}},
        ]});
        let rc = json!({"portMappings": [1], "mac": "m", "ips": ["x"]});
        let cases: &[(usize, Option<Value>, Value)] = &[
            (
                0,
                None,
                json!({"type": "a", "name": "n", "cniVersion": "1.0.0"}),
            ),
            (
                1,
                Some(json!({"ips": []})),
                json!({"type": "b", "name": "n", "cniVersion": "1.0.0",
                       "capabilities": {"portMappings": true, "mac": false},
                       "prevResult": {"ips": []}, "runtimeConfig": {"portMappings": [1]}}),
            ),
        ];
        for (i, prev, want) in cases {
            assert_eq!(
                &plugin_config(&list, *i, prev.as_ref(), &rc).expect("config"),
                want
            );
        }
        assert!(plugin_config(&list, 2, None, &rc).is_err());
    }

    #[test]
    fn operator_conflists_are_validated() {
        let cases: &[(Value, bool)] = &[
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "berth-bridge"}]}),
                true,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": []}),
                false,
            ),
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}),
                false,
            ),
            (json!({"name": "x", "plugins": [{"type": "a"}]}), false),
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../a"}]}),
                false,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{}]}),
                false,
            ),
        ];
        for (c, ok) in cases {
            assert_eq!(validate_conflist(c).is_ok(), *ok, "{c}");
        }
    }

    #[test]
    fn bindings_table() {
        let cases: &[(&str, (Option<u16>, Option<u16>), Option<(u16, u16)>)] = &[
            ("host", (Some(80), None), Some((80, 80))),
            ("host", (Some(80), Some(80)), Some((80, 80))),
            ("bridge", (Some(80), Some(49153)), Some((80, 49153))),
            ("", (Some(80), Some(8080)), Some((80, 8080))),
            ("bridge", (Some(80), None), None),
            ("awsvpc", (Some(80), Some(80)), None),
            ("none", (Some(80), Some(80)), None),
        ];
        for (mode, (c, h), want) in cases {
            let got = network_bindings(&task(mode, &[(*c, *h, None)]), "web");
            let got = got.first().map(|b| (b.container_port, b.host_port));
            assert_eq!(got, *want, "mode {mode:?}");
        }
    }
}
