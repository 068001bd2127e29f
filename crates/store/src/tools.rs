//! Datastore tools behind `skiff datastore`: SQLite snapshots (online backup, offline
//! restore), etcd snapshots (etcd's own format), and copying every key from one store to
//! another.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Error, EtcdStore, Result, Revision, Store};

/// Keys read per page while copying.
const COPY_PAGE: usize = 1000;

fn io(what: &str, p: &Path, e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("{what} {}: {e}", p.display()))
}

/// Copies a consistent snapshot of the SQLite database at `db` into a new file `out`, with
/// SQLite's online backup API: the server may keep running and writing meanwhile.
pub fn sqlite_snapshot_save(db: &Path, out: &Path) -> Result<()> {
    if !db.exists() {
        return Err(io("no database at", db, "file not found"));
    }
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| io("opening", db, e))?;
    src.busy_timeout(Duration::from_secs(5))
        .map_err(|e| io("opening", db, e))?;
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut dst = Connection::open(&tmp).map_err(|e| io("creating", &tmp, e))?;
        let backup =
            rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| io("backing up", db, e))?;
        // Pages in steps so the server's writer is never blocked for long.
        backup
            .run_to_completion(1024, Duration::from_millis(5), None)
            .map_err(|e| io("backing up", db, e))?;
    }
    check_sqlite_snapshot(&tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| io("writing", out, e))?;
    Ok(())
}

/// Fails unless `file` is an SQLite database with the store's tables.
fn check_sqlite_snapshot(file: &Path) -> Result<Revision> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| io("opening", file, e))?;
    let integrity: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| io("checking", file, format!("not an SQLite database ({e})")))?;
    if integrity != "ok" {
        return Err(io("checking", file, integrity));
    }
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM log", [], |r| r.get(0))
        .map_err(|e| io("checking", file, format!("not a skiff datastore ({e})")))
}

/// Replaces the SQLite database at `db` with the snapshot `file`. The server must be stopped:
/// a database another process has open is refused. Returns the snapshot's revision.
pub fn sqlite_snapshot_restore(file: &Path, db: &Path) -> Result<Revision> {
    let revision = check_sqlite_snapshot(file)?;
    if db.exists() {
        sqlite_ensure_unused(db)?;
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    }
    let tmp = db.with_extension("restoring");
    std::fs::copy(file, &tmp).map_err(|e| io("copying", file, e))?;
    // The old write-ahead log belongs to the old database: replayed onto the snapshot it
    // would corrupt it.
    for ext in ["db-wal", "db-shm"] {
        let side = db.with_extension(ext);
        if side.exists() {
            std::fs::remove_file(&side).map_err(|e| io("removing", &side, e))?;
        }
    }
    std::fs::rename(&tmp, db).map_err(|e| io("replacing", db, e))?;
    Ok(revision)
}

/// Fails if another connection (a running server) has the database open.
pub fn sqlite_ensure_unused(db: &Path) -> Result<()> {
    let conn = Connection::open(db).map_err(|e| io("opening", db, e))?;
    // An exclusive lock in exclusive locking mode is refused while any other connection, even
    // an idle one in WAL mode, holds the database.
    let res = conn.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; SELECT COUNT(*) FROM sqlite_master; COMMIT;",
    );
    match res {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::Backend(format!(
            "{} is in use ({e}): stop the server first",
            db.display()
        ))),
    }
}

/// Writes an etcd snapshot (etcd's own format, from the maintenance API) of the member the
/// client reaches to `out`; returns its size in bytes.
pub async fn etcd_snapshot_save(store: &EtcdStore, out: &Path) -> Result<u64> {
    let tmp = out.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let size = store.snapshot_to(&mut f).await?;
    f.sync_all().map_err(|e| io("writing", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|e| io("writing", out, e))?;
    Ok(size)
}

/// What `etcdctl snapshot restore` needs to make a new member from a snapshot.
#[derive(Clone, Debug)]
pub struct EtcdRestore {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The new member's data directory (must not exist).
    pub data_dir: PathBuf,
    /// The member's name (etcd's default: `default`).
    pub name: String,
    /// The member's peer URL (etcd's default: `http://localhost:2380`).
    pub peer_url: String,
    /// `name=peer_url,…` of every member of the restored cluster (default: this member alone).
    pub initial_cluster: Option<String>,
}

impl EtcdRestore {
    /// The command that restores the snapshot: `etcdutl snapshot restore` where installed
    /// (etcd 3.5 and later), else `etcdctl snapshot restore` (Debian's etcd-client, 3.4).
    pub fn command(&self) -> Command {
        let etcdutl = Path::new("/usr/bin/etcdutl");
        let mut cmd = if etcdutl.exists() {
            Command::new(etcdutl)
        } else {
            let mut c = Command::new("etcdctl");
            c.env("ETCDCTL_API", "3");
            c
        };
        let initial = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.peer_url));
        cmd.args(["snapshot", "restore"])
            .arg(&self.snapshot)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--name", &self.name])
            .args(["--initial-cluster", &initial])
            .args(["--initial-advertise-peer-urls", &self.peer_url]);
        cmd
    }

    /// Runs [`Self::command`].
    pub fn run(&self) -> Result<()> {
        let mut cmd = self.command();
        let out = cmd
            .output()
            .map_err(|e| Error::Backend(format!("running {cmd:?}: {e}")))?;
        if !out.status.success() {
            return Err(Error::Backend(format!(
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

/// What [`copy_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Keys written to the target.
    pub copied: usize,
    /// Keys removed from the target because the source does not have them (`force` only).
    pub removed: usize,
    /// The source revision the copy was read at.
    pub source_revision: Revision,
}

/// Copies every key under `prefix` from `from` (read at one revision, so the copy is
/// consistent) to `to`, values byte for byte. Revisions cannot be carried over: every copied
/// key gets a new revision in the target, so resourceVersions change and clients must re-list.
///
/// A target with keys under `prefix` is refused unless `force`; with `force` the target ends
/// up holding exactly the source's keys (others are deleted).
pub async fn copy_all(
    from: &dyn Store,
    to: &dyn Store,
    prefix: &str,
    force: bool,
) -> Result<CopyReport> {
    let existing = to.count(prefix).await?;
    if existing > 0 && !force {
        return Err(Error::Backend(format!(
            "the target datastore is not empty ({existing} keys under {prefix:?}); use --force to overwrite it"
        )));
    }
    let revision = from.current_revision().await?;
    let mut report = CopyReport {
        source_revision: revision,
        ..CopyReport::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut start = String::new();
    loop {
        let page = from.list(prefix, &start, COPY_PAGE, revision).await?;
        for kv in &page.kvs {
            match to.create(&kv.key, kv.value.clone()).await {
                Ok(_) => {}
                Err(Error::AlreadyExists(_)) if force => {
                    to.update(&kv.key, kv.value.clone(), 0).await?;
                }
                Err(e) => return Err(e),
            }
            if existing > 0 {
                seen.insert(kv.key.clone());
            }
            report.copied += 1;
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => start = format!("{}\0", last.key),
            _ => break,
        }
    }
    if existing > 0 {
        let mut start = String::new();
        loop {
            let page = to.list(prefix, &start, COPY_PAGE, 0).await?;
            for kv in &page.kvs {
                if !seen.contains(&kv.key) {
                    match to.delete(&kv.key, 0).await {
                        Ok(_) | Err(Error::NotFound(_)) => report.removed += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = format!("{}\0", last.key),
                _ => break,
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, SqliteOptions, SqliteStore};
    use bytes::Bytes;

    #[tokio::test]
    async fn sqlite_snapshot_round_trip_and_refuses_open_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db/state.db");
        let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
        for i in 0..50 {
            store
                .create(
                    &format!("/registry/cm/ns/k{i}"),
                    Bytes::from(format!("v{i}")),
                )
                .await
                .unwrap();
        }
        let snap = dir.path().join("snap.db");
        // Online: the store is open and was just written.
        sqlite_snapshot_save(&db, &snap).unwrap();
        store
            .create("/registry/cm/ns/after", Bytes::from_static(b"x"))
            .await
            .unwrap();
        match sqlite_snapshot_restore(&snap, &db) {
            Err(Error::Backend(m)) => assert!(m.contains("stop the server"), "{m}"),
            other => panic!("restore over an open database: {other:?}"),
        }
        store.close();
        drop(store);
        assert_eq!(sqlite_snapshot_restore(&snap, &db).unwrap(), 50);
        let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
        assert_eq!(store.count("/registry/").await.unwrap(), 50);
        assert_eq!(store.get("/registry/cm/ns/after", 0).await.unwrap(), None);
        assert_eq!(
            store
                .get("/registry/cm/ns/k7", 0)
                .await
                .unwrap()
                .unwrap()
                .value,
            Bytes::from_static(b"v7")
        );
        // Not a snapshot: refused, the database untouched.
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a database").unwrap();
        store.close();
        assert!(sqlite_snapshot_restore(&junk, &db).is_err());
        let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
        assert_eq!(store.count("/registry/").await.unwrap(), 50);
    }

    #[tokio::test]
    async fn copy_refuses_non_empty_target_and_mirrors_with_force() {
        let from = MemoryStore::new();
        for i in 0..2500 {
            from.create(
                &format!("/registry/cm/ns/k{i:04}"),
                Bytes::from(format!("v{i}")),
            )
            .await
            .unwrap();
        }
        from.delete("/registry/cm/ns/k0003", 0).await.unwrap();
        let to = MemoryStore::new();
        let r = copy_all(&from, &to, "/registry/", false).await.unwrap();
        assert_eq!(r.copied, 2499);
        assert_eq!(
            to.list("/registry/", "", 0, 0).await.unwrap().kvs.len(),
            2499
        );
        assert!(copy_all(&from, &to, "/registry/", false).await.is_err());
        to.create("/registry/cm/ns/extra", Bytes::from_static(b"e"))
            .await
            .unwrap();
        to.update("/registry/cm/ns/k0001", Bytes::from_static(b"changed"), 0)
            .await
            .unwrap();
        let r = copy_all(&from, &to, "/registry/", true).await.unwrap();
        assert_eq!((r.copied, r.removed), (2499, 1));
        let a = from.list("/registry/", "", 0, 0).await.unwrap().kvs;
        let b = to.list("/registry/", "", 0, 0).await.unwrap().kvs;
        let strip = |v: &[crate::KeyValue]| -> Vec<(String, Bytes)> {
            v.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect()
        };
        assert_eq!(strip(&a), strip(&b));
    }
}
