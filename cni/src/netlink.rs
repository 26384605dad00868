//! Link, address and route operations over rtnetlink, plus network-namespace
//! create/delete/enter helpers.
//!
//! Every netlink socket is bound to the namespace of the thread that creates
//! it, so [`in_netns`] runs the given async work on a dedicated thread that
//! first `setns`es into the target namespace, then opens its own rtnetlink
//! connection on a current-thread tokio runtime. The caller's thread never
//! changes namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::AddressFamily;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

/// Errors from netlink and namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening rtnetlink connection: {0}")]
    Connection(#[source] std::io::Error),
    #[error("building runtime for netlink thread: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("netlink {op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("network namespace {path}: {op}: {source}")]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink worker thread panicked")]
    ThreadPanicked,
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The IPv4 forwarding switch of the calling thread's namespace.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on in the calling thread's namespace (a fresh
/// namespace starts with it off): traffic DNAT'ed to a container, or
/// masqueraded out of one, is forwarded.
pub fn enable_ipv4_forwarding() -> Result<(), NetlinkError> {
    let err = |source| NetlinkError::Sysctl {
        path: IP_FORWARD,
        source,
    };
    let now = std::fs::read_to_string(IP_FORWARD).map_err(err)?;
    if now.trim() != "1" {
        std::fs::write(IP_FORWARD, "1").map_err(err)?;
    }
    Ok(())
}

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

fn ns_err(path: &Path, op: &'static str) -> impl FnOnce(nix::Error) -> NetlinkError {
    let path = path.to_path_buf();
    move |e| NetlinkError::Netns {
        path,
        op,
        source: std::io::Error::from(e),
    }
}

fn io_ns_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> NetlinkError {
    let path = path.to_path_buf();
    move |source| NetlinkError::Netns { path, op, source }
}

/// True when a netlink error is "no such device / object" (ENODEV, ENOENT,
/// ESRCH), i.e. the thing asked about does not exist.
fn is_missing(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(msg) => {
            let code = -msg.raw_code();
            code == libc::ENODEV || code == libc::ENOENT || code == libc::ESRCH
        }
        _ => false,
    }
}

/// Runs `work` with an rtnetlink handle bound to the network namespace at
/// `netns` (or the caller's namespace when `None`) on a dedicated thread.
pub fn in_netns<F, Fut, T>(netns: Option<&Path>, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
    T: Send + 'static,
{
    let target = netns.map(Path::to_path_buf);
    let thread = std::thread::spawn(move || -> Result<T, NetlinkError> {
        if let Some(path) = &target {
            let file = std::fs::File::open(path).map_err(io_ns_err(path, "open"))?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(ns_err(path, "setns"))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetlinkError::Runtime)?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(NetlinkError::Connection)?;
            let conn_task = tokio::spawn(conn);
            let out = work(handle).await;
            conn_task.abort();
            out
        })
    });
    thread.join().map_err(|_| NetlinkError::ThreadPanicked)?
}

/// A link as seen by [`list_links`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub master: Option<u32>,
    pub up: bool,
    pub mtu: Option<u32>,
}

fn summarize(msg: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name.clone_from(n),
            LinkAttribute::Controller(m) => s.master = Some(*m),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                s.mac = Some(mac);
            }
            _ => {}
        }
    }
    s
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Lists every link in the handle's namespace.
pub async fn list_links(handle: &Handle) -> Result<Vec<LinkSummary>, NetlinkError> {
    let mut out = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list links"))? {
        out.push(summarize(&msg));
    }
    Ok(out)
}

/// Looks a link up by name; `None` when it does not exist.
pub async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkSummary>, NetlinkError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(summarize(&msg))),
        Ok(None) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(req(format!("get link {name}"))(e)),
    }
}

async fn require_link(handle: &Handle, name: &str) -> Result<LinkSummary, NetlinkError> {
    get_link(handle, name)
        .await?
        .ok_or_else(|| NetlinkError::LinkNotFound(name.to_string()))
}

/// Brings a link up.
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(req(format!("set link {index} up")))
}

/// Renames a link (it must be down).
pub async fn rename(handle: &Handle, index: u32, name: &str) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(name.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(req(format!("rename link {index} to {name}")))
}

/// Enslaves a link to a bridge.
pub async fn set_master(handle: &Handle, index: u32, master: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).controller(master).build())
        .execute()
        .await
        .map_err(req(format!("attach link {index} to {master}")))
}

/// Turns hairpin mode on for a bridge port.
pub async fn set_hairpin(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set_port(LinkBridgePort::new(index).hairpin(true).build())
        .execute()
        .await
        .map_err(req(format!("hairpin on port {index}")))
}

/// Addresses (address, prefix length) on a link.
pub async fn list_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
    let mut out = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list addresses"))? {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(ip) = attr {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Adds an address unless the link already carries it.
pub async fn ensure_address(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), NetlinkError> {
    if list_addresses(handle, index)
        .await?
        .iter()
        .any(|(a, p)| *a == ip && *p == prefix)
    {
        return Ok(());
    }
    match handle.address().add(index, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        // A concurrent ADD on the same bridge added it first.
        Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
        Err(e) => Err(req(format!("add address {ip}/{prefix} on {index}"))(e)),
    }
}

/// Creates the bridge if missing, gives it `gateway/prefix` and brings it up.
/// Returns its index.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, NetlinkError> {
    let link = match get_link(handle, name).await? {
        Some(l) => l,
        None => {
            let created = handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await;
            match created {
                Ok(()) => {}
                // Lost a race with a concurrent ADD creating the same bridge.
                Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => {}
                Err(e) => return Err(req(format!("create bridge {name}"))(e)),
            }
            require_link(handle, name).await?
        }
    };
    ensure_address(handle, link.index, IpAddr::V4(gateway), prefix).await?;
    set_up(handle, link.index).await?;
    Ok(link.index)
}

/// Creates a veth pair `host` <-> `peer` in the handle's namespace.
pub async fn create_veth(handle: &Handle, host: &str, peer: &str) -> Result<(), NetlinkError> {
    handle
        .link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(req(format!("create veth {host}/{peer}")))
}

/// Creates a veth pair with `host` in the handle's namespace and `peer`
/// born inside the network namespace at `netns` (with `peer_mac`, and both
/// ends with `mtu`, when given), in one request. Creating the peer in place
/// instead of moving it afterwards ([`move_to_netns`]) spares the kernel a
/// network-wide synchronisation per task: on this 2-CPU machine a move costs
/// 20-35 ms, a creation with the peer in place 6-9 ms.
pub async fn create_veth_in_netns(
    handle: &Handle,
    host: &str,
    peer: &str,
    netns: &Path,
    peer_mac: Option<[u8; 6]>,
    mtu: Option<u32>,
) -> Result<(), NetlinkError> {
    let file = std::fs::File::open(netns).map_err(io_ns_err(netns, "open"))?;
    let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .setns_by_fd(file.as_raw_fd());
    let mut host_msg = LinkVeth::new(host, peer);
    if let Some(mac) = peer_mac {
        peer_msg = peer_msg.address(mac.to_vec());
    }
    if let Some(mtu) = mtu {
        peer_msg = peer_msg.mtu(mtu);
        host_msg = host_msg.mtu(mtu);
    }
    let msg = host_msg
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
        .build();
    handle.link().add(msg).execute().await.map_err(req(format!(
        "create veth {host}/{peer} with {peer} in {}",
        netns.display()
    )))
}

/// Moves link `index` into the network namespace at `netns`.
pub async fn move_to_netns(handle: &Handle, index: u32, netns: &Path) -> Result<(), NetlinkError> {
    let file = std::fs::File::open(netns).map_err(io_ns_err(netns, "open"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(file.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(req(format!("move link {index} to {}", netns.display())))
}

/// Deletes a link by name. Returns false when it did not exist.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetlinkError> {
    let Some(link) = get_link(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(req(format!("delete link {name}"))(e)),
    }
}

/// Adds `default via gateway dev index`.
pub async fn add_default_route(
    handle: &Handle,
    gateway: Ipv4Addr,
    index: u32,
) -> Result<(), NetlinkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    match handle.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
        Err(e) => Err(req(format!("add default route via {gateway}"))(e)),
    }
}

/// The IPv4 default route's gateway and output link, if there is one.
pub async fn default_route(handle: &Handle) -> Result<Option<(Ipv4Addr, u32)>, NetlinkError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list routes"))? {
        if msg.header.destination_prefix_length != 0 {
            continue;
        }
        let mut gw = None;
        let mut oif = 0;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                RouteAttribute::Oif(i) => oif = *i,
                _ => {}
            }
        }
        if let Some(gw) = gw {
            return Ok(Some((gw, oif)));
        }
    }
    Ok(None)
}

/// Creates a named network namespace file at `path` (the `ip netns add`
/// technique: unshare a new net namespace on a dedicated thread and bind-mount
/// that thread's `/proc/self/task/TID/ns/net` onto the file).
pub fn create_netns(path: &Path) -> Result<(), NetlinkError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_ns_err(path, "create parent dir"))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_ns_err(path, "create file"))?;
    let target = path.to_path_buf();
    let joined = std::thread::spawn(move || -> Result<(), NetlinkError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(ns_err(&target, "unshare"))?;
        let tid = nix::unistd::gettid();
        let src = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        mount(
            Some(&src),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(ns_err(&target, "bind mount"))
    })
    .join()
    .map_err(|_| NetlinkError::ThreadPanicked)?;
    if let Err(e) = joined {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Whether `path` is a mounted network namespace: [`create_netns`] makes the
/// file before it mounts the namespace on it, so a crash in between leaves
/// a plain empty file that joining would fail on.
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and removes a namespace file made by [`create_netns`]. Missing
/// files are not an error.
pub fn delete_netns(path: &Path) -> Result<(), NetlinkError> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(ns_err(path, "unmount")(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_ns_err(path, "remove")(e)),
    }
}

/// Sets a link's MTU.
pub async fn set_mtu(handle: &Handle, index: u32, mtu: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(req(format!("set mtu {mtu} on link {index}")))
}

/// Sets a link's hardware address.
pub async fn set_mac(handle: &Handle, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(req(format!(
            "set address {} on link {index}",
            format_mac(&mac)
        )))
}

/// Creates a bridge named `name` (no address, down). An existing link of
/// that name is not an error.
pub async fn create_bridge(handle: &Handle, name: &str) -> Result<(), NetlinkError> {
    match handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
        Err(e) => Err(req(format!("create bridge {name}"))(e)),
    }
}

/// The VXLAN parameters Berth sets and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanParams {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    /// Index of the underlay link (`dev`).
    pub link: Option<u32>,
    pub port: u16,
    pub learning: bool,
    /// ARP suppression: answer ARP from the device's neighbour table.
    pub proxy: bool,
}

fn vxlan_params(msg: &LinkMessage) -> Option<VxlanParams> {
    let infos = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
        _ => None,
    })?;
    let mut p = VxlanParams {
        vni: 0,
        local: None,
        link: None,
        port: 0,
        learning: true,
        proxy: false,
    };
    for d in data {
        match d {
            InfoVxlan::Id(v) => p.vni = *v,
            InfoVxlan::Local(ip) => p.local = Some(*ip),
            InfoVxlan::Link(i) => p.link = Some(*i),
            InfoVxlan::Port(port) => p.port = *port,
            InfoVxlan::Learning(l) => p.learning = *l,
            InfoVxlan::Proxy(x) => p.proxy = *x,
            _ => {}
        }
    }
    Some(p)
}

/// Looks a link up by name and, if it is a VXLAN device, returns its
/// parameters too (`None` parameters for any other kind of link).
pub async fn get_vxlan(
    handle: &Handle,
    name: &str,
) -> Result<Option<(LinkSummary, Option<VxlanParams>)>, NetlinkError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some((summarize(&msg), vxlan_params(&msg)))),
        Ok(None) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(req(format!("get link {name}"))(e)),
    }
}

/// Creates a VXLAN device with `params` and `mtu` (down, no controller).
pub async fn create_vxlan(
    handle: &Handle,
    name: &str,
    params: &VxlanParams,
    mtu: u32,
) -> Result<(), NetlinkError> {
    let mut b = LinkVxlan::new(name, params.vni)
        .port(params.port)
        .learning(params.learning)
        .proxy(params.proxy)
        .mtu(mtu);
    if let Some(local) = params.local {
        b = b.local(local);
    }
    if let Some(link) = params.link {
        b = b.dev(link);
    }
    match handle.link().add(b.build()).execute().await {
        Ok(()) => Ok(()),
        // A concurrent caller created it; the caller re-reads and verifies.
        Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
        Err(e) => Err(req(format!("create vxlan {name}"))(e)),
    }
}

/// One IPv4 address of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4AddrInfo {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Scope `global` (universe).
    pub global: bool,
}

/// Every IPv4 address in the handle's namespace.
pub async fn list_ipv4_addresses(handle: &Handle) -> Result<Vec<Ipv4AddrInfo>, NetlinkError> {
    let mut out = Vec::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list addresses"))? {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                out.push(Ipv4AddrInfo {
                    index: msg.header.index,
                    ip: *ip,
                    prefix: msg.header.prefix_len,
                    global: msg.header.scope == AddressScope::Universe,
                });
            }
        }
    }
    Ok(out)
}

/// The IPv4 default route's output link and preferred source, if there is a
/// default route (with or without a gateway).
pub async fn default_route_source(
    handle: &Handle,
) -> Result<Option<(u32, Option<Ipv4Addr>)>, NetlinkError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list routes"))? {
        if msg.header.destination_prefix_length != 0 {
            continue;
        }
        let mut oif = None;
        let mut src = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => src = Some(*ip),
                _ => {}
            }
        }
        if let Some(oif) = oif {
            return Ok(Some((oif, src)));
        }
    }
    Ok(None)
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok()
}

/// Permanent IPv4 neighbour entries (ip -> MAC) on link `index`.
pub async fn list_neighbours(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, [u8; 6])>, NetlinkError> {
    let mut out = Vec::new();
    let mut stream = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list neighbours"))? {
        if msg.header.ifindex != index || msg.header.state != NeighbourState::Permanent {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.push((ip, mac));
        }
    }
    Ok(out)
}

/// Adds (or replaces) a permanent neighbour entry `ip -> mac` on link `index`.
pub async fn add_neighbour(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> Result<(), NetlinkError> {
    handle
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(req(format!("add neighbour {ip} on link {index}")))
}

/// Deletes the neighbour entry for `ip` on link `index`; absent is fine.
pub async fn del_neighbour(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match handle.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(req(format!("delete neighbour {ip} on link {index}"))(e)),
    }
}

/// The device's own forwarding entries (`bridge fdb ... self`) on link
/// `index` that carry a remote IPv4 destination: (MAC, remote).
pub async fn list_fdb(
    handle: &Handle,
    index: u32,
) -> Result<Vec<([u8; 6], Ipv4Addr)>, NetlinkError> {
    let mut out = Vec::new();
    let mut stream = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    while let Some(msg) = stream.try_next().await.map_err(req("list fdb"))? {
        if msg.header.ifindex != index || !msg.header.flags.contains(NeighbourFlags::Own) {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
                _ => {}
            }
        }
        if let (Some(mac), Some(dst)) = (mac, dst) {
            out.push((mac, dst));
        }
    }
    Ok(out)
}

/// Adds (or replaces) a permanent `mac -> dst` forwarding entry on the
/// device itself (`bridge fdb replace MAC dev DEV dst DST self permanent`).
pub async fn add_fdb(
    handle: &Handle,
    index: u32,
    mac: [u8; 6],
    dst: Ipv4Addr,
) -> Result<(), NetlinkError> {
    handle
        .neighbours()
        .add_bridge(index, &mac)
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .destination(IpAddr::V4(dst))
        .replace()
        .execute()
        .await
        .map_err(req(format!(
            "add fdb {} -> {dst} on link {index}",
            format_mac(&mac)
        )))
}

/// Deletes the device's `mac -> dst` forwarding entry; absent is fine.
pub async fn del_fdb(
    handle: &Handle,
    index: u32,
    mac: [u8; 6],
    dst: Ipv4Addr,
) -> Result<(), NetlinkError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    match handle.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(req(format!(
            "delete fdb {} -> {dst} on link {index}",
            format_mac(&mac)
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_formatting() {
        let cases: &[([u8; 6], &str)] = &[
            ([0, 0, 0, 0, 0, 0], "00:00:00:00:00:00"),
            ([0xde, 0xad, 0xbe, 0xef, 0x01, 0x0a], "de:ad:be:ef:01:0a"),
        ];
        for (mac, want) in cases {
            assert_eq!(format_mac(mac), *want);
        }
    }
}
