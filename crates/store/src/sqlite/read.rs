//! Read queries. Each runs in one read transaction, so the revision it reports, the
//! compaction check and the rows all come from the same snapshot.

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{db, schema};
use crate::fanout::prefix_end;
use crate::{Error, Event, EventType, KeyValue, ListResult, Result, Revision};

/// Resolves `revision` (0 = latest) against the snapshot's current and compacted revisions.
fn read_revision(conn: &Connection, revision: Revision) -> Result<Revision> {
    let (current, compacted) = schema::revisions(conn)?;
    if revision == 0 {
        return Ok(current);
    }
    if revision > current {
        return Err(Error::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted,
        });
    }
    Ok(revision)
}

pub(super) fn get(conn: &Connection, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
    let tx = conn.unchecked_transaction().map_err(db)?;
    let rev = read_revision(&tx, revision)?;
    let row: Option<(Revision, bool, Revision, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, deleted, create_revision, value FROM log
             WHERE name = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut st| {
            st.query_row(params![key, rev], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db)?;
    Ok(row
        .filter(|(_, deleted, _, _)| !deleted)
        .map(|(id, _, create_revision, value)| KeyValue {
            key: key.to_owned(),
            value: Bytes::from(value),
            create_revision,
            mod_revision: id,
        }))
}

/// The newest row of each name in the range at `rev`, skipping tombstones. Walks the
/// `(name, id)` index in order, so a limited page stops early instead of sorting the range.
pub(super) fn list_sql(bounded: bool, select: &str, tail: &str) -> String {
    format!(
        "SELECT {select} FROM log AS l
         WHERE l.name >= ?1 {upper} AND l.id <= ?3 AND l.deleted = 0
           AND NOT EXISTS (
               SELECT 1 FROM log AS n WHERE n.name = l.name AND n.id > l.id AND n.id <= ?3)
         {tail}",
        upper = if bounded {
            "AND l.name < ?2"
        } else {
            "AND ?2 IS NULL"
        },
    )
}

pub(super) fn list(
    conn: &Connection,
    prefix: &str,
    start: &str,
    limit: usize,
    revision: Revision,
) -> Result<ListResult> {
    let tx = conn.unchecked_transaction().map_err(db)?;
    let rev = read_revision(&tx, revision)?;
    let from = if start > prefix { start } else { prefix };
    let upper = prefix_end(prefix);
    let sql = list_sql(
        upper.is_some(),
        "l.id, l.name, l.create_revision, l.value",
        "ORDER BY l.name LIMIT ?4",
    );
    // One extra row tells whether more follow.
    let fetch: i64 = if limit == 0 { -1 } else { limit as i64 + 1 };
    let mut kvs = tx
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params![from, upper, rev, fetch], |r| {
                Ok(KeyValue {
                    mod_revision: r.get(0)?,
                    key: r.get(1)?,
                    create_revision: r.get(2)?,
                    value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)?;
    let more = limit != 0 && kvs.len() > limit;
    kvs.truncate(if limit == 0 { kvs.len() } else { limit });
    Ok(ListResult {
        kvs,
        revision: rev,
        more,
    })
}

pub(super) fn count(conn: &Connection, prefix: &str) -> Result<i64> {
    let upper = prefix_end(prefix);
    let sql = list_sql(upper.is_some(), "COUNT(*)", "");
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.query_row(params![prefix, upper, i64::MAX], |r| r.get(0)))
        .map_err(db)
}

/// One page of watch catch-up: events in `(after, until]` under `prefix`, oldest first, at most
/// `limit`. Fails with `Compacted` if rows after `after` may already be gone.
pub(super) fn events_after(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    until: Revision,
    limit: usize,
) -> Result<Vec<Event>> {
    let tx = conn.unchecked_transaction().map_err(db)?;
    let (_, compacted) = schema::revisions(&tx)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    if after >= until {
        return Ok(Vec::new());
    }
    let upper = prefix_end(prefix);
    // `+l.name` keeps the planner on the rowid range rather than the name index.
    let sql = format!(
        "SELECT l.id, l.name, l.created, l.deleted, l.create_revision, l.value,
                p.id, p.create_revision, p.value
         FROM log AS l LEFT JOIN log AS p ON p.id = l.prev_revision AND l.created = 0
         WHERE l.id > ?1 AND l.id <= ?2 AND +l.name >= ?3 {}
         ORDER BY l.id LIMIT ?5",
        if upper.is_some() {
            "AND +l.name < ?4"
        } else {
            "AND ?4 IS NULL"
        }
    );
    tx.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params![after, until, prefix, upper, limit as i64], event_of)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)
}

fn event_of(r: &Row<'_>) -> rusqlite::Result<Event> {
    let key: String = r.get(1)?;
    let created: bool = r.get(2)?;
    let deleted: bool = r.get(3)?;
    let kv = KeyValue {
        key: key.clone(),
        mod_revision: r.get(0)?,
        create_revision: r.get(4)?,
        value: Bytes::from(r.get::<_, Vec<u8>>(5)?),
    };
    let prev = match r.get::<_, Option<Revision>>(6)? {
        Some(id) => Some(KeyValue {
            key,
            mod_revision: id,
            create_revision: r.get(7)?,
            value: Bytes::from(r.get::<_, Vec<u8>>(8)?),
        }),
        None => None,
    };
    let event_type = if created {
        EventType::Create
    } else if deleted {
        EventType::Delete
    } else {
        EventType::Update
    };
    Ok(Event {
        event_type,
        kv,
        prev,
    })
}
