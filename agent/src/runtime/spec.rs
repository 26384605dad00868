//! The OCI runtime spec for one container: containerd 1.6's default Linux
//! spec (`oci.populateDefaultUnixSpec`: capabilities, masked and readonly
//! paths, mounts, rlimits, namespaces, deny-all device cgroup) with a
//! [`CreateRequest`](super::CreateRequest) applied on top, plus the pure
//! parsing needed to resolve a `user` against an image's `/etc/passwd` and
//! `/etc/group`, and to find an image's layer directories in snapshot mounts.
//!
//! Everything here except [`host_devices`], [`all_capabilities`] and
//! [`read_image_file`] is pure and table-tested; those three read the host or
//! an unpacked image and are kept small.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::NetworkNamespace;

/// OCI runtime-spec version containerd 1.6 writes.
const OCI_VERSION: &str = "1.0.2-dev";

/// `PATH` containerd puts in every spec unless the process env sets one.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd 1.6 `defaultUnixCaps()`.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// containerd 1.6 default masked paths.
pub const DEFAULT_MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// containerd 1.6 default readonly paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability name by number (index = capability number), as the
/// kernel's `include/uapi/linux/capability.h` numbers them. Privileged
/// containers get all of them up to `/proc/sys/kernel/cap_last_cap`.
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("user {0:?}: empty user name")]
    EmptyUser(String),
    #[error("user {user:?}: no such user in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("user {user:?}: no such group {group:?} in the image's /etc/group")]
    UnknownGroup { user: String, group: String },
    #[error("user {user:?}: the image has no /etc/passwd to resolve a name in")]
    NoPasswd { user: String },
}

/// A `user` field split into its parts; names still need an `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    /// `uid:gid`, both numeric: needs nothing from the image.
    Ids { uid: u32, gid: u32 },
    /// Anything else (`name`, `uid`, `name:group`, `uid:group`, `name:gid`):
    /// the image's `/etc/passwd` (and `/etc/group`) decide.
    Lookup { user: String, group: Option<String> },
}

impl UserSpec {
    /// Parse the ECS/Docker `user` syntax `user[:group]`.
    pub fn parse(raw: &str) -> Result<Self, SpecError> {
        let (user, group) = match raw.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (raw, None),
        };
        if user.is_empty() {
            return Err(SpecError::EmptyUser(raw.to_string()));
        }
        if let (Ok(uid), Some(Ok(gid))) = (user.parse::<u32>(), group.map(str::parse::<u32>)) {
            return Ok(UserSpec::Ids { uid, gid });
        }
        Ok(UserSpec::Lookup {
            user: user.to_string(),
            group: group.filter(|g| !g.is_empty()).map(str::to_string),
        })
    }

    pub fn needs_image_files(&self) -> bool {
        matches!(self, UserSpec::Lookup { .. })
    }
}

/// Resolve a [`UserSpec`] to `(uid, gid)` with the image's `/etc/passwd` and
/// `/etc/group` contents (None when the image has no such file).
///
/// As Docker and containerd do: a numeric uid missing from passwd is still
/// valid (gid 0 unless given); a name must exist.
pub fn resolve_user(
    spec: &UserSpec,
    passwd: Option<&str>,
    group_file: Option<&str>,
) -> Result<(u32, u32), SpecError> {
    let (user, group) = match spec {
        UserSpec::Ids { uid, gid } => return Ok((*uid, *gid)),
        UserSpec::Lookup { user, group } => (user, group),
    };
    let entries = passwd.map(parse_passwd).unwrap_or_default();
    let found = match user.parse::<u32>() {
        Ok(uid) => entries.iter().find(|e| e.uid == uid).cloned(),
        Err(_) => entries.iter().find(|e| &e.name == user).cloned(),
    };
    let (uid, primary_gid) = match (found, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid),
        (None, Ok(uid)) => (uid, 0),
        (None, Err(_)) if passwd.is_none() => {
            return Err(SpecError::NoPasswd { user: user.clone() })
        }
        (None, Err(_)) => return Err(SpecError::UnknownUser { user: user.clone() }),
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_file
                .map(parse_group)
                .unwrap_or_default()
                .into_iter()
                .find(|(name, _)| name == g)
                .map(|(_, gid)| gid)
                .ok_or_else(|| SpecError::UnknownGroup {
                    user: user.clone(),
                    group: g.clone(),
                })?,
        },
    };
    Ok((uid, gid))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// `name:x:uid:gid:gecos:home:shell` lines; malformed lines are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            let _password = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// `name:x:gid:members` lines; malformed lines are skipped.
fn parse_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            let _password = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then(|| (name.to_string(), gid))
        })
        .collect()
}

/// The directories that make up a rootfs, topmost first, from the mounts a
/// snapshotter returned (overlay `upperdir`/`lowerdir=a:b`, or a bind mount).
pub fn rootfs_layer_dirs(mounts: &[(String, String, Vec<String>)]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (kind, source, options) in mounts {
        match kind.as_str() {
            "bind" | "rbind" => dirs.push(PathBuf::from(source)),
            "overlay" => {
                if let Some(upper) = options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                    dirs.push(PathBuf::from(upper));
                }
                if let Some(lower) = options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
                    dirs.extend(
                        lower
                            .split(':')
                            .filter(|d| !d.is_empty())
                            .map(PathBuf::from),
                    );
                }
            }
            _ => {}
        }
    }
    dirs
}

/// Read `rel` (e.g. `etc/passwd`) from the topmost layer directory that has
/// it as a regular file. Symlinks are refused rather than followed, since
/// they would resolve against the host's root. At most 1 MiB is read.
pub fn read_image_file(dirs: &[PathBuf], rel: &str) -> Option<String> {
    for dir in dirs {
        let path = dir.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() && meta.len() <= 1 << 20 => {
                return std::fs::read_to_string(&path).ok();
            }
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// One host device node, for privileged containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// All device nodes under the host's `/dev`, skipping what containerd's
/// `HostDevices` skips (`pts`, `shm`, `fd`, `mqueue`, `console`).
pub fn host_devices() -> Vec<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(dir: &Path, out: &mut Vec<HostDevice>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let name = entry.file_name();
                let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !skip.iter().any(|s| name == *s) {
                    walk(&path, out);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let rdev = meta.rdev();
            out.push(HostDevice {
                path: path.to_string_lossy().into_owned(),
                kind,
                major: nix::sys::stat::major(rdev),
                minor: nix::sys::stat::minor(rdev),
                file_mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every capability the agent itself may grant (for privileged containers):
/// its bounding set, as containerd's `WithAllCurrentCapabilities` does. In a
/// restricted environment asking for more makes runc fail with EPERM.
pub fn all_capabilities() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match bounding_mask(&status) {
        Some(mask) => capabilities_from_mask(mask),
        None => {
            let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(CAPABILITY_NAMES.len() - 1);
            capabilities_up_to(last)
        }
    }
}

/// The `CapBnd:` mask from `/proc/<pid>/status` text.
fn bounding_mask(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Capability names for the bits set in `mask` (unknown bits ignored).
fn capabilities_from_mask(mask: u64) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

fn capabilities_up_to(last: usize) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .take(last.saturating_add(1))
        .map(|s| s.to_string())
        .collect()
}

/// Merge `overrides` (`KEY=value`) over `base`: same key replaces in place,
/// new keys append, order otherwise kept (containerd's `replaceOrAppendEnvValues`).
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    fn key(e: &str) -> &str {
        e.split_once('=').map(|(k, _)| k).unwrap_or(e)
    }
    let mut out: Vec<String> = base.to_vec();
    for o in overrides {
        match out.iter_mut().find(|e| key(e) == key(o)) {
            Some(slot) => *slot = o.clone(),
            None => out.push(o.clone()),
        }
    }
    out
}

/// Everything the spec depends on, already resolved (no I/O left to do).
#[derive(Debug, Clone, PartialEq)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: Option<String>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub cgroups_path: String,
    pub cpu_shares: Option<u64>,
    pub memory_limit: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub network: NetworkNamespace,
    /// Only used when `privileged`.
    pub host_devices: Vec<HostDevice>,
    /// Only used when `privileged`.
    pub all_capabilities: Vec<String>,
}

/// The cgroup path a container lives under (cgroupfs driver, v1 or v2).
pub fn cgroups_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// Build the OCI runtime spec as JSON (what containerd stores in
/// `Container.spec` under type `types.containerd.io/opencontainers/runtime-spec/1/Spec`).
pub fn build_spec(input: &SpecInput) -> Value {
    let caps: Vec<String> = if input.privileged {
        input.all_capabilities.clone()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    let env = merge_env(&[DEFAULT_PATH_ENV.to_string()], &input.env);
    let cwd = if input.cwd.is_empty() {
        "/"
    } else {
        &input.cwd
    };

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &input.network {
        NetworkNamespace::Host => {}
        NetworkNamespace::New => namespaces.push(json!({"type": "network"})),
        NetworkNamespace::Path(p) => {
            namespaces.push(json!({"type": "network", "path": p.to_string_lossy()}))
        }
    }

    // Privileged containers see sysfs and cgroupfs writable, as containerd's
    // WithWriteableSysfs / WithWriteableCgroupfs do.
    let sys_opts = if input.privileged {
        json!(["nosuid", "noexec", "nodev", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let cgroup_opts = if input.privileged {
        json!(["nosuid", "noexec", "nodev", "relatime", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "relatime", "ro"])
    };
    let mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": cgroup_opts},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ]);

    let mut resources = serde_json::Map::new();
    if input.privileged {
        resources.insert("devices".into(), json!([{"allow": true, "access": "rwm"}]));
    } else {
        resources.insert("devices".into(), json!([{"allow": false, "access": "rwm"}]));
    }
    // 0 means "no CPU reservation" (ECS `cpu: 0`): leave the runtime default.
    // The kernel's minimum is 2.
    if let Some(shares) = input.cpu_shares.filter(|s| *s > 0).map(|s| s.max(2)) {
        resources.insert("cpu".into(), json!({"shares": shares}));
    }
    let mut memory = serde_json::Map::new();
    if let Some(limit) = input.memory_limit.filter(|l| *l > 0) {
        memory.insert("limit".into(), json!(limit));
    }
    if let Some(res) = input.memory_reservation.filter(|r| *r > 0) {
        memory.insert("reservation".into(), json!(res));
    }
    if !memory.is_empty() {
        resources.insert("memory".into(), Value::Object(memory));
    }

    let mut linux = serde_json::Map::new();
    linux.insert("resources".into(), Value::Object(resources));
    linux.insert("cgroupsPath".into(), json!(input.cgroups_path));
    linux.insert("namespaces".into(), Value::Array(namespaces));
    if input.privileged {
        let devices: Vec<Value> = input
            .host_devices
            .iter()
            .map(|d| {
                json!({
                    "path": d.path,
                    "type": d.kind.to_string(),
                    "major": d.major,
                    "minor": d.minor,
                    "fileMode": d.file_mode,
                    "uid": d.uid,
                    "gid": d.gid,
                })
            })
            .collect();
        linux.insert("devices".into(), Value::Array(devices));
    } else {
        linux.insert("maskedPaths".into(), json!(DEFAULT_MASKED_PATHS));
        linux.insert("readonlyPaths".into(), json!(DEFAULT_READONLY_PATHS));
    }

    let mut spec = json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": input.uid, "gid": input.gid},
            "args": input.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": input.readonly_rootfs},
        "mounts": mounts,
        "linux": Value::Object(linux),
    });
    if let (Some(h), Value::Object(obj)) = (&input.hostname, &mut spec) {
        obj.insert("hostname".into(), json!(h));
    }
    spec
}

/// Labels as containerd stores them.
pub fn labels_map(labels: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

    fn input() -> SpecInput {
        SpecInput {
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["FOO=bar".into()],
            cwd: "/work".into(),
            uid: 0,
            gid: 0,
            hostname: None,
            privileged: false,
            readonly_rootfs: false,
            cgroups_path: cgroups_path("c1"),
            cpu_shares: Some(256),
            memory_limit: Some(64 << 20),
            memory_reservation: Some(32 << 20),
            network: NetworkNamespace::New,
            host_devices: vec![HostDevice {
                path: "/dev/null".into(),
                kind: 'c',
                major: 1,
                minor: 3,
                file_mode: 0o666,
                uid: 0,
                gid: 0,
            }],
            all_capabilities: capabilities_up_to(40),
        }
    }

    fn parse(v: &Value) -> Spec {
        serde_json::from_value(v.clone()).expect("spec must deserialize as an OCI spec")
    }

    #[test]
    fn default_spec_matches_containerd_defaults() {
        let spec = parse(&build_spec(&input()));
        let process = spec.process().as_ref().expect("process");
        let caps = process.capabilities().as_ref().expect("caps");
        let bounding = caps.bounding().as_ref().expect("bounding");
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        for cap in [
            Capability::Chown,
            Capability::NetBindService,
            Capability::Kill,
        ] {
            assert!(bounding.contains(&cap), "{cap:?} missing");
        }
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert_eq!(process.args().as_deref(), Some(&input().args[..]));
        assert_eq!(process.cwd(), Path::new("/work"));
        let env = process.env().as_ref().expect("env");
        assert_eq!(
            env,
            &vec![DEFAULT_PATH_ENV.to_string(), "FOO=bar".to_string()]
        );
        assert_eq!(process.no_new_privileges(), Some(true));

        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.masked_paths().as_ref().expect("masked").len(),
            DEFAULT_MASKED_PATHS.len()
        );
        assert!(linux
            .readonly_paths()
            .as_ref()
            .expect("ro")
            .contains(&"/proc/sys".to_string()));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/c1"))
        );
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(res.cpu().as_ref().and_then(|c| c.shares()), Some(256));
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(64 << 20)
        );
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.reservation()),
            Some(32 << 20)
        );
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .expect("ns")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Network));
        assert!(linux.devices().is_none());

        let dests: Vec<String> = spec
            .mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(dests.contains(&d.to_string()), "{d} missing");
        }
        let rl = process.rlimits().as_ref().expect("rlimits");
        assert_eq!(rl.len(), 1);
        assert_eq!(rl[0].hard(), 1024);
        assert!(spec.hostname().is_none());
    }

    #[test]
    fn resource_edge_values() {
        type Case = (Option<u64>, Option<i64>, Option<u64>, Option<i64>);
        let cases: Vec<Case> = vec![
            (Some(0), Some(0), None, None),
            (Some(1), Some(-1), Some(2), None),
            (Some(1024), Some(128 << 20), Some(1024), Some(128 << 20)),
            (None, None, None, None),
        ];
        for (shares, limit, want_shares, want_limit) in cases {
            let mut i = input();
            i.cpu_shares = shares;
            i.memory_limit = limit;
            i.memory_reservation = None;
            let spec = parse(&build_spec(&i));
            let res = spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().clone())
                .expect("resources");
            assert_eq!(res.cpu().as_ref().and_then(|c| c.shares()), want_shares);
            assert_eq!(res.memory().as_ref().and_then(|m| m.limit()), want_limit);
        }
    }

    #[test]
    fn network_namespace_modes() {
        let cases: Vec<(NetworkNamespace, Option<Option<&str>>)> = vec![
            (NetworkNamespace::Host, None),
            (NetworkNamespace::New, Some(None)),
            (
                NetworkNamespace::Path("/var/run/netns/t1".into()),
                Some(Some("/var/run/netns/t1")),
            ),
        ];
        for (mode, expected) in cases {
            let mut i = input();
            i.network = mode.clone();
            let spec = parse(&build_spec(&i));
            let ns = spec
                .linux()
                .as_ref()
                .and_then(|l| l.namespaces().clone())
                .unwrap_or_default();
            let net = ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network);
            let got = net.map(|n| n.path().as_ref().map(|p| p.to_string_lossy().into_owned()));
            let expected = expected.map(|o| o.map(str::to_string));
            assert_eq!(got, expected, "mode {mode:?}");
        }
    }

    #[test]
    fn privileged_readonly_hostname() {
        let mut i = input();
        i.privileged = true;
        i.readonly_rootfs = true;
        i.hostname = Some("web-1".into());
        let spec = parse(&build_spec(&i));
        let caps = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .and_then(|c| c.bounding().clone())
            .expect("caps");
        assert_eq!(caps.len(), 41);
        assert!(caps.contains(&Capability::SysAdmin));
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.masked_paths().is_none());
        assert_eq!(linux.devices().as_ref().map(|d| d.len()), Some(1));
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("web-1"));
        let allow = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .expect("device rules");
        assert!(allow[0].allow());
    }

    #[test]
    fn env_merge_table() {
        let cases: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = vec![
            (vec!["PATH=/bin"], vec![], vec!["PATH=/bin"]),
            (vec!["PATH=/bin"], vec!["PATH=/x"], vec!["PATH=/x"]),
            (
                vec!["A=1", "B=2"],
                vec!["B=3", "C=4"],
                vec!["A=1", "B=3", "C=4"],
            ),
            (vec![], vec!["X="], vec!["X="]),
        ];
        for (base, over, want) in cases {
            let s = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
            assert_eq!(merge_env(&s(base), &s(over)), s(want));
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nnobody:x:65534:65534:nobody:/:/bin/false\nweb:x:1000:1001::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nwww:x:33:web\n";

    #[test]
    fn user_parse_table() {
        let cases = vec![
            ("0:0", Ok(UserSpec::Ids { uid: 0, gid: 0 })),
            ("1000:33", Ok(UserSpec::Ids { uid: 1000, gid: 33 })),
            (
                "1000",
                Ok(UserSpec::Lookup {
                    user: "1000".into(),
                    group: None,
                }),
            ),
            (
                "web:www",
                Ok(UserSpec::Lookup {
                    user: "web".into(),
                    group: Some("www".into()),
                }),
            ),
            (":5", Err(SpecError::EmptyUser(":5".into()))),
            ("", Err(SpecError::EmptyUser("".into()))),
        ];
        for (raw, want) in cases {
            assert_eq!(UserSpec::parse(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn user_resolve_table() {
        type Case<'a> = (&'a str, Option<&'a str>, Result<(u32, u32), SpecError>);
        let cases: Vec<Case> = vec![
            ("nobody", Some(PASSWD), Ok((65534, 65534))),
            ("web", Some(PASSWD), Ok((1000, 1001))),
            ("web:www", Some(PASSWD), Ok((1000, 33))),
            ("web:7", Some(PASSWD), Ok((1000, 7))),
            ("1000", Some(PASSWD), Ok((1000, 1001))),
            ("4242", Some(PASSWD), Ok((4242, 0))),
            ("4242", None, Ok((4242, 0))),
            ("5:5", None, Ok((5, 5))),
            (
                "ghost",
                Some(PASSWD),
                Err(SpecError::UnknownUser {
                    user: "ghost".into(),
                }),
            ),
            (
                "ghost",
                None,
                Err(SpecError::NoPasswd {
                    user: "ghost".into(),
                }),
            ),
            (
                "web:staff",
                Some(PASSWD),
                Err(SpecError::UnknownGroup {
                    user: "web".into(),
                    group: "staff".into(),
                }),
            ),
        ];
        for (raw, passwd, want) in cases {
            let spec = UserSpec::parse(raw).expect("parse");
            assert_eq!(resolve_user(&spec, passwd, Some(GROUP)), want, "{raw:?}");
        }
    }

    #[test]
    fn rootfs_dirs_from_mounts() {
        let overlay = (
            "overlay".to_string(),
            "overlay".to_string(),
            vec![
                "index=off".to_string(),
                "workdir=/s/3/work".to_string(),
                "upperdir=/s/3/fs".to_string(),
                "lowerdir=/s/2/fs:/s/1/fs".to_string(),
            ],
        );
        assert_eq!(
            rootfs_layer_dirs(&[overlay]),
            vec![
                PathBuf::from("/s/3/fs"),
                PathBuf::from("/s/2/fs"),
                PathBuf::from("/s/1/fs")
            ]
        );
        let bind = (
            "bind".to_string(),
            "/s/1/fs".to_string(),
            vec!["ro".to_string(), "rbind".to_string()],
        );
        assert_eq!(rootfs_layer_dirs(&[bind]), vec![PathBuf::from("/s/1/fs")]);
        assert!(rootfs_layer_dirs(&[]).is_empty());
    }

    #[test]
    fn read_image_file_prefers_top_layer_and_refuses_symlinks() {
        let top = tempfile::tempdir().expect("tmp");
        let low = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(low.path().join("etc")).expect("mkdir");
        std::fs::write(low.path().join("etc/passwd"), "low").expect("write");
        let dirs = vec![top.path().to_path_buf(), low.path().to_path_buf()];
        assert_eq!(read_image_file(&dirs, "etc/passwd").as_deref(), Some("low"));
        std::fs::create_dir_all(top.path().join("etc")).expect("mkdir");
        std::fs::write(top.path().join("etc/passwd"), "top").expect("write");
        assert_eq!(read_image_file(&dirs, "etc/passwd").as_deref(), Some("top"));
        std::fs::remove_file(top.path().join("etc/passwd")).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", top.path().join("etc/passwd")).expect("ln");
        assert_eq!(read_image_file(&dirs, "etc/passwd"), None);
    }

    #[test]
    fn capabilities_from_bounding_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n";
        let mask = bounding_mask(status).expect("mask");
        let caps = capabilities_from_mask(mask);
        assert_eq!(caps.len(), 40);
        assert!(
            !caps.contains(&"CAP_SYS_RESOURCE".to_string()),
            "bit 24 is clear"
        );
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(
            capabilities_from_mask(0xa80425fb).len(),
            DEFAULT_CAPABILITIES.len()
        );
        let mut defaults: Vec<String> =
            DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        defaults.sort();
        let mut from_mask = capabilities_from_mask(0xa80425fb);
        from_mask.sort();
        assert_eq!(from_mask, defaults);
        assert_eq!(bounding_mask("CapBnd:\tzz\n"), None);
        assert_eq!(bounding_mask(""), None);
    }

    #[test]
    fn capability_names_by_number() {
        assert_eq!(capabilities_up_to(0), vec!["CAP_CHOWN".to_string()]);
        assert_eq!(capabilities_up_to(40).len(), 41);
        assert_eq!(capabilities_up_to(100).len(), 41);
        assert_eq!(capabilities_up_to(21)[21], "CAP_SYS_ADMIN");
    }
}
