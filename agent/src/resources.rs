//! What this host offers the scheduler, reported the ECS way at registration:
//! CPU units, memory, reserved and in-use TCP/UDP ports, and the attributes
//! (`ecs.os-type`, `ecs.cpu-architecture`, capabilities, custom ones) that task
//! definitions' `requiresAttributes` and placement constraints refer to.
//!
//! The parsing of `/proc/net/{tcp,tcp6,udp,udp6}` and of `NAME=VALUE`
//! attribute flags is pure and table-tested; only [`gather`] touches the host.

use std::collections::BTreeSet;

use berth_api::{Attribute, Resource};

/// Ports ECS always reserves on a container instance (SSH, Docker API, the ECS
/// agent's introspection ports).
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

/// Docker remote API versions whose capabilities the agent advertises, as the
/// ECS agent does (`com.amazonaws.ecs.capability.docker-remote-api.1.NN`).
const DOCKER_API_MINORS: std::ops::RangeInclusive<u32> = 17..=44;

#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("attribute {0:?} is not NAME or NAME=VALUE with a non-empty NAME")]
    BadAttribute(String),
    #[error("reserved memory {reserved} MiB exceeds the host's {total} MiB")]
    ReservedTooLarge { reserved: u64, total: u64 },
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Operator settings that shape what is reported.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    pub reserved_memory_mib: u64,
    pub availability_zone: Option<String>,
    /// Custom attributes from `--attribute NAME[=VALUE]`.
    pub custom_attributes: Vec<Attribute>,
}

/// Raw host facts, gathered once; turned into ECS resources by [`resources`].
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub logical_cpus: u64,
    pub total_memory_mib: u64,
    pub tcp_listening: BTreeSet<u16>,
    pub udp_listening: BTreeSet<u16>,
    /// `std::env::consts::ARCH` of the agent binary (`x86_64`, `aarch64`).
    pub arch: String,
}

/// Read host facts: CPU count and memory via `sysinfo`, listening ports from
/// procfs (of the network namespace the agent runs in).
pub fn gather() -> Result<HostFacts, ResourcesError> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let logical_cpus = match sys.cpus().len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    } as u64;
    let total_memory_mib = sys.total_memory() / (1024 * 1024);
    let mut tcp_listening = BTreeSet::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        tcp_listening.extend(read_ports(path, SocketKind::Tcp)?);
    }
    let mut udp_listening = BTreeSet::new();
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        udp_listening.extend(read_ports(path, SocketKind::Udp)?);
    }
    Ok(HostFacts {
        logical_cpus,
        total_memory_mib,
        tcp_listening,
        udp_listening,
        arch: std::env::consts::ARCH.to_string(),
    })
}

fn read_ports(path: &str, kind: SocketKind) -> Result<BTreeSet<u16>, ResourcesError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_proc_net(&text, kind)),
        // A kernel without IPv6 has no tcp6/udp6 table; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(ResourcesError::Read {
            path: path.to_string(),
            source,
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Tcp,
    Udp,
}

/// Local ports of listening sockets in a `/proc/net/{tcp,udp}[6]` table: TCP
/// sockets in state `0A` (LISTEN), UDP sockets in state `07` (unconnected,
/// i.e. bound and receiving). Malformed lines are skipped.
pub fn parse_proc_net(text: &str, kind: SocketKind) -> BTreeSet<u16> {
    let wanted_state = match kind {
        SocketKind::Tcp => "0A",
        SocketKind::Udp => "07",
    };
    let mut ports = BTreeSet::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        // sl, local_address, rem_address, st
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !state.eq_ignore_ascii_case(wanted_state) {
            continue;
        }
        let Some((_, port_hex)) = local.rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = u16::from_str_radix(port_hex, 16) {
            if port != 0 {
                ports.insert(port);
            }
        }
    }
    ports
}

/// `NAME=VALUE` → attribute with a value; `NAME` → attribute without one.
pub fn parse_attribute(arg: &str) -> Result<Attribute, ResourcesError> {
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.to_string())),
        None => (arg.trim(), None),
    };
    if name.is_empty() {
        return Err(ResourcesError::BadAttribute(arg.to_string()));
    }
    Ok(Attribute {
        name: name.to_string(),
        value,
    })
}

/// ECS name of a CPU architecture (`ecs.cpu-architecture`).
pub fn ecs_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    }
}

/// The ECS resources this host registers with.
pub fn resources(
    facts: &HostFacts,
    reserved_memory_mib: u64,
) -> Result<Vec<Resource>, ResourcesError> {
    if reserved_memory_mib > facts.total_memory_mib {
        return Err(ResourcesError::ReservedTooLarge {
            reserved: reserved_memory_mib,
            total: facts.total_memory_mib,
        });
    }
    let mut tcp: BTreeSet<u16> = DEFAULT_RESERVED_PORTS.into_iter().collect();
    tcp.extend(facts.tcp_listening.iter().copied());
    Ok(vec![
        Resource {
            name: "CPU".into(),
            kind: "INTEGER".into(),
            integer_value: (facts.logical_cpus * 1024) as i64,
            string_set_value: vec![],
        },
        Resource {
            name: "MEMORY".into(),
            kind: "INTEGER".into(),
            integer_value: (facts.total_memory_mib - reserved_memory_mib) as i64,
            string_set_value: vec![],
        },
        Resource {
            name: "PORTS".into(),
            kind: "STRINGSET".into(),
            integer_value: 0,
            string_set_value: tcp.iter().map(u16::to_string).collect(),
        },
        Resource {
            name: "PORTS_UDP".into(),
            kind: "STRINGSET".into(),
            integer_value: 0,
            string_set_value: facts.udp_listening.iter().map(u16::to_string).collect(),
        },
    ])
}

/// The attributes this host registers with: platform facts, the capabilities
/// the agent supports, the configured availability zone, then custom ones
/// (a custom attribute replaces a built-in one of the same name).
pub fn attributes(facts: &HostFacts, opts: &HostOptions) -> Vec<Attribute> {
    let mut attrs: Vec<Attribute> = Vec::new();
    let mut push = |name: &str, value: Option<&str>| {
        attrs.push(Attribute {
            name: name.to_string(),
            value: value.map(str::to_string),
        })
    };
    push("ecs.os-type", Some("linux"));
    push("ecs.os-family", Some("LINUX"));
    push("ecs.cpu-architecture", Some(ecs_arch(&facts.arch)));
    push("ecs.capability.external", None);
    push("ecs.capability.container-ordering", None);
    push(
        "com.amazonaws.ecs.capability.logging-driver.json-file",
        None,
    );
    push("com.amazonaws.ecs.capability.logging-driver.none", None);
    push("com.amazonaws.ecs.capability.privileged-container", None);
    for minor in DOCKER_API_MINORS {
        push(
            &format!("com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"),
            None,
        );
    }
    if let Some(az) = &opts.availability_zone {
        push("ecs.availability-zone", Some(az));
    }
    for custom in &opts.custom_attributes {
        attrs.retain(|a| a.name != custom.name);
        attrs.push(custom.clone());
    }
    attrs
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 5 2 0000000000000000 0
  101: 0100007F:D431 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 6 2 0000000000000000 0
";

    #[test]
    fn proc_net_tables() {
        let cases: &[(&str, SocketKind, &[u16])] = &[
            (TCP, SocketKind::Tcp, &[22, 8080]),
            (TCP6, SocketKind::Tcp, &[80]),
            (UDP, SocketKind::Udp, &[53]),
            // Listening TCP state is not a UDP state and vice versa.
            (TCP, SocketKind::Udp, &[]),
            (UDP, SocketKind::Tcp, &[]),
            ("", SocketKind::Tcp, &[]),
            ("header only\n", SocketKind::Tcp, &[]),
        ];
        for (text, kind, expected) in cases {
            let got: Vec<u16> = parse_proc_net(text, *kind).into_iter().collect();
            assert_eq!(&got, expected, "{kind:?} in {text:?}");
        }
    }

    #[test]
    fn attribute_flags() {
        let cases: &[(&str, Option<(&str, Option<&str>)>)] = &[
            ("stack=prod", Some(("stack", Some("prod")))),
            ("gpu", Some(("gpu", None))),
            ("a=b=c", Some(("a", Some("b=c")))),
            ("empty=", Some(("empty", Some("")))),
            ("=x", None),
            ("", None),
        ];
        for (arg, expected) in cases {
            let got = parse_attribute(arg).ok();
            assert_eq!(got.is_none(), expected.is_none(), "{arg:?}");
            let expected = expected.map(|(n, v)| Attribute {
                name: n.to_string(),
                value: v.map(str::to_string),
            });
            assert_eq!(got, expected, "{arg:?}");
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            logical_cpus: 2,
            total_memory_mib: 4000,
            tcp_listening: [22, 8080].into_iter().collect(),
            udp_listening: [53].into_iter().collect(),
            arch: "x86_64".into(),
        }
    }

    #[test]
    fn resources_follow_ecs_units() {
        let res = resources(&facts(), 256).expect("fits");
        let by_name = |n: &str| res.iter().find(|r| r.name == n).expect("present").clone();
        assert_eq!(by_name("CPU").integer_value, 2048);
        assert_eq!(by_name("CPU").kind, "INTEGER");
        assert_eq!(by_name("MEMORY").integer_value, 3744);
        assert_eq!(
            by_name("PORTS").string_set_value,
            vec!["22", "2375", "2376", "8080", "51678", "51679"]
        );
        assert_eq!(by_name("PORTS").kind, "STRINGSET");
        assert_eq!(by_name("PORTS_UDP").string_set_value, vec!["53"]);
        assert!(matches!(
            resources(&facts(), 5000),
            Err(ResourcesError::ReservedTooLarge {
                reserved: 5000,
                total: 4000
            })
        ));
    }

    #[test]
    fn attributes_include_platform_capabilities_az_and_custom() {
        let opts = HostOptions {
            reserved_memory_mib: 0,
            availability_zone: Some("rack-1".into()),
            custom_attributes: vec![
                parse_attribute("stack=prod").expect("valid"),
                parse_attribute("ecs.os-family=LINUX_CUSTOM").expect("valid"),
            ],
        };
        let attrs = attributes(&facts(), &opts);
        let value = |n: &str| attrs.iter().find(|a| a.name == n).map(|a| a.value.clone());
        assert_eq!(value("ecs.os-type"), Some(Some("linux".into())));
        assert_eq!(value("ecs.cpu-architecture"), Some(Some("x86_64".into())));
        assert_eq!(value("ecs.capability.external"), Some(None));
        assert_eq!(value("ecs.availability-zone"), Some(Some("rack-1".into())));
        assert_eq!(value("stack"), Some(Some("prod".into())));
        assert_eq!(value("ecs.os-family"), Some(Some("LINUX_CUSTOM".into())));
        assert_eq!(
            attrs.iter().filter(|a| a.name == "ecs.os-family").count(),
            1
        );
        for minor in [17, 30, 44] {
            let name = format!("com.amazonaws.ecs.capability.docker-remote-api.1.{minor}");
            assert_eq!(value(&name), Some(None), "{name}");
        }
        let no_az = attributes(&facts(), &HostOptions::default());
        assert!(!no_az.iter().any(|a| a.name == "ecs.availability-zone"));
        assert_eq!(ecs_arch("aarch64"), "arm64");
    }
}
