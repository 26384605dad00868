//! The agent as a CNI runtime (spec 1.0): finds plugin binaries on the CNI
//! path, executes them with the `CNI_*` environment and the per-plugin
//! configuration on stdin, and runs a whole configuration list: ADD in order
//! (each plugin gets the previous result), DEL in reverse order with the
//! cached result, rolling back the plugins already added when one fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::plan::{self, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {0:?} not found on the CNI path {1}")]
    NotFound(String, String),
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    /// The plugin answered with a CNI error (or garbage) and a failing exit.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
    },
    #[error("CNI plugin {plugin} printed an unreadable result: {reason}")]
    BadResult { plugin: String, reason: String },
    #[error("CNI plugin {plugin} {command} did not finish within {after:?}; killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        after: Duration,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CniError>),
}

impl CniError {
    /// Will this fail the same way every time (the plugin rejected its
    /// configuration: CNI codes 1 incompatible version, 6 undecodable, 7
    /// invalid config)?
    pub fn is_permanent(&self) -> bool {
        match self {
            CniError::Plugin { code, .. } => matches!(code, 1 | 6 | 7),
            CniError::Plan(_) => true,
            CniError::Several(all) => all.iter().all(CniError::is_permanent),
            _ => false,
        }
    }
}

/// Who the plugins are invoked for.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub cni_path: Vec<PathBuf>,
    /// How long one plugin may run before it is killed.
    pub timeout: Duration,
}

impl Invocation {
    fn path_var(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Waits for `child` at most `limit`, reading its output meanwhile (so a
/// chatty plugin never blocks on a full pipe); kills it and answers `None`
/// when it overstays.
fn wait_bounded(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    use std::io::Read;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    }))
}

/// The first executable named `plugin_type` on the CNI path.
pub fn find_plugin(cni_path: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    cni_path
        .iter()
        .map(|d| d.join(plugin_type))
        .find(|p| p.is_file())
}

/// Runs one plugin; returns its parsed stdout (None when it printed nothing).
pub fn exec(
    inv: &Invocation,
    plugin_type: &str,
    command: &'static str,
    config: &Value,
) -> Result<Option<Value>, CniError> {
    let binary = find_plugin(&inv.cni_path, plugin_type)
        .ok_or_else(|| CniError::NotFound(plugin_type.to_string(), inv.path_var()))?;
    let exec_err = |source| CniError::Exec {
        plugin: plugin_type.to_string(),
        source,
    };
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_PATH", inv.path_var())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_err)?;
    let stdin = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe; its
        // exit status says what happened.
        let _ = pipe.write_all(&stdin);
    }
    let out = wait_bounded(child, inv.timeout).map_err(exec_err)?;
    let Some(out) = out else {
        return Err(CniError::Timeout {
            plugin: plugin_type.to_string(),
            command,
            after: inv.timeout,
        });
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = if text.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&text).ok()
    };
    if !out.status.success() {
        let (code, msg) = match &parsed {
            Some(v) => (
                v.get("code").and_then(Value::as_u64).unwrap_or(999),
                [v.get("msg"), v.get("details")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(": "),
            ),
            None => (
                999,
                format!(
                    "{} {}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ),
        };
        return Err(CniError::Plugin {
            plugin: plugin_type.to_string(),
            command,
            code,
            msg,
        });
    }
    match (parsed, text.trim().is_empty()) {
        (Some(v), _) => Ok(Some(v)),
        (None, true) => Ok(None),
        (None, false) => Err(CniError::BadResult {
            plugin: plugin_type.to_string(),
            reason: text.chars().take(200).collect(),
        }),
    }
}

/// ADD the whole list; on a failure, DEL what was added (best effort) and
/// return the failure. Returns the final result.
pub fn add_list(
    inv: &Invocation,
    conflist: &Value,
    runtime_config: &Value,
) -> Result<Value, CniError> {
    let types = plan::plugin_types(conflist);
    let mut prev: Option<Value> = None;
    for (i, ty) in types.iter().enumerate() {
        let config = plan::plugin_config(conflist, i, prev.as_ref(), runtime_config)?;
        match exec(inv, ty, "ADD", &config) {
            Ok(Some(result)) => prev = Some(result),
            Ok(None) => {
                let e = CniError::BadResult {
                    plugin: ty.clone(),
                    reason: "ADD printed no result".into(),
                };
                rollback(inv, conflist, runtime_config, prev.as_ref(), i + 1);
                return Err(e);
            }
            Err(e) => {
                rollback(inv, conflist, runtime_config, prev.as_ref(), i + 1);
                return Err(e);
            }
        }
    }
    prev.ok_or_else(|| CniError::BadResult {
        plugin: "(none)".into(),
        reason: "empty plugin list".into(),
    })
}

fn rollback(
    inv: &Invocation,
    conflist: &Value,
    runtime_config: &Value,
    prev: Option<&Value>,
    upto: usize,
) {
    if let Err(e) = del_prefix(inv, conflist, runtime_config, prev, upto) {
        tracing::warn!(container = %inv.container_id, error = %e, "rolling back a failed CNI ADD");
    }
}

/// DEL the whole list in reverse order, continuing past failures.
pub fn del_list(
    inv: &Invocation,
    conflist: &Value,
    runtime_config: &Value,
    cached: Option<&Value>,
) -> Result<(), CniError> {
    let n = plan::plugin_types(conflist).len();
    del_prefix(inv, conflist, runtime_config, cached, n)
}

fn del_prefix(
    inv: &Invocation,
    conflist: &Value,
    runtime_config: &Value,
    cached: Option<&Value>,
    upto: usize,
) -> Result<(), CniError> {
    let types = plan::plugin_types(conflist);
    let mut errors = Vec::new();
    for i in (0..upto.min(types.len())).rev() {
        let config = plan::plugin_config(conflist, i, cached, runtime_config)?;
        if let Err(e) = exec(inv, &types[i], "DEL", &config) {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CniError::Several(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A scripted plugin that appends its command and stdin to a log.
    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn inv(dir: &Path) -> Invocation {
        Invocation {
            container_id: "t1".into(),
            netns: PathBuf::from("/nonexistent/ns"),
            ifname: "eth0".into(),
            cni_path: vec![PathBuf::from("/nonexistent"), dir.to_path_buf()],
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn chain_passes_prev_result_and_rolls_back_on_failure() {
        let d = tempfile::tempdir().expect("tmp");
        let log = d.path().join("log");
        let l = log.display();
        script(
            d.path(),
            "one",
            &format!("echo \"one $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME\" >> {l}; cat > /dev/null; echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.0.0.2/24\"}}]}}'"),
        );
        script(
            d.path(),
            "two",
            &format!("echo \"two $CNI_COMMAND\" >> {l}; cat >> {l}; echo >> {l}; echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.0.0.2/24\"}}],\"dns\":{{}}}}'"),
        );
        script(
            d.path(),
            "bad",
            &format!("echo \"bad $CNI_COMMAND\" >> {l}; echo '{{\"code\":7,\"msg\":\"nope\",\"details\":\"why\"}}'; [ $CNI_COMMAND = DEL ] && exit 0; exit 1"),
        );
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "one"}, {"type": "two", "capabilities": {"portMappings": true}}]});
        let rc = json!({"portMappings": [{"hostPort": 1}]});
        let result = add_list(&inv(d.path()), &list, &rc).expect("add");
        assert_eq!(result["dns"], json!({}));
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.starts_with("one ADD t1 eth0\ntwo ADD\n"), "{text}");
        assert!(
            text.contains("\"prevResult\":{\"cniVersion\":\"1.0.0\",\"ips\""),
            "{text}"
        );
        assert!(
            text.contains("\"runtimeConfig\":{\"portMappings\":[{\"hostPort\":1}]}"),
            "{text}"
        );

        std::fs::remove_file(&log).expect("rm");
        let failing = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "one"}, {"type": "bad"}]});
        let err = add_list(&inv(d.path()), &failing, &rc).expect_err("fails");
        assert!(matches!(&err, CniError::Plugin { code: 7, .. }), "{err}");
        assert!(err.to_string().contains("nope: why"), "{err}");
        let text = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            ["one ADD t1 eth0", "bad ADD", "bad DEL", "one DEL t1 eth0"]
        );

        std::fs::remove_file(&log).expect("rm");
        del_list(&inv(d.path()), &list, &rc, Some(&result)).expect("del");
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.starts_with("two DEL\n"), "{text}");
        assert!(text.trim_end().ends_with("one DEL t1 eth0"), "{text}");
    }

    #[test]
    fn a_hanging_plugin_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().expect("tmp");
        script(d.path(), "hang", "exec sleep 30");
        let mut i = inv(d.path());
        i.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = exec(&i, "hang", "ADD", &json!({})).expect_err("timeout");
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_plugin_and_garbage_output() {
        let d = tempfile::tempdir().expect("tmp");
        script(d.path(), "garbage", "echo not-json");
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "absent"}]});
        let err = add_list(&inv(d.path()), &list, &json!({})).expect_err("missing");
        assert!(matches!(err, CniError::NotFound(..)), "{err}");
        let err = exec(&inv(d.path()), "garbage", "ADD", &json!({})).expect_err("garbage");
        assert!(matches!(err, CniError::BadResult { .. }), "{err}");
    }
}
