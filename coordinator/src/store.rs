//! The durable store: an append-only log of decided commands plus periodic
//! snapshots of the model, in SQLite (WAL, `synchronous=FULL`).
//!
//! **Architecture Invariant:** the store knows nothing about entities. It keeps
//! opaque byte strings: log records keyed by a strictly increasing sequence
//! number, and at most one snapshot tagged with the sequence number it covers.
//! Every write is one SQLite transaction, so a `kill -9` at any moment either
//! keeps a batch entirely or loses it entirely, and nothing acknowledged (a
//! batch whose `append` returned) is ever lost.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

/// Everything needed to rebuild the model at start: the latest snapshot (if
/// any) and every log record after it, in order.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<(u64, Vec<u8>)>,
    pub records: Vec<(u64, Vec<u8>)>,
}

/// What the state owner needs from durable storage. The embedded SQLite
/// [`Store`] is the implementation; a replicated store (etcd, planned) would
/// be another.
pub trait CommandLog: Send {
    /// Sequence number of the last record appended (0 when empty).
    fn last_seq(&self) -> u64;
    /// The latest snapshot and every record after it, in order.
    fn recover(&self) -> Result<Recovered, StoreError>;
    /// Appends a batch durably; returns the last record's sequence number.
    fn append(&mut self, bodies: &[Vec<u8>]) -> Result<u64, StoreError>;
    /// Replaces the snapshot (covering records up to `seq`) and drops those records.
    fn write_snapshot(&mut self, seq: u64, body: &[u8]) -> Result<(), StoreError>;
}

impl CommandLog for Store {
    fn last_seq(&self) -> u64 {
        Store::last_seq(self)
    }
    fn recover(&self) -> Result<Recovered, StoreError> {
        Store::recover(self)
    }
    fn append(&mut self, bodies: &[Vec<u8>]) -> Result<u64, StoreError> {
        Store::append(self, bodies)
    }
    fn write_snapshot(&mut self, seq: u64, body: &[u8]) -> Result<(), StoreError> {
        Store::write_snapshot(self, seq, body)
    }
}

/// The embedded SQLite store. Owned by the state owner's thread alone.
pub struct Store {
    conn: Connection,
    last_seq: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshot (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 seq INTEGER NOT NULL,
                 body BLOB NOT NULL);",
        )?;
        let log_max: Option<i64> = conn.query_row("SELECT MAX(seq) FROM log", [], |r| r.get(0))?;
        let snap_seq: Option<i64> = conn
            .query_row("SELECT seq FROM snapshot WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        let last = log_max.unwrap_or(0).max(snap_seq.unwrap_or(0));
        let last_seq =
            u64::try_from(last).map_err(|_| StoreError::Corrupt(format!("negative seq {last}")))?;
        Ok(Store { conn, last_seq })
    }

    /// Sequence number of the last record appended (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Reads the latest snapshot and every record after it.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let snapshot: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT seq, body FROM snapshot WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let from = snapshot.as_ref().map(|(s, _)| *s).unwrap_or(0);
        let mut stmt = self
            .conn
            .prepare("SELECT seq, body FROM log WHERE seq > ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![from], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut records = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            records.push((to_u64(seq)?, body));
        }
        Ok(Recovered {
            snapshot: match snapshot {
                Some((seq, body)) => Some((to_u64(seq)?, body)),
                None => None,
            },
            records,
        })
    }

    /// Appends a batch of records in one durable transaction and returns the
    /// sequence number of the last one. When this returns, the batch survives
    /// power loss.
    pub fn append(&mut self, bodies: &[Vec<u8>]) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let mut seq = self.last_seq;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO log (seq, body) VALUES (?1, ?2)")?;
            for body in bodies {
                seq += 1;
                stmt.execute(params![to_i64(seq)?, body])?;
            }
        }
        tx.commit()?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// Replaces the snapshot with `body`, which must reflect every record up to
    /// and including `seq`, and drops those records, atomically.
    pub fn write_snapshot(&mut self, seq: u64, body: &[u8]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO snapshot (id, seq, body) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
            params![to_i64(seq)?, body],
        )?;
        tx.execute("DELETE FROM log WHERE seq <= ?1", params![to_i64(seq)?])?;
        tx.commit()?;
        Ok(())
    }
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative seq {v}")))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("seq {v} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_drop_without_shutdown_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let mut store = Store::open(&path).unwrap();
            for i in 0..50u32 {
                store.append(&[format!("cmd-{i}").into_bytes()]).unwrap();
            }
            store
                .append(&[b"batch-a".to_vec(), b"batch-b".to_vec()])
                .unwrap();
            // Dropped without any explicit close or checkpoint.
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.last_seq(), 52);
        let rec = store.recover().unwrap();
        assert!(rec.snapshot.is_none());
        assert_eq!(rec.records.len(), 52);
        for (i, (seq, body)) in rec.records.iter().take(50).enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(body, format!("cmd-{i}").as_bytes());
        }
        assert_eq!(rec.records[51].1, b"batch-b");
    }

    #[test]
    fn snapshot_truncates_log_and_recovery_replays_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let mut store = Store::open(&path).unwrap();
            store.append(&[b"1".to_vec(), b"2".to_vec()]).unwrap();
            store.write_snapshot(2, b"model@2").unwrap();
            store.append(&[b"3".to_vec()]).unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.last_seq(), 3);
        let rec = store.recover().unwrap();
        assert_eq!(rec.snapshot, Some((2, b"model@2".to_vec())));
        assert_eq!(rec.records, vec![(3, b"3".to_vec())]);
        // Snapshot covering everything leaves an empty log but keeps numbering.
        store.write_snapshot(3, b"model@3").unwrap();
        drop(store);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.last_seq(), 3);
        assert_eq!(store.append(&[b"4".to_vec()]).unwrap(), 4);
    }
}
