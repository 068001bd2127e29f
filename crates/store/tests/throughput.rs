//! Group-commit throughput of the SQLite store: 16 concurrent clients creating keys.
//!
//! Prints the rate (run with `--nocapture` to see it); asserts only correctness, since the
//! rate depends on the machine and on the build profile.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use skiff_store::{SqliteOptions, SqliteStore, Store};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 1000;

async fn run(clients: usize, per_client: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("db.sqlite"))).unwrap();
    // A typical small API object.
    let value = Bytes::from(vec![b'x'; 512]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0..per_client {
                    store
                        .create(&format!("/registry/configmaps/ns{c}/cm{i}"), value.clone())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = clients * per_client;
    assert_eq!(store.current_revision().await.unwrap(), total as i64);
    assert_eq!(
        store.count("/registry/configmaps/").await.unwrap(),
        total as i64
    );
    if clients > 1 {
        let start = Instant::now();
        let all = store.list("/registry/configmaps/", "", 0, 0).await.unwrap();
        assert_eq!(all.kvs.len(), total);
        let full = start.elapsed();
        let start = Instant::now();
        let page = store
            .list("/registry/configmaps/", "/registry/configmaps/ns7/", 500, 0)
            .await
            .unwrap();
        assert!(page.more && page.kvs.len() == 500);
        println!(
            "sqlite list of {total} keys: {full:?}; a page of 500 from the middle: {:?}",
            start.elapsed()
        );
    }
    let store: Arc<dyn Store> = store;
    drop(store);
    total as f64 / elapsed.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_share_commits() {
    let one = run(1, 500).await;
    let many = run(CLIENTS, PER_CLIENT).await;
    println!("sqlite creates/s: 1 client {one:.0}, {CLIENTS} clients {many:.0}");
}
