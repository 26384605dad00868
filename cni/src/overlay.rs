//! The per-host half of the awsvpc overlay, as a library the agent calls
//! directly: the bridge holding the cluster network's anycast gateway, the
//! VXLAN device that carries the flat network between hosts (no learning,
//! ARP suppression through its neighbour table, no flooding), the egress
//! masquerade rule, and the static neighbour/FDB entries that make other
//! hosts' task addresses reachable.
//!
//! Pure parts (membership to peers, the current/desired diff, underlay
//! choice) are separate from the netlink I/O and table-tested here.
//!
//! Every async function acts on the namespace of its `Handle`; iptables is
//! run as a child of the calling thread, so it lands in the same namespace
//! when called on a [`netlink::in_netns`] thread.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;

use rtnetlink::Handle;
use serde::{Deserialize, Serialize};

use crate::ipam::Ipv4Net;
use crate::iptables::{self, IptablesError};
use crate::netlink::{self, Ipv4AddrInfo, NetlinkError, VxlanParams};

/// The VNI used when the configuration names none.
pub const DEFAULT_VNI: u32 = 4199;
/// IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 + UDP + VXLAN + inner Ethernet headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Smallest MTU IPv4 allows.
const MIN_MTU: u32 = 68;
/// Largest VNI (24 bits).
const MAX_VNI: u32 = (1 << 24) - 1;

/// Errors from overlay setup and synchronisation.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    #[error("invalid overlay config: {0}")]
    Invalid(String),
    #[error("no link in this namespace holds the underlay address {0}")]
    UnderlayNotFound(Ipv4Addr),
    #[error("no underlay address: no default route source and no global IPv4 address")]
    NoUnderlay,
    #[error("{0} is missing (run overlay::ensure first)")]
    Missing(String),
    #[error("{name} was recreated but reads back as {got:?}, not {want:?}")]
    Mismatch {
        name: String,
        want: VxlanParams,
        got: Option<VxlanParams>,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("several errors: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<OverlayError>),
}

/// Where [`ensure`]'s per-bridge lock files live.
pub const LOCK_DIR: &str = "/run/berth";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OverlayError {
    let path = path.to_path_buf();
    move |source| OverlayError::Io { path, source }
}

/// Holds an exclusive `flock` on `LOCK_DIR/awsvpc-<bridge>.lock`, so
/// concurrent plugin ADDs and the agent never interleave their checks and
/// changes (a duplicate NAT rule, say).
fn lock(bridge: &str) -> Result<nix::fcntl::Flock<std::fs::File>, OverlayError> {
    let dir = Path::new(LOCK_DIR);
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(format!("awsvpc-{bridge}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_err(&path)(std::io::Error::from(errno)))
}

mod cidr_serde {
    use super::Ipv4Net;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&net.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_bridge() -> String {
    "bvpc0".into()
}
fn default_vxlan() -> String {
    "bvx0".into()
}
fn default_vni() -> u32 {
    DEFAULT_VNI
}

/// One host's overlay settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayConfig {
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_vxlan")]
    pub vxlan: String,
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// The whole cluster network; its first address is the gateway.
    #[serde(with = "cidr_serde")]
    pub cidr: Ipv4Net,
    /// This host's VXLAN endpoint address.
    pub underlay_ip: Ipv4Addr,
    /// Bridge, VXLAN and task MTU; default: underlay link MTU - 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

pub use crate::plugin::valid_ifname;

impl OverlayConfig {
    /// The default names (`bvpc0`, `bvx0`), VNI and derived MTU for `cidr`
    /// with this host's `underlay_ip`.
    pub fn new(cidr: Ipv4Net, underlay_ip: Ipv4Addr) -> Self {
        Self {
            bridge: default_bridge(),
            vxlan: default_vxlan(),
            vni: DEFAULT_VNI,
            cidr,
            underlay_ip,
            mtu: None,
        }
    }

    /// The anycast gateway: the first address of the network.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.gateway()
    }

    /// The gateway's MAC (see [`gateway_mac`]).
    pub fn gateway_mac(&self) -> [u8; 6] {
        gateway_mac(self.gateway())
    }

    /// The comment on this overlay's masquerade rule.
    pub fn nat_comment(&self) -> String {
        format!("berth-awsvpc:{}", self.bridge)
    }

    /// Checks names, VNI and MTU.
    pub fn validate(&self) -> Result<(), OverlayError> {
        let bad = |m: String| Err(OverlayError::Invalid(m));
        if !valid_ifname(&self.bridge) {
            return bad(format!("invalid bridge name {:?}", self.bridge));
        }
        if !valid_ifname(&self.vxlan) || self.vxlan == self.bridge {
            return bad(format!("invalid vxlan name {:?}", self.vxlan));
        }
        if !(1..=MAX_VNI).contains(&self.vni) {
            return bad(format!("vni {} outside 1..={MAX_VNI}", self.vni));
        }
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=65535).contains(&mtu) {
                return bad(format!("mtu {mtu} outside {MIN_MTU}..=65535"));
            }
        }
        if !self.underlay_ip.is_unspecified() && self.cidr.contains(self.underlay_ip) {
            return bad(format!(
                "underlay address {} lies inside the overlay {}",
                self.underlay_ip, self.cidr
            ));
        }
        Ok(())
    }

    fn vxlan_params(&self, underlay_index: u32) -> VxlanParams {
        VxlanParams {
            vni: self.vni,
            local: Some(self.underlay_ip),
            link: Some(underlay_index),
            port: VXLAN_PORT,
            learning: false,
            proxy: true,
        }
    }
}

/// The gateway MAC every host gives its bridge: `0a:42:` + the gateway's
/// four bytes. Locally administered and unicast, the same on every host
/// (the gateway is anycast: ARP for it is answered by the local bridge and
/// never crosses the overlay), and disjoint from the coordinator's `02:…`
/// task MACs.
pub fn gateway_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let o = gateway.octets();
    [0x0a, 0x42, o[0], o[1], o[2], o[3]]
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MTU to use: the configured one, else the underlay's minus the VXLAN
/// overhead.
pub fn effective_mtu(configured: Option<u32>, underlay_mtu: u32) -> Result<u32, OverlayError> {
    let mtu = configured.unwrap_or(underlay_mtu.saturating_sub(VXLAN_OVERHEAD));
    if mtu < MIN_MTU {
        return Err(OverlayError::Invalid(format!(
            "mtu {mtu} (underlay {underlay_mtu}) below {MIN_MTU}"
        )));
    }
    Ok(mtu)
}

/// Chooses the underlay address when none is configured: the default
/// route's preferred source, else the first global address on the default
/// route's link, else the first global non-loopback address. Addresses in
/// `exclude` (the overlay itself) never qualify.
pub fn pick_underlay(
    default_route: Option<(u32, Option<Ipv4Addr>)>,
    addrs: &[Ipv4AddrInfo],
    exclude: Option<Ipv4Net>,
) -> Option<Ipv4Addr> {
    let ok = |ip: &Ipv4Addr| !ip.is_loopback() && !exclude.is_some_and(|n| n.contains(*ip));
    let usable = |a: &&Ipv4AddrInfo| a.global && ok(&a.ip);
    if let Some((oif, src)) = default_route {
        if let Some(src) = src.filter(ok) {
            return Some(src);
        }
        if let Some(a) = addrs.iter().filter(usable).find(|a| a.index == oif) {
            return Some(a.ip);
        }
    }
    addrs.iter().find(usable).map(|a| a.ip)
}

/// Finds the underlay address in the handle's namespace (see
/// [`pick_underlay`]).
pub async fn detect_underlay(
    handle: &Handle,
    exclude: Option<Ipv4Net>,
) -> Result<Ipv4Addr, OverlayError> {
    let route = netlink::default_route_source(handle).await?;
    let addrs = netlink::list_ipv4_addresses(handle).await?;
    pick_underlay(route, &addrs, exclude).ok_or(OverlayError::NoUnderlay)
}

/// What [`ensure`] set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOverlay {
    pub bridge_index: u32,
    pub vxlan_index: u32,
    pub mtu: u32,
    pub gateway_mac: [u8; 6],
}

/// Ensures the bridge (gateway address and MAC, MTU, up), the VXLAN device
/// (right VNI/local/underlay link/port, no learning, ARP proxy, enslaved,
/// up), IPv4 forwarding and the egress masquerade rule. Idempotent and
/// serialized per bridge name by a lock file; a VXLAN device with other
/// parameters is deleted and recreated (its entries then come back with the
/// next [`sync`]).
pub async fn ensure(handle: &Handle, cfg: &OverlayConfig) -> Result<HostOverlay, OverlayError> {
    let _lock = lock(&cfg.bridge)?;
    let out = ensure_links(handle, cfg).await?;
    netlink::enable_ipv4_forwarding()?;
    iptables::ensure_rule(&iptables::subnet_masquerade_rule(
        &cfg.cidr.to_string(),
        &cfg.nat_comment(),
    ))?;
    Ok(out)
}

/// The link half of [`ensure`] (no iptables).
pub async fn ensure_links(
    handle: &Handle,
    cfg: &OverlayConfig,
) -> Result<HostOverlay, OverlayError> {
    cfg.validate()?;
    let addrs = netlink::list_ipv4_addresses(handle).await?;
    let underlay_index = addrs
        .iter()
        .find(|a| a.ip == cfg.underlay_ip)
        .map(|a| a.index)
        .ok_or(OverlayError::UnderlayNotFound(cfg.underlay_ip))?;
    let underlay_mtu = netlink::list_links(handle)
        .await?
        .into_iter()
        .find(|l| l.index == underlay_index)
        .and_then(|l| l.mtu)
        .unwrap_or(1500);
    let mtu = effective_mtu(cfg.mtu, underlay_mtu)?;
    let gw_mac = cfg.gateway_mac();

    // The bridge with the anycast gateway.
    if netlink::get_link(handle, &cfg.bridge).await?.is_none() {
        netlink::create_bridge(handle, &cfg.bridge).await?;
    }
    let br = netlink::get_link(handle, &cfg.bridge)
        .await?
        .ok_or_else(|| OverlayError::Missing(cfg.bridge.clone()))?;
    if br.mac != Some(gw_mac) {
        netlink::set_mac(handle, br.index, gw_mac).await?;
    }
    if br.mtu != Some(mtu) {
        netlink::set_mtu(handle, br.index, mtu).await?;
    }
    netlink::ensure_address(
        handle,
        br.index,
        std::net::IpAddr::V4(cfg.gateway()),
        cfg.cidr.prefix(),
    )
    .await?;
    netlink::set_up(handle, br.index).await?;

    // The VXLAN device.
    let want = cfg.vxlan_params(underlay_index);
    let existing = netlink::get_vxlan(handle, &cfg.vxlan).await?;
    let keep = matches!(&existing, Some((_, Some(p))) if *p == want);
    if !keep {
        if existing.is_some() {
            tracing::info!(vxlan = %cfg.vxlan, found = ?existing.as_ref().map(|e| e.1), ?want,
                "recreating vxlan device with the wanted parameters");
            netlink::delete_link(handle, &cfg.vxlan).await?;
        }
        netlink::create_vxlan(handle, &cfg.vxlan, &want, mtu).await?;
    }
    let (vx, got) = netlink::get_vxlan(handle, &cfg.vxlan)
        .await?
        .ok_or_else(|| OverlayError::Missing(cfg.vxlan.clone()))?;
    if got != Some(want) {
        return Err(OverlayError::Mismatch {
            name: cfg.vxlan.clone(),
            want,
            got,
        });
    }
    if vx.mtu != Some(mtu) {
        netlink::set_mtu(handle, vx.index, mtu).await?;
    }
    if vx.master != Some(br.index) {
        netlink::set_master(handle, vx.index, br.index).await?;
    }
    netlink::set_up(handle, vx.index).await?;
    Ok(HostOverlay {
        bridge_index: br.index,
        vxlan_index: vx.index,
        mtu,
        gateway_mac: gw_mac,
    })
}

/// Removes the VXLAN device, the bridge and the masquerade rule, carrying on
/// past each failure. Task veths still attached are left for their DEL.
pub async fn teardown(handle: &Handle, cfg: &OverlayConfig) -> Result<(), OverlayError> {
    let mut errors = Vec::new();
    if let Err(e) = netlink::delete_link(handle, &cfg.vxlan).await {
        errors.push(OverlayError::from(e));
    }
    if let Err(e) = netlink::delete_link(handle, &cfg.bridge).await {
        errors.push(e.into());
    }
    if let Err(e) = iptables::remove_with_comment(&cfg.nat_comment()) {
        errors.push(e.into());
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(OverlayError::Multiple(errors)),
    }
}

/// One remote task endpoint: its overlay address and MAC, and the underlay
/// address of the host it lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub underlay: Ipv4Addr,
}

/// One task endpoint in a membership view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub mac: String,
}

/// One cluster instance in a membership view. Deserializes from the same
/// JSON as the coordinator's `AwsvpcMember` (extra fields are ignored), so
/// this crate need not depend on the API crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub instance_id: String,
    #[serde(default)]
    pub underlay_ip: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// The peers this host needs entries for: every endpoint of every other
/// member that has a parseable underlay address. Unparseable addresses and
/// MACs are skipped (and logged); when two endpoints claim one overlay
/// address or one MAC, the first (in member order) wins. Sorted.
pub fn peers_from_network(members: &[Member], self_instance_id: &str) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    let mut ips = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for m in members.iter().filter(|m| m.instance_id != self_instance_id) {
        let Some(underlay) = m
            .underlay_ip
            .as_deref()
            .and_then(|u| u.parse::<Ipv4Addr>().ok())
            .filter(|u| !u.is_unspecified())
        else {
            if !m.endpoints.is_empty() {
                tracing::warn!(instance = %m.instance_id, underlay = ?m.underlay_ip,
                    "member without a usable underlay address; its endpoints are unreachable");
            }
            continue;
        };
        for e in &m.endpoints {
            let (Some(ip), Some(mac)) = (
                e.ip.parse::<Ipv4Addr>()
                    .ok()
                    .filter(|i| !i.is_unspecified()),
                parse_mac(&e.mac),
            ) else {
                tracing::warn!(instance = %m.instance_id, ip = %e.ip, mac = %e.mac,
                    "skipping unparseable endpoint");
                continue;
            };
            if ips.contains(&ip) || macs.contains(&mac) {
                tracing::warn!(instance = %m.instance_id, %ip, mac = %e.mac,
                    "skipping endpoint whose address or MAC another member already claims");
                continue;
            }
            ips.insert(ip);
            macs.insert(mac);
            out.push(Peer { ip, mac, underlay });
        }
    }
    out.sort();
    out
}

/// What [`sync`] changed (or [`diff`] would change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayDiff {
    /// Entries to install, sorted.
    pub add: Vec<Peer>,
    /// Entries to remove, sorted.
    pub remove: Vec<Peer>,
}

impl OverlayDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The changes taking `current` to `desired`. A peer whose MAC or underlay
/// changed is removed in its old form and added in its new one.
pub fn diff(current: &[Peer], desired: &[Peer]) -> OverlayDiff {
    let cur: BTreeSet<Peer> = current.iter().copied().collect();
    let want: BTreeSet<Peer> = desired.iter().copied().collect();
    OverlayDiff {
        add: want.difference(&cur).copied().collect(),
        remove: cur.difference(&want).copied().collect(),
    }
}

/// Reassembles peers from the VXLAN device's neighbour entries (ip -> MAC)
/// and FDB entries (MAC -> underlay). A neighbour without an FDB entry gets
/// underlay `0.0.0.0`, an FDB entry without a neighbour gets ip `0.0.0.0`:
/// such halves never match a desired peer, so [`sync`] removes them.
pub fn join_state(neighbours: &[(Ipv4Addr, [u8; 6])], fdb: &[([u8; 6], Ipv4Addr)]) -> Vec<Peer> {
    let mut out = Vec::new();
    for (ip, mac) in neighbours {
        let mut found = false;
        for (_, underlay) in fdb.iter().filter(|(m, _)| m == mac) {
            found = true;
            out.push(Peer {
                ip: *ip,
                mac: *mac,
                underlay: *underlay,
            });
        }
        if !found {
            out.push(Peer {
                ip: *ip,
                mac: *mac,
                underlay: Ipv4Addr::UNSPECIFIED,
            });
        }
    }
    for (mac, underlay) in fdb {
        if !neighbours.iter().any(|(_, m)| m == mac) {
            out.push(Peer {
                ip: Ipv4Addr::UNSPECIFIED,
                mac: *mac,
                underlay: *underlay,
            });
        }
    }
    out.sort();
    out
}

/// Reads the VXLAN device's current peers.
pub async fn current_peers(
    handle: &Handle,
    cfg: &OverlayConfig,
) -> Result<Vec<Peer>, OverlayError> {
    let vx = netlink::get_link(handle, &cfg.vxlan)
        .await?
        .ok_or_else(|| OverlayError::Missing(cfg.vxlan.clone()))?;
    let neighbours = netlink::list_neighbours(handle, vx.index).await?;
    let fdb = netlink::list_fdb(handle, vx.index).await?;
    Ok(join_state(&neighbours, &fdb))
}

/// Makes the VXLAN device's neighbour and FDB entries exactly `desired`
/// (peers behind this host's own underlay address or with unspecified
/// fields are ignored: local tasks sit on the bridge). Needs [`ensure`] to
/// have run. Returns what it changed.
pub async fn sync(
    handle: &Handle,
    cfg: &OverlayConfig,
    desired: &[Peer],
) -> Result<OverlayDiff, OverlayError> {
    let vx = netlink::get_link(handle, &cfg.vxlan)
        .await?
        .ok_or_else(|| OverlayError::Missing(cfg.vxlan.clone()))?;
    let desired: Vec<Peer> = desired
        .iter()
        .filter(|p| {
            p.underlay != cfg.underlay_ip && !p.underlay.is_unspecified() && !p.ip.is_unspecified()
        })
        .copied()
        .collect();
    let neighbours = netlink::list_neighbours(handle, vx.index).await?;
    let fdb = netlink::list_fdb(handle, vx.index).await?;
    let d = diff(&join_state(&neighbours, &fdb), &desired);
    for p in &d.remove {
        if !p.ip.is_unspecified() {
            netlink::del_neighbour(handle, vx.index, p.ip).await?;
        }
        if !p.underlay.is_unspecified() {
            netlink::del_fdb(handle, vx.index, p.mac, p.underlay).await?;
        }
    }
    for p in &d.add {
        netlink::add_fdb(handle, vx.index, p.mac, p.underlay).await?;
        netlink::add_neighbour(handle, vx.index, p.ip, p.mac).await?;
    }
    if !d.is_empty() {
        tracing::info!(vxlan = %cfg.vxlan, added = d.add.len(), removed = d.remove.len(),
            "overlay entries synced");
    }
    Ok(d)
}

/// Runs overlay work on a thread in `netns` (or the caller's namespace)
/// with its own netlink connection; usable from inside a tokio runtime
/// (it blocks the calling thread until done).
pub fn run_in<F, Fut, T, E>(netns: Option<&Path>, work: F) -> Result<T, E>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>>,
    T: Send + 'static,
    E: From<NetlinkError> + Send + 'static,
{
    netlink::in_netns(netns, move |h| async move {
        Ok::<_, NetlinkError>(work(h).await)
    })
    .map_err(E::from)?
}

/// [`ensure`] on its own thread in `netns` (or the caller's namespace).
pub fn ensure_in(netns: Option<&Path>, cfg: &OverlayConfig) -> Result<HostOverlay, OverlayError> {
    let cfg = cfg.clone();
    run_in(netns, move |h| async move { ensure(&h, &cfg).await })
}

/// [`sync`] on its own thread in `netns` (or the caller's namespace).
pub fn sync_in(
    netns: Option<&Path>,
    cfg: &OverlayConfig,
    desired: &[Peer],
) -> Result<OverlayDiff, OverlayError> {
    let cfg = cfg.clone();
    let desired = desired.to_vec();
    run_in(
        netns,
        move |h| async move { sync(&h, &cfg, &desired).await },
    )
}

/// [`teardown`] on its own thread in `netns` (or the caller's namespace).
pub fn teardown_in(netns: Option<&Path>, cfg: &OverlayConfig) -> Result<(), OverlayError> {
    let cfg = cfg.clone();
    run_in(netns, move |h| async move { teardown(&h, &cfg).await })
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn peer(i: &str, m: u8, u: &str) -> Peer {
        Peer {
            ip: ip(i),
            mac: [2, 0, 0, 0, 0, m],
            underlay: ip(u),
        }
    }

    #[test]
    fn diff_table() {
        let a = peer("10.199.0.2", 2, "10.250.0.2");
        let b = peer("10.199.0.3", 3, "10.250.0.2");
        let c = peer("10.199.0.4", 4, "10.250.0.3");
        let b_moved = peer("10.199.0.3", 3, "10.250.0.3");
        let b_new_mac = peer("10.199.0.3", 9, "10.250.0.2");
        let half = peer("10.199.0.3", 3, "0.0.0.0");
        // (current, desired, add, remove)
        let cases: Vec<(Vec<Peer>, Vec<Peer>, Vec<Peer>, Vec<Peer>)> = vec![
            (vec![], vec![], vec![], vec![]),
            (vec![], vec![a, b], vec![a, b], vec![]),
            (vec![a, b], vec![], vec![], vec![a, b]),
            (vec![a, b], vec![b, a], vec![], vec![]),
            (vec![a, b], vec![a, c], vec![c], vec![b]),
            (vec![a, b], vec![a, b_moved], vec![b_moved], vec![b]),
            (vec![b], vec![b_new_mac], vec![b_new_mac], vec![b]),
            (vec![a, half], vec![a, b], vec![b], vec![half]),
            (vec![c, a, a], vec![a, c, c], vec![], vec![]),
        ];
        for (current, desired, add, remove) in cases {
            let d = diff(&current, &desired);
            assert_eq!(d, OverlayDiff { add, remove }, "{current:?} -> {desired:?}");
        }
    }

    #[test]
    fn join_state_table() {
        let m = |x: u8| [2, 0, 0, 0, 0, x];
        // (neighbours, fdb, peers)
        let cases: Vec<(Vec<(&str, u8)>, Vec<(u8, &str)>, Vec<Peer>)> = vec![
            (vec![], vec![], vec![]),
            (
                vec![("10.199.0.2", 2)],
                vec![(2, "10.250.0.2")],
                vec![peer("10.199.0.2", 2, "10.250.0.2")],
            ),
            (
                vec![("10.199.0.2", 2)],
                vec![],
                vec![peer("10.199.0.2", 2, "0.0.0.0")],
            ),
            (
                vec![],
                vec![(7, "10.250.0.9")],
                vec![peer("0.0.0.0", 7, "10.250.0.9")],
            ),
            (
                vec![("10.199.0.3", 3), ("10.199.0.2", 2)],
                vec![(2, "10.250.0.2"), (3, "10.250.0.4"), (5, "10.250.0.5")],
                vec![
                    peer("0.0.0.0", 5, "10.250.0.5"),
                    peer("10.199.0.2", 2, "10.250.0.2"),
                    peer("10.199.0.3", 3, "10.250.0.4"),
                ],
            ),
        ];
        for (n, f, want) in cases {
            let n: Vec<(Ipv4Addr, [u8; 6])> = n.iter().map(|(i, x)| (ip(i), m(*x))).collect();
            let f: Vec<([u8; 6], Ipv4Addr)> = f.iter().map(|(x, u)| (m(*x), ip(u))).collect();
            assert_eq!(join_state(&n, &f), want, "{n:?} {f:?}");
        }
    }

    fn member(id: &str, underlay: Option<&str>, eps: &[(&str, &str)]) -> Member {
        Member {
            instance_id: id.into(),
            underlay_ip: underlay.map(str::to_string),
            endpoints: eps
                .iter()
                .map(|(i, m)| Endpoint {
                    ip: i.to_string(),
                    mac: m.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn peers_from_network_table() {
        let me = member(
            "mi-self",
            Some("10.250.0.1"),
            &[("10.199.0.2", "02:00:00:00:00:02")],
        );
        let other = member(
            "mi-b",
            Some("10.250.0.2"),
            &[
                ("10.199.0.4", "02:00:00:00:00:04"),
                ("10.199.0.3", "02:00:00:00:00:03"),
            ],
        );
        let no_underlay = member("mi-c", None, &[("10.199.0.5", "02:00:00:00:00:05")]);
        let bad_underlay = member("mi-d", Some("nope"), &[("10.199.0.6", "02:00:00:00:00:06")]);
        let bad_endpoints = member(
            "mi-e",
            Some("10.250.0.5"),
            &[
                ("10.199.0.7", "zz:00:00:00:00:07"),
                ("not-an-ip", "02:00:00:00:00:08"),
                ("10.199.0.9", "02:00:00:00:00:09"),
            ],
        );
        let dup = member(
            "mi-f",
            Some("10.250.0.6"),
            &[
                ("10.199.0.3", "02:00:00:00:00:33"),
                ("10.199.0.10", "02:00:00:00:00:04"),
            ],
        );
        let cases: Vec<(Vec<Member>, Vec<Peer>)> = vec![
            (vec![], vec![]),
            (vec![me.clone()], vec![]),
            (
                vec![me.clone(), other.clone()],
                vec![
                    peer("10.199.0.3", 3, "10.250.0.2"),
                    peer("10.199.0.4", 4, "10.250.0.2"),
                ],
            ),
            (vec![no_underlay, bad_underlay], vec![]),
            (
                vec![bad_endpoints],
                vec![peer("10.199.0.9", 9, "10.250.0.5")],
            ),
            (
                vec![other, dup],
                vec![
                    peer("10.199.0.3", 3, "10.250.0.2"),
                    peer("10.199.0.4", 4, "10.250.0.2"),
                ],
            ),
        ];
        for (members, want) in cases {
            assert_eq!(peers_from_network(&members, "mi-self"), want, "{members:?}");
        }
    }

    #[test]
    fn member_reads_the_coordinator_json() {
        let json = r#"{"cidr":"10.199.0.0/16","gateway":"10.199.0.1","members":[
            {"instanceId":"mi-1","underlayIp":"10.250.0.2","overlaySubnet":"10.199.0.0/16",
             "endpoints":[{"ip":"10.199.0.2","mac":"02:01:23:45:67:89"}]},
            {"instanceId":"mi-2","overlaySubnet":"10.199.0.0/16","endpoints":[]}]}"#;
        #[derive(Deserialize)]
        struct View {
            members: Vec<Member>,
        }
        let v: View = serde_json::from_str(json).unwrap();
        assert_eq!(
            peers_from_network(&v.members, "mi-2"),
            vec![Peer {
                ip: ip("10.199.0.2"),
                mac: [2, 1, 0x23, 0x45, 0x67, 0x89],
                underlay: ip("10.250.0.2"),
            }]
        );
        assert_eq!(v.members[1].underlay_ip, None);
    }

    #[test]
    fn parse_mac_table() {
        let cases: &[(&str, Option<[u8; 6]>)] = &[
            ("02:12:34:56:78:9a", Some([2, 0x12, 0x34, 0x56, 0x78, 0x9a])),
            ("0A:42:0A:C7:00:01", Some([0x0a, 0x42, 0x0a, 0xc7, 0, 1])),
            ("02:12:34:56:78", None),
            ("02:12:34:56:78:9a:bc", None),
            ("02-12-34-56-78-9a", None),
            ("2:12:34:56:78:9a", None),
            ("02:12:34:56:78:zz", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_mac(s), *want, "{s}");
        }
    }

    #[test]
    fn gateway_mac_and_mtu_table() {
        assert_eq!(gateway_mac(ip("10.199.0.1")), [0x0a, 0x42, 10, 199, 0, 1]);
        // Locally administered, unicast.
        assert_eq!(gateway_mac(ip("1.2.3.4"))[0] & 0b11, 0b10);
        let cases: &[(Option<u32>, u32, Option<u32>)] = &[
            (None, 1500, Some(1450)),
            (None, 9000, Some(8950)),
            (Some(1400), 1500, Some(1400)),
            (None, 100, None),
            (None, 0, None),
            (Some(60), 1500, None),
        ];
        for (cfg, underlay, want) in cases {
            assert_eq!(
                effective_mtu(*cfg, *underlay).ok(),
                *want,
                "{cfg:?} {underlay}"
            );
        }
    }

    #[test]
    fn pick_underlay_table() {
        let a = |index: u32, i: &str, global: bool| Ipv4AddrInfo {
            index,
            ip: ip(i),
            prefix: 24,
            global,
        };
        let addrs = vec![
            a(1, "127.0.0.1", false),
            a(2, "10.199.0.1", true),
            a(3, "192.168.1.10", true),
            a(4, "10.250.0.2", true),
            a(4, "169.254.0.1", false),
        ];
        let overlay: Ipv4Net = "10.199.0.0/16".parse().unwrap();
        let cases: Vec<(
            Option<(u32, Option<Ipv4Addr>)>,
            Option<Ipv4Net>,
            Option<&str>,
        )> = vec![
            (
                Some((4, Some(ip("10.250.0.2")))),
                Some(overlay),
                Some("10.250.0.2"),
            ),
            (Some((4, None)), Some(overlay), Some("10.250.0.2")),
            (Some((3, None)), Some(overlay), Some("192.168.1.10")),
            (None, Some(overlay), Some("192.168.1.10")),
            (None, None, Some("10.199.0.1")),
            (
                Some((2, Some(ip("10.199.0.1")))),
                Some(overlay),
                Some("192.168.1.10"),
            ),
            (Some((9, None)), Some(overlay), Some("192.168.1.10")),
        ];
        for (route, exclude, want) in cases {
            assert_eq!(
                pick_underlay(route, &addrs, exclude),
                want.map(ip),
                "{route:?} {exclude:?}"
            );
        }
        assert_eq!(pick_underlay(None, &addrs[..1], None), None);
    }

    #[test]
    fn config_validation_and_serde() {
        let json = r#"{"cidr":"10.199.0.0/16","underlayIp":"10.250.3.2"}"#;
        let cfg: OverlayConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            (cfg.bridge.as_str(), cfg.vxlan.as_str(), cfg.vni, cfg.mtu),
            ("bvpc0", "bvx0", DEFAULT_VNI, None)
        );
        assert_eq!(cfg.gateway(), ip("10.199.0.1"));
        let back: OverlayConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::from_str::<OverlayConfig>(
            r#"{"cidr":"10.199.0.0/40","underlayIp":"10.250.3.2"}"#
        )
        .is_err());
        let with = |f: &dyn Fn(&mut OverlayConfig)| {
            let mut c = cfg.clone();
            f(&mut c);
            c.validate().is_ok()
        };
        let cases: Vec<(&str, Box<dyn Fn(&mut OverlayConfig)>, bool)> = vec![
            ("defaults", Box::new(|_| {}), true),
            ("vni 0", Box::new(|c| c.vni = 0), false),
            ("vni 2^24", Box::new(|c| c.vni = 1 << 24), false),
            ("vni max", Box::new(|c| c.vni = (1 << 24) - 1), true),
            (
                "long bridge",
                Box::new(|c| c.bridge = "x".repeat(16)),
                false,
            ),
            (
                "same names",
                Box::new(|c| c.vxlan = c.bridge.clone()),
                false,
            ),
            ("mtu 9000", Box::new(|c| c.mtu = Some(9000)), true),
            ("mtu 10", Box::new(|c| c.mtu = Some(10)), false),
            (
                "underlay in overlay",
                Box::new(|c| c.underlay_ip = ip("10.199.3.3")),
                false,
            ),
        ];
        for (name, f, ok) in cases {
            assert_eq!(with(&*f), ok, "{name}");
        }
    }
}
