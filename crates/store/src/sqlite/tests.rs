use super::*;
use crate::conformance::{ConformanceOptions, TestStore};

async fn new_store(opts: ConformanceOptions) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SqliteOptions::new(dir.path().join("db.sqlite"));
    o.watch_buffer = opts.watch_buffer;
    let store = SqliteStore::open(o).unwrap();
    TestStore::with_guard(store, dir)
}

crate::store_conformance_tests!(new_store);

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(20);

fn open_at(dir: &Path, f: impl FnOnce(&mut SqliteOptions)) -> Arc<SqliteStore> {
    let mut o = SqliteOptions::new(dir.join("db.sqlite"));
    f(&mut o);
    SqliteStore::open(o).unwrap()
}

fn rows(dir: &Path) -> i64 {
    let c = Connection::open(dir.join("db.sqlite")).unwrap();
    c.query_row("SELECT COUNT(*) FROM log", [], |r| r.get(0))
        .unwrap()
}

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("db.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Waits for `cond` with a deadline, re-checking every few milliseconds.
async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reopen_continues_revisions_even_after_compacting_the_newest_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    s.create("/r/a", Bytes::from_static(b"1")).await.unwrap();
    s.create("/r/b", Bytes::from_static(b"1")).await.unwrap();
    let d = s.delete("/r/b", 0).await.unwrap();
    // The newest row is a tombstone, which compaction removes.
    s.compact(d.mod_revision).await.unwrap();
    assert_eq!(rows(dir.path()), 1);
    drop(s);

    let s = open_at(dir.path(), |_| {});
    assert_eq!(s.current_revision().await.unwrap(), d.mod_revision);
    assert_eq!(s.compacted_revision().await.unwrap(), d.mod_revision);
    let c = s.create("/r/c", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(c.mod_revision, d.mod_revision + 1);
    let l = s.list("/r/", "", 0, 0).await.unwrap();
    assert_eq!(l.revision, c.mod_revision);
    assert_eq!(l.kvs.len(), 2);
    assert_eq!(s.get("/r/b", 0).await.unwrap(), None);
    let b2 = s.create("/r/b", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(b2.create_revision, c.mod_revision + 1);
}

#[tokio::test]
async fn compaction_removes_superseded_rows_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    for i in 0..10 {
        s.create(&format!("/r/k{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    for round in 0..5 {
        for i in 0..10 {
            s.update(&format!("/r/k{i}"), Bytes::from(format!("{round}")), 0)
                .await
                .unwrap();
        }
    }
    for i in 0..5 {
        s.delete(&format!("/r/k{i}"), 0).await.unwrap();
    }
    assert_eq!(rows(dir.path()), 65);
    let cur = s.current_revision().await.unwrap();
    s.compact(cur).await.unwrap();
    assert_eq!(rows(dir.path()), 5, "one row per live key");
    let l = s.list("/r/", "", 0, 0).await.unwrap();
    assert_eq!(l.kvs.len(), 5);
    assert!(l.kvs.iter().all(|kv| kv.value == Bytes::from_static(b"4")));
}

#[tokio::test]
async fn background_compaction_keeps_a_window_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |o| {
        o.compaction_interval = Duration::from_millis(20);
        o.compaction_keep = 10;
    });
    s.create("/r/k", Bytes::new()).await.unwrap();
    for i in 0..100 {
        s.update("/r/k", Bytes::from(format!("{i}")), 0)
            .await
            .unwrap();
    }
    let cur = s.current_revision().await.unwrap();
    wait_for("background compaction", async || {
        s.compacted_revision().await.unwrap() == cur - 10
    })
    .await;
    wait_for("rows to be compacted", async || rows(dir.path()) == 11).await;
    assert!(matches!(
        s.get("/r/k", cur - 11).await,
        Err(Error::Compacted { .. })
    ));
    assert_eq!(
        s.get("/r/k", cur - 10).await.unwrap().unwrap().mod_revision,
        cur - 10
    );
    wait_for("the wal to be truncated", async || wal_len(dir.path()) == 0).await;
}

#[tokio::test]
async fn checkpoint_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    let value = Bytes::from(vec![b'x'; 4096]);
    for i in 0..500 {
        s.create(&format!("/r/k{i:04}"), value.clone())
            .await
            .unwrap();
    }
    assert!(wal_len(dir.path()) > 1 << 20, "wal {}", wal_len(dir.path()));
    // A read connection with an open statement must not stop the truncation for good.
    assert_eq!(s.count("/r/").await.unwrap(), 500);
    s.checkpoint().await.unwrap();
    assert_eq!(wal_len(dir.path()), 0);
    // Reads and writes go on against the checkpointed file.
    assert_eq!(s.list("/r/", "", 0, 0).await.unwrap().kvs.len(), 500);
    s.create("/r/after", value).await.unwrap();
    drop(s);
    let s = open_at(dir.path(), |_| {});
    assert_eq!(s.count("/r/").await.unwrap(), 501);
}

#[tokio::test]
async fn wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |o| o.journal_size_limit = 1 << 20);
    let value = Bytes::from(vec![b'x'; 4096]);
    let mut max_wal = 0;
    for round in 0..6 {
        for i in 0..300 {
            let key = format!("/r/k{i:03}");
            if round == 0 {
                s.create(&key, value.clone()).await.unwrap();
            } else {
                s.update(&key, value.clone(), 0).await.unwrap();
            }
        }
        let cur = s.current_revision().await.unwrap();
        if round > 0 {
            s.compact(cur - 300).await.unwrap();
        }
        max_wal = max_wal.max(wal_len(dir.path()));
    }
    // The automatic checkpoints cap the WAL near 1000 pages; compaction truncates it.
    assert!(max_wal < 8 << 20, "wal grew to {max_wal}");
    assert_eq!(rows(dir.path()), 300 + 300);
}

#[tokio::test]
async fn close_ends_watches_and_refuses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    let mut w = s.watch("/r/", 0).await.unwrap();
    let kv = s.create("/r/a", Bytes::new()).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().kv, kv);
    s.close();
    assert!(matches!(w.next().await, Some(Err(Error::Closed))));
    assert!(w.next().await.is_none());
    assert!(matches!(
        s.create("/r/b", Bytes::new()).await,
        Err(Error::Closed)
    ));
    assert!(matches!(s.watch("/r/", 0).await, Err(Error::Closed)));
}

#[test]
fn queries_use_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions::new(dir.path().join("db.sqlite"));
    let c = schema::open_writer(&opts).unwrap();
    let plan = |sql: &str| -> String {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join("\n")
    };
    let list = read::list_sql(true, "l.id", "ORDER BY l.name LIMIT 10")
        .replace("?1", "'/a/'")
        .replace("?2", "'/a0'")
        .replace("?3", "100");
    let p = plan(&list);
    assert!(
        p.contains("USING INDEX log_name_id") || p.contains("USING COVERING INDEX log_name_id"),
        "{p}"
    );
    assert!(!p.contains("TEMP B-TREE"), "list must not sort: {p}");
    assert!(!p.contains("SCAN l\n") && !p.ends_with("SCAN l"), "{p}");
    let p = plan("SELECT id FROM log WHERE name = '/a' AND id <= 5 ORDER BY id DESC LIMIT 1");
    assert!(p.contains("log_name_id"), "{p}");
    let p = plan(
        "SELECT l.id FROM log AS l LEFT JOIN log AS p ON p.id = l.prev_revision AND l.created = 0 \
         WHERE l.id > 1 AND l.id <= 9 AND +l.name >= '/a/' AND +l.name < '/a0' ORDER BY l.id LIMIT 5",
    );
    assert!(
        p.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        "{p}"
    );
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

/// SQLite re-plans a statement on every run when its plan may depend on a bound value;
/// the writer looks up a key per write, so that would double the cost of each lookup.
#[tokio::test]
async fn the_writers_key_lookup_is_planned_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(dir.path(), |_| {});
    for i in 0..20 {
        let kv = store
            .create(&format!("/k/{i}"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        store
            .update(
                &format!("/k/{i}"),
                Bytes::from_static(b"{\"a\":1}"),
                kv.mod_revision,
            )
            .await
            .unwrap();
    }
    drop(store);
    let opts = SqliteOptions::new(dir.path().join("db.sqlite"));
    let c = schema::open_writer(&opts).unwrap();
    for i in 0..20 {
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        let id: i64 = c
            .prepare_cached(writer::LATEST_SQL)
            .unwrap()
            .query_row([format!("/k/{i}")], |r| r.get(0))
            .unwrap();
        assert!(id > 0);
        c.execute("INSERT INTO log (name, created, deleted, create_revision, prev_revision, value) VALUES (?1, 0, 0, 1, ?2, x'00')", rusqlite::params![format!("/k/{i}"), id]).unwrap();
        c.execute_batch("COMMIT").unwrap();
    }
    let st = c.prepare_cached(writer::LATEST_SQL).unwrap();
    assert_eq!(
        st.get_status(rusqlite::StatementStatus::RePrepare),
        0,
        "the key lookup was re-planned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_pages_through_long_history_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    for i in 0..(CATCH_UP_PAGE * 2 + 500) {
        let key = format!("/r/{}/k{i}", if i % 3 == 0 { "other" } else { "mine" });
        s.create(&key, Bytes::new()).await.unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..500 {
                s.create(&format!("/r/mine/live{i}"), Bytes::new())
                    .await
                    .unwrap();
            }
        })
    };
    let mut w = s.watch("/r/mine/", 0).await.unwrap();
    writer.await.unwrap();
    let end = s.current_revision().await.unwrap();
    let mut last = 0;
    let mut n = 0;
    while last < end {
        let ev = tokio::time::timeout(DEADLINE, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ev.revision() > last, "out of order");
        assert!(ev.kv.key.starts_with("/r/mine/"));
        last = ev.revision();
        n += 1;
    }
    let history = (0..(CATCH_UP_PAGE * 2 + 500))
        .filter(|i| i % 3 != 0)
        .count();
    assert_eq!(n, history + 500);
}

#[tokio::test]
async fn compaction_during_catch_up_ends_the_watch_with_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(dir.path(), |_| {});
    for i in 0..(CATCH_UP_PAGE * 3) {
        s.create(&format!("/r/k{i}"), Bytes::new()).await.unwrap();
        if i > 0 {
            s.delete(&format!("/r/k{}", i - 1), 0).await.unwrap();
        }
    }
    let mut w = s.watch("/r/", 0).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.revision(), 1);
    let cur = s.current_revision().await.unwrap();
    s.compact(cur - 10).await.unwrap();
    let mut seen = 1;
    let err = loop {
        match w.next().await {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => break e,
            None => panic!("watch ended without an error"),
        }
    };
    assert!(matches!(err, Error::Compacted { .. }), "{err:?}");
    assert_eq!(seen, CATCH_UP_PAGE, "the page already read is delivered");
    assert!(w.next().await.is_none());
}
