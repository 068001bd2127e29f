//! Prometheus metrics: requests by verb, resource and code with latency, store operation
//! latency, and watches.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::{KeyValue, ListResult, Revision, Store, WatchStream};

/// Histogram bucket bounds in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// The server's metrics registry.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    store_ops: Mutex<BTreeMap<&'static str, Histogram>>,
    watches: Mutex<BTreeMap<String, i64>>,
    watches_cut: AtomicU64,
}

impl Metrics {
    /// Records one request.
    pub fn request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((verb.to_string(), resource.to_string(), code))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("metrics lock")
            .entry((verb.to_string(), resource.to_string()))
            .or_default()
            .observe(took.as_secs_f64());
    }

    fn store_op(&self, op: &'static str, took: Duration) {
        self.store_ops
            .lock()
            .expect("metrics lock")
            .entry(op)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// A watch started.
    pub fn watch_started(&self, resource: &str) {
        *self
            .watches
            .lock()
            .expect("metrics lock")
            .entry(resource.to_string())
            .or_default() += 1;
    }

    /// A watch ended.
    pub fn watch_ended(&self, resource: &str) {
        *self
            .watches
            .lock()
            .expect("metrics lock")
            .entry(resource.to_string())
            .or_default() -= 1;
    }

    /// A watcher was cut off for falling behind.
    pub fn watch_cut_off(&self, _resource: &str) {
        self.watches_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, res, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, res), h) in self.latency.lock().expect("metrics lock").iter() {
            h.render(
                &mut out,
                "apiserver_request_duration_seconds",
                &format!("verb=\"{verb}\",resource=\"{res}\""),
            );
        }
        out.push_str("# HELP skiff_store_operation_duration_seconds Latency of datastore operations.\n# TYPE skiff_store_operation_duration_seconds histogram\n");
        for (op, h) in self.store_ops.lock().expect("metrics lock").iter() {
            h.render(
                &mut out,
                "skiff_store_operation_duration_seconds",
                &format!("operation=\"{op}\""),
            );
        }
        out.push_str("# HELP apiserver_registered_watchers Number of currently registered watchers for a given resource.\n# TYPE apiserver_registered_watchers gauge\n");
        for (res, n) in self.watches.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "apiserver_registered_watchers{{resource=\"{res}\"}} {n}"
            );
        }
        out.push_str("# HELP skiff_watchers_cut_off_total Watchers terminated for falling behind.\n# TYPE skiff_watchers_cut_off_total counter\n");
        let _ = writeln!(
            out,
            "skiff_watchers_cut_off_total {}",
            self.watches_cut.load(Ordering::Relaxed)
        );
        out
    }
}

/// A store that records the latency of every operation.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $e:expr) => {{
        let t = Instant::now();
        let r = $e.await;
        $self.metrics.store_op($op, t.elapsed());
        r
    }};
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn current_revision(&self) -> skiff_store::Result<Revision> {
        timed!(self, "current_revision", self.inner.current_revision())
    }
    async fn compacted_revision(&self) -> skiff_store::Result<Revision> {
        self.inner.compacted_revision().await
    }
    async fn get(&self, key: &str, revision: Revision) -> skiff_store::Result<Option<KeyValue>> {
        timed!(self, "get", self.inner.get(key, revision))
    }
    async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
    ) -> skiff_store::Result<ListResult> {
        timed!(
            self,
            "list",
            self.inner.list(prefix, start, limit, revision)
        )
    }
    async fn count(&self, prefix: &str) -> skiff_store::Result<i64> {
        timed!(self, "count", self.inner.count(prefix))
    }
    async fn create(&self, key: &str, value: Bytes) -> skiff_store::Result<KeyValue> {
        timed!(self, "create", self.inner.create(key, value))
    }
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> skiff_store::Result<KeyValue> {
        timed!(self, "update", self.inner.update(key, value, expected))
    }
    async fn delete(&self, key: &str, expected: Revision) -> skiff_store::Result<KeyValue> {
        timed!(self, "delete", self.inner.delete(key, expected))
    }
    async fn watch(&self, prefix: &str, after: Revision) -> skiff_store::Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }
    async fn compact(&self, revision: Revision) -> skiff_store::Result<()> {
        timed!(self, "compact", self.inner.compact(revision))
    }
}
