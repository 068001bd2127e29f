//! The contract suite against a real etcd: Debian's `/usr/bin/etcd`, one member per case on
//! loopback (the cases assume a fresh store: contiguous revisions, nothing compacted), stopped
//! by PID when the case ends. Fails, never skips, when etcd is not installed. Then what only a
//! cluster can show: failover of reads, writes and watches when a member is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::conformance::{ConformanceOptions, TestStore};
use crate::EventType;

async fn new_store(opts: ConformanceOptions) -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let member = EtcdProcess::start(&dir.path().join("etcd"), Duration::from_secs(20))
        .await
        .expect("starting etcd");
    let mut eopts = EtcdOptions::new([member.client_url()]);
    eopts.watch_buffer = opts.watch_buffer;
    eopts.compaction_interval = None;
    let store = EtcdStore::connect(eopts).await.expect("connecting to etcd");
    // Dropped after the store: the member is killed, then its directory removed.
    TestStore::with_guard(store, (member, dir))
}

crate::store_conformance_tests!(new_store);

/// Retries a write whose outcome was unknown (the member serving it died) the way a client
/// would: re-read and decide. Returns the revision of the write that took effect.
async fn put_until_done(s: &EtcdStore, key: &str, value: &str) -> Revision {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match s.create(key, Bytes::from(value.to_owned())).await {
            Ok(kv) => return kv.mod_revision,
            Err(Error::AlreadyExists(_)) => {
                // An earlier attempt did land.
                let kv = s.get(key, 0).await.unwrap().unwrap();
                assert_eq!(kv.value, Bytes::from(value.to_owned()));
                return kv.mod_revision;
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{key}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Three members; every member in turn is killed with SIGKILL and brought back. Reads and
/// writes carry on through the others, and a watch opened before the first kill sees every
/// write exactly once, in order, whichever member it was streaming from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_members_killed_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(dir.path(), 3, Duration::from_secs(30))
        .await
        .expect("starting a 3-member etcd cluster");
    let mut opts = EtcdOptions::new(cluster.endpoints());
    opts.compaction_interval = None;
    let s = EtcdStore::connect(opts).await.unwrap();
    let base = s.current_revision().await.unwrap();
    let mut w = s.watch("/registry/cm/", base).await.unwrap();

    let mut written = BTreeMap::new();
    let mut n = 0;
    for victim in 0..3 {
        for _ in 0..20 {
            let key = format!("/registry/cm/ns/k{n:03}");
            written.insert(put_until_done(&s, &key, &key).await, key);
            n += 1;
        }
        cluster.members[victim].kill();
        for _ in 0..20 {
            let key = format!("/registry/cm/ns/k{n:03}");
            written.insert(put_until_done(&s, &key, &key).await, key);
            n += 1;
        }
        assert_eq!(s.count("/registry/cm/").await.unwrap(), n as i64);
        cluster.members[victim]
            .restart(Duration::from_secs(30))
            .await
            .expect("restarting the member");
    }
    // Every write is there, and the watch saw each exactly once, in revision order.
    let list = s.list("/registry/cm/", "", 0, 0).await.unwrap();
    assert_eq!(list.kvs.len(), written.len());
    for (rev, key) in &written {
        let ev = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("watch event in time")
            .expect("watch open")
            .expect("watch event");
        assert_eq!((ev.revision(), &ev.kv.key), (*rev, key));
        assert_eq!(ev.event_type, EventType::Create);
    }
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), w.next()).await {
        panic!("unexpected extra watch item: {item:?}");
    }
}

/// A compacted start revision is `Compacted` with etcd's compacted revision; the periodic
/// compaction keeps one interval of history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_compaction_keeps_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    let member = EtcdProcess::start(&dir.path().join("etcd"), Duration::from_secs(20))
        .await
        .unwrap();
    let mut opts = EtcdOptions::new([member.client_url()]);
    opts.compaction_interval = Some(Duration::from_millis(300));
    let s = EtcdStore::connect(opts).await.unwrap();
    let first = s
        .create("/registry/cm/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    s.update("/registry/cm/a", Bytes::from_static(b"2"), 0)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.compacted_revision().await.unwrap() < first.mod_revision + 1 {
        assert!(tokio::time::Instant::now() < deadline, "no compaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match s.watch("/registry/cm/", first.mod_revision - 1).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, first.mod_revision - 1);
            assert!(compacted > first.mod_revision);
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        s.get("/registry/cm/a", 0).await.unwrap().unwrap().value,
        Bytes::from_static(b"2")
    );
}

#[tokio::test]
async fn connect_fails_loudly_without_etcd() {
    let mut opts = EtcdOptions::new(["http://127.0.0.1:1"]);
    opts.dial_timeout = Duration::from_millis(300);
    opts.compaction_interval = None;
    match EtcdStore::connect(opts).await {
        Err(Error::Backend(m)) => assert!(m.contains("did not answer"), "{m}"),
        Ok(_) => panic!("connected to nothing"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Lists and watch batches larger than gRPC's default 4 MiB message limit arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_and_watch_batches() {
    let t = new_store(ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    for i in 0..6 {
        s.create(&format!("/registry/cm/ns/big{i}"), big.clone())
            .await
            .unwrap();
    }
    let l = s.list("/registry/cm/", "", 0, 0).await.unwrap();
    assert_eq!(l.kvs.len(), 6);
    assert!(l.kvs.iter().all(|kv| kv.value == big));
    let mut w = s.watch("/registry/cm/", base).await.unwrap();
    for i in 1..=6 {
        let ev = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.revision(), base + i);
        assert_eq!(ev.kv.value.len(), 1 << 20);
    }
}
