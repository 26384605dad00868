//! Task networking on the agent: the [`TaskNetworks`] seam the driver calls
//! (set up a task's namespace before its containers are created, tear it
//! down after they are deleted, collect leftovers after a crash, program the
//! awsvpc overlay), and its two implementations: [`CniNetworks`] (namespaces
//! bind-mounted under `DATA_DIR/netns`, wired by CNI plugin chains, with a
//! record per task under `DATA_DIR/cni/tasks`) and [`RuncNetworks`] (only
//! what runc does by itself: `host` and `none`; used where no CNI plugins are
//! available, e.g. the driver's unit tests).
//!
//! **Architecture Invariant:** a task's record is written *before* anything
//! is created for it and removed only after everything is gone, so every
//! veth, address, rule, lease and namespace the agent made is reachable from
//! a record (or from the namespace directory) after any crash, and `gc`
//! finds it.
//!
//! Submodules: [`plan`] (pure decisions), [`cni`] (the CNI runtime).

pub mod cni;
pub mod plan;
pub mod underlay;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_api::{AwsvpcNetwork, TaskSpec};
use berth_cni::netlink;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::procspec;
use crate::runtime::NetworkNamespace;
use plan::{NetPlan, NetSettings, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error("network namespace: {0}")]
    Netns(#[from] netlink::NetlinkError),
    #[error("network record {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("awsvpc overlay: {0}")]
    Overlay(String),
}

/// What the driver needs from task networking. Blocking: the driver calls
/// these from `spawn_blocking`.
pub trait TaskNetworks: Send + Sync + std::fmt::Debug + 'static {
    /// Prepare `spec`'s network (idempotent: a task already set up gets its
    /// existing namespace back); returns the namespace its containers join.
    fn setup(&self, spec: &TaskSpec) -> Result<NetworkNamespace, NetworkError>;
    /// Remove everything `setup` made for the task; succeeds when nothing is left.
    fn teardown(&self, task_arn: &str) -> Result<(), NetworkError>;
    /// Remove the networks of every task not in `live` (task ARNs); returns
    /// the task ids cleaned up.
    fn gc(&self, live: &HashSet<String>) -> Result<Vec<String>, NetworkError>;
    /// Program the awsvpc overlay from the coordinator's membership view.
    fn sync_overlay(&self, network: &AwsvpcNetwork) -> Result<(), NetworkError>;
}

/// Modes runc handles by itself: `host` (no namespace) and `none` (runc
/// creates a namespace per container with loopback up).
#[derive(Debug, Default)]
pub struct RuncNetworks;

impl TaskNetworks for RuncNetworks {
    fn setup(&self, spec: &TaskSpec) -> Result<NetworkNamespace, NetworkError> {
        match plan::effective_mode(&spec.network_mode) {
            "host" => Ok(NetworkNamespace::Host),
            "none" => Ok(NetworkNamespace::New),
            other => Err(PlanError::NeedsCni(other.to_string()).into()),
        }
    }
    fn teardown(&self, _task_arn: &str) -> Result<(), NetworkError> {
        Ok(())
    }
    fn gc(&self, _live: &HashSet<String>) -> Result<Vec<String>, NetworkError> {
        Ok(vec![])
    }
    fn sync_overlay(&self, _network: &AwsvpcNetwork) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// What the agent remembers about one task's network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetRecord {
    pub task_arn: String,
    pub mode: String,
    pub netns: PathBuf,
    #[serde(default)]
    pub conflist: Option<Value>,
    #[serde(default)]
    pub runtime_config: Value,
    /// The chain's ADD result, once it succeeded (CNI's cached result).
    #[serde(default)]
    pub result: Option<Value>,
    /// Set once the whole setup finished (namespace mounted, loopback up,
    /// chain added). Records written before this field existed count as
    /// finished when their chain's result is in.
    #[serde(default)]
    pub ready: Option<bool>,
}

impl NetRecord {
    /// The setup finished and its namespace is still mounted.
    fn usable(&self) -> bool {
        self.ready
            .unwrap_or(self.conflist.is_none() || self.result.is_some())
            && netlink::is_netns(&self.netns)
    }
}

/// Namespaces under `netns_dir`, CNI chains, records under `cni_data_dir/tasks`.
#[derive(Debug)]
pub struct CniNetworks {
    settings: NetSettings,
    /// This instance's `mi-` id (to tell its own overlay endpoints apart).
    instance_id: String,
}

const IFNAME: &str = "eth0";
/// One plugin invocation longer than this is killed (and the step fails).
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl CniNetworks {
    pub fn new(settings: NetSettings, instance_id: impl Into<String>) -> Self {
        CniNetworks {
            settings,
            instance_id: instance_id.into(),
        }
    }

    pub fn settings(&self) -> &NetSettings {
        &self.settings
    }

    fn records_dir(&self) -> PathBuf {
        self.settings.cni_data_dir.join("tasks")
    }

    fn record_path(&self, task_id: &str) -> PathBuf {
        self.records_dir().join(format!("{task_id}.json"))
    }

    fn netns_path(&self, task_id: &str) -> PathBuf {
        self.settings.netns_dir.join(task_id)
    }

    fn load(&self, path: &Path) -> Result<Option<NetRecord>, NetworkError> {
        let bad = |reason: String| NetworkError::Record {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    fn save(&self, task_id: &str, rec: &NetRecord) -> Result<(), NetworkError> {
        let path = self.record_path(task_id);
        let bad = |reason: String| NetworkError::Record {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(self.records_dir()).map_err(|e| bad(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| bad(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| bad(e.to_string()))?;
        let f = std::fs::File::open(&tmp).map_err(|e| bad(e.to_string()))?;
        f.sync_all().map_err(|e| bad(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| bad(e.to_string()))
    }

    fn operator_conflist(&self, mode: &str) -> Result<Option<Value>, NetworkError> {
        let Some(dir) = &self.settings.conf_dir else {
            return Ok(None);
        };
        let path = dir.join(format!("{mode}.conflist"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| NetworkError::Record {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NetworkError::Record {
                path,
                reason: e.to_string(),
            }),
        }
    }

    fn invocation(&self, task_id: &str, netns: &Path) -> cni::Invocation {
        cni::Invocation {
            container_id: task_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: IFNAME.to_string(),
            cni_path: self.settings.cni_path.clone(),
            timeout: PLUGIN_TIMEOUT,
        }
    }

    fn build(&self, task_id: &str, rec: &mut NetRecord) -> Result<(), NetworkError> {
        if !netlink::is_netns(&rec.netns) {
            // A file left by a create that did not finish goes first.
            netlink::delete_netns(&rec.netns)?;
            netlink::create_netns(&rec.netns)?;
        }
        loopback_up(&rec.netns)?;
        if let Some(conflist) = &rec.conflist {
            let inv = self.invocation(task_id, &rec.netns);
            rec.result = Some(cni::add_list(&inv, conflist, &rec.runtime_config)?);
        }
        rec.ready = Some(true);
        self.save(task_id, rec)?;
        Ok(())
    }

    /// Undo a record: DEL the chain (with the cached result), then remove
    /// the namespace, then the record.
    fn remove(&self, task_id: &str, rec: &NetRecord) -> Result<(), NetworkError> {
        if let Some(conflist) = &rec.conflist {
            let inv = self.invocation(task_id, &rec.netns);
            match cni::del_list(&inv, conflist, &rec.runtime_config, rec.result.as_ref()) {
                Ok(()) => {}
                // A configuration the plugin rejects will be rejected on
                // every retry: drop the namespace (and with it the task's
                // end of every veth) rather than retry forever.
                Err(e) if e.is_permanent() => {
                    tracing::error!(task = %rec.task_arn, error = %e, "CNI DEL cannot succeed; removing the namespace and forgetting the network");
                }
                Err(e) => return Err(e.into()),
            }
        }
        netlink::delete_netns(&rec.netns)?;
        let path = self.record_path(task_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetworkError::Record {
                path,
                reason: e.to_string(),
            }),
        }
    }

    fn records(&self) -> Result<Vec<(String, NetRecord)>, NetworkError> {
        let dir = self.records_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(NetworkError::Record {
                    path: dir,
                    reason: e.to_string(),
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
            else {
                continue;
            };
            match self.load(&path) {
                Ok(Some(rec)) => out.push((id, rec)),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "unreadable network record"),
            }
        }
        Ok(out)
    }
}

/// Brings `lo` up inside the namespace at `netns`.
fn loopback_up(netns: &Path) -> Result<(), NetworkError> {
    netlink::in_netns(Some(netns), |h| async move {
        if let Some(lo) = netlink::get_link(&h, "lo").await? {
            netlink::set_up(&h, lo.index).await?;
        }
        Ok(())
    })?;
    Ok(())
}

impl TaskNetworks for CniNetworks {
    fn setup(&self, spec: &TaskSpec) -> Result<NetworkNamespace, NetworkError> {
        let mode = plan::effective_mode(&spec.network_mode).to_string();
        let operator = match mode.as_str() {
            "bridge" | "awsvpc" => self.operator_conflist(&mode)?,
            _ => None,
        };
        let planned = plan::plan(spec, &self.settings, operator.as_ref())?;
        let (conflist, runtime_config) = match planned {
            NetPlan::Host => return Ok(NetworkNamespace::Host),
            NetPlan::Loopback => (None, Value::Null),
            NetPlan::Cni {
                conflist,
                runtime_config,
            } => (Some(conflist), runtime_config),
        };
        let task_id = procspec::task_dir_name(&spec.task_arn);
        let netns = self.netns_path(&task_id);
        if let Some(rec) = self.load(&self.record_path(&task_id))? {
            if rec.usable() {
                return Ok(NetworkNamespace::Path(rec.netns));
            }
            // A setup that did not finish (crash, earlier failure): start over.
            self.remove(&task_id, &rec)?;
        }
        let mut rec = NetRecord {
            task_arn: spec.task_arn.clone(),
            mode,
            netns: netns.clone(),
            conflist,
            runtime_config,
            result: None,
            ready: Some(false),
        };
        self.save(&task_id, &rec)?;
        match self.build(&task_id, &mut rec) {
            Ok(()) => {
                info!(task = %spec.task_arn, mode = %rec.mode, netns = %netns.display(), "task network ready");
                Ok(NetworkNamespace::Path(netns))
            }
            Err(e) => {
                if let Err(undo) = self.remove(&task_id, &rec) {
                    warn!(task = %spec.task_arn, error = %undo, "undoing a failed network setup");
                }
                Err(e)
            }
        }
    }

    fn teardown(&self, task_arn: &str) -> Result<(), NetworkError> {
        let task_id = procspec::task_dir_name(task_arn);
        match self.load(&self.record_path(&task_id))? {
            Some(rec) => self.remove(&task_id, &rec),
            None => Ok(netlink::delete_netns(&self.netns_path(&task_id))?),
        }
    }

    fn gc(&self, live: &HashSet<String>) -> Result<Vec<String>, NetworkError> {
        let mut cleaned = Vec::new();
        let mut kept = HashSet::new();
        for (id, rec) in self.records()? {
            if live.contains(&rec.task_arn) {
                kept.insert(id);
                continue;
            }
            match self.remove(&id, &rec) {
                Ok(()) => cleaned.push(id),
                Err(e) => {
                    warn!(task = %rec.task_arn, error = %e, "cannot remove a stale task network");
                    kept.insert(id);
                }
            }
        }
        // Namespaces without a record: the record is written before the
        // namespace and removed after it, so only a lost state directory
        // leaves these.
        if let Ok(entries) = std::fs::read_dir(&self.settings.netns_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if kept.contains(&name) {
                    continue;
                }
                match netlink::delete_netns(&entry.path()) {
                    Ok(()) => cleaned.push(name),
                    Err(e) => {
                        warn!(netns = %entry.path().display(), error = %e, "cannot remove a stale namespace")
                    }
                }
            }
        }
        if let Err(e) = self.gc_bridge(&kept) {
            warn!(error = %e, "bridge garbage collection");
        }
        cleaned.sort();
        cleaned.dedup();
        Ok(cleaned)
    }

    fn sync_overlay(&self, network: &AwsvpcNetwork) -> Result<(), NetworkError> {
        overlay_sync(&self.settings, &self.instance_id, network)
    }
}

impl CniNetworks {
    /// Leases, bridge ports and masquerade rules of the built-in bridge
    /// network whose container is not a kept task.
    fn gc_bridge(&self, kept: &HashSet<String>) -> Result<(), NetworkError> {
        let conf = plan::plugin_config(
            &plan::bridge_conflist(&self.settings),
            0,
            None,
            &Value::Null,
        )?;
        let bytes = serde_json::to_vec(&conf).unwrap_or_default();
        let net = berth_cni::bridge::parse_config(&bytes)
            .map_err(|e| NetworkError::Overlay(format!("bridge config: {}", e.msg)))?;
        if !net.config.data_dir.join(&net.config.name).exists() {
            return Ok(());
        }
        let report = berth_cni::bridge::gc(&net, kept)
            .map_err(|e| NetworkError::Overlay(format!("bridge gc: {e}")))?;
        if !report.containers.is_empty()
            || !report.orphan_links.is_empty()
            || report.orphan_rules > 0
        {
            info!(?report, "removed leftovers of the bridge network");
        }
        Ok(())
    }
}

/// The overlay as this host should program it: devices once any awsvpc
/// task runs here (or they already exist), then the peers' entries.
fn overlay_sync(
    settings: &NetSettings,
    self_instance: &str,
    network: &AwsvpcNetwork,
) -> Result<(), NetworkError> {
    use berth_cni::overlay;
    let Some(underlay) = settings.underlay_ip else {
        return Ok(());
    };
    let cidr: berth_cni::ipam::Ipv4Net = network
        .cidr
        .parse()
        .map_err(|e: berth_cni::ipam::IpamError| NetworkError::Overlay(e.to_string()))?;
    let cfg = overlay::OverlayConfig {
        bridge: settings.awsvpc_bridge.clone(),
        vxlan: settings.vxlan_name.clone(),
        vni: settings.vni,
        cidr,
        underlay_ip: underlay,
        mtu: settings.mtu,
    };
    let members: Vec<overlay::Member> = network
        .members
        .iter()
        .map(|m| overlay::Member {
            instance_id: m.instance_id.clone(),
            underlay_ip: m.underlay_ip.clone(),
            endpoints: m
                .endpoints
                .iter()
                .map(|e| overlay::Endpoint {
                    ip: e.ip.clone(),
                    mac: e.mac.clone(),
                })
                .collect(),
        })
        .collect();
    let local_work = network
        .members
        .iter()
        .any(|m| m.instance_id == self_instance && !m.endpoints.is_empty());
    let bridge = cfg.bridge.clone();
    let exists = netlink::in_netns(None, move |h| async move {
        Ok(netlink::get_link(&h, &bridge).await?.is_some())
    })?;
    if !exists && !local_work {
        // No awsvpc task here: no devices for nothing.
        return Ok(());
    }
    let overlay_err = |e: overlay::OverlayError| NetworkError::Overlay(e.to_string());
    overlay::ensure_in(None, &cfg).map_err(overlay_err)?;
    let peers = overlay::peers_from_network(&members, self_instance);
    let changed = overlay::sync_in(None, &cfg, &peers).map_err(overlay_err)?;
    if !changed.is_empty() {
        info!(peers = peers.len(), ?changed, "awsvpc overlay programmed");
    }
    Ok(())
}
