//! CNI 1.0 wire types: the runtime environment (`CNI_*` variables), the
//! result JSON, the error JSON with the spec's error codes, and VERSION.
//! Pure; no I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Versions this crate's plugins speak.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Spec error codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const GENERIC: u32 = 999;
}

/// A CNI error, printed as `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// The error JSON for stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v.to_string()
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The runtime environment passed in `CNI_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty for VERSION; may be empty for DEL.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` split on `;` into `K=V`.
    pub args: Vec<(String, String)>,
    pub path: Vec<String>,
}

impl RuntimeEnv {
    /// Reads the environment from a variable map. Required variables per the
    /// spec: all of COMMAND, CONTAINERID, IFNAME, PATH for ADD/DEL/CHECK, plus
    /// NETNS for ADD/CHECK; only COMMAND for VERSION.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, CniError> {
        let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
        let command = match get("CNI_COMMAND") {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "" => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                ))
            }
        };
        let mut required: Vec<&str> = Vec::new();
        if command != Command::Version {
            required.extend(["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]);
        }
        if matches!(command, Command::Add | Command::Check) {
            required.push("CNI_NETNS");
        }
        let missing: Vec<&str> = required.into_iter().filter(|k| get(k).is_empty()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        let args = parse_args(get("CNI_ARGS"))?;
        Ok(Self {
            command,
            container_id: get("CNI_CONTAINERID").to_string(),
            netns: get("CNI_NETNS").to_string(),
            ifname: get("CNI_IFNAME").to_string(),
            args,
            path: get("CNI_PATH")
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// Parses `CNI_ARGS` (`K1=V1;K2=V2`).
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CniError::new(code::INVALID_ENV, format!("invalid CNI_ARGS pair {p:?}"))
                })
        })
        .collect()
}

/// Checks a config's `cniVersion` against [`SUPPORTED_VERSIONS`].
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {v:?}"),
        )
        .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))))
    }
}

/// The VERSION answer.
pub fn version_json(cni_version: &str) -> String {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// `interfaces[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// `ips[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. `172.31.0.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Only in 0.3.x/0.4.0 results (`"4"` or `"6"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `routes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// `dns` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Adapts the result to the requested version: pre-1.0 results carry
    /// `"version": "4"` on each IP.
    pub fn for_version(mut self, v: &str) -> Self {
        let legacy = v.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = if legacy {
                Some(if ip.address.contains(':') { "6" } else { "4" }.to_string())
            } else {
                None
            };
        }
        self.cni_version = v.to_string();
        self
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn runtime_env_table() {
        let full = [
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let with = |cmd: &str, drop: &str| {
            let mut v: Vec<(&str, &str)> =
                full.iter().filter(|(k, _)| *k != drop).copied().collect();
            if !cmd.is_empty() {
                v.push(("CNI_COMMAND", cmd));
            }
            vars(&v)
        };
        // (vars, Ok(command) or Err(code))
        let cases: Vec<(HashMap<String, String>, Result<Command, u32>)> = vec![
            (with("ADD", ""), Ok(Command::Add)),
            (with("DEL", ""), Ok(Command::Del)),
            (with("DEL", "CNI_NETNS"), Ok(Command::Del)),
            (with("CHECK", ""), Ok(Command::Check)),
            (vars(&[("CNI_COMMAND", "VERSION")]), Ok(Command::Version)),
            (with("ADD", "CNI_NETNS"), Err(code::INVALID_ENV)),
            (with("CHECK", "CNI_NETNS"), Err(code::INVALID_ENV)),
            (with("ADD", "CNI_CONTAINERID"), Err(code::INVALID_ENV)),
            (with("DEL", "CNI_IFNAME"), Err(code::INVALID_ENV)),
            (with("ADD", "CNI_PATH"), Err(code::INVALID_ENV)),
            (with("", ""), Err(code::INVALID_ENV)),
            (with("FROB", ""), Err(code::INVALID_ENV)),
        ];
        for (v, want) in cases {
            let got = RuntimeEnv::from_vars(&v)
                .map(|e| e.command)
                .map_err(|e| e.code);
            assert_eq!(got, want, "{v:?}");
        }
        let env = RuntimeEnv::from_vars(&with("ADD", "")).unwrap();
        assert_eq!(env.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        assert_eq!(env.ifname, "eth0");
    }

    #[test]
    fn cni_args_table() {
        let cases: &[(&str, Result<Vec<(&str, &str)>, u32>)] = &[
            ("", Ok(vec![])),
            ("A=1", Ok(vec![("A", "1")])),
            ("A=1;B=x=y", Ok(vec![("A", "1"), ("B", "x=y")])),
            ("A=1;;", Ok(vec![("A", "1")])),
            ("A", Err(code::INVALID_ENV)),
        ];
        for (input, want) in cases {
            let got = parse_args(input).map_err(|e| e.code);
            let want = want.clone().map(|v| {
                v.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn version_check_table() {
        let cases: &[(&str, bool)] = &[
            ("1.0.0", true),
            ("0.4.0", true),
            ("0.3.1", true),
            ("0.3.0", true),
            ("0.2.0", false),
            ("1.1.0", false),
            ("", false),
        ];
        for (v, ok) in cases {
            let got = check_version(v);
            assert_eq!(got.is_ok(), *ok, "{v}");
            if let Err(e) = got {
                assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
            }
        }
    }

    #[test]
    fn error_and_version_json() {
        let e = CniError::new(code::INVALID_NETWORK_CONFIG, "bad subnet").with_details("x/99");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"x/99"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&CniError::new(999, "boom").to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"0.4.0","code":999,"msg":"boom"})
        );
        let v: serde_json::Value = serde_json::from_str(&version_json("1.0.0")).unwrap();
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
    }

    #[test]
    fn result_version_shapes() {
        let r = CniResult {
            cni_version: String::new(),
            interfaces: vec![],
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(2),
                version: None,
            }],
            routes: vec![],
            dns: Dns::default(),
        };
        let cases: &[(&str, Option<&str>)] =
            &[("1.0.0", None), ("0.4.0", Some("4")), ("0.3.1", Some("4"))];
        for (v, want) in cases {
            let out = r.clone().for_version(v);
            assert_eq!(out.cni_version, *v);
            assert_eq!(out.ips[0].version.as_deref(), *want, "{v}");
            let json = serde_json::to_value(&out).unwrap();
            assert_eq!(json["cniVersion"], *v);
            assert_eq!(json["ips"][0].get("version").is_some(), want.is_some());
        }
    }
}
