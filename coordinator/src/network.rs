//! awsvpc networking decisions, pure: the cluster network CIDR, address
//! allocation (lowest free host address, never the network, gateway or
//! broadcast address), the MAC derived from the address and the ENI id from
//! the task id, and validation
//! of RunTask's `networkConfiguration.awsvpcConfiguration` as ECS does it.
//!
//! **Architecture Invariant:** no I/O, no clock, no randomness here; the
//! planner calls these and records the results in its commands, so replay
//! reproduces every allocation exactly.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use berth_api::AwsvpcAttachment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid CIDR {0:?}: expected a.b.c.d/n with n between 8 and 30")]
    Cidr(String),
    #[error("{0}")]
    Invalid(String),
}

/// An IPv4 network, e.g. `10.199.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, NetworkError> {
        let bad = || NetworkError::Cidr(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix_len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    fn first(&self) -> u32 {
        u32::from(self.network)
    }

    fn broadcast(&self) -> u32 {
        self.first() | (u32::MAX >> self.prefix_len)
    }

    /// The gateway: the network's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first() + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix_len);
        u32::from(ip) & mask == self.first()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The lowest address of `cidr` usable by a task that is not in `used`: not
/// the network address, the gateway or the broadcast address.
pub fn allocate(cidr: &Cidr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (cidr.first() + 2..cidr.broadcast())
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

/// `02:00:` + the address's four bytes: locally administered, unicast, and
/// a function of the address alone. Two active tasks never share an address,
/// so never a MAC; and a task that gets a released address back gets its MAC
/// too, so the ARP entries other tasks still hold for that address stay
/// right (the overlay answers ARP from its tables and never floods, so a
/// changed MAC would leave them stale until they expire).
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The attachment for a task given its address.
pub fn attachment(
    task_id: &str,
    attachment_id: String,
    cidr: &Cidr,
    ip: Ipv4Addr,
) -> AwsvpcAttachment {
    // The last 17 hex digits: task ids begin with their creation time, so
    // tasks of one commit share a prefix; the tail is random.
    let eni = task_id
        .get(task_id.len().saturating_sub(17)..)
        .unwrap_or(task_id);
    AwsvpcAttachment {
        attachment_id,
        network_interface_id: format!("eni-{eni}"),
        ip: ip.to_string(),
        prefix_len: cidr.prefix_len,
        gateway: Some(cidr.gateway().to_string()),
        mac: mac_for(ip),
    }
}

/// RunTask/StartTask `networkConfiguration.awsvpcConfiguration`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcConfiguration {
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// `ENABLED` or `DISABLED` (absent: `DISABLED`).
    #[serde(default)]
    pub assign_public_ip: Option<String>,
}

/// Validates a request's `networkConfiguration` object as ECS does.
pub fn parse_network_configuration(v: &Value) -> Result<AwsvpcConfiguration, NetworkError> {
    let invalid = |m: &str| NetworkError::Invalid(m.to_string());
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("networkConfiguration must be an object."))?;
    let Some(aws) = obj.get("awsvpcConfiguration") else {
        return Err(invalid(
            "Network Configuration must contain an awsvpcConfiguration.",
        ));
    };
    let aws = aws
        .as_object()
        .ok_or_else(|| invalid("awsvpcConfiguration must be an object."))?;
    let strings = |name: &str| -> Result<Vec<String>, NetworkError> {
        match aws.get(name) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid(&format!("{name} must be a list of strings.")))
                })
                .collect(),
            Some(_) => Err(invalid(&format!("{name} must be a list of strings."))),
        }
    };
    let subnets = strings("subnets")?;
    if subnets.is_empty() {
        return Err(invalid("subnets can not be empty."));
    }
    if subnets.len() > 16 {
        return Err(invalid("subnets can have at most 16 items."));
    }
    let security_groups = strings("securityGroups")?;
    if security_groups.len() > 5 {
        return Err(invalid("securityGroups can have at most 5 items."));
    }
    let assign_public_ip = match aws.get("assignPublicIp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "ENABLED" || s == "DISABLED" => Some(s.clone()),
        Some(_) => {
            return Err(invalid(
                "assignPublicIp must be one of ENABLED or DISABLED.",
            ))
        }
    };
    Ok(AwsvpcConfiguration {
        subnets,
        security_groups,
        assign_public_ip,
    })
}

/// What ECS says when the configuration and the network mode disagree, or
/// `Ok` when they agree.
pub fn check_mode(network_mode: &str, given: bool) -> Result<(), NetworkError> {
    match (network_mode == "awsvpc", given) {
        (true, false) => Err(NetworkError::Invalid(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.".into(),
        )),
        (false, true) => Err(NetworkError::Invalid(
            "Network Configuration is not valid for the given networkMode of this task definition."
                .into(),
        )),
        _ => Ok(()),
    }
}

/// A placed awsvpc task's interface, as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEni {
    pub attachment: AwsvpcAttachment,
    pub configuration: AwsvpcConfiguration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cidr_table() {
        type Row<'a> = (&'a str, Option<(&'a str, u8, &'a str)>);
        let table: Vec<Row> = vec![
            ("10.199.0.0/16", Some(("10.199.0.0", 16, "10.199.0.1"))),
            // host bits are masked off.
            ("10.199.3.7/24", Some(("10.199.3.0", 24, "10.199.3.1"))),
            ("10.0.0.0/31", None),
            ("10.0.0.0/7", None),
            ("10.0.0.0", None),
            ("10.0.0/16", None),
        ];
        for (input, want) in table {
            let got = Cidr::parse(input)
                .ok()
                .map(|c| (c.network.to_string(), c.prefix_len, c.gateway().to_string()));
            let want = want.map(|(n, l, g)| (n.to_string(), l, g.to_string()));
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(
            Cidr::parse("10.199.0.0/16").unwrap().to_string(),
            "10.199.0.0/16"
        );
    }

    #[test]
    fn hundred_tasks_get_distinct_addresses_and_reuse_only_after_release() {
        let cidr = Cidr::parse("10.199.0.0/16").unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..100 {
            let ip = allocate(&cidr, &used).unwrap();
            assert!(cidr.contains(ip));
            assert_ne!(ip, cidr.gateway());
            assert!(used.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(used.len(), 100);
        // Not released: the next one is fresh.
        assert_eq!(allocate(&cidr, &used), Some(Ipv4Addr::new(10, 199, 0, 102)));
        // Released (its task STOPPED): the lowest free is reused.
        used.remove(&Ipv4Addr::new(10, 199, 0, 7));
        assert_eq!(allocate(&cidr, &used), Some(Ipv4Addr::new(10, 199, 0, 7)));
    }

    #[test]
    fn exhaustion_table() {
        // A /30 has exactly one task address (.2): .0 network, .1 gateway, .3 broadcast.
        let cidr = Cidr::parse("192.168.5.0/30").unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(allocate(&cidr, &used), Some(Ipv4Addr::new(192, 168, 5, 2)));
        used.insert(Ipv4Addr::new(192, 168, 5, 2));
        assert_eq!(allocate(&cidr, &used), None);
    }

    #[test]
    fn eni_from_task_id_and_mac_from_address() {
        let a = attachment(
            "0123456789abcdef0123456789abcdef",
            "u".into(),
            &Cidr::parse("10.199.0.0/16").unwrap(),
            Ipv4Addr::new(10, 199, 0, 2),
        );
        assert_eq!(a.mac, "02:00:0a:c7:00:02");
        assert_eq!(a.network_interface_id, "eni-f0123456789abcdef");
        assert_eq!(a.gateway.as_deref(), Some("10.199.0.1"));
        assert_eq!(a.prefix_len, 16);
        assert_eq!(
            mac_for(Ipv4Addr::new(192, 168, 255, 1)),
            "02:00:c0:a8:ff:01"
        );
    }

    #[test]
    fn network_configuration_table() {
        let subnets = |n: usize| (0..n).map(|i| format!("subnet-{i}")).collect::<Vec<_>>();
        let table: Vec<(Value, Result<usize, &str>)> = vec![
            (json!({"awsvpcConfiguration": {"subnets": ["s1"]}}), Ok(1)),
            (
                json!({"awsvpcConfiguration": {"subnets": subnets(16), "securityGroups": ["sg"],
                                               "assignPublicIp": "DISABLED"}}),
                Ok(16),
            ),
            (
                json!({"awsvpcConfiguration": {"subnets": subnets(17)}}),
                Err("subnets can have at most 16 items."),
            ),
            (
                json!({"awsvpcConfiguration": {"subnets": []}}),
                Err("subnets can not be empty."),
            ),
            (
                json!({"awsvpcConfiguration": {}}),
                Err("subnets can not be empty."),
            ),
            (
                json!({"awsvpcConfiguration": {"subnets": ["s"], "assignPublicIp": "YES"}}),
                Err("assignPublicIp must be one of ENABLED or DISABLED."),
            ),
            (
                json!({"awsvpcConfiguration": {"subnets": ["s"], "securityGroups": subnets(6)}}),
                Err("securityGroups can have at most 5 items."),
            ),
            (
                json!({}),
                Err("Network Configuration must contain an awsvpcConfiguration."),
            ),
        ];
        for (input, want) in table {
            let got = parse_network_configuration(&input)
                .map(|c| c.subnets.len())
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{input}");
        }
    }

    #[test]
    fn mode_table() {
        assert!(check_mode("awsvpc", true).is_ok());
        assert!(check_mode("bridge", false).is_ok());
        assert!(check_mode("awsvpc", false)
            .unwrap_err()
            .to_string()
            .contains("must be provided"));
        assert!(check_mode("host", true)
            .unwrap_err()
            .to_string()
            .contains("not valid for the given networkMode"));
    }
}
