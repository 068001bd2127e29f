//! The contract suite every [`Store`] backend must pass.
//!
//! A backend's tests call [`store_conformance_tests!`](crate::store_conformance_tests) with an
//! async factory `async fn(ConformanceOptions) -> TestStore`; the macro generates one
//! `#[tokio::test]` per case, so each case passes or fails under its own name. Each case gets a
//! fresh store and uses revisions relative to the store's current one.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{Error, Event, EventType, KeyValue, Revision, Store, WatchStream};

/// What a case asks of the store under test.
#[derive(Clone, Debug)]
pub struct ConformanceOptions {
    /// Live events a watcher may leave unread before it is cut off with `WatchLagged`.
    pub watch_buffer: usize,
}

impl Default for ConformanceOptions {
    fn default() -> Self {
        ConformanceOptions { watch_buffer: 1024 }
    }
}

/// A store under test, with whatever must outlive it (e.g. its temporary directory).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    // Dropped after `store` (fields drop in declaration order).
    _guard: Option<Box<dyn Any + Send>>,
}

impl TestStore {
    /// Wraps a store that needs nothing else kept alive.
    pub fn new(store: impl Store) -> Self {
        TestStore {
            store: Arc::new(store),
            _guard: None,
        }
    }

    /// Wraps a shared store and a guard dropped after it.
    pub fn with_guard(store: Arc<dyn Store>, guard: impl Any + Send) -> Self {
        TestStore {
            store,
            _guard: Some(Box::new(guard)),
        }
    }
}

/// Generates one `#[tokio::test]` per conformance case in a module `store_conformance`, each
/// calling `$factory(ConformanceOptions) -> impl Future<Output = TestStore>` for a fresh store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            create_and_get,
            update_compare_and_swap,
            delete_compare_and_swap,
            revisions_increase_by_one,
            get_at_old_revision,
            list_at_old_revision,
            list_paginates_with_start_and_limit,
            list_start_outside_prefix,
            prefix_isolation,
            count_live_keys,
            watch_sees_every_event_once,
            watch_carries_prev_values,
            watch_prefix_only,
            watch_after_future_revision,
            compaction,
            future_revision,
            concurrent_writers,
            slow_watcher_is_cut_off,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::conformance::$case($factory).await;
                }
            )*
        }
    };
}

/// How long a case waits for an expected event before failing.
const DEADLINE: Duration = Duration::from_secs(20);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(DEADLINE, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no event within {DEADLINE:?}"),
    }
}

/// Asserts no event is waiting (after the store had time to deliver one it wrongly would).
async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

async fn open(
    factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore,
    opts: ConformanceOptions,
) -> TestStore {
    factory(opts).await
}

/// Create, read back, and refuse a second create.
pub async fn create_and_get(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), None);
    let kv = s.create("/registry/cm/a", b("1")).await.unwrap();
    assert_eq!(
        kv,
        KeyValue {
            key: "/registry/cm/a".into(),
            value: b("1"),
            create_revision: base + 1,
            mod_revision: base + 1,
        }
    );
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), Some(kv.clone()));
    match s.create("/registry/cm/a", b("2")).await {
        Err(Error::AlreadyExists(k)) => assert_eq!(k, "/registry/cm/a"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), Some(kv));
    assert_eq!(s.current_revision().await.unwrap(), base + 1);
}

/// Update succeeds only at the expected revision; `Conflict` carries the current value.
pub async fn update_compare_and_swap(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let c = s.create("/registry/cm/a", b("1")).await.unwrap();
    let u = s
        .update("/registry/cm/a", b("2"), c.mod_revision)
        .await
        .unwrap();
    assert_eq!(u.value, b("2"));
    assert_eq!(u.create_revision, c.create_revision);
    assert_eq!(u.mod_revision, c.mod_revision + 1);
    match s.update("/registry/cm/a", b("3"), c.mod_revision).await {
        Err(Error::Conflict { key, current }) => {
            assert_eq!(key, "/registry/cm/a");
            assert_eq!(*current, Some(u.clone()));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let u2 = s.update("/registry/cm/a", b("4"), 0).await.unwrap();
    assert_eq!(u2.mod_revision, u.mod_revision + 1);
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), Some(u2.clone()));
    match s.update("/registry/cm/missing", b("x"), 0).await {
        Err(Error::NotFound(k)) => assert_eq!(k, "/registry/cm/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match s.update("/registry/cm/missing", b("x"), 5).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), u2.mod_revision);
}

/// Delete succeeds only at the expected revision and returns the last value.
pub async fn delete_compare_and_swap(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let c = s.create("/registry/cm/a", b("1")).await.unwrap();
    let u = s.update("/registry/cm/a", b("2"), 0).await.unwrap();
    match s.delete("/registry/cm/a", c.mod_revision).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(*current, Some(u.clone())),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let d = s.delete("/registry/cm/a", u.mod_revision).await.unwrap();
    assert_eq!(
        d,
        KeyValue {
            mod_revision: u.mod_revision + 1,
            ..u.clone()
        }
    );
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), None);
    match s.delete("/registry/cm/a", 0).await {
        Err(Error::NotFound(k)) => assert_eq!(k, "/registry/cm/a"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A new incarnation gets a new create revision.
    let c2 = s.create("/registry/cm/a", b("3")).await.unwrap();
    assert_eq!(c2.create_revision, d.mod_revision + 1);
    assert_eq!(c2.mod_revision, d.mod_revision + 1);
    let d2 = s.delete("/registry/cm/a", 0).await.unwrap();
    assert_eq!(d2.value, b("3"));
    assert_eq!(d2.create_revision, c2.create_revision);
}

/// Each successful write takes exactly the next revision; failed writes take none.
pub async fn revisions_increase_by_one(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let mut rev = s.current_revision().await.unwrap();
    for i in 0..10 {
        let key = format!("/registry/cm/k{i}");
        let kv = s.create(&key, b("v")).await.unwrap();
        rev += 1;
        assert_eq!(kv.mod_revision, rev);
        assert!(s.create(&key, b("v")).await.is_err());
        let kv = s.update(&key, b("w"), kv.mod_revision).await.unwrap();
        rev += 1;
        assert_eq!(kv.mod_revision, rev);
        assert!(s.update(&key, b("w"), kv.mod_revision - 1).await.is_err());
        if i % 2 == 0 {
            let kv = s.delete(&key, 0).await.unwrap();
            rev += 1;
            assert_eq!(kv.mod_revision, rev);
        }
        assert_eq!(s.current_revision().await.unwrap(), rev);
    }
}

/// `get` at an older revision sees the key as it was.
pub async fn get_at_old_revision(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    let c = s.create("/registry/cm/a", b("1")).await.unwrap();
    s.create("/registry/cm/other", b("x")).await.unwrap();
    let u = s.update("/registry/cm/a", b("2"), 0).await.unwrap();
    let d = s.delete("/registry/cm/a", 0).await.unwrap();
    let c2 = s.create("/registry/cm/a", b("3")).await.unwrap();
    if base > 0 {
        assert_eq!(s.get("/registry/cm/a", base).await.unwrap(), None);
    }
    assert_eq!(
        s.get("/registry/cm/a", c.mod_revision).await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        s.get("/registry/cm/a", c.mod_revision + 1).await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        s.get("/registry/cm/a", u.mod_revision).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(s.get("/registry/cm/a", d.mod_revision).await.unwrap(), None);
    assert_eq!(
        s.get("/registry/cm/a", c2.mod_revision).await.unwrap(),
        Some(c2.clone())
    );
    assert_eq!(s.get("/registry/cm/a", 0).await.unwrap(), Some(c2));
}

/// `list` at an older revision sees the keys as they were, and reports that revision.
pub async fn list_at_old_revision(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let a = s.create("/registry/cm/a", b("1")).await.unwrap();
    let bb = s.create("/registry/cm/b", b("1")).await.unwrap();
    let r1 = bb.mod_revision;
    s.update("/registry/cm/a", b("2"), 0).await.unwrap();
    s.delete("/registry/cm/b", 0).await.unwrap();
    let cc = s.create("/registry/cm/c", b("1")).await.unwrap();

    let old = s.list("/registry/cm/", "", 0, r1).await.unwrap();
    assert_eq!(old.revision, r1);
    assert_eq!(old.kvs, vec![a.clone(), bb]);
    assert!(!old.more);

    let now = s.list("/registry/cm/", "", 0, 0).await.unwrap();
    assert_eq!(now.revision, cc.mod_revision);
    let keys: Vec<_> = now.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/cm/a", "/registry/cm/c"]);
    assert_eq!(now.kvs[0].value, b("2"));
    assert_eq!(now.kvs[0].create_revision, a.create_revision);
}

/// 25 keys, paged by 10 with a start key and a fixed revision: 10, 10, 5, with `more` set
/// on all but the last page.
pub async fn list_paginates_with_start_and_limit(
    factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore,
) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    for i in 0..25 {
        s.create(&format!("/registry/pods/ns/p{i:02}"), b("v"))
            .await
            .unwrap();
    }
    // Noise on both sides of the prefix range.
    s.create("/registry/pod", b("v")).await.unwrap();
    s.create("/registry/pods0", b("v")).await.unwrap();
    s.create("/registry/pods/", b("self")).await.unwrap();
    s.delete("/registry/pods/", 0).await.unwrap();

    let first = s.list("/registry/pods/", "", 10, 0).await.unwrap();
    let rev = first.revision;
    // Writes after the first page must not show in later pages read at its revision.
    s.create("/registry/pods/ns/p99", b("late")).await.unwrap();
    s.delete("/registry/pods/ns/p24", 0).await.unwrap();

    let mut pages = vec![first];
    while pages.last().unwrap().more {
        let last = pages.last().unwrap().kvs.last().unwrap().key.clone();
        let start = format!("{last}\0");
        let page = s.list("/registry/pods/", &start, 10, rev).await.unwrap();
        assert_eq!(page.revision, rev);
        pages.push(page);
        assert!(pages.len() <= 3, "too many pages");
    }
    let sizes: Vec<_> = pages.iter().map(|p| p.kvs.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let more: Vec<_> = pages.iter().map(|p| p.more).collect();
    assert_eq!(more, [true, true, false]);
    let keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p.kvs.iter().map(|kv| kv.key.clone()))
        .collect();
    let want: Vec<String> = (0..25)
        .map(|i| format!("/registry/pods/ns/p{i:02}"))
        .collect();
    assert_eq!(keys, want);

    // An exact page boundary: no `more` when nothing follows.
    let all = s.list("/registry/pods/", "", 25, 0).await.unwrap();
    assert_eq!(all.kvs.len(), 25, "p24 deleted, p99 added");
    assert!(!all.more);
    let starting = s
        .list("/registry/pods/", "/registry/pods/ns/p20", 0, 0)
        .await
        .unwrap();
    let keys: Vec<_> = starting.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/registry/pods/ns/p20",
            "/registry/pods/ns/p21",
            "/registry/pods/ns/p22",
            "/registry/pods/ns/p23",
            "/registry/pods/ns/p99"
        ]
    );
}

/// A start key before the prefix lists from the prefix; one after it lists nothing.
pub async fn list_start_outside_prefix(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    s.create("/registry/a/x", b("v")).await.unwrap();
    s.create("/registry/b/x", b("v")).await.unwrap();
    s.create("/registry/c/x", b("v")).await.unwrap();
    let l = s.list("/registry/b/", "/registry/a/", 0, 0).await.unwrap();
    assert_eq!(l.kvs.len(), 1);
    assert_eq!(l.kvs[0].key, "/registry/b/x");
    let l = s.list("/registry/b/", "/registry/c/", 0, 0).await.unwrap();
    assert!(l.kvs.is_empty());
    assert!(!l.more);
}

/// `/registry/pods/` matches neither `/registry/podsx/...` nor `/registry/pods`.
pub async fn prefix_isolation(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("/registry/pods/", start).await.unwrap();
    s.create("/registry/pods", b("v")).await.unwrap();
    s.create("/registry/podsx/ns/a", b("v")).await.unwrap();
    s.create("/registry/pods0", b("v")).await.unwrap();
    s.create("/registry/pod/ns/a", b("v")).await.unwrap();
    let mine = s.create("/registry/pods/ns/a", b("v")).await.unwrap();
    let l = s.list("/registry/pods/", "", 0, 0).await.unwrap();
    assert_eq!(l.kvs, vec![mine.clone()]);
    assert_eq!(s.count("/registry/pods/").await.unwrap(), 1);
    assert_eq!(s.count("/registry/podsx/").await.unwrap(), 1);
    assert_eq!(next_event(&mut w).await.kv, mine);
    assert_quiet(&mut w).await;
}

/// `count` counts live keys under the prefix.
pub async fn count_live_keys(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    assert_eq!(s.count("/registry/cm/").await.unwrap(), 0);
    for i in 0..7 {
        s.create(&format!("/registry/cm/ns/k{i}"), b("v"))
            .await
            .unwrap();
    }
    s.create("/registry/secrets/ns/k", b("v")).await.unwrap();
    s.update("/registry/cm/ns/k0", b("w"), 0).await.unwrap();
    s.delete("/registry/cm/ns/k1", 0).await.unwrap();
    assert_eq!(s.count("/registry/cm/").await.unwrap(), 6);
    assert_eq!(s.count("/registry/cm/ns/").await.unwrap(), 6);
    assert_eq!(s.count("/registry/").await.unwrap(), 7);
    assert_eq!(s.count("").await.unwrap(), 7);
}

/// A watch from an old revision, opened while writes go on, yields every event after it in
/// order exactly once: the history, the writes racing the watch call, then live ones.
pub async fn watch_sees_every_event_once(
    factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore,
) {
    let t = open(
        factory,
        ConformanceOptions {
            watch_buffer: 10_000,
        },
    )
    .await;
    let s = t.store.clone();
    let base = s.current_revision().await.unwrap();
    for i in 0..20 {
        s.create(&format!("/registry/cm/pre{i}"), b("v"))
            .await
            .unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let key = format!("/registry/cm/k{}", i % 40);
                match i % 3 {
                    0 => {
                        let _ = s.create(&key, b("c")).await;
                    }
                    1 => {
                        let _ = s.update(&key, b("u"), 0).await;
                    }
                    _ => {
                        let _ = s.delete(&key, 0).await;
                    }
                }
                if i % 25 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let after = base + 5;
    let mut w = s.watch("/registry/cm/", after).await.unwrap();
    writer.await.unwrap();
    let end = s.current_revision().await.unwrap();
    let mut want = after + 1;
    while want <= end {
        let ev = next_event(&mut w).await;
        assert_eq!(ev.revision(), want, "events out of order or missing");
        want += 1;
    }
    assert_quiet(&mut w).await;
    // Live after catch-up.
    let kv = s.create("/registry/cm/live", b("v")).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kv, kv);
    assert_eq!(ev.event_type, EventType::Create);
}

/// Events report their type, the new value and the previous one.
pub async fn watch_carries_prev_values(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    let c = s.create("/registry/cm/a", b("1")).await.unwrap();
    // Half the events come from history, half live.
    let mut w = s.watch("/registry/cm/", base).await.unwrap();
    let u = s.update("/registry/cm/a", b("2"), 0).await.unwrap();
    let d = s.delete("/registry/cm/a", 0).await.unwrap();
    let c2 = s.create("/registry/cm/a", b("3")).await.unwrap();

    let want = [
        Event {
            event_type: EventType::Create,
            kv: c.clone(),
            prev: None,
        },
        Event {
            event_type: EventType::Update,
            kv: u.clone(),
            prev: Some(c.clone()),
        },
        Event {
            event_type: EventType::Delete,
            kv: d.clone(),
            prev: Some(u.clone()),
        },
        Event {
            event_type: EventType::Create,
            kv: c2.clone(),
            prev: None,
        },
    ];
    for want in want.iter() {
        assert_eq!(&next_event(&mut w).await, want);
    }
    // The same events replayed from history.
    let mut w = s.watch("/registry/cm/", base).await.unwrap();
    for want in want.iter() {
        assert_eq!(&next_event(&mut w).await, want);
    }
    assert_quiet(&mut w).await;
}

/// A watch of one prefix sees none of the others' events.
pub async fn watch_prefix_only(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    s.create("/registry/secrets/ns/a", b("v")).await.unwrap();
    let a = s.create("/registry/cm/ns/a", b("v")).await.unwrap();
    let mut w = s.watch("/registry/cm/", base).await.unwrap();
    let mut all = s.watch("/registry/", base).await.unwrap();
    s.create("/registry/secrets/ns/b", b("v")).await.unwrap();
    let bkv = s.create("/registry/cm/ns/b", b("v")).await.unwrap();
    assert_eq!(next_event(&mut w).await.kv, a);
    assert_eq!(next_event(&mut w).await.kv, bkv);
    assert_quiet(&mut w).await;
    for i in 1..=4 {
        assert_eq!(next_event(&mut all).await.revision(), base + i);
    }
}

/// A watch from a revision not yet reached yields only events after it.
pub async fn watch_after_future_revision(
    factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore,
) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    let mut w = s.watch("/registry/cm/", base + 2).await.unwrap();
    for i in 0..4 {
        s.create(&format!("/registry/cm/k{i}"), b("v"))
            .await
            .unwrap();
    }
    assert_eq!(next_event(&mut w).await.revision(), base + 3);
    assert_eq!(next_event(&mut w).await.revision(), base + 4);
    assert_quiet(&mut w).await;
}

/// After `compact(r)`: reads before `r` and watches from before `r` fail with `Compacted`;
/// reads at `r` and later, and the latest state, are intact.
pub async fn compaction(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    let a1 = s.create("/registry/cm/a", b("1")).await.unwrap();
    let b1 = s.create("/registry/cm/b", b("1")).await.unwrap();
    let c1 = s.create("/registry/cm/c", b("1")).await.unwrap();
    let a2 = s.update("/registry/cm/a", b("2"), 0).await.unwrap();
    let bd = s.delete("/registry/cm/b", 0).await.unwrap();
    let r = bd.mod_revision;
    let a3 = s.update("/registry/cm/a", b("3"), 0).await.unwrap();
    let cd = s.delete("/registry/cm/c", 0).await.unwrap();
    let d1 = s.create("/registry/cm/d", b("1")).await.unwrap();

    assert_eq!(s.compacted_revision().await.unwrap(), 0);
    s.compact(r).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r);

    let compacted = |res: Result<(), Error>| match res {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(compacted, r);
            requested
        }
        other => panic!("expected Compacted, got {other:?}"),
    };
    compacted(s.get("/registry/cm/a", r - 1).await.map(drop));
    compacted(s.get("/registry/cm/a", a1.mod_revision).await.map(drop));
    compacted(s.list("/registry/cm/", "", 0, r - 1).await.map(drop));
    assert_eq!(
        compacted(s.watch("/registry/cm/", r - 1).await.map(drop)),
        r - 1
    );
    compacted(s.watch("/registry/cm/", 0).await.map(drop));
    compacted(s.compact(r).await);
    compacted(s.compact(r - 1).await);
    match s.compact(d1.mod_revision + 1).await {
        Err(Error::FutureRevision { .. }) => {}
        other => panic!("expected FutureRevision, got {other:?}"),
    }

    // The state at the compacted revision is still readable.
    let at_r = s.list("/registry/cm/", "", 0, r).await.unwrap();
    assert_eq!(at_r.kvs, vec![a2.clone(), c1.clone()]);
    assert_eq!(s.get("/registry/cm/b", r).await.unwrap(), None);
    assert_eq!(s.get("/registry/cm/a", r).await.unwrap(), Some(a2.clone()));
    assert_eq!(
        s.get("/registry/cm/c", a3.mod_revision).await.unwrap(),
        Some(c1.clone())
    );
    // The latest state is intact.
    let now = s.list("/registry/cm/", "", 0, 0).await.unwrap();
    assert_eq!(now.kvs, vec![a3.clone(), d1.clone()]);
    assert_eq!(s.count("/registry/cm/").await.unwrap(), 2);
    let _ = b1;

    // A watch from the compacted revision replays everything after it, prev values included.
    let mut w = s.watch("/registry/cm/", r).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv, e.prev), (a3.clone(), Some(a2.clone())));
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.event_type, e.kv, e.prev),
        (EventType::Delete, cd, Some(c1))
    );
    let e = next_event(&mut w).await;
    assert_eq!((e.kv, e.prev), (d1.clone(), None));
    assert_quiet(&mut w).await;

    // Writes go on with the next revision.
    let a4 = s
        .update("/registry/cm/a", b("4"), a3.mod_revision)
        .await
        .unwrap();
    assert_eq!(a4.mod_revision, d1.mod_revision + 1);
    assert_eq!(next_event(&mut w).await.kv, a4);
    let b2 = s.create("/registry/cm/b", b("2")).await.unwrap();
    assert_eq!(b2.create_revision, a4.mod_revision + 1);

    // Compacting to the latest revision keeps the latest state.
    let latest = s.current_revision().await.unwrap();
    s.compact(latest).await.unwrap();
    let now = s.list("/registry/cm/", "", 0, 0).await.unwrap();
    assert_eq!(now.kvs, vec![a4, b2, d1]);
    assert_eq!(now.revision, latest);
}

/// Reads at a revision after the current one fail with `FutureRevision`.
pub async fn future_revision(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = &t.store;
    s.create("/registry/cm/a", b("1")).await.unwrap();
    let cur = s.current_revision().await.unwrap();
    for res in [
        s.get("/registry/cm/a", cur + 1).await.map(drop),
        s.list("/registry/cm/", "", 0, cur + 1).await.map(drop),
    ] {
        match res {
            Err(Error::FutureRevision { requested, current }) => {
                assert_eq!((requested, current), (cur + 1, cur));
            }
            other => panic!("expected FutureRevision, got {other:?}"),
        }
    }
    assert!(s.get("/registry/cm/a", cur).await.unwrap().is_some());
}

/// 16 concurrent writers × 50 creates: every key present, every revision distinct and the
/// revisions contiguous.
pub async fn concurrent_writers(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    let t = open(factory, ConformanceOptions::default()).await;
    let s = t.store.clone();
    let base = s.current_revision().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                let kv = s
                    .create(&format!("/registry/cm/w{w:02}/k{i:02}"), b("v"))
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            // Contended compare-and-swap on one shared key: never two winners for one revision.
            let mut wins = 0;
            for _ in 0..5 {
                loop {
                    let cur = s.get("/registry/cm/shared", 0).await.unwrap();
                    let res = match cur {
                        None => s.create("/registry/cm/shared", b("0")).await,
                        Some(kv) => {
                            let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                            s.update(
                                "/registry/cm/shared",
                                b(&(n + 1).to_string()),
                                kv.mod_revision,
                            )
                            .await
                        }
                    };
                    match res {
                        Ok(kv) => {
                            revs.push(kv.mod_revision);
                            wins += 1;
                            break;
                        }
                        Err(Error::Conflict { .. }) | Err(Error::AlreadyExists(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            assert_eq!(wins, 5);
            revs
        }));
    }
    let mut revs: Vec<Revision> = Vec::new();
    for task in tasks {
        revs.extend(task.await.unwrap());
    }
    revs.sort_unstable();
    let want: Vec<Revision> = (base + 1..=base + 16 * 55).collect();
    assert_eq!(revs, want);
    assert_eq!(s.count("/registry/cm/").await.unwrap(), 16 * 50 + 1);
    let shared = s.get("/registry/cm/shared", 0).await.unwrap().unwrap();
    // Created once at "0", then 16 * 5 - 1 increments.
    assert_eq!(shared.value, b(&(16 * 5 - 1).to_string()));
    let l = s.list("/registry/cm/w07/", "", 0, 0).await.unwrap();
    assert_eq!(l.kvs.len(), 50);
}

/// A watcher that stops reading is cut off with `WatchLagged` once its buffer fills; a watcher
/// that keeps up sees every event.
pub async fn slow_watcher_is_cut_off(factory: impl AsyncFnOnce(ConformanceOptions) -> TestStore) {
    const BUFFER: usize = 16;
    let t = open(
        factory,
        ConformanceOptions {
            watch_buffer: BUFFER,
        },
    )
    .await;
    let s = &t.store;
    let base = s.current_revision().await.unwrap();
    let mut slow = s.watch("/registry/cm/", base).await.unwrap();
    let mut fast = s.watch("/registry/cm/", base).await.unwrap();
    let total = BUFFER as i64 * 6;
    for chunk in 0..total / 4 {
        for i in 0..4 {
            s.create(&format!("/registry/cm/k{}", chunk * 4 + i), b("v"))
                .await
                .unwrap();
        }
        for i in 0..4 {
            let ev = next_event(&mut fast).await;
            assert_eq!(ev.revision(), base + chunk * 4 + i + 1);
        }
    }
    let mut seen = Vec::new();
    let end = loop {
        match tokio::time::timeout(DEADLINE, slow.next()).await {
            Ok(Some(Ok(ev))) => seen.push(ev.revision()),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("slow watcher ended without an error"),
            Err(_) => panic!("slow watcher was not cut off"),
        }
    };
    assert!(matches!(end, Error::WatchLagged), "got {end:?}");
    assert!(seen.len() < total as usize);
    let want: Vec<Revision> = (base + 1..=base + seen.len() as i64).collect();
    assert_eq!(
        seen, want,
        "a lagging watcher still gets an in-order prefix"
    );
    assert!(tokio::time::timeout(DEADLINE, slow.next())
        .await
        .expect("stream ends")
        .is_none());
    // The fast watcher and the store are unaffected.
    let kv = s.create("/registry/cm/after", b("v")).await.unwrap();
    assert_eq!(next_event(&mut fast).await.kv, kv);
    let mut fresh = s.watch("/registry/cm/", kv.mod_revision - 1).await.unwrap();
    assert_eq!(next_event(&mut fresh).await.kv, kv);
}
