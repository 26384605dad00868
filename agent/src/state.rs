//! What the agent remembers across restarts, under its data directory, each
//! file written atomically (temp file, fsync, rename, fsync of the directory):
//!
//! - `instance.json` (0600): the identity `register` obtained.
//! - `state.json`: last known desired state (version and tasks), and per task
//!   what the agent observed and already reported (timestamps, exit codes,
//!   stop reasons, acked reports), plus tombstones of finished tasks so a stale
//!   desired state never makes the agent run a finished task again.
//! - `report-seq`: the next report sequence number, so sequence numbers keep
//!   increasing across restarts.
//!
//! **Architecture Invariant:** what *runs* is read from containerd's labels at
//! start-up; this file only adds what containerd cannot tell (what was
//! reported, why a task stopped, exit codes of containers already deleted).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use berth_api::TaskSpec;
use serde::{Deserialize, Serialize};

use crate::reconcile::TaskRecord;

pub const IDENTITY_FILE: &str = "instance.json";
pub const STATE_FILE: &str = "state.json";
pub const SEQ_FILE: &str = "report-seq";
pub const LOCK_FILE: &str = "agent.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not encode state: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("another berth-agent is already running with the data directory {0}")]
    Locked(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new
/// content, never a mix: write a temp file in the same directory with `mode`,
/// fsync it, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_string());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// An exclusive `flock` on `DATA_DIR/agent.lock`, held while the agent runs:
/// two agents driving the same data directory (and containerd namespace)
/// would start every task twice. Released when dropped or when the process dies.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: nix::fcntl::Flock<File>,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(StateError::Locked(data_dir.to_path_buf()))
            }
            Err((_, errno)) => Err(StateError::Io {
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }
}

/// The per-instance credentials and names `register` obtained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceIdentity {
    pub coordinator: String,
    pub instance_id: String,
    pub secret: String,
    pub container_instance_arn: String,
    pub cluster_arn: String,
}

impl InstanceIdentity {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(IDENTITY_FILE)
    }

    pub fn load(data_dir: &Path) -> Result<Option<Self>, StateError> {
        read_json(&Self::path(data_dir))
    }

    /// Store with mode 0600: the secret authenticates this instance.
    pub fn save(&self, data_dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(StateError::Encode)?;
        write_atomic(&Self::path(data_dir), &bytes, 0o600)
    }
}

/// The reconciler's durable state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// Version of the last desired state applied (0 = none yet).
    pub desired_version: u64,
    /// The last desired state; `None` until the first poll answered.
    pub desired: Option<Vec<TaskSpec>>,
    /// Tasks the agent knows about (running, stopping, or stopped but not yet
    /// forgotten), by task ARN.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Finished and forgotten tasks, by ARN, with the time they were forgotten.
    pub tombstones: BTreeMap<String, f64>,
}

/// Load/save of `state.json`.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(STATE_FILE),
        }
    }

    pub fn load(&self) -> Result<AgentState, StateError> {
        Ok(read_json(&self.path)?.unwrap_or_default())
    }

    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(StateError::Encode)?;
        write_atomic(&self.path, &bytes, 0o600)
    }
}

/// The next report sequence number, persisted before a report carrying it is sent.
#[derive(Debug, Clone)]
pub struct SeqFile {
    path: PathBuf,
}

impl SeqFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(SEQ_FILE),
        }
    }

    /// The next sequence number to use (1 on a fresh data directory).
    pub fn load(&self) -> Result<u64, StateError> {
        Ok(read_json::<u64>(&self.path)?.unwrap_or(1).max(1))
    }

    pub fn store(&self, next: u64) -> Result<(), StateError> {
        write_atomic(&self.path, next.to_string().as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_is_private_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(InstanceIdentity::load(dir.path()).expect("load"), None);
        let id = InstanceIdentity {
            coordinator: "http://127.0.0.1:1".into(),
            instance_id: "mi-0123".into(),
            secret: "s3cret".into(),
            container_instance_arn: "arn:aws:ecs:r:1:container-instance/c/x".into(),
            cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
        };
        id.save(dir.path()).expect("save");
        let mode = std::fs::metadata(InstanceIdentity::path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(InstanceIdentity::load(dir.path()).expect("load"), Some(id));
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(IDENTITY_FILE)]);
    }

    #[test]
    fn data_dir_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        assert!(matches!(
            DataDirLock::acquire(dir.path()),
            Err(StateError::Locked(_))
        ));
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }

    #[test]
    fn seq_starts_at_one_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seq = SeqFile::new(dir.path());
        assert_eq!(seq.load().expect("load"), 1);
        seq.store(42).expect("store");
        assert_eq!(SeqFile::new(dir.path()).load().expect("load"), 42);
    }

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("load"), AgentState::default());
        let mut state = AgentState {
            desired_version: 7,
            desired: Some(vec![]),
            ..Default::default()
        };
        state.tombstones.insert("arn:t".into(), 12.5);
        store.save(&state).expect("save");
        assert_eq!(store.load().expect("load"), state);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
