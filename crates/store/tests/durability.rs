//! Acknowledged writes survive SIGKILL.
//!
//! The test re-runs its own binary in a child mode (selected by an environment variable) that
//! writes keys from 16 concurrent clients and prints each key once its create is acknowledged.
//! The parent kills the child with SIGKILL mid-stream, reopens the database and checks that
//! every acknowledged key is there at its revision and that the revision sequence goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::{SqliteOptions, SqliteStore, Store};

const CHILD_ENV: &str = "SKIFF_STORE_DURABILITY_CHILD";
const CHILD_TEST: &str = "durability_child";
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 3000;

/// The child mode; a no-op in a normal test run.
#[test]
fn durability_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open(SqliteOptions::new(PathBuf::from(path))).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let key = format!("/registry/d/w{w:02}/k{i:06}");
                        let kv = store.create(&key, Bytes::from(key.clone())).await.unwrap();
                        // stdout is line-buffered: each line is out once the call returns.
                        println!("ACK {key} {}", kv.mod_revision);
                        if i % 7 == 3 {
                            let kv = store
                                .update(&key, Bytes::from_static(b"updated"), kv.mod_revision)
                                .await
                                .unwrap();
                            println!("UPD {key} {}", kv.mod_revision);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("skiff.db")
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    // Some history from a previous run, so the child continues an existing sequence.
    let before = {
        let s = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        s.create("/registry/d/pre", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let d = s.delete("/registry/d/pre", 0).await.unwrap();
        d.mod_revision
    };

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // key -> (value written last, its revision)
    let mut acked: BTreeMap<String, (Vec<u8>, i64)> = BTreeMap::new();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < ACKS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "child too slow: {n} acks");
        let line = lines.next().expect("child ended early").unwrap();
        if let Some((key, value, rev)) = parse(&line) {
            acked.insert(key, (value, rev));
            n += 1;
        }
    }
    // Mid-stream: the writers are still going.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines written before the kill are acknowledged writes too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some((key, value, rev)) = parse(&line) {
            acked.insert(key, (value, rev));
        }
    }

    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (rows, min, max): (i64, i64, i64) = conn
        .query_row("SELECT COUNT(*), MIN(id), MAX(id) FROM log", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((min, rows), (1, max), "revisions have no holes");
    drop(conn);

    let s = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    let current = s.current_revision().await.unwrap();
    let max_acked = acked.values().map(|(_, r)| *r).max().unwrap();
    assert!(current >= max_acked && max_acked > before);
    for (key, (value, rev)) in &acked {
        let kv = s
            .get(key, 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        // A later write may have committed without its acknowledgement reaching us before the
        // kill (the child updates some keys after creating them): never older, and if newer,
        // it is that update.
        assert!(
            kv.mod_revision >= *rev,
            "{key} went back to an older revision"
        );
        if kv.mod_revision == *rev {
            assert_eq!(&kv.value[..], &value[..], "{key}");
        } else {
            assert_eq!(&kv.value[..], b"updated", "{key}: unexpected newer value");
        }
    }
    let next = s
        .create("/registry/d/after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next.mod_revision, current + 1);
    eprintln!(
        "{} acknowledged writes checked; {} committed before the kill",
        acked.len(),
        current - before
    );
}

fn parse(line: &str) -> Option<(String, Vec<u8>, i64)> {
    let mut parts = line.split(' ');
    let kind = parts.next()?;
    let key = parts.next()?.to_owned();
    let rev = parts.next()?.parse().ok()?;
    let value = match kind {
        "ACK" => key.clone().into_bytes(),
        "UPD" => b"updated".to_vec(),
        _ => return None,
    };
    Some((key, value, rev))
}
