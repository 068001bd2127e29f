//! The single writer thread: group commit, event publication, compaction, checkpoints.
//!
//! Writers queue their operations; the thread takes everything queued (up to `max_batch`),
//! applies it in one transaction and commits once, so concurrent writers share one fsync.
//! Only after the commit are the events published to watchers (in revision order) and the
//! callers answered, so nothing is acknowledged or seen before it is durable.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::{db, schema, Shared};
use crate::{Error, Event, EventType, KeyValue, Result, Revision};

/// Revisions compacted per transaction, so writers are not held up for long.
const COMPACT_CHUNK: i64 = 10_000;

/// Work for the writer thread.
pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Delete {
        key: String,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The newest row of a key.
struct Latest {
    id: Revision,
    deleted: bool,
    create_revision: Revision,
    value: Vec<u8>,
}

impl Latest {
    fn live(&self, key: &str) -> Option<KeyValue> {
        (!self.deleted).then(|| KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(&self.value),
            create_revision: self.create_revision,
            mod_revision: self.id,
        })
    }
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    /// The revision of the last committed write.
    rev: Revision,
}

/// Runs the writer until every sender is gone, then ends all watches.
pub(super) fn run(conn: Connection, shared: Arc<Shared>, rx: Receiver<Op>, rev: Revision) {
    let mut w = Writer { conn, shared, rev };
    let interval = w.shared.opts.compaction_interval;
    let max_batch = w.shared.opts.max_batch.max(1);
    let mut last_compaction = Instant::now();
    loop {
        // Checked on every turn, so a steady stream of writes cannot starve compaction.
        if last_compaction.elapsed() >= interval {
            w.auto_compact();
            last_compaction = Instant::now();
        }
        let wait = interval.saturating_sub(last_compaction.elapsed());
        let first = match rx.recv_timeout(wait) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut writes = Vec::with_capacity(16);
        let mut maintenance = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next {
            match op {
                Op::Compact { .. } | Op::Checkpoint { .. } => maintenance.push(op),
                write => writes.push(write),
            }
            next = if writes.len() < max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !writes.is_empty() {
            w.commit_batch(writes);
        }
        for op in maintenance {
            match op {
                Op::Compact { revision, reply } => {
                    let _ = reply.send(w.compact(revision).and_then(|()| w.checkpoint()));
                }
                Op::Checkpoint { reply } => {
                    let _ = reply.send(w.checkpoint());
                }
                _ => unreachable!("writes were split off"),
            }
        }
    }
    w.shared.fanout().close();
}

type Reply = oneshot::Sender<Result<KeyValue>>;

impl Writer {
    fn commit_batch(&mut self, ops: Vec<Op>) {
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "store write transaction failed to start");
                let msg = e.to_string();
                for op in ops {
                    fail(op, Error::Backend(msg.clone()));
                }
                return;
            }
        };
        let mut rev = self.rev;
        let mut results: Vec<(Reply, Result<(KeyValue, Event)>)> = Vec::with_capacity(ops.len());
        for op in ops {
            let (reply, res) = match op {
                Op::Create { key, value, reply } => (reply, create(&tx, rev, key, value)),
                Op::Update {
                    key,
                    value,
                    expected,
                    reply,
                } => (reply, update(&tx, rev, key, value, expected)),
                Op::Delete {
                    key,
                    expected,
                    reply,
                } => (reply, delete(&tx, rev, key, expected)),
                op @ (Op::Compact { .. } | Op::Checkpoint { .. }) => {
                    fail(op, Error::Backend("not a write".into()));
                    continue;
                }
            };
            if res.is_ok() {
                rev += 1;
            }
            results.push((reply, res));
        }
        if let Err(e) = tx.commit() {
            tracing::error!(error = %e, "store write transaction failed");
            // Nothing of the batch is durable: fail every write and resync the counter.
            if let Ok((current, _)) = schema::revisions(&self.conn) {
                self.rev = current;
            }
            let msg = e.to_string();
            for (reply, _) in results {
                let _ = reply.send(Err(Error::Backend(msg.clone())));
            }
            return;
        }
        self.rev = rev;
        {
            let mut fanout = self.shared.fanout();
            for (_, res) in &results {
                if let Ok((_, event)) = res {
                    fanout.publish(event);
                }
            }
            self.shared.current.store(self.rev, Ordering::Release);
        }
        for (reply, res) in results {
            let _ = reply.send(res.map(|(kv, _)| kv));
        }
    }

    fn auto_compact(&mut self) {
        let keep = self.shared.opts.compaction_keep.max(0);
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        let target = self.rev - keep;
        if target > compacted {
            if let Err(e) = self.compact(target) {
                tracing::warn!(error = %e, target, "store compaction failed");
                return;
            }
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "store checkpoint failed");
        }
    }

    /// Deletes the rows no read at or after `target` can see: rows superseded at or before
    /// `target`, and tombstones at or before it. Rows stay readable at `target` itself.
    fn compact(&mut self, target: Revision) -> Result<()> {
        let mut from = self.shared.compacted.load(Ordering::Acquire);
        if target > self.rev {
            return Err(Error::FutureRevision {
                requested: target,
                current: self.rev,
            });
        }
        if target <= from {
            return Err(Error::Compacted {
                requested: target,
                compacted: from,
            });
        }
        let started = Instant::now();
        let mut deleted = 0;
        while from < target {
            let to = target.min(from + COMPACT_CHUNK);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            // Earlier chunks already removed what rows up to `from` superseded.
            deleted += tx
                .execute(
                    "DELETE FROM log WHERE id IN (
                        SELECT prev_revision FROM log
                        WHERE id > ?1 AND id <= ?2 AND prev_revision != 0)",
                    params![from, to],
                )
                .map_err(db)?;
            deleted += tx
                .execute(
                    "DELETE FROM log WHERE id > ?1 AND id <= ?2 AND deleted = 1",
                    params![from, to],
                )
                .map_err(db)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'compact_revision'",
                params![to],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            self.shared.compacted.store(to, Ordering::Release);
            from = to;
        }
        tracing::debug!(target, deleted, elapsed = ?started.elapsed(), "store compacted");
        Ok(())
    }

    /// Moves the WAL into the database file and truncates it, so it does not grow without
    /// bound. A reader holding an old snapshot makes it a partial checkpoint, which is fine:
    /// the next one finishes the job.
    fn checkpoint(&mut self) -> Result<()> {
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        tracing::debug!(busy, log, done, "store wal checkpoint");
        Ok(())
    }
}

/// Answers an operation with an error.
fn fail(op: Op, e: Error) {
    let _ = match op {
        Op::Create { reply, .. } | Op::Update { reply, .. } | Op::Delete { reply, .. } => {
            reply.send(Err(e)).map_err(drop)
        }
        Op::Compact { reply, .. } | Op::Checkpoint { reply } => reply.send(Err(e)).map_err(drop),
    };
}

/// The newest row of a key.
pub(super) const LATEST_SQL: &str = "SELECT id, deleted, create_revision, value FROM log
         WHERE name = ?1 ORDER BY id DESC LIMIT 1";

fn latest(conn: &Connection, key: &str) -> Result<Option<Latest>> {
    conn.prepare_cached(LATEST_SQL)
        .and_then(|mut st| {
            st.query_row([key], |r| {
                Ok(Latest {
                    id: r.get(0)?,
                    deleted: r.get(1)?,
                    create_revision: r.get(2)?,
                    value: r.get(3)?,
                })
            })
            .optional()
        })
        .map_err(db)
}

#[allow(clippy::too_many_arguments)]
fn insert(
    conn: &Connection,
    id: Revision,
    key: &str,
    created: bool,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: &[u8],
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO log (id, name, created, deleted, create_revision, prev_revision, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            id,
            key,
            created,
            deleted,
            create_revision,
            prev_revision,
            value
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// The key's live value, checked against `expected` (0 = any).
fn current_for_swap(conn: &Connection, key: &str, expected: Revision) -> Result<Latest> {
    let latest = latest(conn, key)?.filter(|l| !l.deleted);
    let Some(latest) = latest else {
        return Err(Error::NotFound(key.to_owned()));
    };
    if expected != 0 && latest.id != expected {
        return Err(Error::Conflict {
            key: key.to_owned(),
            current: Box::new(latest.live(key)),
        });
    }
    Ok(latest)
}

fn create(
    conn: &Connection,
    rev: Revision,
    key: String,
    value: Bytes,
) -> Result<(KeyValue, Event)> {
    let prev = latest(conn, &key)?;
    if prev.as_ref().is_some_and(|p| !p.deleted) {
        return Err(Error::AlreadyExists(key));
    }
    let id = rev + 1;
    let prev_revision = prev.map_or(0, |p| p.id);
    insert(conn, id, &key, true, false, id, prev_revision, &value)?;
    let kv = KeyValue {
        key,
        value,
        create_revision: id,
        mod_revision: id,
    };
    let event = Event {
        event_type: EventType::Create,
        kv: kv.clone(),
        prev: None,
    };
    Ok((kv, event))
}

fn update(
    conn: &Connection,
    rev: Revision,
    key: String,
    value: Bytes,
    expected: Revision,
) -> Result<(KeyValue, Event)> {
    let prev = current_for_swap(conn, &key, expected)?;
    let id = rev + 1;
    insert(
        conn,
        id,
        &key,
        false,
        false,
        prev.create_revision,
        prev.id,
        &value,
    )?;
    let prev_kv = prev.live(&key);
    let kv = KeyValue {
        key,
        value,
        create_revision: prev.create_revision,
        mod_revision: id,
    };
    let event = Event {
        event_type: EventType::Update,
        kv: kv.clone(),
        prev: prev_kv,
    };
    Ok((kv, event))
}

fn delete(
    conn: &Connection,
    rev: Revision,
    key: String,
    expected: Revision,
) -> Result<(KeyValue, Event)> {
    let prev = current_for_swap(conn, &key, expected)?;
    let id = rev + 1;
    insert(
        conn,
        id,
        &key,
        false,
        true,
        prev.create_revision,
        prev.id,
        &prev.value,
    )?;
    let prev_kv = prev.live(&key);
    let kv = KeyValue {
        key,
        value: Bytes::from(prev.value),
        create_revision: prev.create_revision,
        mod_revision: id,
    };
    let event = Event {
        event_type: EventType::Delete,
        kv: kv.clone(),
        prev: prev_kv,
    };
    Ok((kv, event))
}
