//! Settings of `berth-agent run`: command-line flags (which clap also reads
//! from `BERTH_*` environment variables) merged over an optional JSON config
//! file, merged over defaults. Flags override the file: scalar flags replace
//! the file's value, `--registry-auth` replaces the file's entry for the same
//! registry, and `--insecure-registry` adds to the file's list.
//!
//! Config file example:
//! ```json
//! {"dataDir": "/var/lib/berth-agent", "containerdSocket": "/run/containerd/containerd.sock",
//!  "namespace": "berth", "insecureRegistries": ["10.0.0.5:5000"],
//!  "registryAuth": {"registry.example:443": "user:password"},
//!  "imagePullBehavior": "default"}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::runtime::RegistryConfig;

pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_NAMESPACE: &str = "berth";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry auth {0:?} is not HOST=USER:PASSWORD")]
    BadRegistryAuth(String),
    #[error(
        "no data directory: pass --data-dir (or BERTH_DATA_DIR, or dataDir in the config file)"
    )]
    NoDataDir,
    #[error("image pull behavior {0:?} is not one of default, always, once, prefer-cached")]
    BadPullBehavior(String),
}

/// The config file's settings (all optional).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub containerd_socket: Option<PathBuf>,
    pub namespace: Option<String>,
    /// Overrides the coordinator URL stored at registration.
    pub coordinator: Option<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Registry `host[:port]` → `user:password`.
    #[serde(default)]
    pub registry_auth: BTreeMap<String, String>,
    /// `default`, `once` or `prefer-cached` (ECS_IMAGE_PULL_BEHAVIOR).
    pub image_pull_behavior: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What the flags (and environment) said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFlags {
    pub data_dir: Option<PathBuf>,
    pub containerd_socket: Option<PathBuf>,
    pub namespace: Option<String>,
    pub coordinator: Option<String>,
    pub insecure_registries: Vec<String>,
    /// `HOST=USER:PASSWORD` entries.
    pub registry_auth: Vec<String>,
    pub image_pull_behavior: Option<String>,
}

/// The effective settings.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub data_dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub namespace: String,
    pub coordinator: Option<String>,
    pub registries: RegistryConfig,
    pub pull_behavior: PullBehavior,
}

/// When the agent asks the registry about an image (ECS_IMAGE_PULL_BEHAVIOR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullBehavior {
    /// Always ask the registry (a moved tag is pulled); use the cached image
    /// if the registry cannot answer. ECS's default.
    #[default]
    Default,
    /// Use an image already on the host without asking the registry (`once`
    /// and `prefer-cached` in ECS; they differ only in image cleanup, which
    /// this agent does not do).
    PreferCached,
}

impl std::str::FromStr for PullBehavior {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" | "always" => Ok(PullBehavior::Default),
            "once" | "prefer-cached" => Ok(PullBehavior::PreferCached),
            other => Err(ConfigError::BadPullBehavior(other.to_string())),
        }
    }
}

/// `HOST=USER:PASSWORD` → (host, (user, password)); the password may contain `:`.
pub fn parse_registry_auth(arg: &str) -> Result<(String, (String, String)), ConfigError> {
    let bad = || ConfigError::BadRegistryAuth(redact(arg));
    let (host, creds) = arg.split_once('=').ok_or_else(bad)?;
    let (user, password) = creds.split_once(':').ok_or_else(bad)?;
    if host.is_empty() || user.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), (user.to_string(), password.to_string())))
}

/// Never echo a password back in an error message.
fn redact(arg: &str) -> String {
    match arg.split_once(':') {
        Some((head, _)) => format!("{head}:***"),
        None => arg.to_string(),
    }
}

pub fn merge(flags: RunFlags, file: FileConfig) -> Result<RunSettings, ConfigError> {
    let data_dir = flags
        .data_dir
        .or(file.data_dir)
        .ok_or(ConfigError::NoDataDir)?;
    let mut insecure = file.insecure_registries;
    for r in flags.insecure_registries {
        if !insecure.contains(&r) {
            insecure.push(r);
        }
    }
    let mut auth = BTreeMap::new();
    for (host, creds) in file.registry_auth {
        let (_, pair) = parse_registry_auth(&format!("{host}={creds}"))?;
        auth.insert(host, pair);
    }
    for arg in &flags.registry_auth {
        let (host, pair) = parse_registry_auth(arg)?;
        auth.insert(host, pair);
    }
    Ok(RunSettings {
        data_dir,
        containerd_socket: flags
            .containerd_socket
            .or(file.containerd_socket)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINERD_SOCKET)),
        namespace: flags
            .namespace
            .or(file.namespace)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        coordinator: flags.coordinator.or(file.coordinator),
        registries: RegistryConfig { insecure, auth },
        pull_behavior: flags
            .image_pull_behavior
            .or(file.image_pull_behavior)
            .map(|b| b.parse())
            .transpose()?
            .unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::*;

    #[test]
    fn registry_auth_table() {
        let cases: &[(&str, Option<(&str, &str, &str)>)] = &[
            ("reg:5000=alice:pw", Some(("reg:5000", "alice", "pw"))),
            ("reg=bob:p:w=x", Some(("reg", "bob", "p:w=x"))),
            ("reg=carol:", Some(("reg", "carol", ""))),
            ("reg", None),
            ("reg=nopassword", None),
            ("=u:p", None),
            ("reg=:p", None),
        ];
        for (arg, expected) in cases {
            let got = parse_registry_auth(arg).ok();
            let expected =
                expected.map(|(h, u, p)| (h.to_string(), (u.to_string(), p.to_string())));
            assert_eq!(got, expected, "{arg}");
        }
        let err = parse_registry_auth("host=user")
            .expect_err("bad")
            .to_string();
        assert!(!err.contains("user:"), "{err}");
    }

    #[test]
    fn flags_override_file_over_defaults() {
        let file: FileConfig = serde_json::from_str(
            r#"{"dataDir": "/file", "namespace": "filens", "insecureRegistries": ["a:1"],
                "registryAuth": {"r:1": "fu:fp", "r:2": "x:y"}}"#,
        )
        .expect("valid");
        let s = merge(RunFlags::default(), file.clone()).expect("merge");
        assert_eq!(s.data_dir, PathBuf::from("/file"));
        assert_eq!(s.namespace, "filens");
        assert_eq!(
            s.containerd_socket,
            PathBuf::from(DEFAULT_CONTAINERD_SOCKET)
        );
        assert_eq!(s.registries.insecure, vec!["a:1"]);

        let flags = RunFlags {
            data_dir: Some("/flag".into()),
            containerd_socket: Some("/c.sock".into()),
            namespace: None,
            coordinator: Some("http://127.0.0.1:9".into()),
            insecure_registries: vec!["b:2".into(), "a:1".into()],
            registry_auth: vec!["r:1=u:p".into()],
            image_pull_behavior: None,
        };
        let s = merge(flags, file).expect("merge");
        assert_eq!(s.data_dir, PathBuf::from("/flag"));
        assert_eq!(s.containerd_socket, PathBuf::from("/c.sock"));
        assert_eq!(s.namespace, "filens");
        assert_eq!(s.coordinator.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.registries.insecure, vec!["a:1", "b:2"]);
        assert_eq!(
            s.registries.auth.get("r:1"),
            Some(&("u".to_string(), "p".to_string()))
        );
        assert_eq!(
            s.registries.auth.get("r:2"),
            Some(&("x".to_string(), "y".to_string()))
        );

        assert_eq!(s.pull_behavior, PullBehavior::Default);
        let cases = [
            (None, Some("once"), Ok(PullBehavior::PreferCached)),
            (Some("default"), Some("once"), Ok(PullBehavior::Default)),
            (Some("prefer-cached"), None, Ok(PullBehavior::PreferCached)),
            (Some("always"), None, Ok(PullBehavior::Default)),
            (Some("sometimes"), None, Err("sometimes")),
        ];
        for (flag, file, expected) in cases {
            let got = merge(
                RunFlags {
                    data_dir: Some("/d".into()),
                    image_pull_behavior: flag.map(str::to_string),
                    ..Default::default()
                },
                FileConfig {
                    image_pull_behavior: file.map(str::to_string),
                    ..Default::default()
                },
            );
            match (got, expected) {
                (Ok(s), Ok(b)) => assert_eq!(s.pull_behavior, b, "{flag:?} {file:?}"),
                (Err(ConfigError::BadPullBehavior(v)), Err(e)) => assert_eq!(v, e),
                (other, _) => panic!("{flag:?} {file:?}: {other:?}"),
            }
        }

        let none = merge(RunFlags::default(), FileConfig::default());
        assert!(matches!(none, Err(ConfigError::NoDataDir)));
        let defaults = merge(
            RunFlags {
                data_dir: Some("/d".into()),
                ..Default::default()
            },
            FileConfig::default(),
        )
        .expect("merge");
        assert_eq!(defaults.namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.json");
        std::fs::write(&path, r#"{"dataDir": "/d", "typo": 1}"#).expect("write");
        assert!(matches!(
            FileConfig::load(&path),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&path, r#"{"dataDir": "/d"}"#).expect("write");
        assert_eq!(
            FileConfig::load(&path).expect("load").data_dir,
            Some(PathBuf::from("/d"))
        );
    }
}
