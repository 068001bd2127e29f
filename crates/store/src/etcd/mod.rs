//! The etcd v3 backend: the store on a real etcd cluster, as upstream's API server uses it.
//!
//! - this file: [`EtcdStore`] (reads, compare-and-swap writes as etcd transactions, compaction);
//! - `watch`: watch streams that survive a lost member by resuming after the last event;
//! - `process`: [`EtcdProcess`], a local etcd member started from Debian's `/usr/bin/etcd` (tests,
//!   benchmarks).
//!
//! Keys are stored exactly as given (`/registry/<resource>/<namespace>/<name>`, upstream's
//! layout) and etcd's revisions are the store's: an object's `mod_revision` is its
//! `resourceVersion`. etcd never reports revision 0: a fresh cluster is at revision 1.

mod process;
#[cfg(test)]
mod tests;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::fanout::prefix_end;
use crate::{Error, KeyValue, ListResult, Result, Revision, Store, WatchStream};

pub use process::{EtcdCluster, EtcdProcess, EtcdServerTls, ETCD_BINARY};

/// How to connect an [`EtcdStore`].
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members (`http://host:2379`, or `https://…` with TLS). The
    /// client balances requests across them and skips members that are down.
    pub endpoints: Vec<String>,
    /// CA bundle that signed the members' serving certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to etcd (PEM); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Live events a watcher may leave unread before it is cut off with `WatchLagged`.
    pub watch_buffer: usize,
    /// How often the background compaction runs; each run compacts to the revision the previous
    /// run saw, so one interval of history is kept (upstream: every 5 minutes). `None`: never.
    pub compaction_interval: Option<Duration>,
    /// How long `connect` waits for the cluster to answer.
    pub dial_timeout: Duration,
    /// How long one request may take, retries of reads on other members included.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Defaults for a cluster at `endpoints`: compaction every 5 minutes, as upstream does.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            watch_buffer: crate::DEFAULT_WATCH_BUFFER,
            compaction_interval: Some(Duration::from_secs(300)),
            dial_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// A [`Store`] on an etcd v3 cluster.
pub struct EtcdStore {
    client: Client,
    opts: EtcdOptions,
    /// A lower bound of the cluster's compacted revision (compaction never goes back).
    compacted_hint: Arc<AtomicI64>,
    compactor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The key read by revision probes: any key will do, a single-key range is the cheapest read.
const PROBE_KEY: &[u8] = b"/registry/";

impl EtcdStore {
    /// Connects to the cluster and waits (up to `dial_timeout`) until it answers a read. Starts
    /// the background compaction when `compaction_interval` is set.
    pub async fn connect(opts: EtcdOptions) -> Result<Arc<EtcdStore>> {
        if opts.endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoints given".into()));
        }
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others cancels our watches instead of going silent.
            .with_require_leader(true);
        if opts.ca_file.is_some() || opts.cert_file.is_some() {
            copts = copts.with_tls(tls_options(&opts)?);
        }
        let endpoints = if opts.ca_file.is_some() || opts.cert_file.is_some() {
            // etcd-client only speaks TLS to https:// URLs.
            opts.endpoints
                .iter()
                .map(|e| match e.strip_prefix("http://") {
                    Some(rest) => format!("https://{rest}"),
                    None => e.clone(),
                })
                .collect()
        } else {
            opts.endpoints.clone()
        };
        let client = Client::connect(&endpoints, Some(copts))
            .await
            .map_err(|e| Error::Backend(format!("connecting to etcd: {e}")))?;
        let store = EtcdStore {
            client,
            compacted_hint: Arc::new(AtomicI64::new(0)),
            compactor: Mutex::new(None),
            opts,
        };
        let deadline = tokio::time::Instant::now() + store.opts.dial_timeout;
        loop {
            match store.probe(0).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "etcd not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(Error::Backend(format!(
                        "etcd at {} did not answer within {:?}: {e}",
                        store.opts.endpoints.join(","),
                        store.opts.dial_timeout
                    )))
                }
            }
        }
        let store = Arc::new(store);
        if let Some(every) = store.opts.compaction_interval {
            let handle = tokio::spawn(compact_periodically(
                store.client.clone(),
                store.compacted_hint.clone(),
                every,
            ));
            *store.compactor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        Ok(store)
    }

    /// The options the store was connected with.
    pub fn options(&self) -> &EtcdOptions {
        &self.opts
    }

    /// The underlying etcd client (maintenance: snapshots, status).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Streams a consistent snapshot of the member's backend database (etcd's own snapshot
    /// format, restorable with `etcdctl snapshot restore`) into `out`; returns its size.
    pub async fn snapshot_to(&self, out: &mut (impl std::io::Write + Send)) -> Result<u64> {
        let mut stream = self
            .client
            .maintenance_client()
            .snapshot()
            .await
            .map_err(backend)?;
        let mut size = 0u64;
        while let Some(part) = stream.message().await.map_err(backend)? {
            out.write_all(part.blob())
                .map_err(|e| Error::Backend(format!("writing the snapshot: {e}")))?;
            size += part.blob().len() as u64;
        }
        if size == 0 {
            return Err(Error::Backend("etcd sent an empty snapshot".into()));
        }
        Ok(size)
    }

    /// Runs a read, retrying on transport failures (a member going away) until
    /// `request_timeout`; reads are safe to repeat on another member.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.opts.request_timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout_at(deadline, f(self.client.clone())).await;
            match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_unavailable(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "etcd read failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(backend(e)),
                Err(_) => {
                    return Err(Error::Backend(format!(
                        "etcd request timed out after {:?}",
                        self.opts.request_timeout
                    )))
                }
            }
        }
    }

    /// Runs a write, repeating it only when it certainly never reached etcd (no connection
    /// to the member it was sent to): a write whose outcome is unknown must not be repeated
    /// blindly (a retried create could report `AlreadyExists` for its own success).
    async fn write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.opts.request_timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            match tokio::time::timeout_at(deadline, f(self.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_not_sent(&e) && tokio::time::Instant::now() < deadline => {
                    // The balancer still lists a dead member: another pick reaches a live one.
                    tracing::debug!(error = %e, "etcd write not sent; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Ok(Err(e)) => return Err(backend(e)),
                Err(_) => {
                    return Err(Error::Backend(format!(
                        "etcd request timed out after {:?}",
                        self.opts.request_timeout
                    )))
                }
            }
        }
    }

    /// Runs a transaction with [`Self::write`].
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.write(|c| {
            let txn = txn.clone();
            async move { kv_client(&c).txn(txn).await }
        })
        .await
    }

    /// A single-key read at `revision`; returns the header revision.
    async fn probe(&self, revision: Revision) -> std::result::Result<Revision, etcd_client::Error> {
        let mut kv = kv_client(&self.client);
        let resp = kv
            .get(
                PROBE_KEY,
                Some(
                    GetOptions::new()
                        .with_count_only()
                        .with_revision(revision.max(0)),
                ),
            )
            .await?;
        Ok(header_revision(resp.header()))
    }

    /// Maps a read's error at `revision` to `Compacted` or `FutureRevision` where it is one.
    async fn revision_error(&self, e: Error, revision: Revision) -> Error {
        match &e {
            Error::Backend(msg) if msg.contains(COMPACTED_MSG) => {
                match self.compacted_revision().await {
                    Ok(compacted) => Error::Compacted {
                        requested: revision,
                        compacted,
                    },
                    Err(e) => e,
                }
            }
            Error::Backend(msg) if msg.contains(FUTURE_MSG) => {
                match self.current_revision().await {
                    Ok(current) => Error::FutureRevision {
                        requested: revision,
                        current,
                    },
                    Err(e) => e,
                }
            }
            _ => e,
        }
    }

    /// Reads `key`, the result of a failed compare-and-swap, from a transaction's else branch.
    fn failed_txn_current(resp: &etcd_client::TxnResponse) -> Option<KeyValue> {
        resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| convert_kv(kv).ok()),
            _ => None,
        })
    }

    fn compare(key: &str, expected: Revision) -> Compare {
        if expected == 0 {
            Compare::create_revision(key, CompareOp::Greater, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(h) = self
            .compactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

const COMPACTED_MSG: &str = "required revision has been compacted";
const FUTURE_MSG: &str = "required revision is a future revision";

/// Maps an etcd error; compaction and future-revision errors are mapped further where the
/// requested revision is known ([`EtcdStore::revision_error`]).
fn backend(e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {e}"))
}

/// True for errors that mean "this member could not be reached or cannot serve now".
fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC codes CANCELLED (1), UNKNOWN (2) and UNAVAILABLE (14); tonic is not re-exported.
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code() as i32, 1 | 2 | 14)
                || s.message().contains("no leader")
                || s.message().contains("leader changed")
        }
        _ => false,
    }
}

/// True for errors that mean the request never left this process: connecting to the member
/// failed.
fn is_not_sent(e: &etcd_client::Error) -> bool {
    let msg = match e {
        etcd_client::Error::TransportError(t) => format!("{t:?}"),
        etcd_client::Error::GRpcStatus(s) => format!("{} {:?}", s.message(), s),
        _ => return false,
    };
    msg.contains("tcp connect error")
        || msg.contains("ConnectError")
        || msg.contains("Connection refused")
}

/// Responses as large as etcd sends them: a list of many objects easily passes tonic's 4 MiB
/// default (etcd's own client accepts up to 2 GiB).
const MAX_RESPONSE: usize = i32::MAX as usize;

pub(crate) fn kv_client(c: &Client) -> etcd_client::KvClient {
    c.kv_client().max_decoding_message_size(MAX_RESPONSE)
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map(|h| h.revision()).unwrap_or(0)
}

fn tls_options(opts: &EtcdOptions) -> Result<etcd_client::TlsOptions> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| Error::Backend(format!("reading {}: {e}", p.display())))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &opts.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Backend(
                "an etcd client certificate needs both a certificate and a key file".into(),
            ))
        }
    }
    Ok(tls)
}

pub(crate) fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| Error::Backend(format!("etcd key is not UTF-8: {:?}", kv.key())))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The etcd key range of `prefix` (from `start` if later): `(key, range_end)`. The empty prefix
/// is every key (`\0` to etcd's "all keys" end `\0`).
fn prefix_range(prefix: &str, start: &str) -> (Vec<u8>, Vec<u8>) {
    let from = if start > prefix { start } else { prefix };
    let key = if from.is_empty() {
        vec![0]
    } else {
        from.as_bytes().to_vec()
    };
    let end = match prefix_end(prefix) {
        Some(end) => end.into_bytes(),
        None => vec![0],
    };
    (key, end)
}

/// Upstream's compactor in spirit: each tick compacts to the revision seen one tick earlier, so
/// one interval of history stays for watchers that fell behind. Several servers on one cluster
/// may run it: compacting an already compacted revision is harmless.
async fn compact_periodically(client: Client, hint: Arc<AtomicI64>, every: Duration) {
    let mut last_seen: Option<Revision> = None;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut kv = kv_client(&client);
        let current = match kv
            .get(PROBE_KEY, Some(GetOptions::new().with_count_only()))
            .await
        {
            Ok(r) => header_revision(r.header()),
            Err(e) => {
                tracing::warn!(error = %e, "etcd compaction: reading the revision failed");
                continue;
            }
        };
        if let Some(target) = last_seen {
            if target > hint.load(Ordering::Acquire) {
                match kv.compact(target, None).await {
                    Ok(_) => {
                        hint.fetch_max(target, Ordering::AcqRel);
                        tracing::info!(revision = target, "etcd compacted");
                    }
                    Err(e) if e.to_string().contains(COMPACTED_MSG) => {
                        hint.fetch_max(target, Ordering::AcqRel);
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd compaction failed"),
                }
            }
        }
        last_seen = Some(current);
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision> {
        self.read(|c| async move {
            let mut kv = kv_client(&c);
            let r = kv
                .get(PROBE_KEY, Some(GetOptions::new().with_count_only()))
                .await?;
            Ok(header_revision(r.header()))
        })
        .await
    }

    /// etcd does not report its compacted revision: it is the oldest revision a read at a
    /// revision still succeeds at, found by bisection from the last one known.
    async fn compacted_revision(&self) -> Result<Revision> {
        let ok_at = |rev: Revision| async move {
            match self.read(|_| self.probe(rev)).await {
                Ok(_) => Ok(true),
                Err(Error::Backend(m)) if m.contains(COMPACTED_MSG) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let hint = self.compacted_hint.load(Ordering::Acquire);
        let lo = hint.max(1);
        if ok_at(lo).await? {
            return Ok(if lo == 1 { 0 } else { lo });
        }
        // ok_at(lo) is false and ok_at(current) is true (the current revision is never
        // compacted away): bisect for the first revision that reads.
        let (mut bad, mut good) = (lo, self.current_revision().await?);
        while good - bad > 1 {
            let mid = bad + (good - bad) / 2;
            if ok_at(mid).await? {
                good = mid;
            } else {
                bad = mid;
            }
        }
        self.compacted_hint.fetch_max(good, Ordering::AcqRel);
        Ok(good)
    }

    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        let res = self
            .read(|c| async move {
                let mut kv = kv_client(&c);
                kv.get(key, Some(GetOptions::new().with_revision(revision)))
                    .await
            })
            .await;
        match res {
            Ok(r) => r.kvs().first().map(convert_kv).transpose(),
            Err(e) => Err(self.revision_error(e, revision).await),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let (key, end) = prefix_range(prefix, start);
        if end != [0] && key >= end {
            // Nothing under the prefix at or after `start`; still answer for the revision.
            let at = if revision == 0 {
                self.current_revision().await?
            } else {
                match self.read(|_| self.probe(revision)).await {
                    Ok(_) => revision,
                    Err(e) => return Err(self.revision_error(e, revision).await),
                }
            };
            return Ok(ListResult {
                kvs: Vec::new(),
                revision: at,
                more: false,
            });
        }
        let res = self
            .read(|c| {
                let (key, end) = (key.clone(), end.clone());
                async move {
                    let mut kv = kv_client(&c);
                    kv.get(
                        key,
                        Some(
                            GetOptions::new()
                                .with_range(end)
                                .with_limit(limit as i64)
                                .with_revision(revision),
                        ),
                    )
                    .await
                }
            })
            .await;
        let resp = match res {
            Ok(r) => r,
            Err(e) => return Err(self.revision_error(e, revision).await),
        };
        let kvs = resp
            .kvs()
            .iter()
            .map(convert_kv)
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            kvs,
            revision: if revision == 0 {
                header_revision(resp.header())
            } else {
                revision
            },
            more: resp.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let (key, end) = prefix_range(prefix, "");
        self.read(|c| {
            let (key, end) = (key.clone(), end.clone());
            async move {
                let mut kv = kv_client(&c);
                let r = kv
                    .get(
                        key,
                        Some(GetOptions::new().with_range(end).with_count_only()),
                    )
                    .await?;
                Ok(r.count())
            }
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.to_owned()));
        }
        let rev = header_revision(resp.header());
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Self::compare(key, expected)])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(match Self::failed_txn_current(&resp) {
                None => Error::NotFound(key.to_owned()),
                Some(current) => Error::Conflict {
                    key: key.to_owned(),
                    current: Box::new(Some(current)),
                },
            });
        }
        let rev = header_revision(resp.header());
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| Error::Backend("etcd put returned no previous value".into()))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Self::compare(key, expected)])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(match Self::failed_txn_current(&resp) {
                None => Error::NotFound(key.to_owned()),
                Some(current) => Error::Conflict {
                    key: key.to_owned(),
                    current: Box::new(Some(current)),
                },
            });
        }
        let rev = header_revision(resp.header());
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(convert_kv),
                _ => None,
            })
            .ok_or_else(|| Error::Backend("etcd delete returned no previous value".into()))??;
        Ok(KeyValue {
            mod_revision: rev,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // etcd itself accepts a watch from the compacted revision on (after = compacted - 1);
        // the contract is stricter: the history after `after` must be complete.
        let compacted = match self.read(|_| self.probe(after.max(1))).await {
            Ok(_) => None,
            Err(Error::Backend(m)) if m.contains(COMPACTED_MSG) => {
                Some(self.compacted_revision().await?)
            }
            Err(Error::Backend(m)) if m.contains(FUTURE_MSG) => None,
            Err(e) => return Err(e),
        };
        let compacted = match compacted {
            Some(c) => c,
            // `after == 0` asks for all of history: gone once anything was compacted.
            None if after == 0 => self.compacted_revision().await?,
            None => 0,
        };
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        watch::start(
            self.client.clone(),
            prefix,
            after,
            self.opts.watch_buffer,
            self.compacted_hint.clone(),
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self
            .write(|c| async move {
                kv_client(&c)
                    .compact(revision, Some(CompactionOptions::new()))
                    .await
            })
            .await
        {
            Ok(_) => {
                self.compacted_hint.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => Err(self.revision_error(e, revision).await),
        }
    }
}
