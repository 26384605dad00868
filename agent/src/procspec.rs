//! Pure translation of an ECS container definition (plus the pulled image's
//! config) into what the runtime needs: argv, environment, working directory,
//! user, CPU shares, memory limits, network namespace, container id, labels,
//! log paths, and the start order implied by `dependsOn`.
//!
//! Rules follow Docker's, which is what ECS relies on:
//! - `entryPoint` replaces the image `Entrypoint`, and then the image `Cmd` is
//!   dropped; `command` replaces the image `Cmd`.
//! - `environment` overrides image variables of the same name, in place, and
//!   appends the others; `PATH` gets Docker's default when neither sets it.
//! - CPU shares follow the ECS agent (≥ 1.2.0): `cpu` 0 or 1 (or unset) is
//!   passed as 2 shares, the kernel minimum; above 262144 is capped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_api::{ContainerSpec, TaskSpec};
use sha2::{Digest, Sha256};

use crate::runtime::{
    CreateRequest, ImageConfig, NetworkNamespace, LABEL_CLUSTER, LABEL_CONTAINER_NAME,
    LABEL_TASK_ARN, LABEL_TASK_FAMILY, LABEL_TASK_REVISION,
};

/// Docker's default `PATH` when neither image nor definition sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;
/// containerd rejects ids longer than this.
const MAX_CONTAINER_ID: usize = 76;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcSpecError {
    #[error("CannotStartContainerError: container {0}: no command specified (neither the image nor the definition has an entrypoint or command)")]
    NoCommand(String),
    #[error("CannotStartContainerError: container {container} depends on unknown container {dependency}")]
    UnknownDependency {
        container: String,
        dependency: String,
    },
    #[error("CannotStartContainerError: container dependencies form a cycle involving {0}")]
    DependencyCycle(String),
    #[error("CannotStartContainerError: container {container}: unsupported dependency condition {condition}")]
    UnsupportedCondition {
        container: String,
        condition: String,
    },
}

/// The merged process of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
}

/// Merge the image config with the container definition, Docker's way.
pub fn merge_process(
    image: &ImageConfig,
    def: &ContainerSpec,
) -> Result<ProcessSpec, ProcSpecError> {
    let (entrypoint, cmd): (&[String], &[String]) = match (&def.entry_point, &def.command) {
        (Some(ep), Some(cmd)) if !ep.is_empty() => (ep, cmd),
        (Some(ep), None) if !ep.is_empty() => (ep, &[]),
        (_, Some(cmd)) if !cmd.is_empty() => (&image.entrypoint, cmd),
        _ => (&image.entrypoint, &image.cmd),
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(ProcSpecError::NoCommand(def.name.clone()));
    }
    let mut env: Vec<String> = image.env.clone();
    for kv in &def.environment {
        if kv.name.is_empty() {
            continue;
        }
        let entry = format!("{}={}", kv.name, kv.value);
        let prefix = format!("{}=", kv.name);
        match env
            .iter_mut()
            .find(|e| e.starts_with(&prefix) || **e == kv.name)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = def
        .working_directory
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let user = def
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| image.user.clone().filter(|u| !u.is_empty()));
    Ok(ProcessSpec {
        args,
        env,
        cwd,
        user,
    })
}

/// ECS `cpu` units → CPU shares (see the module comment).
pub fn cpu_shares(cpu: u32) -> u64 {
    u64::from(cpu).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
}

/// The task id: the last `/`-separated segment of the task ARN.
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// Replace every character outside `[A-Za-z0-9_.-]` with `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// containerd id of a task's container: `<task id>-<container name>`,
/// sanitised to `[A-Za-z0-9_.-]`, starting with an alphanumeric, at most 76
/// characters (longer ids are cut and suffixed with a hash of the whole, so
/// distinct containers keep distinct ids).
pub fn container_id(task_arn: &str, container_name: &str) -> String {
    let raw = format!("{}-{}", task_id(task_arn), container_name);
    let mut id = sanitize(&raw);
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        id.insert(0, 'c');
    }
    if id.len() > MAX_CONTAINER_ID {
        let hash = hex::encode(Sha256::digest(raw.as_bytes()));
        id.truncate(MAX_CONTAINER_ID - 13);
        id.push('-');
        id.push_str(&hash[..12]);
    }
    id
}

/// A task's name in the agent's directories (logs, network records and
/// namespaces): its sanitised task id.
pub fn task_dir_name(task_arn: &str) -> String {
    sanitize(task_id(task_arn))
}

/// Name of a task's log directory under `DATA_DIR/logs`.
pub fn log_dir_name(task_arn: &str) -> String {
    task_dir_name(task_arn)
}

/// `DATA_DIR/logs/<task id>/<container>.{stdout,stderr}.log`.
pub fn log_paths(logs_dir: &Path, task_arn: &str, container_name: &str) -> (PathBuf, PathBuf) {
    let dir = logs_dir.join(log_dir_name(task_arn));
    let name = sanitize(container_name);
    (
        dir.join(format!("{name}.stdout.log")),
        dir.join(format!("{name}.stderr.log")),
    )
}

/// A `dependsOn` condition the start sequence waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The dependency has been started.
    Start,
    /// The dependency has exited (any code).
    Complete,
    /// The dependency has exited with code 0.
    Success,
    /// The dependency's health check has passed (it must have one).
    Healthy,
}

/// `START`, `COMPLETE`, `SUCCESS`, `HEALTHY`; anything else is refused.
pub fn parse_condition(container: &str, condition: &str) -> Result<Condition, ProcSpecError> {
    match condition {
        "START" => Ok(Condition::Start),
        "COMPLETE" => Ok(Condition::Complete),
        "SUCCESS" => Ok(Condition::Success),
        "HEALTHY" => Ok(Condition::Healthy),
        other => Err(ProcSpecError::UnsupportedCondition {
            container: container.to_string(),
            condition: other.to_string(),
        }),
    }
}

/// Indices of `containers` in an order where every container comes after the
/// containers it depends on; ties keep definition order.
pub fn start_order(containers: &[ContainerSpec]) -> Result<Vec<usize>, ProcSpecError> {
    let index: BTreeMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(containers.len());
    for c in containers {
        let mut these = Vec::new();
        for d in &c.depends_on {
            parse_condition(&c.name, &d.condition)?;
            match index.get(d.container_name.as_str()) {
                Some(&i) => these.push(i),
                None => {
                    return Err(ProcSpecError::UnknownDependency {
                        container: c.name.clone(),
                        dependency: d.container_name.clone(),
                    })
                }
            }
        }
        deps.push(these);
    }
    let mut placed = vec![false; containers.len()];
    let mut order = Vec::with_capacity(containers.len());
    while order.len() < containers.len() {
        let next =
            (0..containers.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let stuck = (0..containers.len())
                    .find(|&i| !placed[i])
                    .map(|i| containers[i].name.clone())
                    .unwrap_or_default();
                return Err(ProcSpecError::DependencyCycle(stuck));
            }
        }
    }
    Ok(order)
}

const MIB: i64 = 1024 * 1024;

/// Everything the runtime needs to create `def` of `task`.
pub fn create_request(
    task: &TaskSpec,
    def: &ContainerSpec,
    image: &ImageConfig,
    logs_dir: &Path,
    network: NetworkNamespace,
) -> Result<CreateRequest, ProcSpecError> {
    let process = merge_process(image, def)?;
    let mut labels: BTreeMap<String, String> = def.docker_labels.clone();
    labels.insert(LABEL_TASK_ARN.into(), task.task_arn.clone());
    labels.insert(LABEL_CONTAINER_NAME.into(), def.name.clone());
    labels.insert(LABEL_CLUSTER.into(), task.cluster_arn.clone());
    labels.insert(LABEL_TASK_FAMILY.into(), task.family.clone());
    labels.insert(LABEL_TASK_REVISION.into(), task.revision.to_string());
    let (stdout_path, stderr_path) = log_paths(logs_dir, &task.task_arn, &def.name);
    let hostname = match network {
        NetworkNamespace::Host => None,
        _ => def.hostname.clone().filter(|h| !h.is_empty()),
    };
    Ok(CreateRequest {
        id: container_id(&task.task_arn, &def.name),
        image: def.image.clone(),
        image_config: image.clone(),
        labels,
        args: process.args,
        env: process.env,
        cwd: process.cwd,
        user: process.user,
        cpu_shares: Some(cpu_shares(def.cpu)),
        memory_limit: def.memory.map(|m| i64::from(m) * MIB),
        memory_reservation: def.memory_reservation.map(|m| i64::from(m) * MIB),
        network,
        hostname,
        privileged: def.privileged.unwrap_or(false),
        readonly_rootfs: def.readonly_root_filesystem.unwrap_or(false),
        stdout_path,
        stderr_path,
    })
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // test tables
mod tests {
    use super::*;
    use berth_api::{ContainerDependency, KeyValuePair};

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            digest: "sha256:abc".into(),
            entrypoint: v(&["/entry"]),
            cmd: v(&["serve", "--port=80"]),
            env: v(&["PATH=/bin", "A=image"]),
            working_dir: Some("/srv".into()),
            user: Some("nobody".into()),
        }
    }

    #[test]
    fn argv_merge_follows_docker() {
        let bare = ImageConfig::default();
        let cases: Vec<(
            &str,
            ImageConfig,
            Option<Vec<String>>,
            Option<Vec<String>>,
            Option<Vec<&str>>,
        )> = vec![
            (
                "image only",
                image(),
                None,
                None,
                Some(vec!["/entry", "serve", "--port=80"]),
            ),
            (
                "command replaces cmd",
                image(),
                None,
                Some(v(&["x"])),
                Some(vec!["/entry", "x"]),
            ),
            (
                "entryPoint drops image cmd",
                image(),
                Some(v(&["/bin/sh"])),
                None,
                Some(vec!["/bin/sh"]),
            ),
            (
                "both given",
                image(),
                Some(v(&["/bin/sh", "-c"])),
                Some(v(&["echo hi"])),
                Some(vec!["/bin/sh", "-c", "echo hi"]),
            ),
            (
                "empty entryPoint is absent",
                image(),
                Some(vec![]),
                Some(v(&["y"])),
                Some(vec!["/entry", "y"]),
            ),
            (
                "empty command is absent",
                image(),
                None,
                Some(vec![]),
                Some(vec!["/entry", "serve", "--port=80"]),
            ),
            (
                "bare image with command",
                bare.clone(),
                None,
                Some(v(&["/bin/true"])),
                Some(vec!["/bin/true"]),
            ),
            ("nothing to run", bare, None, None, None),
        ];
        for (name, img, ep, cmd, expected) in cases {
            let def = ContainerSpec {
                name: "c".into(),
                entry_point: ep,
                command: cmd,
                ..Default::default()
            };
            let got = merge_process(&img, &def).map(|p| p.args).ok();
            let expected = expected.map(|e| v(&e));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn env_cwd_user_merge() {
        let kv = |n: &str, val: &str| KeyValuePair {
            name: n.into(),
            value: val.into(),
        };
        let cases: Vec<(
            &str,
            ImageConfig,
            Vec<KeyValuePair>,
            Option<&str>,
            Option<&str>,
            Vec<&str>,
            &str,
            Option<&str>,
        )> = vec![
            (
                "override in place and append",
                image(),
                vec![kv("A", "def"), kv("B", "new")],
                None,
                None,
                vec!["PATH=/bin", "A=def", "B=new"],
                "/srv",
                Some("nobody"),
            ),
            (
                "default PATH, root cwd",
                ImageConfig {
                    cmd: v(&["x"]),
                    ..Default::default()
                },
                vec![kv("X", "1")],
                None,
                None,
                vec![DEFAULT_PATH, "X=1"],
                "/",
                None,
            ),
            (
                "definition wins for cwd and user",
                image(),
                vec![],
                Some("/work"),
                Some("1000:1000"),
                vec!["PATH=/bin", "A=image"],
                "/work",
                Some("1000:1000"),
            ),
            (
                "value containing =",
                image(),
                vec![kv("A", "x=y")],
                Some(""),
                Some(""),
                vec!["PATH=/bin", "A=x=y"],
                "/srv",
                Some("nobody"),
            ),
        ];
        for (name, img, environment, cwd, user, env, exp_cwd, exp_user) in cases {
            let def = ContainerSpec {
                name: "c".into(),
                environment,
                working_directory: cwd.map(str::to_string),
                user: user.map(str::to_string),
                ..Default::default()
            };
            let p = merge_process(&img, &def).expect(name);
            assert_eq!(p.env, v(&env), "{name}");
            assert_eq!(p.cwd, exp_cwd, "{name}");
            assert_eq!(p.user.as_deref(), exp_user, "{name}");
        }
    }

    #[test]
    fn cpu_shares_table() {
        for (cpu, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (128, 128),
            (1024, 1024),
            (300_000, 262_144),
        ] {
            assert_eq!(cpu_shares(cpu), shares, "cpu {cpu}");
        }
    }

    #[test]
    fn container_ids_are_valid_for_containerd() {
        let arn =
            "arn:aws:ecs:us-east-1:123456789012:task/default/0123456789abcdef0123456789abcdef";
        let cases = [
            ("web", "0123456789abcdef0123456789abcdef-web"),
            ("my app/1", "0123456789abcdef0123456789abcdef-my_app_1"),
        ];
        for (name, expected) in cases {
            assert_eq!(container_id(arn, name), expected);
        }
        assert_eq!(container_id("task/_x", "y"), "c_x-y");
        let long = "n".repeat(200);
        let a = container_id(arn, &long);
        let b = container_id(arn, &format!("{long}2"));
        assert!(a.len() <= MAX_CONTAINER_ID && b.len() <= MAX_CONTAINER_ID);
        assert_ne!(a, b);
        assert_eq!(task_id(arn), "0123456789abcdef0123456789abcdef");
    }

    fn with_deps(name: &str, deps: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            depends_on: deps
                .iter()
                .map(|(n, c)| ContainerDependency {
                    container_name: n.to_string(),
                    condition: c.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn start_order_table() {
        let cases: Vec<(&str, Vec<ContainerSpec>, Result<Vec<usize>, ProcSpecError>)> = vec![
            (
                "no deps keeps order",
                vec![with_deps("a", &[]), with_deps("b", &[])],
                Ok(vec![0, 1]),
            ),
            (
                "dependency first",
                vec![
                    with_deps("app", &[("init", "SUCCESS")]),
                    with_deps("init", &[]),
                ],
                Ok(vec![1, 0]),
            ),
            (
                "chain",
                vec![
                    with_deps("c", &[("b", "START")]),
                    with_deps("b", &[("a", "COMPLETE")]),
                    with_deps("a", &[]),
                ],
                Ok(vec![2, 1, 0]),
            ),
            (
                "cycle",
                vec![
                    with_deps("a", &[("b", "START")]),
                    with_deps("b", &[("a", "START")]),
                ],
                Err(ProcSpecError::DependencyCycle("a".into())),
            ),
            (
                "unknown",
                vec![with_deps("a", &[("ghost", "START")])],
                Err(ProcSpecError::UnknownDependency {
                    container: "a".into(),
                    dependency: "ghost".into(),
                }),
            ),
            (
                "healthy orders after the dependency",
                vec![with_deps("a", &[("b", "HEALTHY")]), with_deps("b", &[])],
                Ok(vec![1, 0]),
            ),
            (
                "unknown condition",
                vec![with_deps("a", &[("b", "READY")]), with_deps("b", &[])],
                Err(ProcSpecError::UnsupportedCondition {
                    container: "a".into(),
                    condition: "READY".into(),
                }),
            ),
        ];
        for (name, containers, expected) in cases {
            assert_eq!(start_order(&containers), expected, "{name}");
        }
    }

    #[test]
    fn create_request_carries_limits_labels_and_logs() {
        let task = TaskSpec {
            task_arn: "arn:aws:ecs:r:1:task/c/abc".into(),
            cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
            task_definition_arn: "arn:aws:ecs:r:1:task-definition/fam:3".into(),
            family: "fam".into(),
            revision: 3,
            desired_status: berth_api::DesiredStatus::Running,
            network_mode: "none".into(),
            stop_reason: None,
            stop_code: None,
            containers: vec![],
            reserved_ports: vec![],
            awsvpc: None,
        };
        let def = ContainerSpec {
            name: "web".into(),
            image: "reg:5000/busybox:1".into(),
            memory: Some(64),
            memory_reservation: Some(32),
            cpu: 512,
            hostname: Some("box".into()),
            docker_labels: [("team".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let req = create_request(
            &task,
            &def,
            &image(),
            Path::new("/d/logs"),
            NetworkNamespace::New,
        )
        .expect("valid");
        assert_eq!(req.id, "abc-web");
        assert_eq!(req.memory_limit, Some(64 * MIB));
        assert_eq!(req.memory_reservation, Some(32 * MIB));
        assert_eq!(req.cpu_shares, Some(512));
        assert_eq!(req.network, NetworkNamespace::New);
        assert_eq!(req.hostname.as_deref(), Some("box"));
        assert_eq!(
            req.labels.get(LABEL_TASK_ARN).map(String::as_str),
            Some("arn:aws:ecs:r:1:task/c/abc")
        );
        assert_eq!(
            req.labels.get(LABEL_CONTAINER_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            req.labels.get(LABEL_TASK_REVISION).map(String::as_str),
            Some("3")
        );
        assert_eq!(req.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(req.stdout_path, PathBuf::from("/d/logs/abc/web.stdout.log"));
        assert_eq!(req.stderr_path, PathBuf::from("/d/logs/abc/web.stderr.log"));
    }
}
