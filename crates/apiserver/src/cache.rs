//! The watch cache: one store watch for the whole key space, the latest state of every object
//! and a window of recent events, fanned out to every API watcher. Lists that may be served from
//! memory are served from here, so that many watchers and lists never each hit the store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
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

/// One object as served: its JSON (storage version) with `resourceVersion` filled in.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// Store key.
    pub key: Arc<str>,
    /// Serialized object.
    pub bytes: Bytes,
    /// Revision of its last write.
    pub revision: Revision,
}

/// One change, as fanned out to watchers.
#[derive(Debug)]
pub struct CacheEvent {
    /// Create, update or delete.
    pub event_type: EventType,
    /// The object after the change (for a delete: its last state, at the delete's revision).
    pub object: CachedObject,
    /// The object before the change.
    pub prev: Option<Bytes>,
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

/// Sets `metadata.resourceVersion` of a stored object.
pub fn with_resource_version(raw: &[u8], revision: Revision) -> Result<Bytes, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(raw)?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Ok(Bytes::from(serde_json::to_vec(&v)?))
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
                let bytes = with_resource_version(&kv.value, kv.mod_revision)?;
                objects.insert(
                    key.clone(),
                    CachedObject {
                        key,
                        bytes,
                        revision: kv.mod_revision,
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
            let bytes = with_resource_version(&ev.kv.value, revision)?;
            let prev = match &ev.prev {
                Some(p) => Some(with_resource_version(&p.value, p.mod_revision)?),
                None => None,
            };
            let object = CachedObject {
                key: key.clone(),
                bytes,
                revision,
            };
            let event = Arc::new(CacheEvent {
                event_type: ev.event_type,
                object: object.clone(),
                prev,
            });
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
