//! Berth's CNI plugins and the pieces they are built on: rtnetlink and
//! network-namespace operations ([`netlink`]), host-local IPv4 address
//! management ([`ipam`]), CNI 1.0 wire types ([`spec`]), the skeleton every
//! plugin shares ([`plugin`]), the
//! `berth-bridge` plugin logic ([`bridge`]) behind the thin
//! `src/bin/berth-bridge.rs` binary, the per-host awsvpc VXLAN overlay the
//! agent programs ([`overlay`]) and the `berth-awsvpc` plugin logic
//! ([`awsvpc`]) behind `src/bin/berth-awsvpc.rs`.

pub mod awsvpc;
pub mod bridge;
pub mod ipam;
pub mod iptables;
pub mod netlink;
pub mod overlay;
pub mod plugin;
pub mod spec;
