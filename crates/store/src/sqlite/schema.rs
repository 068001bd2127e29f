//! The database layout and connection setup.
//!
//! One append-only log table in the manner of kine: the autoincrement `id` is the revision of
//! the write; a write to an existing key points back at the row it supersedes with
//! `prev_revision` (a create after a delete points at the tombstone). The unique index on
//! `(name, prev_revision)` makes two writes that both superseded the same row impossible, so
//! compare-and-swap cannot lose an update even if the single-writer rule were broken.
//!
//! Indexes, one per query shape:
//! - `(name, id)`: get at a revision, list at a revision (range over names, newest per name);
//! - `id` (the rowid): watch catch-up and compaction scan revision ranges;
//! - `(name, prev_revision)`: the uniqueness above.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{db, SqliteOptions};
use crate::{Error, Result, Revision};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS log_name_prev_revision ON log (name, prev_revision);
CREATE INDEX IF NOT EXISTS log_name_id ON log (name, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('compact_revision', 0);
";

/// Opens the write connection, creating the database and its schema if needed.
pub(super) fn open_writer(opts: &SqliteOptions) -> Result<Connection> {
    if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(&opts.path).map_err(db)?;
    stable_plans(&conn)?;
    conn.busy_timeout(Duration::from_secs(1)).map_err(db)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Backend(format!(
            "{}: cannot use write-ahead logging (journal mode {mode})",
            opts.path.display()
        )));
    }
    // FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = {};
         PRAGMA wal_autocheckpoint = 1000;",
        opts.journal_size_limit
    ))
    .map_err(db)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(Error::Backend(format!(
            "{}: schema version {version} is newer than this binary's {SCHEMA_VERSION}",
            opts.path.display()
        )));
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(db)?;
    Ok(conn)
}

/// Opens a read connection.
pub(super) fn open_reader(opts: &SqliteOptions) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        &opts.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    stable_plans(&conn)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    conn.execute_batch("PRAGMA query_only = 1;").map_err(db)?;
    Ok(conn)
}

/// Every query here has one right plan (`queries_use_their_indexes` checks them). Without the
/// query planner stability guarantee SQLite re-plans a statement whenever a bound value might
/// change its plan, which it does on nearly every run of the writer's key lookup.
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db)?;
    Ok(())
}

/// The current and compacted revisions as committed in the database (or in the caller's
/// transaction snapshot).
///
/// The current revision comes from AUTOINCREMENT's counter, which never goes back even when
/// compaction deletes the newest row (a tombstone).
pub(super) fn revisions(conn: &Connection) -> Result<(Revision, Revision)> {
    let current: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'log'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    let max_id: Option<i64> = conn
        .query_row("SELECT MAX(id) FROM log", [], |r| r.get(0))
        .map_err(db)?;
    let compacted: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'compact_revision'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let current = current.unwrap_or(0).max(max_id.unwrap_or(0));
    Ok((current, compacted))
}
