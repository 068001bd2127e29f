//! Shared informers: one watch per resource type feeding one cache that every controller
//! reads, with change handlers for enqueueing (upstream's SharedInformerFactory).
//!
//! The cache indexes objects by namespace so that controllers list one namespace's pods
//! without scanning the cluster. Tests fill caches by hand with [`Cache::apply`].

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A change seen by a cache, passed to its handlers.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// A new object.
    Added(Arc<K>),
    /// An existing object changed (or was re-listed, then `old` may equal `new`).
    Updated {
        /// The object as the cache held it before.
        old: Arc<K>,
        /// The object now.
        new: Arc<K>,
    },
    /// The object is gone (the last state the cache knew).
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object after the change (the deleted object for `Deleted`).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key from [`key_of`] into namespace (empty when cluster-scoped) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// An in-memory, namespace-indexed copy of one resource type.
pub struct Cache<K> {
    objects: RwLock<HashMap<String, BTreeMap<String, Arc<K>>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
}

impl<K: Resource + Clone> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: RwLock::default(),
            handlers: RwLock::default(),
            synced: watch::channel(false).0,
        }
    }
}

impl<K: Resource + Clone> Cache<K> {
    /// The object `name` in `namespace` (`""` for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().unwrap();
        objects.get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// The object with key `key` (see [`key_of`]).
    pub fn get_by_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    /// All objects in `namespace`, ordered by name.
    pub fn list(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap();
        objects
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// All objects of every namespace.
    pub fn list_all(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap();
        objects.values().flat_map(|m| m.values().cloned()).collect()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.objects
            .read()
            .unwrap()
            .values()
            .map(BTreeMap::len)
            .sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `handler` on every later change (and not for objects already held).
    pub fn add_handler(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.handlers.write().unwrap().push(Arc::new(handler));
    }

    fn notify(&self, change: Change<K>) {
        let handlers = self.handlers.read().unwrap().clone();
        for h in handlers {
            h(&change);
        }
    }

    /// Inserts or replaces `obj` and tells the handlers.
    pub fn apply(&self, obj: K) {
        let obj = Arc::new(obj);
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.name_any();
        let old = self
            .objects
            .write()
            .unwrap()
            .entry(ns)
            .or_default()
            .insert(name, obj.clone());
        self.notify(match old {
            Some(old) => Change::Updated { old, new: obj },
            None => Change::Added(obj),
        });
    }

    /// Removes `obj` and tells the handlers (with the cached state when there is one).
    pub fn delete(&self, obj: K) {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.name_any();
        let old = {
            let mut objects = self.objects.write().unwrap();
            let old = objects.get_mut(&ns).and_then(|m| m.remove(&name));
            if objects.get(&ns).is_some_and(BTreeMap::is_empty) {
                objects.remove(&ns);
            }
            old
        };
        self.notify(Change::Deleted(old.unwrap_or_else(|| Arc::new(obj))));
    }

    /// Replaces the whole content after a (re)list: objects missing from `objs` are deleted.
    pub fn replace(&self, objs: Vec<K>) {
        let mut listed: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for o in &objs {
            listed
                .entry(o.meta().namespace.clone().unwrap_or_default())
                .or_default()
                .insert(o.name_any());
        }
        let gone: Vec<Arc<K>> = self
            .list_all()
            .into_iter()
            .filter(|o| {
                let ns = o.meta().namespace.clone().unwrap_or_default();
                !listed.get(&ns).is_some_and(|s| s.contains(&o.name_any()))
            })
            .collect();
        for o in gone {
            self.delete((*o).clone());
        }
        for o in objs {
            self.apply(o);
        }
        self.mark_synced();
    }

    /// Marks the cache as holding a complete list (tests call this after filling it).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Whether the first complete list has arrived.
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first complete list has arrived.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

trait AnyCache: Send + Sync {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn has_synced(&self) -> bool;
}

impl<K: Resource + Clone + Send + Sync + 'static> AnyCache for Cache<K> {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn has_synced(&self) -> bool {
        Cache::has_synced(self)
    }
}

struct Inner {
    client: Option<kube::Client>,
    caches: Mutex<HashMap<TypeId, Arc<dyn AnyCache>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// One cache per resource type, shared by every controller (cheap to clone).
///
/// With a client, the first [`SharedInformers::cache`] call for a type starts its
/// list+watch; without one (tests) caches are filled by hand.
#[derive(Clone)]
pub struct SharedInformers {
    inner: Arc<Inner>,
}

impl SharedInformers {
    /// Informers watching through `client`, or hand-filled ones when `None`.
    pub fn new(client: Option<kube::Client>) -> SharedInformers {
        SharedInformers {
            inner: Arc::new(Inner {
                client,
                caches: Mutex::default(),
                tasks: Mutex::default(),
            }),
        }
    }

    /// The shared cache of `K`, starting its watch on first use.
    pub fn cache<K>(&self) -> Arc<Cache<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut caches = self.inner.caches.lock().unwrap();
        if let Some(c) = caches.get(&TypeId::of::<K>()) {
            return c
                .clone()
                .as_any()
                .downcast::<Cache<K>>()
                .expect("cache type");
        }
        let cache = Arc::new(Cache::<K>::default());
        caches.insert(TypeId::of::<K>(), cache.clone());
        if let Some(client) = &self.inner.client {
            let task = tokio::spawn(feed(Api::<K>::all(client.clone()), cache.clone()));
            self.inner.tasks.lock().unwrap().push(task);
        }
        cache
    }

    /// Waits until every cache registered so far holds a complete list.
    pub async fn wait_for_sync(&self) {
        loop {
            let all = self
                .inner
                .caches
                .lock()
                .unwrap()
                .values()
                .all(|c| c.has_synced());
            if all {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Runs list+watch for one type forever, feeding `cache`.
async fn feed<K>(api: Api<K>, cache: Arc<Cache<K>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut init: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(o)) => cache.apply(o),
            Ok(watcher::Event::Delete(o)) => cache.delete(o),
            Ok(watcher::Event::Init) => init.clear(),
            Ok(watcher::Event::InitApply(o)) => init.push(o),
            Ok(watcher::Event::InitDone) => cache.replace(std::mem::take(&mut init)),
            Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pod(ns: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p
    }

    #[test]
    fn cache_indexes_by_namespace_and_notifies() {
        let inf = SharedInformers::new(None);
        let cache = inf.cache::<Pod>();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        cache.add_handler(move |c| {
            if matches!(c, Change::Updated { .. }) {
                s.fetch_add(100, Ordering::SeqCst);
            } else {
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        cache.apply(pod("a", "p1"));
        cache.apply(pod("b", "p2"));
        cache.apply(pod("a", "p1"));
        assert_eq!(cache.list("a").len(), 1);
        assert_eq!(cache.list_all().len(), 2);
        assert!(cache.get_by_key("b/p2").is_some());
        cache.replace(vec![pod("a", "p1")]);
        assert!(cache.get("b", "p2").is_none());
        assert!(cache.has_synced());
        // 2 adds, 2 updates (apply again, relist), 1 delete.
        assert_eq!(seen.load(Ordering::SeqCst), 203);
        assert!(Arc::ptr_eq(&inf.cache::<Pod>(), &cache));
    }
}
