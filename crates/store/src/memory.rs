//! An in-memory backend with etcd's full semantics, for unit tests.
//!
//! Every key keeps its versions since the compacted revision, so reads at an old revision see
//! the state of then; the event log since the compacted revision serves watch catch-up.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt;

use crate::fanout::{live_stream, Fanout};
use crate::{Error, Event, EventType, KeyValue, ListResult, Result, Revision, Store, WatchStream};

/// One version of a key; `value: None` is a tombstone.
#[derive(Clone, Debug)]
struct Version {
    create_revision: Revision,
    mod_revision: Revision,
    value: Option<Bytes>,
}

struct State {
    rev: Revision,
    compacted: Revision,
    /// Versions in ascending `mod_revision`.
    keys: BTreeMap<String, Vec<Version>>,
    /// Every event with revision `> compacted`, in order.
    events: VecDeque<Event>,
    fanout: Fanout,
}

impl State {
    /// Resolves `revision` (0 = latest) to a readable revision.
    fn read_revision(&self, revision: Revision) -> Result<Revision> {
        if revision == 0 {
            return Ok(self.rev);
        }
        if revision > self.rev {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.rev,
            });
        }
        if revision < self.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        Ok(revision)
    }

    fn latest(&self, key: &str) -> Option<KeyValue> {
        let v = self.keys.get(key)?.last()?;
        kv_of(key, v)
    }

    fn append(&mut self, key: &str, version: Version, event: Event) {
        self.rev = version.mod_revision;
        self.keys.entry(key.to_owned()).or_default().push(version);
        self.fanout.publish(&event);
        self.events.push_back(event);
    }
}

fn kv_of(key: &str, v: &Version) -> Option<KeyValue> {
    Some(KeyValue {
        key: key.to_owned(),
        value: v.value.clone()?,
        create_revision: v.create_revision,
        mod_revision: v.mod_revision,
    })
}

/// The version of a key visible at `rev`, if the key was live then.
fn at_revision(versions: &[Version], rev: Revision) -> Option<&Version> {
    let n = versions.partition_point(|v| v.mod_revision <= rev);
    let v = versions.get(n.checked_sub(1)?)?;
    v.value.as_ref().map(|_| v)
}

/// An in-memory [`Store`]. Cheap to create; all state is lost on drop.
pub struct MemoryStore {
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_watch_buffer(crate::DEFAULT_WATCH_BUFFER)
    }

    /// An empty store whose watchers are cut off once `buffer` live events wait unread.
    pub fn with_watch_buffer(buffer: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                rev: 0,
                compacted: 0,
                keys: BTreeMap::new(),
                events: VecDeque::new(),
                fanout: Fanout::new(buffer, 0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state: every mutation is a push.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.lock().fanout.close();
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().rev)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.lock().compacted)
    }

    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        let st = self.lock();
        let rev = st.read_revision(revision)?;
        Ok(st
            .keys
            .get(key)
            .and_then(|vs| at_revision(vs, rev))
            .and_then(|v| kv_of(key, v)))
    }

    async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let st = self.lock();
        let rev = st.read_revision(revision)?;
        let from = if start > prefix { start } else { prefix };
        let mut kvs = Vec::new();
        let mut more = false;
        for (key, versions) in st
            .keys
            .range::<str, _>((Bound::Included(from), Bound::Unbounded))
        {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(v) = at_revision(versions, rev) else {
                continue;
            };
            if limit != 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.extend(kv_of(key, v));
        }
        Ok(ListResult {
            kvs,
            revision: rev,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let st = self.lock();
        let n = st
            .keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, vs)| vs.last().is_some_and(|v| v.value.is_some()))
            .count();
        Ok(n as i64)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let mut st = self.lock();
        if st.latest(key).is_some() {
            return Err(Error::AlreadyExists(key.to_owned()));
        }
        let rev = st.rev + 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision: rev,
            mod_revision: rev,
        };
        let version = Version {
            create_revision: rev,
            mod_revision: rev,
            value: Some(value),
        };
        let event = Event {
            event_type: EventType::Create,
            kv: kv.clone(),
            prev: None,
        };
        st.append(key, version, event);
        Ok(kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let mut st = self.lock();
        let prev = st
            .latest(key)
            .ok_or_else(|| Error::NotFound(key.to_owned()))?;
        if expected != 0 && prev.mod_revision != expected {
            return Err(Error::Conflict {
                key: key.to_owned(),
                current: Box::new(Some(prev)),
            });
        }
        let rev = st.rev + 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision: prev.create_revision,
            mod_revision: rev,
        };
        let version = Version {
            create_revision: prev.create_revision,
            mod_revision: rev,
            value: Some(value),
        };
        let event = Event {
            event_type: EventType::Update,
            kv: kv.clone(),
            prev: Some(prev),
        };
        st.append(key, version, event);
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue> {
        let mut st = self.lock();
        let prev = st
            .latest(key)
            .ok_or_else(|| Error::NotFound(key.to_owned()))?;
        if expected != 0 && prev.mod_revision != expected {
            return Err(Error::Conflict {
                key: key.to_owned(),
                current: Box::new(Some(prev)),
            });
        }
        let rev = st.rev + 1;
        let kv = KeyValue {
            mod_revision: rev,
            ..prev.clone()
        };
        let version = Version {
            create_revision: prev.create_revision,
            mod_revision: rev,
            value: None,
        };
        let event = Event {
            event_type: EventType::Delete,
            kv: kv.clone(),
            prev: Some(prev),
        };
        st.append(key, version, event);
        Ok(kv)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let mut st = self.lock();
        if after < st.compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted: st.compacted,
            });
        }
        // Catch-up and subscription under one lock: nothing can be published in between.
        let first = st.events.partition_point(|e| e.revision() <= after);
        let catch_up: Vec<Result<Event>> = st
            .events
            .range(first..)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .map(Ok)
            .collect();
        let sub = st.fanout.subscribe(prefix)?;
        let live = live_stream(sub, after.max(st.rev));
        Ok(Box::pin(futures::stream::iter(catch_up).chain(live)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut st = self.lock();
        if revision > st.rev {
            return Err(Error::FutureRevision {
                requested: revision,
                current: st.rev,
            });
        }
        if revision <= st.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: st.compacted,
            });
        }
        st.keys.retain(|_, versions| {
            // Keep the version visible at `revision` (unless a tombstone) and all later ones.
            let n = versions.partition_point(|v| v.mod_revision <= revision);
            let mut drop = n.saturating_sub(1);
            if n > 0 && versions[n - 1].value.is_none() {
                drop = n;
            }
            versions.drain(..drop);
            !versions.is_empty()
        });
        while st.events.front().is_some_and(|e| e.revision() <= revision) {
            st.events.pop_front();
        }
        st.compacted = revision;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{ConformanceOptions, TestStore};

    async fn new_store(opts: ConformanceOptions) -> TestStore {
        TestStore::new(MemoryStore::with_watch_buffer(opts.watch_buffer))
    }

    crate::store_conformance_tests!(new_store);

    #[tokio::test]
    async fn dropped_watchers_are_pruned() {
        let s = MemoryStore::new();
        let w = s.watch("/a/", 0).await.unwrap();
        drop(w);
        s.create("/a/x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(s.lock().fanout.len(), 0);
    }
}
