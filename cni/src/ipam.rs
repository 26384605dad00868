//! Host-local IPv4 address management: pure subnet/allocation logic plus
//! lease files under a data directory.
//!
//! Layout (like upstream `host-local`): `<data_dir>/<network>/<ip>` holds the
//! container id on its first line and the interface name on the second; the
//! file is created with `O_EXCL`, so two concurrent allocations can never
//! take the same address. `<data_dir>/<network>/last_reserved_ip.0` remembers
//! where the last allocation ended so addresses rotate instead of being reused
//! immediately.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Errors from address management.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0:?}: want a.b.c.d/len with len 1..=30")]
    InvalidSubnet(String),
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("lease store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An IPv4 network in CIDR form (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a network, clearing host bits. Prefixes outside 1..=30 leave no
    /// room for a gateway plus a host and are rejected.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if !(1..=30).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - prefix);
        Some(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | (u32::MAX >> self.prefix))
    }
    /// The first usable address, used as the gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpamError::InvalidSubnet(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Net::new(ip, len).ok_or_else(bad)
    }
}

/// Picks the next free host address after `last` (wrapping), skipping the
/// network, gateway and broadcast addresses and everything in `used`.
pub fn next_free(
    net: &Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let first = u32::from(net.gateway()) + 1;
    let end = u32::from(net.broadcast()); // exclusive
    if first >= end {
        return None;
    }
    let span = end - first;
    let start = match last {
        Some(l) if net.contains(l) && (first..end).contains(&u32::from(l)) => {
            (u32::from(l) - first + 1) % span
        }
        _ => 0,
    };
    (0..span)
        .map(|i| Ipv4Addr::from(first + (start + i) % span))
        .find(|ip| !used.contains(ip))
}

/// One lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

/// Parses a lease file's contents.
pub fn parse_lease(ip: Ipv4Addr, contents: &str) -> Lease {
    let mut lines = contents.lines();
    Lease {
        ip,
        container_id: lines.next().unwrap_or("").trim().to_string(),
        ifname: lines.next().unwrap_or("").trim().to_string(),
    }
}

const LAST_RESERVED: &str = "last_reserved_ip.0";

/// An exclusive lock on a lease store; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

/// The lease store for one network.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
    net: Ipv4Net,
}

impl LeaseStore {
    /// Opens (creating if needed) `<data_dir>/<network>`.
    pub fn open(data_dir: &Path, network: &str, net: Ipv4Net) -> Result<Self, IpamError> {
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir, net })
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io { path, source }
    }

    /// Takes an exclusive `flock` on `<dir>/lock`, held until the guard is
    /// dropped. The plugin holds it across a whole ADD or DEL so concurrent
    /// invocations on one network do not interleave their setup steps.
    pub fn lock(&self) -> Result<StoreLock, IpamError> {
        let path = self.dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, errno)| IpamError::Io {
                path: path.clone(),
                source: std::io::Error::from(errno),
            },
        )?;
        Ok(StoreLock { _file: file })
    }

    /// All current leases, sorted by address.
    pub fn list(&self) -> Result<Vec<Lease>, IpamError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(self.io(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(self.io(&self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let path = entry.path();
            match std::fs::read_to_string(&path) {
                Ok(c) => out.push(parse_lease(ip, &c)),
                // Released between readdir and read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        out.sort_by_key(|l| l.ip);
        Ok(out)
    }

    /// The lease held by `container_id` on `ifname`, if any.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Lease>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|l| l.container_id == container_id && l.ifname == ifname))
    }

    /// Allocates an address for `container_id`/`ifname`. Idempotent: a second
    /// call for the same pair returns the existing lease.
    pub fn allocate(&self, container_id: &str, ifname: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(l) = self.find(container_id, ifname)? {
            return Ok(l.ip);
        }
        let last_path = self.dir.join(LAST_RESERVED);
        let mut last = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let mut used: BTreeSet<Ipv4Addr> = self.list()?.into_iter().map(|l| l.ip).collect();
        loop {
            let ip = next_free(&self.net, &used, last).ok_or(IpamError::Exhausted(self.net))?;
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                        .map_err(self.io(&path))?;
                    // Best effort: only affects rotation, never correctness.
                    if let Err(e) = std::fs::write(&last_path, ip.to_string()) {
                        tracing::warn!(error = %e, "could not record last reserved ip");
                    }
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Someone else won this address; try the next one.
                    used.insert(ip);
                    last = Some(ip);
                }
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
    }

    /// Releases every lease held by `container_id` (on `ifname` when given).
    /// Idempotent; returns the released addresses.
    pub fn release(
        &self,
        container_id: &str,
        ifname: Option<&str>,
    ) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        for l in self.list()? {
            if l.container_id != container_id || ifname.is_some_and(|i| i != l.ifname) {
                continue;
            }
            let path = self.dir.join(l.ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => released.push(l.ip),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_parsing() {
        let cases: &[(&str, Option<(&str, u8, &str, &str)>)] = &[
            (
                "172.31.0.0/24",
                Some(("172.31.0.0", 24, "172.31.0.1", "172.31.0.255")),
            ),
            (
                "10.1.2.77/16",
                Some(("10.1.0.0", 16, "10.1.0.1", "10.1.255.255")),
            ),
            (
                "10.0.0.0/30",
                Some(("10.0.0.0", 30, "10.0.0.1", "10.0.0.3")),
            ),
            ("10.0.0.0/31", None),
            ("10.0.0.0/0", None),
            ("10.0.0.0", None),
            ("10.0.0/24", None),
            ("x/24", None),
            ("10.0.0.0/abc", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Ipv4Net>().ok();
            match (got, want) {
                (None, None) => {}
                (Some(n), Some((net, len, gw, bc))) => {
                    assert_eq!(n.network(), ip(net), "{input}");
                    assert_eq!(n.prefix(), *len, "{input}");
                    assert_eq!(n.gateway(), ip(gw), "{input}");
                    assert_eq!(n.broadcast(), ip(bc), "{input}");
                }
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn next_free_table() {
        let net24: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let net30: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let net29: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let set = |v: &[&str]| v.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        let cases: Vec<(Ipv4Net, BTreeSet<Ipv4Addr>, Option<&str>, Option<&str>)> = vec![
            // Empty: first host after the gateway.
            (net24, set(&[]), None, Some("10.0.0.2")),
            // Skip used.
            (
                net24,
                set(&["10.0.0.2", "10.0.0.3"]),
                None,
                Some("10.0.0.4"),
            ),
            // Continue after last reserved.
            (net24, set(&[]), Some("10.0.0.9"), Some("10.0.0.10")),
            // Wrap at broadcast, never hand out .255.
            (net24, set(&[]), Some("10.0.0.254"), Some("10.0.0.2")),
            // Last outside subnet is ignored.
            (net24, set(&[]), Some("192.168.0.9"), Some("10.0.0.2")),
            // /30: only .2 is a host (.1 gateway, .3 broadcast).
            (net30, set(&[]), None, Some("10.0.0.2")),
            (net30, set(&["10.0.0.2"]), None, None),
            // /29 full except .6 with wrap.
            (
                net29,
                set(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]),
                Some("10.0.0.5"),
                Some("10.0.0.6"),
            ),
            (
                net29,
                set(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
                None,
                None,
            ),
        ];
        for (net, used, last, want) in cases {
            let got = next_free(&net, &used, last.map(ip));
            assert_eq!(got, want.map(ip), "net {net} used {used:?} last {last:?}");
        }
    }

    #[test]
    fn lease_parsing() {
        let cases: &[(&str, &str, &str)] = &[
            ("abc\neth0\n", "abc", "eth0"),
            ("abc\n", "abc", ""),
            ("", "", ""),
            ("  abc \r\n eth1", "abc", "eth1"),
        ];
        for (contents, cid, ifname) in cases {
            let l = parse_lease(ip("10.0.0.2"), contents);
            assert_eq!(l.container_id, *cid);
            assert_eq!(l.ifname, *ifname);
        }
    }

    #[test]
    fn store_allocate_release_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let net: Ipv4Net = "10.9.0.0/29".parse().unwrap();
        let store = LeaseStore::open(tmp.path(), "n", net).unwrap();
        let a = store.allocate("c1", "eth0").unwrap();
        assert_eq!(a, ip("10.9.0.2"));
        // Idempotent.
        assert_eq!(store.allocate("c1", "eth0").unwrap(), a);
        let b = store.allocate("c2", "eth0").unwrap();
        assert_eq!(b, ip("10.9.0.3"));
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.release("c1", None).unwrap(), vec![a]);
        assert!(store.release("c1", None).unwrap().is_empty());
        // Rotation: next allocation does not reuse .2 straight away.
        assert_eq!(store.allocate("c3", "eth0").unwrap(), ip("10.9.0.4"));
        let leases = store.list().unwrap();
        assert_eq!(
            leases
                .iter()
                .map(|l| l.container_id.as_str())
                .collect::<Vec<_>>(),
            vec!["c2", "c3"]
        );
        // Exhaustion: .5 and .6 then nothing left... except freed .2.
        store.allocate("c4", "eth0").unwrap();
        store.allocate("c5", "eth0").unwrap();
        assert_eq!(store.allocate("c6", "eth0").unwrap(), ip("10.9.0.2"));
        assert!(matches!(
            store.allocate("c7", "eth0"),
            Err(IpamError::Exhausted(_))
        ));
    }
}
