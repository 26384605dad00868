//! Container log files under `DATA_DIR/logs/<task id>/`: size-based rotation
//! while containers run, and removal when a finished task is pruned.
//!
//! containerd's shim holds the log file open (appending) for the container's
//! whole life, so rotation is "copytruncate": the current content is copied to
//! `<file>.1` (older generations shift up to `keep`), then the file is
//! truncated in place. Output written between the copy and the truncate is
//! lost; that window is a few milliseconds per rotation.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Rotation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate a file once it is larger than this.
    pub max_bytes: u64,
    /// Rotated generations kept (`.1` … `.keep`).
    pub keep: u32,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogsError + '_ {
    move |source| LogsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn generation(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotate `path` if it is larger than the policy allows; returns whether it
/// rotated. A missing file is not an error (the container has not written yet).
pub fn rotate_if_needed(path: &Path, policy: RotationPolicy) -> Result<bool, LogsError> {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    };
    if size <= policy.max_bytes || policy.keep == 0 {
        return Ok(false);
    }
    for n in (1..policy.keep).rev() {
        let from = generation(path, n);
        if from.exists() {
            let to = generation(path, n + 1);
            fs::rename(&from, &to).map_err(io_err(&from))?;
        }
    }
    let first = generation(path, 1);
    fs::copy(path, &first).map_err(io_err(&first))?;
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .map_err(io_err(path))?;
    Ok(true)
}

/// Rotate every `*.log` file in the task log directories under `logs_dir`
/// whose task id is in `task_ids`. Collects errors and keeps going.
pub fn rotate_tasks(
    logs_dir: &Path,
    task_ids: &[String],
    policy: RotationPolicy,
) -> Vec<LogsError> {
    let mut errors = Vec::new();
    for id in task_ids {
        let dir = logs_dir.join(id);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(io_err(&dir)(e));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                if let Err(e) = rotate_if_needed(&path, policy) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

/// Remove a finished task's log directory (missing is fine).
pub fn remove_task_logs(logs_dir: &Path, task_id: &str) -> Result<(), LogsError> {
    if task_id.is_empty() || task_id.contains('/') || task_id == "." || task_id == ".." {
        return Ok(());
    }
    let dir = logs_dir.join(task_id);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_shifts_generations_and_truncates_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.stdout.log");
        let policy = RotationPolicy {
            max_bytes: 10,
            keep: 2,
        };
        // An appending writer, as the shim holds one.
        let mut writer = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        writer.write_all(b"0123456789").expect("write");
        assert!(
            !rotate_if_needed(&path, policy).expect("rotate"),
            "at the limit: kept"
        );
        writer.write_all(b"A").expect("write");
        assert!(rotate_if_needed(&path, policy).expect("rotate"));
        assert_eq!(
            fs::read(generation(&path, 1)).expect("gen1"),
            b"0123456789A"
        );
        assert_eq!(fs::metadata(&path).expect("stat").len(), 0);
        // The writer keeps appending at the start of the truncated file.
        writer.write_all(b"second generation").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"second generation");
        assert!(rotate_if_needed(&path, policy).expect("rotate"));
        writer.write_all(b"third generation!").expect("write");
        assert!(rotate_if_needed(&path, policy).expect("rotate"));
        assert_eq!(
            fs::read(generation(&path, 1)).expect("gen1"),
            b"third generation!"
        );
        assert_eq!(
            fs::read(generation(&path, 2)).expect("gen2"),
            b"second generation"
        );
        assert!(!generation(&path, 3).exists(), "only `keep` generations");
        assert!(!rotate_if_needed(&dir.path().join("missing.log"), policy).expect("missing"));
    }

    #[test]
    fn rotate_tasks_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task_dir = dir.path().join("t1");
        fs::create_dir_all(&task_dir).expect("mkdir");
        fs::write(task_dir.join("a.stdout.log"), vec![b'x'; 20]).expect("write");
        fs::write(task_dir.join("notes.txt"), vec![b'x'; 20]).expect("write");
        let policy = RotationPolicy {
            max_bytes: 10,
            keep: 1,
        };
        let errors = rotate_tasks(
            dir.path(),
            &["t1".to_string(), "absent".to_string()],
            policy,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(task_dir.join("a.stdout.log.1").exists());
        assert!(
            !task_dir.join("notes.txt.1").exists(),
            "only .log files rotate"
        );
        remove_task_logs(dir.path(), "t1").expect("remove");
        assert!(!task_dir.exists());
        remove_task_logs(dir.path(), "t1").expect("idempotent");
        remove_task_logs(dir.path(), "..").expect("refused silently");
        assert!(dir.path().exists());
    }
}
