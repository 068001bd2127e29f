//! `skiff bench store`: the same datastore operations against the embedded SQLite store and
//! etcd in one run, printed side by side with the etcd/SQLite ratio.
//!
//! etcd is started by the benchmark (Debian's `/usr/bin/etcd`, one member on loopback in a
//! temporary directory) unless `--etcd-endpoint` names one. Both stores fsync every commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use skiff_store::etcd::EtcdProcess;
use skiff_store::{EtcdOptions, EtcdStore, SqliteOptions, SqliteStore, Store};

/// Flags of `skiff bench store`.
#[derive(Args, Debug)]
pub struct StoreBench {
    /// Operations per throughput scenario (create, get, update).
    #[arg(long, default_value_t = 2_000)]
    ops: usize,
    /// Keys in the list scenario.
    #[arg(long, default_value_t = 10_000)]
    list_keys: usize,
    /// Writes timed in the watch-latency scenario.
    #[arg(long, default_value_t = 1_000)]
    watch_events: usize,
    /// Use this etcd (comma-separated client URLs) instead of starting one; the benchmark
    /// writes under `/skiff-bench/` and removes its keys afterwards.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoint: Vec<String>,
}

/// One backend's figures, in print order.
struct Figures(Vec<(String, f64, Unit)>);

#[derive(Clone, Copy)]
enum Unit {
    /// Operations per second: higher is better.
    PerSec,
    /// Milliseconds: lower is better.
    Ms,
}

fn value() -> Bytes {
    // About the size of a small ConfigMap as the API server stores it.
    let data = "x".repeat(400);
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"bench","namespace":"default","uid":"6f1c9a52-0b61-4d35-9b7f-3c1f0f6a2b11","creationTimestamp":"2025-01-01T00:00:00Z"}},"data":{{"k":"{data}"}}}}"#
    ))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run_one(s: Arc<dyn Store>, root: &str, a: &StoreBench) -> Result<Figures> {
    let mut f = Vec::new();
    let v = value();

    // Create, one client.
    let t = Instant::now();
    for i in 0..a.ops {
        s.create(&format!("{root}c1/k{i:06}"), v.clone()).await?;
    }
    f.push((
        "create, 1 client (ops/s)".to_owned(),
        a.ops as f64 / t.elapsed().as_secs_f64(),
        Unit::PerSec,
    ));

    // Create, 16 clients.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let s = s.clone();
        let (root, v, n) = (root.to_owned(), v.clone(), a.ops / 16);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                s.create(&format!("{root}c16/w{c:02}/k{i:06}"), v.clone())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    f.push((
        "create, 16 clients (ops/s)".to_owned(),
        (a.ops / 16 * 16) as f64 / t.elapsed().as_secs_f64(),
        Unit::PerSec,
    ));

    // Get and update (compare-and-swap), one client, over the keys created above.
    let mut lat = Vec::with_capacity(a.ops);
    let t = Instant::now();
    let mut revs = Vec::with_capacity(a.ops);
    for i in 0..a.ops {
        let t1 = Instant::now();
        let kv = s
            .get(&format!("{root}c1/k{i:06}"), 0)
            .await?
            .context("created key missing")?;
        lat.push(t1.elapsed());
        revs.push(kv.mod_revision);
    }
    let total = t.elapsed();
    lat.sort_unstable();
    f.push((
        "get (ops/s)".to_owned(),
        a.ops as f64 / total.as_secs_f64(),
        Unit::PerSec,
    ));
    f.push(("get p99 (ms)".to_owned(), pct(&lat, 0.99), Unit::Ms));
    let t = Instant::now();
    for (i, rev) in revs.iter().enumerate() {
        s.update(&format!("{root}c1/k{i:06}"), v.clone(), *rev)
            .await?;
    }
    f.push((
        "update, compare-and-swap (ops/s)".to_owned(),
        a.ops as f64 / t.elapsed().as_secs_f64(),
        Unit::PerSec,
    ));

    // List of N keys: full, and in pages of 500 at one revision.
    let list_root = format!("{root}list/");
    let mut tasks = Vec::new();
    for c in 0..16 {
        let s = s.clone();
        let (root, v, n) = (list_root.clone(), v.clone(), a.list_keys);
        tasks.push(tokio::spawn(async move {
            for i in (c..n).step_by(16) {
                s.create(&format!("{root}k{i:06}"), v.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut full = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = s.list(&list_root, "", 0, 0).await?;
        full.push(t.elapsed());
        anyhow::ensure!(l.kvs.len() == a.list_keys, "list returned {}", l.kvs.len());
        let t = Instant::now();
        let mut start = String::new();
        let mut n = 0;
        let mut at = 0;
        loop {
            let page = s.list(&list_root, &start, 500, at).await?;
            at = page.revision;
            n += page.kvs.len();
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = format!("{}\0", last.key),
                _ => break,
            }
        }
        paged.push(t.elapsed());
        anyhow::ensure!(n == a.list_keys, "paged list returned {n}");
    }
    full.sort_unstable();
    paged.sort_unstable();
    f.push((
        format!("list {} keys (ms, median of 5)", a.list_keys),
        pct(&full, 0.5),
        Unit::Ms,
    ));
    f.push((
        format!("list {} keys, pages of 500 (ms)", a.list_keys),
        pct(&paged, 0.5),
        Unit::Ms,
    ));

    // Watch latency: from the write call to the event's arrival, one write at a time.
    let wroot = format!("{root}watch/");
    let from = s.current_revision().await?;
    let mut w = s.watch(&wroot, from).await?;
    let mut lat = Vec::with_capacity(a.watch_events);
    let key = format!("{wroot}k");
    s.create(&key, v.clone()).await?;
    w.next().await.context("watch ended")??;
    for _ in 0..a.watch_events {
        let t = Instant::now();
        let kv = s.update(&key, v.clone(), 0).await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .context("no watch event within 10s")?
                .context("watch ended")??;
            if ev.revision() == kv.mod_revision {
                break;
            }
        }
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    f.push((
        "watch latency p50 (ms)".to_owned(),
        pct(&lat, 0.5),
        Unit::Ms,
    ));
    f.push((
        "watch latency p99 (ms)".to_owned(),
        pct(&lat, 0.99),
        Unit::Ms,
    ));
    Ok(Figures(f))
}

/// Deletes every key under `root` (the benchmark's, on a shared etcd).
async fn clean(s: &dyn Store, root: &str) -> Result<()> {
    loop {
        let page = s.list(root, "", 1000, 0).await?;
        for kv in &page.kvs {
            let _ = s.delete(&kv.key, 0).await;
        }
        if !page.more {
            return Ok(());
        }
    }
}

/// Runs `skiff bench store`.
pub async fn run(a: StoreBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = "/skiff-bench/";

    eprintln!("SQLite: {} ...", dir.path().join("state.db").display());
    let sqlite = {
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("state.db")))?;
        let figs = run_one(store.clone(), root, &a).await?;
        store.close();
        figs
    };

    let mut _member = None;
    let endpoints = if a.etcd_endpoint.is_empty() {
        let m = EtcdProcess::start(&dir.path().join("etcd"), Duration::from_secs(30))
            .await
            .context("starting etcd (Debian package etcd-server)")?;
        let url = m.client_url().to_owned();
        _member = Some(m);
        vec![url]
    } else {
        a.etcd_endpoint.clone()
    };
    eprintln!("etcd: {} ...", endpoints.join(","));
    let etcd = {
        let mut opts = EtcdOptions::new(endpoints);
        opts.compaction_interval = None;
        let store = EtcdStore::connect(opts).await?;
        let figs = run_one(store.clone(), root, &a).await;
        if !a.etcd_endpoint.is_empty() {
            clean(&*store, root).await?;
        }
        figs?
    };

    println!(
        "{:<40} {:>12} {:>12} {:>12}",
        "skiff bench store", "SQLite", "etcd", "etcd/SQLite"
    );
    for ((name, s, unit), (_, e, _)) in sqlite.0.iter().zip(etcd.0.iter()) {
        let fmt = |x: f64| match unit {
            Unit::PerSec => format!("{x:.0}"),
            Unit::Ms => format!("{x:.2}"),
        };
        let ratio = if *s > 0.0 { e / s } else { f64::NAN };
        println!(
            "{name:<40} {:>12} {:>12} {:>11.2}x",
            fmt(*s),
            fmt(*e),
            ratio
        );
    }
    Ok(())
}
