//! The admin credentials file `DIR/credentials` (AWS shared-credentials format,
//! profile `[default]`): created with random keys (mode 0600) on first start,
//! or read when it already exists so operators and tests can choose the keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::Rng;

use crate::sigv4::AccessKey;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no [default] profile with aws_access_key_id and aws_secret_access_key")]
    Missing(String),
}

/// Parses the `[default]` profile of a shared-credentials file.
pub fn parse(text: &str) -> Option<AccessKey> {
    let mut in_default = false;
    let mut id = None;
    let mut secret = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            in_default = line[1..line.len() - 1].trim() == "default";
            continue;
        }
        if !in_default {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(AccessKey {
        access_key_id: id.filter(|s| !s.is_empty())?,
        secret_access_key: secret.filter(|s| !s.is_empty())?,
    })
}

fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// Reads `path`, or creates it with fresh random keys when absent.
pub fn load_or_create(path: &Path) -> Result<AccessKey, CredentialsError> {
    let shown = path.display().to_string();
    let io = |source| CredentialsError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(&text).ok_or_else(|| CredentialsError::Missing(shown.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let key = AccessKey {
        access_key_id: format!(
            "AKIA{}",
            random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        ),
        secret_access_key: random_from(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
        ),
    };
    let text = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key.access_key_id, key.secret_access_key
    );
    // Write to a temp file and rename, so a crash never leaves a torn file.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parse_table() {
        let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
            (
                "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
                Some(("AK", "SK")),
            ),
            (
                "[other]\naws_access_key_id=X\naws_secret_access_key=Y\n[default]\naws_access_key_id=AK\n# c\naws_secret_access_key=SK",
                Some(("AK", "SK")),
            ),
            ("[default]\naws_access_key_id = AK\n", None),
            ("[other]\naws_access_key_id=X\naws_secret_access_key=Y\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = parse(text);
            let got = got
                .as_ref()
                .map(|k| (k.access_key_id.as_str(), k.secret_access_key.as_str()));
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn creates_0600_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let first = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(first.access_key_id.starts_with("AKIA"));
        let again = load_or_create(&path).unwrap();
        assert_eq!(first, again);
    }
}
