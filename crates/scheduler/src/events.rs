//! The scheduler's events (`Scheduled`, `FailedScheduling`, `Preempted`), written as
//! events.k8s.io/v1 Events the way upstream's event broadcaster writes them: the first event of
//! a kind about an object is created; the same event again within six minutes becomes a series
//! on it (`series.count`, `series.lastObservedTime`) instead of a new object.
//!
//! kube's `Recorder` does the same but sweeps its whole cache on every publish, which is
//! quadratic over a burst of thousands of pods; here the sweep runs at most once a minute, and
//! the cache keeps only what a series needs (the event's name, its count, when it was last seen).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a repeat joins the earlier event's series (upstream's 6 minutes).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How often expired series are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Writes events on behalf of one reporting controller. Clones share the series cache.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    series: Arc<Mutex<Series>>,
}

/// What makes two events the same one (upstream's isomorphic key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    action: String,
    reason: String,
    regarding: RefKey,
    related: Option<RefKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    field_path: Option<String>,
}

impl From<&ObjectReference> for RefKey {
    fn from(r: &ObjectReference) -> RefKey {
        RefKey {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            field_path: r.field_path.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Events written recently, for series.
#[derive(Default)]
struct Series {
    entries: HashMap<Key, Entry>,
    swept: Option<Instant>,
}

impl Series {
    /// A repeat of `key` at `now`: the series' event and its new count, if one is open.
    fn repeat(&mut self, key: &Key, now: Instant) -> Option<Entry> {
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.entries
                .retain(|_, e| now.duration_since(e.last) < SERIES_WINDOW);
            self.swept = Some(now);
        }
        let e = self.entries.get_mut(key)?;
        if now.duration_since(e.last) >= SERIES_WINDOW {
            return None;
        }
        e.count += 1;
        e.last = now;
        Some(e.clone())
    }

    /// A new event was created for `key`.
    fn created(&mut self, key: Key, namespace: String, name: String, now: Instant) {
        let entry = Entry {
            namespace,
            name,
            count: 1,
            last: now,
        };
        self.entries.insert(key, entry);
    }

    /// The series' event is gone (expired on the server): the next repeat starts anew.
    fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }
}

impl EventRecorder {
    /// A recorder writing through `client` as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> EventRecorder {
        EventRecorder {
            client,
            reporter,
            series: Arc::default(),
        }
    }

    /// Writes `ev` about `regarding`: a new Event, or the next count of a recent one's series.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let key = Key {
            warning: matches!(ev.type_, EventType::Warning),
            action: ev.action.clone(),
            reason: ev.reason.clone(),
            regarding: regarding.into(),
            related: ev.secondary.as_ref().map(RefKey::from),
        };
        let repeat = self
            .series
            .lock()
            .expect("series")
            .repeat(&key, Instant::now());
        if let Some(e) = repeat {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &e.namespace);
            let patch = serde_json::json!({"series": {
                "count": e.count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&e.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.series.lock().expect("series").forget(&key)
                }
                r => return r.map(drop),
            }
        }
        let event = self.event(ev, regarding);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.series
            .lock()
            .expect("series")
            .created(key, namespace, name, Instant::now());
        Ok(())
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let subject = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                // Upstream's naming: the object's name and the time in hexadecimal nanoseconds.
                name: Some(format!("{subject}.{:x}", now.as_nanosecond())),
                namespace: Some(
                    regarding
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                ),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pod: &str, reason: &str) -> Key {
        Key {
            warning: true,
            action: "Scheduling".into(),
            reason: reason.into(),
            regarding: RefKey::from(&ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("d".into()),
                name: Some(pod.into()),
                uid: Some(format!("{pod}-uid")),
                ..Default::default()
            }),
            related: None,
        }
    }

    #[test]
    fn a_repeat_within_six_minutes_joins_the_series() {
        let mut s = Series::default();
        let t0 = Instant::now();
        let k = key("p", "FailedScheduling");
        assert!(s.repeat(&k, t0).is_none(), "the first one is created");
        s.created(k.clone(), "d".into(), "p.1".into(), t0);
        let e = s.repeat(&k, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((e.name.as_str(), e.count), ("p.1", 2));
        let e = s.repeat(&k, t0 + Duration::from_secs(300)).unwrap();
        assert_eq!(e.count, 3);
        // Another reason or another pod is another event.
        assert!(s.repeat(&key("p", "Scheduled"), t0).is_none());
        assert!(s.repeat(&key("q", "FailedScheduling"), t0).is_none());
        // Six minutes after the last one, a new event starts.
        assert!(s.repeat(&k, t0 + Duration::from_secs(300 + 361)).is_none());
    }

    #[test]
    fn expired_series_are_swept_at_most_once_a_minute() {
        let mut s = Series::default();
        let t0 = Instant::now();
        for i in 0..100 {
            s.created(
                key(&format!("p{i}"), "Scheduled"),
                "d".into(),
                format!("p{i}.1"),
                t0,
            );
        }
        let later = t0 + SERIES_WINDOW + Duration::from_secs(1);
        assert!(s.repeat(&key("x", "Scheduled"), later).is_none());
        assert!(s.entries.is_empty(), "the first call sweeps");
        s.created(key("a", "Scheduled"), "d".into(), "a.1".into(), t0);
        // Within a minute of the sweep nothing is swept (the expired entry stays) ...
        assert!(s
            .repeat(&key("y", "Scheduled"), later + Duration::from_secs(30))
            .is_none());
        assert_eq!(s.entries.len(), 1);
        // ... but an expired entry never extends a series, swept or not.
        assert!(s
            .repeat(&key("a", "Scheduled"), later + Duration::from_secs(30))
            .is_none());
        assert!(s
            .repeat(&key("y", "Scheduled"), later + SWEEP_EVERY)
            .is_none());
        assert!(s.entries.is_empty());
    }
}
