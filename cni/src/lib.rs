//! Berth's CNI plugins and the pieces they are built on: rtnetlink and
//! network-namespace operations ([`netlink`]), host-local IPv4 address
//! management ([`ipam`]), CNI 1.0 wire types ([`spec`]) and the
//! `berth-bridge` plugin logic ([`bridge`]) behind the thin
//! `src/bin/berth-bridge.rs` binary.

pub mod bridge;
pub mod ipam;
pub mod iptables;
pub mod netlink;
pub mod spec;
