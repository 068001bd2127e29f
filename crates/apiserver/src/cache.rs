//! The watch cache: one store watch for the whole key space, the latest state of every object
//! and a window of recent events, fanned out to every API watcher. Lists that may be served from
//! memory are served from here, so that many watchers and lists never each hit the store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use skiff_store::{EventType, Revision, Store};
use tokio::sync::{broadcast, watch};

use crate::error::{ApiError, ApiResult};

/// Events kept for watchers that start from a past revision.
const HISTORY: usize = 20_000;
/// Events a watcher may fall behind before it is cut off.
const FANOUT_BUFFER: usize = 20_000;
/// The newest events keep their decoded objects for the watchers that need them; older ones
/// (which only a watcher far behind still reads) decode again, so history stays bytes.
const DECODED_WINDOW: usize = 128;

/// One object as served: its JSON (storage version) with `resourceVersion` filled in.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// Store key.
    pub key: Arc<str>,
    /// Serialized object.
    pub bytes: Bytes,
    /// Revision of its last write.
    pub revision: Revision,
    /// Whether `bytes` name their `apiVersion` and `kind`: then a watch event of the storage
    /// version is `bytes` as they are.
    pub typed: bool,
}

/// One change, as fanned out to watchers.
#[derive(Debug)]
pub struct CacheEvent {
    /// Create, update or delete.
    pub event_type: EventType,
    /// The object after the change (for a delete: its last state, at the delete's revision).
    pub object: CachedObject,
    /// The object before the change, as stored (without its resourceVersion: only selectors
    /// read it).
    pub prev: Option<Bytes>,
    /// What selectors read of `object` and `prev` (`skiff_api::selector::selector_view`),
    /// decoded on first use: every watcher with a selector needs them, and one decode for all
    /// of them costs a fraction of one each.
    decoded: Mutex<Decoded>,
}

#[derive(Debug, Default)]
struct Decoded {
    object: Option<Arc<Value>>,
    prev: Option<Arc<Value>>,
    /// Out of the window: decode on every call, keep nothing.
    retired: bool,
}

impl CacheEvent {
    /// An event of the cache.
    pub fn new(event_type: EventType, object: CachedObject, prev: Option<Bytes>) -> CacheEvent {
        CacheEvent {
            event_type,
            object,
            prev,
            decoded: Mutex::default(),
        }
    }

    /// What selectors read of the object after the change (`None` if it does not decode).
    pub fn view(&self) -> Option<Arc<Value>> {
        self.decode(|d| &mut d.object, Some(&self.object.bytes))
    }

    /// What selectors read of the object before the change (`None` for a create, or if it
    /// does not decode).
    pub fn prev_view(&self) -> Option<Arc<Value>> {
        self.decode(|d| &mut d.prev, self.prev.as_ref())
    }

    fn decode(
        &self,
        slot: impl FnOnce(&mut Decoded) -> &mut Option<Arc<Value>>,
        bytes: Option<&Bytes>,
    ) -> Option<Arc<Value>> {
        let parse = || {
            bytes
                .and_then(|b| skiff_api::selector::selector_view(b).ok())
                .map(Arc::new)
        };
        let mut d = self.decoded.lock().expect("decoded lock");
        if d.retired {
            drop(d);
            return parse();
        }
        let slot = slot(&mut d);
        if slot.is_none() {
            *slot = parse();
        }
        slot.clone()
    }

    /// Drops the decoded objects and stops keeping them.
    fn retire(&self) {
        let mut d = self.decoded.lock().expect("decoded lock");
        *d = Decoded {
            retired: true,
            ..Decoded::default()
        };
    }
}

struct State {
    revision: Revision,
    /// History is complete for revisions greater than this.
    oldest: Revision,
    objects: BTreeMap<Arc<str>, CachedObject>,
    history: VecDeque<Arc<CacheEvent>>,
}

/// The watch cache of one API server.
pub struct WatchCache {
    state: RwLock<State>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
    rev_tx: watch::Sender<Revision>,
    /// Bumped when the cache is rebuilt, so that watchers of the old one end.
    epoch: watch::Sender<u64>,
}

/// The cache's form of a stored object: with its resourceVersion, and whether it is typed.
fn cached(raw: &[u8], revision: Revision) -> Result<(Bytes, bool), serde_json::Error> {
    if let Some(b) = insert_resource_version(raw, revision) {
        return Ok((b, true));
    }
    let mut v: Value = serde_json::from_slice(raw)?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    let typed = v.get("apiVersion").is_some() && v.get("kind").is_some();
    Ok((Bytes::from(serde_json::to_vec(&v)?), typed))
}

/// The resourceVersion written into the stored bytes without decoding them, for the shape the
/// API server stores (`{"apiVersion":"…","kind":"…","metadata":{…},…}`, no resourceVersion):
/// every write passes through here, and decoding and re-encoding a pod costs more than the
/// rest of its trip through the cache. `None` for any other shape (the caller decodes).
fn insert_resource_version(raw: &[u8], revision: Revision) -> Option<Bytes> {
    fn plain_string(b: &[u8]) -> Option<usize> {
        // The length of a JSON string's contents up to its closing quote, if it has no escapes.
        let end = b.iter().position(|&c| c == b'"' || c == b'\\')?;
        (b[end] == b'"').then_some(end)
    }
    let rest = raw.strip_prefix(b"{\"apiVersion\":\"")?;
    let rest = &rest[plain_string(rest)? + 1..];
    let rest = rest.strip_prefix(b",\"kind\":\"")?;
    let rest = &rest[plain_string(rest)? + 1..];
    let rest = rest.strip_prefix(b",\"metadata\":{")?;
    if raw.windows(17).any(|w| w == b"\"resourceVersion\"") {
        return None; // written by something else; let the decoder replace it
    }
    let at = raw.len() - rest.len();
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    let mut out = Vec::with_capacity(raw.len() + rv.len() + 1);
    out.extend_from_slice(&raw[..at]);
    out.extend_from_slice(rv.as_bytes());
    if rest.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(Bytes::from(out))
}

impl WatchCache {
    /// Loads the current state and starts following the store.
    pub async fn start(store: Arc<dyn Store>) -> anyhow::Result<Arc<WatchCache>> {
        let (tx, _) = broadcast::channel(FANOUT_BUFFER);
        let (rev_tx, _) = watch::channel(0);
        let (epoch, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State {
                revision: 0,
                oldest: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            tx,
            rev_tx,
            epoch,
        });
        let start = cache.load(&*store).await?;
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut from = start;
            loop {
                let Some(cache) = weak.upgrade() else { return };
                match cache.follow(&*store, from).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache lost its store watch; reloading");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        match cache.load(&*store).await {
                            Ok(rev) => from = rev,
                            Err(e) => tracing::error!(error = %e, "watch cache reload failed"),
                        }
                    }
                }
            }
        });
        Ok(cache)
    }

    /// Replaces the state with a fresh list of the store; returns its revision.
    async fn load(&self, store: &dyn Store) -> anyhow::Result<Revision> {
        let revision = store.current_revision().await?;
        let mut objects = BTreeMap::new();
        let mut start = String::new();
        loop {
            let page = store.list("/registry/", &start, 5000, revision).await?;
            for kv in &page.kvs {
                let key: Arc<str> = Arc::from(kv.key.as_str());
                let (bytes, typed) = cached(&kv.value, kv.mod_revision)?;
                objects.insert(
                    key.clone(),
                    CachedObject {
                        key,
                        bytes,
                        revision: kv.mod_revision,
                        typed,
                    },
                );
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start = format!("{}\0", last.key),
                _ => break,
            }
        }
        {
            let mut st = self.state.write().expect("cache lock");
            st.objects = objects;
            st.history.clear();
            st.revision = revision;
            st.oldest = revision;
        }
        self.epoch.send_modify(|e| *e += 1);
        self.rev_tx.send_replace(revision);
        Ok(revision)
    }

    async fn follow(&self, store: &dyn Store, from: Revision) -> anyhow::Result<()> {
        let mut stream = store.watch("/registry/", from).await?;
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            let revision = ev.kv.mod_revision;
            let key: Arc<str> = Arc::from(ev.kv.key.as_str());
            let (bytes, typed) = cached(&ev.kv.value, revision)?;
            let prev = ev.prev.map(|p| p.value);
            let object = CachedObject {
                key: key.clone(),
                bytes,
                revision,
                typed,
            };
            let event = Arc::new(CacheEvent::new(ev.event_type, object.clone(), prev));
            {
                let mut st = self.state.write().expect("cache lock");
                match ev.event_type {
                    EventType::Delete => {
                        st.objects.remove(&key);
                    }
                    _ => {
                        st.objects.insert(key, object);
                    }
                }
                st.revision = revision;
                st.history.push_back(event.clone());
                if let Some(old) = st
                    .history
                    .len()
                    .checked_sub(DECODED_WINDOW + 1)
                    .and_then(|i| st.history.get(i))
                {
                    old.retire();
                }
                while st.history.len() > HISTORY {
                    if let Some(old) = st.history.pop_front() {
                        st.oldest = old.object.revision;
                    }
                }
                // Sent under the lock so that subscribers see no gap and no duplicate.
                let _ = self.tx.send(event);
            }
            self.rev_tx.send_replace(revision);
        }
        Ok(())
    }

    /// The latest revision the cache has applied.
    pub fn revision(&self) -> Revision {
        self.state.read().expect("cache lock").revision
    }

    /// Waits until the cache has applied `revision`, or fails with upstream's 504 after `timeout`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> ApiResult<()> {
        let mut rx = self.rev_tx.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::timeout(format!(
                "Too large resource version: {}, current: {}",
                revision,
                self.revision()
            ))),
        }
    }

    /// The object at `key`, as of [`WatchCache::revision`] (which may trail the store by the
    /// events still in flight).
    pub fn get(&self, key: &str) -> Option<CachedObject> {
        self.state
            .read()
            .expect("cache lock")
            .objects
            .get(key)
            .cloned()
    }

    /// The objects under `prefix` and the revision they are current at.
    pub fn list(&self, prefix: &str) -> (Revision, Vec<CachedObject>) {
        let st = self.state.read().expect("cache lock");
        let items = st
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (st.revision, items)
    }

    /// Starts a watch: the events after `after` (or, with `after == None`, the current objects
    /// under `prefix` as synthetic creates) and a receiver of everything later.
    pub fn subscribe(&self, prefix: &str, after: Option<Revision>) -> ApiResult<Subscription> {
        let st = self.state.read().expect("cache lock");
        let backlog: Vec<Backlog> = match after {
            None => st
                .objects
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| Backlog::Initial(v.clone()))
                .collect(),
            Some(after) => {
                if after < st.oldest {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {} ({})",
                        after, st.oldest
                    )));
                }
                st.history
                    .iter()
                    .filter(|e| e.object.revision > after && e.object.key.starts_with(prefix))
                    .map(|e| Backlog::Event(e.clone()))
                    .collect()
            }
        };
        Ok(Subscription {
            revision: st.revision,
            backlog,
            rx: self.tx.subscribe(),
            epoch: self.epoch.subscribe(),
        })
    }
}

/// An event a new watcher receives before live ones.
pub enum Backlog {
    /// An object present when the watch started (sent as ADDED).
    Initial(CachedObject),
    /// A past event.
    Event(Arc<CacheEvent>),
}

/// A watcher's view of the cache.
pub struct Subscription {
    /// The cache revision at subscription time.
    pub revision: Revision,
    /// What to send first.
    pub backlog: Vec<Backlog>,
    /// Live events (later than `revision`).
    pub rx: broadcast::Receiver<Arc<CacheEvent>>,
    /// Changes when the cache is rebuilt; the watch must then end.
    pub epoch: watch::Receiver<u64>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn watchers_share_an_events_decoded_objects_until_it_is_retired() {
        use super::*;
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let bytes = Bytes::from(serde_json::to_vec(&obj).unwrap());
        let e = CacheEvent::new(
            EventType::Update,
            CachedObject {
                key: Arc::from("/registry/pods/d/p"),
                bytes: bytes.clone(),
                revision: 2,
                typed: true,
            },
            Some(bytes),
        );
        let (a, b) = (e.view().unwrap(), e.view().unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one decode for every watcher");
        assert_eq!(*a, obj);
        assert!(Arc::ptr_eq(
            &e.prev_view().unwrap(),
            &e.prev_view().unwrap()
        ));
        e.retire();
        let (c, d) = (e.view().unwrap(), e.view().unwrap());
        assert!(!Arc::ptr_eq(&c, &d), "a retired event keeps nothing");
        assert_eq!(*c, obj);
        assert_eq!(*e.prev_view().unwrap(), obj);
    }

    #[test]
    fn the_resource_version_goes_into_stored_bytes_as_decoding_would_put_it() {
        use serde_json::json;
        let decoded = |raw: &[u8], rev: i64| {
            let mut v: Value = serde_json::from_slice(raw).unwrap();
            v["metadata"]["resourceVersion"] = json!(rev.to_string());
            v
        };
        for obj in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a\"b"},
                "data": {"k": "{\"metadata\":{}}"}}),
        ] {
            let raw = serde_json::to_vec(&obj).unwrap();
            assert!(insert_resource_version(&raw, 42).is_some(), "{obj}");
            let (bytes, typed) = cached(&raw, 42).unwrap();
            assert!(typed);
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, decoded(&raw, 42), "{obj}");
        }
        // Shapes the fast path leaves to the decoder, with the same result.
        for obj in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "3"}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}}),
            json!({"apiVersion": "v1", "metadata": {"name": "p"}}),
        ] {
            let raw = serde_json::to_vec(&obj).unwrap();
            assert!(insert_resource_version(&raw, 42).is_none(), "{obj}");
            let (bytes, typed) = cached(&raw, 42).unwrap();
            assert!(!typed || obj.get("kind").is_some() && obj.get("apiVersion").is_some());
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, decoded(&raw, 42), "{obj}");
        }
        // An escaped string in the type fields also goes to the decoder.
        let raw = br#"{"apiVersion":"v\u0031","kind":"Pod","metadata":{"name":"p"}}"#;
        assert!(insert_resource_version(raw, 42).is_none());
        assert_eq!(
            serde_json::from_slice::<Value>(&cached(raw, 42).unwrap().0).unwrap(),
            decoded(raw, 42)
        );
    }

    use super::*;
    use skiff_store::MemoryStore;

    #[tokio::test]
    async fn follows_store_and_replays_history() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store
            .create(
                "/registry/configmaps/default/a",
                Bytes::from_static(br#"{"metadata":{"name":"a"}}"#),
            )
            .await
            .unwrap();
        let cache = WatchCache::start(store.clone()).await.unwrap();
        assert_eq!(cache.list("/registry/configmaps/").1.len(), 1);
        let rev0 = cache.revision();
        let kv = store
            .create(
                "/registry/configmaps/default/b",
                Bytes::from_static(br#"{"metadata":{"name":"b"}}"#),
            )
            .await
            .unwrap();
        cache
            .wait_for(kv.mod_revision, Duration::from_secs(5))
            .await
            .unwrap();
        let (_, items) = cache.list("/registry/configmaps/default/");
        assert_eq!(items.len(), 2);
        let v: Value = serde_json::from_slice(&items[1].bytes).unwrap();
        assert_eq!(
            v["metadata"]["resourceVersion"],
            kv.mod_revision.to_string()
        );
        let sub = cache
            .subscribe("/registry/configmaps/", Some(rev0))
            .unwrap();
        assert_eq!(sub.backlog.len(), 1);
        let sub = cache.subscribe("/registry/secrets/", Some(rev0)).unwrap();
        assert!(sub.backlog.is_empty());
        assert_eq!(
            cache.subscribe("/registry/", Some(-1)).err().unwrap().code,
            410
        );
    }
}
